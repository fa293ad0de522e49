//! Reading settings: stored values, organisation defaults, and the effective value of each
//! key through the layers.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use sea_orm::sqlx::{
    Column as _, ColumnIndex, Decode, Postgres, Row as _, Type, TypeInfo as _, ValueRef as _,
    postgres::{PgRow, PgValueFormat},
    types::Json,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QueryResult, QueryTrait, Statement,
};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    Key, Scope, Setting, Store,
    batch::{Grouped, Limits, Queue},
    cache::Snapshot,
    expiry::unexpired,
};
use crate::{
    entity::{org_default, setting},
    error::Result,
};

/// A user's settings in one scope as [`Store::listed`] found them, ordered by key.
pub struct Listed<'k> {
    snapshot: Snapshot,
    /// Only these keys, when the settings are all of the scope's.
    keys: Option<&'k [Key]>,
    now: DateTime<Utc>,
}

impl<'k> Listed<'k> {
    fn new(snapshot: Snapshot, keys: Option<&'k [Key]>) -> Self {
        Listed {
            snapshot,
            keys,
            now: super::store::now(),
        }
    }

    /// The settings asked for. A value that expired since it was read is left out at once.
    pub fn iter(&self) -> impl Iterator<Item = &Setting> {
        self.snapshot
            .settings
            .iter()
            .map(|setting| setting.as_ref())
            .filter(|setting| {
                self.keys
                    .is_none_or(|keys| keys.iter().any(|key| key.as_str() == setting.key))
            })
            .filter(|setting| !setting.expired(self.now))
    }

