//! No lost updates, optimistic concurrency, and the change history.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const SET_EXPECTING: &str = "mutation($k: String!, $v: JSON!, $e: Int) { setSetting(key: $k, value: $v, expectedVersion: $e) { value version } }";
const DELETE_EXPECTING: &str =
    "mutation($k: String!, $e: Int) { deleteSetting(key: $k, expectedVersion: $e) }";
const PATCH_EXPECTING: &str = "mutation($p: JSON!, $e: JSON) { updateSettings(patch: $p, expectedVersions: $e) { key version } }";
const HISTORY: &str = "query($k: String!, $f: Int! = 20, $a: String) { settingHistory(key: $k, first: $f, after: $a) { \
    edges { cursor node { kind version oldValue newValue actor interface correlationId changedAt } } \
    pageInfo { hasNextPage hasPreviousPage endCursor } } }";

const TASKS: usize = 32;
const WRITES_PER_TASK: usize = 50;

async fn history(app: &TestApp, token: &str, key: &str) -> Vec<Value> {
    let data = app.data(token, HISTORY, json!({"k": key, "f": 100})).await;
    data["settingHistory"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

async fn history_rows(app: &TestApp, key: &str) -> i64 {
    let count = app
        .query_text(&format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM setting_changes WHERE key = '{key}'"
        ))
        .await;
    count.unwrap().parse().unwrap()
}

both_backends! {
    async fn concurrent_patches_to_one_key_lose_no_member_and_count_every_write(app) {
        let token = app.token("alice");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (client, url, token) = (app.client.clone(), app.url("/graphql"), token.clone());
                tokio::spawn(async move {
                    for i in 0..WRITES_PER_TASK {
                        let body = json!({
                            "query": "mutation($p: JSON!) { updateSettings(patch: $p) { version } }",
                            "variables": {"p": {"doc": {format!("t{task}_{i}"): i}}},
                        });
                        let response: Value = client.post(&url).bearer_auth(&token).json(&body).send().await.unwrap().json().await.unwrap();
                        assert!(response.get("errors").is_none(), "{response}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let data = app.data(&token, r#"{ setting(key: "doc") { value version } }"#, json!({})).await;
        let members = data["setting"]["value"].as_object().unwrap();
        assert_eq!(members.len(), TASKS * WRITES_PER_TASK, "every member written survives");
        for task in 0..TASKS {
            for i in 0..WRITES_PER_TASK {
                assert_eq!(members[&format!("t{task}_{i}")], i);
            }
        }
        assert_eq!(data["setting"]["version"], TASKS * WRITES_PER_TASK);
        assert_eq!(history_rows(&app, "doc").await, (TASKS * WRITES_PER_TASK) as i64);
    }

    async fn concurrent_first_writes_of_new_keys_all_survive(app) {
        // Each round races four patches to create one key: all but one find it created by
        // another writer meanwhile, and must merge into it rather than replace it.
        let token = app.token("alice");
        for round in 0..200 {
            let key = format!("new{round}");
            let tasks: Vec<_> = (0..4)
                .map(|task| {
                    let (client, url, token, key) = (app.client.clone(), app.url("/graphql"), token.clone(), key.clone());
                    tokio::spawn(async move {
                        let body = json!({
                            "query": "mutation($p: JSON!) { updateSettings(patch: $p) { version } }",
                            "variables": {"p": {key: {format!("t{task}"): task}}},
                        });
                        let response: Value = client.post(&url).bearer_auth(&token).json(&body).send().await.unwrap().json().await.unwrap();
                        assert!(response.get("errors").is_none(), "{response}");
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let data = app.data(&token, "query($k: String!) { setting(key: $k) { value version } }", json!({"k": key})).await;
            let members = data["setting"]["value"].as_object().unwrap();
            assert_eq!(members.len(), 4, "round {round}: {data}");
            assert_eq!(data["setting"]["version"], 4, "round {round}: {data}");
        }
    }

    async fn concurrent_sets_of_one_key_leave_one_winner_and_count_every_write(app) {
        let token = app.token("alice");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (client, url, token) = (app.client.clone(), app.url("/graphql"), token.clone());
                tokio::spawn(async move {
                    for i in 0..WRITES_PER_TASK {
                        let body = json!({
                            "query": "mutation($v: JSON!) { setSetting(key: \"counter\", value: $v) { version } }",
                            "variables": {"v": {"task": task, "i": i}},
                        });
                        let response: Value = client.post(&url).bearer_auth(&token).json(&body).send().await.unwrap().json().await.unwrap();
                        assert!(response.get("errors").is_none(), "{response}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let data = app.data(&token, r#"{ setting(key: "counter") { value version } }"#, json!({})).await;
        assert_eq!(data["setting"]["version"], TASKS * WRITES_PER_TASK);
        let winner = &data["setting"]["value"];
        assert!(winner["task"].as_u64().unwrap() < TASKS as u64 && winner["i"] == WRITES_PER_TASK - 1, "{winner}");
        assert_eq!(history_rows(&app, "counter").await, (TASKS * WRITES_PER_TASK) as i64);
    }

    async fn a_stale_expected_version_is_a_conflict_and_writes_nothing(app) {
        let token = app.token("alice");
        app.set(&token, "a", json!(1)).await;
        app.set(&token, "a", json!(2)).await;

        let error = app.error(&token, SET_EXPECTING, json!({"k": "a", "v": 3, "e": 1})).await;
        assert_eq!(code(&error), "CONFLICT", "{error}");
        assert_eq!(error["extensions"]["currentVersion"], 2);
        let error = app.error(&token, DELETE_EXPECTING, json!({"k": "a", "e": 1})).await;
        assert_eq!((code(&error), &error["extensions"]["currentVersion"]), ("CONFLICT", &json!(2)));
        let error = app.error(&token, PATCH_EXPECTING, json!({"p": {"a": 3, "b": 1}, "e": {"a": 1}})).await;
        assert_eq!((code(&error), &error["extensions"]["currentVersion"]), ("CONFLICT", &json!(2)));
        assert_eq!(app.values(&token).await, json!({"a": 2}), "nothing of a refused write lands");
        assert_eq!(history_rows(&app, "a").await, 2);
        assert_eq!(history_rows(&app, "b").await, 0);

        let data = app.data(&token, SET_EXPECTING, json!({"k": "a", "v": 3, "e": 2})).await;
        assert_eq!(data["setSetting"], json!({"value": 3, "version": 3}));
        let data = app.data(&token, PATCH_EXPECTING, json!({"p": {"a": 4, "b": 1}, "e": {"a": 3, "b": 0}})).await;
        assert_eq!(data["updateSettings"], json!([{"key": "a", "version": 4}, {"key": "b", "version": 1}]));
        let data = app.data(&token, DELETE_EXPECTING, json!({"k": "b", "e": 1})).await;
        assert_eq!(data["deleteSetting"], true);
    }

    async fn expected_version_zero_creates_only(app) {
        let token = app.token("alice");
        let data = app.data(&token, SET_EXPECTING, json!({"k": "once", "v": 1, "e": 0})).await;
        assert_eq!(data["setSetting"]["version"], 1);
        let error = app.error(&token, SET_EXPECTING, json!({"k": "once", "v": 2, "e": 0})).await;
        assert_eq!((code(&error), &error["extensions"]["currentVersion"]), ("CONFLICT", &json!(1)));
        let error = app.error(&token, SET_EXPECTING, json!({"k": "absent", "v": 2, "e": 3})).await;
        assert_eq!((code(&error), &error["extensions"]["currentVersion"]), ("CONFLICT", &Value::Null));
        let error = app.error(&token, PATCH_EXPECTING, json!({"p": {"x": 1}, "e": {"y": 1}})).await;
        assert_eq!((code(&error), error["extensions"]["rule"].as_str()), ("BAD_USER_INPUT", Some("keyInPatch")));
        assert_eq!(app.values(&token).await, json!({"once": 1}));
    }

    async fn history_explains_every_write_one_to_one(app) {
        let token = app.token("alice");
        app.set(&token, "k", json!("v1")).await;
        app.set(&token, "k", json!("v2")).await;
        let patch = "mutation($p: JSON!) { updateSettings(patch: $p) { version } }";
        app.data(&token, patch, json!({"p": {"k": "v3"}})).await;
        // A failed patch leaves no row.
        app.error(&token, patch, json!({"p": {"k": "v4", "bad\u{1}": 1}})).await;
        // The request's correlation id is recorded.
        let response = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(&token)
            .header("x-correlation-id", "req-delete-1")
            .json(&json!({"query": "mutation { deleteSetting(key: \"k\") }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-correlation-id"], "req-delete-1");
        app.set(&token, "k", json!("again")).await;
        app.data(&token, "mutation { resetSettings(keys: [\"k\"]) { key } }", json!({})).await;

        let changes = history(&app, &token, "k").await;
        let summary: Vec<Value> = changes
            .iter()
            .map(|c| json!([c["kind"], c["version"], c["oldValue"], c["newValue"]]))
            .collect();
        assert_eq!(
            summary,
            vec![
                json!(["RESET", 4, "again", null]),
                json!(["CREATE", 4, null, "again"]),
                json!(["DELETE", 3, "v3", null]),
                json!(["UPDATE", 3, "v2", "v3"]),
                json!(["UPDATE", 2, "v1", "v2"]),
                json!(["CREATE", 1, null, "v1"]),
            ]
        );
        assert!(changes.iter().all(|c| c["actor"] == "alice" && c["interface"] == "graphql"));
        assert_eq!(changes[2]["correlationId"], "req-delete-1");
        assert_ne!(changes[1]["correlationId"], changes[3]["correlationId"]);
    }

    async fn history_pages_follow_their_cursors(app) {
        let token = app.token("alice");
        for i in 1..=25 {
            app.set(&token, "paged", json!(i)).await;
        }
        let mut seen = Vec::new();
        let mut after = Value::Null;
        let mut pages = 0;
        loop {
            let data = app.data(&token, HISTORY, json!({"k": "paged", "f": 10, "a": after})).await;
            let connection = &data["settingHistory"];
            pages += 1;
            assert_eq!(connection["pageInfo"]["hasPreviousPage"], pages > 1);
            seen.extend(connection["edges"].as_array().unwrap().iter().map(|e| e["node"]["version"].as_i64().unwrap()));
            if connection["pageInfo"]["hasNextPage"] == false {
                break;
            }
            after = connection["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, (1..=25).rev().collect::<Vec<_>>(), "newest first, each once");

        let error = app.error(&token, HISTORY, json!({"k": "paged", "a": "bm90LWEtY3Vyc29y"})).await;
        assert_eq!((code(&error), error["extensions"]["field"].as_str()), ("BAD_USER_INPUT", Some("after")));
        let error = app.error(&token, HISTORY, json!({"k": "paged", "f": 101})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT");
    }

    async fn revert_writes_an_old_value_as_a_new_version(app) {
        let token = app.token("alice");
        for value in ["a", "b", "c"] {
            app.set(&token, "r", json!(value)).await;
        }
        let revert = "mutation($v: Int!) { revertSetting(key: \"r\", toVersion: $v) { value version } }";
        let data = app.data(&token, revert, json!({"v": 1})).await;
        assert_eq!(data["revertSetting"], json!({"value": "a", "version": 4}));
        let newest = &history(&app, &token, "r").await[0];
        assert_eq!(json!([newest["kind"], newest["oldValue"], newest["newValue"]]), json!(["REVERT", "c", "a"]));
        let error = app.error(&token, revert, json!({"v": 9})).await;
        assert_eq!(code(&error), "NOT_FOUND", "{error}");
        // Another user's history is not a source.
        let bob = app.token("bob");
        let error = app.error(&bob, revert, json!({"v": 1})).await;
        assert_eq!(code(&error), "NOT_FOUND", "{error}");
    }

    async fn an_administrator_reads_and_reverts_another_users_setting_as_the_actor(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("light")).await;
        app.set(&alice, "theme", json!("neon")).await;
        let support = app.token_for(settings_api::auth::TokenRequest {
            sub: "support-1".into(),
            roles: vec!["admin".into()],
            ttl: std::time::Duration::from_secs(600),
            ..Default::default()
        });
        let read = "query($u: String) { settingHistory(key: \"theme\", userId: $u) { edges { node { version newValue actor } } } }";
        let seen = app.data(&support, read, json!({"u": "alice"})).await;
        assert_eq!(
            seen["settingHistory"]["edges"],
            json!([
                {"node": {"version": 2, "newValue": "neon", "actor": "alice"}},
                {"node": {"version": 1, "newValue": "light", "actor": "alice"}},
            ])
        );
        let revert = "mutation($u: String) { revertSetting(key: \"theme\", toVersion: 1, userId: $u) { value version } }";
        let reverted = app.data(&support, revert, json!({"u": "alice"})).await;
        assert_eq!(reverted["revertSetting"], json!({"value": "light", "version": 3}));
        assert_eq!(app.values(&alice).await, json!({"theme": "light"}));
        let newest = &history(&app, &alice, "theme").await[0];
        assert_eq!(json!([newest["kind"], newest["actor"]]), json!(["REVERT", "support-1"]));
        // The administrator's own settings are untouched.
        assert_eq!(app.values(&support).await, json!({}));

        // Without the admin role, another user's settings are out of reach.
        let bob = app.token("bob");
        for (query, name) in [(read, "settingHistory"), (revert, "revertSetting")] {
            let (_, body) = app.graphql(&bob, query, json!({"u": "alice"})).await;
            assert_eq!(code(&body["errors"][0]), "FORBIDDEN", "{name}: {body}");
        }
        assert_eq!(app.values(&alice).await, json!({"theme": "light"}));
        // Naming oneself is the same as naming nobody.
        let own = app.data(&alice, read, json!({"u": "alice"})).await;
        assert_eq!(own["settingHistory"]["edges"].as_array().map(Vec::len), Some(3));
    }
}

/// Waits until `done` holds, polling; the test fails if it never does.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s");
}

async fn retention_prunes_old_changes_in_the_background(backend: Backend) {
    let options = Options::default()
        .env("HISTORY_KEEP_VERSIONS", "3")
        .env("HISTORY_KEEP_DAYS", "30")
        .env("HISTORY_PRUNE_INTERVAL_SECS", "1");
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    let token = app.token("alice");
    for i in 1..=8 {
        app.set(&token, "kept", json!(i)).await;
    }
    app.set(&token, "aged", json!(1)).await;
    app.execute_sql(
        "UPDATE setting_changes SET changed_at = '2001-01-01 00:00:00+00:00' WHERE key = 'aged'",
    )
    .await;

    eventually("pruning by count", || async {
        history(&app, &token, "kept").await.len() == 3
    })
    .await;
    let versions: Vec<Value> = history(&app, &token, "kept")
        .await
        .iter()
        .map(|c| c["version"].clone())
        .collect();
    assert_eq!(versions, vec![json!(8), json!(7), json!(6)]);
    eventually("pruning by age", || async {
        history(&app, &token, "aged").await.is_empty()
    })
    .await;
    assert_eq!(
        app.values(&token).await,
        json!({"aged": 1, "kept": 8}),
        "pruning never touches settings"
    );
}

on_both_backends!(retention_prunes_old_changes_in_the_background,);
