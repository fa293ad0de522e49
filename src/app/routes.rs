//! The router: GraphQL, the legacy REST contracts, health checks and `/openapi.json`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};

use super::AppState;
use crate::{graphql, rest, settings::Store, telemetry};

pub(super) fn router(state: AppState, body_limit: usize) -> Router {
    Router::new()
        .merge(graphql::router())
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/openapi.json", get(rest::openapi::document))
        .merge(rest::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(telemetry::request_span))
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

async fn live() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(store): State<Arc<Store>>) -> impl IntoResponse {
    match store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ok", "database": "ok" })),
        ),
        Err(err) => {
            tracing::warn!(error = ?err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "unavailable", "database": "unreachable" })),
            )
        }
    }
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": "not found" })),
    )
}
