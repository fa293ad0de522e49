//! Live sync: every committed change of the caller's settings, from any device or route.

use std::sync::Arc;

use async_graphql::{Context, Result, SimpleObject, Subscription as SubscriptionRoot};
use futures_util::{Stream, StreamExt};

use super::{
    query::{caller, parse_keys},
    types::{ChangeKind, DateTime, Setting},
};
use crate::{
    auth::Access,
    settings::{self, ChangeEvent, Cursor, Scope, Store},
};

pub struct Subscription;

/// A change of one of the caller's settings, as it committed.
#[derive(SimpleObject)]
pub struct SettingEvent {
    /// The change's place in the caller's feed: pass it as `since` to `changes` or
    /// `settingChanged` to get what came after it.
    pub cursor: String,
    pub key: String,
    pub scope: String,
    pub kind: ChangeKind,
    /// The version the change produced; for a removal, the version removed.
    pub version: i32,
    /// The setting after the change; null when it was removed.
    pub setting: Option<Setting>,
    /// Who made the change: the `sub` of their token.
    pub actor: String,
    /// `graphql`, or the legacy REST route that made the change.
    pub interface: String,
    pub changed_at: DateTime,
}

impl From<&ChangeEvent> for SettingEvent {
    fn from(change: &ChangeEvent) -> Self {
        SettingEvent {
            cursor: Cursor(change.position).encode(),
            key: change.key.clone(),
            scope: change.scope.clone(),
            kind: change.kind.into(),
            version: change.version,
            setting: change.setting.clone().map(Setting::from),
            actor: change.actor.clone(),
            interface: change.interface.clone(),
            changed_at: DateTime(change.changed_at),
        }
    }
}

#[SubscriptionRoot]
impl Subscription {
    /// Every change of the caller's settings in `scope` (only `keys`, when given), through
    /// GraphQL or any REST route, on whichever instance it committed, in commit order. From
    /// the moment of subscribing; or, with `since` (a cursor from `snapshot`, `changes` or an
    /// event), first what committed after it, then live, with no gap and no duplicate. A
    /// `since` older than the retained history is `CURSOR_EXPIRED`: take a new snapshot.
    async fn setting_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
        since: Option<String>,
    ) -> Result<impl Stream<Item = Result<SettingEvent>> + use<>> {
        let (principal, _) = caller(ctx, Access::Read)?;
        let store = ctx.data::<Arc<Store>>()?.clone();
        let scope = Scope::parse(scope)?;
        let keys = parse_keys(keys)?;
        let since = since
            .map(|text| Cursor::parse(&text, "since"))
            .transpose()?;
        // The tombstone of an erased user goes to every subscription of theirs.
        let wanted = move |change: &ChangeEvent| {
            change.kind == settings::ChangeKind::Erase
                || change.scope == scope.as_str()
                    && keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == change.key))
        };
        let changes = store.follow(&principal.user_id, since).await?;
        Ok(changes.filter_map(move |change| {
            let event = match change {
                Ok(change) if wanted(&change) => Some(Ok(SettingEvent::from(change.as_ref()))),
                Ok(_) => None,
                Err(err) => Some(Err(err.into())),
            };
            std::future::ready(event)
        }))
    }
}
