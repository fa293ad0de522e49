//! Every change of settings goes through one path: lock the rows, check expected versions,
//! apply the change, write, and append one history row per changed key, in one transaction.
//! On PostgreSQL, replacing one key without preconditions takes the same steps in one statement.

use std::{collections::HashMap, sync::Arc};

use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Statement, TransactionTrait,
    prelude::Expr,
    sea_query::{Alias, ExprTrait, OnConflict},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    ChangeEvent, Key, Scope, Setting, Store, merge_patch,
    store::{now, of_user},
};
use crate::{
    entity::{setting, setting_change, user},
    error::{Error, Result},
};

/// Who changes settings, and through which interface; recorded in the history.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The token's `sub`; differs from the settings' user when an administrator acts.
    pub actor: String,
    /// `graphql`, or the legacy route, such as `PUT /api/v1/users/me/settings/{key}`.
    pub interface: &'static str,
}

impl Origin {
    pub fn new(actor: impl Into<String>, interface: &'static str) -> Self {
        Origin {
            actor: actor.into(),
            interface,
        }
    }
}

/// A precondition on the version a setting has before a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The setting exists at exactly this version.
    Version(i32),
    /// The setting exists, at any version (`If-Match: *`).
    Present,
    /// The setting does not exist (create only).
    Absent,
}

/// What a patch requires of the stored settings before it applies; nothing is written when a
/// precondition does not hold.
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    /// The version each key of the patch must have; 0 means the key must be absent.
    pub versions: HashMap<String, i32>,
    /// The tag of a set of settings the client last read, such as a REST `If-Match`.
    pub document: Option<DocumentCheck>,
}

/// A set of settings, named by the tag [`document_tag`] gave it when the client read it.
#[derive(Clone, Debug)]
pub struct DocumentCheck {
    /// The keys the tag covers; `None` is every key of the scope.
    pub keys: Option<Vec<Key>>,
    pub tag: String,
}

impl DocumentCheck {
    fn covers(&self, key: &str) -> bool {
        self.keys
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
    }
}

/// A tag of a set of settings that changes whenever one of them is written, created or removed:
/// a digest of the keys and versions, in hex. REST routes serve it as the `ETag` of a document.
pub fn document_tag<'a>(settings: impl IntoIterator<Item = (&'a str, i32)>) -> String {
    let mut entries: Vec<(&str, i32)> = settings.into_iter().collect();
    entries.sort_unstable();
    let mut digest = Sha256::new();
    for (key, version) in entries {
        digest.update(key.as_bytes());
        digest.update([0]);
        digest.update(version.to_be_bytes());
    }
    short_hex(digest)
}

/// A write's `If-Match` names a tag the settings no longer have.
pub fn stale_document() -> Error {
    Error::PreconditionFailed {
        message: "the settings changed since they were read: the ETag no longer matches; read \
                  them again"
            .into(),
        current_version: None,
    }
}

/// The first 12 bytes of a digest, in hex: enough to tell documents apart.
pub fn short_hex(digest: Sha256) -> String {
    digest.finalize()[..12]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The setting whose value the users table mirrors in its legacy `locale` column.
pub const LOCALE_KEY: &str = "locale";
/// The width of that column.
const LOCALE_MIRROR_CHARS: usize = 10;

/// What a history row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
    Reset,
    Revert,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Delete => "delete",
            ChangeKind::Reset => "reset",
            ChangeKind::Revert => "revert",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Create,
            Self::Update,
            Self::Delete,
            Self::Reset,
            Self::Revert,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

enum Change {
    Replace(Value),
    Merge(Value),
    Remove,
}

struct Op {
    key: Key,
    change: Change,
    expect: Option<Expect>,
}

/// Which keys a write touches.
enum Target {
    Keys(Vec<Op>),
    /// Every key the user has in the scope, removed.
    WholeScope,
}

/// How the history names the changes of one write.
#[derive(Clone, Copy)]
struct Kinds {
    /// For a value written; `None` means create or update as it happens.
    write: Option<ChangeKind>,
    removal: ChangeKind,
}

const PLAIN: Kinds = Kinds {
    write: None,
    removal: ChangeKind::Delete,
};

/// What one write did to one key.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub key: String,
    pub before: Option<Setting>,
    pub after: Option<Setting>,
}

/// The columns of a setting's primary key, which every upsert conflicts on.
const PRIMARY_KEY: [setting::Column; 3] = [
    setting::Column::UserId,
    setting::Column::Scope,
    setting::Column::Key,
];

