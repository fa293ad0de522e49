//! The PostgreSQL one-statement path: replacing one stored setting, the most common write, in
//! one round trip instead of the five of a transaction, with the same guarantees. Only the
//! mechanics are here; what the write means (the history kind, the value rules) is decided by
//! the same functions the planner uses. A key without a row takes the transaction, where the
//! planner decides its version.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::Value;

use super::{
    Key, Setting, Store,
    model::Outcome,
    plan::{Change, LOCALE_KEY, Target},
    store::now,
    write::{Write, WriteError},
};

impl Store {
    /// Replaces one stored setting in a single autocommitted statement where that path
    /// applies: lock and read the row, update it one version up, append the history row.
    /// `None` when the path does not apply or the key has no row (then nothing was written).
    pub(super) async fn try_replace_one(
        &self,
        write: &Write<'_>,
    ) -> Result<Option<Vec<Outcome>>, WriteError> {
        let Some((key, value, expires_at)) = self.single_replacement(write) else {
            return Ok(None);
        };
        self.check_value(write.scope, key.as_str(), value)?;
        // Only a catalog key can be locked; the statement leaves a locked one alone, and the
        // write then takes the transaction, where the planner refuses it.
        let lockable = self
            .catalog()
            .get(write.scope.as_str(), key.as_str())
            .is_some();
        let (origin, now) = (write.origin, now());
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            REPLACE_ONE_SQL,
            [
                write.user_id.into(),
                write.scope.as_str().into(),
                key.as_str().into(),
                value.clone().into(),
                now.into(),
                origin.actor.as_str().into(),
                origin.interface.into(),
                origin.correlation_id.as_str().into(),
                write.kinds.of_write(true).as_str().into(),
                // NULL without a quota: nothing is summed.
                self.quotas()
                    .bytes
                    .map(|q| q.min(i64::MAX as u64) as i64)
                    .into(),
                expires_at.into(),
                lockable.into(),
            ],
        );
        let Some(row) = self.db()?.query_one_raw(statement).await? else {
            return Ok(None);
        };
        let after = Setting {
            user_id: write.user_id.to_owned(),
            key: row.try_get("", "key")?,
            scope: row.try_get("", "scope")?,
            value: row.try_get("", "value")?,
            version: row.try_get("", "version")?,
            created_at: row.try_get("", "created_at")?,
            updated_at: row.try_get("", "updated_at")?,
            expires_at: row.try_get("", "expires_at")?,
        };
        let position: i64 = row.try_get("", "position")?;
        let before = Setting {
            version: row.try_get("", "old_version")?,
            value: row.try_get("", "old_value")?,
            updated_at: row.try_get("", "old_updated_at")?,
            expires_at: row.try_get("", "old_expires_at")?,
            ..after.clone()
        };
        Ok(Some(vec![Outcome {
            key: after.key.clone(),
            before: Some(before),
            after: Some(after),
            position,
        }]))
    }

    /// The write that fits one statement: one key replaced by a value that does not depend on
    /// the stored one, without preconditions, on PostgreSQL (SQLite cannot write inside a
    /// `WITH`), and not the `locale` that the users table mirrors.
    #[allow(clippy::type_complexity)]
    fn single_replacement<'w>(
        &self,
        write: &'w Write<'_>,
    ) -> Option<(&'w Key, &'w Value, Option<DateTime<Utc>>)> {
        let Target::Keys(ops) = &write.target else {
            return None;
        };
        let [op] = ops.as_slice() else {
            return None;
        };
        let Change::Replace(value) = &op.change else {
            return None;
        };
        let mirrored = write.scope == &self.locale_scope && op.key.as_str() == LOCALE_KEY;
        let simple = op.expect.is_none() && write.document.is_none() && !mirrored;
        (simple && self.backend() == DbBackend::Postgres).then_some((&op.key, value, op.expires_at))
    }
}

/// The statement of [`Store::try_replace_one`]. Parameters: user, scope, key, value, now,
/// actor, interface, correlation id, the history kind, the byte quota of the scope, when
/// the new value expires, and whether the key is a catalog key (which the organisation may
/// lock: a locked one is not replaced here). A row whose value has expired is not replaced
/// here either: the transaction records its expiry first. The
/// row is locked by `old`; the update is guarded by the version read, so it writes nothing
/// (and the statement returns no row) when the row is gone or changed meanwhile, and the
/// write falls back to the transaction. So it does when a larger value would take the scope
/// past its byte quota: the transaction then refuses it (`quota.rs`). The scope's size is
/// summed only for a value that grows, and only under a byte quota, from the sizes kept in
/// `value_bytes`.
const REPLACE_ONE_SQL: &str = r#"
WITH old AS (
    SELECT value, value_bytes, version, updated_at, expires_at FROM settings
    WHERE user_id = $1 AND scope = $2 AND key = $3 AND (expires_at IS NULL OR expires_at > $5)
    FOR UPDATE
), saved AS (
    UPDATE settings AS s SET value = $4, version = s.version + 1, updated_at = $5,
        expires_at = $11
    FROM old
    WHERE s.user_id = $1 AND s.scope = $2 AND s.key = $3 AND s.version = old.version
      AND NOT ($12 AND EXISTS (SELECT 1 FROM org_defaults WHERE key = $3 AND locked))
      AND ($10::bigint IS NULL
           OR octet_length($4::text) <= old.value_bytes
           OR (SELECT sum(value_bytes) FROM settings WHERE user_id = $1 AND scope = $2)
              - old.value_bytes + octet_length($4::text) <= $10)
    RETURNING s.key, s.scope, s.value, s.version, s.created_at, s.updated_at, s.expires_at
), bump AS (
    UPDATE users SET feed_position = feed_position + 1
    WHERE id = $1 AND EXISTS (SELECT 1 FROM saved)
    RETURNING feed_position
), logged AS (
    INSERT INTO setting_changes
        (user_id, scope, key, kind, version, old_value, new_value, actor, interface,
         correlation_id, changed_at, position)
    SELECT $1, $2, $3, $9, saved.version, old.value, saved.value, $6, $7, $8, $5,
        bump.feed_position
    FROM saved, old, bump
)
SELECT saved.key, saved.scope, saved.value, saved.version, saved.created_at, saved.updated_at,
    saved.expires_at, old.version AS old_version, old.value AS old_value,
    old.updated_at AS old_updated_at, old.expires_at AS old_expires_at,
    bump.feed_position AS position
FROM saved, old, bump
"#;
