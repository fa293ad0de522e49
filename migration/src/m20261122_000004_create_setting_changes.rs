use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SettingChanges::Table)
                    .if_not_exists()
                    .col(
                        big_integer(SettingChanges::Id)
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string_len(SettingChanges::UserId, 255))
                    .col(string_len(SettingChanges::Scope, 255))
                    .col(string_len(SettingChanges::Key, 255))
                    // create, update, delete, reset or revert.
                    .col(string_len(SettingChanges::Kind, 16))
                    // The version the change produced; for a removal, the version removed.
                    .col(integer(SettingChanges::Version))
                    .col(json_binary_null(SettingChanges::OldValue))
                    .col(json_binary_null(SettingChanges::NewValue))
                    // The `sub` of whoever made the change.
                    .col(string_len(SettingChanges::Actor, 255))
                    .col(string_len(SettingChanges::Interface, 64))
                    .col(string_len(SettingChanges::CorrelationId, 128))
                    .col(timestamp_with_time_zone(SettingChanges::ChangedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_setting_changes_setting")
                    .table(SettingChanges::Table)
                    .col(SettingChanges::UserId)
                    .col(SettingChanges::Scope)
                    .col(SettingChanges::Key)
                    .col(SettingChanges::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_setting_changes_changed_at")
                    .table(SettingChanges::Table)
                    .col(SettingChanges::ChangedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SettingChanges::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SettingChanges {
    Table,
    Id,
    UserId,
    Scope,
    Key,
    Kind,
    Version,
    OldValue,
    NewValue,
    Actor,
    Interface,
    CorrelationId,
    ChangedAt,
}
