//! Rolling the schema back: each migration's `down` undoes its `up` on the database the
//! service made, so that an operator can step back to an earlier release's schema and forward
//! again, on both backends.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::json;

use crate::helpers::*;

/// The tables of `db` other than the migrations' own record, by name.
async fn tables(db: &DatabaseConnection) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = if matches!(backend, sea_orm::DbBackend::Postgres) {
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
         AND tablename <> 'seaql_migrations' ORDER BY tablename"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> 'seaql_migrations' ORDER BY name"
    };
    db.query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
}

/// The collation of `settings.key` on PostgreSQL (`None`: the database's default).
async fn key_collation(db: &DatabaseConnection) -> Option<String> {
    let sql = "SELECT collation_name::text FROM information_schema.columns \
               WHERE table_name = 'settings' AND column_name = 'key'";
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .expect("settings.key exists");
    row.try_get_by_index::<Option<String>>(0).unwrap()
}

/// Whether `settings` has the column `value_bytes` (PostgreSQL).
async fn has_value_bytes(db: &DatabaseConnection) -> bool {
    let sql = "SELECT count(*) FROM information_schema.columns \
               WHERE table_name = 'settings' AND column_name = 'value_bytes'";
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap() == 1
}

/// The application again, on the database `app` made (which `app` still owns).
async fn again_on(app: &TestApp, backend: Backend) -> TestApp {
    TestApp::spawn_with(
        backend,
        Options::default().env("DATABASE_URL_OVERRIDE", &app.database_url),
    )
    .await
    .expect("the first application's database")
}

async fn the_last_two_migrations_roll_back_and_forward_again_keeping_the_settings(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.token("rolled-back");
    app.set(
        &token,
        "appearance",
        json!({"dense": true, "accent": "teal"}),
    )
    .await;
    app.set(&token, "Zebra", json!([1, 2])).await;
    app.shut_down().await;

    let db = Database::connect(&app.database_url).await.unwrap();
    let postgres = app.is_postgres();
    if postgres {
        assert_eq!(key_collation(&db).await.as_deref(), Some("C"));
        assert!(has_value_bytes(&db).await);
    }
    // Names compared by bytes, then the size of each value.
    Migrator::down(&db, Some(2)).await.unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(&db).await.unwrap().len(),
        2
    );
    if postgres {
        assert_eq!(key_collation(&db).await, None);
        assert!(!has_value_bytes(&db).await);
    }
    Migrator::up(&db, None).await.unwrap();
    assert!(
        Migrator::get_pending_migrations(&db)
            .await
            .unwrap()
            .is_empty()
    );
    if postgres {
        assert_eq!(key_collation(&db).await.as_deref(), Some("C"));
        assert!(has_value_bytes(&db).await);
    }
    db.close().await.unwrap();

    let again = again_on(&app, backend).await;
    assert_eq!(
        again.values(&token).await,
        json!({"Zebra": [1, 2], "appearance": {"accent": "teal", "dense": true}})
    );
    let written = again
        .set(&token, "appearance", json!({"dense": false}))
        .await;
    assert_eq!(written["version"], 2, "{written}");
}

async fn every_migration_rolls_back_and_the_service_starts_again_on_the_empty_database(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.token("rolled-back");
    app.set(&token, "appearance", json!({"dense": true})).await;
    app.shut_down().await;

    let db = Database::connect(&app.database_url).await.unwrap();
    assert_eq!(
        tables(&db).await,
        ["org_defaults", "setting_changes", "settings", "users"]
    );
    Migrator::down(&db, None).await.unwrap();
    assert_eq!(tables(&db).await, Vec::<String>::new());
    assert_eq!(
        Migrator::get_pending_migrations(&db).await.unwrap().len(),
        Migrator::migrations().len()
    );
    db.close().await.unwrap();

    // Start-up applies every migration again.
    let again = again_on(&app, backend).await;
    assert_eq!(again.values(&token).await, json!({}));
    let written = again
        .set(&token, "appearance", json!({"dense": false}))
        .await;
    assert_eq!(written["version"], 1, "{written}");
}

on_both_backends!(
    the_last_two_migrations_roll_back_and_forward_again_keeping_the_settings,
    every_migration_rolls_back_and_the_service_starts_again_on_the_empty_database,
);
