//! The change feed: every history row gets a position in its user's feed, handed out under the
//! user's row lock so that positions follow commit order; the user row keeps the last position
//! handed out and the last one pruned away (a cursor at or before it has expired).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(big_integer(Users::FeedPosition).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(big_integer(Users::FeedExpiredThrough).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(SettingChanges::Table)
                    .add_column(big_integer_null(SettingChanges::Position))
                    .to_owned(),
            )
            .await?;
        // The history already kept gets positions in the order it was written.
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE setting_changes SET position = ranked.position FROM \
             (SELECT id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY id) AS position \
              FROM setting_changes) AS ranked \
             WHERE setting_changes.id = ranked.id",
        )
        .await?;
        db.execute_unprepared(
            "UPDATE users SET feed_position = COALESCE( \
             (SELECT MAX(position) FROM setting_changes WHERE setting_changes.user_id = users.id), 0)",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_setting_changes_feed")
                    .table(SettingChanges::Table)
                    .col(SettingChanges::UserId)
                    .col(SettingChanges::Position)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_setting_changes_feed")
                    .table(SettingChanges::Table)
                    .to_owned(),
            )
            .await?;
        for (table, column) in [
            (
                SettingChanges::Table.into_iden(),
                SettingChanges::Position.into_iden(),
            ),
            (Users::Table.into_iden(), Users::FeedPosition.into_iden()),
            (
                Users::Table.into_iden(),
                Users::FeedExpiredThrough.into_iden(),
            ),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    FeedPosition,
    FeedExpiredThrough,
}

#[derive(DeriveIden)]
enum SettingChanges {
    Table,
    UserId,
    Position,
}
