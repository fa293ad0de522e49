use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261122_000001_create_users::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Settings::Table)
                    .if_not_exists()
                    .col(string_len(Settings::UserId, 255))
                    .col(string_len(Settings::Scope, 255))
                    .col(string_len(Settings::Key, 255))
                    .col(json_binary(Settings::Value))
                    .col(integer(Settings::Version))
                    .col(timestamp_with_time_zone(Settings::CreatedAt))
                    .col(timestamp_with_time_zone(Settings::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(Settings::UserId)
                            .col(Settings::Scope)
                            .col(Settings::Key),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Settings::Table, Settings::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Settings::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Settings {
    Table,
    UserId,
    Scope,
    Key,
    Value,
    Version,
    CreatedAt,
    UpdatedAt,
}
