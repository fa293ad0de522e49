//! Contract 004: `PATCH|GET /api/v1/users/settings`, a sparse update of six typed fields that
//! follows the document's side effects step by step: no fields, no write; otherwise one
//! transaction that writes the fields (creating what is missing) and mirrors `locale` to the
//! user's legacy `locale`; the audit line `[settings] Updated for user {userId}`; then a fresh
//! read. Errors are `{"success": false, "error": {code, message, i18nKey, details,
//! correlationId}}`, the correlation id being the request's (also in `X-Correlation-Id`).

use axum::{
    Router,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    Failure, Kind, Problem, declares_json, document_etag, if_match, if_none_match,
    method_not_allowed, not_found_at, not_modified, not_modified_response, parse_json, principal,
    read_body, timestamp,
    typed::{self, Field, FieldType},
};
use crate::{auth::Access, startup::AppState, telemetry};

pub(super) const PATH: &str = "/api/v1/users/settings";

const DIGEST_MODES: &[&str] = &["DAILY", "WEEKLY", "NONE"];

const FIELDS: &[Field] = &[
    Field {
        name: "locale",
        kind: FieldType::Text { max_chars: 10 },
    },
    Field {
        name: "theme",
        kind: FieldType::Text { max_chars: 20 },
    },
    Field {
        name: "emailNotifications",
        kind: FieldType::Boolean,
    },
    Field {
        name: "pushNotifications",
        kind: FieldType::Boolean,
    },
    Field {
        name: "inAppNotifications",
        kind: FieldType::Boolean,
    },
    Field {
        name: "digestMode",
        kind: FieldType::OneOf(DIGEST_MODES),
    },
];

