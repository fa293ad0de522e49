//! What the two typed contracts (003 and 004) share: a fixed set of fields, each a setting of
//! the default scope, validated as the contract's own request type before the catalog sees it,
//! and read back as one document with defaults filled in; and the GET and PATCH that serve it.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use axum::{
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::{
    Condition, ContractScopes, RestState, document_check,
    envelope::{ApiError, Envelope, Failure},
    etag, if_match, if_none_match, origin, principal, tagged_read,
};
use crate::{
    auth::{Access, Principal},
    error::{Error, Violation},
    settings::{Key, Preconditions, Scope, User, document_tag, short_hex, stale_document},
};

/// A typed contract: its fields and the body that its GET and PATCH answer with.
pub(crate) trait TypedContract: Envelope {
    const FIELDS: &'static [Field];
    /// The scope the contract is bound to.
    fn scope(scopes: &ContractScopes) -> &Scope;
    /// The PATCH route, as the history names it.
    const PATCH_ROUTE: &'static str;
    type Body: Serialize;

    fn body(document: &Document) -> Self::Body;

    /// What the contract does once a PATCH has written something, before the fresh read.
    fn after_write(_principal: &Principal) {}
}

/// The GET: the document with its tag, or 304 when `If-None-Match` names the tag.
pub(crate) async fn get<C: TypedContract>(
    state: &RestState,
    headers: &HeaderMap,
) -> Result<Response, ApiError<C>> {
    let principal = principal(state, headers, Access::Read).await?;
    let cached = if_none_match(headers)?;
    let document = read(
        state,
        &principal.user_id,
        C::scope(&state.scopes),
        C::FIELDS,
    )
    .await?;
    Ok(tagged_read(cached.as_ref(), &document.tag, || {
        C::body(&document)
    })?)
}

/// The PATCH, given its validated fields: writes them under the request's `If-Match`, then
/// answers the fresh document with its tag.
pub(crate) async fn patch<C: TypedContract>(
    state: &RestState,
    headers: &HeaderMap,
    principal: &Principal,
    update: Map<String, Value>,
) -> Result<Response, ApiError<C>> {
    let scope = C::scope(&state.scopes);
    let written = write(
        state,
        principal,
        C::PATCH_ROUTE,
        scope,
        C::FIELDS,
        update,
        if_match(headers)?,
    )
    .await?;
    if written {
        C::after_write(principal);
    }
    let document = read(state, &principal.user_id, scope, C::FIELDS).await?;
    let body = axum::Json(C::body(&document));
    Ok(([(header::ETAG, etag(&document.tag)?)], body).into_response())
}

/// The type a contract gives one of its fields.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FieldType {
    Boolean,
    Text { max_chars: usize },
    OneOf(&'static [&'static str]),
}

/// A field of a contract: a setting key of the default scope, and its type.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    pub key: Key,
    pub kind: FieldType,
}

impl Field {
    /// A field named in the code; a name that is not a valid key fails the build.
    pub const fn new(name: &'static str, kind: FieldType) -> Self {
        Field {
            key: Key::from_static(name),
            kind,
        }
    }

    pub fn name(&self) -> &str {
        self.key.as_str()
    }
}

/// A contract's fields, as setting keys.
fn keys(fields: &[Field]) -> Vec<Key> {
    fields.iter().map(|field| field.key.clone()).collect()
}

/// Checks a sparse update: a JSON object whose members are fields of the contract, each of its
/// type (`null` is not a value of any). Reports every problem, in the words of the validators
/// the legacy clients know.
pub(crate) fn validate(fields: &[Field], body: Value) -> Result<Map<String, Value>, Failure> {
    let Value::Object(members) = body else {
        return Err(Failure::Invalid(vec![violation(
            "body",
            "type",
            "the body must be a JSON object".into(),
        )]));
    };
    let mut problems = Vec::new();
    for (name, value) in &members {
        let Some(field) = fields.iter().find(|field| field.name() == name) else {
            problems.push(violation(
                name,
                "whitelist",
                format!("property {name} should not exist"),
            ));
            continue;
        };
        let problem = match (field.kind, value) {
            (FieldType::Boolean, Value::Bool(_)) => None,
            (FieldType::Boolean, _) => {
                Some(("isBoolean", format!("{name} must be a boolean value")))
            }
            (FieldType::Text { max_chars }, Value::String(text))
                if text.chars().count() > max_chars =>
            {
                Some((
                    "maxLength",
                    format!("{name} must be shorter than or equal to {max_chars} characters"),
                ))
            }
            (FieldType::Text { .. }, Value::String(_)) => None,
            (FieldType::Text { .. }, _) => Some(("isString", format!("{name} must be a string"))),
            (FieldType::OneOf(allowed), Value::String(text))
                if allowed.contains(&text.as_str()) =>
            {
                None
            }
            (FieldType::OneOf(allowed), _) => Some((
                "isIn",
                format!(
                    "{name} must be one of the following values: {}",
                    allowed.join(", ")
                ),
            )),
        };
        if let Some((rule, message)) = problem {
            problems.push(violation(name, rule, message));
        }
    }
    if problems.is_empty() {
        Ok(members)
    } else {
        Err(Failure::Invalid(problems))
    }
}

