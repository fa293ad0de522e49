//! The direct path of the hottest operation: a `settings` query of scalar fields, answered by
//! writing the response from the cached settings instead of running the executor.
//!
//! Executing `{ settings { key value version updatedAt } }` costs the executor more than
//! everything else in the request together: a future per field of every setting, each value
//! converted into async-graphql's value tree, and the response built as a tree before it is
//! written. A document of that shape is recognised once, when it is admitted; its requests
//! then read the settings and write the JSON text directly, in selection order, byte for byte
//! what the executor answers (a test compares the two).
//!
//! Only documents whose validity follows from their shape take this path: one query operation
//! with one `settings` field, arguments and variables of the declared types, scalar fields of
//! `Setting` without arguments, directives or repeated response keys, and no fragments. Any
//! request it cannot answer with data, such as an invalid scope, too many keys or a token
//! without read access, goes to the executor, which reports the error as it always does.

use std::{collections::HashSet, io::Write as _};

use async_graphql::{
    Name, Request, ScalarType, Variables,
    parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, Type},
};
use async_graphql_value::{ConstValue, Value};

use super::{
    query::parse_keys,
    types::{DateTime, global_id},
};
use crate::{
    auth::{Access, Principal},
    settings::{Key, Scope, Setting, Store},
};

/// The limits a recognised document must fit, as the executor enforces them.
#[derive(Clone, Copy, Debug)]
pub struct ExecutorLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
}

/// A recognised `settings` query.
#[derive(Debug)]
pub struct HotQuery {
    /// The operation's name, which a request's `operationName` must match when it has one.
    operation_name: Option<Name>,
    /// The response key of the `settings` field (its alias, or `settings`).
    response_key: Name,
    scope: Argument,
    keys: Argument,
    /// The selected fields of each setting, in selection order, with their response keys.
    fields: Vec<(Name, Field)>,
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

/// The variable types each argument may be given, as written in a variable definition.
const SCOPE_TYPES: &[&str] = &["String!"];
const KEYS_TYPES: &[&str] = &["[String!]", "[String!]!"];

impl HotQuery {
    /// The document as a hot query, when its shape alone makes it valid and within `limits`.
    pub fn recognize(document: &ExecutableDocument, limits: ExecutorLimits) -> Option<HotQuery> {
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
        if operation.ty != OperationType::Query || !operation.directives.is_empty() {
            return None;
        }
        let [root] = operation.selection_set.node.items.as_slice() else {
            return None;
        };
        let Selection::Field(root) = &root.node else {
            return None;
        };
        let root = &root.node;
        if root.name.node.as_str() != "settings" || !root.directives.is_empty() {
            return None;
        }
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
        let (mut scope, mut keys) = (Argument::Absent, Argument::Absent);
        for (name, value) in &root.arguments {
            let (slot, types) = match name.node.as_str() {
                "scope" => (&mut scope, SCOPE_TYPES),
                "keys" => (&mut keys, KEYS_TYPES),
                _ => return None,
            };
            if !matches!(slot, Argument::Absent) {
                return None;
            }
            *slot = match &value.node {
                Value::Variable(variable) => {
                    let (_, declared_type) = declared.iter().find(|(name, _)| *name == variable)?;
                    if !types.contains(&declared_type.to_string().as_str())
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
                    if !literal_fits(name.node.as_str(), &literal) {
                        return None;
                    }
                    Argument::Literal(literal)
                }
            };
        }
        if used.len() != declared.len() {
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
            fields.push((response_key, Field::named(field.name.node.as_str())?));
        }
        // The executor counts each field as 1, and the depth of `settings { … }` is 2.
        if fields.is_empty() || limits.max_depth < 2 || limits.max_complexity < 1 + fields.len() {
            return None;
        }
        Some(HotQuery {
            operation_name,
            response_key: root.response_key().node.clone(),
            scope,
            keys,
            fields,
        })
    }

