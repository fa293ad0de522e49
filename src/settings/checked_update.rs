//! The PostgreSQL path for writes that only update stored keys, such as most merge patches:
//! the write is planned on the user's settings as last read (from the cache, or in a read
//! shared with other users' reads), then written in one statement, shared with other users'
//! writes (`grouped_write.rs`), that applies only if every key is still at the version read,
//! unexpired, not locked by the organisation and within the byte quota. Otherwise it writes
//! nothing, and the write takes the transaction, which locks the rows and plans again. A
//! version names one value of its key (versions never repeat, see `plan::next_version`), so a
//! plan made on versions that are still current is the plan the transaction would make.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use sea_orm::DbBackend;
use serde_json::Value;

use super::{
    Setting, Store,
    cache::{AfterWrite, Snapshot},
    grouped_write::{Shared, notified_sql, saved_setting},
    model::Outcome,
    plan::{self, ByKey, Change, LOCALE_KEY, Op, Target},
    store::now,
    write::{Write, WriteError, Written},
};
use crate::error::Error;

impl Store {
    /// Writes `write` in one statement where that path applies and every key it names is still
    /// as read; `None` when it does not apply or nothing was written.
    pub(super) async fn try_checked_update(
        &self,
        write: &Write<'_>,
    ) -> Result<Option<Written>, WriteError> {
        let Some(ops) = self.checked_update_ops(write) else {
            return Ok(None);
        };
        let listed = self.listed(write.user_id, write.scope, None).await?;
        let current: ByKey<&str, &Setting> = listed
            .iter()
            .filter(|setting| ops.iter().any(|op| op.key.as_str() == setting.key))
            .map(|setting| (setting.key.as_str(), setting))
            .collect();
        // A key without a row, or named twice.
        if current.len() != ops.len() {
            return Ok(None);
        }
        let (no_keys, no_versions) = (HashSet::new(), HashMap::new());
        let planned = plan::plan(
            plan::Input {
                mirrors_locale: write.scope == &self.locale_scope,
                target: &write.target,
                kinds: write.kinds,
                document: None,
                current: &current,
                last_versions: &no_versions,
                // The statement leaves a write of a locked key alone, and the transaction
                // then refuses it.
                locked: &no_keys,
            },
            |key, value| self.check_value(write.scope, key, value),
        );
        // A refusal is decided again on the locked rows: what was read may be out of date.
        let Ok(plan) = planned else {
            return Ok(None);
        };
        // Every key updated, none removed.
        if plan.updates.len() != ops.len() || plan.locale.is_some() {
            return Ok(None);
        }
        let catalog = self.catalog();
        let (origin, now) = (write.origin, now());
        let growth = plan.growth().bytes;
        let fields = WriteInput {
            user_id: write.user_id,
            scope: write.scope.as_str(),
            keys: plan.updates.len(),
            now,
            actor: &origin.actor,
            interface: origin.interface,
            correlation_id: &origin.correlation_id,
            quota: self.quotas().bytes.map(|q| q.min(i64::MAX as u64) as i64),
            grows: growth > 0,
        };
        // With only updates, the plan's history rows are its rows, in the order of its
        // outcomes, which is the order of their feed positions.
        let mut input = String::new();
        for (at, (row, history)) in plan.updates.iter().zip(&plan.history).enumerate() {
            let key = KeyInput {
                user_id: write.user_id,
                key: &row.key,
                version: current[row.key.as_str()].version,
                value: &row.value,
                expires_at: row.expires_at,
                kind: history.kind.as_str(),
                offset: at as i64 + 1,
                lockable: catalog.get(write.scope.as_str(), &row.key).is_some(),
            };
            if at > 0 {
                input.push(',');
            }
            let key = key
                .to_json()
                .map_err(|err| Error::internal(anyhow::anyhow!(err)))?;
            input.push_str(&key);
        }
        let fields = fields
            .to_json()
            .map_err(|err| Error::internal(anyhow::anyhow!(err)))?;
        // Held while the statement is queued and in flight, as a direct query holds it.
        let _db = self.db()?;
        let generation = self
            .cache
            .as_ref()
            .map(|cache| cache.generation(write.user_id));
        let rows = self
            .shared_write(Shared::Update, write.user_id, Some(fields), input)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        // The values written are the plan's; the statement does not send them back.
        let mut sent: ByKey<String, Value> = plan
            .updates
            .into_iter()
            .map(|row| (row.key, row.value))
            .collect();
        let mut saved = ByKey::default();
        for (at, row) in rows.iter().enumerate() {
            let (setting, position) =
                saved_setting(write.user_id, row, at == 0, |key| sent.remove(key))?;
            saved.insert(setting.key.clone(), (setting, position));
        }
        let mut outcomes = plan.outcomes;
        for outcome in &mut outcomes {
            let (after, position) = saved.remove(&outcome.key).ok_or_else(|| {
                Error::internal(anyhow::anyhow!("a checked update returned too few rows"))
            })?;
            outcome.after = Some(after);
            outcome.position = position;
        }
        let after = generation.and_then(|generation| {
            let snapshot = left_by(listed.snapshot(), &outcomes, growth)?;
            Some(AfterWrite {
                generation,
                snapshot,
            })
        });
        Ok(Some(Written {
            expired: Vec::new(),
            outcomes,
            after,
            notified: true,
        }))
    }

