//! Contract 000: one setting per key, `PUT|GET|DELETE /api/v1/users/me/settings/{key}` and
//! `GET /api/v1/users/me/settings`, with `{"data": …}` bodies and
//! `{"error", "message", "details"}` errors. Single-key responses carry the version as a strong
//! `ETag`; writes honour `If-Match` (412) and `If-None-Match: *` (create only).

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection, rejection::PathRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    Condition, RestState,
    envelope::{Envelope, Kind, Problem},
    etag, if_match, if_none_match, json_body, origin, principal,
    routes::Routes,
    tagged_read, timestamp,
};
use crate::{
    app::AppState,
    auth::Access,
    error::Error,
    settings::{Expect, Key, Setting},
};

pub(super) const LIST_PATH: &str = "/api/v1/users/me/settings";
pub(super) const KEY_PATH: &str = "/api/v1/users/me/settings/{key}";

pub(super) fn router() -> Router<AppState> {
    Routes::<PerKey>::new()
        .route(LIST_PATH, "GET, HEAD", get(list))
        .route(
            KEY_PATH,
            "GET, HEAD, PUT, DELETE",
            get(read).put(put).delete(delete),
        )
        .finish()
}

/// A stored setting as this contract shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserSetting {
    /// Unique key of the user setting.
    #[schema(max_length = 255, example = "theme")]
    key: String,
    /// JSON value stored for the user setting (string, number, boolean, array, or object).
    value: Value,
    /// When the setting was created: UTC, milliseconds, `Z`.
    #[schema(format = DateTime, example = "2023-10-05T14:48:00.000Z")]
    created_at: String,
    /// When the setting was last updated.
    #[schema(format = DateTime, example = "2023-10-05T14:48:00.000Z")]
    updated_at: String,
}

