//! GraphQL over Server-Sent Events (graphql-sse, distinct connections mode).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// Opens an event stream for `query`; the response, to read events from.
async fn stream(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/graphql"))
        .header("accept", "text/event-stream")
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// The next event (its name and data), skipping keep-alive comments.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String) -> (String, String) {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut data) = (String::new(), String::new());
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_owned();
                } else if let Some(text) = line.strip_prefix("data:") {
                    data.push_str(text.trim_start());
                }
            }
            if !event.is_empty() {
                return (event, data);
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

both_backends! {
    async fn a_subscription_over_server_sent_events_delivers_changes(app) {
        let token = app.token("alice");
        let cursor = app.data(&token, "{ snapshot { cursor } }", json!({})).await["snapshot"]["cursor"].clone();
        let mut response = stream(&app, Some(&token), "subscription($s: String) { settingChanged(since: $s) { key kind setting { value } } }", json!({"s": cursor})).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        app.set(&token, "theme", json!("dark")).await;
        let mut buffer = String::new();
        let (event, data) = next_event(&mut response, &mut buffer).await;
        assert_eq!(event, "next");
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["data"]["settingChanged"], json!({"key": "theme", "kind": "CREATE", "setting": {"value": "dark"}}));
        app.rest("PUT", "/settings/user", Some(&token), Some(json!({"rest": 1}))).await;
        let (_, data) = next_event(&mut response, &mut buffer).await;
        assert_eq!(serde_json::from_str::<Value>(&data).unwrap()["data"]["settingChanged"]["key"], "rest");
    }

    async fn a_query_over_server_sent_events_is_one_next_then_complete(app) {
        let token = app.token("alice");
        app.set(&token, "theme", json!("dark")).await;
        let mut response = stream(&app, Some(&token), "{ settings { key value } }", json!({})).await;
        let mut buffer = String::new();
        let (event, data) = next_event(&mut response, &mut buffer).await;
        assert_eq!(event, "next");
        assert_eq!(serde_json::from_str::<Value>(&data).unwrap()["data"]["settings"], json!([{"key": "theme", "value": "dark"}]));
        assert_eq!(next_event(&mut response, &mut buffer).await.0, "complete");
    }

    async fn errors_before_execution_come_as_a_next_event_and_a_missing_token_as_401(app) {
        let token = app.token("alice");
        let costly = format!("subscription {{ settingChanged {} {{ key }} }}", "@include(if: true) ".repeat(60));
        let mut response = stream(&app, Some(&token), &costly, json!({})).await;
        let mut buffer = String::new();
        let (event, data) = next_event(&mut response, &mut buffer).await;
        assert_eq!(event, "next");
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["errors"][0]["extensions"]["rule"], "maxDirectives", "{data}");
        assert_eq!(next_event(&mut response, &mut buffer).await.0, "complete");
        let refused = stream(&app, None, "subscription { settingChanged { key } }", json!({})).await;
        assert_eq!(refused.status(), 401);
    }
}

both_backends! {
    options = Options::default()
        .env("HISTORY_KEEP_DAYS", "1")
        .env("HISTORY_KEEP_VERSIONS", "0")
        .env("HISTORY_PRUNE_INTERVAL_SECS", "1");
    async fn a_subscription_resuming_behind_the_pruned_history_is_cursor_expired(app) {
        let token = app.token("alice");
        let old = app.data(&token, "{ snapshot { cursor } }", json!({})).await["snapshot"]["cursor"].clone();
        app.set(&token, "theme", json!("dark")).await;
        app.execute_sql("UPDATE setting_changes SET changed_at = '2001-01-01 00:00:00+00'").await;
        for _ in 0..100 {
            if history_count(&app, "alice").await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(history_count(&app, "alice").await, 0, "the history was pruned");
        let mut response = stream(&app, Some(&token), "subscription($s: String) { settingChanged(since: $s) { key } }", json!({"s": old})).await;
        let mut buffer = String::new();
        let (event, data) = next_event(&mut response, &mut buffer).await;
        assert_eq!(event, "next");
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data["errors"][0]["extensions"]["code"], "CURSOR_EXPIRED", "{data}");
        assert_eq!(next_event(&mut response, &mut buffer).await.0, "complete");
    }
}

both_backends! {
    options = Options::default().env("EXPIRY_PURGE_INTERVAL_MS", "50");
    async fn an_expiry_reaches_a_server_sent_events_subscriber(app) {
        let token = app.token("alice");
        let cursor = app.data(&token, "{ snapshot { cursor } }", json!({})).await["snapshot"]["cursor"].clone();
        let mut response = stream(&app, Some(&token), "subscription($s: String) { settingChanged(since: $s) { key kind actor setting { value } } }", json!({"s": cursor})).await;
        assert_eq!(response.status(), 200);
        app.data(&token, "mutation { setSetting(key: \"snooze\", value: true, ttlSeconds: 1) { version } }", json!({})).await;
        let mut buffer = String::new();
        let mut changes = Vec::new();
        for _ in 0..2 {
            let (event, data) = next_event(&mut response, &mut buffer).await;
            assert_eq!(event, "next");
            changes.push(serde_json::from_str::<Value>(&data).unwrap()["data"]["settingChanged"].clone());
        }
        assert_eq!(changes, vec![
            json!({"key": "snooze", "kind": "CREATE", "actor": "alice", "setting": {"value": true}}),
            json!({"key": "snooze", "kind": "EXPIRE", "actor": "system", "setting": null}),
        ]);
    }
}
