use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OrgDefaults::Table)
                    .if_not_exists()
                    .col(string_len(OrgDefaults::Key, 255).primary_key())
                    .col(json_binary(OrgDefaults::Value))
                    // The `sub` of the administrator who set it.
                    .col(string_len(OrgDefaults::UpdatedBy, 255))
                    .col(timestamp_with_time_zone(OrgDefaults::CreatedAt))
                    .col(timestamp_with_time_zone(OrgDefaults::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(OrgDefaults::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum OrgDefaults {
    Table,
    Key,
    Value,
    UpdatedBy,
    CreatedAt,
    UpdatedAt,
}
