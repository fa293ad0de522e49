//! The legacy REST contracts, mounted beside GraphQL. Each module keeps one existing API's paths,
//! status codes, bodies and error envelopes, and only translates between that envelope and the
//! settings domain. What they share lives here: reading the body without ever letting a
//! framework rejection reach a client, authentication, entity tags and preconditions, and one
//! classification of failures that every envelope renders in its own shape.

mod account_settings;
mod me_settings;
pub mod openapi;
mod preferences;
mod settings_user;
mod typed;
mod user_settings;

use axum::{
    Router,
    body::Bytes,
    extract::rejection::BytesRejection,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::{
    auth::{self, Access, Principal},
    error::{Error, Violation},
    settings::{DocumentCheck, Key},
    startup::AppState,
};

/// Every legacy route, each with its contract's fallback for unsupported methods.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(me_settings::router())
        .merge(settings_user::router())
        .merge(preferences::router())
        .merge(user_settings::router())
        .merge(account_settings::router())
}

/// Answers `paths` (below a contract's routes, naming nothing) with a 404 that the contract's
/// `render` puts in its own envelope.
fn not_found_at<E>(
    mut router: Router<AppState>,
    paths: &[String],
    render: fn(Failure) -> E,
) -> Router<AppState>
where
    E: IntoResponse + Send + 'static,
{
    for path in paths {
        router = router.route(
            path,
            axum::routing::any(move || async move {
                render(Error::NotFound("no such resource".into()).into())
            }),
        );
    }
    router
}

/// Why a REST request failed: a domain error, or a problem with the HTTP request itself.
#[derive(Debug)]
pub(crate) enum Failure {
    Domain(Error),
    /// A contract's own validation of a body, which reports every problem at once.
    Invalid(Vec<Violation>),
    UnsupportedMediaType,
    MethodNotAllowed {
        allow: &'static str,
    },
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure::Domain(err)
    }
}

/// What a failure means to a client, for an envelope to render: the status, a message that is
/// safe to show, the rule broken (for bad input) and, for server-side failures, the correlation
/// id under which the cause was logged.
pub(crate) struct Problem {
    pub status: StatusCode,
    pub kind: Kind,
    pub message: String,
    /// What is wrong with the input, for bad input; at least one then.
    pub violations: Vec<Violation>,
    pub correlation_id: Option<String>,
    allow: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Unauthenticated,
    Forbidden,
    BadInput,
    NotFound,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    Unavailable,
    Internal,
}

impl Problem {
    /// Classifies a failure. `precondition` is the status a contract uses for a stale
    /// `If-Match` (412 unless its document names another). Logs server-side causes once.
    pub fn new(failure: Failure, precondition: StatusCode) -> Self {
        let correlation_id = match &failure {
            Failure::Domain(err) => err.log_if_server_side(),
            _ => None,
        };
        let (status, kind, message, violations, allow) = match failure {
            Failure::Invalid(violations) => (
                StatusCode::BAD_REQUEST,
                Kind::BadInput,
                violations
                    .iter()
                    .map(|v| v.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                violations,
                None,
            ),
            Failure::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Kind::UnsupportedMediaType,
                "the request body must be JSON, sent with `Content-Type: application/json`".into(),
                Vec::new(),
                None,
            ),
            Failure::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                Kind::MethodNotAllowed,
                format!("this route supports {allow}"),
                Vec::new(),
                Some(allow),
            ),
            Failure::Domain(err) => {
                let message = match (&err, &correlation_id) {
                    (Error::Unavailable(_), Some(id)) => {
                        format!("the database is unavailable; retry later (correlation id {id})")
                    }
                    (Error::Internal(_), Some(id)) => {
                        format!("internal error (correlation id {id})")
                    }
                    _ => err.to_string(),
                };
                let (status, kind) = match &err {
                    Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, Kind::Unauthenticated),
                    Error::Forbidden(_) => (StatusCode::FORBIDDEN, Kind::Forbidden),
                    Error::BadInput(_) => (StatusCode::BAD_REQUEST, Kind::BadInput),
                    Error::NotFound(_) => (StatusCode::NOT_FOUND, Kind::NotFound),
                    Error::Conflict { .. } => (StatusCode::CONFLICT, Kind::Conflict),
                    Error::PreconditionFailed { .. } => (precondition, Kind::PreconditionFailed),
                    Error::PayloadTooLarge { .. } => {
                        (StatusCode::PAYLOAD_TOO_LARGE, Kind::PayloadTooLarge)
                    }
                    Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, Kind::Unavailable),
                    Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, Kind::Internal),
                };
                let violations = match err {
                    Error::BadInput(violation) => vec![violation],
                    _ => Vec::new(),
                };
                (status, kind, message, violations, None)
            }
        };
        Problem {
            status,
            kind,
            message,
            violations,
            correlation_id,
            allow,
        }
    }

    /// The response: the envelope's body under this problem's status and headers.
    pub fn respond(&self, body: impl serde::Serialize) -> Response {
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.kind == Kind::Unauthenticated {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The caller, allowed to do `access`.
pub(crate) async fn principal(
    state: &AppState,
    headers: &HeaderMap,
    access: Access,
) -> Result<Principal, Failure> {
    let principal = auth::authenticate(state, headers).await?;
    principal.require(access)?;
    Ok(principal)
}

/// The request body as JSON. The body must be declared as JSON (`application/json`, or any
/// `application/*+json`), within the body limit, and well-formed.
pub(crate) fn json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, Failure> {
    let body = read_body(state, body)?;
    if !declares_json(headers) {
        return Err(Failure::UnsupportedMediaType);
    }
    parse_json(&body)
}

/// The body's bytes, or the failure that stopped reading them (413 past the body limit).
pub(crate) fn read_body(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Failure> {
    match body {
        Ok(body) => Ok(body),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = state.config.limits.max_body_bytes;
            Err(Error::PayloadTooLarge {
                message: format!("the request body is larger than {limit} bytes"),
                limit,
            }
            .into())
        }
        Err(rejection) => Err(Error::bad_input("body", "readable", rejection.body_text()).into()),
    }
}

pub(crate) fn declares_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub(crate) fn parse_json(body: &[u8]) -> Result<Value, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad_input("body", "required", "the request body is empty").into());
    }
    serde_json::from_slice(body).map_err(|err| {
        Error::bad_input("body", "json", format!("the body is not valid JSON: {err}")).into()
    })
}

