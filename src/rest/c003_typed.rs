//! Contract 003: `PATCH|GET /api/v1/user-settings`, nine typed fields (eight booleans and
//! `preferredLanguage`) answered as one object with defaults filled in, timestamps and a stable
//! 24-hex `_id`. Errors are `{"isSuccess": false, "statusCode", "data": null, "errors",
//! "timestamp"}`; a stale `If-Match` is 409, as the document names for "cannot be changed in its
//! current state".

use axum::{
    Router,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
};
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    ContractScopes, RestState,
    envelope::{Envelope, Kind, Problem},
    json_body, principal,
    routes::Routes,
    timestamp,
    typed::{self, Document, Field, FieldType, TypedContract},
};
use crate::{
    app::AppState,
    auth::Access,
    settings::{Scope, User},
};

pub(super) const PATH: &str = "/api/v1/user-settings";

const FIELDS: &[Field] = &[
    boolean("notifications"),
    boolean("totalMinutesVisibility"),
    boolean("totalFundVisibility"),
    boolean("liveStreamNotifications"),
    boolean("paymentNotifications"),
    boolean("followNotifications"),
    boolean("messageNotifications"),
    boolean("followingActivityNotifications"),
    Field::new("preferredLanguage", FieldType::Text { max_chars: 35 }),
];

const fn boolean(name: &'static str) -> Field {
    Field::new(name, FieldType::Boolean)
}

pub(super) fn router() -> Router<AppState> {
    Routes::<Typed>::new()
        .route(PATH, "GET, HEAD, PATCH", get(read).patch(update))
        .finish()
}

/// The user's settings with defaults filled in.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct TypedUserSettings {
    #[schema(value_type = bool)]
    notifications: Value,
    #[schema(value_type = bool)]
    total_minutes_visibility: Value,
    #[schema(value_type = bool)]
    total_fund_visibility: Value,
    #[schema(value_type = bool)]
    live_stream_notifications: Value,
    #[schema(value_type = bool)]
    payment_notifications: Value,
    #[schema(value_type = bool)]
    follow_notifications: Value,
    #[schema(value_type = bool)]
    message_notifications: Value,
    #[schema(value_type = bool)]
    following_activity_notifications: Value,
    #[schema(value_type = String, example = "en")]
    preferred_language: Value,
    #[schema(format = DateTime, example = "2024-01-01T00:00:00.000Z")]
    created_at: String,
    #[schema(format = DateTime, example = "2024-01-01T00:00:00.000Z")]
    updated_at: String,
    /// The user's settings id: 24 lowercase hex characters, the same forever.
    #[serde(rename = "_id")]
    #[schema(
        rename = "_id",
        pattern = "^[0-9a-f]{24}$",
        example = "507f1f77bcf86cd799439011"
    )]
    id: String,
}

/// Request body: every field optional; send only what changes.
#[derive(Debug, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body; the handler validates it to report every problem.
pub(super) struct UpdateUserSettings {
    notifications: Option<bool>,
    total_minutes_visibility: Option<bool>,
    total_fund_visibility: Option<bool>,
    live_stream_notifications: Option<bool>,
    payment_notifications: Option<bool>,
    follow_notifications: Option<bool>,
    message_notifications: Option<bool>,
    following_activity_notifications: Option<bool>,
    #[schema(max_length = 35)]
    preferred_language: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserSettingsError {
    /// Always false.
    is_success: bool,
    /// The HTTP status.
    status_code: u16,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    data: Option<()>,
    errors: Vec<String>,
    #[schema(format = DateTime)]
    timestamp: String,
}

/// This contract's envelope: `{"isSuccess": false, "statusCode", "data": null, "errors",
/// "timestamp"}`.
pub(super) struct Typed;

type ApiError = super::envelope::ApiError<Typed>;

impl Envelope for Typed {
    const STALE: StatusCode = StatusCode::CONFLICT;
    const NO_SUCH_RESOURCE: &'static str = "Resource not found";