    /// All the scope's settings as read, with the user's feed position then.
    pub(super) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl Store {
    /// The user's settings in `scope`, ordered by key; only `keys` when given.
    pub async fn list(
        &self,
        user_id: &str,
        scope: &Scope,
        keys: Option<&[Key]>,
    ) -> Result<Vec<Setting>> {
        let listed = self.listed(user_id, scope, keys).await?;
        Ok(listed.iter().cloned().collect())
    }

    /// [`Store::list`] without copying the settings out of the cache: for a response written
    /// straight from them.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn listed<'k>(
        &self,
        user_id: &str,
        scope: &Scope,
        keys: Option<&'k [Key]>,
    ) -> Result<Listed<'k>> {
        let Some(cache) = &self.cache else {
            return Ok(Listed::new(self.read_scope(user_id, scope).await?, keys));
        };
        let all = match cache.get(user_id, scope.as_str()) {
            Some(all) => all,
            None => {
                let generation = cache.generation(user_id);
                let all = self.read_scope(user_id, scope).await?;
                cache.put(user_id, scope.as_str(), generation, all.clone());
                all
            }
        };
        Ok(Listed::new(all, keys))
    }

    /// All the user's settings in `scope` from the database. On PostgreSQL the read shares
    /// its statement with other users' reads of the scope that arrive while earlier reads are
    /// in flight ([`super::batch`]).
    async fn read_scope(&self, user_id: &str, scope: &Scope) -> Result<Snapshot> {
        // Held while the read is queued and in flight, as a direct query holds it.
        let db = self.reader()?;
        if self.backend() != DbBackend::Postgres {
            let mut settings = list_many_on(&*db, &[user_id], scope, None).await?;
            let settings = settings.remove(user_id).unwrap_or_default();
            let settings = settings.into_iter().map(Arc::new).collect();
            return Ok(Snapshot::new(settings, None));
        }
        let read = |reply| ScopeRead {
            user_id: user_id.to_owned(),
            scope: scope.clone(),
            reply,
        };
        Ok(self.read_queue().ask(read).await?)
    }

    /// The settings of several users in `scope`, each ordered by key, in one query; only
    /// `keys` when given. Users without settings are absent from the map.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn list_many(
        &self,
        user_ids: &[&str],
        scope: &Scope,
        keys: Option<&[Key]>,
    ) -> Result<HashMap<String, Vec<Setting>>> {
        Ok(list_many_on(&*self.reader()?, user_ids, scope, keys).await?)
    }

    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn get(&self, user_id: &str, scope: &Scope, key: &Key) -> Result<Option<Setting>> {
        let row = setting::Entity::find_by_id((
            user_id.to_owned(),
            scope.as_str().to_owned(),
            key.as_str().to_owned(),
        ))
        .one(&*self.reader()?)
        .await?;
        Ok(row
            .map(Setting::from)
            .filter(|s| !s.expired(super::store::now())))
    }

    /// Organisation defaults by key.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn org_defaults(&self) -> Result<BTreeMap<String, OrgDefault>> {
        let rows = org_default::Entity::find().all(&*self.reader()?).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let default = OrgDefault {
                    value: row.value,
                    locked: row.locked,
                };
                (row.key, default)
            })
            .collect())
    }

    /// What applies for each key, through the layers catalog default → organisation default →
    /// the user's value in the default scope → the user's value in `scope`, with `scope`'s
    /// catalog: a lower layer's value that the key's schema there rejects does not show through
    /// (an organisation default shows only for keys that catalog knows). Without `keys`: every
    /// key of that catalog and every key the user has set in either scope. Ordered by key.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn effective(
        &self,
        user_id: &str,
        scope: &Scope,
        keys: Option<&[Key]>,
    ) -> Result<Vec<Effective>> {
        let mut effective = self.effective_many(&[user_id], scope, keys).await?;
        Ok(effective.remove(user_id).unwrap_or_default())
    }

    /// [`Store::effective`] of several users at once, in two queries whatever their number.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn effective_many(
        &self,
        user_ids: &[&str],
        scope: &Scope,
        keys: Option<&[Key]>,
    ) -> Result<HashMap<String, Vec<Effective>>> {
        let wanted = |key: &str| keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == key));
        let catalog = self.catalog();
        let known_and_accepted = |key: &str, value: &Value| {
            catalog
                .get(scope.as_str(), key)
                .is_some_and(|definition| definition.accepts(value))
        };
        let accepted = |key: &str, value: &Value| {
            catalog
                .get(scope.as_str(), key)
                .is_none_or(|definition| definition.accepts(value))
        };
        let mut base: BTreeMap<String, Effective> = BTreeMap::new();
        for definition in catalog
            .definitions(scope.as_str())
            .into_iter()
            .filter(|d| wanted(&d.key))
        {
            base.insert(
                definition.key.clone(),
                Effective::new(&definition.key, definition.default.clone(), Source::Default),
            );
        }
        let mut locked = Vec::new();
        for (key, org) in self
            .org_defaults()
            .await?
            .into_iter()
            .filter(|(key, org)| wanted(key) && known_and_accepted(key, &org.value))
        {
            let mut effective = Effective::new(&key, org.value, Source::Org);
            if org.locked {
                effective.locked = true;
                locked.push(effective.clone());
            }
            base.insert(key, effective);
        }
        let rows = setting::Entity::find()
            .filter(setting::Column::UserId.is_in(user_ids.iter().copied()))
            .filter(setting::Column::Scope.is_in([Scope::default().as_str(), scope.as_str()]))
            .filter(unexpired())
            .apply_if(keys, |query, keys| {
                query.filter(setting::Column::Key.is_in(keys.iter().map(Key::as_str)))
            })
            // The default scope first, so that a value in `scope` overrides it.
            .order_by_asc(setting::Column::Scope)
            .all(&*self.reader()?)
            .await?;
        let mut layers: HashMap<String, BTreeMap<String, Effective>> = user_ids
            .iter()
            .map(|&user_id| (user_id.to_owned(), base.clone()))
            .collect();
        for row in rows {
            let setting = Setting::from(row);
            let own = setting.scope == scope.as_str();
            if !own && !accepted(&setting.key, &setting.value) {
                continue;
            }
            let source = if own && !scope.as_str().is_empty() {
                Source::Scope
            } else {
                Source::User
            };
            let Some(layers) = layers.get_mut(&setting.user_id) else {
                continue;
            };
            layers.insert(
                setting.key.clone(),
                Effective {
                    key: setting.key.clone(),
                    value: setting.value.clone(),
                    source,
                    setting: Some(setting),
                    locked: false,
                },
            );
        }
        // A locked organisation value applies over the users' own, which stay stored.
        for layers in layers.values_mut() {
            for effective in &locked {
                layers.insert(effective.key.clone(), effective.clone());
            }
        }
        Ok(layers
            .into_iter()
            .map(|(user_id, layers)| (user_id, layers.into_values().collect()))
            .collect())
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
    /// The organisation locked the key: its value applies to everyone.
    pub locked: bool,
}

