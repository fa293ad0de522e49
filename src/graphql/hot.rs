//! The direct path of the hottest operations: a `settings` query, a `setSetting` or an
//! `updateSettings` mutation of scalar fields, answered by writing the response from the
//! settings read or written instead of running the executor.
//!
//! Executing `{ settings { key value version updatedAt } }` costs the executor more than
//! everything else in the request together: a future per field of every setting, each value
//! converted into async-graphql's value tree, and the response built as a tree before it is
//! written. For a write, the executor's validation and its tree cost a sixth of the service's
//! CPU. A document of such a shape is recognised once, when it is admitted; its requests then
//! call the store and write the JSON text directly, in selection order, byte for byte what the
//! executor answers (a test compares the two).
//!
//! Only documents whose validity follows from their shape take this path: one operation of
//! the field's type with one such field, arguments and variables of the declared types (the
//! JSON values of a write only as variables), scalar fields of `Setting` without arguments,
//! directives or repeated response keys, and no fragments. A request this path cannot start,
//! such as an invalid scope or key, a missing variable or a token without the access, goes to
//! the executor, which reports the error as it always does. Once a write has been asked of the
//! store, this path answers it, error or not, as the executor would: it is never sent twice.

use std::collections::HashSet;

use async_graphql::{
    Name, Pos, Request, Variables,
    parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, Type},
};
use async_graphql_value::{ConstValue, Value};

use super::{mutation::origin, query::parse_keys, types::global_id};
use crate::{
    auth::{Access, Principal},
    error::Error,
    json_text,
    settings::{Key, Preconditions, Scope, Setting, Store},
};

/// The limits a recognised document must fit, as the executor enforces them.
#[derive(Clone, Copy, Debug)]
pub struct ExecutorLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
}

/// A recognised operation.
#[derive(Debug)]
pub struct HotOperation {
    /// The operation's name, which a request's `operationName` must match when it has one.
    operation_name: Option<Name>,
    /// The response key of the root field (its alias, or its name).
    response_key: Name,
    /// Where the root field is written, for the error of a write.
    position: Pos,
    root: Root,
    /// The selected fields of each setting, in selection order, each with the JSON text
    /// written before its value: `{` for the first, `,` for the others, then its response key
    /// and `:`, written once here rather than for every setting.
    fields: Vec<(Box<[u8]>, Field)>,
}

/// The root field and where each of its arguments comes from.
#[derive(Debug)]
enum Root {
    Settings {
        scope: Argument,
        keys: Argument,
    },
    SetSetting {
        key: Argument,
        value: Argument,
        scope: Argument,
    },
    UpdateSettings {
        patch: Argument,
        scope: Argument,
    },
}

/// What the direct path answers.
pub enum Answer {
    /// The response body, with data.
    Data(Vec<u8>),
    /// The response of a write the store refused, as the executor reports it.
    Failed(async_graphql::Response),
}

/// Makes a root field of its arguments, given in the order of its parameters.
type Build = fn(&mut dyn Iterator<Item = Argument>) -> Root;

/// The next argument of a [`Build`]'s.
fn take(arguments: &mut dyn Iterator<Item = Argument>) -> Argument {
    arguments.next().unwrap_or(Argument::Absent)
}

/// Where an argument's value comes from.
#[derive(Debug)]
enum Argument {
    Absent,
    Literal(ConstValue),
    /// A variable of a nullable type counts as absent when the request does not provide it.
    Variable {
        name: Name,
        nullable: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Id,
    Key,
    Scope,
    Value,
    Version,
    CreatedAt,
    UpdatedAt,
    ExpiresAt,
    Typename,
}

impl Field {
    fn named(name: &str) -> Option<Field> {
        Some(match name {
            "id" => Field::Id,
            "key" => Field::Key,
            "scope" => Field::Scope,
            "value" => Field::Value,
            "version" => Field::Version,
            "createdAt" => Field::CreatedAt,
            "updatedAt" => Field::UpdatedAt,
            "expiresAt" => Field::ExpiresAt,
            "__typename" => Field::Typename,
            _ => return None,
        })
    }
}

/// An argument of a root field this path takes: the variable types it may be given, as
/// written in a variable definition, and the literals it takes (none: only a variable).
struct Parameter {
    name: &'static str,
    types: &'static [&'static str],
    literal: Option<fn(&ConstValue) -> bool>,
    /// A non-null argument without a default: the document is invalid without it.
    required: bool,
}

/// A string, such as a key or a scope: as a variable or written in the document.
const fn string(name: &'static str, required: bool) -> Parameter {
    Parameter {
        name,
        types: &["String!"],
        literal: Some(|value| matches!(value, ConstValue::String(_))),
        required,
    }
}

