//! Organisation locks and expiring values: an organisation default may be locked, so that it
//! applies to everyone and users cannot change the key; a setting may carry the instant it
//! expires, indexed for the background purge.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(OrgDefaults::Table)
                    .add_column(boolean(OrgDefaults::Locked).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Settings::Table)
                    .add_column(timestamp_with_time_zone_null(Settings::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_settings_expires_at")
                    .table(Settings::Table)
                    .col(Settings::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_settings_expires_at")
                    .table(Settings::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Settings::Table)
                    .drop_column(Settings::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(OrgDefaults::Table)
                    .drop_column(OrgDefaults::Locked)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum OrgDefaults {
    Table,
    Locked,
}

#[derive(DeriveIden)]
enum Settings {
    Table,
    ExpiresAt,
}
