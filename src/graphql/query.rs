use std::sync::Arc;

use async_graphql::{
    Context, Object, Result,
    connection::{Connection, Edge},
    dataloader::DataLoader,
};

use super::{
    loaders::{SettingId, StoreLoader, UserId},
    subscription::SettingEvent,
    types::{EffectiveSetting, Setting, SettingChange, SettingDefinition, UserObject},
};
use crate::{
    auth::{Access, Principal},
    error::Error,
    settings::{
        Cursor, HistoryEntry, Key, MAX_FEED_PAGE, Scope, Store, decode_opaque, encode_opaque,
    },
};

const MAX_HISTORY_PAGE: i32 = 100;
const CURSOR_PREFIX: &str = "change:";

fn encode_cursor(id: i64) -> String {
    encode_opaque(CURSOR_PREFIX, id)
}

fn decode_cursor(cursor: &str) -> Result<i64, Error> {
    decode_opaque(CURSOR_PREFIX, cursor).ok_or_else(|| {
        Error::bad_input("after", "cursor", "`after` is not a cursor of this history")
    })
}

/// A page of a setting's history, as `first` and `after` ask for it.
pub(super) struct HistoryPage {
    pub first: u64,
    /// The change the page starts below.
    pub before: Option<i64>,
    after: Option<String>,
}

impl HistoryPage {
    pub fn parse(first: i32, after: Option<String>) -> Result<Self, Error> {
        if !(1..=MAX_HISTORY_PAGE).contains(&first) {
            return Err(Error::bad_input(
                "first",
                "range",
                format!("first must be between 1 and {MAX_HISTORY_PAGE}"),
            ));
        }
        let before = after.as_deref().map(decode_cursor).transpose()?;
        Ok(HistoryPage {
            first: first as u64,
            before,
            after,
        })
    }

    pub fn connection(
        self,
        entries: Vec<HistoryEntry>,
        more: bool,
    ) -> Connection<String, SettingChange> {
        let mut connection = Connection::new(self.after.is_some(), more);
        connection.edges.extend(
            entries
                .into_iter()
                .map(|entry| Edge::new(encode_cursor(entry.id), SettingChange::from(entry))),
        );
        connection
    }
}

/// Most users one `users` field may name.
const MAX_USERS_PER_QUERY: usize = 100;

/// FORBIDDEN unless the caller is an administrator.
pub(super) fn require_admin(principal: &Principal, what: &str) -> Result<(), Error> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(Error::Forbidden(format!("{what} needs the admin role")))
    }
}

/// Most keys one `keys:` argument may name.
const MAX_KEYS_PER_QUERY: usize = 1000;

pub struct Query;

/// The caller and the store, which the HTTP handler puts in every request's data.
/// Also checks that the token's scopes allow `access`.
pub(super) fn caller<'c>(ctx: &Context<'c>, access: Access) -> Result<(&'c Principal, &'c Store)> {
    let principal = ctx
        .data_opt::<Principal>()
        .ok_or_else(|| Error::internal(anyhow::anyhow!("no principal in the request")))?;
    principal.require(access)?;
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
    let scope = Scope::parse(scope)?;
    let keys = parse_keys(keys)?;
    let settings = store.list(user_id, &scope, keys.as_deref()).await?;
    Ok(settings.into_iter().map(Setting::from).collect())
}

pub(super) async fn effective_of(
    store: &Store,
    user_id: &str,
    scope: &Scope,
    keys: Option<&[Key]>,
) -> Result<Vec<EffectiveSetting>> {
    let effective = store.effective(user_id, scope, keys).await?;
    Ok(effective
        .into_iter()
        .map(|e| EffectiveSetting::new(e, user_id, scope.as_str()))
        .collect())
}

/// The caller's settings in a scope and the cursor of the feed they reflect.
#[derive(async_graphql::SimpleObject)]
pub struct SettingsSnapshot {
    pub settings: Vec<Setting>,
    /// Pass it as `since` to `changes` or `settingChanged` for what commits after this read.
    pub cursor: String,
}