const SCOPE: Parameter = string("scope", false);

const KEY: Parameter = string("key", true);

const KEYS: Parameter = Parameter {
    name: "keys",
    types: &["[String!]", "[String!]!"],
    literal: Some(|value| match value {
        ConstValue::Null => true,
        ConstValue::List(items) => items
            .iter()
            .all(|item| matches!(item, ConstValue::String(_))),
        _ => false,
    }),
    required: false,
};

/// A JSON value to write: as a variable only, whose JSON the client sent as it is.
const fn json(name: &'static str) -> Parameter {
    Parameter {
        name,
        types: &["JSON!"],
        literal: None,
        required: true,
    }
}

impl HotOperation {
    /// The document as a hot operation, when its shape alone makes it valid and within
    /// `limits`.
    pub fn recognize(
        document: &ExecutableDocument,
        limits: ExecutorLimits,
    ) -> Option<HotOperation> {
        if !document.fragments.is_empty() {
            return None;
        }
        let (operation_name, operation) = match &document.operations {
            DocumentOperations::Single(operation) => (None, operation),
            DocumentOperations::Multiple(operations) if operations.len() == 1 => {
                let (name, operation) = operations.iter().next()?;
                (Some(name.clone()), operation)
            }
            DocumentOperations::Multiple(_) => return None,
        };
        let operation = &operation.node;
        if !operation.directives.is_empty() {
            return None;
        }
        let [root] = operation.selection_set.node.items.as_slice() else {
            return None;
        };
        let Selection::Field(root) = &root.node else {
            return None;
        };
        let position = root.pos;
        let root = &root.node;
        if !root.directives.is_empty() {
            return None;
        }
        let (parameters, build): (&[Parameter], Build) =
            match (operation.ty, root.name.node.as_str()) {
                (OperationType::Query, "settings") => {
                    (&[SCOPE, KEYS], |arguments| Root::Settings {
                        scope: take(arguments),
                        keys: take(arguments),
                    })
                }
                (OperationType::Mutation, "setSetting") => {
                    (&[KEY, json("value"), SCOPE], |arguments| Root::SetSetting {
                        key: take(arguments),
                        value: take(arguments),
                        scope: take(arguments),
                    })
                }
                (OperationType::Mutation, "updateSettings") => {
                    (&[json("patch"), SCOPE], |arguments| Root::UpdateSettings {
                        patch: take(arguments),
                        scope: take(arguments),
                    })
                }
                _ => return None,
            };
        // Every declared variable must be used exactly once, by an argument of its type.
        let mut declared: Vec<(&Name, &Type)> = Vec::new();
        for definition in &operation.variable_definitions {
            let definition = &definition.node;
            if definition.default_value.is_some() || !definition.directives.is_empty() {
                return None;
            }
            declared.push((&definition.name.node, &definition.var_type.node));
        }
        let mut used: HashSet<&Name> = HashSet::new();
        let mut arguments: Vec<Argument> = parameters.iter().map(|_| Argument::Absent).collect();
        for (name, value) in &root.arguments {
            let at = parameters
                .iter()
                .position(|parameter| parameter.name == name.node.as_str())?;
            let (parameter, slot) = (&parameters[at], &mut arguments[at]);
            if !matches!(slot, Argument::Absent) {
                return None;
            }
            *slot = match &value.node {
                Value::Variable(variable) => {
                    let (_, declared_type) = declared.iter().find(|(name, _)| *name == variable)?;
                    if !parameter
                        .types
                        .contains(&declared_type.to_string().as_str())
                        || !used.insert(variable)
                    {
                        return None;
                    }
                    Argument::Variable {
                        name: variable.clone(),
                        nullable: declared_type.nullable,
                    }
                }
                literal => {
                    let literal = literal.clone().into_const()?;
                    if !parameter.literal.is_some_and(|fits| fits(&literal)) {
                        return None;
                    }
                    Argument::Literal(literal)
                }
            };
        }
        if used.len() != declared.len() {
            return None;
        }
        let given = parameters
            .iter()
            .zip(&arguments)
            .all(|(parameter, argument)| {
                !parameter.required || !matches!(argument, Argument::Absent)
            });
        if !given {
            return None;
        }
        let mut fields = Vec::new();
        let mut keys_seen = HashSet::new();
        for item in &root.selection_set.node.items {
            let Selection::Field(field) = &item.node else {
                return None;
            };
            let field = &field.node;
            if !field.arguments.is_empty()
                || !field.directives.is_empty()
                || !field.selection_set.node.items.is_empty()
            {
                return None;
            }
            let response_key = field.response_key().node.clone();
            if !keys_seen.insert(response_key.clone()) {
                return None;
            }
            let mut before = vec![if fields.is_empty() { b'{' } else { b',' }];
            json_text::write_str(&mut before, response_key.as_str());
            before.push(b':');
            fields.push((before.into(), Field::named(field.name.node.as_str())?));
        }
        // The executor counts each field as 1, and the depth of `settings { … }` is 2.
        if fields.is_empty() || limits.max_depth < 2 || limits.max_complexity < 1 + fields.len() {
            return None;
        }
        Some(HotOperation {
            operation_name,
            response_key: root.response_key().node.clone(),
            position,
            root: build(&mut arguments.into_iter()),
            fields,
        })
    }

