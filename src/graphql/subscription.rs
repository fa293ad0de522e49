//! Live sync: every committed change of the caller's settings, from any device or route.

use async_graphql::{Context, Result, SimpleObject, Subscription as SubscriptionRoot};
use futures_util::{Stream, stream};
use tokio::sync::broadcast::error::RecvError;

use super::{
    query::{caller, parse_keys},
    types::{ChangeKind, DateTime, Setting},
};
use crate::{
    auth::Access,
    error::Error,
    settings::{ChangeEvent, Cursor, Scope},
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
    /// Every change of the caller's settings in `scope` (only `keys`, when given) from the moment
    /// of subscribing, through GraphQL or any REST route, in commit order per setting. Changes
    /// are delivered by the instance that committed them: run one instance, or subscribe to
    /// each. A subscriber that falls far behind gets an error and the stream ends: read the
    /// settings again and resubscribe.
    async fn setting_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] scope: String,
        keys: Option<Vec<String>>,
    ) -> Result<impl Stream<Item = Result<SettingEvent>> + use<>> {
        let (principal, store) = caller(ctx, Access::Read)?;
        let scope = Scope::parse(scope)?;
        let keys = parse_keys(keys)?;
        let user_id = principal.user_id.clone();
        let wanted = move |change: &ChangeEvent| {
            change.user_id == user_id
                && change.scope == scope.as_str()
                && keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == change.key))
        };
        let receiver = store.subscribe();
        Ok(stream::unfold(Some(receiver), move |receiver| {
            let wanted = wanted.clone();
            async move {
                let mut receiver = receiver?;
                loop {
                    match receiver.recv().await {
                        Ok(change) if wanted(&change) => {
                            return Some((Ok(SettingEvent::from(change.as_ref())), Some(receiver)));
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(missed)) => {
                            let err = Error::Conflict {
                                message: format!(
                                    "this subscription fell behind and missed {missed} changes: \
                                     read the settings again and resubscribe"
                                ),
                                current_version: None,
                            };
                            return Some((Err(err.into()), None));
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        }))
    }
}
