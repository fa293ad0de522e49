//! Batches the reads of one request: `setting` fields into one query per scope.

use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::Loader;

use crate::{
    error::Error,
    settings::{Key, Scope, Setting, Store},
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
