//! Batches the reads of one request: `setting` fields into one query per scope, and what
//! the fields under many users read (administrators' `users`) into one query per field.

use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::Loader;

use crate::{
    error::Error,
    settings::{Effective, HistoryEntry, Key, Scope, Setting, Store, User},
};

/// One setting of one user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SettingId {
    pub user_id: String,
    pub scope: Scope,
    pub key: Key,
}

pub struct StoreLoader {
    pub store: Arc<Store>,
}

impl Loader<SettingId> for StoreLoader {
    type Value = Setting;
    type Error = Arc<Error>;

    async fn load(&self, ids: &[SettingId]) -> Result<HashMap<SettingId, Setting>, Self::Error> {
        let mut groups: HashMap<(&str, &Scope), Vec<Key>> = HashMap::new();
        for id in ids {
            groups
                .entry((id.user_id.as_str(), &id.scope))
                .or_default()
                .push(id.key.clone());
        }
        let mut found = HashMap::new();
        for ((user_id, scope), keys) in groups {
            for setting in self.store.list(user_id, scope, Some(&keys)).await? {
                let id = SettingId {
                    user_id: user_id.to_owned(),
                    scope: scope.clone(),
                    key: Key::parse(setting.key.as_str(), "key")?,
                };
                found.insert(id, setting);
            }
        }
        Ok(found)
    }
}

/// A user, by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub String);

impl Loader<UserId> for StoreLoader {
    type Value = User;
    type Error = Arc<Error>;

    async fn load(&self, ids: &[UserId]) -> Result<HashMap<UserId, User>, Self::Error> {
        let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
        let users = self.store.users(&ids).await?;
        Ok(users
            .into_iter()
            .map(|user| (UserId(user.id.clone()), user))
            .collect())
    }
}

/// What a field under a user reads: the user, the scope and the keys (all when `None`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserScope {
    pub user_id: String,
    pub scope: Scope,
    pub keys: Option<Vec<Key>>,
}

/// The users asking for the same scope and keys, which one query serves.
fn by_scope_and_keys(ids: &[UserScope]) -> HashMap<(&Scope, Option<&[Key]>), Vec<&str>> {
    let mut groups: HashMap<(&Scope, Option<&[Key]>), Vec<&str>> = HashMap::new();
    for id in ids {
        groups
            .entry((&id.scope, id.keys.as_deref()))
            .or_default()
            .push(id.user_id.as_str());
    }
    groups
}

/// A user's stored settings in a scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoredOf(pub UserScope);

impl Loader<StoredOf> for StoreLoader {
    type Value = Vec<Setting>;
    type Error = Arc<Error>;

    async fn load(&self, ids: &[StoredOf]) -> Result<HashMap<StoredOf, Vec<Setting>>, Self::Error> {
        let wanted: Vec<UserScope> = ids.iter().map(|id| id.0.clone()).collect();
        let mut found = HashMap::new();
        for ((scope, keys), users) in by_scope_and_keys(&wanted) {
            let mut settings = self.store.list_many(&users, scope, keys).await?;
            for user_id in users {
                let id = StoredOf(UserScope {
                    user_id: user_id.to_owned(),
                    scope: scope.clone(),
                    keys: keys.map(<[Key]>::to_vec),
                });
                found.insert(id, settings.remove(user_id).unwrap_or_default());
            }
        }
        Ok(found)
    }
}

/// A user's effective settings in a scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EffectiveOf(pub UserScope);

impl Loader<EffectiveOf> for StoreLoader {
    type Value = Vec<Effective>;
    type Error = Arc<Error>;

    async fn load(
        &self,
        ids: &[EffectiveOf],
    ) -> Result<HashMap<EffectiveOf, Vec<Effective>>, Self::Error> {
        let wanted: Vec<UserScope> = ids.iter().map(|id| id.0.clone()).collect();
        let mut found = HashMap::new();
        for ((scope, keys), users) in by_scope_and_keys(&wanted) {
            let mut effective = self.store.effective_many(&users, scope, keys).await?;
            for user_id in users {
                let id = EffectiveOf(UserScope {
                    user_id: user_id.to_owned(),
                    scope: scope.clone(),
                    keys: keys.map(<[Key]>::to_vec),
                });
                found.insert(id, effective.remove(user_id).unwrap_or_default());
            }
        }
        Ok(found)
    }
}

/// A page of one setting's history of one user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HistoryOf {
    pub user_id: String,
    pub scope: Scope,
    pub key: Key,
    pub first: u64,
    pub before: Option<i64>,
}

impl Loader<HistoryOf> for StoreLoader {
    type Value = (Vec<HistoryEntry>, bool);
    type Error = Arc<Error>;

    async fn load(
        &self,
        ids: &[HistoryOf],
    ) -> Result<HashMap<HistoryOf, (Vec<HistoryEntry>, bool)>, Self::Error> {
        type Page<'a> = (&'a Scope, &'a Key, u64, Option<i64>);
        let mut groups: HashMap<Page<'_>, Vec<&str>> = HashMap::new();
        for id in ids {
            groups
                .entry((&id.scope, &id.key, id.first, id.before))
                .or_default()
                .push(id.user_id.as_str());
        }
        let mut found = HashMap::new();
        for ((scope, key, first, before), users) in groups {
            let mut pages = self
                .store
                .history_many(&users, scope, key, first, before)
                .await?;
            for user_id in users {
                let id = HistoryOf {
                    user_id: user_id.to_owned(),
                    scope: scope.clone(),
                    key: key.clone(),
                    first,
                    before,
                };
                found.insert(id, pages.remove(user_id).unwrap_or_default());
            }
        }
        Ok(found)
    }
}
