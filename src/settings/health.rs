//! The database's health, as the service sees it: whether it answers (watched on a connection
//! of its own, so that a busy pool never looks like an outage) and whether it takes writes.
//! While an outage is known, every request fails at once with `UNAVAILABLE` instead of
//! waiting for the pool; the watch clears it as soon as the database answers again.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};

use super::Store;
use crate::error::{Error, Result, refuses_writes};

/// How long a health check waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Failed checks in a row that make an outage.
const FAILURES_TO_TRIP: u32 = 2;

#[derive(Default)]
pub(super) struct Health {
    down: AtomicBool,
    in_flight: AtomicU64,
}

/// The pool, for one database operation (see [`Store::db`]).
pub(super) struct InFlight<'a> {
    pool: &'a DatabaseConnection,
    counter: &'a AtomicU64,
}

impl std::ops::Deref for InFlight<'_> {
    type Target = DatabaseConnection;

    fn deref(&self) -> &DatabaseConnection {
        self.pool
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What `/health/ready` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The database answers, but refuses writes (read-only, or out of space).
    ReadOnly(String),
    Unreachable(String),
}

impl Store {
    /// The pool, or `UNAVAILABLE` at once while the database is known to be down. The guard
    /// counts the operation as in flight until it drops (the pool's `waiting` metric).
    pub(super) fn db(&self) -> Result<InFlight<'_>> {
        if self.health.down.load(Ordering::Relaxed) {
            return Err(Error::Unavailable(DbErr::Custom(
                "the database did not answer the last health check".into(),
            )));
        }
        self.health.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(InFlight {
            pool: &self.pool,
            counter: &self.health.in_flight,
        })
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// that while another process writes it waits for the lock (up to the busy timeout)
    /// rather than fail when it first writes after reading.
    pub(super) async fn begin_write(&self) -> Result<sea_orm::DatabaseTransaction> {
        use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        Ok(self.db()?.begin_with_options(options).await?)
    }

    /// A connection for a read: on SQLite one of the readers, which WAL lets read while the
    /// one writer writes; on PostgreSQL the pool. A read sees every write committed before it.
    pub(super) fn reader(&self) -> Result<InFlight<'_>> {
        let mut guard = self.db()?;
        if let Some(readers) = &self.readers {
            guard.pool = readers;
        }
        Ok(guard)
    }

    /// Database operations under way: those holding a connection and those waiting for one.
    pub fn operations_in_flight(&self) -> u64 {
        self.health.in_flight.load(Ordering::Relaxed)
    }

    /// Checks the database at `url` every `interval` on a connection of its own, and marks it
    /// down after [`FAILURES_TO_TRIP`] failed checks in a row (one slow answer on a busy
    /// machine is not an outage), up at the first that succeeds; runs until dropped. A
    /// connection that failed a check is closed and a new one opened at the next, so that a
    /// restarted server is found again.
    pub async fn watch_health(&self, url: String, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch: Option<DatabaseConnection> = None;
        let mut failures = 0;
        loop {
            ticks.tick().await;
            if watch.is_none() {
                watch = tokio::time::timeout(CHECK_TIMEOUT, super::store::connect(&url, 1))
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let answered = match &watch {
                Some(db) => matches!(
                    tokio::time::timeout(CHECK_TIMEOUT, db.ping()).await,
                    Ok(Ok(()))
                ),
                None => false,
            };
            if !answered && let Some(db) = watch.take() {
                // Closing waits for nothing the service needs.
                tokio::spawn(async move { db.close().await });
            }
            failures = if answered { 0 } else { failures + 1 };
            let down = failures >= FAILURES_TO_TRIP;
            let was_down = self.health.down.swap(down, Ordering::Relaxed);
            metrics::gauge!("settings_api_db_up").set(if down { 0.0 } else { 1.0 });
            match (was_down, down) {
                (false, true) => tracing::error!(
                    "the database does not answer: failing requests at once until it does"
                ),
                (true, false) => tracing::info!("the database answers again"),
                _ => {}
            }
        }
    }

    /// Whether the database answers and takes writes: a write that changes nothing, which a
    /// read-only database (a standby, `default_transaction_read_only`, a SQLite file opened
    /// read-only) still refuses.
    pub async fn readiness(&self) -> Readiness {
        let db = match self.db() {
            Ok(db) => db,
            Err(err) => return Readiness::Unreachable(err.to_string()),
        };
        // No user has an empty id (tokens with one are refused), so this matches no row.
        let probe = Statement::from_string(
            db.get_database_backend(),
            "UPDATE users SET updated_at = updated_at WHERE id = ''",
        );
        match tokio::time::timeout(CHECK_TIMEOUT, db.execute_raw(probe)).await {
            Ok(Ok(_)) => Readiness::Ready,
            Ok(Err(err)) if refuses_writes(&err) => Readiness::ReadOnly(err.to_string()),
            Ok(Err(err)) => Readiness::Unreachable(err.to_string()),
            Err(_) => {
                Readiness::Unreachable(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis()))
            }
        }
    }
}