    /// Whether it is a query, which only reads.
    pub fn is_query(&self) -> bool {
        matches!(self.root, Root::Settings { .. })
    }

    /// The answer to `request` for `principal`, or `None` when the executor must answer it
    /// (an error to report, or a request this path does not cover). `None` only before a
    /// write was asked of the store.
    pub async fn run(
        &self,
        request: &Request,
        principal: &Principal,
        store: &Store,
    ) -> Option<Answer> {
        if let Some(name) = &request.operation_name
            && self.operation_name.as_ref().is_none_or(|own| own != name)
        {
            return None;
        }
        let variables = &request.variables;
        // A write's future is many times a read's: boxed, it does not make every read's
        // future that large.
        match &self.root {
            Root::Settings { scope, keys } => {
                self.read(
                    principal,
                    store,
                    resolve(scope, variables)?,
                    resolve(keys, variables)?,
                )
                .await
            }
            Root::SetSetting { key, value, scope } => {
                principal.require(Access::Write).ok()?;
                let key = match resolve(key, variables)? {
                    Some(ConstValue::String(key)) => Key::parse(key.clone(), "key").ok()?,
                    _ => return None,
                };
                let value = json_of(value, variables)?;
                let scope = scope_of(resolve(scope, variables)?)?;
                Box::pin(self.set(principal, store, scope, key, value)).await
            }
            Root::UpdateSettings { patch, scope } => {
                principal.require(Access::Write).ok()?;
                let patch = json_of(patch, variables)?;
                let scope = scope_of(resolve(scope, variables)?)?;
                Box::pin(self.update(principal, store, scope, patch)).await
            }
        }
    }

    async fn read(
        &self,
        principal: &Principal,
        store: &Store,
        scope: Option<&ConstValue>,
        keys: Option<&ConstValue>,
    ) -> Option<Answer> {
        principal.require(Access::Read).ok()?;
        let scope = scope_of(scope)?;
        let keys = match keys {
            None | Some(ConstValue::Null) => None,
            Some(ConstValue::List(items)) => Some(
                items
                    .iter()
                    .map(|item| match item {
                        ConstValue::String(key) => Some(key.clone()),
                        _ => None,
                    })
                    .collect::<Option<Vec<String>>>()?,
            ),
            Some(_) => return None,
        };
        let keys: Option<Vec<Key>> = parse_keys(keys).ok()?;
        let listed = store
            .listed(&principal.user_id, &scope, keys.as_deref())
            .await
            .ok()?;
        Some(Answer::Data(
            self.data(|body| self.write_list(body, listed.iter())),
        ))
    }

    async fn set(
        &self,
        principal: &Principal,
        store: &Store,
        scope: Scope,
        key: Key,
        value: serde_json::Value,
    ) -> Option<Answer> {
        let written = store
            .set_until(
                &origin(principal),
                &principal.user_id,
                &scope,
                &key,
                value,
                None,
                None,
            )
            .await;
        Some(match written {
            Ok((setting, _created)) => {
                Answer::Data(self.data(|body| self.write_setting(body, &setting)))
            }
            Err(err) => self.failed(&err),
        })
    }

    async fn update(
        &self,
        principal: &Principal,
        store: &Store,
        scope: Scope,
        patch: serde_json::Value,
    ) -> Option<Answer> {
        let preconditions = Preconditions {
            versions: Default::default(),
            document: None,
        };
        let written = store
            .apply_patch(
                &origin(principal),
                &principal.user_id,
                &scope,
                patch,
                &preconditions,
            )
            .await;
        Some(match written {
            Ok(settings) => Answer::Data(self.data(|body| self.write_list(body, settings.iter()))),
            Err(err) => self.failed(&err),
        })
    }