/// A page of the caller's change feed.
#[derive(async_graphql::SimpleObject)]
pub struct SettingChangeFeed {
    /// In commit order; a removed key comes with `setting: null`.
    pub changes: Vec<SettingEvent>,
    /// Where the next page starts.
    pub cursor: String,
    /// Whether more changes follow: ask again with `cursor`.
    pub has_more: bool,
}

#[Object]
impl Query {
    /// The caller's settings in `scope` and the cursor they are current at, in one consistent
    /// read: the start of delta sync.
    async fn snapshot(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
    ) -> Result<SettingsSnapshot> {
        let (principal, store) = caller(ctx, Access::Read)?;
        let snapshot = store
            .snapshot(&principal.user_id, &Scope::parse(scope)?)
            .await?;
        Ok(SettingsSnapshot {
            settings: snapshot.settings.into_iter().map(Setting::from).collect(),
            cursor: snapshot.cursor.encode(),
        })
    }

    /// The caller's changes committed after `since` (a cursor), oldest first, from every
    /// interface: creates, updates, removals (with `setting: null`), resets and reverts. In
    /// `scope` only, or every scope when it is omitted; at most `first` (up to 1000) a page.
    /// A cursor older than the retained history is `CURSOR_EXPIRED`: take a new snapshot.
    async fn changes(
        &self,
        ctx: &Context<'_>,
        since: String,
        scope: Option<String>,
        #[graphql(default = 100)] first: i32,
    ) -> Result<SettingChangeFeed> {
        let (principal, store) = caller(ctx, Access::Read)?;
        let since = Cursor::parse(&since, "since")?;
        let scope = scope.map(Scope::parse).transpose()?;
        if !(1..=MAX_FEED_PAGE as i32).contains(&first) {
            return Err(Error::bad_input(
                "first",
                "range",
                format!("`first` must be between 1 and {MAX_FEED_PAGE}"),
            )
            .into());
        }
        let page = store
            .changes_since(&principal.user_id, since, scope.as_ref(), first as u64)
            .await?;
        Ok(SettingChangeFeed {
            changes: page.changes.iter().map(SettingEvent::from).collect(),
            cursor: page.cursor.encode(),
            has_more: page.has_more,
        })
    }

