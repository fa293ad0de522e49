//! Export: one JSON document with every setting of a user in every scope and their whole
//! retained history, in a versioned format that `import.rs` reads back. It is written a page
//! at a time, so that a large user is never held in memory whole (`GET /api/v1/me/export`
//! streams the pages as they are read).

use std::sync::Arc;

use chrono::Utc;
use futures_util::{Stream, stream};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};

use super::{Setting, Store, User};
use crate::{
    entity::{setting, setting_change},
    error::Result,
    timestamp::rfc3339_millis as timestamp,
};

/// The `format` member of every export document.
pub const EXPORT_FORMAT: &str = "settings-api/export";
/// The `version` of the format this service writes and reads.
pub const EXPORT_VERSION: u64 = 1;

/// Rows read per query.
const PAGE: u64 = 500;

/// A setting as the document holds it.
pub(super) fn setting_json(setting: &Setting) -> Value {
    json!({
        "scope": setting.scope,
        "key": setting.key,
        "value": setting.value,
        "version": setting.version,
        "createdAt": timestamp(setting.created_at),
        "updatedAt": timestamp(setting.updated_at),
        "expiresAt": setting.expires_at.map(timestamp),
    })
}

fn change_json(change: &setting_change::Model) -> Value {
    json!({
        "scope": change.scope,
        "key": change.key,
        "kind": change.kind.to_ascii_uppercase(),
        "version": change.version,
        "oldValue": change.old_value,
        "newValue": change.new_value,
        "actor": change.actor,
        "interface": change.interface,
        "correlationId": change.correlation_id,
        "changedAt": timestamp(change.changed_at),
    })
}

/// Where the writing of a document stands.
enum Part {
    Head,
    /// Settings after this (scope, key).
    Settings(Option<(String, String)>),
    /// History after this id.
    History(i64),
    Done,
}

struct Writer {
    store: Arc<Store>,
    user: User,
    part: Part,
}

impl Writer {
    /// The next piece of the document's text; `None` once it is complete.
    async fn next(&mut self) -> Result<Option<String>> {
        let user_id = self.user.id.clone();
        match std::mem::replace(&mut self.part, Part::Done) {
            Part::Head => {
                let head = json!({
                    "format": EXPORT_FORMAT,
                    "version": EXPORT_VERSION,
                    "exportedAt": timestamp(Utc::now()),
                    "user": {
                        "id": self.user.id,
                        "email": self.user.email,
                        "createdAt": timestamp(self.user.created_at),
                    },
                });
                let mut text = head.to_string();
                // Reopen the object to append the arrays.
                text.pop();
                text.push_str(r#","settings":["#);
                self.part = Part::Settings(None);
                Ok(Some(text))
            }
            Part::Settings(after) => {
                let rows = setting::Entity::find()
                    .filter(setting::Column::UserId.eq(user_id))
                    .filter(super::expiry::unexpired())
                    .apply_after(after.as_ref())
                    .order_by_asc(setting::Column::Scope)
                    .order_by_asc(setting::Column::Key)
                    .limit(PAGE)
                    .all(&*self.store.reader()?)
                    .await?;
                let mut text = items(
                    after.is_some(),
                    rows.iter()
                        .map(|row| setting_json(&Setting::from(row.clone()))),
                );
                self.part = match rows.last() {
                    Some(last) if rows.len() as u64 == PAGE => {
                        Part::Settings(Some((last.scope.clone(), last.key.clone())))
                    }
                    _ => {
                        text.push_str(r#"],"history":["#);
                        Part::History(0)
                    }
                };
                Ok(Some(text))
            }
            Part::History(after) => {
                let rows = setting_change::Entity::find()
                    .filter(setting_change::Column::UserId.eq(user_id))
                    .filter(setting_change::Column::Id.gt(after))
                    .order_by_asc(setting_change::Column::Id)
                    .limit(PAGE)
                    .all(&*self.store.reader()?)
                    .await?;
                let mut text = items(after > 0, rows.iter().map(change_json));
                self.part = match rows.last() {
                    Some(last) if rows.len() as u64 == PAGE => Part::History(last.id),
                    _ => {
                        text.push_str("]}");
                        Part::Done
                    }
                };
                Ok(Some(text))
            }
            Part::Done => Ok(None),
        }
    }
}

/// Array members as text, led by a comma when members came before.
fn items(continued: bool, values: impl Iterator<Item = Value>) -> String {
    let mut text = String::new();
    for (i, value) in values.enumerate() {
        if continued || i > 0 {
            text.push(',');
        }
        text.push_str(&value.to_string());
    }
    text
}

trait AfterKey {
    fn apply_after(self, after: Option<&(String, String)>) -> Self;
}

impl AfterKey for sea_orm::Select<setting::Entity> {
    fn apply_after(self, after: Option<&(String, String)>) -> Self {
        let Some((scope, key)) = after else {
            return self;
        };
        self.filter(
            Condition::any()
                .add(setting::Column::Scope.gt(scope.as_str()))
                .add(
                    Condition::all()
                        .add(setting::Column::Scope.eq(scope.as_str()))
                        .add(setting::Column::Key.gt(key.as_str())),
                ),
        )
    }
}

impl Store {
    /// The user's export document, as text pieces that make it whole when joined, read a page
    /// at a time as the stream is polled. NOT_FOUND for a user never seen.
    pub async fn export_stream(
        self: Arc<Self>,
        user_id: &str,
    ) -> Result<impl Stream<Item = Result<String>> + Send + 'static> {
        let user = self.user(user_id).await?;
        let writer = Writer {
            store: self,
            user,
            part: Part::Head,
        };
        Ok(stream::try_unfold(writer, |mut writer| async move {
            Ok(writer.next().await?.map(|text| (text, writer)))
        }))
    }

    /// The user's export document as one value.
    pub async fn export(self: Arc<Self>, user_id: &str) -> Result<Value> {
        use futures_util::TryStreamExt;
        let text: String = self.export_stream(user_id).await?.try_collect().await?;
        serde_json::from_str(&text)
            .map_err(|err| crate::error::Error::internal(anyhow::Error::from(err)))
    }
}
