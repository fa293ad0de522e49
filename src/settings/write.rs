//! Every change of settings goes through one path: lock the rows, let the planner decide the
//! change, write it and append one history row per changed key, in one transaction; then tell
//! subscribers. On PostgreSQL, replacing one stored key takes the same steps in one statement
//! (`replace_one.rs`), and so does a write that only updates stored keys, planned on the
//! settings as read (`checked_update.rs`).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Statement,
    prelude::Expr,
    sea_query::{Alias, ExprTrait, OnConflict},
};
use serde_json::Value;

use super::{
    ChangeEvent, ChangeKind, Expect, Key, Origin, Scope, Setting, Store,
    model::Outcome,
    plan::{self, Change, Kinds, LocaleMirror, Op, Plan, Target},
    store::{now, of_user},
    tags::DocumentCheck,
};
use crate::{
    entity::{org_default, setting, setting_change, user},
    error::{Error, Result},
};

/// What a patch requires of the stored settings before it applies; nothing is written when a
/// precondition does not hold.
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    /// The version each key of the patch must have; 0 means the key must be absent.
    pub versions: HashMap<String, i32>,
    /// The tag of a set of settings the client last read, such as a REST `If-Match`.
    pub document: Option<DocumentCheck>,
}

/// The columns of a setting's primary key, which every upsert conflicts on.
const PRIMARY_KEY: [setting::Column; 3] = [
    setting::Column::UserId,
    setting::Column::Scope,
    setting::Column::Key,
];

/// How often a write is retried when another writer created one of its keys meanwhile.
const WRITE_ATTEMPTS: usize = 5;

pub(super) enum WriteError {
    /// Another writer created one of the keys after it was read.
    Raced,
    Failed(Error),
}

impl<E: Into<Error>> From<E> for WriteError {
    fn from(err: E) -> Self {
        WriteError::Failed(err.into())
    }
}

/// What a write committed: the expiries it found and recorded, then its own changes.
pub(super) struct Written {
    pub expired: Vec<Outcome>,
    pub outcomes: Vec<Outcome>,
    /// The settings the write left, for the cache, when the write knows them.
    pub after: Option<super::cache::AfterWrite>,
    /// Whether the write's own statement notified the other instances (a shared write).
    pub notified: bool,
}

/// One write as the runner receives it.
pub(super) struct Write<'a> {
    pub origin: &'a Origin,
    pub user_id: &'a str,
    pub scope: &'a Scope,
    pub target: Target,
    pub kinds: Kinds,
    pub document: Option<&'a DocumentCheck>,
}

impl Store {
    /// Creates or replaces one setting; true when it created the key.
    pub async fn set(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        key: &Key,
        value: Value,
        expect: Option<Expect>,
    ) -> Result<(Setting, bool)> {
        self.set_until(origin, user_id, scope, key, value, expect, None)
            .await
    }

