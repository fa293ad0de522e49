//! Changes committed by other instances, on PostgreSQL. The writing instance notifies the
//! channel `settings_feed` with the user, scope and feed position of each commit, as JSON
//! arrays of `[user, scope, position]` (a small payload; notices of many writes go together,
//! so that notifying costs little under load): the shared write statements (`replace_one.rs`,
//! `checked_update.rs`) call `pg_notify` themselves, so their notice commits with the write;
//! the transactions queue theirs, sent after the commit and never holding it up. Every other
//! instance drops those settings from its cache (the writer updated or dropped them itself,
//! and ignores its own notice when it comes back: `SettingsCache::heard`) and reads the
//! changes its subscribers have not seen from the table. When the listening connection or the
//! database drops, it reconnects, listens again, and then reads whatever committed meanwhile,
//! so nothing is lost; positions keep anything from coming twice. A queued notification is
//! lost only if its instance dies between a commit and sending it: subscribers then get the
//! change with the user's next one, and the cache forgets it within its time to live.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use sea_orm::sqlx::postgres::PgListener;

use super::{Cursor, Store};
use crate::error::Result;

const CHANNEL: &str = "settings_feed";

/// PostgreSQL's limit on a payload is 8000 bytes.
const MAX_PAYLOAD: usize = 7900;

/// Commits waiting to be notified; beyond this many (the database is away) they are dropped.
pub(super) const NOTIFY_BACKLOG: usize = 65_536;

pub(super) type Notice = (String, String, i64);

/// The least time from one notification statement's answer to the next statement: under
/// load, each carries the commits since the last, instead of a notifying commit for every few.
const NOTICE_INTERVAL: Duration = Duration::from_millis(1);

