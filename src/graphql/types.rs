use async_graphql::{
    Context, ID, InputValueError, InputValueResult, Json, Object, Scalar, ScalarType, SimpleObject,
    Value,
};
use base64::Engine;
use chrono::Utc;

use std::sync::Arc;

use async_graphql::{connection::Connection, dataloader::DataLoader};

use super::{
    loaders::{EffectiveOf, HistoryOf, StoreLoader, StoredOf, UserScope},
    query::{HistoryPage, caller, parse_keys},
};
use crate::auth::Access;
use crate::settings::{self, User};

/// A UTC instant in RFC 3339 form with milliseconds, such as `2026-11-22T09:30:00.000Z`.
pub struct DateTime(pub chrono::DateTime<Utc>);

#[Scalar(
    name = "DateTime",
    specified_by_url = "https://www.rfc-editor.org/rfc/rfc3339"
)]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
                .map(|at| DateTime(at.with_timezone(&Utc)))
                .map_err(|_| InputValueError::custom("expected an RFC 3339 date-time")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(crate::timestamp::rfc3339_millis(self.0))
    }
}

/// An opaque id, stable and unique for a thing of `kind` named by `parts`, for clients'
/// normalized caches (Apollo's `InMemoryCache`, urql's graphcache).
pub fn global_id(kind: &str, parts: &[&str]) -> ID {
    let text = std::iter::once(kind)
        .chain(parts.iter().copied())
        .collect::<Vec<_>>()
        .join("\u{0}");
    ID(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text))
}

/// One stored setting of the caller.
#[derive(SimpleObject)]
#[graphql(name = "Setting", complex)]
pub struct Setting {
    #[graphql(skip)]
    pub user_id: String,
    pub key: String,
    /// The scope the setting lives in; `""` is the default scope.
    pub scope: String,
    pub value: Json<serde_json::Value>,
    /// 1 when created, then +1 on every write.
    pub version: i32,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    /// When the value expires (`setSetting` with `expiresAt` or `ttlSeconds`); null when it
    /// does not.
    pub expires_at: Option<DateTime>,
}

// A resolver rather than a field: a read of many settings pays for ids only when it selects
// them (the `settings` read of the benchmark does not).
#[async_graphql::ComplexObject]
impl Setting {
    /// Stable and unique per user, scope and key.
    async fn id(&self) -> ID {
        global_id("Setting", &[&self.user_id, &self.scope, &self.key])
    }
}

impl From<settings::Setting> for Setting {
    fn from(setting: settings::Setting) -> Self {
        Setting {
            user_id: setting.user_id,
            key: setting.key,
            scope: setting.scope,
            value: Json(setting.value),
            version: setting.version,
            created_at: DateTime(setting.created_at),
            updated_at: DateTime(setting.updated_at),
            expires_at: setting.expires_at.map(DateTime),
        }
    }
}

/// The authenticated user, as known from their token.
pub struct UserObject(pub User);

#[Object(name = "User")]
impl UserObject {
    /// The token's `sub`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }

    /// Roles from the token; `admin` marks an administrator.
    async fn roles(&self) -> &[String] {
        &self.0.roles
    }

    /// Legacy mirror of the `locale` setting, kept for older clients.
    async fn locale(&self) -> Option<&str> {
        self.0.locale.as_deref()
    }

