//! Database migrations for settings-api, applied at start-up and by `settings-api migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_users;
mod m20261122_000002_create_settings;
mod m20261122_000003_create_org_defaults;
mod m20261122_000004_create_setting_changes;
mod m20261201_000005_change_feed;
mod m20261201_000006_locks_and_expiry;
mod m20261202_000007_value_bytes;
mod m20261206_000008_byte_order_names;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_users::Migration),
            Box::new(m20261122_000002_create_settings::Migration),
            Box::new(m20261122_000003_create_org_defaults::Migration),
            Box::new(m20261122_000004_create_setting_changes::Migration),
            Box::new(m20261201_000005_change_feed::Migration),
            Box::new(m20261201_000006_locks_and_expiry::Migration),
            Box::new(m20261202_000007_value_bytes::Migration),
            Box::new(m20261206_000008_byte_order_names::Migration),
        ]
    }
}