/// How often a write is retried when another writer created one of its keys meanwhile.
const WRITE_ATTEMPTS: usize = 5;

enum WriteError {
    /// Another writer created one of the keys after it was read.
    Raced,
    Failed(Error),
}

impl<E: Into<Error>> From<E> for WriteError {
    fn from(err: E) -> Self {
        WriteError::Failed(err.into())
    }
}

impl Store {
    /// Creates or replaces one setting; true when it created the key.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn set(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        key: &Key,
        value: Value,
        expect: Option<Expect>,
    ) -> Result<(Setting, bool)> {
        let op = Op {
            key: key.clone(),
            change: Change::Replace(value),
            expect,
        };
        let outcome = self
            .write(origin, user_id, scope, Target::Keys(vec![op]), PLAIN, None)
            .await?;
        written(outcome)
    }

    /// Deletes one setting; false when there was none.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn delete(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        key: &Key,
        expect: Option<Expect>,
    ) -> Result<bool> {
        let op = Op {
            key: key.clone(),
            change: Change::Remove,
            expect,
        };
        let outcome = self
            .write(origin, user_id, scope, Target::Keys(vec![op]), PLAIN, None)
            .await?;
        Ok(outcome.iter().any(|o| o.before.is_some()))
    }

    /// Applies an RFC 7386 merge patch whose members are keys, all in one transaction, and
    /// returns the settings it created or changed (not those it removed), ordered by key.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn apply_patch(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        patch: Value,
        preconditions: &Preconditions,
    ) -> Result<Vec<Setting>> {
        let expected = &preconditions.versions;
        let Value::Object(members) = patch else {
            return Err(Error::bad_input(
                "patch",
                "type",
                "the patch must be a JSON object whose members are setting keys",
            ));
        };
        if let Some(stray) = expected
            .keys()
            .find(|key| !members.contains_key(key.as_str()))
        {
            return Err(Error::bad_input(
                "expectedVersions",
                "keyInPatch",
                format!("`{stray}` has an expected version but is not in the patch"),
            ));
        }
        let ops = members
            .into_iter()
            .map(|(key, change)| {
                let expect = expected.get(&key).map(|&version| match version {
                    0 => Expect::Absent,
                    version => Expect::Version(version),
                });
                Ok(Op {
                    key: Key::parse(key, "patch")?,
                    change: Change::Merge(change),
                    expect,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if ops.is_empty() && preconditions.document.is_none() {
            return Ok(Vec::new());
        }
        let outcome = self
            .write(
                origin,
                user_id,
                scope,
                Target::Keys(ops),
                PLAIN,
                preconditions.document.as_ref(),
            )
            .await?;
        let mut settings: Vec<Setting> = outcome.into_iter().filter_map(|o| o.after).collect();
        settings.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(settings)
    }

    /// Removes the user's own values in `scope` (only `keys`, when given); returns how many.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn reset(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        keys: Option<&[Key]>,
    ) -> Result<usize> {
        let target = match keys {
            None => Target::WholeScope,
            Some(keys) => Target::Keys(
                keys.iter()
                    .map(|key| Op {
                        key: key.clone(),
                        change: Change::Remove,
                        expect: None,
                    })
                    .collect(),
            ),
        };
        let kinds = Kinds {
            write: None,
            removal: ChangeKind::Reset,
        };
        let outcome = self
            .write(origin, user_id, scope, target, kinds, None)
            .await?;
        Ok(outcome.iter().filter(|o| o.before.is_some()).count())
    }

    /// Writes the value a setting had at `to_version` as a new version.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn revert(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        key: &Key,
        to_version: i32,
    ) -> Result<Setting> {
        let old = setting_change::Entity::find()
            .filter(setting_change::Column::UserId.eq(user_id))
            .filter(setting_change::Column::Scope.eq(scope.as_str()))
            .filter(setting_change::Column::Key.eq(key.as_str()))
            .filter(setting_change::Column::Version.eq(to_version))
            .filter(setting_change::Column::NewValue.is_not_null())
            .order_by_desc(setting_change::Column::Id)
            .one(&self.db)
            .await?
            .and_then(|change| change.new_value)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "the history of `{}` has no version {to_version}",
                    key.as_str()
                ))
            })?;
        let op = Op {
            key: key.clone(),
            change: Change::Replace(old),
            expect: None,
        };
        let kinds = Kinds {
            write: Some(ChangeKind::Revert),
            removal: ChangeKind::Delete,
        };
        let outcome = self
            .write(origin, user_id, scope, Target::Keys(vec![op]), kinds, None)
            .await?;
        Ok(written(outcome)?.0)
    }

    async fn write(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        target: Target,
        kinds: Kinds,
        document: Option<&DocumentCheck>,
    ) -> Result<Vec<Outcome>> {
        let mut attempt = 1;
        loop {
            match self
                .try_write(origin, user_id, scope, &target, kinds, document)
                .await
            {
                Ok(outcome) => {
                    self.publish(origin, user_id, scope, kinds, &outcome);
                    return Ok(outcome);
                }
                Err(WriteError::Failed(err)) => return Err(err),
                Err(WriteError::Raced) if attempt < WRITE_ATTEMPTS => attempt += 1,
                Err(WriteError::Raced) => {
                    return Err(Error::Conflict {
                        message: "the settings kept changing during the write; retry".into(),
                        current_version: None,
                    });
                }
            }
        }
    }

    /// One attempt: read and lock the current rows, compute every new value in memory, then one
    /// DELETE, one insert of the keys created, one upsert of the keys updated and one history
    /// insert. A key created meanwhile by another writer is not inserted again, which makes the
    /// attempt roll back as `Raced`; rows that existed are locked and cannot change under us,
    /// and the upsert still replaces a row only at the version that was read.
    async fn try_write(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        target: &Target,
        kinds: Kinds,
        document: Option<&DocumentCheck>,
    ) -> Result<Vec<Outcome>, WriteError> {
        if let Some((key, value)) = self.single_replacement(scope, target, document) {
            return self
                .try_replace(origin, user_id, scope, key, value, kinds)
                .await;
        }
        let txn = self.db.begin().await?;
        let current: HashMap<String, setting::Model> = setting::Entity::find()
            .filter(of_user(user_id, scope))
            .apply_if(locked_keys(target, document), |query, keys| {
                query.filter(setting::Column::Key.is_in(keys))
            })
            .lock_exclusive()
            .all(&txn)
            .await?
            .into_iter()
            .map(|row| (row.key.clone(), row))
            .collect();
        if let Some(check) = document {
            let tag = document_tag(
                current
                    .values()
                    .filter(|row| check.covers(&row.key))
                    .map(|row| (row.key.as_str(), row.version)),
            );
            if tag != check.tag {
                return Err(WriteError::Failed(stale_document()));
            }
        }

        let whole_scope: Vec<Op>;
        let ops = match target {
            Target::Keys(ops) => ops,
            Target::WholeScope => {
                whole_scope = current
                    .keys()
                    .map(|key| {
                        Ok(Op {
                            key: Key::parse(key.as_str(), "key")?,
                            change: Change::Remove,
                            expect: None,
                        })
                    })
                    .collect::<Result<_>>()?;
                &whole_scope
            }
        };

        let now = now();
        let correlation_id = crate::telemetry::correlation_id();
        let history =
            |kind: ChangeKind, key: &Key, version: i32, old: Option<Value>, new: Option<Value>| {
                setting_change::ActiveModel {
                    id: NotSet,
                    user_id: Set(user_id.to_owned()),
                    scope: Set(scope.as_str().to_owned()),
                    key: Set(key.as_str().to_owned()),
                    kind: Set(kind.as_str().to_owned()),
                    version: Set(version),
                    old_value: Set(old),
                    new_value: Set(new),
                    actor: Set(origin.actor.clone()),
                    interface: Set(origin.interface.to_owned()),
                    correlation_id: Set(correlation_id.clone()),
                    changed_at: Set(now),
                }
            };
        let last_versions = self
            .last_versions(&txn, user_id, scope, ops, &current)
            .await?;
        let mut removals = Vec::new();
        // Keys created and keys updated are written apart: a created key must never replace a
        // row that another writer created meanwhile, whatever version each side computed.
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        let mut changes = Vec::new();
        let mut outcomes = Vec::new();
        for op in ops {
            let existing = current.get(op.key.as_str());
            check_expectation(&op.key, op.expect, existing)?;
            let new_value = match &op.change {
                Change::Replace(value) => Some(value.clone()),
                Change::Merge(patch) => merge_patch(existing.map(|row| row.value.clone()), patch),
                Change::Remove => None,
            };
            match (new_value, existing) {
                (None, None) => {}
                (None, Some(row)) => {
                    removals.push(op.key.as_str());
                    changes.push(history(
                        kinds.removal,
                        &op.key,
                        row.version,
                        Some(row.value.clone()),
                        None,
                    ));
                    outcomes.push(Outcome {
                        key: row.key.clone(),
                        before: Some(row.clone().into()),
                        after: None,
                    });
                }
                (Some(value), existing) => {
                    self.check_value(op.key.as_str(), &value)?;
                    let version = match existing {
                        None => last_versions.get(op.key.as_str()).map_or(1, |v| v + 1),
                        Some(row) => row.version.checked_add(1).ok_or_else(|| {
                            Error::internal(anyhow::anyhow!(
                                "`{}` reached the largest version",
                                row.key
                            ))
                        })?,
                    };
                    let kind = kinds.write.unwrap_or(if existing.is_some() {
                        ChangeKind::Update
                    } else {
                        ChangeKind::Create
                    });
                    changes.push(history(
                        kind,
                        &op.key,
                        version,
                        existing.map(|row| row.value.clone()),
                        Some(value.clone()),
                    ));
                    let row = setting::ActiveModel {
                        user_id: Set(user_id.to_owned()),
                        scope: Set(scope.as_str().to_owned()),
                        key: Set(op.key.as_str().to_owned()),
                        value: Set(value),
                        version: Set(version),
                        // Kept from the stored row on conflict: the upsert does not update it.
                        created_at: Set(now),
                        updated_at: Set(now),
                    };
                    match existing {
                        None => creates.push(row),
                        Some(_) => updates.push(row),
                    }
                    outcomes.push(Outcome {
                        key: op.key.as_str().to_owned(),
                        before: existing.map(|row| row.clone().into()),
                        after: None,
                    });
                }
            }
        }

        if !removals.is_empty() {
            setting::Entity::delete_many()
                .filter(of_user(user_id, scope))
                .filter(setting::Column::Key.is_in(removals))
                .exec(&txn)
                .await?;
        }
        let mut saved = Vec::new();
        if !creates.is_empty() {
            let expected = creates.len();
            let created = setting::Entity::insert_many(creates)
                .on_conflict(OnConflict::columns(PRIMARY_KEY).do_nothing().to_owned())
                .exec_with_returning(&txn)
                .await;
            match created {
                Ok(rows) if rows.len() == expected => saved.extend(rows),
                // Another writer created one of the keys after it was read.
                Ok(_) | Err(DbErr::RecordNotInserted) => return Err(WriteError::Raced),
                Err(err) => return Err(err.into()),
            }
        }
        if !updates.is_empty() {
            let expected = updates.len();
            let version = setting::Column::Version;
            let updated = setting::Entity::insert_many(updates)
                .on_conflict(
                    OnConflict::columns(PRIMARY_KEY)
                        .update_columns([
                            setting::Column::Value,
                            version,
                            setting::Column::UpdatedAt,
                        ])
                        .action_and_where(
                            Expr::col((setting::Entity, version))
                                .add(1)
                                .eq(Expr::col((Alias::new("excluded"), version))),
                        )
                        .to_owned(),
                )
                .exec_with_returning(&txn)
                .await?;
            // The rows are locked by this transaction: a mismatch means a bug, not a race, but
            // starting over is still the safe answer.
            if updated.len() != expected {
                return Err(WriteError::Raced);
            }
            saved.extend(updated);
        }
        let mut saved: HashMap<String, Setting> = saved
            .into_iter()
            .map(|row| (row.key.clone(), Setting::from(row)))
            .collect();
        for outcome in &mut outcomes {
            if let Some(setting) = saved.remove(&outcome.key) {
                outcome.after = Some(setting);
            }
        }
        if scope.as_str().is_empty()
            && let Some(locale) = outcomes.iter().find(|o| o.key == LOCALE_KEY)
        {
            self.mirror_locale(&txn, user_id, locale.after.as_ref(), now)
                .await?;
        }
        if !changes.is_empty() {
            setting_change::Entity::insert_many(changes)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(outcomes)
    }
}