    /// [`Store::set`] of a value that expires at `expires_at` (`None`: it does not).
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn set_until(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        key: &Key,
        value: Value,
        expect: Option<Expect>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(Setting, bool)> {
        let op = Op {
            key: key.clone(),
            change: Change::Replace(value),
            expect,
            expires_at,
        };
        let outcome = self
            .write(Write::keys(origin, user_id, scope, vec![op]))
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
            expires_at: None,
        };
        let outcome = self
            .write(Write::keys(origin, user_id, scope, vec![op]))
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
        self.limits().check_key_count("patch", members.len())?;
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
                    expires_at: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if ops.is_empty() && preconditions.document.is_none() {
            return Ok(Vec::new());
        }
        let write = Write {
            document: preconditions.document.as_ref(),
            ..Write::keys(origin, user_id, scope, ops)
        };
        let outcome = self.write(write).await?;
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
                        expires_at: None,
                    })
                    .collect(),
            ),
        };
        let write = Write {
            target,
            kinds: Kinds {
                write: None,
                removal: ChangeKind::Reset,
            },
            ..Write::keys(origin, user_id, scope, Vec::new())
        };
        let outcome = self.write(write).await?;
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
            .one(&*self.db()?)
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
            expires_at: None,
        };
        let write = Write {
            kinds: Kinds {
                write: Some(ChangeKind::Revert),
                removal: ChangeKind::Delete,
            },
            ..Write::keys(origin, user_id, scope, vec![op])
        };
        Ok(written(self.write(write).await?)?.0)
    }

    /// Sets (or with `None` removes) the organisation default of a catalog key; `locked`, it
    /// applies to everyone and users cannot change the key until it is unlocked.
    #[tracing::instrument(skip_all, err(level = "debug", Debug), fields(key = key.as_str()))]
    pub async fn set_org_default(
        &self,
        key: &Key,
        value: Option<Value>,
        locked: bool,
        by: &str,
    ) -> Result<()> {
        if self.catalog().definitions_of(key.as_str()).next().is_none() {
            return Err(Error::NotFound(format!(
                "`{}` is not a catalog key; only catalog keys have organisation defaults",
                key.as_str()
            )));
        }
        let Some(value) = value else {
            if locked {
                return Err(Error::bad_input(
                    "locked",
                    "lockNeedsValue",
                    "a locked key needs an organisation value",
                ));
            }
            org_default::Entity::delete_by_id(key.as_str())
                .exec(&*self.db()?)
                .await?;
            return Ok(());
        };
        self.check_value_everywhere(key.as_str(), &value)?;
        let now = now();
        let row = org_default::ActiveModel {
            key: Set(key.as_str().to_owned()),
            value: Set(value),
            updated_by: Set(by.to_owned()),
            locked: Set(locked),
            created_at: Set(now),
            updated_at: Set(now),
        };
        org_default::Entity::insert(row)
            .on_conflict(
                OnConflict::column(org_default::Column::Key)
                    .update_columns([
                        org_default::Column::Value,
                        org_default::Column::UpdatedBy,
                        org_default::Column::Locked,
                        org_default::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&*self.db()?)
            .await?;
        Ok(())
    }

    /// Runs a write to completion, starting over when another writer created one of its keys
    /// meanwhile, and publishes what it committed.
    pub(super) async fn write(&self, write: Write<'_>) -> Result<Vec<Outcome>> {
        // Until the write has recorded its commit, notices heard for the user wait: a shared
        // statement's own notice may come back before its answer.
        let _writing = self
            .notices
            .as_ref()
            .and(self.cache.as_ref())
            .map(|cache| cache.writing(write.user_id));
        let mut attempt = 1;
        loop {
            match self.try_write(&write).await {
                Ok(written) => {
                    self.publish(&write, &written);
                    return Ok(written.outcomes);
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

    /// One attempt: a one-statement path where one applies (`replace_one.rs`,
    /// `checked_update.rs`); otherwise, or when it wrote nothing, lock and read the current
    /// rows, plan, and carry the plan out in the same transaction.
    async fn try_write(&self, write: &Write<'_>) -> Result<Written, WriteError> {
        if let Some(outcomes) = self.try_replace_one(write).await? {
            return Ok(Written {
                expired: Vec::new(),
                outcomes,
                after: None,
                notified: true,
            });
        }
        if let Some(written) = self.try_checked_update(write).await? {
            return Ok(written);
        }
        let txn = self.begin_write().await?;
        let outcome = self.write_in(&txn, write).await?;
        txn.commit().await?;
        Ok(outcome)
    }

    /// A write inside `txn`, which the caller commits (or, for a dry run, rolls back) and then
    /// publishes: lock and read the rows, record the expiry of those whose value expired,
    /// plan, carry the plan out, check the quotas.
    pub(super) async fn write_in(
        &self,
        txn: &DatabaseTransaction,
        write: &Write<'_>,
    ) -> Result<Written, WriteError> {
        let locked = self.locked_keys(txn, write.scope, &write.target).await?;
        let mut current = self.lock_rows(txn, write).await?;
        let now = now();
        let due: Vec<Setting> = current
            .values()
            .filter(|setting| setting.expired(now))
            .cloned()
            .collect();
        let expired = if due.is_empty() {
            Vec::new()
        } else {
            current.retain(|_, setting| !setting.expired(now));
            self.expire_in(
                txn,
                write.user_id,
                write.scope,
                &write.origin.correlation_id,
                due,
            )
            .await?
        };
        let last_versions = self
            .last_versions(txn, write, plan::created_keys(&write.target, &current))
            .await?;
        let plan = plan::plan(
            plan::Input {
                mirrors_locale: write.scope == &self.locale_scope,
                target: &write.target,
                kinds: write.kinds,
                document: write.document,
                current: &plan::by_key(&current),
                last_versions: &last_versions,
                locked: &locked,
            },
            |key, value| self.check_value(write.scope, key, value),
        )?;
        let growth = plan.growth();
        // Recording history moves the user's feed position, under the user's row lock.
        let user_locked = !plan.history.is_empty();
        let outcomes = self.carry_out(txn, write, plan).await?;
        self.check_quotas(
            txn,
            write.user_id,
            write.scope.as_str(),
            growth,
            user_locked,
        )
        .await?;
        Ok(Written {
            expired,
            outcomes,
            after: None,
            notified: false,
        })
    }

    /// The keys of `target` that the organisation locked in `scope`: catalog keys of the
    /// scope with a locked organisation default. Costs no query when no catalog key is
    /// written.
    async fn locked_keys(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        scope: &Scope,
        target: &Target,
    ) -> Result<HashSet<String>> {
        let catalog = self.catalog();
        let candidates: Vec<&str> = match target {
            Target::Keys(ops) => ops
                .iter()
                .map(|op| op.key.as_str())
                .filter(|key| catalog.get(scope.as_str(), key).is_some())
                .collect(),
            Target::WholeScope => catalog
                .definitions(scope.as_str())
                .into_iter()
                .map(|definition| definition.key.as_str())
                .collect(),
        };
        if candidates.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<String> = org_default::Entity::find()
            .select_only()
            .column(org_default::Column::Key)
            .filter(org_default::Column::Locked.eq(true))
            .filter(org_default::Column::Key.is_in(candidates))
            .into_tuple()
            .all(db)
            .await?;
        Ok(keys.into_iter().collect())
    }

    /// The rows the write touches, locked until the transaction ends, by key.
    async fn lock_rows(
        &self,
        txn: &DatabaseTransaction,
        write: &Write<'_>,
    ) -> Result<HashMap<String, Setting>> {
        let rows = setting::Entity::find()
            .filter(of_user(write.user_id, write.scope))
            .apply_if(
                plan::locked_keys(&write.target, write.document),
                |query, keys| query.filter(setting::Column::Key.is_in(keys)),
            )
            .lock_exclusive()
            .all(txn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.key.clone(), Setting::from(row)))
            .collect())
    }

    /// The last version that the history records for each of `keys`.
    async fn last_versions(
        &self,
        txn: &DatabaseTransaction,
        write: &Write<'_>,
        keys: Vec<&str>,
    ) -> Result<HashMap<String, i32>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, Option<i32>)> = setting_change::Entity::find()
            .select_only()
            .column(setting_change::Column::Key)
            .column_as(setting_change::Column::Version.max(), "last_version")
            .filter(setting_change::Column::UserId.eq(write.user_id))
            .filter(setting_change::Column::Scope.eq(write.scope.as_str()))
            .filter(setting_change::Column::Key.is_in(keys))
            .group_by(setting_change::Column::Key)
            .into_tuple()
            .all(txn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, version)| Some((key, version?)))
            .collect())
    }

    /// Writes a plan: one DELETE, one insert of the keys created, one upsert of the keys
    /// updated, the `locale` mirror and one history insert. A key created meanwhile by another
    /// writer is not inserted again, which makes the attempt roll back as `Raced`; rows that
    /// existed are locked and cannot change under us, and the upsert still replaces a row only
    /// at the version that was read.
    pub(super) async fn carry_out(
        &self,
        txn: &DatabaseTransaction,
        write: &Write<'_>,
        plan: Plan,
    ) -> Result<Vec<Outcome>, WriteError> {
        let Write { user_id, scope, .. } = *write;
        let now = now();
        let row = |row: plan::Row| setting::ActiveModel {
            user_id: Set(user_id.to_owned()),
            scope: Set(scope.as_str().to_owned()),
            key: Set(row.key),
            value: Set(row.value),
            version: Set(row.version),
            expires_at: Set(row.expires_at),
            // Kept from the stored row on conflict: the upsert does not update it.
            created_at: Set(now),
            updated_at: Set(now),
        };
        if !plan.removals.is_empty() {
            setting::Entity::delete_many()
                .filter(of_user(user_id, scope))
                .filter(setting::Column::Key.is_in(plan.removals))
                .exec(txn)
                .await?;
        }
        let mut saved = Vec::new();
        if !plan.creates.is_empty() {
            let expected = plan.creates.len();
            let created = setting::Entity::insert_many(plan.creates.into_iter().map(row))
                .on_conflict(OnConflict::columns(PRIMARY_KEY).do_nothing().to_owned())
                .exec_with_returning(txn)
                .await;
            match created {
                Ok(rows) if rows.len() == expected => saved.extend(rows),
                // Another writer created one of the keys after it was read.
                Ok(_) | Err(DbErr::RecordNotInserted) => return Err(WriteError::Raced),
                Err(err) => return Err(err.into()),
            }
        }
        if !plan.updates.is_empty() {
            let expected = plan.updates.len();
            let version = setting::Column::Version;
            let updated = setting::Entity::insert_many(plan.updates.into_iter().map(row))
                .on_conflict(
                    OnConflict::columns(PRIMARY_KEY)
                        .update_columns([
                            setting::Column::Value,
                            version,
                            setting::Column::UpdatedAt,
                            setting::Column::ExpiresAt,
                        ])
                        .action_and_where(
                            Expr::col((setting::Entity, version))
                                .add(1)
                                .eq(Expr::col((Alias::new("excluded"), version))),
                        )
                        .to_owned(),
                )
                .exec_with_returning(txn)
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
        let mut outcomes = plan.outcomes;
        for outcome in &mut outcomes {
            outcome.after = saved.remove(&outcome.key);
        }
        if let Some(locale) = plan.locale {
            let locale = match locale {
                LocaleMirror::Set(text) => Some(text),
                LocaleMirror::Clear => None,
            };
            user::Entity::update_many()
                .col_expr(user::Column::Locale, Expr::value(locale))
                .col_expr(user::Column::UpdatedAt, Expr::value(now))
                .filter(user::Column::Id.eq(user_id))
                .exec(txn)
                .await?;
        }
        if !plan.history.is_empty() {
            // The feed positions, under the user's row lock until commit: a later position
            // can only commit after this one.
            let first = self
                .log_history(txn, write, plan.history, &outcomes, now)
                .await?
                .ok_or_else(|| {
                    Error::internal(anyhow::anyhow!("a write for a user without a row"))
                })?;
            for (offset, outcome) in outcomes.iter_mut().enumerate() {
                outcome.position = first + offset as i64;
            }
        }
        Ok(outcomes)
    }

    /// Moves the user's feed position on by one per history row and appends the rows with
    /// their positions and the values of the `outcomes` at their places; the position of the
    /// first row, `None` when the user has no row. One statement on PostgreSQL, two on SQLite
    /// (which cannot write inside a `WITH`).
    async fn log_history(
        &self,
        txn: &DatabaseTransaction,
        write: &Write<'_>,
        history: Vec<plan::HistoryRow>,
        outcomes: &[Outcome],
        now: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        let Write {
            origin,
            user_id,
            scope,
            ..
        } = *write;
        // The plan pushes each history row with its outcome.
        debug_assert_eq!(history.len(), outcomes.len());
        let count = history.len() as i64;
        if self.backend() == DbBackend::Postgres {
            // Each value in a one-element array, so that a JSON null stays apart from none.
            let rows: Vec<Value> = history
                .into_iter()
                .zip(outcomes)
                .enumerate()
                .map(|(offset, (h, outcome))| {
                    let (old, new) = values(outcome);
                    serde_json::json!({
                        "key": h.key,
                        "kind": h.kind.as_str(),
                        "version": h.version,
                        "old": old.map(|value| [value]),
                        "new": new.map(|value| [value]),
                        "offset": offset as i64 + 1,
                    })
                })
                .collect();
            let statement = Statement::from_sql_and_values(
                DbBackend::Postgres,
                LOG_HISTORY_SQL,
                [
                    user_id.into(),
                    count.into(),
                    scope.as_str().into(),
                    origin.actor.as_str().into(),
                    origin.interface.into(),
                    origin.correlation_id.as_str().into(),
                    now.into(),
                    Value::Array(rows).into(),
                ],
            );
            let row = txn.query_one_raw(statement).await?;
            return Ok(match row {
                Some(row) => row.try_get::<Option<i64>>("", "first")?,
                None => None,
            });
        }
        let bumped = user::Entity::update_many()
            .col_expr(
                user::Column::FeedPosition,
                Expr::col(user::Column::FeedPosition).add(count),
            )
            .filter(user::Column::Id.eq(user_id))
            .exec_with_returning(txn)
            .await?;
        let Some(first) = bumped.first().map(|user| user.feed_position - count + 1) else {
            return Ok(None);
        };
        let rows = history
            .into_iter()
            .zip(outcomes)
            .enumerate()
            .map(|(offset, (h, outcome))| {
                let (old, new) = values(outcome);
                setting_change::ActiveModel {
                    id: NotSet,
                    user_id: Set(user_id.to_owned()),
                    scope: Set(scope.as_str().to_owned()),
                    key: Set(h.key),
                    kind: Set(h.kind.as_str().to_owned()),
                    version: Set(h.version),
                    old_value: Set(old.cloned()),
                    new_value: Set(new.cloned()),
                    actor: Set(origin.actor.clone()),
                    interface: Set(origin.interface.to_owned()),
                    correlation_id: Set(origin.correlation_id.clone()),
                    changed_at: Set(now),
                    position: Set(Some(first + offset as i64)),
                }
            });
        setting_change::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
        Ok(Some(first))
    }

    /// Tells subscribers what a committed write changed: first the expiries it recorded.
    pub(super) fn publish(&self, write: &Write<'_>, written: &Written) {
        if !written.expired.is_empty() {
            let origin = super::expiry::origin(&write.origin.correlation_id);
            let expiry = Write {
                origin: &origin,
                kinds: super::expiry::KINDS,
                ..Write::keys(&origin, write.user_id, write.scope, Vec::new())
            };
            self.publish_outcomes(&expiry, &written.expired, None, false);
        }
        let after = written.after.as_ref();
        self.publish_outcomes(write, &written.outcomes, after, written.notified);
    }

    /// Tells subscribers what a committed write changed; `after`: the settings it left;
    /// `notified`: whether its statement notified the other instances.
    fn publish_outcomes(
        &self,
        write: &Write<'_>,
        outcomes: &[Outcome],
        after: Option<&super::cache::AfterWrite>,
        notified: bool,
    ) {
        if let Some(cache) = &self.cache
            && !outcomes.is_empty()
        {
            cache.written(write.user_id, write.scope.as_str(), after);
        }
        if let Some(last) = outcomes.iter().map(|outcome| outcome.position).max() {
            let scope = write.scope.as_str();
            if notified {
                self.notified_other_instances(write.user_id, scope, last);
            } else {
                self.notify_other_instances(write.user_id, scope, last);
            }
        }
        for outcome in outcomes {
            let (kind, version, changed_at) = match (&outcome.before, &outcome.after) {
                (_, None) => (
                    write.kinds.removal,
                    outcome.before.as_ref().map_or(0, |s| s.version),
                    now(),
                ),
                (before, Some(after)) => (
                    write.kinds.of_write(before.is_some()),
                    after.version,
                    after.updated_at,
                ),
            };
            self.hub.publish_with(write.user_id, outcome.position, || {
                Arc::new(ChangeEvent {
                    position: outcome.position,
                    user_id: write.user_id.to_owned(),
                    scope: write.scope.as_str().to_owned(),
                    key: outcome.key.clone(),
                    kind,
                    version,
                    setting: outcome.after.clone(),
                    actor: write.origin.actor.clone(),
                    interface: write.origin.interface.to_owned(),
                    changed_at,
                })
            });
        }
    }
}

