//! Committed changes, delivered to this process's subscribers: a channel per user with
//! subscribers, fed by this instance's own commits and, on PostgreSQL, by the other instances'
//! commits (`listen.rs`). Each subscription follows its user's feed by position
//! ([`Store::follow`]): a duplicate is dropped, and a gap (a change this instance has not
//! seen, or a subscriber that fell behind) is read from the history table, so no change is
//! skipped and none comes twice.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use futures_util::{Stream, stream};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{ChangeKind, Cursor, Setting, Store};
use crate::error::Result;

/// How many changes of one user a slow subscriber may fall behind before it reads them back
/// from the table.
pub const BACKLOG: usize = 256;

/// Changes read from the table at a time, to replay or to fill a gap.
const REPLAY_PAGE: u64 = 500;

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

/// The channels of the users who have subscribers in this process.
#[derive(Default)]
pub struct Hub {
    users: Mutex<HashMap<String, UserChannel>>,
}

struct UserChannel {
    sender: broadcast::Sender<Arc<ChangeEvent>>,
    /// The newest position sent on the channel.
    delivered: i64,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserChannel>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of the user's changes from now on; `at` is where the feed stood when the
    /// caller last looked, for a channel opened now.
    fn subscribe(&self, user_id: &str, at: i64) -> broadcast::Receiver<Arc<ChangeEvent>> {
        let mut users = self.lock();
        let channel = users
            .entry(user_id.to_owned())
            .or_insert_with(|| UserChannel {
                sender: broadcast::channel(BACKLOG).0,
                delivered: at,
            });
        channel.sender.subscribe()
    }

    /// Sends a committed change to the user's subscribers, unless one at or after its position
    /// was sent already (they read anything in between from the table).
    pub fn publish(&self, event: Arc<ChangeEvent>) {
        let mut users = self.lock();
        let Some(channel) = users.get_mut(&event.user_id) else {
            return;
        };
        if channel.sender.receiver_count() == 0 {
            users.remove(&event.user_id);
            return;
        }
        if event.position <= channel.delivered {
            return;
        }
        channel.delivered = event.position;
        let _ = channel.sender.send(event);
    }

    /// Whether the user has subscribers here and the feed reached `position` past what they
    /// were sent: then the position to read from.
    pub fn behind(&self, user_id: &str, position: i64) -> Option<i64> {
        let mut users = self.lock();
        let channel = users.get(user_id)?;
        if channel.sender.receiver_count() == 0 {
            users.remove(user_id);
            return None;
        }
        (position > channel.delivered).then_some(channel.delivered)
    }

    /// Every user with subscribers here, and what they were sent.
    pub fn followed(&self) -> Vec<(String, i64)> {
        let mut users = self.lock();
        users.retain(|_, channel| channel.sender.receiver_count() > 0);
        users
            .iter()
            .map(|(user, channel)| (user.clone(), channel.delivered))
            .collect()
    }

    /// Subscribers in this process.
    pub fn subscribers(&self) -> usize {
        self.lock()
            .values()
            .map(|channel| channel.sender.receiver_count())
            .sum()
    }
}

impl Store {
    /// Subscribers following a feed in this process.
    pub fn subscribers(&self) -> usize {
        self.hub.subscribers()
    }

    /// The user's changes in feed order: first those committed after `since` (read from the
    /// table), then live ones as they commit, with no gap and no duplicate at the seam. Without
    /// `since`, from the moment of the call. The stream ends with an error when `since` has
    /// expired or the database fails while filling a gap.
    pub async fn follow(
        self: &Arc<Self>,
        user_id: &str,
        since: Option<Cursor>,
    ) -> Result<impl Stream<Item = Result<Arc<ChangeEvent>>> + Send + use<>> {
        let end = self.feed_end(user_id).await?;
        // Subscribed before anything is read, so that nothing commits unseen in between.
        let receiver = self.hub.subscribe(user_id, end);
        let last = match since {
            Some(cursor) => {
                // Refuses an expired or foreign cursor now, before the stream starts.
                self.changes_since(user_id, cursor, None, 1).await?;
                cursor.0
            }
            None => end,
        };
        let state = Follow {
            store: self.clone(),
            user_id: user_id.to_owned(),
            receiver,
            last,
            pending: VecDeque::new(),
            // Replay up to the feed's end first when a cursor was given.
            behind: since.is_some(),
        };
        Ok(stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.next().await {
                Ok(Some(event)) => Some((Ok(event), Some(state))),
                Ok(None) => None,
                Err(err) => Some((Err(err), None)),
            }
        }))
    }
}

struct Follow {
    store: Arc<Store>,
    user_id: String,
    receiver: broadcast::Receiver<Arc<ChangeEvent>>,
    /// The position delivered last.
    last: i64,
    /// Changes read from the table, not delivered yet.
    pending: VecDeque<ChangeEvent>,
    /// Whether the table may hold changes past `last` that the channel will not bring.
    behind: bool,
}

impl Follow {
    async fn next(&mut self) -> Result<Option<Arc<ChangeEvent>>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.position > self.last {
                    self.last = event.position;
                    return Ok(Some(Arc::new(event)));
                }
                continue;
            }
            if self.behind {
                let page = self
                    .store
                    .changes_since(&self.user_id, Cursor(self.last), None, REPLAY_PAGE)
                    .await?;
                self.behind = page.has_more;
                self.pending.extend(page.changes);
                continue;
            }
            match self.receiver.recv().await {
                Ok(event) if event.position <= self.last => {}
                Ok(event) if event.position == self.last + 1 => {
                    self.last = event.position;
                    return Ok(Some(event));
                }
                // A change this channel did not bring, or more than it could hold: read them.
                Ok(_) | Err(RecvError::Lagged(_)) => self.behind = true,
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }
}