impl Store {
    /// Tells subscribers what a committed write changed.
    fn publish(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        kinds: Kinds,
        outcomes: &[Outcome],
    ) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        for outcome in outcomes {
            let (kind, version, changed_at) = match (&outcome.before, &outcome.after) {
                (_, None) => (
                    kinds.removal,
                    outcome.before.as_ref().map_or(0, |s| s.version),
                    now(),
                ),
                (None, Some(after)) => (
                    kinds.write.unwrap_or(ChangeKind::Create),
                    after.version,
                    after.updated_at,
                ),
                (Some(_), Some(after)) => (
                    kinds.write.unwrap_or(ChangeKind::Update),
                    after.version,
                    after.updated_at,
                ),
            };
            // No receiver left is not an error: nobody is listening.
            let _ = self.changes.send(Arc::new(ChangeEvent {
                user_id: user_id.to_owned(),
                scope: scope.as_str().to_owned(),
                key: outcome.key.clone(),
                kind,
                version,
                setting: outcome.after.clone(),
                actor: origin.actor.clone(),
                interface: origin.interface,
                changed_at,
            }));
        }
    }
}

impl Store {
    /// The write that [`Store::try_replace`] can make in one statement: one key replaced by a
    /// value that does not depend on the stored one, without preconditions, on PostgreSQL
    /// (SQLite cannot write inside a `WITH`), and not the `locale` that the users table mirrors.
    fn single_replacement<'a>(
        &self,
        scope: &Scope,
        target: &'a Target,
        document: Option<&DocumentCheck>,
    ) -> Option<(&'a Key, &'a Value)> {
        let Target::Keys(ops) = target else {
            return None;
        };
        let [op] = ops.as_slice() else {
            return None;
        };
        let Change::Replace(value) = &op.change else {
            return None;
        };
        let mirrored = scope.as_str().is_empty() && op.key.as_str() == LOCALE_KEY;
        let simple = op.expect.is_none() && document.is_none() && !mirrored;
        (simple && self.backend() == DbBackend::Postgres).then_some((&op.key, value))
    }

    /// Replaces one setting in a single autocommitted statement: lock and read the stored row,
    /// upsert guarded by the version read, append the history row. One round trip instead of
    /// the five of a transaction, with the same guarantees: a row created by another writer
    /// between the read and the upsert makes the upsert write nothing, which is `Raced`.
    async fn try_replace(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        key: &Key,
        value: &Value,
        kinds: Kinds,
    ) -> Result<Vec<Outcome>, WriteError> {
        self.check_value(key.as_str(), value)?;
        let now = now();
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            REPLACE_ONE_SQL,
            [
                user_id.into(),
                scope.as_str().into(),
                key.as_str().into(),
                value.clone().into(),
                now.into(),
                origin.actor.as_str().into(),
                origin.interface.into(),
                crate::telemetry::correlation_id().into(),
                kinds.write.map(ChangeKind::as_str).into(),
            ],
        );
        let Some(row) = self.db.query_one_raw(statement).await? else {
            return Err(WriteError::Raced);
        };
        let after = Setting {
            key: row.try_get("", "key")?,
            scope: row.try_get("", "scope")?,
            value: row.try_get("", "value")?,
            version: row.try_get("", "version")?,
            created_at: row.try_get("", "created_at")?,
            updated_at: row.try_get("", "updated_at")?,
        };
        let before = match row.try_get::<Option<i32>>("", "old_version")? {
            None => None,
            Some(version) => Some(Setting {
                version,
                value: row.try_get("", "old_value")?,
                updated_at: row.try_get("", "old_updated_at")?,
                ..after.clone()
            }),
        };
        Ok(vec![Outcome {
            key: after.key.clone(),
            before,
            after: Some(after),
        }])
    }
}

