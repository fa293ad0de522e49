//! The change feed: every committed change of a user has a position, handed out under the
//! user's row lock (`write.rs`, `replace_one.rs`), so that positions follow commit order for
//! that user. A reader that has seen position p never later finds a committed change before p.
//! Clients hold positions as opaque cursors: a snapshot gives one, and the changes after it are
//! read from the history table.

use std::collections::HashMap;

use base64::Engine;
use sea_orm::{
    AccessMode, ColumnTrait, DbBackend, EntityTrait, IsolationLevel, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, TransactionTrait,
};

use super::{ChangeEvent, ChangeKind, Scope, Setting, Store};
use crate::{
    entity::{setting, setting_change, user},
    error::{Error, Result},
};

/// The most changes one page of the feed holds.
pub const MAX_PAGE: u64 = 1000;

/// An opaque cursor: a position in one user's feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub i64);

const CURSOR_PREFIX: &str = "feed1:";

/// An opaque cursor for a number: base64 of `prefix` and the number, so that cursors of one
/// kind are not taken for another's.
pub fn encode_opaque(prefix: &str, number: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{prefix}{number}"))
}

/// The number of a cursor made by [`encode_opaque`] with `prefix`.
pub fn decode_opaque(prefix: &str, text: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix(prefix)?
        .parse()
        .ok()
}

impl Cursor {
    pub fn encode(self) -> String {
        encode_opaque(CURSOR_PREFIX, self.0)
    }

    pub fn parse(text: &str, field: &str) -> Result<Cursor> {
        let invalid = || {
            Error::bad_input(
                field,
                "cursor",
                "not a cursor of this service: pass the `cursor` a snapshot, a page of changes or an event gave",
            )
        };
        let position = decode_opaque(CURSOR_PREFIX, text)
            .filter(|n| *n >= 0)
            .ok_or_else(invalid)?;
        Ok(Cursor(position))
    }
}

/// The settings of a scope and the cursor they are current at, read together.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub settings: Vec<Setting>,
    pub cursor: Cursor,
}

/// Changes after a cursor, in feed order.
#[derive(Clone, Debug)]
pub struct FeedPage {
    pub changes: Vec<ChangeEvent>,
    /// Where the next page starts: the last change's position, or the feed's end.
    pub cursor: Cursor,
    pub has_more: bool,
}

impl Store {
    /// Where the user's feed ends now; with `since`, also refuses that cursor as
    /// [`Store::changes_since`] would.
    pub(super) async fn feed_end(&self, user_id: &str, since: Option<Cursor>) -> Result<i64> {
        let (end, expired_through) = feed_state(&*self.reader()?, user_id).await?;
        if let Some(since) = since {
            check_cursor(since, end, expired_through)?;
        }
        Ok(end)
    }

