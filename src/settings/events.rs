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
    /// The newest position sent on the channel; `None` until its first subscriber has read
    /// where the feed stands.
    delivered: Option<i64>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UserChannel>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of the user's changes from now on.
    fn subscribe(&self, user_id: &str) -> broadcast::Receiver<Arc<ChangeEvent>> {
        let mut users = self.lock();
        // Users whose subscribers all left go now and then, so the map stays to those followed.
        if users.len() >= 1024 && users.len().is_power_of_two() {
            users.retain(|_, channel| channel.sender.receiver_count() > 0);
        }
        let channel = users
            .entry(user_id.to_owned())
            .or_insert_with(|| UserChannel {
                sender: broadcast::channel(BACKLOG).0,
                delivered: None,
            });
        channel.sender.subscribe()
    }

    /// The feed stood at `position` when a subscriber looked, after subscribing.
    fn advance(&self, user_id: &str, position: i64) {
        if let Some(channel) = self.lock().get_mut(user_id) {
            channel.delivered = Some(channel.delivered.map_or(position, |d| d.max(position)));
        }
    }

    /// Sends a committed change to the user's subscribers, unless one at or after its position
    /// was sent already (they read anything in between from the table).
    pub fn publish(&self, event: Arc<ChangeEvent>) {
        let named = Arc::clone(&event);
        self.publish_with(&named.user_id, named.position, || event);
    }

    /// Like [`Hub::publish`], but the change is made by `event` only if it is sent: most
    /// writes are of users without subscribers here.
    pub fn publish_with(
        &self,
        user_id: &str,
        position: i64,
        event: impl FnOnce() -> Arc<ChangeEvent>,
    ) {
        let mut users = self.lock();
        let Some(channel) = users.get_mut(user_id) else {
            return;
        };
        if channel.sender.receiver_count() == 0 {
            users.remove(user_id);
            return;
        }
        if channel
            .delivered
            .is_some_and(|delivered| position <= delivered)
        {
            return;
        }
        channel.delivered = Some(position);
        let _ = channel.sender.send(event());
    }

    /// Sends the user's last event (a tombstone) and closes their channel: subscribers get it
    /// after what they were sent, and then their streams end.
    pub fn close(&self, last: Arc<ChangeEvent>) {
        let mut users = self.lock();
        if let Some(channel) = users.remove(&last.user_id) {
            let _ = channel.sender.send(last);
        }
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
        {
            let delivered = channel.delivered?;
            (position > delivered).then_some(delivered)
        }
    }

    /// Every user with subscribers here, and what they were sent.
    pub fn followed(&self) -> Vec<(String, i64)> {
        let mut users = self.lock();
        users.retain(|_, channel| channel.sender.receiver_count() > 0);
        users
            .iter()
            .filter_map(|(user, channel)| Some((user.clone(), channel.delivered?)))
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
        // Subscribed before anything is read, so that nothing commits unseen in between.
        let receiver = self.hub.subscribe(user_id);
        // Refuses an expired or foreign cursor now, before the stream starts.
        let end = self.feed_end(user_id, since).await?;
        self.hub.advance(user_id, end);
        let last = since.map_or(end, |cursor| cursor.0);
        let state = Follow {
            store: self.clone(),
            user_id: user_id.to_owned(),
            receiver,
            last,
            pending: VecDeque::new(),
            // Read the table once first: up to the feed's end when a cursor was given, and in
            // any case whatever committed while the channel was being set up.
            behind: true,
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
        if self.last == super::erase::TOMBSTONE_POSITION {
            return Ok(None);
        }
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
                // The user was erased: nothing follows.
                Ok(event) if event.kind == ChangeKind::Erase => {
                    self.last = event.position;
                    return Ok(Some(event));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: i64) -> Arc<ChangeEvent> {
        Arc::new(ChangeEvent {
            position,
            user_id: "alice".into(),
            scope: String::new(),
            key: "k".into(),
            kind: ChangeKind::Update,
            version: 1,
            setting: None,
            actor: "alice".into(),
            interface: "graphql".into(),
            changed_at: Utc::now(),
        })
    }

    #[test]
    fn a_channel_sends_each_position_once_and_only_to_its_user() {
        let hub = Hub::default();
        let mut alice = hub.subscribe("alice");
        let mut bob = hub.subscribe("bob");
        // Before the subscriber has read where the feed stands, changes still go out.
        hub.publish(event(3));
        hub.advance("alice", 2);
        hub.publish(event(3));
        hub.publish(event(2));
        hub.publish(event(4));
        assert_eq!(alice.try_recv().unwrap().position, 3);
        assert_eq!(alice.try_recv().unwrap().position, 4);
        assert!(alice.try_recv().is_err());
        assert!(bob.try_recv().is_err());
        // The listener reads from what was sent, only for followed users.
        assert_eq!(hub.behind("alice", 6), Some(4));
        assert_eq!(hub.behind("alice", 4), None);
        assert_eq!(hub.behind("carol", 9), None);
        drop(alice);
        assert_eq!(
            hub.behind("alice", 6),
            None,
            "nobody follows alice any more"
        );
    }
}