/// An organisation default of a catalog key.
#[derive(Clone, Debug, PartialEq)]
pub struct OrgDefault {
    pub value: Value,
    /// While locked, it applies over the users' values and they cannot change the key.
    pub locked: bool,
}

impl Effective {
    fn new(key: &str, value: Value, source: Source) -> Self {
        Effective {
            key: key.to_owned(),
            value,
            source,
            setting: None,
            locked: false,
        }
    }
}

/// [`Store::list_many`] on `db`.
async fn list_many_on(
    db: &impl ConnectionTrait,
    user_ids: &[&str],
    scope: &Scope,
    keys: Option<&[Key]>,
) -> Result<HashMap<String, Vec<Setting>>, DbErr> {
    let rows = setting::Entity::find()
        .filter(setting::Column::UserId.is_in(user_ids.iter().copied()))
        .filter(setting::Column::Scope.eq(scope.as_str()))
        .filter(unexpired())
        .apply_if(keys, |query, keys| {
            query.filter(setting::Column::Key.is_in(keys.iter().map(Key::as_str)))
        })
        .order_by_asc(setting::Column::Key)
        .all(db)
        .await?;
    let mut by_user: HashMap<String, Vec<Setting>> = HashMap::new();
    for row in rows {
        by_user
            .entry(row.user_id.clone())
            .or_default()
            .push(Setting::from(row));
    }
    Ok(by_user)
}

/// What a shared statement found, by user: no more users than one statement reads or writes.
pub(super) type ByUser<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Most reads in one statement, and most such statements in flight at once.
const READ_LIMITS: Limits = Limits {
    per_statement: 32,
    in_flight: 2,
};

/// One user's read of a whole scope in the queue. Reads of the same scope go together;
/// a user may be in several reads at once.
pub(super) struct ScopeRead {
    user_id: String,
    scope: Scope,
    reply: oneshot::Sender<Result<Snapshot, DbErr>>,
}

impl Grouped for ScopeRead {
    fn exclusive_user(&self) -> Option<&str> {
        None
    }

