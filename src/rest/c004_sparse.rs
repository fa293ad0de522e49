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
    http::HeaderMap,
    response::Response,
    routing::get,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    ContractScopes, RestState, declares_json,
    envelope::{Envelope, Failure, Kind, Problem},
    parse_json, principal,
    routes::Routes,
    timestamp,
    typed::{self, Document, Field, FieldType, TypedContract},
};
use crate::{
    app::AppState,
    auth::{Access, Principal},
    settings::Scope,
    telemetry,
};

pub(super) const PATH: &str = "/api/v1/users/settings";

const DIGEST_MODES: &[&str] = &["DAILY", "WEEKLY", "NONE"];

const FIELDS: &[Field] = &[
    Field::new("locale", FieldType::Text { max_chars: 10 }),
    Field::new("theme", FieldType::Text { max_chars: 20 }),
    Field::new("emailNotifications", FieldType::Boolean),
    Field::new("pushNotifications", FieldType::Boolean),
    Field::new("inAppNotifications", FieldType::Boolean),
    Field::new("digestMode", FieldType::OneOf(DIGEST_MODES)),
];

pub(super) fn router() -> Router<AppState> {
    Routes::<Sparse>::new()
        .route(PATH, "GET, HEAD, PATCH", get(read).patch(update))
        .finish()
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
    #[schema(value_type = DigestMode, example = "WEEKLY")]
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
    #[schema(value_type = Option<DigestMode>)]
    digest_mode: Option<String>,
}

/// How often a digest is sent.
#[derive(Debug, ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)] // Documents the values; they travel as JSON strings.
pub(super) enum DigestMode {
    DAILY,
    WEEKLY,
    NONE,
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
    /// Values for the translated message: the `field` a validation failure is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    i18n_vars: Option<Map<String, Value>>,
    details: Vec<ApiErrorDetail>,
    /// The request's correlation id, also sent as `X-Correlation-Id` and logged.
    correlation_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ApiErrorDetail {
    message: String,
}

/// This contract's envelope: `{"success": false, "error": {code, message, i18nKey, details,
/// correlationId}}`.
pub(super) struct Sparse;

type ApiError = super::envelope::ApiError<Sparse>;

impl Envelope for Sparse {
    fn render(problem: &Problem) -> impl Serialize {
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
            Kind::RateLimited => ("RATE_LIMITED", "common.rate_limited", "Too many requests"),
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
        let i18n_vars = problem.violations.first().map(|violation| {
            Map::from_iter([("field".to_owned(), Value::from(violation.field.clone()))])
        });
        ApiErrorResponse {
            success: false,
            error: ApiErrorObject {
                code,
                message: message.to_owned(),
                i18n_key,
                i18n_vars,
                details,
                correlation_id,
            },
        }
    }
}

impl TypedContract for Sparse {
    const FIELDS: &'static [Field] = FIELDS;
    const PATCH_ROUTE: &'static str = "PATCH /api/v1/users/settings";
    fn scope(scopes: &ContractScopes) -> &Scope {
        &scopes.c004
    }

    type Body = ApiResponseOfUserSettingsDto;

    fn body(document: &Document) -> Self::Body {
        let data = UserSettingsDto {
            id: document.user.settings_id.to_string(),
            user_id: document.user.id.clone(),
            locale: document.value("locale"),
            theme: document.value("theme"),
            email_notifications: document.value("emailNotifications"),
            push_notifications: document.value("pushNotifications"),
            in_app_notifications: document.value("inAppNotifications"),
            digest_mode: document.value("digestMode"),
            created_at: timestamp(document.created_at),
            updated_at: timestamp(document.updated_at),
        };
        ApiResponseOfUserSettingsDto {
            success: true,
            data,
        }
    }

    fn after_write(principal: &Principal) {
        tracing::info!(
            target: "audit",
            user_id = %principal.user_id,
            "[settings] Updated for user {}",
            principal.user_id
        );
    }
}

/// Get user settings (same shape as the update's answer).
#[utoipa::path(
    get,
    path = "/api/v1/users/settings",
    tag = "User",
    operation_id = "getSettings",
    responses(
        (status = 200, description = "The settings with defaults filled in; `ETag` tags them", body = ApiResponseOfUserSettingsDto),
        (status = 304, description = "`If-None-Match` names the current tag"),
        (status = 401, description = "Missing / invalid bearer token", body = ApiErrorResponse),
        (status = 503, description = "The database is unavailable; retry later (not in the contract's document: the standard status)", body = ApiErrorResponse),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn read(
    State(state): State<RestState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    typed::get(&state, &headers).await
}

/// Update user settings: sparse update of preferences (locale, theme, notification flags,
/// digest mode). Locale changes also sync to the user's legacy locale.
#[utoipa::path(
    patch,
    path = "/api/v1/users/settings",
    tag = "User",
    operation_id = "updateSettings",
    params(("If-Match" = Option<String>, Header, description = "Write only if the settings still have this ETag")),
    request_body(content = UpdateSettingsDto, content_type = "application/json"),
    responses(
        (status = 200, description = "The fresh settings after the update", body = ApiResponseOfUserSettingsDto),
        (status = 400, description = "Invalid digestMode enum, fields exceeding length, unknown fields, a body not declared as JSON; nothing was written", body = ApiErrorResponse),
        (status = 401, description = "Missing / invalid bearer token", body = ApiErrorResponse),
        (status = 412, description = "`If-Match` names an older state; nothing was written", body = ApiErrorResponse),
        (status = 503, description = "The database is unavailable; retry later (not in the contract's document: the standard status)", body = ApiErrorResponse),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn update(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Write).await?;
    let body = state.body_limit.read(body)?;
    // A PATCH without a body supplies no fields, like `{}`.
    let update = if body.is_empty() {
        Map::new()
    } else if !declares_json(&headers) {
        return Err(Failure::UnsupportedMediaType.into());
    } else {
        typed::validate(FIELDS, parse_json(&body)?)?
    };
    typed::patch(&state, &headers, &principal, update).await
}