/// A failure for a request whose method the route does not support.
pub(crate) fn method_not_allowed(allow: &'static str) -> Failure {
    Failure::MethodNotAllowed { allow }
}

/// Timestamps as the legacy contracts write them: UTC, milliseconds, `Z`.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An `If-Match` or `If-None-Match` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    /// `*`: any current representation.
    Any,
    /// The opaque part of one strong entity tag, without quotes.
    Tag(String),
    /// Weak or malformed tags, which a strong comparison never matches.
    Never,
}

pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<Condition>, Failure> {
    condition(headers, header::IF_MATCH)
}

pub(crate) fn if_none_match(headers: &HeaderMap) -> Result<Option<Condition>, Failure> {
    condition(headers, header::IF_NONE_MATCH)
}

fn condition(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<Condition>, Failure> {
    let mut values = headers.get_all(&name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if values.next().is_some() || text.contains(',') {
        return Err(Error::bad_input(
            name.as_str(),
            "singleEntityTag",
            format!("`{name}` must hold `*` or a single entity tag"),
        )
        .into());
    }
    Ok(Some(match text {
        "*" => Condition::Any,
        _ => match text
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
        {
            Some(opaque) if !opaque.contains('"') => Condition::Tag(opaque.to_owned()),
            _ => Condition::Never,
        },
    }))
}

/// The strong entity tag of one setting version.
pub(crate) fn version_etag(version: i32) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

/// The strong entity tag of a document made of several settings (see `document_tag`).
pub(crate) fn document_etag(tag: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{tag}\"")).expect("hex is a valid header value")
}

/// Whether a GET may answer 304: the client's `If-None-Match` names the current tag.
pub(crate) fn not_modified(condition: Option<&Condition>, current: &str) -> bool {
    match condition {
        Some(Condition::Any) => true,
        Some(Condition::Tag(tag)) => tag == current,
        _ => false,
    }
}

/// The 304 answer: no body, the current tag.
pub(crate) fn not_modified_response(etag: HeaderValue) -> Response {
    (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response()
}

/// `If-Match` on a document made of `keys` (`None`: every key of the scope). `*` always holds:
/// the document exists even when it holds no setting.
pub(crate) fn document_check(
    condition: Option<Condition>,
    keys: Option<&[Key]>,
) -> Result<Option<DocumentCheck>, Error> {
    match condition {
        None | Some(Condition::Any) => Ok(None),
        Some(Condition::Tag(tag)) => Ok(Some(DocumentCheck {
            keys: keys.map(<[Key]>::to_vec),
            tag,
        })),
        Some(Condition::Never) => Err(Error::PreconditionFailed {
            message: "`If-Match` must name the strong ETag of a read".into(),
            current_version: None,
        }),
    }
}
