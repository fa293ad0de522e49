//! A client that goes away in the middle of a write: the write still runs to its end (commit
//! or rollback), so no pooled connection is left inside a transaction and no later request
//! pays for it.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use serde_json::json;

use crate::helpers::*;

const PATCH: &str = "mutation($p: JSON!) { updateSettings(patch: $p) { key version } }";

/// PostgreSQL only: the one place a write can wait inside its transaction for a lock that
/// another session holds (SQLite refuses a second writer at once instead of waiting).
#[tokio::test]
async fn a_write_whose_client_went_away_still_commits_and_leaves_the_pool_healthy() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    {
        let token = app.token("alice");
        app.set(&token, "theme", json!("light")).await;

        // Hold the row from outside, so that the service's write waits inside its transaction.
        let outside = Database::connect(&app.database_url).await.unwrap();
        let lock = outside.begin().await.unwrap();
        lock.execute_unprepared(
            "UPDATE settings SET value = value WHERE user_id = 'alice' AND key = 'theme'",
        )
        .await
        .unwrap();

        // The client gives up while the write waits for the lock.
        let impatient = app
            .client
            .post(format!("{}/graphql", app.address))
            .bearer_auth(&token)
            .timeout(Duration::from_millis(300))
            .json(&json!({"query": PATCH, "variables": {"p": {"theme": "dark"}}}))
            .send()
            .await;
        let answer = match impatient {
            Ok(reply) => reply.text().await.unwrap_or_default(),
            Err(err) => format!("{err:?}"),
        };
        assert!(
            answer.contains("TimedOut") || answer.contains("timed out"),
            "the client timed out: {answer}"
        );
        lock.commit().await.unwrap();

        // The abandoned write commits once the lock is free.
        let mut theme = json!(null);
        for _ in 0..100 {
            theme = app
                .data(
                    &token,
                    r#"{ setting(key: "theme") { value version } }"#,
                    json!({}),
                )
                .await["setting"]
                .clone();
            if theme["value"] == "dark" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(theme, json!({"value": "dark", "version": 2}));

        // Every connection of the pool still works: a burst of writes all succeed.
        for n in 0..20 {
            app.data(&token, PATCH, json!({"p": {"theme": format!("t{n}")}}))
                .await;
        }
        assert_eq!(history_count(&app, "alice").await, 22);
    }
}
