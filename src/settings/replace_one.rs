//! The PostgreSQL one-statement path: replacing one stored setting, the most common write, in
//! one round trip instead of the five of a transaction, with the same guarantees; under load
//! the round trip and the commit are shared with other users' writes (`grouped_write.rs`).
//! Only the mechanics are here; what the write means (the history kind, the value rules) is
//! decided by the same functions the planner uses. A key without a row takes the
//! transaction, where the planner decides its version.

use chrono::{DateTime, Utc};
use sea_orm::DbBackend;
use serde_json::Value;

use super::{
    Key, Setting, Store,
    grouped_write::{Shared, notified_sql, saved_setting},
    model::Outcome,
    plan::{Change, LOCALE_KEY, Target},
    read::{column, json_column, pg_row},
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
            value,
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
        let input = input
            .to_json()
            .map_err(|err| crate::error::Error::internal(anyhow::anyhow!(err)))?;
        // Held while the statement is queued and in flight, as a direct query holds it.
        let _db = self.db()?;
        let rows = self
            .shared_write(Shared::Replace, write.user_id, None, input)
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        // The statement does not send back the value it was sent.
        let sent = |saved: &str| (saved == key.as_str()).then(|| value.clone());
        let (after, position) = saved_setting(write.user_id, &row, true, sent)?;
        // What it replaced: columns 8 to 11, after those `saved_setting` reads.
        let pg = pg_row(&row)?;
        let before = Setting {
            version: column(pg, 8, true)?,
            value: json_column(pg, 9, true)?,
            updated_at: column(pg, 10, true)?,
            expires_at: column(pg, 11, true)?,
            ..after.clone()
        };
        Ok(Some(vec![Outcome {
            key: after.key.clone(),
            before: Some(before),
            after: Some(after),
            position,
        }]))
    }

    /// Whether `write` takes this path.
    pub(super) fn replaces_one(&self, write: &Write<'_>) -> bool {
        self.single_replacement(write).is_some()
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

/// One replacement as the statement takes it ([`REPLACE_MANY_SQL`]).
struct Input<'a> {
    user_id: &'a str,
    scope: &'a str,
    key: &'a str,
    value: &'a Value,
    now: DateTime<Utc>,
    actor: &'a str,
    interface: &'a str,
    correlation_id: &'a str,
    kind: &'a str,
    quota: Option<i64>,
    expires_at: Option<DateTime<Utc>>,
    lockable: bool,
}

impl Input<'_> {
    /// The replacement as [`REPLACE_MANY_SQL`] reads it: an array, read by position, so that
    /// PostgreSQL parses no member names and sorts no objects.
    fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&(
            self.user_id,
            self.scope,
            self.key,
            self.value,
            self.now,
            self.actor,
            self.interface,
            self.correlation_id,
            self.kind,
            self.quota,
            self.expires_at,
            self.lockable,
        ))
    }
}

/// The statement: replaces each setting the input describes, one version up, and appends its
/// history row, as the top of this file explains. The one parameter is a JSON array of
/// arrays, at most one per user, each with `user_id`, `scope`, `key`, `value`, `now`,
/// `actor`, `interface`, `correlation_id`, the history `kind`, the scope's byte `quota` (null
/// for none), `expires_at` (null: never) and `lockable` (a catalog key, which the
/// organisation may lock), in that order. A row is returned, with its `user_id` and without
/// its new value (the one sent), for each setting replaced, in the columns `saved_setting`
/// reads by position and then what it replaced; none for a key without a row, an
/// expired value, a row changed meanwhile, a locked key or a value that would take the scope
/// past its byte quota. The rows are locked in the order of their users. The statement
/// notifies the other instances of what it replaced (`notified_sql`).
pub(super) const REPLACE_MANY_SQL: &str = concat!(
    r#"
WITH input AS (
    SELECT i.e ->> 0 AS user_id, i.e ->> 1 AS scope, i.e ->> 2 AS key, i.e -> 3 AS value,
        (i.e ->> 4)::timestamptz AS now, i.e ->> 5 AS actor, i.e ->> 6 AS interface,
        i.e ->> 7 AS correlation_id, i.e ->> 8 AS kind, (i.e ->> 9)::bigint AS quota,
        (i.e ->> 10)::timestamptz AS expires_at, (i.e ->> 11)::boolean AS lockable
    FROM jsonb_array_elements($1::text::jsonb) AS i(e)
), old AS (
    SELECT s.user_id, s.scope, s.key, s.value, s.value_bytes, s.version, s.updated_at,
        s.expires_at, i.value AS new_value, i.expires_at AS new_expires_at, i.now,
        i.actor, i.interface, i.correlation_id, i.kind, i.quota, i.lockable
    FROM settings AS s JOIN input AS i
        ON s.user_id = i.user_id AND s.scope = i.scope AND s.key = i.key
    WHERE s.expires_at IS NULL OR s.expires_at > i.now
    ORDER BY s.user_id
    FOR UPDATE OF s
), saved AS (
    UPDATE settings AS s SET value = old.new_value, version = s.version + 1,
        updated_at = old.now, expires_at = old.new_expires_at
    FROM old
    WHERE s.user_id = old.user_id AND s.scope = old.scope AND s.key = old.key
      AND s.version = old.version
      AND NOT (old.lockable AND EXISTS (
          SELECT 1 FROM org_defaults AS d WHERE d.key = old.key AND d.locked))
      AND (old.quota IS NULL
           OR octet_length(old.new_value::text) <= old.value_bytes
           OR (SELECT sum(t.value_bytes) FROM settings AS t
               WHERE t.user_id = old.user_id AND t.scope = old.scope)
              - old.value_bytes + octet_length(old.new_value::text) <= old.quota)
    RETURNING s.user_id, s.key, s.scope, s.value, s.version, s.created_at, s.updated_at,
        s.expires_at, old.version AS old_version, old.value AS old_value,
        old.updated_at AS old_updated_at, old.expires_at AS old_expires_at, old.kind,
        old.now, old.actor, old.interface, old.correlation_id
), bump AS (
    UPDATE users AS u SET feed_position = u.feed_position + 1
    FROM saved WHERE u.id = saved.user_id
    RETURNING u.id, u.feed_position
), logged AS (
    INSERT INTO setting_changes
        (user_id, scope, key, kind, version, old_value, new_value, actor, interface,
         correlation_id, changed_at, position)
    SELECT saved.user_id, saved.scope, saved.key, saved.kind, saved.version, saved.old_value,
        saved.value, saved.actor, saved.interface, saved.correlation_id, saved.now,
        bump.feed_position
    FROM saved JOIN bump ON bump.id = saved.user_id
), notices AS (
    SELECT json_build_array(saved.user_id, saved.scope, bump.feed_position)::text AS notice
    FROM saved JOIN bump ON bump.id = saved.user_id
"#,
    notified_sql!(),
    r#"
SELECT saved.user_id, saved.key, saved.scope, saved.version, saved.created_at,
    saved.updated_at, saved.expires_at, bump.feed_position AS position, saved.old_version,
    saved.old_value, saved.old_updated_at, saved.old_expires_at
FROM saved JOIN bump ON bump.id = saved.user_id
WHERE (SELECT count(*) FROM notified) >= 0
"#
);