impl Store {
    /// The last version that the history records for each key the write creates: a key that
    /// is written again after a delete goes on from there, so that a version, and an entity
    /// tag made of versions, never names two different values.
    async fn last_versions(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        user_id: &str,
        scope: &Scope,
        ops: &[Op],
        current: &HashMap<String, setting::Model>,
    ) -> Result<HashMap<String, i32>> {
        let created: Vec<&str> = ops
            .iter()
            .filter(|op| !matches!(op.change, Change::Remove))
            .map(|op| op.key.as_str())
            .filter(|key| !current.contains_key(*key))
            .collect();
        if created.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, Option<i32>)> = setting_change::Entity::find()
            .select_only()
            .column(setting_change::Column::Key)
            .column_as(setting_change::Column::Version.max(), "last_version")
            .filter(setting_change::Column::UserId.eq(user_id))
            .filter(setting_change::Column::Scope.eq(scope.as_str()))
            .filter(setting_change::Column::Key.is_in(created))
            .group_by(setting_change::Column::Key)
            .into_tuple()
            .all(txn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, version)| Some((key, version?)))
            .collect())
    }
}

/// The statement of [`Store::try_replace`]. Parameters: user, scope, key, value, now, actor,
/// interface, correlation id, and the history kind (null: `create` or `update` as it happens).
const REPLACE_ONE_SQL: &str = r#"
WITH old AS (
    SELECT value, version, updated_at FROM settings
    WHERE user_id = $1 AND scope = $2 AND key = $3
    FOR UPDATE
), saved AS (
    INSERT INTO settings AS s (user_id, scope, key, value, version, created_at, updated_at)
    -- A key written again after a delete goes on from the last version in its history.
    VALUES ($1, $2, $3, $4,
        COALESCE(
            (SELECT version FROM old),
            (SELECT MAX(version) FROM setting_changes
             WHERE user_id = $1 AND scope = $2 AND key = $3),
            0) + 1,
        $5, $5)
    ON CONFLICT (user_id, scope, key) DO UPDATE
    SET value = excluded.value, version = s.version + 1, updated_at = excluded.updated_at
    WHERE s.version = (SELECT version FROM old)
    RETURNING s.key, s.scope, s.value, s.version, s.created_at, s.updated_at
), logged AS (
    INSERT INTO setting_changes
        (user_id, scope, key, kind, version, old_value, new_value, actor, interface,
         correlation_id, changed_at)
    SELECT $1, $2, $3,
        COALESCE($9, CASE WHEN old.version IS NULL THEN 'create' ELSE 'update' END),
        saved.version, old.value, saved.value, $6, $7, $8, $5
    FROM saved LEFT JOIN old ON TRUE
)
SELECT saved.key, saved.scope, saved.value, saved.version, saved.created_at, saved.updated_at,
    old.version AS old_version, old.value AS old_value, old.updated_at AS old_updated_at
