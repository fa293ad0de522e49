//! Parsed GraphQL documents, kept by query text.
//!
//! Clients send a handful of distinct query texts over and over; parsing one costs more than a
//! fifth of a small read. Validation still runs on every request, against its own variables.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_graphql::{BatchRequest, Request, parser::types::ExecutableDocument};

/// Beyond this many distinct query texts the cache starts over; a miss costs one parse.
const CAPACITY: usize = 512;
/// Longer texts are parsed every time: they are rare, and keeping them would cost memory.
const MAX_CACHED_QUERY_BYTES: usize = 16 * 1024;

#[derive(Default)]
pub struct Documents {
    parsed: Mutex<HashMap<Arc<str>, ExecutableDocument>>,
}

impl Documents {
    /// Hands every request of the batch its parsed document, from the cache or parsed now.
    /// A query that does not parse is left to the executor, which reports the syntax error.
    pub fn prepare(&self, batch: &mut BatchRequest) {
        for request in batch.iter_mut() {
            self.prepare_one(request);
        }
    }

    fn prepare_one(&self, request: &mut Request) {
        if request.query.len() > MAX_CACHED_QUERY_BYTES {
            return;
        }
        if let Some(document) = self.lock().get(request.query.as_str()) {
            request.set_parsed_query(document.clone());
            return;
        }
        let Ok(document) = request.parsed_query() else {
            return;
        };
        let document = document.clone();
        let mut parsed = self.lock();
        if parsed.len() >= CAPACITY {
            parsed.clear();
        }
        parsed.insert(request.query.as_str().into(), document);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, ExecutableDocument>> {
        // A panic while holding the lock cannot leave the map inconsistent: use it anyway.
        self.parsed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str) -> BatchRequest {
        BatchRequest::Single(Request::new(query))
    }

    fn parsed(batch: &mut BatchRequest) -> Option<ExecutableDocument> {
        match batch {
            BatchRequest::Single(request) => request.parsed_query().ok().cloned(),
            BatchRequest::Batch(_) => None,
        }
    }

    #[test]
    fn a_query_is_parsed_once_and_then_taken_from_the_cache() {
        let documents = Documents::default();
        let mut first = request("{ settings { key } }");
        documents.prepare(&mut first);
        documents.prepare(&mut request("{ settings { key } }"));
        assert_eq!(documents.lock().len(), 1);

        // A document planted under a text proves the text is not parsed again.
        let planted = parsed(&mut request("{ me { id } }")).expect("parses");
        documents
            .lock()
            .insert("{ settings { key } }".into(), planted.clone());
        let mut again = request("{ settings { key } }");
        documents.prepare(&mut again);
        assert_eq!(
            format!("{:?}", parsed(&mut again)),
            format!("{:?}", Some(planted))
        );
    }

    #[test]
    fn a_syntax_error_is_not_cached() {
        let documents = Documents::default();
        documents.prepare(&mut request("{ settings { key "));
        assert!(documents.lock().is_empty());
    }

    #[test]
    fn the_cache_starts_over_when_full() {
        let documents = Documents::default();
        for n in 0..=CAPACITY {
            documents.prepare(&mut request(&format!(
                "{{ setting(key: \"k{n}\") {{ key }} }}"
            )));
        }
        assert_eq!(documents.lock().len(), 1);
    }
}