    fn joins(&self, first: &Self) -> bool {
        self.scope == first.scope
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// The queue of scope reads on `db`; `with_position`: each with the user's feed position
/// (reads for a cache, whose entries a write's positions are compared with).
pub(super) fn read_queue(db: DatabaseConnection, with_position: bool) -> Queue<ScopeRead> {
    Queue::start(READ_LIMITS, move |batch: Vec<ScopeRead>| {
        let db = db.clone();
        async move {
            let users: Vec<&str> = batch.iter().map(|read| read.user_id.as_str()).collect();
            match read_scopes(&db, &users, &batch[0].scope, with_position).await {
                Ok(mut found) => {
                    for read in batch {
                        let settings = found.entry(read.user_id).or_default().clone();
                        let _ = read.reply.send(Ok(settings));
                    }
                }
                Err(err) => {
                    for read in batch {
                        let _ = read.reply.send(Err(err.clone()));
                    }
                }
            }
        }
    })
}

/// The settings of `user_ids` in `scope` on PostgreSQL, each user's ordered by key (what
/// [`list_many_on`] reads without keys), `with_position`: with the user's feed position in
/// the same snapshot (which costs PostgreSQL a lookup of each user); in a statement written
/// out and read by position. Users without settings (or, with positions, without a row) are
/// absent. The users (at most a statement's) are looked up for every row, with foldhash, which
/// takes a fraction of SipHash's instructions.
async fn read_scopes(
    db: &DatabaseConnection,
    user_ids: &[&str],
    scope: &Scope,
    with_position: bool,
) -> Result<ByUser<Snapshot>, DbErr> {
    use std::fmt::Write as _;
    let mut sql = String::from(if with_position {
        // Every setting's user has a row (a foreign key): a user without settings comes as
        // one row without a key.
        "SELECT u.id, u.feed_position, s.key, s.value, s.version, s.created_at, s.updated_at, \
         s.expires_at FROM users AS u LEFT JOIN settings AS s ON s.user_id = u.id \
         AND s.scope = $1 AND (s.expires_at IS NULL OR s.expires_at > $2) WHERE u.id IN ("
    } else {
        "SELECT s.user_id, NULL::bigint, s.key, s.value, s.version, s.created_at, \
         s.updated_at, s.expires_at FROM settings AS s WHERE s.scope = $1 \
         AND (s.expires_at IS NULL OR s.expires_at > $2) AND s.user_id IN ("
    });
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(2 + user_ids.len());
    values.push(scope.as_str().into());
    values.push(super::store::now().into());
    for (at, user) in user_ids.iter().enumerate() {
        let separator = if at == 0 { "" } else { ", " };
        let _ = write!(sql, "{separator}${}", at + 3);
        values.push((*user).into());
    }
    // Without positions, the primary key's index gives the rows in this order, and PostgreSQL
    // sorts nothing: ordered by key alone, sorting all the statement's rows cost it a fifth of
    // the statement (bench/README.md). With positions, a sort of each user's rows after the
    // join costs more than one sort of them all.
    sql.push_str(if with_position {
        ") ORDER BY s.key"
    } else {
        ") ORDER BY s.user_id, s.key"
    });
    let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
    let rows = db.query_all_raw(statement).await?;
    let mut by_user: ByUser<(Option<i64>, Vec<Arc<Setting>>)> = ByUser::default();
    // The user's columns are checked on the first row, the setting's on the first row that has
    // one (a user without settings has none).
    let mut setting_checked = false;
    for (at, row) in rows.iter().enumerate() {
        let row = pg_row(row)?;
        let user_id: &str = column(row, 0, at == 0)?;
        let position: Option<i64> = column(row, 1, at == 0)?;
        if row.try_get_raw(2).map_err(column_error)?.is_null() {
            // A user without settings (read with the position).
            by_user
                .entry(user_id.to_owned())
                .or_insert((position, Vec::new()));
            continue;
        }
        let setting = pg_setting(
            row,
            user_id.to_owned(),
            scope.as_str().to_owned(),
            [2, 3, 4, 5, 6, 7],
            !setting_checked,
        )?;
        setting_checked = true;
        let setting = Arc::new(setting);
        match by_user.get_mut(user_id) {
            Some((_, settings)) => settings.push(setting),
            None => {
                by_user.insert(user_id.to_owned(), (position, vec![setting]));
            }
        }
    }
    let snapshots = by_user
        .into_iter()
        .map(|(user, (position, settings))| (user, Snapshot::new(settings, position)))
        .collect();
    Ok(snapshots)
}

/// The PostgreSQL row behind `row`, for decoding by sqlx itself: sea-orm's own decoding checks
/// each column's type twice.
pub(super) fn pg_row(row: &QueryResult) -> Result<&PgRow, DbErr> {
    row.try_as_pg_row()
        .ok_or_else(|| DbErr::Custom("a PostgreSQL statement got another database's row".into()))
}

pub(super) fn column_error(err: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Type(format!("reading a setting: {err}"))
}

/// Column `at` of `row` as a `T`. With `checked`, it first checks that the column's type, as
/// the result describes it (null or not), decodes as `T`. The rows of one result share that
/// description, so a statement's reader checks its first row and decodes the others without
/// the check: sqlx's `try_get` checks every value, which took a tenth of the server's
/// instructions for a read of 20 settings.
pub(super) fn column<'r, T, I>(row: &'r PgRow, at: I, checked: bool) -> Result<T, DbErr>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
    I: ColumnIndex<PgRow>,
{
    let index = column_index::<T, I>(row, at, checked)?;
    row.try_get_unchecked(index).map_err(column_error)
}

/// The index of column `at` of `row`; `checked` as for [`column`].
fn column_index<T: Type<Postgres>, I: ColumnIndex<PgRow>>(
    row: &PgRow,
    at: I,
    checked: bool,
) -> Result<usize, DbErr> {
    let index = at.index(row).map_err(column_error)?;
    if checked {
        let declared = row.column(index).type_info();
        if !T::compatible(declared) {
            return Err(DbErr::Type(format!(
                "reading a setting: column {index} is {declared}, which does not decode as {}",
                std::any::type_name::<T>()
            )));
        }
    }
    Ok(index)
}

/// The JSON value in column `at` of `row` (`jsonb` or `json`); `checked` as for [`column`].
/// sqlx's own decoding (`Json<Value>`) parses the bytes, checking each string of the value
/// for UTF-8 on its own; this checks the whole text at once and parses it as text.
pub(super) fn json_column<I: ColumnIndex<PgRow>>(
    row: &PgRow,
    at: I,
    checked: bool,
) -> Result<Value, DbErr> {
    let index = column_index::<Json<Value>, I>(row, at, checked)?;
    let raw = row.try_get_raw(index).map_err(column_error)?;
    let invalid = |why: &dyn std::fmt::Display| {
        DbErr::Type(format!("reading a setting: column {index}: {why}"))
    };
    let mut bytes = raw.as_bytes().map_err(|err| invalid(&err))?;
    if raw.format() == PgValueFormat::Binary && raw.type_info().name() == "JSONB" {
        // A binary `jsonb` starts with its format's version, 1 in every PostgreSQL so far.
        bytes = match bytes.split_first() {
            Some((1, text)) => text,
            _ => return Err(invalid(&"a jsonb value of a format other than 1")),
        };
    }
    let text = std::str::from_utf8(bytes).map_err(|err| invalid(&err))?;
    serde_json::from_str(text).map_err(|err| invalid(&err))
}

/// The setting of `user_id` in `scope` in a PostgreSQL row whose columns `at` (by name or by
/// position) are its key, value, version, created_at, updated_at and expires_at; `checked` as
/// for [`column`].
fn pg_setting<I: ColumnIndex<PgRow>>(
    row: &PgRow,
    user_id: String,
    scope: String,
    at: [I; 6],
    checked: bool,
) -> Result<Setting, DbErr> {
    let [key, value, version, created_at, updated_at, expires_at] = at;
    let key = column(row, key, checked)?;
    let value = json_column(row, value, checked)?;
    let at = [version, created_at, updated_at, expires_at];
    pg_setting_of(row, (user_id, scope, key), value, at, checked)
}

/// [`pg_setting`] for a row without the value: `value` is the one the writer sent, and `id`
/// the setting's user, scope and key. The columns `at` are its version, created_at,
/// updated_at and expires_at; `checked` as for [`column`].
pub(super) fn pg_setting_of<I: ColumnIndex<PgRow>>(
    row: &PgRow,
    id: (String, String, String),
    value: serde_json::Value,
    at: [I; 4],
    checked: bool,
) -> Result<Setting, DbErr> {
    let [version, created_at, updated_at, expires_at] = at;
    let (user_id, scope, key) = id;
    Ok(Setting {
        user_id,
        key,
        scope,
        value,
        version: column(row, version, checked)?,
        created_at: column(row, created_at, checked)?,
        updated_at: column(row, updated_at, checked)?,
        expires_at: column(row, expires_at, checked)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_that_wait_go_two_statements_at_a_time_of_at_most_32() {
        let (sizes, most_in_flight) = super::super::batch::statement_sizes(READ_LIMITS, 70).await;
        assert_eq!(sizes, [1, 32, 32, 6]);
        assert_eq!(most_in_flight, 2);
    }
}
