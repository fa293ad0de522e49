//! Committed changes, published to the subscribers of this process as they commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use super::{ChangeKind, Setting};

/// How many changes a slow subscriber may fall behind before it is told it missed some.
pub const BACKLOG: usize = 4096;

/// One committed change of one setting.
#[derive(Clone, Debug)]
pub struct ChangeEvent {
    /// Its place in the user's feed.
    pub position: i64,
    pub user_id: String,
    pub scope: String,
    pub key: String,
    pub kind: ChangeKind,
    /// The version written, or for a removal the version removed.
    pub version: i32,
    /// The setting after the change; `None` when it was removed.
    pub setting: Option<Setting>,
    pub actor: String,
    pub interface: String,
    pub changed_at: DateTime<Utc>,
}

pub type Changes = broadcast::Sender<Arc<ChangeEvent>>;

pub fn channel() -> Changes {
    broadcast::channel(BACKLOG).0
}
