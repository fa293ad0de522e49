//! Entity tags of sets of settings, and the precondition that names one.

use sha2::{Digest, Sha256};

use super::Key;
use crate::error::Error;

/// A set of settings, named by the tag [`document_tag`] gave it when the client read it.
#[derive(Clone, Debug)]
pub struct DocumentCheck {
    /// The keys the tag covers; `None` is every key of the scope.
    pub keys: Option<Vec<Key>>,
    pub tag: String,
}

impl DocumentCheck {
    pub(super) fn covers(&self, key: &str) -> bool {
        self.keys
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
    }
}

/// A tag of a set of settings that changes whenever one of them is written, created or removed:
/// a digest of the keys and versions, in hex. REST routes serve it as the `ETag` of a document.
pub fn document_tag<'a>(settings: impl IntoIterator<Item = (&'a str, i32)>) -> String {
    let mut entries: Vec<(&str, i32)> = settings.into_iter().collect();
    entries.sort_unstable();
    let mut digest = Sha256::new();
    for (key, version) in entries {
        digest.update(key.as_bytes());
        digest.update([0]);
        digest.update(version.to_be_bytes());
    }
    short_hex(digest)
}

/// A write's `If-Match` names a tag the settings no longer have.
pub fn stale_document() -> Error {
    Error::PreconditionFailed {
        message: "the settings changed since they were read: the ETag no longer matches; read \
                  them again"
            .into(),
        current_version: None,
    }
}

/// The first 12 bytes of a digest, in hex: enough to tell documents apart.
pub fn short_hex(digest: Sha256) -> String {
    digest.finalize()[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
