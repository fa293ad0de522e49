use std::collections::HashMap;

use async_graphql::{Context, Json, Object, Result};
use chrono::SubsecRound;
use serde_json::Value;

use super::{
    query::{caller, effective_of, parse_keys, require_admin},
    types::{DateTime, EffectiveSetting, ImportMode, ImportResult, Setting, SettingDefinition},
};
use crate::{
    auth::{Access, Principal},
    error::Error,
    settings::{self, Expect, Key, Origin, Preconditions, Scope, Store},
};

/// A write's origin: the caller, through GraphQL, under the request's correlation id.
pub(super) fn origin(principal: &Principal) -> Origin {
    Origin::new(
        principal.user_id.as_str(),
        "graphql",
        crate::telemetry::correlation_id(),
    )
}

/// Whose settings a write changes: the caller's, or with `userId` another user's, for an
/// administrator; NOT_FOUND for a user never seen.
async fn acting_on<'a>(
    principal: &'a Principal,
    store: &Store,
    user_id: Option<&'a str>,
) -> Result<&'a str, Error> {
    let id = principal.acting_on(user_id)?;
    if id != principal.user_id {
        store.user(id).await?;
    }
    Ok(id)
}

/// The most `ttlSeconds` may ask for: ten years.
const MAX_TTL_SECONDS: i32 = 10 * 366 * 24 * 3600;

/// When a value written with `expiresAt` or `ttlSeconds` (at most one) expires.
fn expiry(
    expires_at: Option<DateTime>,
    ttl_seconds: Option<i32>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, Error> {
    let now = chrono::Utc::now();
    match (expires_at, ttl_seconds) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Error::bad_input(
            "ttlSeconds",
            "oneOf",
            "give `expiresAt` or `ttlSeconds`, not both",
        )),
        (Some(DateTime(at)), None) if at <= now => Err(Error::bad_input(
            "expiresAt",
            "future",
            "`expiresAt` must be in the future",
        )),
        (Some(DateTime(at)), None) => Ok(Some(at.trunc_subsecs(3))),
        (None, Some(ttl)) if !(1..=MAX_TTL_SECONDS).contains(&ttl) => Err(Error::bad_input(
            "ttlSeconds",
            "range",
            format!("`ttlSeconds` must be between 1 and {MAX_TTL_SECONDS}"),
        )),
        (None, Some(ttl)) => Ok(Some(
            (now + chrono::Duration::seconds(i64::from(ttl))).trunc_subsecs(3),
        )),
    }
}

/// `expectedVersion`: a version the setting must be at; 0 means it must not exist yet.
fn expectation(expected_version: Option<i32>) -> Result<Option<Expect>, Error> {
    match expected_version {
        None => Ok(None),
        Some(0) => Ok(Some(Expect::Absent)),
        Some(version) if version > 0 => Ok(Some(Expect::Version(version))),
        Some(_) => Err(Error::bad_input(
            "expectedVersion",
            "minimum",
            "a version is 0 or more",
        )),
    }
}

