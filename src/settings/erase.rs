//! Erasure: a user forgotten completely. Their settings, their history and their row are
//! deleted in one transaction, and where their id names them as the actor of another user's
//! change (an administrator's) or of an organisation default, it is replaced by
//! [`ERASED_ACTOR`]. No row keeps the id. What stays is one tombstone event, sent to the user's
//! subscribers on every instance and never stored, so that devices and caches forget too.

use std::sync::Arc;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, prelude::Expr};

use super::{ChangeEvent, ChangeKind, Store, store::now};
use crate::{
    entity::{org_default, setting, setting_change, user},
    error::Result,
};

/// Who an erased user's changes of other users' settings are recorded as afterwards.
pub const ERASED_ACTOR: &str = "erased-user";

/// The feed position of a tombstone: after every change, so that no subscriber drops it.
pub(super) const TOMBSTONE_POSITION: i64 = i64::MAX;

impl Store {
    /// Erases the user; false when there was no such user. `actor` is who asked, for the log.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn erase(&self, actor: &str, user_id: &str) -> Result<bool> {
        let txn = self.begin_write().await?;
        // The settings rows first, then the user's row: the order every write takes them in.
        setting::Entity::find()
            .select_only()
            .column(setting::Column::Key)
            .filter(setting::Column::UserId.eq(user_id))
            .lock_exclusive()
            .into_tuple::<String>()
            .all(&txn)
            .await?;
        let Some(_) = user::Entity::find_by_id(user_id)
            .lock_exclusive()
            .one(&txn)
            .await?
        else {
            return Ok(false);
        };
        let history = setting_change::Entity::delete_many()
            .filter(setting_change::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        let settings = setting::Entity::delete_many()
            .filter(setting::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        // The id as the actor of other users' changes (support) and of organisation defaults.
        setting_change::Entity::update_many()
            .col_expr(setting_change::Column::Actor, Expr::value(ERASED_ACTOR))
            .filter(setting_change::Column::Actor.eq(user_id))
            .exec(&txn)
            .await?;
        org_default::Entity::update_many()
            .col_expr(org_default::Column::UpdatedBy, Expr::value(ERASED_ACTOR))
            .filter(org_default::Column::UpdatedBy.eq(user_id))
            .exec(&txn)
            .await?;
        user::Entity::delete_by_id(user_id).exec(&txn).await?;
        txn.commit().await?;
        tracing::info!(
            actor,
            user_id,
            settings = settings.rows_affected,
            changes = history.rows_affected,
            "erased a user"
        );
        self.forget_erased(user_id);
        // The scope of a tombstone's notice names the instance that sent it.
        self.notify_other_instances(user_id, &self.instance_id, TOMBSTONE_POSITION);
        Ok(true)
    }

    /// What this instance holds of an erased user goes: the cache, the memory of their row,
    /// and their subscribers, who get the tombstone last.
    pub(super) fn forget_erased(&self, user_id: &str) {
        if let Some(cache) = &self.cache {
            cache.invalidate_user(user_id);
        }
        self.forget_user_row(user_id);
        self.hub.close(Arc::new(ChangeEvent {
            position: TOMBSTONE_POSITION,
            user_id: user_id.to_owned(),
            scope: String::new(),
            key: String::new(),
            kind: ChangeKind::Erase,
            version: 0,
            setting: None,
            actor: ERASED_ACTOR.to_owned(),
            interface: "graphql".to_owned(),
            changed_at: now(),
        }));
    }
}
