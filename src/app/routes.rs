//! The router: GraphQL, the legacy REST contracts, health checks and `/openapi.json`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};

use tower_http::{
    cors::{AllowHeaders, AllowOrigin, CorsLayer},
    timeout::RequestBodyTimeoutLayer,
};

use super::{AppState, MetricsState};
use crate::{
    config::CorsOrigins,
    graphql, rest,
    settings::{Readiness, Store},
    telemetry,
};

pub(super) fn router(
    state: AppState,
    body_limit: usize,
    cors: &CorsOrigins,
    body_timeout: Duration,
) -> Router {
    let router = Router::new()
        .merge(graphql::router())
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(rest::openapi::document))
        .merge(rest::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        // A body that trickles in is given up, and so is its connection's slot.
        .layer(RequestBodyTimeoutLayer::new(body_timeout));
    let router = match cors_layer(cors) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(middleware::from_fn_with_state(
            telemetry::RequestMetrics::default(),
            telemetry::request_span,
        ))
        .layer(middleware::from_fn(run_to_completion))
        .with_state(state)
}

/// Runs each request in a task of its own. A client that goes away drops only the wait for
/// the answer, never the request half way: a write in a transaction commits or rolls back,
/// and its pooled connection is never left inside a transaction for the next request. The
/// outermost layer, so that the request's span and correlation id live in that task.
async fn run_to_completion(request: Request, next: Next) -> Response {
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(err) => {
            tracing::error!(error = %err, "a request's task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Lets browser apps on the allowed origins call every route: preflights are answered here,
/// before authentication, for any method the routes take and the headers the request asks
/// for; responses expose the headers clients read (entity tags, the correlation id).
fn cors_layer(origins: &CorsOrigins) -> Option<CorsLayer> {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            header::ETAG,
            header::WWW_AUTHENTICATE,
            header::ALLOW,
            telemetry::CORRELATION_ID_HEADER,
        ])
        .max_age(Duration::from_secs(600));
    match origins {
        CorsOrigins::None => None,
        CorsOrigins::Any => Some(layer.allow_origin(AllowOrigin::any())),
        CorsOrigins::Exactly(origins) => {
            let origins = origins.iter().filter_map(|origin| origin.parse().ok());
            Some(
                layer
                    .allow_origin(AllowOrigin::list(origins))
                    .allow_credentials(true),
            )
        }
    }
}

async fn live() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// 200 when the database answers and takes writes; otherwise 503 with what is wrong: an
/// instance that cannot write should not get traffic, even though it still serves reads.
async fn ready(State(store): State<Arc<Store>>) -> impl IntoResponse {
    let (status, database) = match store.readiness().await {
        Readiness::Ready => (StatusCode::OK, "ok"),
        Readiness::ReadOnly(reason) => {
            tracing::warn!(%reason, "readiness check: the database refuses writes");
            (StatusCode::SERVICE_UNAVAILABLE, "read-only")
        }
        Readiness::Unreachable(reason) => {
            tracing::warn!(%reason, "readiness check: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "unreachable")
        }
    };
    let overall = if status == StatusCode::OK {
        "ok"
    } else {
        "unavailable"
    };
    (
        status,
        Json(serde_json::json!({ "status": overall, "database": database })),
    )
}

/// Prometheus metrics: requests by route and status with latency histograms, errors by code
/// and rule, open WebSockets and operations on them, and the database pool. Without a JWT;
/// with `METRICS_TOKEN` set, only with that bearer token.
async fn metrics(State(metrics): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Some(token) = &metrics.token {
        let expected = format!("Bearer {}", token.expose());
        let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        if given != Some(expected.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "the metrics need the METRICS_TOKEN bearer token\n",
            )
                .into_response();
        }
    }
    ::metrics::gauge!("settings_api_subscribers").set(metrics.store.subscribers() as f64);
    let (open, idle) = metrics.store.pool_connections();
    ::metrics::gauge!("settings_api_db_pool_connections", "state" => "idle").set(idle);
    let in_use = open.saturating_sub(idle);
    ::metrics::gauge!("settings_api_db_pool_connections", "state" => "in_use").set(in_use);
    // Operations under way beyond the connections in use are waiting for one.
    let waiting = metrics
        .store
        .operations_in_flight()
        .saturating_sub(u64::from(in_use));
    ::metrics::gauge!("settings_api_db_pool_waiting").set(waiting as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.handle.render(),
    )
        .into_response()
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": "not found" })),
    )
}