fn parse_expected_versions(map: Option<Json<Value>>) -> Result<HashMap<String, i32>, Error> {
    let Some(Json(map)) = map else {
        return Ok(HashMap::new());
    };
    let invalid = || {
        Error::bad_input(
            "expectedVersions",
            "type",
            "expectedVersions must be an object of keys to versions (0 for absent)",
        )
    };
    let Value::Object(members) = map else {
        return Err(invalid());
    };
    members
        .into_iter()
        .map(|(key, version)| {
            let version = version
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .filter(|v| *v >= 0);
            Ok((key, version.ok_or_else(invalid)?))
        })
        .collect()
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates or replaces one setting. Its `version` starts at 1 and grows by one per write.
    /// With `expectedVersion`, the write happens only if the setting is at that version (0: only
    /// if it does not exist yet); otherwise the error is `CONFLICT` with `currentVersion`.
    /// With `expiresAt` (an instant) or `ttlSeconds` (from now), one of them, the value expires:
    /// from then on no read shows it (the next layer's value applies) and its removal is a
    /// change of kind `EXPIRE`. Any later write of the key without them makes it permanent.
    /// `userId` names another user, for administrators: the history records the administrator
    /// as the actor.
    #[allow(clippy::too_many_arguments)]
    async fn set_setting(
        &self,
        ctx: &Context<'_>,
        key: String,
        value: Json<Value>,
        #[graphql(default)] scope: String,
        expected_version: Option<i32>,
        user_id: Option<String>,
        expires_at: Option<DateTime>,
        ttl_seconds: Option<i32>,
    ) -> Result<Setting> {
        let (principal, store) = caller(ctx, Access::Write)?;
        let user_id = acting_on(principal, store, user_id.as_deref()).await?;
        let key = Key::parse(key, "key")?;
        let scope = Scope::parse(scope)?;
        let expect = expectation(expected_version)?;
        let expires_at = expiry(expires_at, ttl_seconds)?;
        let (setting, _created) = store
            .set_until(
                &origin(principal),
                user_id,
                &scope,
                &key,
                value.0,
                expect,
                expires_at,
            )
            .await?;
        Ok(setting.into())
    }

    /// Applies an RFC 7386 JSON Merge Patch whose members are setting keys: an object merges into
    /// the stored object, `null` removes, anything else replaces. All keys change, or none do.
    /// Returns the settings created or changed, ordered by key. `expectedVersions` maps keys of
    /// the patch to the version each must be at (0: must not exist); on a mismatch nothing is
    /// written and the error is `CONFLICT`.
    /// `userId` names another user, for administrators: the history records the administrator
    /// as the actor.
    async fn update_settings(
        &self,
        ctx: &Context<'_>,
        patch: Json<Value>,
        #[graphql(default)] scope: String,
        expected_versions: Option<Json<Value>>,
        user_id: Option<String>,
    ) -> Result<Vec<Setting>> {
        let (principal, store) = caller(ctx, Access::Write)?;
        let user_id = acting_on(principal, store, user_id.as_deref()).await?;
        let scope = Scope::parse(scope)?;
        let preconditions = Preconditions {
            versions: parse_expected_versions(expected_versions)?,
            document: None,
        };
        let written = store
            .apply_patch(&origin(principal), user_id, &scope, patch.0, &preconditions)
            .await?;
        Ok(written.into_iter().map(Setting::from).collect())
    }

    /// Deletes one setting; false when it did not exist. With `expectedVersion`, only if the
    /// setting is at that version (`CONFLICT` otherwise).
    /// `userId` names another user, for administrators: the history records the administrator
    /// as the actor.
    async fn delete_setting(
        &self,
        ctx: &Context<'_>,
        key: String,
        #[graphql(default)] scope: String,
        expected_version: Option<i32>,
        user_id: Option<String>,
    ) -> Result<bool> {
        let (principal, store) = caller(ctx, Access::Write)?;
        let user_id = acting_on(principal, store, user_id.as_deref()).await?;
        let key = Key::parse(key, "key")?;
        let scope = Scope::parse(scope)?;
        let expect = expectation(expected_version)?;
        Ok(store
            .delete(&origin(principal), user_id, &scope, &key, expect)
            .await?)
    }

    /// Removes the caller's own values in `scope` (only `keys`, when given) and returns what
    /// applies now, as `effectiveSettings` would.
    async fn reset_settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
    ) -> Result<Vec<EffectiveSetting>> {
        let (principal, store) = caller(ctx, Access::Write)?;
        let scope = Scope::parse(scope)?;
        let keys = parse_keys(keys)?;
        let user_id = principal.user_id.as_str();
        store
            .reset(&origin(principal), user_id, &scope, keys.as_deref())
            .await?;
        effective_of(store, user_id, &scope, keys.as_deref()).await
    }

    /// Writes the value the setting had at `toVersion` (per its history) as a new version.
    /// `userId` names another user, for administrators: the history records the administrator
    /// as the actor.
    async fn revert_setting(
        &self,
        ctx: &Context<'_>,
        key: String,
        #[graphql(default)] scope: String,
        to_version: i32,
        user_id: Option<String>,
    ) -> Result<Setting> {
        let (principal, store) = caller(ctx, Access::Write)?;
        let user_id = acting_on(principal, store, user_id.as_deref()).await?;
        let key = Key::parse(key, "key")?;
        let scope = Scope::parse(scope)?;
        let setting = store
            .revert(&origin(principal), user_id, &scope, &key, to_version)
            .await?;
        Ok(setting.into())
    }

    /// Writes an export document (`exportSettings`) back: every setting checked against the
    /// catalog of its scope, the value limits and the quotas, and all of them written or none.
    /// `MERGE` keeps the user's other settings; `REPLACE` deletes them. With `dryRun`, reports
    /// exactly what the import would do and writes nothing. Imported settings are new versions
    /// with a history of their own; the document's history is not imported. `userId` names
    /// another user, for administrators.
    async fn import_settings(
        &self,
        ctx: &Context<'_>,
        document: Json<Value>,
        #[graphql(default_with = "ImportMode::Merge")] mode: ImportMode,
        #[graphql(default)] dry_run: bool,
        user_id: Option<String>,
    ) -> Result<ImportResult> {
        let (principal, store) = caller(ctx, Access::Write)?;
        let user_id = acting_on(principal, store, user_id.as_deref()).await?;
        let report = store
            .import(
                &origin(principal),
                user_id,
                &document.0,
                mode.into(),
                dry_run,
            )
            .await?;
        Ok(report.into())
    }

    /// Puts every key of the caller's `scope` back to its value at `asOf`, as new versions
    /// (history kind `RESTORE`), and deletes the keys created since; returns the scope's
    /// settings afterwards, ordered by key. Refused (`BAD_USER_INPUT`, rule
    /// `retainedHistory`) when the retained history does not reach back to `asOf`; `CONFLICT`
    /// when a key changes meanwhile. `userId` names another user, for administrators.
    async fn restore_settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        as_of: DateTime,
        user_id: Option<String>,
    ) -> Result<Vec<Setting>> {
        let (principal, store) = caller(ctx, Access::Write)?;
        let user_id = acting_on(principal, store, user_id.as_deref()).await?;
        let scope = Scope::parse(scope)?;
        let settings = store
            .restore(&origin(principal), user_id, &scope, as_of.0)
            .await?;
        Ok(settings.into_iter().map(Setting::from).collect())
    }

    /// Forgets the user completely: every setting in every scope, the whole history and the
    /// user's record; where the user acted on another user's settings, the history names
    /// `erased-user` instead. The user's subscriptions get one last event of kind `ERASE`
    /// and end. False when no such user is known. Administrators, or a user erasing
    /// themselves; a later request with a valid token starts a new, empty account.
    async fn erase_user(&self, ctx: &Context<'_>, user_id: String) -> Result<bool> {
        let (principal, store) = caller(ctx, Access::Write)?;
        let user_id = principal.acting_on(Some(&user_id))?;
        Ok(store.erase(&principal.user_id, user_id).await?)
    }

    /// Sets the organisation default of a catalog key for every user at once, in every scope
    /// whose catalog has the key; `null` removes it. Needs the `admin` role; the value must
    /// satisfy the key's schema in each of those scopes. `locked`: the value applies over
    /// every user's own, and users' writes of the key are `FORBIDDEN` (rule `locked`) on
    /// every interface; their values are kept and apply again once it is set unlocked.
    async fn set_org_default(
        &self,
        ctx: &Context<'_>,
        key: String,
        value: Option<Json<Value>>,
        #[graphql(default)] locked: bool,
    ) -> Result<SettingDefinition> {
        let (principal, store) = caller(ctx, Access::Write)?;
        require_admin(principal, "setting organisation defaults")?;
        let key = Key::parse(key, "key")?;
        let value = value.map(|json| json.0);
        store
            .set_org_default(&key, value.clone(), locked, &principal.user_id)
            .await?;
        let definition = store
            .catalog()
            .definitions_of(key.as_str())
            .next()
            .ok_or_else(|| {
                Error::internal(anyhow::anyhow!("catalog key `{}` vanished", key.as_str()))
            })?;
        let org = value.map(|value| settings::OrgDefault { value, locked });
        Ok(SettingDefinition::new(definition, org))
    }
}
