//! The size of each stored value, as the byte quota counts it, kept beside the value on
//! PostgreSQL: summing a scope's sizes then reads integers instead of turning every `jsonb`
//! value into text on every growing write. SQLite stores values as text, whose length is
//! cheap to take, and has no such column.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE settings ADD COLUMN value_bytes integer \
                 GENERATED ALWAYS AS (octet_length(value::text)) STORED",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE settings DROP COLUMN value_bytes")
            .await?;
        Ok(())
    }
}
