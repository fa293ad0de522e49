//! The PostgreSQL one-statement path: replacing one stored setting, the most common write, in
//! one round trip instead of the five of a transaction, with the same guarantees; under load
//! the round trip and the commit are shared with other users' replacements (`batch.rs`). Only the
//! mechanics are here; what the write means (the history kind, the value rules) is decided by
//! the same functions the planner uses. A key without a row takes the transaction, where the
//! planner decides its version.

use chrono::{DateTime, Utc};
use sea_orm::DbBackend;
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
        let input = Input {
            user_id: write.user_id,
            scope: write.scope.as_str(),
            key: key.as_str(),
            value: [value],
            now,
            actor: &origin.actor,
            interface: origin.interface,
            correlation_id: &origin.correlation_id,
            kind: write.kinds.of_write(true).as_str(),
            // Null without a quota: nothing is summed.
            quota: self.quotas().bytes.map(|q| q.min(i64::MAX as u64) as i64),
            expires_at,
            lockable,
        };
        let input = serde_json::to_string(&input)
            .map_err(|err| crate::error::Error::internal(anyhow::anyhow!(err)))?;
        // Held while the statement is queued and in flight, as a direct query holds it.
        let _db = self.db()?;
        let Some(row) = self.replace_queue().replace(write.user_id, input).await? else {
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

/// One replacement as the statement takes it ([`super::batch::REPLACE_MANY_SQL`]).
#[derive(serde::Serialize)]
struct Input<'a> {
    user_id: &'a str,
    scope: &'a str,
    key: &'a str,
    value: [&'a Value; 1],
    now: DateTime<Utc>,
    actor: &'a str,
    interface: &'a str,
    correlation_id: &'a str,
    kind: &'a str,
    quota: Option<i64>,
    expires_at: Option<DateTime<Utc>>,
    lockable: bool,
}
