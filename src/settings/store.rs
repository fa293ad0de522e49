//! The store: the connection pool and the users table. Reads are in `read.rs`, writes in
//! `write.rs` and `replace_one.rs`, the history in `history.rs`.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryFilter,
    prelude::Expr,
    sea_query::OnConflict,
};
use serde_json::Value;
use uuid::Uuid;

use super::{Scope, User, ValueLimits};
use crate::{
    catalog::Catalog,
    entity::{setting, user},
    error::{Error, Result},
};

/// Beyond this many remembered users the cache starts over; a miss costs one no-op upsert.
const KNOWN_USERS_CAPACITY: usize = 100_000;

pub struct Store {
    /// Reached through [`Store::db`], which fails at once during a known outage.
    pub(super) pool: DatabaseConnection,
    pub(super) health: super::health::Health,
    limits: ValueLimits,
    catalog: Arc<Catalog>,
    /// The scope whose `locale` the users table mirrors (where contract 004 lives).
    pub(super) locale_scope: Scope,
    /// Users whose row already holds the claims last seen, by a hash of those claims.
    known_users: Mutex<HashMap<String, u64>>,
    /// Committed changes, for this process's subscribers.
    pub(super) hub: super::events::Hub,
    /// The users' settings per scope, when the cache is on.
    pub(super) cache: Option<super::cache::SettingsCache>,
    /// Commits to tell the other instances about (PostgreSQL), and the queue's receiving end
    /// until the sender task takes it.
    pub(super) notices: Option<tokio::sync::mpsc::Sender<super::listen::Notice>>,
    notice_queue: Mutex<Option<tokio::sync::mpsc::Receiver<super::listen::Notice>>>,
    /// Notices queued or being sent.
    pub(super) notices_pending: std::sync::atomic::AtomicUsize,
    /// Statements sent through the pool.
    statements: Arc<std::sync::atomic::AtomicU64>,
    /// SQLite's readers beside its one writer ([`connect_readers`]); reads go there.
    pub(super) readers: Option<DatabaseConnection>,
    /// This process among the instances sharing a database: it names the notices it sends
    /// that it must not act on again when they come back.
    pub(super) instance_id: String,
    /// The group commit of writes that share statements (PostgreSQL), started by the first.
    write_queue: std::sync::OnceLock<super::batch::Queue<super::grouped_write::GroupedWrite>>,
    /// The grouped reads of whole scopes (PostgreSQL), started by the first.
    read_queue: std::sync::OnceLock<super::batch::Queue<super::read::ScopeRead>>,
}

/// Opens a pool. SQLite gets one connection: it serializes writers anyway, and a single
/// connection keeps read-then-write transactions from failing with `SQLITE_BUSY`.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .acquire_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        // A ping on every checkout is one more round trip per request; only a connection that
        // sat idle long enough for the server or a proxy to have dropped it is checked first.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        options
            .max_connections(1)
            .min_connections(1)
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
            });
    } else {
        options.max_connections(max_connections);
    }
    Database::connect(options).await
}

/// Most SQLite readers: each keeps a page cache of its own.
const MAX_SQLITE_READERS: u32 = 4;

/// For a SQLite file, a pool of up to `max_connections` (at most 4) read-only connections:
/// in WAL mode they read while the single writer writes, so reads never queue behind writes.
/// `None` for PostgreSQL, whose pool serves both, and for an in-memory database, which
/// another connection would not see.
pub async fn connect_readers(
    url: &str,
    max_connections: u32,
) -> Result<Option<DatabaseConnection>, DbErr> {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let readers = max_connections.clamp(1, MAX_SQLITE_READERS);
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(readers)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|opts| {
            opts.read_only(true)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    Database::connect(options).await.map(Some)
}

/// Counts every statement sent through `db` in `counter` and in the metrics.
fn count_statements(db: &mut DatabaseConnection, counter: Arc<std::sync::atomic::AtomicU64>) {
    db.set_metric_callback(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("settings_api_db_statements_total").increment(1);
    });
}

pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

pub(super) fn of_user(user_id: &str, scope: &Scope) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(setting::Column::UserId.eq(user_id))
        .add(setting::Column::Scope.eq(scope.as_str()))
}

impl Store {
    pub fn new(
        mut db: DatabaseConnection,
        limits: ValueLimits,
        catalog: Arc<Catalog>,
        locale_scope: Scope,
    ) -> Self {
        let (notices, notice_queue) = match db.get_database_backend() {
            DbBackend::Postgres => {
                let (sender, receiver) = tokio::sync::mpsc::channel(super::listen::NOTIFY_BACKLOG);
                (Some(sender), Some(receiver))
            }
            _ => (None, None),
        };
        let statements = Arc::new(std::sync::atomic::AtomicU64::new(0));
        count_statements(&mut db, statements.clone());
        Store {
            readers: None,
            instance_id: Uuid::new_v4().simple().to_string(),
            statements,
            notices,
            notice_queue: Mutex::new(notice_queue),
            notices_pending: Default::default(),
            pool: db,
            health: Default::default(),
            limits,
            catalog,
            locale_scope,
            known_users: Mutex::new(HashMap::new()),
            hub: super::events::Hub::default(),
            cache: None,
            write_queue: std::sync::OnceLock::new(),
            read_queue: std::sync::OnceLock::new(),
        }
    }

    /// The queue of writes that share statements; the first call starts its task, on the
    /// runtime it is called from.
    pub(super) fn write_queue(&self) -> &super::batch::Queue<super::grouped_write::GroupedWrite> {
        self.write_queue
            .get_or_init(|| super::grouped_write::write_queue(self.pool.clone()))
    }

