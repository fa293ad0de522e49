//! Reading and pruning the change history of settings.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    Statement, prelude::Expr,
};
use serde_json::Value;

use super::{ChangeKind, Key, Scope, Store};
use crate::{
    entity::{setting_change, user},
    error::{Error, Result},
};

/// One change of one setting.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// Grows with every change; the cursor of history pages.
    pub id: i64,
    pub kind: ChangeKind,
    pub version: i32,
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
    pub actor: String,
    pub interface: String,
    pub correlation_id: String,
    pub changed_at: DateTime<Utc>,
}

/// How much history to keep; `None` keeps everything by that measure.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Changes kept per setting, newest first.
    pub keep_versions: Option<u32>,
    /// Changes younger than this many days are kept.
    pub keep_days: Option<u32>,
    /// Rows deleted per statement, so that pruning never holds locks for long.
    pub batch: u32,
}

impl TryFrom<setting_change::Model> for HistoryEntry {
    type Error = Error;

    fn try_from(row: setting_change::Model) -> Result<Self> {
        let kind = ChangeKind::parse(&row.kind).ok_or_else(|| {
            Error::internal(anyhow::anyhow!("unknown change kind `{}`", row.kind))
        })?;
        Ok(HistoryEntry {
            id: row.id,
            kind,
            version: row.version,
            old_value: row.old_value,
            new_value: row.new_value,
            actor: row.actor,
            interface: row.interface,
            correlation_id: row.correlation_id,
            changed_at: row.changed_at,
        })
    }
}

impl Store {
    /// Changes of one setting, newest first: at most `first`, older than the change `before`.
    /// The flag says whether older changes remain.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn history(
        &self,
        user_id: &str,
        scope: &Scope,
        key: &Key,
        first: u64,
        before: Option<i64>,
    ) -> Result<(Vec<HistoryEntry>, bool)> {
        let mut rows = setting_change::Entity::find()
            .filter(setting_change::Column::UserId.eq(user_id))
            .filter(setting_change::Column::Scope.eq(scope.as_str()))
            .filter(setting_change::Column::Key.eq(key.as_str()))
            .apply_if(before, |query, id| {
                query.filter(setting_change::Column::Id.lt(id))
            })
            .order_by_desc(setting_change::Column::Id)
            .limit(first + 1)
            .all(&*self.reader()?)
            .await?;
        let more = rows.len() as u64 > first;
        rows.truncate(first as usize);
        let entries = rows
            .into_iter()
            .map(HistoryEntry::try_from)
            .collect::<Result<_>>()?;
        Ok((entries, more))
    }

    /// [`Store::history`] of one setting for several users at once, in one query: each user's
    /// newest `first` changes older than `before`, and whether older ones remain.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn history_many(
        &self,
        user_ids: &[&str],
        scope: &Scope,
        key: &Key,
        first: u64,
        before: Option<i64>,
    ) -> Result<HashMap<String, (Vec<HistoryEntry>, bool)>> {
        if user_ids.is_empty() {
            return Ok(HashMap::new());
        }
        // Both backends rank with the same window function; every value is a parameter.
        let placeholders: Vec<String> = (0..user_ids.len())
            .map(|i| self.placeholder(i + 5))
            .collect();
        let sql = format!(
            "SELECT id, user_id, scope, key, kind, version, old_value, new_value, actor, interface, \
             correlation_id, changed_at, position FROM (SELECT *, ROW_NUMBER() OVER \
             (PARTITION BY user_id ORDER BY id DESC) AS newer FROM setting_changes \
             WHERE scope = {} AND key = {} AND id < {} AND user_id IN ({})) ranked \
             WHERE newer <= {} ORDER BY user_id, id DESC",
            self.placeholder(1),
            self.placeholder(2),
            self.placeholder(3),
            placeholders.join(", "),
            self.placeholder(4),
        );
        let mut values: Vec<sea_orm::Value> = vec![
            scope.as_str().into(),
            key.as_str().into(),
            before.unwrap_or(i64::MAX).into(),
            ((first + 1).min(i64::MAX as u64) as i64).into(),
        ];
        values.extend(user_ids.iter().map(|&id| id.into()));
        let rows = setting_change::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(self.backend(), sql, values))
            .all(&*self.reader()?)
            .await?;
        let mut by_user: HashMap<String, (Vec<HistoryEntry>, bool)> = HashMap::new();
        for row in rows {
            let (entries, more) = by_user.entry(row.user_id.clone()).or_default();
            if entries.len() as u64 == first {
                *more = true;
            } else {
                entries.push(HistoryEntry::try_from(row)?);
            }
        }
        Ok(by_user)
    }

    /// The `n`th (from 1) parameter's placeholder in this backend's SQL.
    fn placeholder(&self, n: usize) -> String {
        match self.backend() {
            sea_orm::DbBackend::Postgres => format!("${n}"),
            _ => format!("?{n}"),
        }
    }

    /// Deletes history beyond `retention`, a batch at a time; returns how many rows went.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn prune_history(&self, retention: Retention) -> Result<u64> {
        let mut pruned = 0;
        loop {
            let mut ids = Vec::new();
            // Pruning by age can take a key's latest change: the feed before the newest such
            // position has expired for its user (by count, the newest changes always stay).
            let mut expired: HashMap<String, i64> = HashMap::new();
            if let Some(days) = retention.keep_days {
                let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
                let rows = setting_change::Entity::find()
                    .select_only()
                    .column(setting_change::Column::Id)
                    .column(setting_change::Column::UserId)
                    .column(setting_change::Column::Position)
                    .filter(setting_change::Column::ChangedAt.lt(cutoff))
                    .limit(u64::from(retention.batch))
                    .into_tuple::<(i64, String, Option<i64>)>()
                    .all(&*self.db()?)
                    .await?;
                for (id, user_id, position) in rows {
                    ids.push(id);
                    let through = expired.entry(user_id).or_default();
                    *through = (*through).max(position.unwrap_or_default());
                }
            }
            if ids.is_empty()
                && let Some(keep) = retention.keep_versions
            {
                // Both backends rank rows the same way; the numbers are configuration, not input.
                let sql = format!(
                    "SELECT id FROM (SELECT id, ROW_NUMBER() OVER \
                     (PARTITION BY user_id, scope, key ORDER BY id DESC) AS newer \
                     FROM setting_changes) ranked WHERE newer > {keep} LIMIT {}",
                    retention.batch
                );
                let statement = Statement::from_string(self.backend(), sql);
                ids = self
                    .db()?
                    .query_all_raw(statement)
                    .await?
                    .iter()
                    .map(|row| row.try_get_by_index::<i64>(0))
                    .collect::<Result<_, _>>()?;
            }
            if ids.is_empty() {
                return Ok(pruned);
            }
            let deleted = setting_change::Entity::delete_many()
                .filter(setting_change::Column::Id.is_in(ids))
                .exec(&*self.db()?)
                .await?;
            pruned += deleted.rows_affected;
            for (user_id, through) in expired {
                user::Entity::update_many()
                    .col_expr(user::Column::FeedExpiredThrough, Expr::value(through))
                    .filter(user::Column::Id.eq(user_id))
                    .filter(user::Column::FeedExpiredThrough.lt(through))
                    .exec(&*self.db()?)
                    .await?;
            }
            // Let writers in between batches.
            tokio::task::yield_now().await;
        }
    }
}