    /// The operations of a write this path may take: on PostgreSQL, values written to named
    /// keys without a document precondition, not the `locale` that the users table mirrors,
    /// and not the one-key replacement that `replace_one.rs` writes without reading.
    fn checked_update_ops<'w>(&self, write: &'w Write<'_>) -> Option<&'w [Op]> {
        let Target::Keys(ops) = &write.target else {
            return None;
        };
        let mirrors_locale = write.scope == &self.locale_scope;
        let mirrored = |op: &Op| mirrors_locale && op.key.as_str() == LOCALE_KEY;
        let writes_values = ops
            .iter()
            .all(|op| !matches!(op.change, Change::Remove) && !mirrored(op));
        let applies = self.backend() == DbBackend::Postgres
            && !ops.is_empty()
            && writes_values
            && write.document.is_none()
            && !self.replaces_one(write);
        applies.then_some(ops.as_slice())
    }
}

/// The settings a write of `outcomes` left, if nothing else committed for the user between
/// the read of `read` and the write: its first feed position follows the one read. They are
/// those read with the written ones in place (the write only updates keys that were read),
/// and their values' bytes those read with the write's `growth`.
fn left_by(read: &Snapshot, outcomes: &[Outcome], growth: i64) -> Option<Snapshot> {
    let first = outcomes.iter().map(|outcome| outcome.position).min()?;
    if read.position? != first - 1 {
        return None;
    }
    // The unchanged settings are shared with the read.
    let mut settings = read.settings.as_ref().clone();
    for outcome in outcomes {
        let after = outcome.after.as_ref()?;
        let at = settings.iter().position(|s| s.key == after.key)?;
        settings[at] = Arc::new(after.clone());
    }
    let value_bytes = read
        .value_bytes
        .and_then(|bytes| usize::try_from(bytes as i64 + growth).ok());
    Some(Snapshot {
        settings: Arc::new(settings),
        position: outcomes.iter().map(|outcome| outcome.position).max(),
        value_bytes,
    })
}

/// A user's write: one array of the statement's first parameter ([`UPDATE_MANY_SQL`]).
struct WriteInput<'a> {
    user_id: &'a str,
    scope: &'a str,
    /// How many keys it writes.
    keys: usize,
    now: DateTime<Utc>,
    actor: &'a str,
    interface: &'a str,
    correlation_id: &'a str,
    quota: Option<i64>,
    /// Whether the write adds bytes to the scope: only then may the quota refuse it.
    grows: bool,
}

/// One key of a user's write: one array of the statement's second parameter.
struct KeyInput<'a> {
    /// The write's user.
    user_id: &'a str,
    key: &'a str,
    /// The version read, which the key must still have.
    version: i32,
    value: &'a Value,
    expires_at: Option<DateTime<Utc>>,
    kind: &'a str,
    /// The key's place among the write's history rows, from 1.
    offset: i64,
    lockable: bool,
}

