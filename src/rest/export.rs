//! `GET /api/v1/me/export`: the caller's export document (`settings::export`) as a download,
//! streamed a page at a time. Not a legacy contract: its errors are
//! `{"error": {"code", "message"}}` with the codes GraphQL uses.

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::TryStreamExt;
use serde_json::json;

use super::{
    RestState,
    envelope::{Envelope, Kind, Problem},
    principal,
    routes::Routes,
};
use crate::{app::AppState, auth::Access};

pub(super) const EXPORT_PATH: &str = "/api/v1/me/export";

pub(super) fn router() -> Router<AppState> {
    Routes::<Lifecycle>::new()
        .route(EXPORT_PATH, "GET, HEAD", get(export))
        .finish()
}

/// The envelope of the service's own REST routes.
pub(super) struct Lifecycle;

impl Envelope for Lifecycle {
    fn render(problem: &Problem) -> impl serde::Serialize {
        let code = match problem.kind {
            Kind::Unauthenticated => "UNAUTHENTICATED",
            Kind::Forbidden => "FORBIDDEN",
            Kind::BadInput | Kind::UnsupportedMediaType => "BAD_USER_INPUT",
            Kind::NotFound => "NOT_FOUND",
            Kind::Conflict => "CONFLICT",
            Kind::PreconditionFailed => "PRECONDITION_FAILED",
            Kind::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Kind::RateLimited => "RATE_LIMITED",
            Kind::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Kind::Unavailable => "UNAVAILABLE",
            Kind::Internal => "INTERNAL_SERVER_ERROR",
        };
        json!({"error": {
            "code": code,
            "message": problem.message,
            "correlationId": problem.correlation_id,
        }})
    }
}

type ApiError = super::envelope::ApiError<Lifecycle>;

/// Every setting of the caller in every scope and their retained history, as a JSON file.
#[utoipa::path(
    get,
    path = "/api/v1/me/export",
    tag = "lifecycle",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The export document (format `settings-api/export`, version 1), as an attachment", content_type = "application/json"),
        (status = 401, description = "No valid bearer token"),
    )
)]
pub(super) async fn export(
    State(state): State<RestState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Read).await?;
    let pieces = state
        .store
        .clone()
        .export_stream(&principal.user_id)
        .await?;
    let body = Body::from_stream(pieces.inspect_err(|err| {
        tracing::error!(error = %err, "the export stopped half way");
    }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"settings-export.json\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
