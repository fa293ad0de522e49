//! Quotas per user and scope: how many keys, and how many bytes of stored JSON text. A write
//! that would leave the scope over a quota, and that adds to it, is refused and writes
//! nothing; a write that shrinks an over-quota scope (after the quota was lowered) still
//! applies.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};

use super::{Store, plan::Plan, value::serialized_len};
use crate::error::{Error, Result};

/// The quotas of one user's scope; `None` is no quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quotas {
    pub keys: Option<u64>,
    pub bytes: Option<u64>,
}

/// How much a plan adds to its scope: keys, and bytes of serialized values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Growth {
    pub keys: i64,
    pub bytes: i64,
}

impl Plan {
    pub(super) fn growth(&self) -> Growth {
        let size = |value: &serde_json::Value| serialized_len(value) as i64;
        let written: i64 = self
            .creates
            .iter()
            .chain(&self.updates)
            .map(|row| size(&row.value))
            .sum();
        let replaced: i64 = self
            .outcomes
            .iter()
            .filter_map(|outcome| outcome.before.as_ref())
            .map(|before| size(&before.value))
            .sum();
        Growth {
            keys: self.creates.len() as i64 - self.removals.len() as i64,
            bytes: written - replaced,
        }
    }
}

/// The sum of a scope's stored values in SQL, as the quota counts them: the bytes of their JSON
/// text. PostgreSQL keeps each row's in `value_bytes`; SQLite's values are text already.
fn stored_bytes_sum_sql(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "sum(value_bytes)",
        _ => "sum(length(CAST(value AS BLOB)))",
    }
}

impl Store {
    /// After a plan was carried out in `txn`, before commit: the quota error when the scope
    /// is now over a quota that the write added to. `user_locked` when `txn` holds the user's
    /// row lock (it moved the user's feed position), which already makes the user's writes
    /// take turns.
    pub(super) async fn check_quotas(
        &self,
        txn: &DatabaseTransaction,
        user_id: &str,
        scope: &str,
        growth: Growth,
        user_locked: bool,
    ) -> Result<()> {
        let quotas = self.quotas();
        let keys_matter = quotas.keys.is_some() && growth.keys > 0;
        let bytes_matter = quotas.bytes.is_some() && growth.bytes > 0;
        if !keys_matter && !bytes_matter {
            return Ok(());
        }
        let backend = self.backend();
        // Growing writes of one user's scope take turns from here to their commit, so that two
        // of them cannot both see room for one: the sum below is a statement of its own, so it
        // sees every write that took its turn before. (SQLite has one writer at a time anyway.)
        if backend == DbBackend::Postgres && !user_locked {
            let lock = Statement::from_sql_and_values(
                backend,
                "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(1) || $2, 0))",
                [user_id.into(), scope.into()],
            );
            txn.execute_raw(lock).await?;
        }
        let sql = format!(
            "SELECT count(*) AS keys, CAST(coalesce({}, 0) AS BIGINT) AS bytes FROM settings \
             WHERE user_id = $1 AND scope = $2",
            stored_bytes_sum_sql(backend)
        );
        let statement =
            Statement::from_sql_and_values(backend, sql, [user_id.into(), scope.into()]);
        let row = txn
            .query_one_raw(statement)
            .await?
            .ok_or_else(|| Error::internal(anyhow::anyhow!("an aggregate returned no row")))?;
        let keys: i64 = row.try_get("", "keys")?;
        let bytes: i64 = row.try_get("", "bytes")?;
        if let Some(quota) = quotas.keys.filter(|_| keys_matter)
            && keys as u64 > quota
        {
            return Err(Error::bad_input(
                "scope",
                "quotaKeys",
                format!(
                    "this write would leave {keys} keys in the scope; a user may keep at most {quota} keys per scope"
                ),
            ));
        }
        if let Some(quota) = quotas.bytes.filter(|_| bytes_matter)
            && bytes as u64 > quota
        {
            return Err(Error::bad_input(
                "scope",
                "quotaBytes",
                format!(
                    "this write would leave {bytes} bytes of values in the scope; a user may keep at most {quota} bytes per scope"
                ),
            ));
        }
        Ok(())
    }
}