pub(super) fn router() -> Router<AppState> {
    let routes = Router::new().route(
        PATH,
        get(read)
            .patch(update)
            .fallback(|| async { ApiError(method_not_allowed("GET, HEAD, PATCH")) }),
    );
    // Paths below these name nothing: 404 in this contract's envelope.
    not_found_at(
        routes,
        &[format!("{PATH}/"), format!("{PATH}/{{*rest}}")],
        ApiError,
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ApiResponseOfUserSettingsDto {
    /// Always true.
    success: bool,
    data: UserSettingsDto,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserSettingsDto {
    /// The user's settings id: a UUID, the same forever.
    #[schema(format = "uuid")]
    id: String,
    user_id: String,
    #[schema(value_type = String, example = "tr")]
    locale: Value,
    #[schema(value_type = String, example = "dark")]
    theme: Value,
    #[schema(value_type = bool)]
    email_notifications: Value,
    #[schema(value_type = bool)]
    push_notifications: Value,
    #[schema(value_type = bool)]
    in_app_notifications: Value,
    #[schema(value_type = String, example = "WEEKLY")]
    digest_mode: Value,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// Request body: all fields optional; send only what you want to change.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body; the handler validates it to report every problem.
pub(super) struct UpdateSettingsDto {
    #[schema(max_length = 10, example = "pt-BR")]
    locale: Option<String>,
    #[schema(max_length = 20, example = "system")]
    theme: Option<String>,
    email_notifications: Option<bool>,
    push_notifications: Option<bool>,
    in_app_notifications: Option<bool>,
    #[schema(value_type = Option<String>, pattern = "^(DAILY|WEEKLY|NONE)$")]
    digest_mode: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ApiErrorResponse {
    /// Always false.
    success: bool,
    error: ApiErrorObject,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ApiErrorObject {
    /// A stable code such as `VALIDATION_FAILED` or `AUTH_UNAUTHORIZED`.
    code: &'static str,
    message: String,
    /// A key for translating the message.
    i18n_key: &'static str,
    details: Vec<ApiErrorDetail>,
    /// The request's correlation id, also sent as `X-Correlation-Id` and logged.
    correlation_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ApiErrorDetail {
    message: String,
}

pub(super) struct ApiError(Failure);

impl<E: Into<Failure>> From<E> for ApiError {
    fn from(err: E) -> Self {
        ApiError(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem::new(self.0, StatusCode::PRECONDITION_FAILED);
        let (code, i18n_key, message) = match problem.kind {
            Kind::BadInput => (
                "VALIDATION_FAILED",
                "validation.failed",
                "Validation failed",
            ),
            Kind::Unauthenticated => (
                "AUTH_UNAUTHORIZED",
                "auth.unauthorized",
                "Missing or invalid bearer token",
            ),
            Kind::Forbidden => (
                "AUTH_FORBIDDEN",
                "auth.forbidden",
                "Insufficient permissions",
            ),
            Kind::NotFound => ("NOT_FOUND", "common.not_found", "Not found"),
            Kind::Conflict => (
                "CONFLICT",
                "common.conflict",
                "Conflicting concurrent writes",
            ),
            Kind::PreconditionFailed => (
                "PRECONDITION_FAILED",
                "common.precondition_failed",
                "The settings changed since they were read",
            ),
            Kind::PayloadTooLarge => (
                "PAYLOAD_TOO_LARGE",
                "common.payload_too_large",
                "Request body too large",
            ),
            Kind::UnsupportedMediaType => (
                "UNSUPPORTED_MEDIA_TYPE",
                "common.unsupported_media_type",
                "Unsupported media type",
            ),
            Kind::MethodNotAllowed => (
                "METHOD_NOT_ALLOWED",
                "common.method_not_allowed",
                "Method not allowed",
            ),
            Kind::Unavailable => (
                "SERVICE_UNAVAILABLE",
                "common.service_unavailable",
                "Service temporarily unavailable",
            ),
            Kind::Internal => (
                "INTERNAL_ERROR",
                "common.internal_error",
                "Internal server error",
            ),
        };
        let details = if problem.violations.is_empty() {
            vec![ApiErrorDetail {
                message: problem.message.clone(),
            }]
        } else {
            problem
                .violations
                .iter()
                .map(|v| ApiErrorDetail {
                    message: v.message.clone(),
                })
                .collect()
        };
        let correlation_id = problem
            .correlation_id
            .clone()
            .unwrap_or_else(telemetry::correlation_id);
        problem.respond(ApiErrorResponse {
            success: false,
            error: ApiErrorObject {
                code,
                message: message.to_owned(),
                i18n_key,
                details,
                correlation_id,
            },
        })
    }
}

async fn document(
    state: &AppState,
    user_id: &str,
) -> Result<(ApiResponseOfUserSettingsDto, String), ApiError> {
    let document = typed::read(state, user_id, FIELDS).await?;
    let data = UserSettingsDto {
        id: document.user.settings_id.to_string(),
        user_id: user_id.to_owned(),
        locale: document.value("locale"),
        theme: document.value("theme"),
        email_notifications: document.value("emailNotifications"),
        push_notifications: document.value("pushNotifications"),
        in_app_notifications: document.value("inAppNotifications"),
        digest_mode: document.value("digestMode"),
        created_at: timestamp(document.created_at),
        updated_at: timestamp(document.updated_at),
    };
    let body = ApiResponseOfUserSettingsDto {
        success: true,
        data,
    };
    Ok((body, document.tag))
}

/// Get user settings (same shape as the update's answer).
#[utoipa::path(
    get,
    path = "/api/v1/users/settings",
    tag = "User",
    responses(
        (status = 200, description = "The settings with defaults filled in; `ETag` tags them", body = ApiResponseOfUserSettingsDto),
        (status = 304, description = "`If-None-Match` names the current tag"),
        (status = 401, description = "Missing / invalid bearer token", body = ApiErrorResponse),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Read).await?;
    let cached = if_none_match(&headers)?;
    let (body, tag) = document(&state, &principal.user_id).await?;
    if not_modified(cached.as_ref(), &tag) {
        return Ok(not_modified_response(document_etag(&tag)));
    }
    Ok(([(header::ETAG, document_etag(&tag))], axum::Json(body)).into_response())
}

/// Update user settings: sparse update of preferences (locale, theme, notification flags,
/// digest mode). Locale changes also sync to the user's legacy locale.
#[utoipa::path(
    patch,
    path = "/api/v1/users/settings",
    tag = "User",
    params(("If-Match" = Option<String>, Header, description = "Write only if the settings still have this ETag")),
    request_body(content = UpdateSettingsDto, content_type = "application/json"),
    responses(
        (status = 200, description = "The fresh settings after the update", body = ApiResponseOfUserSettingsDto),
        (status = 400, description = "Invalid digestMode enum, fields exceeding length, unknown fields; nothing was written", body = ApiErrorResponse),
        (status = 401, description = "Missing / invalid bearer token", body = ApiErrorResponse),
        (status = 412, description = "`If-Match` names an older state; nothing was written", body = ApiErrorResponse),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Write).await?;
    let body = read_body(&state, body)?;
    // A PATCH without a body supplies no fields, like `{}`.
    let update = if body.is_empty() {
        Map::new()
    } else if !declares_json(&headers) {
        return Err(Failure::UnsupportedMediaType.into());
    } else {
        typed::validate(FIELDS, parse_json(&body)?)?
    };
    let written = typed::write(
        &state,
        &principal.user_id,
        "PATCH /api/v1/users/settings",
        FIELDS,
        update,
        if_match(&headers)?,
    )
    .await?;
    if written {
        tracing::info!(
            target: "audit",
            user_id = %principal.user_id,
            "[settings] Updated for user {}",
            principal.user_id
        );
    }
    let (body, tag) = document(&state, &principal.user_id).await?;
    Ok(([(header::ETAG, document_etag(&tag))], axum::Json(body)).into_response())
}
