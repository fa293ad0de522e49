//! Set, read, update and delete through GraphQL.

use serde_json::{Value, json};
use settings_api::auth::TokenRequest;

use crate::helpers::*;

fn is_utc_millis(value: &serde_json::Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    let bytes = text.as_bytes();
    text.len() == 24
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
        && bytes[19] == b'.'
        && bytes[23] == b'Z'
}

both_backends! {
    async fn set_setting_creates_then_replaces_with_a_growing_version(app) {
        let token = app.token("alice");
        let created = app.set(&token, "editor", json!({"fontSize": 14})).await;
        assert_eq!(created["key"], "editor");
        assert_eq!(created["value"], json!({"fontSize": 14}));
        assert_eq!(created["version"], 1);
        assert!(is_utc_millis(&created["createdAt"]), "{created}");
        assert_eq!(created["createdAt"], created["updatedAt"]);

        let replaced = app.set(&token, "editor", json!("compact")).await;
        assert_eq!(replaced["value"], "compact");
        assert_eq!(replaced["version"], 2);
        assert_eq!(replaced["createdAt"], created["createdAt"]);
        assert!(replaced["updatedAt"].as_str() >= created["updatedAt"].as_str());
    }

    async fn values_of_every_json_type_round_trip(app) {
        let token = app.token("alice");
        let values = json!({
            "string": "héllo ✓ \"quoted\"",
            "integer": -42,
            "float": 1.5,
            "big": 9007199254740993u64,
            "bool": false,
            "array": [1, "two", {"three": [3]}, null],
            "object": {"nested": {"deep": true}, "empty": {}, "nothing": null},
        });
        for (key, value) in values.as_object().unwrap() {
            app.set(&token, key, value.clone()).await;
        }
        assert_eq!(app.values(&token).await, values);
    }

    async fn settings_lists_keys_in_order_and_filters_by_keys(app) {
        let token = app.token("alice");
        for key in ["zeta", "alpha", "mid"] {
            app.set(&token, key, json!(key)).await;
        }
        let all = app.data(&token, "{ settings { key } }", json!({})).await;
        assert_eq!(all, json!({"settings": [{"key": "alpha"}, {"key": "mid"}, {"key": "zeta"}]}));

        let some = app
            .data(&token, r#"{ settings(keys: ["zeta", "alpha", "absent"]) { key value } }"#, json!({}))
            .await;
        assert_eq!(some, json!({"settings": [{"key": "alpha", "value": "alpha"}, {"key": "zeta", "value": "zeta"}]}));
    }

    async fn setting_reads_one_key_and_is_null_when_absent(app) {
        let token = app.token("alice");
        app.set(&token, "lang", json!("en")).await;
        let data = app
            .data(&token, r#"{ lang: setting(key: "lang") { value version } none: setting(key: "none") { value } }"#, json!({}))
            .await;
        assert_eq!(data, json!({"lang": {"value": "en", "version": 1}, "none": null}));
    }

    async fn delete_setting_removes_the_key_and_says_whether_it_existed(app) {
        let token = app.token("alice");
        app.set(&token, "lang", json!("en")).await;
        let delete = r#"mutation { deleteSetting(key: "lang") }"#;
        assert_eq!(app.data(&token, delete, json!({})).await, json!({"deleteSetting": true}));
        assert_eq!(app.data(&token, delete, json!({})).await, json!({"deleteSetting": false}));
        assert_eq!(app.values(&token).await, json!({}));

        // A key written again goes on from its last version, so that an expected version
        // read before the delete cannot match the new value.
        let recreated = app.set(&token, "lang", json!("fr")).await;
        assert_eq!(recreated["version"], 2, "{recreated}");
        let stale = app
            .error(&token, r#"mutation { setSetting(key: "lang", value: "de", expectedVersion: 1) { version } }"#, json!({}))
            .await;
        assert_eq!(code(&stale), "CONFLICT", "{stale}");
        assert_eq!(stale["extensions"]["currentVersion"], 2);
        let patched = app
            .data(&token, r#"mutation { deleteSetting(key: "lang") updateSettings(patch: {lang: "it"}) { version } }"#, json!({}))
            .await;
        assert_eq!(patched["updateSettings"], json!([{"version": 3}]));
    }

    async fn scopes_keep_separate_values_for_the_same_key(app) {
        let token = app.token("alice");
        app.set(&token, "theme", json!("light")).await;
        let set_in_scope = r#"mutation { setSetting(key: "theme", value: "dark", scope: "mobile") { scope value } }"#;
        let data = app.data(&token, set_in_scope, json!({})).await;
        assert_eq!(data, json!({"setSetting": {"scope": "mobile", "value": "dark"}}));

        let read = r#"{ default: settings { scope value } mobile: settings(scope: "mobile") { scope value } }"#;
        assert_eq!(
            app.data(&token, read, json!({})).await,
            json!({"default": [{"scope": "", "value": "light"}], "mobile": [{"scope": "mobile", "value": "dark"}]})
        );
    }

    async fn me_reflects_the_token_and_follows_claim_changes(app) {
        let first = app.token_for(TokenRequest {
            sub: "carol".into(),
            email: Some("carol@example.com".into()),
            roles: vec!["admin".into()],
            scope: None,
            ttl: std::time::Duration::from_secs(600),
        });
        app.set(&first, "lang", json!("en")).await;
        let me = app.data(&first, "{ me { id email roles locale settings { key value } } }", json!({})).await;
        assert_eq!(
            me,
            json!({"me": {"id": "carol", "email": "carol@example.com", "roles": ["admin"], "locale": null,
                          "settings": [{"key": "lang", "value": "en"}]}})
        );

        let changed = app.token_for(TokenRequest {
            sub: "carol".into(),
            email: Some("carol@new.example".into()),
            roles: vec![],
            scope: None,
            ttl: std::time::Duration::from_secs(600),
        });
        let me = app.data(&changed, "{ me { email roles } }", json!({})).await;
        assert_eq!(me, json!({"me": {"email": "carol@new.example", "roles": []}}));
    }

    async fn a_known_user_with_unchanged_claims_costs_no_user_write(app) {
        let claims = |email: &str| TokenRequest {
            sub: "dave".into(),
            email: Some(email.into()),
            roles: vec![],
            scope: None,
            ttl: std::time::Duration::from_secs(600),
        };
        let first = app.token_for(claims("dave@example.com"));
        app.data(&first, "{ me { id } }", json!({})).await;
        let marker = "UPDATE users SET updated_at = '2001-01-01T00:00:00Z' WHERE id = 'dave'";
        let stamp = "SELECT CAST(updated_at AS TEXT) FROM users WHERE id = 'dave'";
        app.execute_sql(marker).await;
        let before = app.query_text(stamp).await;

        let again = app.token_for(claims("dave@example.com"));
        app.data(&again, "{ me { id } }", json!({})).await;
        assert_eq!(app.query_text(stamp).await, before, "same claims: the users row was not rewritten");

        let changed = app.token_for(claims("dave@new.example"));
        app.data(&changed, "{ me { id } }", json!({})).await;
        assert_ne!(app.query_text(stamp).await, before, "a changed email is stored");
    }
}

both_backends! {
    async fn every_cacheable_object_has_an_id_stable_per_user_scope_and_key(app) {
        let alice = app.token("alice");
        let bob = app.token("bob");
        const SET: &str = "mutation($k: String!, $s: String!) { setSetting(key: $k, value: 1, scope: $s) { id } }";
        let id = |data: Value| data["setSetting"]["id"].as_str().unwrap().to_owned();
        let theme = id(app.data(&alice, SET, json!({"k": "theme", "s": ""})).await);
        // Written again, the same setting keeps its id; a client's normalized cache updates it.
        assert_eq!(id(app.data(&alice, SET, json!({"k": "theme", "s": ""})).await), theme);
        let listed = app.data(&alice, "{ settings { id key } }", json!({})).await;
        assert_eq!(listed["settings"], json!([{"id": theme, "key": "theme"}]));
        // Another key, scope or user is another object.
        let others = [
            id(app.data(&alice, SET, json!({"k": "font", "s": ""})).await),
            id(app.data(&alice, SET, json!({"k": "theme", "s": "mobile"})).await),
            id(app.data(&bob, SET, json!({"k": "theme", "s": ""})).await),
        ];
        for other in &others {
            assert_ne!(other, &theme);
        }
        assert_ne!(others[0], others[1]);

        let effective = app.data(&alice, r#"{ a: effectiveSettings(keys: ["theme"]) { id } b: effectiveSettings(scope: "mobile", keys: ["theme"]) { id } }"#, json!({})).await;
        assert_ne!(effective["a"][0]["id"], effective["b"][0]["id"]);
        assert_ne!(effective["a"][0]["id"], json!(theme), "an effective value is not the stored setting");
        let history = app.data(&alice, r#"{ settingHistory(key: "theme") { edges { node { id version } } } }"#, json!({})).await;
        let ids: std::collections::BTreeSet<&str> = history["settingHistory"]["edges"].as_array().unwrap().iter().map(|e| e["node"]["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 2, "one id per change: {history}");
        let me = app.data(&alice, "{ me { id } }", json!({})).await;
        assert_eq!(me["me"]["id"], "alice");
    }
}

/// PostgreSQL: replacing a stored value is one statement, for a key the organisation may lock
/// (the statement checks the lock itself) as for a free-form one; the same statement notifies
/// the other instances.
#[tokio::test]
async fn replacing_a_stored_setting_is_one_statement_on_postgres() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = app.token("alice");
    let set = "mutation($k: String!, $v: JSON!) { setSetting(key: $k, value: $v, scope: \"contract-003\") { version } }";
    // `notifications` is a catalog key of the scope; `nickname` is not.
    for (key, first, second) in [
        ("notifications", json!(true), json!(false)),
        ("nickname", json!("al"), json!("alice")),
    ] {
        app.data(&token, set, json!({"k": key, "v": first})).await;
        let (data, statements) = app
            .data_and_statements(&token, set, json!({"k": key, "v": second}))
            .await;
        assert_eq!(data["setSetting"]["version"], 2);
        assert_eq!(statements, 1, "{key}: the write, which notifies");
    }
}

/// PostgreSQL: a patch of stored keys is planned on the settings as read and written in one
/// statement (the rows, the history rows with their feed positions, the notice to the other
/// instances). Settings in the cache cost no read; after a write that created keys
/// they are read again.
#[tokio::test]
async fn a_patch_of_stored_settings_is_one_statement_after_the_read_on_postgres() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = app.token("alice");
    let patch = "mutation($p: JSON!) { updateSettings(patch: $p) { key version } }";
    app.data(
        &token,
        patch,
        json!({"p": {"a": "long value", "b": [1, 2, 3]}}),
    )
    .await;
    // The write left the cache without alice's settings: one read first.
    let (data, statements) = app
        .data_and_statements(&token, patch, json!({"p": {"a": "longer value"}}))
        .await;
    assert_eq!(data["updateSettings"], json!([{"key": "a", "version": 2}]));
    assert_eq!(statements, 2, "the read and the write");
    app.values(&token).await;
    let (data, statements) = app
        .data_and_statements(&token, patch, json!({"p": {"a": "short", "b": [1]}}))
        .await;
    assert_eq!(
        data["updateSettings"],
        json!([{"key": "a", "version": 3}, {"key": "b", "version": 2}])
    );
    assert_eq!(statements, 1, "the write");
    let history = app
        .data(
            &token,
            "{ settingHistory(key: \"b\") { edges { node { version oldValue newValue } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        history["settingHistory"]["edges"][0]["node"],
        json!({"version": 2, "oldValue": [1, 2, 3], "newValue": [1]})
    );
}

#[tokio::test]
async fn a_column_of_another_type_than_the_service_reads_is_an_error_not_a_misread_value() {
    let options = Options::default().env("SETTINGS_CACHE_MB", "0");
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let token = app.token("alice");
    for key in ["a", "b", "c"] {
        app.set(&token, key, json!(key)).await;
    }
    // The versions become text ("1"), which no read has prepared its statement for yet.
    app.execute_sql("ALTER TABLE settings ALTER COLUMN version TYPE text")
        .await;
    let (_, body) = app
        .graphql(&token, "{ settings { key version } }", json!({}))
        .await;
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(code(&body["errors"][0]), "INTERNAL", "{body}");
}

both_backends! {
    // Without the cache every read comes from the database.
    options = Options::linguistic_collation().env("SETTINGS_CACHE_MB", "0");

    async fn keys_are_ordered_by_their_bytes_whatever_the_database_collation(app) {
        // ICU's English order would be `_x`, `10`, `9`, `a`, `A`, `a_b`, `a-b`, `b`, `B`.
        let order = ["10", "9", "A", "B", "_x", "a", "a-b", "a_b", "b"];
        let token = app.token("alice");
        let patch: serde_json::Map<String, Value> = order.iter().rev().map(|&key| (key.to_owned(), json!(key))).collect();
        let written = app
            .data(&token, "mutation($p: JSON!) { updateSettings(patch: $p) { key } }", json!({"p": patch}))
            .await;
        let keys = |list: &Value| -> Vec<String> {
            list.as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(keys(&written["updateSettings"]), order);

        let listed = app.data(&token, "{ settings { key } }", json!({})).await;
        assert_eq!(keys(&listed["settings"]), order);
        let rest = app.rest("GET", "/api/v1/users/me/settings", Some(&token), None).await;
        assert_eq!(keys(&rest.body["data"]), order);
        let some = app.data(&token, r#"{ settings(keys: ["b", "A", "_x"]) { key } }"#, json!({})).await;
        assert_eq!(keys(&some["settings"]), ["A", "_x", "b"]);
    }
}
