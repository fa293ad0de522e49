//! Contract 002: `PUT /api/v1/users/preferences/update?space=…` merges `updatedPreferences` into
//! the preferences of a space (a settings scope; no `space` is the default scope) and answers the
//! user with the whole, updated preferences of that space; `GET /api/v1/users/preferences?space=…`
//! reads them. Every error has the document's `Error` shape with the matching status.

use axum::{
    Router,
    body::Bytes,
    extract::{Query, State, rejection::BytesRejection, rejection::QueryRejection},
    http::HeaderMap,
    response::Response,
    routing::{get, put},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::{
    Condition, RestState,
    envelope::{Envelope, Kind, Problem},
    if_none_match, json_body, patch_scope, principal,
    routes::Routes,
    tagged_read,
};
use crate::{
    app::AppState,
    auth::{Access, Principal},
    error::Error,
    settings::{Scope, document_tag},
};

pub(super) const READ_PATH: &str = "/api/v1/users/preferences";
pub(super) const UPDATE_PATH: &str = "/api/v1/users/preferences/update";

pub(super) fn router() -> Router<AppState> {
    Routes::<Preferences>::new()
        .route(READ_PATH, "GET, HEAD", get(read))
        .route(UPDATE_PATH, "PUT", put(update))
        .finish()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SpaceQuery {
    /// Space Identifier; without it, the space the contract is bound to (`REST_SCOPES`).
    space: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UserResponse {
    message: &'static str,
    object: CompleteUser,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CompleteUser {
    /// The token's email, or empty when it has none.
    email: String,
    /// `ROLE_USER` for everyone, `ROLE_EDITOR` and `ROLE_ADMINISTRATOR` from the token's roles.
    #[schema(value_type = Vec<Role>)]
    roles: Vec<&'static str>,
    /// Every preference of the space, by key.
    #[schema(value_type = Object)]
    preferences: Map<String, Value>,
}

/// Request body.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body; the handler reads it as JSON to report each problem.
pub(super) struct UserPreferenceUpdate {
    /// Preferences to merge into the space's (RFC 7386: `null` removes a key).
    #[schema(value_type = Object)]
    updated_preferences: Map<String, Value>,
}

/// A role of the document's `CompleteUser`.
#[derive(Debug, ToSchema)]
#[allow(dead_code, non_camel_case_types, clippy::upper_case_acronyms)] // Documents the values.
pub(super) enum Role {
    ROLE_USER,
    ROLE_EDITOR,
    ROLE_ADMINISTRATOR,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PreferencesError {
    /// The HTTP status, as a string.
    #[schema(example = "400")]
    status: String,
    /// A URI naming the kind of error.
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    detail: String,
    /// The document's optional context; this service sends none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    context: Option<Map<String, Value>>,
    violations: Vec<PreferencesViolation>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct PreferencesViolation {
    title: String,
    property_path: String,
    /// The rule broken, such as `maxLength` or `type`.
    #[serde(rename = "type")]
    kind: String,
}

/// This contract's envelope: the document's `Error`, with the violations.
pub(super) struct Preferences;

type ApiError = super::envelope::ApiError<Preferences>;

impl Envelope for Preferences {
    /// The document's `default` response covers every status.
    const LISTS_UNSUPPORTED_MEDIA_TYPE: bool = true;

    fn render(problem: &Problem) -> impl Serialize {
        let violations = problem
            .violations
            .iter()
            .map(|violation| PreferencesViolation {
                title: violation.message.clone(),
                property_path: property_path(&violation.field, violation.pointer.as_deref()),
                kind: violation.rule.to_string(),
            })
            .collect();
        let title = match problem.kind {
            Kind::BadInput => "Bad Request",
            _ => problem.status.canonical_reason().unwrap_or("Error"),
        };
        PreferencesError {
            status: problem.status.as_u16().to_string(),
            kind: format!(
                "https://www.rfc-editor.org/rfc/rfc9110#name-{}",
                title.to_ascii_lowercase().replace(' ', "-")
            ),
            title,
            detail: problem.message.clone(),
            context: None,
            violations,
        }
    }
}

/// Where in the request a violation is: the `space` parameter, or a key of `updatedPreferences`
/// and the path inside its value.
fn property_path(field: &str, pointer: Option<&str>) -> String {
    match field {
        "space" | "body" | "updatedPreferences" => field.to_owned(),
        "patch" => "updatedPreferences".to_owned(),
        key => {
            let inside = pointer
                .unwrap_or_default()
                .split('/')
                .skip(1)
                .map(|step| format!(".{}", step.replace("~1", "/").replace("~0", "~")));
            std::iter::once(format!("updatedPreferences.{key}"))
                .chain(inside)
                .collect()
        }
    }
}

/// The scope of the request's `space`; without one, the scope the contract is bound to.
fn space(
    state: &RestState,
    query: Result<Query<SpaceQuery>, QueryRejection>,
) -> Result<Scope, Error> {
    let Query(query) =
        query.map_err(|rejection| Error::bad_input("space", "query", rejection.body_text()))?;
    match query.space {
        Some(space) => Scope::parse_as(space, "space"),
        None => Ok(state.scopes.c002.clone()),
    }
}

/// The roles of the document, from the token's roles.
fn roles(principal: &Principal) -> Vec<&'static str> {
    let mut roles = vec!["ROLE_USER"];
    let has = |names: &[&str]| {
        principal
            .roles
            .iter()
            .any(|role| names.iter().any(|name| role.eq_ignore_ascii_case(name)))
    };
    if has(&["editor", "ROLE_EDITOR"]) {
        roles.push("ROLE_EDITOR");
    }
    if has(&["admin", "administrator", "ROLE_ADMINISTRATOR"]) {
        roles.push("ROLE_ADMINISTRATOR");
    }
    roles
}

/// The user and the preferences of the space, tagged.
async fn respond(
    state: &RestState,
    principal: &Principal,
    space: &Scope,
    message: &'static str,
    cached: Option<&Condition>,
) -> Result<Response, ApiError> {
    let settings = state.store.list(&principal.user_id, space, None).await?;
    let tag = document_tag(settings.iter().map(|s| (s.key.as_str(), s.version)));
    Ok(tagged_read(cached, &tag, || UserResponse {
        message,
        object: CompleteUser {
            email: principal.email.clone().unwrap_or_default(),
            roles: roles(principal),
            preferences: settings.into_iter().map(|s| (s.key, s.value)).collect(),
        },
    })?)
}

/// The user with the preferences of a space.
#[utoipa::path(
    get,
    path = "/api/v1/users/preferences",
    tag = "Users",
    operation_id = "getUserPreferences",
    params(SpaceQuery),
    responses(
        (status = 200, description = "The user with the space's preferences; `ETag` tags them", body = UserResponse),
        (status = 304, description = "`If-None-Match` names the current tag"),
        (status = "default", description = "Unexpected error", body = PreferencesError),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn read(
    State(state): State<RestState>,
    headers: HeaderMap,
    query: Result<Query<SpaceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Read).await?;
    let space = space(&state, query)?;
    let cached = if_none_match(&headers)?;
    respond(
        &state,
        &principal,
        &space,
        "User preferences",
        cached.as_ref(),
    )
    .await
}

/// Save updated user preferences.
#[utoipa::path(
    put,
    path = "/api/v1/users/preferences/update",
    tag = "Users",
    operation_id = "updateUserPreferences",
    params(
        SpaceQuery,
        ("If-Match" = Option<String>, Header, description = "Write only if the space's preferences still have this ETag"),
    ),
    request_body(content = UserPreferenceUpdate, content_type = "application/json"),
    responses(
        (status = 200, description = "User response with updated preferences", body = UserResponse),
        (status = "default", description = "Unexpected error", body = PreferencesError),
    ),
    security(("bearerAuth" = []))
)]
pub(super) async fn update(
    State(state): State<RestState>,
    headers: HeaderMap,
    query: Result<Query<SpaceQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = principal(&state, &headers, Access::Write).await?;
    let space = space(&state, query)?;
    let body = json_body(&state, &headers, body)?;
    let patch = match body {
        Value::Object(mut members) => match members.remove("updatedPreferences") {
            Some(patch @ Value::Object(_)) => patch,
            Some(_) => {
                return Err(Error::bad_input(
                    "updatedPreferences",
                    "type",
                    "`updatedPreferences` must be an object of preference keys and values",
                )
                .into());
            }
            None => {
                return Err(Error::bad_input(
                    "updatedPreferences",
                    "required",
                    "the body must have `updatedPreferences`",
                )
                .into());
            }
        },
        _ => {
            return Err(Error::bad_input(
                "body",
                "type",
                "the body must be a JSON object: {\"updatedPreferences\": {…}}",
            )
            .into());
        }
    };
    patch_scope(
        &state,
        &headers,
        &principal,
        "PUT /api/v1/users/preferences/update",
        &space,
        patch,
    )
    .await?;
    respond(&state, &principal, &space, "Preferences updated", None).await
}

#[cfg(test)]
mod tests {
    use super::property_path;

    #[test]
    fn a_violation_inside_a_value_names_the_path_through_updated_preferences() {
        assert_eq!(
            property_path("editor", Some("/font/size")),
            "updatedPreferences.editor.font.size"
        );
        assert_eq!(property_path("theme", Some("")), "updatedPreferences.theme");
        assert_eq!(property_path("theme", None), "updatedPreferences.theme");
        assert_eq!(
            property_path("a/b", Some("/x~1y")),
            "updatedPreferences.a/b.x/y"
        );
        assert_eq!(property_path("patch", None), "updatedPreferences");
        assert_eq!(property_path("space", None), "space");
    }
}