    /// The user's settings in `scope` and the cursor of the feed they reflect, in one
    /// consistent read.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn snapshot(&self, user_id: &str, scope: &Scope) -> Result<Snapshot> {
        let db = &*self.reader()?;
        let txn = match self.backend() {
            DbBackend::Postgres => {
                db.begin_with_config(
                    Some(IsolationLevel::RepeatableRead),
                    Some(AccessMode::ReadOnly),
                )
                .await?
            }
            _ => db.begin().await?,
        };
        let position = feed_state(&txn, user_id).await?.0;
        let settings = setting::Entity::find()
            .filter(super::store::of_user(user_id, scope))
            .filter(super::expiry::unexpired())
            .order_by_asc(setting::Column::Key)
            .all(&txn)
            .await?
            .into_iter()
            .map(Setting::from)
            .collect();
        txn.commit().await?;
        Ok(Snapshot {
            settings,
            cursor: Cursor(position),
        })
    }

    /// Up to `first` changes of the user after `since`, in `scope` or in every scope.
    /// `CURSOR_EXPIRED` when history the cursor needs was pruned.
    #[tracing::instrument(skip_all, err(level = "debug", Debug))]
    pub async fn changes_since(
        &self,
        user_id: &str,
        since: Cursor,
        scope: Option<&Scope>,
        first: u64,
    ) -> Result<FeedPage> {
        let db = &*self.reader()?;
        // The feed's end first: every position up to it has committed (each was handed out
        // after the one before it committed), so reading up to it misses nothing.
        let (end, expired_through) = feed_state(db, user_id).await?;
        check_cursor(since, end, expired_through)?;
        let mut rows = setting_change::Entity::find()
            .filter(setting_change::Column::UserId.eq(user_id))
            .filter(setting_change::Column::Position.gt(since.0))
            .filter(setting_change::Column::Position.lte(end))
            .apply_if(scope, |query, scope| {
                query.filter(setting_change::Column::Scope.eq(scope.as_str()))
            })
            .order_by_asc(setting_change::Column::Position)
            .limit(first + 1)
            .all(db)
            .await?;
        let has_more = rows.len() as u64 > first;
        rows.truncate(first as usize);
        let cursor = match (has_more, rows.last()) {
            (true, Some(last)) => Cursor(last.position.unwrap_or(since.0)),
            _ => Cursor(end),
        };
        let changes = self.events_of(db, user_id, rows).await?;
        Ok(FeedPage {
            changes,
            cursor,
            has_more,
        })
    }

    /// History rows as the events subscribers get. A setting's `createdAt` is that of the key's
    /// current row when it still has one, else the change's own time.
    async fn events_of(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        user_id: &str,
        rows: Vec<setting_change::Model>,
    ) -> Result<Vec<ChangeEvent>> {
        let keys: Vec<&str> = rows.iter().map(|row| row.key.as_str()).collect();
        let created: HashMap<(String, String), chrono::DateTime<chrono::Utc>> = if keys.is_empty() {
            HashMap::new()
        } else {
            setting::Entity::find()
                .select_only()
                .column(setting::Column::Scope)
                .column(setting::Column::Key)
                .column(setting::Column::CreatedAt)
                .filter(setting::Column::UserId.eq(user_id))
                .filter(setting::Column::Key.is_in(keys))
                .into_tuple::<(String, String, chrono::DateTime<chrono::Utc>)>()
                .all(db)
                .await?
                .into_iter()
                .map(|(scope, key, at)| ((scope, key), at))
                .collect()
        };
        rows.into_iter()
            .map(|row| {
                let kind = ChangeKind::parse(&row.kind).ok_or_else(|| {
                    Error::internal(anyhow::anyhow!("unknown change kind `{}`", row.kind))
                })?;
                let setting = row.new_value.map(|value| Setting {
                    user_id: row.user_id.clone(),
                    key: row.key.clone(),
                    scope: row.scope.clone(),
                    value,
                    version: row.version,
                    created_at: created
                        .get(&(row.scope.clone(), row.key.clone()))
                        .copied()
                        .unwrap_or(row.changed_at),
                    updated_at: row.changed_at,
                    // The history does not record expiry; the feed brings the EXPIRE.
                    expires_at: None,
                });
                Ok(ChangeEvent {
                    position: row.position.unwrap_or_default(),
                    user_id: row.user_id,
                    scope: row.scope,
                    key: row.key,
                    kind,
                    version: row.version,
                    setting,
                    actor: row.actor,
                    interface: row.interface,
                    changed_at: row.changed_at,
                })
            })
            .collect()
    }
}

/// A cursor the feed can continue from: not behind its pruned history, not past its end.
fn check_cursor(since: Cursor, end: i64, expired_through: i64) -> Result<()> {
    if since.0 < expired_through {
        return Err(Error::CursorExpired(
            "the history this cursor needs has been pruned: take a new snapshot".into(),
        ));
    }
    if since.0 > end {
        return Err(Error::bad_input(
            "since",
            "cursor",
            "the cursor is ahead of the feed: it belongs to another user or database",
        ));
    }
    Ok(())
}

/// The user's feed end and the position through which it has expired; a user without a row
/// has an empty feed.
async fn feed_state(db: &impl sea_orm::ConnectionTrait, user_id: &str) -> Result<(i64, i64)> {
    let state = user::Entity::find_by_id(user_id)
        .select_only()
        .column(user::Column::FeedPosition)
        .column(user::Column::FeedExpiredThrough)
        .into_tuple::<(i64, i64)>()
        .one(db)
        .await?;
    Ok(state.unwrap_or((0, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        for position in [0, 1, 42, i64::MAX] {
            let cursor = Cursor(position);
            assert_eq!(Cursor::parse(&cursor.encode(), "since").unwrap(), cursor);
        }
        for text in [
            "",
            "42",
            "not base64!",
            &Cursor(-1).encode().replace('L', "x"),
        ] {
            assert!(Cursor::parse(text, "since").is_err(), "{text:?}");
        }
        let negative = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("feed1:-1");
        assert!(Cursor::parse(&negative, "since").is_err());
    }
}