    /// The caller's settings in `scope` (default `""`), ordered by key; only `keys` when given.
    async fn settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
    ) -> Result<Vec<Setting>> {
        let (principal, store) = caller(ctx, Access::Read)?;
        settings_of(store, &principal.user_id, scope, keys).await
    }

    /// One of the caller's settings, or null when it is not set.
    async fn setting(
        &self,
        ctx: &Context<'_>,
        key: String,
        #[graphql(default)] scope: String,
    ) -> Result<Option<Setting>> {
        let (principal, _) = caller(ctx, Access::Read)?;
        let id = SettingId {
            user_id: principal.user_id.clone(),
            scope: Scope::parse(scope)?,
            key: Key::parse(key, "key")?,
        };
        // Aliased `setting` fields of one request are read in one query.
        let loader = ctx.data::<Arc<DataLoader<StoreLoader>>>()?;
        let setting = loader
            .load_one(id)
            .await
            .map_err(|err| async_graphql::Error::from(err.as_ref()))?;
        Ok(setting.map(Setting::from))
    }

    /// Every key of the catalog of `scope` (default `""`), with its schema, defaults and
    /// description.
    async fn setting_definitions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
    ) -> Result<Vec<SettingDefinition>> {
        let (_, store) = caller(ctx, Access::Read)?;
        let scope = Scope::parse(scope)?;
        let mut org = store.org_defaults().await?;
        Ok(store
            .catalog()
            .definitions(scope.as_str())
            .into_iter()
            .map(|definition| SettingDefinition::new(definition, org.remove(&definition.key)))
            .collect())
    }

    /// The value that applies for each key: catalog default, then organisation default, then the
    /// caller's value in the default scope, then the caller's value in `scope`, each with the
    /// catalog of `scope`: a lower layer's value that the key's schema there rejects does not
    /// show through. Without `keys`: every key of that catalog and every key the caller has
    /// set. Ordered by key.
    async fn effective_settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
    ) -> Result<Vec<EffectiveSetting>> {
        let (principal, store) = caller(ctx, Access::Read)?;
        let scope = Scope::parse(scope)?;
        let keys = parse_keys(keys)?;
        effective_of(store, &principal.user_id, &scope, keys.as_deref()).await
    }

    /// The changes of one setting, newest first, as a Relay connection: pass an edge's `cursor`
    /// as `after` for the next page. `first` is 1 to 100. `userId` names another user, for
    /// administrators (support); by default the history is the caller's own.
    async fn setting_history(
        &self,
        ctx: &Context<'_>,
        key: String,
        #[graphql(default)] scope: String,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        user_id: Option<String>,
    ) -> Result<Connection<String, SettingChange>> {
        let (principal, store) = caller(ctx, Access::Read)?;
        let user_id = principal.acting_on(user_id.as_deref())?;
        let key = Key::parse(key, "key")?;
        let scope = Scope::parse(scope)?;
        let page = HistoryPage::parse(first, after)?;
        let (entries, more) = store
            .history(user_id, &scope, &key, page.first, page.before)
            .await?;
        Ok(page.connection(entries, more))
    }

    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> Result<UserObject> {
        let (principal, store) = caller(ctx, Access::Read)?;
        Ok(UserObject(store.user(&principal.user_id).await?))
    }

    /// Every setting of the user in every scope, with their whole retained history, as one
    /// document (format `settings-api/export`, version 1) that `importSettings` reads back.
    /// The caller's own by default; `userId` names another user, for administrators.
    async fn export_settings(
        &self,
        ctx: &Context<'_>,
        user_id: Option<String>,
    ) -> Result<async_graphql::Json<serde_json::Value>> {
        let (principal, _) = caller(ctx, Access::Read)?;
        let user_id = principal.acting_on(user_id.as_deref())?;
        let store = ctx.data::<Arc<Store>>()?.clone();
        Ok(async_graphql::Json(store.export(user_id).await?))
    }

    /// A user as support sees them, with their settings, effective settings and history under
    /// it; null when no such user is known. Administrators only.
    async fn user(&self, ctx: &Context<'_>, id: String) -> Result<Option<UserObject>> {
        let (principal, _) = caller(ctx, Access::Read)?;
        require_admin(principal, "reading another user")?;
        let user = super::types::loader(ctx)?
            .load_one(UserId(id))
            .await
            .map_err(super::types::loaded)?;
        Ok(user.map(UserObject))
    }

    /// Several users, in the order of `ids` (null for an unknown one), each read with the
    /// others: the fields under them cost the same few queries for one user or a hundred.
    /// Administrators only; at most 100 ids.
    async fn users(&self, ctx: &Context<'_>, ids: Vec<String>) -> Result<Vec<Option<UserObject>>> {
        let (principal, _) = caller(ctx, Access::Read)?;
        require_admin(principal, "reading other users")?;
        if ids.len() > MAX_USERS_PER_QUERY {
            return Err(Error::bad_input(
                "ids",
                "maxItems",
                format!("at most {MAX_USERS_PER_QUERY} users may be read at once"),
            )
            .into());
        }
        let mut found = super::types::loader(ctx)?
            .load_many(ids.iter().cloned().map(UserId))
            .await
            .map_err(super::types::loaded)?;
        Ok(ids
            .into_iter()
            .map(|id| found.remove(&UserId(id)).map(UserObject))
            .collect())
    }
}
