//! The embedded SQLite: reads go to readers beside the one writer, so a write that waits for
//! the database's write lock holds up no read.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_read_answers_while_a_write_waits_for_the_write_lock() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");
    app.set(&token, "theme", json!("dark")).await;

    // Another process holds SQLite's write lock.
    let outside = Database::connect(&app.database_url).await.unwrap();
    let txn = outside.begin().await.unwrap();
    txn.execute_unprepared("UPDATE users SET updated_at = updated_at")
        .await
        .unwrap();

    // The service's write takes its writer and waits for the lock.
    let request = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "mutation { setSetting(key: \"theme\", value: \"light\") { version } }"}));
    let write = tokio::spawn(request.send());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A read answers meanwhile, with what was committed.
    assert_eq!(app.values(&token).await, json!({"theme": "dark"}));
    assert!(
        !write.is_finished(),
        "the write is still waiting for the lock"
    );

    txn.commit().await.unwrap();
    let reply = write.await.unwrap().unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(app.values(&token).await, json!({"theme": "light"}));
}