// The statement reads its input by position: PostgreSQL then parses no member names and sorts
// no objects, and takes each field from its array by index.
impl WriteInput<'_> {
    /// The write as [`UPDATE_MANY_SQL`]'s `writes` reads it.
    fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&(
            self.user_id,
            self.scope,
            self.keys,
            self.now,
            self.actor,
            self.interface,
            self.correlation_id,
            self.quota,
            self.grows,
        ))
    }
}

impl KeyInput<'_> {
    /// The key as [`UPDATE_MANY_SQL`]'s `input` reads it.
    fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&(
            self.user_id,
            self.key,
            self.version,
            self.value,
            self.expires_at,
            self.kind,
            self.offset,
            self.lockable,
        ))
    }
}

/// The statement: for each user of the input whose every key is still at the version read
/// (and unexpired), none of them locked (`lockable`: a catalog key, which the organisation
/// may lock) and whose scope stays within its byte `quota` if the write `grows` it, writes
/// each key one version up and appends its history row, with feed positions in the order of
/// the keys' `offset`; for any other user it writes nothing. `$1` is a JSON array of the
/// writes, one array per user: `user_id`, `scope`, `keys` (how many), `now`, `actor`,
/// `interface`, `correlation_id`, `quota` (null for none) and `grows`, in that order. `$2` is
/// a JSON array of the keys written, one array per key: its write's `user_id`, the `key`,
/// `version` (the version read), `value`, `expires_at` (null: never), the history `kind`,
/// `offset` (from 1) and `lockable`. (Two flat arrays, rather than one per user holding its
/// keys: PostgreSQL's estimate of a nested set function's rows makes it read the whole
/// table.) A row is returned, with its `user_id` and without its value (the one sent), for
/// each setting written, in the columns `saved_setting` reads by position; the statement
/// notifies the other instances of each user's writes, at the user's last position
/// (`notified_sql`).
///
/// Every row is locked, in the order of users and keys, before any user's row in `users`: the
/// count of a user's locked rows needs all of them.
///
/// The users ready to write and their feed positions are looked up in JSON objects by user,
/// and the keys joined to their writes once: PostgreSQL estimates one row for a CTE, so it
/// would join two of them by searching one for every row of the other. `ready_users` is
/// `MATERIALIZED`: PostgreSQL inlines a CTE that is named once, and the update would then
/// build the object of the ready users again for every key it writes.
pub(super) const UPDATE_MANY_SQL: &str = concat!(
    r#"
WITH writes AS (
    SELECT w.e ->> 0 AS user_id, w.e ->> 1 AS scope, (w.e ->> 2)::bigint AS keys,
        (w.e ->> 3)::timestamptz AS now, w.e ->> 4 AS actor, w.e ->> 5 AS interface,
        w.e ->> 6 AS correlation_id, (w.e ->> 7)::bigint AS quota, (w.e ->> 8)::boolean AS grows
    FROM jsonb_array_elements($1::text::jsonb) AS w(e)
), input AS MATERIALIZED (
    SELECT k.e ->> 1 AS key, (k.e ->> 2)::integer AS version, k.e -> 3 AS value,
        (k.e ->> 4)::timestamptz AS expires_at, k.e ->> 5 AS kind,
        (k.e ->> 6)::bigint AS "offset", (k.e ->> 7)::boolean AS lockable, w.*
    FROM jsonb_array_elements($2::text::jsonb) AS k(e)
        JOIN writes AS w ON w.user_id = k.e ->> 0
), old AS (
    SELECT s.user_id, s.scope, s.key, s.version, s.value, s.value_bytes,
        i.value AS new_value, i.expires_at, i.kind, i."offset", i.lockable, i.now,
        i.actor, i.interface, i.correlation_id
    FROM settings AS s JOIN input AS i
        ON s.user_id = i.user_id AND s.scope = i.scope AND s.key = i.key
    WHERE s.version = i.version AND (s.expires_at IS NULL OR s.expires_at > i.now)
    ORDER BY s.user_id, s.key
    FOR UPDATE OF s
), tally AS (
    SELECT old.user_id, count(*) AS keys,
        sum(octet_length(old.new_value::text) - old.value_bytes) AS growth,
        bool_or(old.lockable AND EXISTS (
            SELECT 1 FROM org_defaults AS d WHERE d.key = old.key AND d.locked)) AS locked
    FROM old GROUP BY old.user_id
), ready AS (
    SELECT w.user_id, w.scope, w.keys
    FROM writes AS w JOIN tally AS t ON t.user_id = w.user_id
    WHERE t.keys = w.keys AND NOT t.locked
      AND (w.quota IS NULL OR NOT w.grows
           OR (SELECT sum(s.value_bytes) FROM settings AS s
               WHERE s.user_id = w.user_id AND s.scope = w.scope) + t.growth <= w.quota)
), ready_users AS MATERIALIZED (
    SELECT jsonb_object_agg(ready.user_id, true) AS users FROM ready
), saved AS (
    UPDATE settings AS s SET value = old.new_value, version = s.version + 1,
        updated_at = old.now, expires_at = old.expires_at
    FROM old, ready_users AS r
    WHERE (r.users -> old.user_id) IS NOT NULL
      AND s.user_id = old.user_id AND s.scope = old.scope AND s.key = old.key
      AND s.version = old.version
    RETURNING s.user_id, s.key, s.scope, s.value, s.version, s.created_at, s.updated_at,
        s.expires_at, old.value AS old_value, old.kind, old."offset", old.now, old.actor,
        old.interface, old.correlation_id
), bump AS (
    UPDATE users AS u SET feed_position = u.feed_position + r.keys
    FROM ready AS r WHERE u.id = r.user_id
    RETURNING u.id, r.scope, u.feed_position - r.keys AS before, u.feed_position AS last
), positions AS (
    SELECT jsonb_object_agg(bump.id, bump.before) AS before FROM bump
), logged AS (
    INSERT INTO setting_changes
        (user_id, scope, key, kind, version, old_value, new_value, actor, interface,
         correlation_id, changed_at, position)
    SELECT saved.user_id, saved.scope, saved.key, saved.kind, saved.version, saved.old_value,
        saved.value, saved.actor, saved.interface, saved.correlation_id, saved.now,
        (p.before ->> saved.user_id)::bigint + saved."offset"
    FROM saved, positions AS p
), notices AS (
    SELECT json_build_array(bump.id, bump.scope, bump.last)::text AS notice FROM bump
"#,
    notified_sql!(),
    r#"
SELECT saved.user_id, saved.key, saved.scope, saved.version, saved.created_at,
    saved.updated_at, saved.expires_at,
    (p.before ->> saved.user_id)::bigint + saved."offset" AS position
FROM saved, positions AS p
WHERE (SELECT count(*) FROM notified) >= 0
"#
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::settings::value::serialized_len;

    fn setting(key: &str, value: Value, version: i32) -> Setting {
        crate::settings::plan::tests::stored(key, value, version).1
    }

    fn counted(settings: &[Arc<Setting>]) -> usize {
        settings.iter().map(|s| serialized_len(&s.value)).sum()
    }

    #[test]
    fn the_settings_a_write_left_are_those_read_with_the_written_ones_and_their_bytes() {
        let read = vec![
            Arc::new(setting("a", json!({"long": "a value read"}), 1)),
            Arc::new(setting("b", json!(true), 4)),
        ];
        let mut read = Snapshot::new(read, Some(10));
        read.value_bytes = Some(counted(&read.settings));
        let before = read.settings[0].as_ref().clone();
        let after = setting("a", json!(1), 2);
        let growth = serialized_len(&after.value) as i64 - serialized_len(&before.value) as i64;
        let outcome = |position| Outcome {
            key: "a".into(),
            before: Some(before.clone()),
            after: Some(after.clone()),
            position,
        };

        let left = left_by(&read, &[outcome(11)], growth).unwrap();
        assert_eq!(left.settings[0].as_ref(), &after);
        assert!(Arc::ptr_eq(&left.settings[1], &read.settings[1]));
        assert_eq!(left.position, Some(11));
        assert_eq!(left.value_bytes, Some(counted(&left.settings)));
        // Another commit came between the read and the write.
        assert!(left_by(&read, &[outcome(12)], growth).is_none());
    }
}
