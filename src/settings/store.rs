//! The store: every query the service runs against the database.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QueryTrait, prelude::Expr, sea_query::OnConflict,
};
use serde_json::Value;
use uuid::Uuid;

use super::{Key, Scope, ValueLimits};
use crate::{
    auth::Principal,
    catalog::Catalog,
    entity::{org_default, setting, user},
    error::{Error, Result},
};

/// One stored setting, as every interface returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub key: String,
    pub scope: String,
    pub value: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<setting::Model> for Setting {
    fn from(model: setting::Model) -> Self {
        Setting {
            key: model.key,
            scope: model.scope,
            value: model.value,
            version: model.version,
            created_at: model.created_at,
            updated_at: model.updated_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub locale: Option<String>,
    pub settings_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<user::Model> for User {
    fn from(model: user::Model) -> Self {
        User {
            id: model.id,
            email: model.email,
            roles: serde_json::from_value(model.roles).unwrap_or_default(),
            locale: model.locale,
            settings_id: model.settings_id,
            created_at: model.created_at,
            updated_at: model.updated_at,
        }
    }
}

/// Beyond this many remembered users the cache starts over; a miss costs one no-op upsert.
const KNOWN_USERS_CAPACITY: usize = 100_000;

pub struct Store {
    pub(super) db: DatabaseConnection,
    limits: ValueLimits,
    catalog: Arc<Catalog>,
    /// Users whose row already holds the claims last seen, by a hash of those claims.
    known_users: Mutex<HashMap<String, u64>>,
    /// Every committed change, for subscribers.
    pub(super) changes: super::events::Changes,
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

pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

pub(super) fn of_user(user_id: &str, scope: &Scope) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(setting::Column::UserId.eq(user_id))
        .add(setting::Column::Scope.eq(scope.as_str()))
}

impl Store {
    pub fn new(db: DatabaseConnection, limits: ValueLimits, catalog: Arc<Catalog>) -> Self {
        Store {
            db,
            limits,
            catalog,
            known_users: Mutex::new(HashMap::new()),
            changes: super::events::channel(),
        }
    }

    /// Every change committed from now on, in commit order per setting. A receiver that falls
    /// more than `events::BACKLOG` changes behind is told how many it missed.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<super::ChangeEvent>> {
        self.changes.subscribe()
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The rules every stored value obeys: size and nesting limits, then the key's schema.
    pub(super) fn check_value(&self, key: &str, value: &Value) -> Result<()> {
        self.limits.check(key, value)?;
        self.catalog.check(key, value)
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.db.ping().await.map_err(Error::Unavailable)
    }

    /// Creates the user's row on first sight and refreshes its email and roles when the token's
    /// claims change. Claims already stored cost no database round trip.
    #[tracing::instrument(skip_all, err(level = "debug", Debug), fields(user_id = %principal.user_id))]
    pub async fn ensure_user(&self, principal: &Principal) -> Result<()> {
        let mut hasher = DefaultHasher::new();
        (&principal.email, &principal.roles).hash(&mut hasher);
        let fingerprint = hasher.finish();
        if self.remembered(&principal.user_id) == Some(fingerprint) {
            return Ok(());
        }

        let now = now();
        let row = user::ActiveModel {
            id: Set(principal.user_id.clone()),
            email: Set(principal.email.clone()),
            roles: Set(serde_json::json!(principal.roles)),
            locale: Set(None),
            settings_id: Set(Uuid::new_v4()),
            created_at: Set(now),
            updated_at: Set(now),
        };
        user::Entity::insert(row)
            .on_conflict(
                OnConflict::column(user::Column::Id)
                    .update_columns([user::Column::Email, user::Column::Roles, user::Column::UpdatedAt])
                    // Rewrite the row only when a claim changed.
                    .action_and_where(Expr::cust(
                        "users.email IS DISTINCT FROM excluded.email OR users.roles <> excluded.roles",
                    ))
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;

        let mut known = self.known_users.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= KNOWN_USERS_CAPACITY {
            known.clear();
        }
        known.insert(principal.user_id.clone(), fingerprint);
        Ok(())
    }

    fn remembered(&self, user_id: &str) -> Option<u64> {
        let known = self.known_users.lock().unwrap_or_else(|p| p.into_inner());
        known.get(user_id).copied()
    }

    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn user(&self, user_id: &str) -> Result<User> {
        user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .map(User::from)
            .ok_or_else(|| Error::NotFound(format!("user `{user_id}` does not exist")))
    }

    /// The user's settings in `scope`, ordered by key; only `keys` when given.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn list(
        &self,
        user_id: &str,
        scope: &Scope,
        keys: Option<&[Key]>,
    ) -> Result<Vec<Setting>> {
        let rows = setting::Entity::find()
            .filter(of_user(user_id, scope))
            .apply_if(keys, |query, keys| {
                query.filter(setting::Column::Key.is_in(keys.iter().map(Key::as_str)))
            })
            .order_by_asc(setting::Column::Key)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(Setting::from).collect())
    }

    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn get(&self, user_id: &str, scope: &Scope, key: &Key) -> Result<Option<Setting>> {
        let row = setting::Entity::find_by_id((
            user_id.to_owned(),
            scope.as_str().to_owned(),
            key.as_str().to_owned(),
        ))
        .one(&self.db)
        .await?;
        Ok(row.map(Setting::from))
    }
}

impl Store {
    /// Organisation defaults by key.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn org_defaults(&self) -> Result<BTreeMap<String, Value>> {
        let rows = org_default::Entity::find().all(&self.db).await?;
        Ok(rows.into_iter().map(|row| (row.key, row.value)).collect())
    }

    /// Sets (or with `None` removes) the organisation default of a catalog key.
    #[tracing::instrument(skip_all, err(level = "debug", Debug), fields(key = key.as_str()))]
    pub async fn set_org_default(&self, key: &Key, value: Option<Value>, by: &str) -> Result<()> {
        if self.catalog.get(key.as_str()).is_none() {
            return Err(Error::NotFound(format!(
                "`{}` is not a catalog key; only catalog keys have organisation defaults",
                key.as_str()
            )));
        }
        let Some(value) = value else {
            org_default::Entity::delete_by_id(key.as_str())
                .exec(&self.db)
                .await?;
            return Ok(());
        };
        self.check_value(key.as_str(), &value)?;
        let now = now();
        let row = org_default::ActiveModel {
            key: Set(key.as_str().to_owned()),
            value: Set(value),
            updated_by: Set(by.to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        };
        org_default::Entity::insert(row)
            .on_conflict(
                OnConflict::column(org_default::Column::Key)
                    .update_columns([
                        org_default::Column::Value,
                        org_default::Column::UpdatedBy,
                        org_default::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// What applies for each key, through the layers catalog default → organisation default →
    /// the user's value in the default scope → the user's value in `scope`. Without `keys`: every
    /// catalog key and every key the user has set in either scope. Ordered by key.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn effective(
        &self,
        user_id: &str,
        scope: &Scope,
        keys: Option<&[Key]>,
    ) -> Result<Vec<Effective>> {
        let wanted = |key: &str| keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == key));
        let mut layers: BTreeMap<String, Effective> = BTreeMap::new();
        for definition in self.catalog.definitions().filter(|d| wanted(&d.key)) {
            layers.insert(
                definition.key.clone(),
                Effective::new(&definition.key, definition.default.clone(), Source::Default),
            );
        }
        for (key, value) in self
            .org_defaults()
            .await?
            .into_iter()
            .filter(|(key, _)| wanted(key))
        {
            layers.insert(key.clone(), Effective::new(&key, value, Source::Org));
        }
        let rows = setting::Entity::find()
            .filter(setting::Column::UserId.eq(user_id))
            .filter(setting::Column::Scope.is_in([Scope::default().as_str(), scope.as_str()]))
            .apply_if(keys, |query, keys| {
                query.filter(setting::Column::Key.is_in(keys.iter().map(Key::as_str)))
            })
            // The default scope first, so that a value in `scope` overrides it.
            .order_by_asc(setting::Column::Scope)
            .all(&self.db)
            .await?;
        for row in rows {
            let setting = Setting::from(row);
            let source = if setting.scope == scope.as_str() && !scope.as_str().is_empty() {
                Source::Scope
            } else {
                Source::User
            };
            layers.insert(
                setting.key.clone(),
                Effective {
                    key: setting.key.clone(),
                    value: setting.value.clone(),
                    source,
                    setting: Some(setting),
                },
            );
        }
        Ok(layers.into_values().collect())
    }
}

/// Where an effective value comes from, lowest layer first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    Org,
    User,
    Scope,
}

/// The value that applies for one key, and the stored setting behind it when the user has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Effective {
    pub key: String,
    pub value: Value,
    pub source: Source,
    pub setting: Option<Setting>,
}

impl Effective {
    fn new(key: &str, value: Value, source: Source) -> Self {
        Effective {
            key: key.to_owned(),
            value,
            source,
            setting: None,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}