impl<'a> Write<'a> {
    /// A plain write of `ops`: no document precondition, created or updated as it happens.
    pub(super) fn keys(
        origin: &'a Origin,
        user_id: &'a str,
        scope: &'a Scope,
        ops: Vec<Op>,
    ) -> Self {
        Write {
            origin,
            user_id,
            scope,
            target: Target::Keys(ops),
            kinds: Kinds::PLAIN,
            document: None,
        }
    }
}

/// The old and new values of a change, as its history row records them: the setting
/// before, and as saved (none for a removal).
fn values(outcome: &Outcome) -> (Option<&Value>, Option<&Value>) {
    let before = outcome.before.as_ref().map(|s| &s.value);
    (before, outcome.after.as_ref().map(|s| &s.value))
}

/// The setting a one-key write left, and whether the write created it.
fn written(outcome: Vec<Outcome>) -> Result<(Setting, bool)> {
    outcome
        .into_iter()
        .find_map(|o| Some((o.after?, o.before.is_none())))
        .ok_or_else(|| Error::internal(anyhow::anyhow!("a write returned no row")))
}

/// The statement of [`Store::log_history`] on PostgreSQL. Parameters: user, how many rows,
/// scope, actor, interface, correlation id, when, and the rows as a JSON array of objects with
/// `key`, `kind`, `version`, `old` and `new` (each value alone in an array, or null for none)
/// and `offset` (1 for the first row). No row is written when the user has none.
const LOG_HISTORY_SQL: &str = r#"
WITH bump AS (
    UPDATE users SET feed_position = feed_position + $2 WHERE id = $1
    RETURNING feed_position
), logged AS (
    INSERT INTO setting_changes
        (user_id, scope, key, kind, version, old_value, new_value, actor, interface,
         correlation_id, changed_at, position)
    SELECT $1, $3, h.key, h.kind, h.version, h.old -> 0, h.new -> 0, $4, $5, $6, $7,
        bump.feed_position - $2 + h.offset
    FROM bump, jsonb_to_recordset($8::jsonb)
        AS h(key text, kind text, version integer, old jsonb, new jsonb, "offset" bigint)
    RETURNING position
)
SELECT min(position) AS first FROM logged
"#;
