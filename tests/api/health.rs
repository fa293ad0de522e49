use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

both_backends! {
    async fn health_checks_answer_without_a_token(app) {
        for path in ["/health/live", "/health/ready"] {
            let response = app.client.get(app.url(path)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.json::<Value>().await.unwrap()["status"], "ok", "{path}");
        }
    }
}

#[tokio::test]
async fn every_response_carries_a_correlation_id_and_keeps_a_callers_one() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let response = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"].len(), 36);
    let response = app
        .client
        .get(app.url("/health/live"))
        .header("x-correlation-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"], "trace-123");
}

#[tokio::test]
async fn a_lost_database_makes_readiness_fail_and_graphql_say_unavailable() {
    // Only PostgreSQL can be taken away from under a running service.
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = app.token("alice");
    app.set(&token, "a", json!(1)).await;
    let name = app
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin = std::env::var("TEST_DATABASE_URL").unwrap();
    let admin = sea_orm::Database::connect(&admin).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        &format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
    )
    .await
    .unwrap();

    let response = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error = app.error(&token, "{ settings { key } }", json!({})).await;
    assert_eq!(code(&error), "UNAVAILABLE", "{error}");
    assert!(error["extensions"]["correlationId"].is_string(), "{error}");
}

#[tokio::test]
async fn unknown_paths_are_a_json_404() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let response = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "not found"})
    );
}
