use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// The JWT `sub` of the user.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub email: Option<String>,
    /// Roles from the token, a JSON array of strings.
    #[sea_orm(column_type = "JsonBinary")]
    pub roles: Json,
    /// Deprecated mirror of the `locale` setting, read by legacy clients.
    pub locale: Option<String>,
    /// Stable identifier of the user's settings document, exposed by legacy routes.
    #[sea_orm(unique)]
    pub settings_id: Uuid,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The last position handed out in the user's change feed.
    pub feed_position: i64,
    /// The last feed position pruned away with a key's latest change: a cursor at or before
    /// it has expired.
    pub feed_expired_through: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
