//! What all legacy routes share: one store, no framework error in any envelope, no lost update,
//! a history row per change, and the OpenAPI document.

use serde_json::{Value, json};

use crate::helpers::*;

/// One request per route family that writes `theme`, with the family's error check.
const WRITES: [(&str, &str, &str); 5] = [
    (
        "PUT",
        "/api/v1/users/me/settings/theme",
        r#"{"value": "light"}"#,
    ),
    ("PUT", "/settings/user", r#"{"theme": "light"}"#),
    (
        "PUT",
        "/api/v1/users/preferences/update",
        r#"{"updatedPreferences": {"theme": "light"}}"#,
    ),
    (
        "PATCH",
        "/api/v1/user-settings",
        r#"{"notifications": false}"#,
    ),
    ("PATCH", "/api/v1/users/settings", r#"{"theme": "light"}"#),
];

/// Checks that `body` is the error envelope of the family at `path` with `status`.
fn assert_envelope(path: &str, status: u16, body: &Value) {
    match path {
        p if p.starts_with("/api/v1/users/me/settings") => {
            assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{path}: {body}"
            )
        }
        "/settings/user" => {
            assert_eq!(body["success"], false, "{path}: {body}");
            assert!(body["message"].is_string(), "{path}: {body}");
        }
        p if p.starts_with("/api/v1/users/preferences") => {
            assert_eq!(body["status"], status.to_string(), "{path}: {body}");
            assert!(body["detail"].is_string(), "{path}: {body}");
        }
        "/api/v1/user-settings" => {
            assert_eq!(
                (body["isSuccess"].clone(), body["statusCode"].clone()),
                (json!(false), json!(status)),
                "{path}: {body}"
            );
            assert_eq!(body["data"], Value::Null, "{path}: {body}");
            let errors = body["errors"].as_array();
            assert!(errors.is_some_and(|e| !e.is_empty() && e.iter().all(Value::is_string)));
            assert!(body["timestamp"].is_string(), "{path}: {body}");
        }
        "/api/v1/users/settings" => {
            assert_eq!(body["success"], false, "{path}: {body}");
            let error = &body["error"];
            for member in ["code", "message", "i18nKey", "correlationId"] {
                assert!(error[member].is_string(), "{path}: {member} in {body}");
            }
            assert!(error["details"].is_array(), "{path}: {body}");
        }
        other => panic!("no family for {other}"),
    }
}

both_backends! {
    async fn a_value_written_anywhere_is_what_every_route_reads(app) {
        let token = app.token("alice");
        // By default the free-form contracts and GraphQL share the default scope, and the typed
        // contract 004 sees a value of the default scope that its type accepts.
        let theme_everywhere = |expected: &'static str, typed: &'static str| {
            let (app, token) = (&app, &token);
            async move {
                let one = app.rest("GET", "/api/v1/users/me/settings/theme", Some(token), None).await;
                assert_eq!(one.body["data"]["value"], expected);
                let all = app.rest("GET", "/settings/user", Some(token), None).await;
                assert_eq!(all.body["data"]["theme"], expected);
                let prefs = app.rest("GET", "/api/v1/users/preferences", Some(token), None).await;
                assert_eq!(prefs.body["object"]["preferences"]["theme"], expected);
                let graphql = app.data(token, r#"{ setting(key: "theme") { value } }"#, json!({})).await;
                assert_eq!(graphql["setting"]["value"], expected);
                let row = app.rest("GET", "/api/v1/users/settings", Some(token), None).await;
                assert_eq!(row.body["data"]["theme"], typed);
            }
        };
        app.set(&token, "theme", json!("graphql")).await;
        theme_everywhere("graphql", "graphql").await;
        app.rest("PUT", "/api/v1/users/me/settings/theme", Some(&token), Some(json!({"value": "per-key"}))).await;
        theme_everywhere("per-key", "per-key").await;
        app.rest("PUT", "/settings/user", Some(&token), Some(json!({"theme": "partial"}))).await;
        theme_everywhere("partial", "partial").await;
        app.rest("PUT", "/api/v1/users/preferences/update", Some(&token), Some(json!({"updatedPreferences": {"theme": "prefs"}}))).await;
        theme_everywhere("prefs", "prefs").await;
        // Contract 004 writes its own scope, which GraphQL reads by naming it.
        app.rest("PATCH", "/api/v1/users/settings", Some(&token), Some(json!({"theme": "sparse"}))).await;
        theme_everywhere("prefs", "sparse").await;
        let graphql = app.data(&token, r#"{ setting(key: "theme", scope: "contract-004") { value } }"#, json!({})).await;
        assert_eq!(graphql["setting"]["value"], "sparse");

        // Contract 003 likewise: it reads a boolean of the default scope, and keeps its writes.
        app.set(&token, "notifications", json!(false)).await;
        let typed = app.rest("GET", "/api/v1/user-settings", Some(&token), None).await;
        assert_eq!(typed.body["notifications"], false);
        app.rest("PATCH", "/api/v1/user-settings", Some(&token), Some(json!({"notifications": true}))).await;
        let one = app.rest("GET", "/api/v1/users/me/settings/notifications", Some(&token), None).await;
        assert_eq!(one.body["data"]["value"], false);
        let typed = app.rest("GET", "/api/v1/user-settings", Some(&token), None).await;
        assert_eq!(typed.body["notifications"], true);
    }

    async fn malformed_json_wrong_types_scopes_sizes_and_methods_answer_in_each_envelope(app) {
        let token = app.token("alice");
        let huge = format!(r#"{{"x": "{}"}}"#, "y".repeat(1024 * 1024));
        for (method, path, body) in WRITES {
            let malformed = app.send(app.request(method, path, Some(&token)).header("content-type", "application/json").body("{\"theme\": ")).await;
            assert_eq!(malformed.status, 400, "{path}");
            assert_envelope(path, 400, &malformed.body);

            let oversized = app.send(app.request(method, path, Some(&token)).header("content-type", "application/json").body(huge.clone())).await;
            assert_eq!(oversized.status, 413, "{path}");
            assert_envelope(path, 413, &oversized.body);

            let wrong = app.send(app.request("POST", path, Some(&token))).await;
            assert_eq!(wrong.status, 405, "{path}");
            assert!(wrong.headers.contains_key("allow"), "{path}");
            assert_envelope(path, 405, &wrong.body);

            // Only 002's document lists 415 (its `default` response); for the others a body
            // not declared as JSON is one more validation error.
            let not_json = if path.starts_with("/api/v1/users/preferences") { 415 } else { 400 };
            let text = app.send(app.request(method, path, Some(&token)).header("content-type", "text/plain").body(body)).await;
            assert_eq!(text.status, not_json, "{path}");
            assert_envelope(path, not_json, &text.body);

            let reader = scoped_token("alice", "settings:read");
            let forbidden = app.send(app.request(method, path, Some(&reader)).header("content-type", "application/json").body(body)).await;
            assert_eq!(forbidden.status, 403, "{path}");
            assert_envelope(path, 403, &forbidden.body);
        }
        assert_eq!(app.values(&token).await, json!({}));
    }

    async fn an_organisation_default_that_fills_a_field_changes_the_documents_tag(app) {
        let token = app.token("alice");
        let admin = app.token_for(settings_api::auth::TokenRequest {
            sub: "root".into(),
            roles: vec!["admin".into()],
            ttl: std::time::Duration::from_secs(600),
            ..Default::default()
        });
        let routes = [
            ("/api/v1/users/settings", "theme", json!("solarized"), json!({"locale": "de"}), 412),
            ("/api/v1/user-settings", "preferredLanguage", json!("tr"), json!({"notifications": false}), 409),
        ];
        for (path, key, default, update, stale_status) in routes {
            let before = app.rest("GET", path, Some(&token), None).await;
            let old_tag = before.header("etag").unwrap().to_owned();
            app.data(
                &admin,
                "mutation($k: String!, $v: JSON) { setOrgDefault(key: $k, value: $v) { key } }",
                json!({"k": key, "v": default}),
            )
            .await;

            let cached = app.send(app.request("GET", path, Some(&token)).header("if-none-match", &old_tag)).await;
            assert_eq!(cached.status, 200, "{path}: a changed default is a changed document");
            let shown = cached.body.get("data").unwrap_or(&cached.body);
            assert_eq!(shown[key], default, "{path}: {:?}", cached.body);
            let new_tag = cached.header("etag").unwrap().to_owned();
            assert_ne!(new_tag, old_tag, "{path}");

            let patch = |tag: &str| app.request("PATCH", path, Some(&token)).header("if-match", tag).json(&update);
            assert_eq!(app.send(patch(&old_tag)).await.status, stale_status, "{path}");
            assert_eq!(app.send(patch(&new_tag)).await.status, 200, "{path}");
        }
        assert_eq!(app.values_in(&token, "contract-004").await, json!({"locale": "de"}));
        assert_eq!(app.values_in(&token, "contract-003").await, json!({"notifications": false}));
    }

    async fn paths_below_each_route_that_name_nothing_are_a_404_in_its_envelope(app) {
        let token = app.token("alice");
        let unknown = [
            ("/api/v1/users/me/settings", "/api/v1/users/me/settings/"),
            ("/api/v1/users/me/settings", "/api/v1/users/me/settings/theme/extra"),
            ("/settings/user", "/settings/user/"),
            ("/settings/user", "/settings/user/theme"),
            ("/api/v1/users/preferences", "/api/v1/users/preferences/"),
            ("/api/v1/users/preferences", "/api/v1/users/preferences/other"),
            ("/api/v1/users/me/settings", "/api/v1/users/me/settings/theme/"),
            ("/api/v1/users/preferences", "/api/v1/users/preferences/update/"),
            ("/api/v1/users/preferences", "/api/v1/users/preferences/update/x"),
            ("/api/v1/user-settings", "/api/v1/user-settings/"),
            ("/api/v1/user-settings", "/api/v1/user-settings/x"),
            ("/api/v1/users/settings", "/api/v1/users/settings/"),
            ("/api/v1/users/settings", "/api/v1/users/settings/theme"),
        ];
        for (family, path) in unknown {
            for method in ["GET", "PUT"] {
                let reply = app.rest(method, path, Some(&token), Some(json!({}))).await;
                assert_eq!(reply.status, 404, "{method} {path}: {:?}", reply.body);
                assert_envelope(family, 404, &reply.body);
            }
        }
        // The routes themselves still answer.
        let update = app.rest("PUT", "/api/v1/users/preferences/update", Some(&token), Some(json!({"updatedPreferences": {"a": 1}}))).await;
        assert_eq!(update.status, 200, "{:?}", update.body);
        assert_eq!(app.values(&token).await, json!({"a": 1}));
    }

    async fn an_unexpected_failure_is_reported_with_a_correlation_id_and_no_cause(app) {
        let token = app.token("alice");
        // Arrange what no API can: the settings table is gone.
        app.execute_sql("DROP TABLE setting_changes").await;
        app.execute_sql("DROP TABLE settings").await;
        for (method, path, body) in WRITES {
            let reply = app.send(app.request(method, path, Some(&token)).header("content-type", "application/json").body(body)).await;
            assert_eq!(reply.status, 500, "{path}: {:?}", reply.body);
            assert_envelope(path, 500, &reply.body);
            let id = reply.header("x-correlation-id").unwrap().to_owned();
            let text = reply.body.to_string();
            assert!(text.contains(&id), "{path}: the body names the correlation id: {text}");
            for leak in ["relation \"", "no such table", "SELECT", "INSERT", "sqlx"] {
                assert!(!text.contains(leak), "{path}: the cause leaked ({leak}): {text}");
            }
        }
        let reply = app.rest("PUT", "/settings/user", Some(&token), Some(json!({"a": 1}))).await;
        assert_eq!(reply.body["message"], "Internal server error");
        assert!(reply.body["error"].as_str().unwrap().contains("correlation id"));
    }

    async fn concurrent_rest_patches_lose_no_member_and_count_every_write(app) {
        const TASKS: usize = 16;
        const WRITES_PER_TASK: usize = 10;
        let token = app.token("alice");
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let (client, token) = (app.client.clone(), token.clone());
                let (partial, prefs) = (app.url("/settings/user"), app.url("/api/v1/users/preferences/update"));
                tokio::spawn(async move {
                    for i in 0..WRITES_PER_TASK {
                        let member = format!("t{task}_{i}");
                        let (url, body) = if task % 2 == 0 {
                            (&partial, json!({"doc": {member: i}}))
                        } else {
                            (&prefs, json!({"updatedPreferences": {"doc": {member: i}}}))
                        };
                        let response = client.put(url).bearer_auth(&token).json(&body).send().await.unwrap();
                        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let data = app.data(&token, r#"{ setting(key: "doc") { value version } }"#, json!({})).await;
        assert_eq!(data["setting"]["version"], TASKS * WRITES_PER_TASK);
        assert_eq!(data["setting"]["value"].as_object().unwrap().len(), TASKS * WRITES_PER_TASK);
    }

    async fn every_rest_change_is_in_the_history_with_its_route(app) {
        let token = app.token("alice");
        for (method, path, body) in WRITES {
            let reply = app.send(app.request(method, path, Some(&token)).header("content-type", "application/json").body(body)).await;
            assert!(reply.status.is_success(), "{path}: {:?}", reply.body);
        }
        app.rest("DELETE", "/api/v1/users/me/settings/theme", Some(&token), None).await;
        let history = |key: &'static str, scope: &'static str| {
            let (app, token) = (&app, &token);
            async move {
                let data = app.data(token, "query($k: String!, $s: String!) { settingHistory(key: $k, scope: $s) { edges { node { kind version interface actor } } } }", json!({"k": key, "s": scope})).await;
                data["settingHistory"]["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect::<Vec<_>>()
            }
        };
        let theme = history("theme", "").await;
        let routes: Vec<&str> = theme.iter().rev().map(|n| n["interface"].as_str().unwrap()).collect();
        assert_eq!(routes, [
            "PUT /api/v1/users/me/settings/{key}",
            "PUT /settings/user",
            "PUT /api/v1/users/preferences/update",
            "DELETE /api/v1/users/me/settings/{key}",
        ]);
        assert_eq!(theme[0]["kind"], "DELETE");
        assert!(theme.iter().all(|n| n["actor"] == "alice"));
        // The typed contracts write in their own scopes.
        let typed_theme = history("theme", "contract-004").await;
        assert_eq!(typed_theme[0]["interface"], "PATCH /api/v1/users/settings");
        let notifications = history("notifications", "contract-003").await;
        assert_eq!(notifications[0]["interface"], "PATCH /api/v1/user-settings");
    }

    async fn a_tag_read_from_each_document_guards_one_write_and_then_is_stale(app) {
        let token = app.token("alice");
        let routes = [
            ("/api/v1/users/preferences", "/api/v1/users/preferences/update", "PUT", json!({"updatedPreferences": {"layout": "grid"}}), 412),
            ("/api/v1/user-settings", "/api/v1/user-settings", "PATCH", json!({"notifications": false}), 409),
            ("/api/v1/users/settings", "/api/v1/users/settings", "PATCH", json!({"theme": "dark"}), 412),
        ];
        for (read, write, method, body, stale_status) in routes {
            let first = app.rest("GET", read, Some(&token), None).await;
            let tag = first.header("etag").unwrap_or_else(|| panic!("{read} sends an ETag")).to_owned();
            let guarded = |tag: &str| app.request(method, write, Some(&token)).header("if-match", tag).json(&body);
            let fresh = app.send(guarded(&tag)).await;
            assert_eq!(fresh.status, 200, "{write}: {:?}", fresh.body);
            let stale = app.send(guarded(&tag)).await;
            assert_eq!(stale.status, stale_status, "{write}: {:?}", stale.body);
            let current = app.rest("GET", read, Some(&token), None).await;
            assert_ne!(current.header("etag"), Some(tag.as_str()), "{read}");
            assert_eq!(app.send(guarded(current.header("etag").unwrap())).await.status, 200, "{write}");
        }
        assert_eq!(history_count(&app, "alice").await, 6, "one history row per write");

        // Deleted and written again elsewhere, a field has a new version: the old tag is stale.
        let before = app.rest("GET", "/api/v1/user-settings", Some(&token), None).await;
        let tag = before.header("etag").unwrap().to_owned();
        app.data(&token, r#"mutation { deleteSetting(key: "notifications", scope: "contract-003") }"#, json!({})).await;
        app.data(&token, r#"mutation { setSetting(key: "notifications", value: false, scope: "contract-003") { version } }"#, json!({})).await;
        let stale = app
            .send(app.request("PATCH", "/api/v1/user-settings", Some(&token)).header("if-match", &tag).json(&json!({"notifications": true})))
            .await;
        assert_eq!(stale.status, 409, "{:?}", stale.body);
        assert_eq!(app.values_in(&token, "contract-003").await["notifications"], false);
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_as_its_contract_does() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    // Served without a token, like the health checks.
    let reply = app.rest("GET", "/openapi.json", None, None).await;
    assert_eq!(reply.status, 200);
    let document = reply.body;
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let operations = [
        ("/api/v1/users/me/settings", "get"),
        ("/api/v1/users/me/settings/{key}", "get"),
        ("/api/v1/users/me/settings/{key}", "put"),
        ("/api/v1/users/me/settings/{key}", "delete"),
        ("/settings/user", "get"),
        ("/settings/user", "put"),
        ("/api/v1/users/preferences", "get"),
        ("/api/v1/users/preferences/update", "put"),
        ("/api/v1/user-settings", "get"),
        ("/api/v1/user-settings", "patch"),
        ("/api/v1/users/settings", "get"),
        ("/api/v1/users/settings", "patch"),
        ("/api/v1/me/export", "get"),
    ];
    for (path, method) in operations {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is missing"
        );
    }
    let paths: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(paths, operations.len(), "no undocumented extra operation");

    // Contract 000: the same statuses and the same required members as its document.
    let put = &document["paths"]["/api/v1/users/me/settings/{key}"]["put"];
    for status in ["200", "201", "400", "401"] {
        assert!(put["responses"][status].is_object(), "PUT answers {status}");
    }
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["UserSetting"]["required"],
        json!(["key", "value", "createdAt", "updatedAt"])
    );
    assert_eq!(
        schemas["SettingError"]["required"],
        json!(["error", "message"])
    );
    // Contract 002: the operation id and the Error members of its document.
    assert_eq!(
        document["paths"]["/api/v1/users/preferences/update"]["put"]["operationId"],
        "updateUserPreferences"
    );
    for member in ["status", "type", "title", "detail", "violations"] {
        assert!(
            schemas["PreferencesError"]["properties"][member].is_object(),
            "{member}"
        );
    }
    // Member names as the seed spells them: a client generated from either document agrees.
    for (schema, member) in [
        ("UserPreferenceUpdate", "updatedPreferences"),
        ("UserResponse", "message"),
        ("UserResponse", "object"),
        ("CompleteUser", "email"),
        ("CompleteUser", "roles"),
        ("CompleteUser", "preferences"),
    ] {
        assert!(
            schemas[schema]["properties"][member].is_object(),
            "{schema}.{member}: {}",
            schemas[schema]
        );
    }
    assert_eq!(
        schemas["TypedUserSettings"]["properties"]["_id"]["pattern"],
        "^[0-9a-f]{24}$"
    );
}