    /// The user's settings in `scope`, ordered by key; only `keys` when given.
    async fn settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
    ) -> async_graphql::Result<Vec<Setting>> {
        let of = self.scope(ctx, scope, keys)?;
        let settings = loader(ctx)?.load_one(StoredOf(of)).await.map_err(loaded)?;
        Ok(settings
            .unwrap_or_default()
            .into_iter()
            .map(Setting::from)
            .collect())
    }

    /// The value that applies for each of the user's keys in `scope`, as the user's own
    /// `effectiveSettings` reads it.
    async fn effective_settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
    ) -> async_graphql::Result<Vec<EffectiveSetting>> {
        let of = self.scope(ctx, scope, keys)?;
        let scope = of.scope.clone();
        let effective = loader(ctx)?
            .load_one(EffectiveOf(of))
            .await
            .map_err(loaded)?;
        Ok(effective
            .unwrap_or_default()
            .into_iter()
            .map(|e| EffectiveSetting::new(e, &self.0.id, scope.as_str()))
            .collect())
    }

    /// The changes of one of the user's settings, newest first, as `settingHistory` pages them.
    async fn setting_history(
        &self,
        ctx: &Context<'_>,
        key: String,
        #[graphql(default)] scope: String,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, SettingChange>> {
        let of = self.scope(ctx, scope, None)?;
        let page = HistoryPage::parse(first, after)?;
        let id = HistoryOf {
            user_id: of.user_id,
            scope: of.scope,
            key: settings::Key::parse(key, "key")?,
            first: page.first,
            before: page.before,
        };
        let (entries, more) = loader(ctx)?
            .load_one(id)
            .await
            .map_err(loaded)?
            .unwrap_or_default();
        Ok(page.connection(entries, more))
    }
}

impl UserObject {
    /// What a field under this user reads; the caller must be the user or an administrator.
    fn scope(
        &self,
        ctx: &Context<'_>,
        scope: String,
        keys: Option<Vec<String>>,
    ) -> async_graphql::Result<UserScope> {
        let (principal, _) = caller(ctx, Access::Read)?;
        principal.acting_on(Some(&self.0.id))?;
        Ok(UserScope {
            user_id: self.0.id.clone(),
            scope: settings::Scope::parse(scope)?,
            keys: parse_keys(keys)?,
        })
    }
}

/// The request's batch loader.
pub(super) fn loader<'c>(
    ctx: &Context<'c>,
) -> async_graphql::Result<&'c Arc<DataLoader<StoreLoader>>> {
    ctx.data::<Arc<DataLoader<StoreLoader>>>()
}

/// A batch load's error, as the field's.
pub(super) fn loaded(err: Arc<crate::error::Error>) -> async_graphql::Error {
    async_graphql::Error::from(err.as_ref())
}

/// Where an effective value comes from, lowest layer first.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "settings::Source")]
pub enum SettingSource {
    /// The catalog's default.
    Default,
    /// The organisation default set by an administrator.
    Org,
    /// The user's value in the default scope.
    User,
    /// The user's value in the requested scope.
    Scope,
}

/// The value that applies for a key once every layer is considered.
#[derive(SimpleObject)]
pub struct EffectiveSetting {
    /// Stable and unique per user, requested scope and key.
    pub id: ID,
    pub key: String,
    pub value: Json<serde_json::Value>,
    pub source: SettingSource,
    /// The user's stored setting that supplies the value; null for defaults.
    pub setting: Option<Setting>,
    /// Whether the organisation locked the key: then its value applies, whatever the user
    /// stored, and writes of the key are `FORBIDDEN` (rule `locked`).
    pub locked: bool,
}

impl EffectiveSetting {
    /// What applies for `user_id` in `scope`.
    pub fn new(effective: settings::Effective, user_id: &str, scope: &str) -> Self {
        EffectiveSetting {
            id: global_id("EffectiveSetting", &[user_id, scope, &effective.key]),
            key: effective.key,
            value: Json(effective.value),
            source: effective.source.into(),
            setting: effective.setting.map(Setting::from),
            locked: effective.locked,
        }
    }
}

/// A known key of the catalog: its JSON Schema, default and description.
#[derive(SimpleObject)]
pub struct SettingDefinition {
    pub key: String,
    /// JSON Schema (draft 2020-12) that every value of this key satisfies.
    pub schema: Json<serde_json::Value>,
    /// The catalog's default.
    pub default: Json<serde_json::Value>,
    pub description: String,
    /// The organisation default, which replaces the catalog's default for every user.
    pub org_default: Option<Json<serde_json::Value>>,
    /// Whether the organisation locked the key: its organisation default then applies over
    /// every user's value, and users cannot change it.
    pub locked: bool,
}

