use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(string_len(Users::Id, 255).primary_key())
                    .col(string_len_null(Users::Email, 320))
                    .col(json_binary(Users::Roles))
                    // Deprecated mirror of the `locale` setting, kept for legacy clients.
                    .col(string_len_null(Users::Locale, 10))
                    .col(uuid_uniq(Users::SettingsId))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .col(timestamp_with_time_zone(Users::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub(crate) enum Users {
    Table,
    Id,
    Email,
    Roles,
    Locale,
    SettingsId,
    CreatedAt,
    UpdatedAt,
}
