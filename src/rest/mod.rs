//! The legacy REST contracts, mounted beside GraphQL. Each `cNNN_*` module keeps one existing
//! API's paths, status codes, bodies and error envelopes (the contract of the same number in
//! the README), and only translates between that envelope and the settings domain. What they
//! share is here and in `envelope.rs` and `routes.rs`: reading the body without ever letting a
//! framework rejection reach a client, authentication, entity tags and preconditions, and one
//! classification of failures that every envelope renders in its own shape.

mod c000_per_key;
mod c001_partial;
mod c002_preferences;
mod c003_typed;
mod c004_sparse;
mod envelope;
mod export;
pub mod openapi;
mod routes;
mod typed;

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::rejection::BytesRejection,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::Value;

use envelope::Failure;

use crate::{
    app::{AppState, BodyLimit},
    auth::{Access, Authenticator, Principal},
    config::RestScopes,
    error::Error,
    settings::{DocumentCheck, Key, Origin, Preconditions, Scope, Store},
    telemetry,
};

/// What the REST handlers use. Cloned for every request, so a clone shares it.
#[derive(Clone)]
pub struct RestState(Arc<RestShared>);

impl RestState {
    pub fn new(shared: RestShared) -> Self {
        RestState(Arc::new(shared))
    }
}

impl std::ops::Deref for RestState {
    type Target = RestShared;

    fn deref(&self) -> &RestShared {
        &self.0
    }
}

/// The parts of [`RestState`].
pub struct RestShared {
    pub auth: Authenticator,
    pub store: Arc<Store>,
    pub body_limit: BodyLimit,
    pub scopes: Arc<ContractScopes>,
}

/// The scope each contract reads and writes: the validated `REST_SCOPES`.
#[derive(Clone, Debug)]
pub struct ContractScopes {
    pub c000: Scope,
    pub c001: Scope,
    /// Contract 002's scope when a request names no `space`.
    pub c002: Scope,
    pub c003: Scope,
    pub c004: Scope,
}

impl ContractScopes {
    pub fn new(config: &RestScopes) -> Result<Self, Error> {
        let parse = |raw: &str| Scope::parse_as(raw, "REST_SCOPES");
        Ok(ContractScopes {
            c000: parse(&config.c000)?,
            c001: parse(&config.c001)?,
            c002: parse(&config.c002)?,
            c003: parse(&config.c003)?,
            c004: parse(&config.c004)?,
        })
    }
}

/// Every legacy route, each with its contract's answers for unsupported methods and for the
/// paths below its routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(c000_per_key::router())
        .merge(c001_partial::router())
        .merge(c002_preferences::router())
        .merge(c003_typed::router())
        .merge(c004_sparse::router())
        .merge(export::router())
}

/// Who writes through `route`, for the history.
pub(crate) fn origin(principal: &Principal, route: &'static str) -> Origin {
    Origin::new(&principal.user_id, route, telemetry::correlation_id())
}

/// The caller, allowed to do `access`.
pub(crate) async fn principal(
    state: &RestState,
    headers: &HeaderMap,
    access: Access,
) -> Result<Principal, Failure> {
    let principal = state.auth.authenticate(headers).await?;
    principal.require(access)?;
    Ok(principal)
}

/// The request body as JSON. The body must be declared as JSON (`application/json`, or any
/// `application/*+json`), within the body limit, and well-formed.
pub(crate) fn json_body(
    state: &RestState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, Failure> {
    let body = state.body_limit.read(body)?;
    if !declares_json(headers) {
        return Err(Failure::UnsupportedMediaType);
    }
    parse_json(&body)
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

/// Timestamps as the legacy contracts write them: UTC, milliseconds, `Z`.
pub(crate) use crate::timestamp::rfc3339_millis as timestamp;

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

/// The strong entity tag whose opaque part is `tag`: a version, or a document's tag.
pub(crate) fn etag(tag: &str) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(&format!("\"{tag}\""))
        .map_err(|err| Error::internal(anyhow::anyhow!("entity tag `{tag}`: {err}")).into())
}

/// Whether a GET may answer 304: the client's `If-None-Match` names the current tag.
fn not_modified(condition: Option<&Condition>, current: &str) -> bool {
    match condition {
        Some(Condition::Any) => true,
        Some(Condition::Tag(tag)) => tag == current,
        _ => false,
    }
}

/// A tagged read: 304 with the tag and no body when `cached` (the request's `If-None-Match`)
/// names `tag`, otherwise the body that `body` makes, with `ETag`.
pub(crate) fn tagged_read<T: Serialize>(
    cached: Option<&Condition>,
    tag: &str,
    body: impl FnOnce() -> T,
) -> Result<Response, Failure> {
    let etag = etag(tag)?;
    if not_modified(cached, tag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag)], axum::Json(body())).into_response())
}

/// Applies a merge patch of keys to `scope`, guarded by the request's `If-Match` on the whole
/// scope's document (the tag its GET served).
pub(crate) async fn patch_scope(
    state: &RestState,
    headers: &HeaderMap,
    principal: &Principal,
    route: &'static str,
    scope: &Scope,
    patch: Value,
) -> Result<(), Failure> {
    let preconditions = Preconditions {
        versions: Default::default(),
        document: document_check(if_match(headers)?, None)?,
    };
    state
        .store
        .apply_patch(
            &origin(principal, route),
            &principal.user_id,
            scope,
            patch,
            &preconditions,
        )
        .await?;
    Ok(())
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
