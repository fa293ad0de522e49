//! Contract 001: `PUT /settings/user` merges an object of keys into the user's settings (each
//! value as an RFC 7386 merge patch, keys not in the body kept) and answers
//! `{"success", "message"}`; `GET /settings/user` returns every key. Errors are
//! `{"success": false, "message", "error"?}`, with 500 for every server-side failure, as the
//! document lists. The whole object has an `ETag`; `If-Match` on a write is checked against it.

use axum::{
    Router,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    RestState,
    envelope::{Envelope, Kind, Problem},
    if_none_match, json_body, patch_scope, principal,
    routes::Routes,
    tagged_read,
};
use crate::{app::AppState, auth::Access, error::Error, settings::document_tag};

pub(super) const PATH: &str = "/settings/user";

pub(super) fn router() -> Router<AppState> {
    Routes::<Partial>::new()
        .route(PATH, "GET, HEAD, PUT", get(read).put(update))
        .finish()
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UpdatedResponse {
    /// Always true.
    success: bool,
    #[schema(example = "User settings partially updated successfully")]
    message: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SettingsObjectResponse {
    /// Always true.
    success: bool,
    /// Every setting of the user, by key.
    #[schema(value_type = Object)]
    data: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SettingsErrorResponse {
    /// Always false.
    success: bool,
    /// What is wrong.
    message: String,
    /// Additional error details, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// This contract's envelope: `{"success": false, "message", "error"?}`.
pub(super) struct Partial;

type ApiError = super::envelope::ApiError<Partial>;

impl Envelope for Partial {
    /// The document describes every server-side failure as a 500.
    fn status(problem: &Problem) -> StatusCode {
        match problem.kind {
            Kind::Unavailable | Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => problem.status,
        }
    }

    fn render(problem: &Problem) -> impl Serialize {
        let (message, error) = match problem.kind {
            Kind::BadInput => (
                format!(
                    "Failed to partially update user settings: {}",
                    problem.message
                ),
                None,
            ),
            Kind::Unauthenticated => ("Unauthorized".to_owned(), Some(problem.message.clone())),
            Kind::Unavailable | Kind::Internal => (
                "Internal server error".to_owned(),
                Some(problem.message.clone()),
            ),
            _ => (problem.message.clone(), None),
        };
        SettingsErrorResponse {
            success: false,
            message,
            error,
        }
    }
}

/// Every setting of the authenticated user, by key.
#[utoipa::path(
    get,
    path = "/settings/user",
    tag = "Settings",
    operation_id = "get__settings_user",
    responses(
        (status = 200, description = "Every key of the user; `ETag` tags the whole object", body = SettingsObjectResponse),
        (status = 304, description = "`If-None-Match` names the current tag"),
        (status = 401, description = "Missing or invalid token", body = SettingsErrorResponse),
        (status = 500, description = "Server-side failure", body = SettingsErrorResponse),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn read(
    State(state): State<RestState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Read).await?;
    let cached = if_none_match(&headers)?;
    let settings = state
        .store
        .list(&principal.user_id, &state.scopes.c001, None)
        .await?;
    let tag = document_tag(settings.iter().map(|s| (s.key.as_str(), s.version)));
    Ok(tagged_read(cached.as_ref(), &tag, || {
        SettingsObjectResponse {
            success: true,
            data: settings.into_iter().map(|s| (s.key, s.value)).collect(),
        }
    })?)
}

/// Partially update the authenticated user's settings: keys not in the body are kept, and each
/// value is merged into the stored one as an RFC 7386 merge patch (`null` removes).
#[utoipa::path(
    put,
    path = "/settings/user",
    tag = "Settings",
    operation_id = "put__settings_user",
    params(("If-Match" = Option<String>, Header, description = "Write only if the settings still have this ETag")),
    request_body(content = Object, content_type = "application/json", description = "Partial settings object with key-value pairs to update"),
    responses(
        (status = 200, description = "Updated", body = UpdatedResponse),
        (status = 400, description = "Malformed JSON, not an object, not declared as JSON, or an invalid key or value; nothing was written", body = SettingsErrorResponse),
        (status = 401, description = "Missing or invalid token", body = SettingsErrorResponse),
        (status = 412, description = "`If-Match` does not hold; nothing was written", body = SettingsErrorResponse),
        (status = 413, description = "Body over the size limit", body = SettingsErrorResponse),
        (status = 500, description = "Server-side failure", body = SettingsErrorResponse),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn update(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Write).await?;
    let patch = json_body(&state, &headers, body)?;
    if !patch.is_object() {
        return Err(Error::bad_input(
            "body",
            "type",
            "the body must be a JSON object of setting keys and values",
        )
        .into());
    }
    patch_scope(
        &state,
        &headers,
        &principal,
        "PUT /settings/user",
        &state.scopes.c001,
        patch,
    )
    .await?;
    Ok(axum::Json(UpdatedResponse {
        success: true,
        message: "User settings partially updated successfully",
    })
    .into_response())
}
