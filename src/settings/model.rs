//! The values the domain hands to every interface: stored settings, users, who made a change
//! and what kind of change it was.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{setting, user};

/// One stored setting, as every interface returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The user whose setting it is.
    pub user_id: String,
    pub key: String,
    pub scope: String,
    pub value: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the value expires; `None` keeps it until it is changed.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Setting {
    /// Whether the value has expired at `now`: then it is invisible on every read path.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

impl From<setting::Model> for Setting {
    fn from(model: setting::Model) -> Self {
        Setting {
            user_id: model.user_id,
            key: model.key,
            scope: model.scope,
            value: model.value,
            version: model.version,
            created_at: model.created_at,
            updated_at: model.updated_at,
            expires_at: model.expires_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub locale: Option<String>,
    pub settings_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<user::Model> for User {
    fn from(model: user::Model) -> Self {
        User {
            id: model.id,
            email: model.email,
            roles: serde_json::from_value(model.roles).unwrap_or_default(),
            locale: model.locale,
            settings_id: model.settings_id,
            created_at: model.created_at,
            updated_at: model.updated_at,
        }
    }
}

/// Who changes settings, through which interface, and in which request; recorded in the
/// history. The interfaces build it from the request, so the domain never looks for it.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The token's `sub`; differs from the settings' user when an administrator acts.
    pub actor: String,
    /// `graphql`, or the legacy route, such as `PUT /api/v1/users/me/settings/{key}`.
    pub interface: &'static str,
    /// The id under which the request is logged.
    pub correlation_id: String,
}

impl Origin {
    pub fn new(
        actor: impl Into<String>,
        interface: &'static str,
        correlation_id: impl Into<String>,
    ) -> Self {
        Origin {
            actor: actor.into(),
            interface,
            correlation_id: correlation_id.into(),
        }
    }
}

/// What a history row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
    Reset,
    Revert,
    /// An expiring value reached its expiry and was removed.
    Expire,
    /// Written or removed by a restore to an earlier instant.
    Restore,
    /// The user was erased: a tombstone in the live feed, never stored.
    Erase,
}

impl ChangeKind {
    /// Each kind with the name the history table stores.
    const NAMES: [(ChangeKind, &'static str); 8] = [
        (ChangeKind::Create, "create"),
        (ChangeKind::Update, "update"),
        (ChangeKind::Delete, "delete"),
        (ChangeKind::Reset, "reset"),
        (ChangeKind::Revert, "revert"),
        (ChangeKind::Expire, "expire"),
        (ChangeKind::Restore, "restore"),
        (ChangeKind::Erase, "erase"),
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find_map(|&(kind, name)| (kind == self).then_some(name))
            .unwrap_or_default()
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find_map(|&(kind, name)| (name == text).then_some(kind))
    }
}

/// A precondition on the version a setting has before a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The setting exists at exactly this version.
    Version(i32),
    /// The setting exists, at any version (`If-Match: *`).
    Present,
    /// The setting does not exist (create only).
    Absent,
}

/// What one write did to one key.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub key: String,
    pub before: Option<Setting>,
    pub after: Option<Setting>,
    /// The change's position in the user's feed, once written.
    pub position: i64,
}