    /// The response body of `request` for `principal`, or `None` when the executor must
    /// answer it (an error to report, or a request this path does not cover).
    pub async fn run(
        &self,
        request: &Request,
        principal: &Principal,
        store: &Store,
    ) -> Option<Vec<u8>> {
        if let Some(name) = &request.operation_name
            && self.operation_name.as_ref().is_none_or(|own| own != name)
        {
            return None;
        }
        principal.require(Access::Read).ok()?;
        let scope = match resolve(&self.scope, &request.variables)? {
            None => String::new(),
            Some(ConstValue::String(scope)) => scope,
            Some(_) => return None,
        };
        let keys = match resolve(&self.keys, &request.variables)? {
            None | Some(ConstValue::Null) => None,
            Some(ConstValue::List(items)) => Some(
                items
                    .into_iter()
                    .map(|item| match item {
                        ConstValue::String(key) => Some(key),
                        _ => None,
                    })
                    .collect::<Option<Vec<String>>>()?,
            ),
            Some(_) => return None,
        };
        let scope = Scope::parse(scope).ok()?;
        let keys: Option<Vec<Key>> = parse_keys(keys).ok()?;
        let listed = store
            .listed(&principal.user_id, &scope, keys.as_deref())
            .await
            .ok()?;
        let mut body = Vec::with_capacity(1024);
        body.extend_from_slice(b"{\"data\":{");
        write_json(&mut body, self.response_key.as_str());
        body.extend_from_slice(b":[");
        for (index, setting) in listed.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            self.write_setting(&mut body, setting);
        }
        body.extend_from_slice(b"]}}");
        Some(body)
    }

    fn write_setting(&self, body: &mut Vec<u8>, setting: &Setting) {
        body.push(b'{');
        for (index, (response_key, field)) in self.fields.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            write_json(body, response_key.as_str());
            body.push(b':');
            match field {
                Field::Id => write_json(
                    body,
                    global_id("Setting", &[&setting.user_id, &setting.scope, &setting.key])
                        .as_str(),
                ),
                Field::Key => write_json(body, &setting.key),
                Field::Scope => write_json(body, &setting.scope),
                Field::Value => write_json(body, &setting.value),
                Field::Version => {
                    let _ = write!(body, "{}", setting.version);
                }
                Field::CreatedAt => write_time(body, setting.created_at),
                Field::UpdatedAt => write_time(body, setting.updated_at),
                Field::ExpiresAt => match setting.expires_at {
                    Some(at) => write_time(body, at),
                    None => body.extend_from_slice(b"null"),
                },
                Field::Typename => write_json(body, "Setting"),
            }
        }
        body.push(b'}');
    }
}

/// Whether a literal argument has the argument's type: `scope` a string, `keys` null or a list
/// of strings.
fn literal_fits(argument: &str, literal: &ConstValue) -> bool {
    match (argument, literal) {
        ("scope", ConstValue::String(_)) => true,
        ("keys", ConstValue::Null) => true,
        ("keys", ConstValue::List(items)) => items
            .iter()
            .all(|item| matches!(item, ConstValue::String(_))),
        _ => false,
    }
}

/// An argument's value for one request: `Some(None)` when it is absent (an unprovided
/// nullable variable counts as absent, as `omit_unprovided_variables` makes it for the
/// executor); `None` when a non-null variable was not provided, which is an error.
fn resolve(argument: &Argument, variables: &Variables) -> Option<Option<ConstValue>> {
    match argument {
        Argument::Absent => Some(None),
        Argument::Literal(value) => Some(Some(value.clone())),
        Argument::Variable { name, nullable } => match variables.get(name) {
            Some(value) => Some(Some(value.clone())),
            None => nullable.then_some(None),
        },
    }
}

fn write_json(body: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    // Writing into a Vec cannot fail, and these values always serialize.
    let _ = serde_json::to_writer(&mut *body, value);
}

/// A date-time as the `DateTime` scalar writes it.
fn write_time(body: &mut Vec<u8>, at: chrono::DateTime<chrono::Utc>) {
    if let ConstValue::String(text) = DateTime(at).to_value() {
        write_json(body, &text);
    }
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
        HotQuery::recognize(&parse_query(query).unwrap(), limits).is_some()
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
        ] {
            assert!(recognized(query), "{query}");
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