FROM saved LEFT JOIN old ON TRUE
"#;

/// The keys a write locks: those it changes and those its document precondition covers;
/// `None` locks every key of the scope.
fn locked_keys<'a>(
    target: &'a Target,
    document: Option<&'a DocumentCheck>,
) -> Option<Vec<&'a str>> {
    let Target::Keys(ops) = target else {
        return None;
    };
    let mut keys: Vec<&str> = ops.iter().map(|op| op.key.as_str()).collect();
    match document {
        None => {}
        Some(DocumentCheck { keys: None, .. }) => return None,
        Some(DocumentCheck {
            keys: Some(covered),
            ..
        }) => keys.extend(covered.iter().map(Key::as_str)),
    }
    Some(keys)
}

impl Store {
    /// Keeps the users table's legacy `locale` column equal to the `locale` setting of the
    /// default scope, in the transaction that changes the setting.
    async fn mirror_locale(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        user_id: &str,
        locale: Option<&Setting>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let locale = match locale.map(|setting| &setting.value) {
            None => None,
            Some(Value::String(text)) if text.chars().count() <= LOCALE_MIRROR_CHARS => {
                Some(text.clone())
            }
            Some(_) => {
                return Err(Error::bad_input(
                    LOCALE_KEY,
                    "legacyLocale",
                    format!(
                        "`{LOCALE_KEY}` must be a string of at most {LOCALE_MIRROR_CHARS} \
                         characters: it is mirrored to the user's legacy locale"
                    ),
                ));
            }
        };
        user::Entity::update_many()
            .col_expr(user::Column::Locale, Expr::value(locale))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::Id.eq(user_id))
            .exec(txn)
            .await?;
        Ok(())
    }
}

fn check_expectation(
    key: &Key,
    expect: Option<Expect>,
    existing: Option<&setting::Model>,
) -> Result<()> {
    let current = existing.map(|row| row.version);
    let message = match (expect, current) {
        (Some(Expect::Version(expected)), Some(actual)) if expected != actual => {
            format!(
                "`{}` is at version {actual}, not the expected version {expected}",
                key.as_str()
            )
        }
        (Some(Expect::Version(expected)), None) => {
            format!(
                "`{}` does not exist, so it is not at the expected version {expected}",
                key.as_str()
            )
        }
        (Some(Expect::Present), None) => format!("`{}` does not exist", key.as_str()),
        (Some(Expect::Absent), Some(actual)) => {
            format!("`{}` already exists (version {actual})", key.as_str())
        }
        _ => return Ok(()),
    };
    Err(Error::PreconditionFailed {
        message,
        current_version: current,
    })
}

/// The setting a one-key write left, and whether the write created it.
fn written(outcome: Vec<Outcome>) -> Result<(Setting, bool)> {
    outcome
        .into_iter()
        .find_map(|o| Some((o.after?, o.before.is_none())))
        .ok_or_else(|| Error::internal(anyhow::anyhow!("a write returned no row")))
}
