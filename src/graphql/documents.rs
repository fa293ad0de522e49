//! The admission of GraphQL documents: judged against the cost limits, then parsed documents
//! kept by query text.
//!
//! Clients send a handful of distinct query texts over and over; parsing one costs more than a
//! fifth of a small read. Validation still runs on every request, against its own variables.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use std::collections::HashSet;

use async_graphql::{
    Name, Request,
    parser::{
        Positioned,
        types::{
            Directive, DocumentOperations, ExecutableDocument, OperationDefinition, Selection,
            SelectionSet,
        },
    },
};
use async_graphql_value::Value;

use super::{
    cost::DocumentLimits,
    hot::{ExecutorLimits, HotOperation},
};
use crate::error::Error;

/// Beyond this many distinct query texts the cache starts over; a miss costs one parse.
const CAPACITY: usize = 512;
/// Longer texts are parsed every time: they are rare, and keeping them would cost memory.
const MAX_CACHED_QUERY_BYTES: usize = 16 * 1024;

pub struct Documents {
    limits: DocumentLimits,
    executor: ExecutorLimits,
    parsed: Mutex<HashMap<Arc<str>, Admitted>>,
}

/// A document admitted before, and whether it is a [`HotOperation`].
struct Admitted {
    document: ExecutableDocument,
    hot: Option<Arc<HotOperation>>,
}

impl Documents {
    pub fn new(limits: DocumentLimits, executor: ExecutorLimits) -> Self {
        Documents {
            limits,
            executor,
            parsed: Mutex::default(),
        }
    }

    /// The hot operation that `query`'s text is, when it was admitted before and is one.
    pub fn hot(&self, query: &str) -> Option<Arc<HotOperation>> {
        self.lock().get(query)?.hot.clone()
    }

