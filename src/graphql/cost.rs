//! What a document may cost, judged before async-graphql validates or runs it: its tokens
//! (counted on the text, before parsing), and its selections and directives once fragments
//! are expanded. Expansion is counted, never carried out: each fragment's cost is computed
//! once, so a document of fragments that each spread the next twice costs a linear walk to
//! judge, while it would cost an exponential one to validate. Fragment cycles are refused
//! here for the same reason.

use std::collections::{HashMap, HashSet};

use async_graphql::{
    Name,
    parser::{
        Positioned,
        types::{ExecutableDocument, Selection, SelectionSet},
    },
};

use crate::error::Error;

/// The budget of one document.
#[derive(Clone, Copy, Debug)]
pub struct DocumentLimits {
    /// Lexical tokens of the text (names, punctuators, values).
    pub max_tokens: usize,
    /// Fields selected, over every operation and fragment, with each fragment counted as
    /// often as it is spread.
    pub max_selections: u64,
    /// Directives, counted the same way.
    pub max_directives: u64,
}

impl DocumentLimits {
    /// Refuses a text of more than `max_tokens` tokens, without parsing it.
    pub fn check_text(&self, text: &str) -> Result<(), Error> {
        if count_tokens(text, self.max_tokens).is_none() {
            return Err(Error::bad_input(
                "query",
                "maxTokens",
                format!(
                    "the document has more than {} tokens; send a smaller one",
                    self.max_tokens
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a parsed document whose expanded selections or directives exceed the budget,
    /// or whose fragments spread themselves.
    pub fn check_document(&self, document: &ExecutableDocument) -> Result<(), Error> {
        let cost = cost(document)?;
        if cost.selections > self.max_selections {
            return Err(Error::bad_input(
                "query",
                "maxSelections",
                format!(
                    "the document selects {} fields once its fragments are expanded; at most {} are allowed",
                    cost.selections, self.max_selections
                ),
            ));
        }
        if cost.directives > self.max_directives {
            return Err(Error::bad_input(
                "query",
                "maxDirectives",
                format!(
                    "the document applies {} directives once its fragments are expanded; at most {} are allowed",
                    cost.directives, self.max_directives
                ),
            ));
        }
        Ok(())
    }
}

/// The number of tokens of a GraphQL text, or `None` past `max`. Commas, white space and
/// comments are not tokens; a string (block strings included) is one.
fn count_tokens(text: &str, max: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut at, mut tokens) = (0, 0usize);
    while at < bytes.len() {
        let byte = bytes[at];
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                at += 1;
                continue;
            }
            b'#' => {
                while at < bytes.len() && bytes[at] != b'\n' && bytes[at] != b'\r' {
                    at += 1;
                }
                continue;
            }
            b'"' if bytes[at..].starts_with(b"\"\"\"") => {
                at += 3;
                while at < bytes.len() && !bytes[at..].starts_with(b"\"\"\"") {
                    at += if bytes[at..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                at += 3;
            }
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' && bytes[at] != b'\n' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                at += 1;
            }
            b'.' if bytes[at..].starts_with(b"...") => at += 3,
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                at += 1;
                while at < bytes.len()
                    && matches!(bytes[at], b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9')
                {
                    at += 1;
                }
            }
            b'0'..=b'9' | b'-' => {
                at += 1;
                while at < bytes.len()
                    && matches!(bytes[at], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    at += 1;
                }
            }
            // A punctuator, a byte order mark or anything the parser will refuse: one each.
            _ => at += 1,
        }
        tokens += 1;
        if tokens > max {
            return None;
        }
    }
    Some(tokens)
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Cost {
    selections: u64,
    directives: u64,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.selections = self.selections.saturating_add(other.selections);
        self.directives = self.directives.saturating_add(other.directives);
    }
}

/// The cost of every operation, plus every fragment no operation spreads (validation still
/// walks those).
fn cost(document: &ExecutableDocument) -> Result<Cost, Error> {
    let mut walk = Walk {
        document,
        known: HashMap::new(),
        open: HashSet::new(),
    };
    let mut total = Cost::default();
    for (_, operation) in document.operations.iter() {
        let operation = &operation.node;
        let mut cost = walk.set(&operation.selection_set)?;
        cost.directives = cost.directives.saturating_add(
            operation.directives.len() as u64
                + operation
                    .variable_definitions
                    .iter()
                    .map(|definition| definition.node.directives.len() as u64)
                    .sum::<u64>(),
        );
        total.add(cost);
    }
    // Fragments that neither an operation nor another fragment spreads, then whatever is
    // left: only fragments in a cycle, which the walk refuses.
    let mut spread_by_fragments = HashSet::new();
    for fragment in document.fragments.values() {
        direct_spreads(&fragment.node.selection_set.node, &mut spread_by_fragments);
    }
    for name in document.fragments.keys() {
        if !walk.known.contains_key(name) && !spread_by_fragments.contains(name) {
            total.add(walk.fragment(name)?);
        }
    }
    for name in document.fragments.keys() {
        if !walk.known.contains_key(name) {
            total.add(walk.fragment(name)?);
        }
    }
    Ok(total)
}

/// The fragments `set` spreads itself, not those its fragments spread.
fn direct_spreads<'a>(set: &'a SelectionSet, into: &mut HashSet<&'a Name>) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => direct_spreads(&field.node.selection_set.node, into),
            Selection::FragmentSpread(spread) => {
                into.insert(&spread.node.fragment_name.node);
            }
            Selection::InlineFragment(inline) => {
                direct_spreads(&inline.node.selection_set.node, into)
            }
        }
    }
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    /// The expanded cost of each fragment walked so far.
    known: HashMap<Name, Cost>,
    /// The fragments being walked, to find cycles.
    open: HashSet<Name>,
}

