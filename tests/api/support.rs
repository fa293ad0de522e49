//! Support: administrators read any user with `user` and `users`, batched so that many users
//! cost the queries of one, and change a user's settings with `userId`, recorded as theirs.

use serde_json::{Value, json};

use crate::helpers::*;

const USERS: &str = "query($ids: [String!]!) { users(ids: $ids) { id \
    settings { key value } \
    effectiveSettings(keys: [\"theme\"]) { key value source } \
    settingHistory(key: \"theme\", first: 2) { edges { node { kind newValue actor } } pageInfo { hasNextPage } } } }";

/// Statements the application sent while `query` ran.
async fn statements_of(app: &TestApp, token: &str, query: &str, variables: Value) -> u64 {
    let before = app.store.statements();
    let (status, body) = app.graphql(token, query, variables).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    app.store.statements() - before
}

both_backends! {
    async fn an_administrator_writes_a_users_settings_and_the_history_names_the_administrator(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("dark")).await;
        let admin = app.admin_token("support-1");

        let set = "mutation { setSetting(key: \"theme\", value: \"light\", userId: \"alice\") { key value version } }";
        assert_eq!(
            app.data(&admin, set, json!({})).await,
            json!({"setSetting": {"key": "theme", "value": "light", "version": 2}})
        );
        let patch = "mutation { updateSettings(patch: {fontSize: 14}, userId: \"alice\") { key value } }";
        assert_eq!(
            app.data(&admin, patch, json!({})).await,
            json!({"updateSettings": [{"key": "fontSize", "value": 14}]})
        );
        let delete = "mutation { deleteSetting(key: \"fontSize\", userId: \"alice\") }";
        assert_eq!(app.data(&admin, delete, json!({})).await, json!({"deleteSetting": true}));

        // Alice sees what support wrote, and her history says who wrote it.
        assert_eq!(app.values(&alice).await, json!({"theme": "light"}));
        let history = app
            .data(&alice, "{ settingHistory(key: \"theme\") { nodes { actor newValue } } }", json!({}))
            .await;
        assert_eq!(
            history["settingHistory"]["nodes"],
            json!([{"actor": "support-1", "newValue": "light"}, {"actor": "alice", "newValue": "dark"}])
        );
        // The administrator's own settings are untouched.
        assert_eq!(app.values(&admin).await, json!({}));
    }

    async fn writes_for_another_user_need_the_admin_role_and_a_known_user(app) {
        let alice = app.token("alice");
        app.set(&alice, "theme", json!("dark")).await;
        let mallory = app.token("mallory");
        for mutation in [
            "mutation { setSetting(key: \"theme\", value: \"x\", userId: \"alice\") { key } }",
            "mutation { updateSettings(patch: {theme: \"x\"}, userId: \"alice\") { key } }",
            "mutation { deleteSetting(key: \"theme\", userId: \"alice\") }",
            "mutation { restoreSettings(asOf: \"2026-01-01T00:00:00Z\", userId: \"alice\") { key } }",
            "mutation { revertSetting(key: \"theme\", toVersion: 1, userId: \"alice\") { key } }",
        ] {
            let error = app.error(&mallory, mutation, json!({})).await;
            assert_eq!(code(&error), "FORBIDDEN", "{mutation}: {error}");
        }
        assert_eq!(app.values(&alice).await, json!({"theme": "dark"}));

        let admin = app.admin_token("support-1");
        let error = app
            .error(&admin, "mutation { setSetting(key: \"theme\", value: \"x\", userId: \"nobody\") { key } }", json!({}))
            .await;
        assert_eq!(code(&error), "NOT_FOUND", "{error}");
        // A user naming themselves needs no role.
        let own = "mutation { setSetting(key: \"theme\", value: \"light\", userId: \"alice\") { value } }";
        assert_eq!(app.data(&alice, own, json!({})).await, json!({"setSetting": {"value": "light"}}));
    }

    async fn support_reads_users_in_order_with_their_settings_effective_values_and_history(app) {
        for (user, theme) in [("u1", "dark"), ("u2", "light")] {
            let token = app.token(user);
            app.set(&token, "theme", json!(theme)).await;
            app.set(&token, "fontSize", json!(12)).await;
        }
        app.set(&app.token("u2"), "theme", json!("dark")).await;
        let admin = app.admin_token("support-1");

        let data = app.data(&admin, USERS, json!({"ids": ["u2", "nobody", "u1"]})).await;
        assert_eq!(
            data["users"],
            json!([
                {
                    "id": "u2",
                    "settings": [{"key": "fontSize", "value": 12}, {"key": "theme", "value": "dark"}],
                    "effectiveSettings": [{"key": "theme", "value": "dark", "source": "USER"}],
                    "settingHistory": {
                        "edges": [
                            {"node": {"kind": "UPDATE", "newValue": "dark", "actor": "u2"}},
                            {"node": {"kind": "CREATE", "newValue": "light", "actor": "u2"}},
                        ],
                        "pageInfo": {"hasNextPage": false},
                    },
                },
                null,
                {
                    "id": "u1",
                    "settings": [{"key": "fontSize", "value": 12}, {"key": "theme", "value": "dark"}],
                    "effectiveSettings": [{"key": "theme", "value": "dark", "source": "USER"}],
                    "settingHistory": {
                        "edges": [{"node": {"kind": "CREATE", "newValue": "dark", "actor": "u1"}}],
                        "pageInfo": {"hasNextPage": false},
                    },
                },
            ])
        );
        let one = app
            .data(&admin, "{ user(id: \"u1\") { id settings(keys: [\"theme\"]) { value } } missing: user(id: \"nobody\") { id } }", json!({}))
            .await;
        assert_eq!(
            one,
            json!({"user": {"id": "u1", "settings": [{"value": "dark"}]}, "missing": null})
        );
        // The history pages as the user's own does.
        let paged = app
            .data(&admin, "{ user(id: \"u2\") { settingHistory(key: \"theme\", first: 1) { pageInfo { hasNextPage } nodes { newValue } } } }", json!({}))
            .await;
        assert_eq!(
            paged["user"]["settingHistory"],
            json!({"pageInfo": {"hasNextPage": true}, "nodes": [{"newValue": "dark"}]})
        );
    }

    async fn many_users_cost_the_queries_of_one(app) {
        let ids: Vec<String> = (0..20).map(|i| format!("batch-{i}")).collect();
        for id in &ids {
            let token = app.token(id);
            app.set(&token, "theme", json!("dark")).await;
            app.set(&token, "theme", json!("light")).await;
        }
        let admin = app.admin_token("support-1");
        // The administrator's row is written on first sight; count from the second request.
        app.data(&admin, "{ me { id } }", json!({})).await;

        let one = statements_of(&app, &admin, USERS, json!({"ids": &ids[..1]})).await;
        let twenty = statements_of(&app, &admin, USERS, json!({"ids": ids})).await;
        assert_eq!(one, twenty, "the fields under 20 users cost as many statements as under one");
        // The users, their settings, the organisation defaults and their rows, the history.
        assert!((1..=5).contains(&one), "{one} statements for one user");

        let data = app.data(&admin, USERS, json!({"ids": ids})).await;
        let users = data["users"].as_array().unwrap();
        assert_eq!(users.len(), 20);
        assert!(users.iter().all(|u| u["settings"] == json!([{"key": "theme", "value": "light"}])));
    }

    async fn only_administrators_read_other_users(app) {
        app.set(&app.token("alice"), "theme", json!("dark")).await;
        let mallory = app.token("mallory");
        for query in [
            "{ user(id: \"alice\") { id } }",
            "{ users(ids: [\"alice\"]) { id } }",
            "{ settingHistory(key: \"theme\", userId: \"alice\") { nodes { newValue } } }",
        ] {
            let error = app.error(&mallory, query, json!({})).await;
            assert_eq!(code(&error), "FORBIDDEN", "{query}: {error}");
        }
        let admin = app.admin_token("support-1");
        let ids: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let error = app.error(&admin, USERS, json!({"ids": ids})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
    }
}
