use async_graphql::{
    Context, InputValueError, InputValueResult, Json, Object, Scalar, ScalarType, SimpleObject,
    Value,
};
use chrono::{SecondsFormat, Utc};

use super::query::{caller, settings_of};
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
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

/// One stored setting of the caller.
#[derive(SimpleObject)]
#[graphql(name = "Setting")]
pub struct Setting {
    pub key: String,
    /// The scope the setting lives in; `""` is the default scope.
    pub scope: String,
    pub value: Json<serde_json::Value>,
    /// 1 when created, then +1 on every write.
    pub version: i32,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

impl From<settings::Setting> for Setting {
    fn from(setting: settings::Setting) -> Self {
        Setting {
            key: setting.key,
            scope: setting.scope,
            value: Json(setting.value),
            version: setting.version,
            created_at: DateTime(setting.created_at),
            updated_at: DateTime(setting.updated_at),
        }
    }
}

/// The authenticated user, as known from their token.
pub struct UserObject(pub User);

#[Object(name = "User")]
impl UserObject {
    /// The token's `sub`.
    async fn id(&self) -> &str {
        &self.0.id
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
        let (_, store) = caller(ctx)?;
        settings_of(store, &self.0.id, scope, keys).await
    }
}