impl Store {
    /// Runs until dropped: listens, and delivers other instances' changes to this instance's
    /// subscribers.
    pub async fn deliver_other_instances_changes(self: Arc<Self>) {
        let pool = self.pool.get_postgres_connection_pool().clone();
        let mut retry = Duration::from_millis(100);
        loop {
            let listened = self.listen_once(&pool).await;
            // Other instances' writes may go unheard until listening again.
            if let Some(cache) = &self.cache {
                cache.set_coherent(false);
            }
            match listened {
                Ok(()) => retry = Duration::from_millis(100),
                Err(err) => {
                    tracing::warn!(error = %err, "the change listener lost the database; reconnecting");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One listening connection, until it drops.
    async fn listen_once(&self, pool: &sea_orm::sqlx::PgPool) -> Result<(), anyhow::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        // Listening now: whatever committed while this instance was not is in the table, and
        // may have changed what the cache holds.
        if let Some(cache) = &self.cache {
            cache.set_coherent(true);
        }
        for (user_id, delivered) in self.hub.followed() {
            self.deliver_from(&user_id, delivered).await?;
        }
        loop {
            let Some(notification) = listener.try_recv().await? else {
                return Ok(()); // The connection dropped: listen again, then catch up.
            };
            let Ok(notices) = serde_json::from_str::<Vec<Notice>>(notification.payload()) else {
                continue;
            };
            for (user_id, scope, position) in notices {
                if position == super::erase::TOMBSTONE_POSITION {
                    // This instance forgot the user when it erased them; by the time its own
                    // notice comes back, the user may have started over here.
                    if scope != self.instance_id {
                        self.forget_erased(&user_id);
                    }
                    continue;
                }
                if let Some(cache) = &self.cache {
                    cache.heard(&user_id, &scope, position);
                }
                if let Some(delivered) = self.hub.behind(&user_id, position) {
                    self.deliver_from(&user_id, delivered).await?;
                }
            }
        }
    }

    /// Queues the notice of a commit for the other instances (PostgreSQL only).
    pub(super) fn notify_other_instances(&self, user_id: &str, scope: &str, position: i64) {
        let Some(sender) = &self.notices else {
            return;
        };
        self.notified_other_instances(user_id, scope, position);
        match sender.try_send((user_id.to_owned(), scope.to_owned(), position)) {
            Ok(()) => {
                self.notices_pending.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) => metrics::counter!("settings_api_notices_dropped_total").increment(1),
        }
    }

    /// Records a commit of this instance whose notice the other instances get (PostgreSQL
    /// only), so that its echo drops nothing: a shared write's statement sent it itself.
    pub(super) fn notified_other_instances(&self, user_id: &str, scope: &str, position: i64) {
        if self.notices.is_some()
            && let Some(cache) = &self.cache
        {
            cache.committed_here(user_id, scope, position);
        }
    }

    /// Waits (at most `limit`) until every queued notice was sent: before the process exits,
    /// so that the other instances hear of this one's last writes.
    pub async fn flush_notices(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.notices_pending.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs until dropped: sends the queued notices, as many together as fit one payload.
    pub async fn send_notices(self: Arc<Self>) {
        let Some(mut queue) = self.take_notice_queue() else {
            return;
        };
        let mut batch: Vec<Notice> = Vec::new();
        let mut last_sent: Option<tokio::time::Instant> = None;
        while let Some(first) = queue.recv().await {
            batch.push(first);
            // Under load, the commits until then go together; after a quiet spell, at once.
            if let Some(sent) = last_sent {
                tokio::time::sleep_until(sent + NOTICE_INTERVAL).await;
            }
            while batch.len() < 256
                && let Ok(next) = queue.try_recv()
            {
                batch.push(next);
            }
            for payload in payloads(&batch) {
                let statement = sea_orm::Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    "SELECT pg_notify('settings_feed', $1)",
                    [payload.into()],
                );
                let sent = match self.db() {
                    Ok(db) => sea_orm::ConnectionTrait::execute_raw(&*db, statement)
                        .await
                        .map(|_| ())
                        .map_err(crate::error::Error::from),
                    Err(err) => Err(err),
                };
                if let Err(err) = sent {
                    metrics::counter!("settings_api_notices_dropped_total").increment(1);
                    tracing::warn!(error = %err, "could not notify the other instances of a change");
                }
            }
            last_sent = Some(tokio::time::Instant::now());
            self.notices_pending
                .fetch_sub(batch.len(), Ordering::AcqRel);
            batch.clear();
        }
    }

    /// Reads the user's changes after `position` and hands them to the hub.
    async fn deliver_from(&self, user_id: &str, mut position: i64) -> Result<()> {
        loop {
            let page = self
                .changes_since(user_id, Cursor(position), None, 500)
                .await?;
            position = page.cursor.0;
            for change in page.changes {
                self.hub.publish(Arc::new(change));
            }
            if !page.has_more {
                return Ok(());
            }
        }
    }
}

/// The notices as JSON arrays of `[user, scope, position]`, each within the payload limit.
fn payloads(notices: &[Notice]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current: Vec<&Notice> = Vec::new();
    let mut size = 2;
    for notice in notices {
        let one = serde_json::to_string(notice).unwrap_or_default().len() + 1;
        if !current.is_empty() && size + one > MAX_PAYLOAD {
            payloads.push(serde_json::to_string(&current).unwrap_or_default());
            current.clear();
            size = 2;
        }
        current.push(notice);
        size += one;
    }
    if !current.is_empty() {
        payloads.push(serde_json::to_string(&current).unwrap_or_default());
    }
    payloads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_go_together_within_the_payload_limit() {
        let notices: Vec<Notice> = (0..1000)
            .map(|n| (format!("user-{n}"), "scope".to_owned(), n))
            .collect();
        let payloads = payloads(&notices);
        assert!(payloads.len() > 1);
        let mut back = Vec::new();
        for payload in &payloads {
            assert!(payload.len() <= MAX_PAYLOAD, "{}", payload.len());
            back.extend(serde_json::from_str::<Vec<Notice>>(payload).unwrap());
        }
        assert_eq!(back, notices);
    }
}