impl SettingDefinition {
    pub fn new(
        definition: &crate::catalog::Definition,
        org_default: Option<settings::OrgDefault>,
    ) -> Self {
        let locked = org_default.as_ref().is_some_and(|org| org.locked);
        SettingDefinition {
            key: definition.key.clone(),
            schema: Json(definition.schema.clone()),
            default: Json(definition.default.clone()),
            description: definition.description.clone(),
            org_default: org_default.map(|org| Json(org.value)),
            locked,
        }
    }
}

/// What a change did.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "settings::ChangeKind")]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
    /// Removed by `resetSettings`.
    Reset,
    /// Written by `revertSetting`.
    Revert,
    /// The value reached its `expiresAt` and was removed.
    Expire,
    /// Written by `restoreSettings`; with `newValue: null` when it removed the key.
    Restore,
    /// Only in subscriptions, and last: the user was erased (`eraseUser`); forget every
    /// setting and cursor of theirs. `key` and `scope` are empty.
    Erase,
}

/// One change of a setting.
#[derive(SimpleObject)]
pub struct SettingChange {
    /// Stable and unique: the change never changes.
    pub id: ID,
    pub kind: ChangeKind,
    /// The version the change produced; for a removal, the version removed.
    pub version: i32,
    /// Null when the change created the setting.
    pub old_value: Option<Json<serde_json::Value>>,
    /// Null when the change removed the setting.
    pub new_value: Option<Json<serde_json::Value>>,
    /// Who made the change: the `sub` of their token.
    pub actor: String,
    /// `graphql`, or the legacy REST route that made the change.
    pub interface: String,
    /// The correlation id of the request that made the change.
    pub correlation_id: String,
    pub changed_at: DateTime,
}

impl From<settings::HistoryEntry> for SettingChange {
    fn from(entry: settings::HistoryEntry) -> Self {
        SettingChange {
            id: global_id("SettingChange", &[&entry.id.to_string()]),
            kind: entry.kind.into(),
            version: entry.version,
            old_value: entry.old_value.map(Json),
            new_value: entry.new_value.map(Json),
            actor: entry.actor,
            interface: entry.interface,
            correlation_id: entry.correlation_id,
            changed_at: DateTime(entry.changed_at),
        }
    }
}

/// How `importSettings` treats the settings a document does not hold.
#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "settings::ImportMode")]
pub enum ImportMode {
    /// They stay.
    Merge,
    /// They are deleted: afterwards the user has exactly the document's settings.
    Replace,
}

/// What an import did, or for a dry run would do. When `errors` is not empty, nothing was
/// written and the counts are 0.
#[derive(SimpleObject)]
pub struct ImportResult {
    pub created: i32,
    pub updated: i32,
    pub deleted: i32,
    /// Settings of the document already stored with the same value, left as they are.
    pub unchanged: i32,
    pub errors: Vec<ImportError>,
}

/// A setting of the document that cannot be imported, or a scope that would break a quota.
#[derive(SimpleObject)]
pub struct ImportError {
    /// The setting's index in the document's `settings`; null for what a scope as a whole
    /// refused (a quota, a locked key).
    pub index: Option<i32>,
    pub scope: Option<String>,
    pub key: Option<String>,
    /// The rule broken, as `extensions.rule` names it in `BAD_USER_INPUT` errors.
    pub rule: String,
    pub message: String,
}

impl From<settings::ImportReport> for ImportResult {
    fn from(report: settings::ImportReport) -> Self {
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        ImportResult {
            created: count(report.created),
            updated: count(report.updated),
            deleted: count(report.deleted),
            unchanged: count(report.unchanged),
            errors: report
                .errors
                .into_iter()
                .map(|issue| ImportError {
                    index: issue.index.map(count),
                    scope: issue.scope,
                    key: issue.key,
                    rule: issue.rule,
                    message: issue.message,
                })
                .collect(),
        }
    }
}
