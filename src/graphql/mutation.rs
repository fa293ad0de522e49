use async_graphql::{Context, Json, Object, Result};
use serde_json::Value;

use super::{
    errors::to_graphql_error,
    query::{caller, effective_of},
    types::{EffectiveSetting, Setting, SettingDefinition},
};
use crate::{
    error::Error,
    settings::{Key, Scope},
};

pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates or replaces one setting. Its `version` starts at 1 and grows by one per write.
    async fn set_setting(
        &self,
        ctx: &Context<'_>,
        key: String,
        value: Json<Value>,
        #[graphql(default)] scope: String,
    ) -> Result<Setting> {
        let (principal, store) = caller(ctx)?;
        let run = async {
            let key = Key::parse(key, "key")?;
            let scope = Scope::parse(scope)?;
            store.set(&principal.user_id, &scope, &key, value.0).await
        };
        Ok(run.await.map_err(to_graphql_error)?.into())
    }

    /// Applies an RFC 7386 JSON Merge Patch whose members are setting keys: an object merges into
    /// the stored object, `null` removes, anything else replaces. All keys change, or none do.
    /// Returns the settings created or changed, ordered by key.
    async fn update_settings(
        &self,
        ctx: &Context<'_>,
        patch: Json<Value>,
        #[graphql(default)] scope: String,
    ) -> Result<Vec<Setting>> {
        let (principal, store) = caller(ctx)?;
        let run = async {
            let scope = Scope::parse(scope)?;
            store.apply_patch(&principal.user_id, &scope, patch.0).await
        };
        let written = run.await.map_err(to_graphql_error)?;
        Ok(written.into_iter().map(Setting::from).collect())
    }

    /// Deletes one setting; false when it did not exist.
    async fn delete_setting(
        &self,
        ctx: &Context<'_>,
        key: String,
        #[graphql(default)] scope: String,
    ) -> Result<bool> {
        let (principal, store) = caller(ctx)?;
        let run = async {
            let key = Key::parse(key, "key")?;
            let scope = Scope::parse(scope)?;
            store.delete(&principal.user_id, &scope, &key).await
        };
        run.await.map_err(to_graphql_error)
    }

    /// Removes the caller's own values in `scope` (only `keys`, when given) and returns what
    /// applies now, as `effectiveSettings` would.
    async fn reset_settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
    ) -> Result<Vec<EffectiveSetting>> {
        let (principal, store) = caller(ctx)?;
        effective_of(store, &principal.user_id, scope, keys, true).await
    }

    /// Sets the organisation default of a catalog key for every user at once; `null` removes it.
    /// Needs the `admin` role; the value must satisfy the key's schema.
    async fn set_org_default(
        &self,
        ctx: &Context<'_>,
        key: String,
        value: Option<Json<Value>>,
    ) -> Result<SettingDefinition> {
        let (principal, store) = caller(ctx)?;
        let run = async {
            if !principal.is_admin() {
                return Err(Error::Forbidden(
                    "setting organisation defaults needs the admin role".into(),
                ));
            }
            let key = Key::parse(key, "key")?;
            let value = value.map(|json| json.0);
            store
                .set_org_default(&key, value.clone(), &principal.user_id)
                .await?;
            let definition = store.catalog().get(key.as_str()).ok_or_else(|| {
                Error::internal(anyhow::anyhow!("catalog key `{}` vanished", key.as_str()))
            })?;
            Ok(SettingDefinition::new(definition, value))
        };
        run.await.map_err(to_graphql_error)
    }
}
