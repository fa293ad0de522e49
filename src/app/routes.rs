//! The router: GraphQL, the legacy REST contracts, health checks and `/openapi.json`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    middleware,
    response::IntoResponse,
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
        .with_state(state)
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