    /// `{"data":{<response key>:` what `write` writes `}}`.
    fn data(&self, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut body = Vec::with_capacity(1024);
        body.extend_from_slice(b"{\"data\":{");
        json_text::write_str(&mut body, self.response_key.as_str());
        body.push(b':');
        write(&mut body);
        body.extend_from_slice(b"}}");
        body
    }

    /// The executor's response to a root field that failed with `err`: the field is non-null,
    /// so `data` is null, and the error has the field's place and path.
    fn failed(&self, err: &Error) -> Answer {
        let mut error = async_graphql::Error::from(err).into_server_error(self.position);
        error.path = vec![async_graphql::PathSegment::Field(
            self.response_key.to_string(),
        )];
        Answer::Failed(async_graphql::Response::from_errors(vec![error]))
    }

    fn write_list<'s>(&self, body: &mut Vec<u8>, settings: impl Iterator<Item = &'s Setting>) {
        body.push(b'[');
        for (index, setting) in settings.enumerate() {
            if index > 0 {
                body.push(b',');
            }
            self.write_setting(body, setting);
        }
        body.push(b']');
    }

    fn write_setting(&self, body: &mut Vec<u8>, setting: &Setting) {
        for (before, field) in &self.fields {
            body.extend_from_slice(before);
            match field {
                Field::Id => json_text::write_str(
                    body,
                    &global_id("Setting", &[&setting.user_id, &setting.scope, &setting.key]),
                ),
                Field::Key => json_text::write_str(body, &setting.key),
                Field::Scope => json_text::write_str(body, &setting.scope),
                Field::Value => json_text::write_value(body, &setting.value),
                Field::Version => json_text::write_number(body, &setting.version),
                Field::CreatedAt => write_time(body, setting.created_at),
                Field::UpdatedAt => write_time(body, setting.updated_at),
                Field::ExpiresAt => match setting.expires_at {
                    Some(at) => write_time(body, at),
                    None => body.extend_from_slice(b"null"),
                },
                Field::Typename => body.extend_from_slice(b"\"Setting\""),
            }
        }
        body.push(b'}');
    }
}

/// The `scope` argument's value: `""` when absent; `None` when it is not a valid scope.
fn scope_of(value: Option<&ConstValue>) -> Option<Scope> {
    let scope = match value {
        None => String::new(),
        Some(ConstValue::String(scope)) => scope.clone(),
        Some(_) => return None,
    };
    Scope::parse(scope).ok()
}

/// A `JSON!` argument's value as the executor's `JSON` scalar takes it; `None` for a null,
/// which the executor refuses.
fn json_of(argument: &Argument, variables: &Variables) -> Option<serde_json::Value> {
    match resolve(argument, variables)?? {
        ConstValue::Null => None,
        value => serde_json::to_value(value).ok(),
    }
}

/// An argument's value for one request: `Some(None)` when it is absent (an unprovided
/// nullable variable counts as absent, as `omit_unprovided_variables` makes it for the
/// executor); `None` when a non-null variable was not provided, which is an error.
fn resolve<'a>(argument: &'a Argument, variables: &'a Variables) -> Option<Option<&'a ConstValue>> {
    match argument {
        Argument::Absent => Some(None),
        Argument::Literal(value) => Some(Some(value)),
        Argument::Variable { name, nullable } => match variables.get(name) {
            Some(value) => Some(Some(value)),
            None => nullable.then_some(None),
        },
    }
}