impl Walk<'_> {
    fn set(&mut self, set: &Positioned<SelectionSet>) -> Result<Cost, Error> {
        let mut cost = Cost::default();
        for item in &set.node.items {
            cost.directives = cost
                .directives
                .saturating_add(item.node.directives().len() as u64);
            match &item.node {
                Selection::Field(field) => {
                    cost.selections = cost.selections.saturating_add(1);
                    cost.add(self.set(&field.node.selection_set)?);
                }
                Selection::FragmentSpread(spread) => {
                    cost.add(self.fragment(&spread.node.fragment_name.node)?);
                }
                Selection::InlineFragment(inline) => {
                    cost.add(self.set(&inline.node.selection_set)?);
                }
            }
        }
        Ok(cost)
    }

    fn fragment(&mut self, name: &Name) -> Result<Cost, Error> {
        if let Some(cost) = self.known.get(name) {
            return Ok(*cost);
        }
        // An unknown fragment costs nothing here; validation reports it.
        let Some(fragment) = self.document.fragments.get(name) else {
            return Ok(Cost::default());
        };
        if !self.open.insert(name.clone()) {
            return Err(Error::bad_input(
                "query",
                "fragmentCycle",
                format!("fragment `{name}` spreads itself, directly or through other fragments"),
            ));
        }
        let mut cost = self.set(&fragment.node.selection_set)?;
        cost.directives = cost
            .directives
            .saturating_add(fragment.node.directives.len() as u64);
        self.open.remove(name);
        self.known.insert(name.clone(), cost);
        Ok(cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DocumentLimits = DocumentLimits {
        max_tokens: 1000,
        max_selections: 100,
        max_directives: 10,
    };

    fn judged(query: &str) -> Result<(), String> {
        let document = async_graphql::parser::parse_query(query).map_err(|e| e.to_string())?;
        LIMITS.check_document(&document).map_err(|err| match err {
            Error::BadInput(violation) => violation.rule.into_owned(),
            other => other.to_string(),
        })
    }

    /// Fragments F0..Fn where each spreads the next twice: 2^n fields once expanded.
    fn doubling(depth: usize) -> String {
        let mut query = String::from("{ ...F0 }\n");
        for level in 0..depth {
            let next = level + 1;
            query += &format!("fragment F{level} on Query {{ ...F{next} ...F{next} }}\n");
        }
        query += &format!("fragment F{depth} on Query {{ __typename }}\n");
        query
    }

    #[test]
    fn tokens_are_names_punctuators_and_values_not_commas_or_comments() {
        assert_eq!(count_tokens("{ a, b }", 100), Some(4));
        assert_eq!(count_tokens("# a comment\n{ a }", 100), Some(3));
        // { a ( s : "…" ) }
        assert_eq!(count_tokens(r#"{ a(s: "x, y \" z") }"#, 100), Some(8));
        assert_eq!(
            count_tokens("{ a(s: \"\"\"block \\\"\"\" \"\"\") }", 100),
            Some(8)
        );
        // { ... F a ( n : -1.5e3 ) }
        assert_eq!(count_tokens("{ ...F a(n: -1.5e3) }", 100), Some(10));
        assert_eq!(count_tokens("{ a }", 2), None);
    }

    #[test]
    fn a_long_run_of_directives_is_refused_before_parsing() {
        let query = format!("{{ __typename {} }}", "@a ".repeat(300_000));
        let err = LIMITS.check_text(&query).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the document has more than 1000 tokens; send a smaller one"
        );
    }

    #[test]
    fn expanded_fragments_are_counted_without_being_expanded() {
        // 2^6 = 64 fields: within 100. 2^7 = 128: over it.
        assert_eq!(judged(&doubling(6)), Ok(()));
        assert_eq!(judged(&doubling(7)), Err("maxSelections".into()));
        // 2^60 fields would take longer than the universe to expand; judging it is instant.
        assert_eq!(judged(&doubling(60)), Err("maxSelections".into()));
    }

    #[test]
    fn directives_count_where_their_fragment_is_spread() {
        let query = "{ ...F ...F ...F } fragment F on Query { __typename @skip(if: false) @include(if: true) }";
        assert_eq!(judged(query), Ok(()));
        let query = "{ ...F ...F ...F ...F ...F ...F } fragment F on Query { __typename @skip(if: false) @include(if: true) }";
        assert_eq!(judged(query), Err("maxDirectives".into()));
    }

    #[test]
    fn a_fragment_that_spreads_itself_is_refused() {
        assert_eq!(
            judged("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"),
            Err("fragmentCycle".into())
        );
        // Also when no operation spreads it.
        assert_eq!(
            judged("{ __typename } fragment A on Query { ...A ...A }"),
            Err("fragmentCycle".into())
        );
    }

    #[test]
    fn unused_fragments_count_too_and_once() {
        let unused = doubling(8).replacen("{ ...F0 }", "{ __typename }", 1);
        assert_eq!(judged(&unused), Err("maxSelections".into()));
        // 1 + 2^6 fields: F1..F6 are counted inside F0 only.
        let unused = doubling(6).replacen("{ ...F0 }", "{ __typename }", 1);
        let document = async_graphql::parser::parse_query(&unused).unwrap();
        assert_eq!(cost(&document).unwrap().selections, 65);
    }
}
