//! User ids, scopes and keys compare by their bytes on PostgreSQL, whatever the database's
//! collation: settings are "ordered by key" in one order on both backends (SQLite compares
//! text by its bytes) and in the service's own sorting, and every index lookup and sort on
//! them compares bytes instead of calling the locale's collation. The columns keep their
//! type; PostgreSQL rebuilds the indexes on them.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each table's name columns; `users` first, as `settings.user_id` refers to its `id`.
const COLUMNS: [(&str, &[&str]); 4] = [
    ("users", &["id"]),
    ("settings", &["user_id", "scope", "key"]),
    ("setting_changes", &["user_id", "scope", "key"]),
    ("org_defaults", &["key"]),
];

/// The statements that give every name column `collation`.
fn statements(collation: &str) -> Vec<String> {
    COLUMNS
        .iter()
        .map(|(table, columns)| {
            let changes: Vec<String> = columns
                .iter()
                .map(|column| {
                    format!("ALTER COLUMN {column} TYPE varchar(255) COLLATE \"{collation}\"")
                })
                .collect();
            format!("ALTER TABLE {table} {}", changes.join(", "))
        })
        .collect()
}

async fn collate(manager: &SchemaManager<'_>, collation: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for statement in statements(collation) {
        db.execute_unprepared(&statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        collate(manager, "C").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        collate(manager, "default").await
    }
}