    fn render(problem: &Problem) -> impl Serialize {
        let errors = match problem.kind {
            Kind::BadInput => problem
                .violations
                .iter()
                .map(|v| v.message.clone())
                .collect(),
            Kind::Unauthenticated => vec![format!("Authentication required: {}", problem.message)],
            Kind::Forbidden => vec![format!("Insufficient permissions: {}", problem.message)],
            _ => vec![problem.message.clone()],
        };
        UserSettingsError {
            is_success: false,
            status_code: problem.status.as_u16(),
            data: None,
            errors,
            timestamp: timestamp(Utc::now()),
        }
    }
}

/// The `_id` of the contract: the first 24 hex digits of the user's settings id, which is
/// random, created with the user and never changed.
fn object_id(user: &User) -> String {
    user.settings_id.simple().to_string()[..24].to_owned()
}

impl TypedContract for Typed {
    const FIELDS: &'static [Field] = FIELDS;
    const PATCH_ROUTE: &'static str = "PATCH /api/v1/user-settings";
    fn scope(scopes: &ContractScopes) -> &Scope {
        &scopes.c003
    }

    type Body = TypedUserSettings;

    fn body(document: &Document) -> Self::Body {
        TypedUserSettings {
            notifications: document.value("notifications"),
            total_minutes_visibility: document.value("totalMinutesVisibility"),
            total_fund_visibility: document.value("totalFundVisibility"),
            live_stream_notifications: document.value("liveStreamNotifications"),
            payment_notifications: document.value("paymentNotifications"),
            follow_notifications: document.value("followNotifications"),
            message_notifications: document.value("messageNotifications"),
            following_activity_notifications: document.value("followingActivityNotifications"),
            preferred_language: document.value("preferredLanguage"),
            created_at: timestamp(document.created_at),
            updated_at: timestamp(document.updated_at),
            id: object_id(&document.user),
        }
    }
}

/// Get user settings.
#[utoipa::path(
    get,
    path = "/api/v1/user-settings",
    tag = "User Settings",
    operation_id = "getUserSettings",
    responses(
        (status = 200, description = "The settings with defaults filled in; `ETag` tags them", body = TypedUserSettings),
        (status = 304, description = "`If-None-Match` names the current tag"),
        (status = 401, description = "Authentication required", body = UserSettingsError),
        (status = 403, description = "Insufficient permissions (the token's scope lacks settings:read)", body = UserSettingsError),
        (status = 503, description = "The database is unavailable; retry later (not in the contract's document: the standard status)", body = UserSettingsError),
    ),
    security(("JWT-auth" = []))
)]
pub(super) async fn read(
    State(state): State<RestState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    typed::get(&state, &headers).await
}

/// Update user settings. You can update individual fields partially.
#[utoipa::path(
    patch,
    path = "/api/v1/user-settings",
    tag = "User Settings",
    operation_id = "updateUserSettings",
    params(("If-Match" = Option<String>, Header, description = "Write only if the settings still have this ETag (409 otherwise)")),
    request_body(content = UpdateUserSettings, content_type = "application/json"),
    responses(
        (status = 200, description = "The updated settings", body = TypedUserSettings),
        (status = 400, description = "Validation failed: unknown field, wrong type, or a body not declared as JSON; nothing was written", body = UserSettingsError),
        (status = 401, description = "Authentication required", body = UserSettingsError),
        (status = 403, description = "Insufficient permissions (the token's scope lacks settings:write)", body = UserSettingsError),
        (status = 404, description = "Resource not found", body = UserSettingsError),
        (status = 409, description = "`If-Match` names an older state; nothing was written", body = UserSettingsError),
        (status = 503, description = "The database is unavailable; retry later (not in the contract's document: the standard status)", body = UserSettingsError),
    ),
    security(("JWT-auth" = []))
)]
pub(super) async fn update(
    State(state): State<RestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Write).await?;
    let update = typed::validate(FIELDS, json_body(&state, &headers, body)?)?;
    typed::patch(&state, &headers, &principal, update).await
}
