use std::sync::Arc;

use async_graphql::{Context, Object, Result};

use super::{
    errors::to_graphql_error,
    types::{EffectiveSetting, Setting, SettingDefinition, UserObject},
};
use crate::{
    auth::Principal,
    error::Error,
    settings::{Key, Scope, Store},
};

/// Most keys one `keys:` argument may name.
const MAX_KEYS_PER_QUERY: usize = 1000;

pub struct Query;

/// The caller and the store, which the HTTP handler puts in every request's data.
pub(super) fn caller<'c>(ctx: &Context<'c>) -> Result<(&'c Principal, &'c Store)> {
    let principal = ctx.data_opt::<Principal>().ok_or_else(|| {
        to_graphql_error(Error::internal(anyhow::anyhow!(
            "no principal in the request"
        )))
    })?;
    let store = ctx.data::<Arc<Store>>()?;
    Ok((principal, store.as_ref()))
}

pub(super) fn parse_keys(keys: Option<Vec<String>>) -> Result<Option<Vec<Key>>, Error> {
    let Some(keys) = keys else { return Ok(None) };
    if keys.len() > MAX_KEYS_PER_QUERY {
        return Err(Error::bad_input(
            "keys",
            "maxItems",
            format!("at most {MAX_KEYS_PER_QUERY} keys may be requested at once"),
        ));
    }
    keys.into_iter()
        .map(|key| Key::parse(key, "keys"))
        .collect::<Result<_, _>>()
        .map(Some)
}

pub(super) async fn settings_of(
    store: &Store,
    user_id: &str,
    scope: String,
    keys: Option<Vec<String>>,
) -> Result<Vec<Setting>> {
    let run = async {
        let scope = Scope::parse(scope)?;
        let keys = parse_keys(keys)?;
        store.list(user_id, &scope, keys.as_deref()).await
    };
    let settings = run.await.map_err(to_graphql_error)?;
    Ok(settings.into_iter().map(Setting::from).collect())
}

/// Effective values, after removing the user's own values first when `reset` is set.
pub(super) async fn effective_of(
    store: &Store,
    user_id: &str,
    scope: String,
    keys: Option<Vec<String>>,
    reset: bool,
) -> Result<Vec<EffectiveSetting>> {
    let run = async {
        let scope = Scope::parse(scope)?;
        let keys = parse_keys(keys)?;
        if reset {
            store.reset(user_id, &scope, keys.as_deref()).await?;
        }
        store.effective(user_id, &scope, keys.as_deref()).await
    };
    let effective = run.await.map_err(to_graphql_error)?;
    Ok(effective.into_iter().map(EffectiveSetting::from).collect())
}

#[Object]
impl Query {
    /// The caller's settings in `scope` (default `""`), ordered by key; only `keys` when given.
    async fn settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
    ) -> Result<Vec<Setting>> {
        let (principal, store) = caller(ctx)?;
        settings_of(store, &principal.user_id, scope, keys).await
    }

    /// One of the caller's settings, or null when it is not set.
    async fn setting(
        &self,
        ctx: &Context<'_>,
        key: String,
        #[graphql(default)] scope: String,
    ) -> Result<Option<Setting>> {
        let (principal, store) = caller(ctx)?;
        let run = async {
            let key = Key::parse(key, "key")?;
            let scope = Scope::parse(scope)?;
            store.get(&principal.user_id, &scope, &key).await
        };
        Ok(run.await.map_err(to_graphql_error)?.map(Setting::from))
    }

    /// Every key of the catalog, with its schema, defaults and description.
    async fn setting_definitions(&self, ctx: &Context<'_>) -> Result<Vec<SettingDefinition>> {
        let (_, store) = caller(ctx)?;
        let mut org = store.org_defaults().await.map_err(to_graphql_error)?;
        Ok(store
            .catalog()
            .definitions()
            .map(|definition| SettingDefinition::new(definition, org.remove(&definition.key)))
            .collect())
    }

    /// The value that applies for each key: catalog default, then organisation default, then the
    /// caller's value in the default scope, then the caller's value in `scope`. Without `keys`:
    /// every catalog key and every key the caller has set. Ordered by key.
    async fn effective_settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
    ) -> Result<Vec<EffectiveSetting>> {
        let (principal, store) = caller(ctx)?;
        effective_of(store, &principal.user_id, scope, keys, false).await
    }

    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> Result<UserObject> {
        let (principal, store) = caller(ctx)?;
        let user = store
            .user(&principal.user_id)
            .await
            .map_err(to_graphql_error)?;
        Ok(UserObject(user))
    }
}
