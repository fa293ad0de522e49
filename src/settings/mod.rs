//! The settings domain: validated inputs, RFC 7386 merge patch, and the store (all SQL is here).

mod events;
mod history;
mod merge;
mod names;
mod store;
mod value;
mod write;

pub use events::ChangeEvent;
pub use history::{HistoryEntry, Retention};
pub use merge::merge_patch;
pub use names::{Key, Scope};
pub use store::{Effective, Setting, Source, Store, User, connect as store_connect};
pub use value::ValueLimits;
pub use write::{
    ChangeKind, DocumentCheck, Expect, LOCALE_KEY, Origin, Outcome, Preconditions, document_tag,
    short_hex, stale_document,
};
