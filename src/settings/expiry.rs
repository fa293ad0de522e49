//! Expiring values: a setting written with an expiry is invisible from that instant on every
//! read path (each filters on `expires_at`, and the cache checks it on every hit), so the next
//! layer's value applies. Its removal is a change of kind `EXPIRE` in the history, the feed and
//! subscriptions: recorded by the background purge within a second or so, or at once by any
//! write that finds the row.

use sea_orm::{ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};

use super::{
    ChangeKind, Origin, Scope, Setting, Store,
    model::Outcome,
    plan::{self, HistoryRow, Kinds, LocaleMirror, Plan},
    store::now,
    write::{Write, WriteError, Written},
};
use crate::{entity::setting, error::Result};

/// Who the history names as the actor of an expiry.
pub const EXPIRY_ACTOR: &str = "system";

/// How the history names an expiry.
pub(super) const KINDS: Kinds = Kinds {
    write: None,
    removal: ChangeKind::Expire,
};

/// The origin of expiries found during the request `correlation_id` (or by the purge).
pub(super) fn origin(correlation_id: &str) -> Origin {
    Origin::new(EXPIRY_ACTOR, "expiry", correlation_id)
}

/// Rows whose value has not expired.
pub(super) fn unexpired() -> Condition {
    Condition::any()
        .add(setting::Column::ExpiresAt.is_null())
        .add(setting::Column::ExpiresAt.gt(now()))
}

impl Store {
    /// Deletes `due` (rows of one user's scope, locked by `txn`, whose value expired) and
    /// records each as an `EXPIRE` change; the caller commits and publishes.
    pub(super) async fn expire_in(
        &self,
        txn: &DatabaseTransaction,
        user_id: &str,
        scope: &Scope,
        correlation_id: &str,
        due: Vec<Setting>,
    ) -> Result<Vec<Outcome>, WriteError> {
        let mut plan = Plan::default();
        for row in due {
            if scope == &self.locale_scope && row.key == plan::LOCALE_KEY {
                plan.locale = Some(LocaleMirror::Clear);
            }
            plan.removals.push(row.key.clone());
            plan.history.push(HistoryRow {
                key: row.key.clone(),
                kind: ChangeKind::Expire,
                version: row.version,
            });
            plan.outcomes.push(Outcome {
                key: row.key.clone(),
                before: Some(row),
                after: None,
                position: 0,
            });
        }
        let origin = origin(correlation_id);
        let write = Write {
            kinds: KINDS,
            ..Write::keys(&origin, user_id, scope, Vec::new())
        };
        self.carry_out(txn, &write, plan).await
    }

    /// Records the expiry of values that expired, up to `batch` scopes at a time; returns how
    /// many values. Instances purging side by side never record one twice: each locks the
    /// rows it purges, and a row another instance purged meanwhile is gone.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn purge_expired(&self, batch: u64) -> Result<usize> {
        let due: Vec<(String, String)> = setting::Entity::find()
            .select_only()
            .column(setting::Column::UserId)
            .column(setting::Column::Scope)
            .filter(setting::Column::ExpiresAt.lte(now()))
            .distinct()
            .limit(batch)
            .into_tuple()
            .all(&*self.reader()?)
            .await?;
        let mut purged = 0;
        for (user_id, scope) in due {
            let scope = Scope::parse(scope)?;
            purged += self.purge_scope(&user_id, &scope).await?;
        }
        Ok(purged)
    }

    async fn purge_scope(&self, user_id: &str, scope: &Scope) -> Result<usize> {
        let txn = self.begin_write().await?;
        let due: Vec<Setting> = setting::Entity::find()
            .filter(super::store::of_user(user_id, scope))
            .filter(setting::Column::ExpiresAt.lte(now()))
            .lock_exclusive()
            .all(&txn)
            .await?
            .into_iter()
            .map(Setting::from)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let expired = match self
            .expire_in(&txn, user_id, scope, &correlation_id, due)
            .await
        {
            Ok(expired) => expired,
            Err(WriteError::Failed(err)) => return Err(err),
            Err(WriteError::Raced) => return Ok(0),
        };
        txn.commit().await?;
        let origin = origin(&correlation_id);
        let write = Write::keys(&origin, user_id, scope, Vec::new());
        let count = expired.len();
        self.publish(
            &write,
            &Written {
                expired,
                outcomes: Vec::new(),
                after: None,
                notified: false,
            },
        );
        Ok(count)
    }
}