fn violation(field: &str, rule: &'static str, message: String) -> Violation {
    Violation {
        field: field.to_owned(),
        rule: Cow::Borrowed(rule),
        pointer: None,
        message,
    }
}

/// The contract's fields as they apply to the user, with the user's row and a tag of the
/// stored values.
pub(crate) struct Document {
    pub user: User,
    /// Every field, in the contract's order, with catalog and organisation defaults filled in.
    pub values: Vec<(Key, Value)>,
    /// When the first of the stored fields was created; the user's creation without any.
    pub created_at: DateTime<Utc>,
    /// When the last of the stored fields changed; the user's creation without any.
    pub updated_at: DateTime<Utc>,
    /// The entity tag of the document: it changes when a stored field is written, created or
    /// removed, and when a default that fills a field changes (an organisation default).
    pub tag: String,
    /// The tag of the stored fields alone, which a write checks again under its row locks.
    stored_tag: String,
}

impl Document {
    pub fn value(&self, name: &str) -> Value {
        self.values
            .iter()
            .find(|(field, _)| field.as_str() == name)
            .map(|(_, value)| value.clone())
            .unwrap_or(Value::Null)
    }
}

async fn read(
    state: &RestState,
    user_id: &str,
    scope: &Scope,
    fields: &[Field],
) -> Result<Document, Error> {
    let user = state.store.user(user_id).await?;
    let effective = state
        .store
        .effective(user_id, scope, Some(&keys(fields)))
        .await?;
    let stored: Vec<_> = effective
        .iter()
        .filter_map(|e| e.setting.as_ref())
        .collect();
    let created_at = stored
        .iter()
        .map(|s| s.created_at)
        .min()
        .unwrap_or(user.created_at);
    let updated_at = stored
        .iter()
        .map(|s| s.updated_at)
        .max()
        .unwrap_or(user.created_at);
    // What a write's row locks protect: the fields stored in the contract's own scope (values
    // that show through from the default scope are covered by the whole tag only).
    let stored_tag = document_tag(
        stored
            .iter()
            .filter(|s| s.scope == scope.as_str())
            .map(|s| (s.key.as_str(), s.version)),
    );
    // What the served tag covers: every stored value shown, from whichever scope.
    let shown: Vec<(String, i32)> = stored
        .iter()
        .map(|s| (format!("{}\u{0}{}", s.scope, s.key), s.version))
        .collect();
    let shown_tag = document_tag(shown.iter().map(|(key, version)| (key.as_str(), *version)));
    let defaulted = effective.iter().filter(|e| e.setting.is_none());
    let tag = with_defaults(&shown_tag, defaulted.map(|e| (e.key.as_str(), &e.value)));
    let values = fields
        .iter()
        .map(|field| {
            let value = effective
                .iter()
                .find(|e| e.key == field.name())
                .map(|e| e.value.clone())
                .unwrap_or(Value::Null);
            (field.key.clone(), value)
        })
        .collect();
    Ok(Document {
        user,
        values,
        created_at,
        updated_at,
        tag,
        stored_tag,
    })
}

/// A tag of the shown stored values' tag and the values that defaults give the other fields.
fn with_defaults<'a>(
    shown_tag: &str,
    defaulted: impl Iterator<Item = (&'a str, &'a Value)>,
) -> String {
    let mut digest = Sha256::new();
    digest.update(shown_tag.as_bytes());
    for (key, value) in defaulted {
        digest.update([0]);
        digest.update(key.as_bytes());
        digest.update([0]);
        digest.update(value.to_string().as_bytes());
    }
    short_hex(digest)
}

/// Applies a validated sparse update in one transaction, checking `If-Match` against the tag
/// of the contract's fields. Writes nothing when the update is empty; says whether it wrote.
async fn write(
    state: &RestState,
    principal: &Principal,
    route: &'static str,
    scope: &Scope,
    fields: &[Field],
    update: Map<String, Value>,
    condition: Option<Condition>,
) -> Result<bool, Error> {
    let user_id = principal.user_id.as_str();
    let keys = keys(fields);
    // The tag also covers defaults, which no row lock protects: check it against a fresh read
    // first, then have the write check the stored fields' part under its locks.
    let condition = match condition {
        Some(Condition::Tag(tag)) => {
            let current = read(state, user_id, scope, fields).await?;
            if current.tag != tag {
                return Err(stale_document());
            }
            Some(Condition::Tag(current.stored_tag))
        }
        other => other,
    };
    let preconditions = Preconditions {
        versions: Default::default(),
        document: document_check(condition, Some(&keys))?,
    };
    if update.is_empty() && preconditions.document.is_none() {
        return Ok(false);
    }
    let written = !update.is_empty();
    state
        .store
        .apply_patch(
            &origin(principal, route),
            user_id,
            scope,
            Value::Object(update),
            &preconditions,
        )
        .await?;
    Ok(written)
}