impl From<Setting> for UserSetting {
    fn from(setting: Setting) -> Self {
        UserSetting {
            key: setting.key,
            value: setting.value,
            created_at: timestamp(setting.created_at),
            updated_at: timestamp(setting.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SettingData {
    data: UserSetting,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SettingList {
    data: Vec<UserSetting>,
}

/// Request body: the value to store.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the body; the handler reads it as JSON to report each problem.
pub(super) struct SetSettingBody {
    /// JSON value stored for the user setting (string, number, boolean, array, or object).
    value: Value,
}

/// Every error of this contract: `error` is a machine-readable code such as `ValidationError`,
/// `Unauthorized`, `NotFound` or `PreconditionFailed`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SettingError {
    #[schema(example = "ValidationError")]
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Vec<SettingErrorDetail>>,
}

/// The error of a request without a valid token: `{"error": "Unauthorized", "message":
/// "Unauthorized"}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the 401 body, which `SettingError` writes without details.
pub(super) struct UnauthorizedError {
    #[schema(example = "Unauthorized")]
    error: String,
    #[schema(example = "Unauthorized")]
    message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SettingErrorDetail {
    /// Request field that failed validation.
    field: String,
    /// Validation failure message for the field.
    message: String,
    /// Validation rule that was violated.
    constraint: String,
}

/// This contract's envelope: `{"error", "message", "details"}`.
pub(super) struct PerKey;

type ApiError = super::envelope::ApiError<PerKey>;

impl Envelope for PerKey {
    fn render(problem: &Problem) -> impl Serialize {
        let error = match problem.kind {
            Kind::BadInput => "ValidationError",
            Kind::Unauthenticated => "Unauthorized",
            Kind::Forbidden => "Forbidden",
            Kind::NotFound => "NotFound",
            Kind::Conflict => "Conflict",
            Kind::PreconditionFailed => "PreconditionFailed",
            Kind::PayloadTooLarge => "PayloadTooLarge",
            Kind::RateLimited => "TooManyRequests",
            Kind::UnsupportedMediaType => "UnsupportedMediaType",
            Kind::MethodNotAllowed => "MethodNotAllowed",
            Kind::Unavailable => "ServiceUnavailable",
            Kind::Internal => "InternalServerError",
        };
        let message = match problem.kind {
            Kind::Unauthenticated => "Unauthorized".to_owned(),
            _ => problem.message.clone(),
        };
        let details = (!problem.violations.is_empty()).then(|| {
            problem
                .violations
                .iter()
                .map(|violation| SettingErrorDetail {
                    field: violation.field.clone(),
                    message: violation.message.clone(),
                    constraint: violation.rule.to_string(),
                })
                .collect()
        });
        SettingError {
            error,
            message,
            details,
        }
    }
}

fn parse_key(key: Result<Path<String>, PathRejection>) -> Result<Key, ApiError> {
    let Path(key) =
        key.map_err(|rejection| Error::bad_input("key", "pathParameter", rejection.body_text()))?;
    Ok(Key::parse(key, "key")?)
}

/// List the settings of the authenticated user, ordered by key.
#[utoipa::path(
    get,
    path = "/api/v1/users/me/settings",
    tag = "Users",
    operation_id = "listUserSettings",
    responses(
        (status = 200, description = "Every setting of the user", body = SettingList),
        (status = 401, description = "Missing or invalid token", body = UnauthorizedError),
        (status = 403, description = "The token's scope lacks settings:read", body = SettingError),
        (status = 503, description = "The database is unavailable; retry later (not in the contract's document: the standard status)", body = SettingError),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn list(
    State(state): State<RestState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Read).await?;
    let settings = state
        .store
        .list(&principal.user_id, &state.scopes.c000, None)
        .await?;
    let data = settings.into_iter().map(UserSetting::from).collect();
    Ok(axum::Json(SettingList { data }).into_response())
}

/// Read one setting of the authenticated user.
#[utoipa::path(
    get,
    path = "/api/v1/users/me/settings/{key}",
    tag = "Users",
    operation_id = "getUserSetting",
    params(("key" = String, Path, description = "Unique key of the user setting.", max_length = 255)),
    responses(
        (status = 200, description = "The setting; `ETag` is its version", body = SettingData),
        (status = 304, description = "`If-None-Match` names the current version"),
        (status = 400, description = "Invalid key", body = SettingError),
        (status = 401, description = "Missing or invalid token", body = UnauthorizedError),
        (status = 404, description = "The user has no such setting", body = SettingError),
        (status = 503, description = "The database is unavailable; retry later (not in the contract's document: the standard status)", body = SettingError),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn read(
    State(state): State<RestState>,
    headers: HeaderMap,
    key: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Read).await?;
    let key = parse_key(key)?;
    let cached = if_none_match(&headers)?;
    let setting = state
        .store
        .get(&principal.user_id, &state.scopes.c000, &key)
        .await?
        .ok_or_else(|| not_found(&key))?;
    let tag = setting.version.to_string();
    Ok(tagged_read(cached.as_ref(), &tag, || SettingData {
        data: setting.into(),
    })?)
}

/// Create or replace one setting of the authenticated user.
#[utoipa::path(
    put,
    path = "/api/v1/users/me/settings/{key}",
    tag = "Users",
    operation_id = "setUserSetting",
    params(
        ("key" = String, Path, description = "Unique key of the user setting.", max_length = 255),
        ("If-Match" = Option<String>, Header, description = "Write only if the setting is at this version (its ETag), or exists (`*`)"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: create only"),
    ),
    request_body(content = SetSettingBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated; `ETag` is the new version", body = SettingData),
        (status = 201, description = "Created", body = SettingData),
        (status = 400, description = "Invalid key, body or value, or a body not declared as JSON", body = SettingError),
        (status = 401, description = "Missing or invalid token", body = UnauthorizedError),
        (status = 412, description = "A precondition header does not hold; nothing was written", body = SettingError),
        (status = 413, description = "Body over the size limit", body = SettingError),
        (status = 503, description = "The database is unavailable; retry later (not in the contract's document: the standard status)", body = SettingError),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn put(
    State(state): State<RestState>,
    headers: HeaderMap,
    key: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Write).await?;
    let key = parse_key(key)?;
    let value = setting_value(json_body(&state, &headers, body)?)?;
    let expect = match (if_match(&headers)?, if_none_match(&headers)?) {
        (Some(condition), _) => Some(expectation(&key, condition)?),
        (None, Some(Condition::Any)) => Some(Expect::Absent),
        (None, Some(_)) => {
            return Err(Error::bad_input(
                "If-None-Match",
                "createOnly",
                "a write accepts only `If-None-Match: *` (create only)",
            )
            .into());
        }
        (None, None) => None,
    };
    let (setting, created) = state
        .store
        .set(
            &origin(&principal, "PUT /api/v1/users/me/settings/{key}"),
            &principal.user_id,
            &state.scopes.c000,
            &key,
            value,
            expect,
        )
        .await
        .map_err(|err| in_value(err, &key))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let etag = etag(&setting.version.to_string())?;
    let body = SettingData {
        data: setting.into(),
    };
    Ok((status, [(header::ETAG, etag)], axum::Json(body)).into_response())
}

/// Delete one setting of the authenticated user.
#[utoipa::path(
    delete,
    path = "/api/v1/users/me/settings/{key}",
    tag = "Users",
    operation_id = "deleteUserSetting",
    params(
        ("key" = String, Path, description = "Unique key of the user setting.", max_length = 255),
        ("If-Match" = Option<String>, Header, description = "Delete only if the setting is at this version (its ETag)"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid key", body = SettingError),
        (status = 401, description = "Missing or invalid token", body = UnauthorizedError),
        (status = 404, description = "The user has no such setting", body = SettingError),
        (status = 412, description = "`If-Match` does not hold; nothing was deleted", body = SettingError),
        (status = 503, description = "The database is unavailable; retry later (not in the contract's document: the standard status)", body = SettingError),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn delete(
    State(state): State<RestState>,
    headers: HeaderMap,
    key: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Write).await?;
    let key = parse_key(key)?;
    let expect = if_match(&headers)?
        .map(|condition| expectation(&key, condition))
        .transpose()?;
    let deleted = state
        .store
        .delete(
            &origin(&principal, "DELETE /api/v1/users/me/settings/{key}"),
            &principal.user_id,
            &state.scopes.c000,
            &key,
            expect,
        )
        .await?;
    if !deleted {
        return Err(not_found(&key).into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The body must be `{"value": <any JSON>}` and nothing else.
fn setting_value(body: Value) -> Result<Value, Error> {
    let Value::Object(mut members) = body else {
        return Err(Error::bad_input(
            "body",
            "type",
            "the body must be a JSON object: {\"value\": <any JSON>}",
        ));
    };
    if let Some(extra) = members.keys().find(|name| *name != "value") {
        return Err(Error::bad_input(
            extra.clone(),
            "additionalProperties",
            format!("the body must not have other properties than `value`, not `{extra}`"),
        ));
    }
    members
        .remove("value")
        .ok_or_else(|| Error::bad_input("value", "required", "the body must have a `value`"))
}

/// What an `If-Match` header asks of the stored version.
fn expectation(key: &Key, condition: Condition) -> Result<Expect, Error> {
    match condition {
        Condition::Any => Ok(Expect::Present),
        Condition::Tag(tag) => match tag.parse::<i32>() {
            Ok(version) if version > 0 => Ok(Expect::Version(version)),
            _ => Err(stale_tag(key)),
        },
        Condition::Never => Err(stale_tag(key)),
    }
}

fn stale_tag(key: &Key) -> Error {
    Error::PreconditionFailed {
        message: format!(
            "`If-Match` does not name a version of `{}`: send the ETag of a read",
            key.as_str()
        ),
        current_version: None,
    }
}

/// Errors about the stored value name the body's `value` member, with the pointer inside it.
fn in_value(err: Error, key: &Key) -> Error {
    match err {
        Error::BadInput(mut violation) if violation.field == key.as_str() => {
            violation.field = match &violation.pointer {
                Some(pointer) if !pointer.is_empty() => format!("value{pointer}"),
                _ => "value".to_owned(),
            };
            Error::BadInput(violation)
        }
        other => other,
    }
}

fn not_found(key: &Key) -> Error {
    Error::NotFound(format!("the setting `{}` does not exist", key.as_str()))
}