    /// The queue of reads of whole scopes, like [`Store::write_queue`].
    pub(super) fn read_queue(&self) -> &super::batch::Queue<super::read::ScopeRead> {
        self.read_queue
            .get_or_init(|| super::read::read_queue(self.pool.clone(), self.cache.is_some()))
    }

    pub(super) fn take_notice_queue(
        &self,
    ) -> Option<tokio::sync::mpsc::Receiver<super::listen::Notice>> {
        self.notice_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Keeps up to about `bytes` of settings in memory for reads; 0 reads every time. On
    /// PostgreSQL the cache stays off until the change listener runs
    /// ([`Store::deliver_other_instances_changes`]), which keeps it coherent across instances.
    pub fn with_cache(mut self, bytes: u64) -> Self {
        self.cache = super::cache::SettingsCache::new(bytes);
        if let Some(cache) = &self.cache
            && self.backend() == DbBackend::Postgres
        {
            cache.set_coherent(false);
        }
        self
    }

    /// Reads go to `readers` (SQLite, [`connect_readers`]); `None` keeps them on the pool.
    pub fn with_readers(mut self, readers: Option<DatabaseConnection>) -> Self {
        if let Some(mut readers) = readers {
            count_statements(&mut readers, self.statements.clone());
            self.readers = Some(readers);
        }
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The rules every stored value obeys: size and nesting limits, then the key's schema in
    /// the scope.
    pub(super) fn check_value(&self, scope: &Scope, key: &str, value: &Value) -> Result<()> {
        self.limits.check(key, value)?;
        self.catalog.check(scope.as_str(), key, value)
    }

    /// The rules of a value that applies wherever `key` is known (an organisation default):
    /// it must fit the key's schema in every scope.
    pub(super) fn check_value_everywhere(&self, key: &str, value: &Value) -> Result<()> {
        self.limits.check(key, value)?;
        self.catalog.check_everywhere(key, value)
    }

    pub(super) fn limits(&self) -> &ValueLimits {
        &self.limits
    }

    pub(super) fn quotas(&self) -> super::Quotas {
        self.limits.quotas
    }

    pub fn backend(&self) -> DbBackend {
        self.pool.get_database_backend()
    }

    /// The pool's connections: (open, idle).
    pub fn pool_connections(&self) -> (u32, u32) {
        // The getters panic on the other backend: ask the one this pool is.
        match self.backend() {
            DbBackend::Postgres => {
                let pool = self.pool.get_postgres_connection_pool();
                (pool.size(), pool.num_idle() as u32)
            }
            DbBackend::Sqlite => {
                let pool = self.pool.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle() as u32)
            }
            _ => (0, 0),
        }
    }

    /// Creates the user's row on first sight and refreshes its email and roles when the token's
    /// claims change. Claims already stored cost no database round trip.
    #[tracing::instrument(skip_all, err(level = "debug", Debug), fields(user_id = %user_id))]
    pub async fn ensure_user(
        &self,
        user_id: &str,
        email: Option<&str>,
        roles: &[String],
    ) -> Result<()> {
        let mut hasher = DefaultHasher::new();
        (email, roles).hash(&mut hasher);
        let fingerprint = hasher.finish();
        if self.remembered(user_id) == Some(fingerprint) {
            return Ok(());
        }

        let now = now();
        let row = user::ActiveModel {
            id: Set(user_id.to_owned()),
            email: Set(email.map(str::to_owned)),
            roles: Set(serde_json::json!(roles)),
            locale: Set(None),
            settings_id: Set(Uuid::new_v4()),
            created_at: Set(now),
            updated_at: Set(now),
            feed_position: NotSet,
            feed_expired_through: NotSet,
        };
        let upserted = user::Entity::insert(row)
            .on_conflict(
                OnConflict::column(user::Column::Id)
                    .update_columns([user::Column::Email, user::Column::Roles, user::Column::UpdatedAt])
                    // Rewrite the row only when a claim changed.
                    .action_and_where(Expr::cust(
                        "users.email IS DISTINCT FROM excluded.email OR users.roles <> excluded.roles",
                    ))
                    .to_owned(),
            )
            .exec_without_returning(&*self.db()?)
            .await;
        match upserted {
            Ok(_) => {}
            // A database that takes no writes still serves reads: the row waits for later,
            // and writes fail on their own with a clear message.
            Err(err) if crate::error::refuses_writes(&err) => {
                tracing::warn!(error = %err, "cannot record the user: the database refuses writes");
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        }

        let mut known = self.known_users.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= KNOWN_USERS_CAPACITY {
            known.clear();
        }
        known.insert(user_id.to_owned(), fingerprint);
        Ok(())
    }

    /// The user's row is gone (erased): the next request writes it again.
    pub(super) fn forget_user_row(&self, user_id: &str) {
        let mut known = self.known_users.lock().unwrap_or_else(|p| p.into_inner());
        known.remove(user_id);
    }

    fn remembered(&self, user_id: &str) -> Option<u64> {
        let known = self.known_users.lock().unwrap_or_else(|p| p.into_inner());
        known.get(user_id).copied()
    }

    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn user(&self, user_id: &str) -> Result<User> {
        user::Entity::find_by_id(user_id)
            .one(&*self.reader()?)
            .await?
            .map(User::from)
            .ok_or_else(|| Error::NotFound(format!("user `{user_id}` does not exist")))
    }
}

impl Store {
    /// The users of `ids` that have a row, in no particular order, in one query.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn users(&self, ids: &[&str]) -> Result<Vec<User>> {
        Ok(user::Entity::find()
            .filter(user::Column::Id.is_in(ids.iter().copied()))
            .all(&*self.reader()?)
            .await?
            .into_iter()
            .map(User::from)
            .collect())
    }

    /// SQL statements this store has sent, transactions' included: what a request cost.
    pub fn statements(&self) -> u64 {
        self.statements.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}
