//! Restore: every key of a scope put back to its value at an instant, from the history. The
//! value a key had at `as_of` is the old value of its first change after `as_of` (none: it
//! had no value); a key with no change since has its value still. History is pruned oldest
//! first, so that answer is certain when the key has a change at or before `as_of` retained,
//! or its first change after it created the key for the first time (version 1); otherwise the
//! instant is beyond the retained history and the restore is refused.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;

use super::{
    ChangeKind, Expect, Key, Origin, Scope, Setting, Store,
    plan::{Change, Kinds, Op, Target},
    write::Write,
};
use crate::{
    entity::setting_change,
    error::{Error, Result},
};

/// How the history names what a restore wrote and removed.
const KINDS: Kinds = Kinds {
    write: Some(ChangeKind::Restore),
    removal: ChangeKind::Restore,
};

fn beyond_history(key: &str, as_of: DateTime<Utc>) -> Error {
    Error::bad_input(
        "asOf",
        "retainedHistory",
        format!(
            "the history kept does not reach back to {} for `{key}`: choose a later instant",
            crate::timestamp::rfc3339_millis(as_of)
        ),
    )
}

impl Store {
    /// Puts every key of the user's `scope` back to its value at `as_of`, as new versions,
    /// deleting the keys created since; returns the scope's settings afterwards, by key.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn restore(
        &self,
        origin: &Origin,
        user_id: &str,
        scope: &Scope,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<Setting>> {
        if as_of > Utc::now() {
            return Err(Error::bad_input(
                "asOf",
                "past",
                "`asOf` must not be in the future",
            ));
        }
        let since = setting_change::Entity::find()
            .filter(setting_change::Column::UserId.eq(user_id))
            .filter(setting_change::Column::Scope.eq(scope.as_str()))
            .filter(setting_change::Column::ChangedAt.gt(as_of))
            .order_by_asc(setting_change::Column::Id)
            .all(&*self.reader()?)
            .await?;
        // Each key's first change after `as_of`: its old value is the value then.
        let mut first_after: BTreeMap<String, setting_change::Model> = BTreeMap::new();
        for change in since {
            first_after.entry(change.key.clone()).or_insert(change);
        }
        let known_before: Vec<String> = setting_change::Entity::find()
            .select_only()
            .column(setting_change::Column::Key)
            .filter(setting_change::Column::UserId.eq(user_id))
            .filter(setting_change::Column::Scope.eq(scope.as_str()))
            .filter(setting_change::Column::ChangedAt.lte(as_of))
            .filter(setting_change::Column::Key.is_in(first_after.keys().map(String::as_str)))
            .distinct()
            .into_tuple()
            .all(&*self.reader()?)
            .await?;
        let current: BTreeMap<String, Setting> = self
            .list(user_id, scope, None)
            .await?
            .into_iter()
            .map(|setting| (setting.key.clone(), setting))
            .collect();

        let mut ops = Vec::new();
        for (key, change) in &first_after {
            let first_ever = change.kind == ChangeKind::Create.as_str() && change.version == 1;
            if !first_ever && !known_before.contains(key) {
                return Err(beyond_history(key, as_of));
            }
            let then: Option<&Value> = change.old_value.as_ref();
            let now = current.get(key);
            if then == now.map(|setting| &setting.value) {
                continue;
            }
            ops.push(Op {
                key: Key::parse(key.as_str(), "key")?,
                change: match then {
                    Some(value) => Change::Replace(value.clone()),
                    None => Change::Remove,
                },
                // Refused as a conflict if the key changes meanwhile.
                expect: Some(
                    now.map_or(Expect::Absent, |setting| Expect::Version(setting.version)),
                ),
                expires_at: None,
            });
        }
        // A value changed since without a change in the history: the history was pruned.
        if let Some(setting) = current
            .values()
            .find(|setting| setting.updated_at > as_of && !first_after.contains_key(&setting.key))
        {
            return Err(beyond_history(&setting.key, as_of));
        }
        if !ops.is_empty() {
            let write = Write {
                target: Target::Keys(ops),
                kinds: KINDS,
                ..Write::keys(origin, user_id, scope, Vec::new())
            };
            self.write(write).await?;
        }
        self.list(user_id, scope, None).await
    }
}