/// A date-time as the `DateTime` scalar writes it: a JSON string of characters that need no
/// escaping.
fn write_time(body: &mut Vec<u8>, at: chrono::DateTime<chrono::Utc>) {
    body.push(b'"');
    crate::timestamp::push_rfc3339_millis(body, at);
    body.push(b'"');
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    const LIMITS: ExecutorLimits = ExecutorLimits {
        max_depth: 16,
        max_complexity: 500,
    };

    fn recognized(query: &str) -> bool {
        recognized_within(query, LIMITS)
    }

    fn recognized_within(query: &str, limits: ExecutorLimits) -> bool {
        HotOperation::recognize(&parse_query(query).unwrap(), limits).is_some()
    }

    #[test]
    fn the_reads_clients_send_are_recognised() {
        for query in [
            "{ settings { key value version updatedAt } }",
            // Apollo Client adds `__typename`; codegen names the operation.
            "query Settings { settings { key value __typename } }",
            "query($k: [String!]) { settings(keys: $k) { id key value } }",
            "query($k: [String!]!, $s: String!) { s: settings(scope: $s, keys: $k) { v: value } }",
            r#"{ settings(scope: "mobile", keys: ["a", "b"]) { key expiresAt createdAt scope } }"#,
            "{ settings(keys: null) { key } }",
            // The writes clients send.
            r#"mutation($v: JSON!) { setSetting(key: "theme", value: $v) { version } }"#,
            "mutation Set($k: String!, $v: JSON!, $s: String!) { setSetting(key: $k, value: $v, scope: $s) { id key value version updatedAt __typename } }",
            "mutation($p: JSON!) { updateSettings(patch: $p) { key version } }",
            r#"mutation Patch($p: JSON!) { u: updateSettings(scope: "mobile", patch: $p) { key value } }"#,
        ] {
            assert!(recognized(query), "{query}");
        }
    }

    #[test]
    fn writes_with_more_than_a_value_and_its_place_go_to_the_executor() {
        for query in [
            // Preconditions, expiry, another user: arguments this path does not take.
            "mutation($v: JSON!) { setSetting(key: \"a\", value: $v, expectedVersion: 1) { version } }",
            "mutation($v: JSON!) { setSetting(key: \"a\", value: $v, ttlSeconds: 60) { version } }",
            "mutation($p: JSON!) { updateSettings(patch: $p, expectedVersions: {a: 1}) { key } }",
            "mutation($p: JSON!) { updateSettings(patch: $p, userId: \"bob\") { key } }",
            // A JSON value written in the document, or of a variable of another type.
            "mutation { setSetting(key: \"a\", value: true) { version } }",
            "mutation { updateSettings(patch: {a: 1}) { key } }",
            "mutation($v: JSON) { setSetting(key: \"a\", value: $v) { version } }",
            "mutation($v: String!) { setSetting(key: \"a\", value: $v) { version } }",
            "mutation($k: ID!, $v: JSON!) { setSetting(key: $k, value: $v) { version } }",
            // A required argument left out, which the executor reports.
            "mutation($v: JSON!) { setSetting(value: $v) { version } }",
            "mutation { updateSettings { key } }",
            // Other shapes.
            "query($p: JSON!) { updateSettings(patch: $p) { key } }",
            "mutation($p: JSON!) { updateSettings(patch: $p) @include(if: true) { key } }",
            "mutation($p: JSON!) { a: updateSettings(patch: $p) { key } b: updateSettings(patch: $p) { key } }",
            "mutation($p: JSON!) { updateSettings(patch: $p) { key owner } }",
            "mutation($k: String!) { deleteSetting(key: $k) }",
        ] {
            assert!(!recognized(query), "{query}");
        }
    }

    #[test]
    fn anything_whose_validity_is_not_evident_goes_to_the_executor() {
        for query in [
            // Directives, fragments, more than one root field or operation.
            "{ settings @include(if: true) { key } }",
            "{ settings { key @skip(if: false) } }",
            "query @cached { settings { key } }",
            "{ settings { ...F } } fragment F on Setting { key }",
            "{ settings { ... on Setting { key } } }",
            "{ settings { key } me { id } }",
            "{ a: settings { key } b: settings { key } }",
            "query A { settings { key } } query B { settings { key } }",
            "mutation { settings { key } }",
            "subscription { settings { key } }",
            // Fields, arguments and response keys the path does not know or that repeat.
            "{ settings { key owner } }",
            "{ settings { key key } }",
            "{ settings { key: value key } }",
            "{ setting(key: \"a\") { key } }",
            "{ settings(userId: \"bob\") { key } }",
            r#"{ settings(scope: "a", scope: "b") { key } }"#,
            "{ settings(scope: null) { key } }",
            "{ settings(scope: 3) { key } }",
            r#"{ settings(keys: ["a", null]) { key } }"#,
            // Variables: declared types, defaults, unused and undeclared ones.
            "query($k: [String]) { settings(keys: $k) { key } }",
            "query($s: String) { settings(scope: $s) { key } }",
            "query($s: ID!) { settings(scope: $s) { key } }",
            r#"query($s: String! = "") { settings(scope: $s) { key } }"#,
            "query($s: String!, $k: [String!]) { settings(scope: $s) { key } }",
            "{ settings(scope: $s) { key } }",
            "query($s: String!) { settings(scope: $s, keys: [$s]) { key } }",
        ] {
            assert!(!recognized(query), "{query}");
        }
    }

    #[test]
    fn a_document_beyond_the_executors_limits_is_left_to_it() {
        let query = "{ settings { key value version } }";
        let limits = |max_depth, max_complexity| ExecutorLimits {
            max_depth,
            max_complexity,
        };
        assert!(recognized_within(query, limits(2, 4)));
        assert!(!recognized_within(query, limits(2, 3)));
        assert!(!recognized_within(query, limits(1, 500)));
    }
}
