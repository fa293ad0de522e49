use sea_orm::entity::prelude::*;

/// One change of one setting, appended in the same transaction as the change.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "setting_changes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: String,
    pub scope: String,
    pub key: String,
    pub kind: String,
    pub version: i32,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub old_value: Option<Json>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub new_value: Option<Json>,
    pub actor: String,
    pub interface: String,
    pub correlation_id: String,
    pub changed_at: DateTimeUtc,
    /// The change's place in its user's feed; positions follow commit order per user.
    pub position: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
