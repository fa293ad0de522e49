//! Changes committed by other instances, on PostgreSQL: every write notifies the channel
//! `settings_feed` at commit with its user and feed position (a small payload); this instance
//! reads the changes its subscribers have not seen from the table and hands them to the hub.
//! When the listening connection or the database drops, it reconnects, listens again, and
//! then reads whatever committed meanwhile, so nothing is lost; positions keep anything from
//! coming twice.

use std::{sync::Arc, time::Duration};

use sea_orm::sqlx::postgres::PgListener;

use super::{Cursor, Store};
use crate::error::Result;

const CHANNEL: &str = "settings_feed";

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
            let Ok((user_id, scope, position)) =
                serde_json::from_str::<(String, String, i64)>(notification.payload())
            else {
                continue;
            };
            if let Some(cache) = &self.cache {
                cache.invalidate(&user_id, &scope);
            }
            if let Some(delivered) = self.hub.behind(&user_id, position) {
                self.deliver_from(&user_id, delivered).await?;
            }
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