    /// Judges the request's document against the limits ([`DocumentLimits`]) and hands the
    /// request its parsed document, from the cache or parsed now. A text that does not parse
    /// is left to the executor, which reports the syntax error. Returns the [`HotOperation`]
    /// the text is, when it is one (and short enough to be kept).
    pub fn admit(&self, request: &mut Request) -> Result<Option<Arc<HotOperation>>, Error> {
        // An empty text is a persisted query, resolved to a document admitted when it was
        // registered.
        if request.query.is_empty() {
            return Ok(None);
        }
        let cacheable = request.query.len() <= MAX_CACHED_QUERY_BYTES;
        if cacheable && let Some(admitted) = self.lock().get(request.query.as_str()) {
            request.set_parsed_query(admitted.document.clone());
            return Ok(admitted.hot.clone());
        }
        self.limits.check_text(&request.query)?;
        let Ok(document) = request.parsed_query() else {
            return Ok(None);
        };
        self.limits.check_document(document)?;
        if !cacheable {
            return Ok(None);
        }
        let hot = HotOperation::recognize(document, self.executor).map(Arc::new);
        let admitted = Admitted {
            document: document.clone(),
            hot: hot.clone(),
        };
        let mut parsed = self.lock();
        if parsed.len() >= CAPACITY {
            parsed.clear();
        }
        parsed.insert(request.query.as_str().into(), admitted);
        Ok(hot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Admitted>> {
        // A panic while holding the lock cannot leave the map inconsistent: use it anyway.
        self.parsed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where a nullable variable without a default is not provided, the arguments it fills are
/// treated as absent, so their defaults apply: the spec's CoerceArgumentValues, as graphql-js
/// (and so every JS server) does it. async-graphql would pass `null` instead, which a
/// non-null argument with a default refuses. Clients that pass optional variables through
/// rely on this.
pub(super) fn omit_unprovided_variables(request: &mut Request) {
    let provided: HashSet<Name> = request.variables.keys().cloned().collect();
    let Ok(document) = request.parsed_query() else {
        return;
    };
    let missing: HashSet<Name> = document
        .operations
        .iter()
        .flat_map(|(_, operation)| operation.node.variable_definitions.iter())
        .map(|definition| &definition.node)
        .filter(|definition| {
            definition.default_value.is_none()
                && definition.var_type.node.nullable
                && !provided.contains(&definition.name.node)
        })
        .map(|definition| definition.name.node.clone())
        .collect();
    if missing.is_empty() {
        return;
    }
    // Only where every use of those variables is a whole field argument: dropping the
    // arguments and the variables' definitions then keeps the document valid.
    let (mut direct, mut all) = (0, 0);
    let mut count = |set: &SelectionSet, directives: &[Positioned<Directive>]| {
        let (d, a) = uses(set, &missing);
        direct += d;
        all += a + in_directives(directives, &missing);
    };
    for (_, operation) in document.operations.iter() {
        count(
            &operation.node.selection_set.node,
            &operation.node.directives,
        );
    }
    for fragment in document.fragments.values() {
        count(&fragment.node.selection_set.node, &fragment.node.directives);
    }
    if direct == 0 || direct != all {
        return;
    }
    let mut document = document.clone();
    let operations: Vec<&mut Positioned<OperationDefinition>> = match &mut document.operations {
        DocumentOperations::Single(operation) => vec![operation],
        DocumentOperations::Multiple(operations) => operations.values_mut().collect(),
    };
    for operation in operations {
        strip(&mut operation.node.selection_set.node, &missing);
        operation
            .node
            .variable_definitions
            .retain(|definition| !missing.contains(&definition.node.name.node));
    }
    for fragment in document.fragments.values_mut() {
        strip(&mut fragment.node.selection_set.node, &missing);
    }
    request.set_parsed_query(document);
}

fn is_missing(value: &Value, missing: &HashSet<Name>) -> bool {
    matches!(value, Value::Variable(name) if missing.contains(name))
}

/// The uses of `missing` variables in `set`: as whole field arguments, and in all.
fn uses(set: &SelectionSet, missing: &HashSet<Name>) -> (usize, usize) {
    let (mut direct, mut all) = (0, 0);
    for selection in &set.items {
        let (inner, directives) = match &selection.node {
            Selection::Field(field) => {
                for (_, value) in &field.node.arguments {
                    if is_missing(&value.node, missing) {
                        direct += 1;
                    }
                    all += in_value(&value.node, missing);
                }
                (Some(&field.node.selection_set.node), &field.node.directives)
            }
            Selection::InlineFragment(fragment) => (
                Some(&fragment.node.selection_set.node),
                &fragment.node.directives,
            ),
            Selection::FragmentSpread(spread) => (None, &spread.node.directives),
        };
        all += in_directives(directives, missing);
        if let Some(inner) = inner {
            let (d, a) = uses(inner, missing);
            direct += d;
            all += a;
        }
    }
    (direct, all)
}

fn in_directives(directives: &[Positioned<Directive>], missing: &HashSet<Name>) -> usize {
    directives
        .iter()
        .flat_map(|directive| &directive.node.arguments)
        .map(|(_, value)| in_value(&value.node, missing))
        .sum()
}

fn in_value(value: &Value, missing: &HashSet<Name>) -> usize {
    match value {
        Value::Variable(name) => usize::from(missing.contains(name)),
        Value::List(items) => items.iter().map(|item| in_value(item, missing)).sum(),
        Value::Object(members) => members.values().map(|m| in_value(m, missing)).sum(),
        _ => 0,
    }
}

/// Removes the field arguments that are a missing variable.
fn strip(set: &mut SelectionSet, missing: &HashSet<Name>) {
    for selection in &mut set.items {
        match &mut selection.node {
            Selection::Field(field) => {
                field
                    .node
                    .arguments
                    .retain(|(_, value)| !is_missing(&value.node, missing));
                strip(&mut field.node.selection_set.node, missing);
            }
            Selection::InlineFragment(fragment) => {
                strip(&mut fragment.node.selection_set.node, missing);
            }
            Selection::FragmentSpread(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents() -> Documents {
        Documents::new(
            DocumentLimits {
                max_tokens: 100,
                max_selections: 10,
                max_directives: 2,
            },
            ExecutorLimits {
                max_depth: 16,
                max_complexity: 500,
            },
        )
    }

    fn request(query: &str) -> Request {
        Request::new(query)
    }

    fn parsed(request: &mut Request) -> Option<ExecutableDocument> {
        request.parsed_query().ok().cloned()
    }

    #[test]
    fn a_query_is_parsed_once_and_then_taken_from_the_cache() {
        let documents = documents();
        let mut first = request("{ settings { key } }");
        documents.admit(&mut first).unwrap();
        documents
            .admit(&mut request("{ settings { key } }"))
            .unwrap();
        assert_eq!(documents.lock().len(), 1);

        // A document planted under a text proves the text is not parsed again.
        let planted = parsed(&mut request("{ me { id } }")).expect("parses");
        let admitted = Admitted {
            document: planted.clone(),
            hot: None,
        };
        documents
            .lock()
            .insert("{ settings { key } }".into(), admitted);
        let mut again = request("{ settings { key } }");
        documents.admit(&mut again).unwrap();
        assert_eq!(
            format!("{:?}", parsed(&mut again)),
            format!("{:?}", Some(planted))
        );
    }

    #[test]
    fn an_admitted_settings_read_is_known_as_a_hot_query() {
        let documents = documents();
        for (query, hot) in [("{ settings { key } }", true), ("{ me { id } }", false)] {
            for time in ["first", "second"] {
                let admitted = documents.admit(&mut request(query)).unwrap();
                assert_eq!(admitted.is_some(), hot, "{query}, admitted a {time} time");
            }
        }
        assert!(documents.hot("{ settings { key } }").is_some());
        assert!(documents.hot("{ me { id } }").is_none());
        assert!(
            documents.hot("{ settings { value } }").is_none(),
            "never admitted"
        );
    }

    #[test]
    fn a_syntax_error_is_not_cached() {
        let documents = documents();
        documents.admit(&mut request("{ settings { key ")).unwrap();
        assert!(documents.lock().is_empty());
    }

    #[test]
    fn the_cache_starts_over_when_full() {
        let documents = documents();
        for n in 0..=CAPACITY {
            documents
                .admit(&mut request(&format!(
                    "{{ setting(key: \"k{n}\") {{ key }} }}"
                )))
                .unwrap();
        }
        assert_eq!(documents.lock().len(), 1);
    }

    #[test]
    fn a_document_over_the_limits_is_refused_and_not_cached() {
        let documents = documents();
        let rule = |query: &str| match documents.admit(&mut request(query)) {
            Err(Error::BadInput(violation)) => violation.rule.into_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(rule(&format!("{{ {} }}", "a ".repeat(100))), "maxTokens");
        assert_eq!(rule("{ a b c d e f g h i j k }"), "maxSelections");
        assert_eq!(rule("{ a @x b @y c @z }"), "maxDirectives");
        assert!(documents.lock().is_empty());
    }
}
