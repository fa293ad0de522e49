//! The settings domain: validated inputs, RFC 7386 merge patch, the write planner, and the
//! store (all SQL is here).

mod batch;
mod cache;
mod checked_update;
mod erase;
mod events;
mod expiry;
mod export;
mod feed;
mod grouped_write;
mod health;
mod history;
mod import;
mod listen;
mod merge;
mod model;
mod names;
mod plan;
mod quota;
mod read;
mod replace_one;
mod restore;
mod store;
mod tags;
mod value;
mod write;

pub use erase::ERASED_ACTOR;
pub use events::ChangeEvent;
pub use expiry::EXPIRY_ACTOR;
pub use export::{EXPORT_FORMAT, EXPORT_VERSION};
pub use feed::{
    Cursor, FeedPage, MAX_PAGE as MAX_FEED_PAGE, Snapshot, decode_opaque, encode_opaque,
};
pub use health::Readiness;
pub use history::{HistoryEntry, Retention};
pub use import::{ImportIssue, ImportMode, ImportReport};
pub use merge::merge_patch;
pub use model::{ChangeKind, Expect, Origin, Setting, User};
pub use names::{Key, Scope};
pub use quota::Quotas;
pub use read::Listed;
pub use read::{Effective, OrgDefault, Source};
pub use store::{Store, connect as store_connect, connect_readers};
pub use tags::{DocumentCheck, document_tag, short_hex, stale_document};
pub use value::ValueLimits;
pub use write::Preconditions;
