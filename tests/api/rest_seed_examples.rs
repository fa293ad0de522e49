//! Every example request of the five contracts' documents, replayed against one default
//! deployment, answers as its document shows; afterwards every contract's GET still answers
//! its documented shape and types. Then: binding contracts together, and the data an earlier
//! version left in the default scope.

use serde_json::{Value, json};

use crate::helpers::*;

fn is_timestamp(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T')
}

fn members(value: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

/// Contract 000's `UserSetting`: key, value (any JSON), createdAt, updatedAt.
fn assert_per_key_setting(data: &Value, key: &str) {
    assert_eq!(
        members(data),
        ["createdAt", "key", "updatedAt", "value"],
        "{data}"
    );
    assert_eq!(data["key"], key);
    assert!(
        is_timestamp(&data["createdAt"]) && is_timestamp(&data["updatedAt"]),
        "{data}"
    );
}

/// Contract 003's document: eight booleans, `preferredLanguage`, timestamps and a 24-hex `_id`.
fn assert_typed_document(body: &Value) {
    for name in CONTRACT_003_BOOLEANS {
        assert!(body[name].is_boolean(), "{name}: {body}");
    }
    assert!(body["preferredLanguage"].is_string(), "{body}");
    assert!(
        is_timestamp(&body["createdAt"]) && is_timestamp(&body["updatedAt"]),
        "{body}"
    );
    let id = body["_id"].as_str().unwrap();
    assert!(
        id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(members(body).len(), 12, "{body}");
}

/// Contract 004's `UserSettingsDto`.
fn assert_sparse_document(data: &Value) {
    assert_eq!(
        members(data),
        [
            "createdAt",
            "digestMode",
            "emailNotifications",
            "id",
            "inAppNotifications",
            "locale",
            "pushNotifications",
            "theme",
            "updatedAt",
            "userId"
        ]
    );
    for name in ["id", "userId", "locale", "theme"] {
        assert!(data[name].is_string(), "{name}: {data}");
    }
    assert!(data["locale"].as_str().unwrap().chars().count() <= 10);
    assert!(data["theme"].as_str().unwrap().chars().count() <= 20);
    for name in [
        "emailNotifications",
        "pushNotifications",
        "inAppNotifications",
    ] {
        assert!(data[name].is_boolean(), "{name}: {data}");
    }
    assert!(["DAILY", "WEEKLY", "NONE"].contains(&data["digestMode"].as_str().unwrap()));
    assert_eq!(data["id"].as_str().unwrap().len(), 36, "a UUID: {data}");
    assert!(
        is_timestamp(&data["createdAt"]) && is_timestamp(&data["updatedAt"]),
        "{data}"
    );
}

both_backends! {
    async fn every_documented_example_succeeds_on_one_default_deployment(app) {
        let token = app.token("alice");

        // 000: `PUT /api/v1/users/me/settings/theme` with `{"value": {"theme": "dark"}}`.
        let created = app.rest("PUT", "/api/v1/users/me/settings/theme", Some(&token), Some(json!({"value": {"theme": "dark"}}))).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        assert_eq!(members(&created.body), ["data"]);
        assert_per_key_setting(&created.body["data"], "theme");
        assert_eq!(created.body["data"]["value"], json!({"theme": "dark"}));
        let updated = app.rest("PUT", "/api/v1/users/me/settings/theme", Some(&token), Some(json!({"value": {"theme": "dark"}}))).await;
        assert_eq!(updated.status, 200, "{:?}", updated.body);
        let unauthorized = app.rest("PUT", "/api/v1/users/me/settings/theme", None, Some(json!({"value": 1}))).await;
        assert_eq!(unauthorized.status, 401);
        assert_eq!(unauthorized.body, json!({"error": "Unauthorized", "message": "Unauthorized"}));

        // 001: `PUT /settings/user` with `{"theme": "light", "notifications": {"email": false}}`.
        let partial = app.rest("PUT", "/settings/user", Some(&token), Some(json!({"theme": "light", "notifications": {"email": false}}))).await;
        assert_eq!(partial.status, 200, "{:?}", partial.body);
        assert_eq!(partial.body, json!({"success": true, "message": "User settings partially updated successfully"}));
        let refused = app.rest("PUT", "/settings/user", Some(&token), Some(json!(["not", "an", "object"]))).await;
        assert_eq!(refused.status, 400);
        assert_eq!(refused.body["success"], false);
        assert!(refused.body["message"].as_str().unwrap().starts_with("Failed to partially update user settings"));

        // 002: `PUT /api/v1/users/preferences/update?space=…` with `updatedPreferences`.
        let preferences = app.rest("PUT", "/api/v1/users/preferences/update?space=workspace", Some(&token), Some(json!({"updatedPreferences": {"layout": "grid"}}))).await;
        assert_eq!(preferences.status, 200, "{:?}", preferences.body);
        assert_eq!(members(&preferences.body), ["message", "object"]);
        assert_eq!(preferences.body["object"]["preferences"], json!({"layout": "grid"}));

        // 003: `PATCH /api/v1/user-settings` with all nine fields.
        let typed_request = json!({
            "notifications": true, "totalMinutesVisibility": true, "totalFundVisibility": true,
            "liveStreamNotifications": true, "paymentNotifications": true, "followNotifications": true,
            "messageNotifications": true, "followingActivityNotifications": true, "preferredLanguage": "en"
        });
        let typed = app.rest("PATCH", "/api/v1/user-settings", Some(&token), Some(typed_request.clone())).await;
        assert_eq!(typed.status, 200, "{:?}", typed.body);
        assert_typed_document(&typed.body);
        for (name, value) in typed_request.as_object().unwrap() {
            assert_eq!(&typed.body[name], value, "{name}");
        }
        let forbidden = app.rest("PATCH", "/api/v1/user-settings", None, Some(json!({}))).await;
        assert_eq!((forbidden.status.as_u16(), forbidden.body["statusCode"].clone()), (401, json!(401)));

        // 004: `PATCH /api/v1/users/settings` with three fields, then with `{}`.
        let sparse = app.rest("PATCH", "/api/v1/users/settings", Some(&token), Some(json!({"locale": "tr", "pushNotifications": false, "digestMode": "WEEKLY"}))).await;
        assert_eq!(sparse.status, 200, "{:?}", sparse.body);
        assert_eq!(sparse.body["success"], true);
        assert_sparse_document(&sparse.body["data"]);
        let data = &sparse.body["data"];
        assert_eq!((data["locale"].clone(), data["pushNotifications"].clone(), data["digestMode"].clone()), (json!("tr"), json!(false), json!("WEEKLY")));
        let empty = app.rest("PATCH", "/api/v1/users/settings", Some(&token), Some(json!({}))).await;
        assert_eq!(empty.status, 200, "{:?}", empty.body);
        assert_sparse_document(&empty.body["data"]);

        // Afterwards, every GET answers its documented shape and types.
        let one = app.rest("GET", "/api/v1/users/me/settings/theme", Some(&token), None).await;
        assert_eq!(one.status, 200);
        assert_per_key_setting(&one.body["data"], "theme");
        let list = app.rest("GET", "/api/v1/users/me/settings", Some(&token), None).await;
        for setting in list.body["data"].as_array().unwrap() {
            assert_per_key_setting(setting, setting["key"].as_str().unwrap());
        }
        let all = app.rest("GET", "/settings/user", Some(&token), None).await;
        assert_eq!(all.body["success"], true);
        assert_eq!(all.body["data"]["notifications"], json!({"email": false}));
        let prefs = app.rest("GET", "/api/v1/users/preferences?space=workspace", Some(&token), None).await;
        assert_eq!(prefs.body["object"]["roles"], json!(["ROLE_USER"]));
        assert!(prefs.body["object"]["email"].is_string());
        let typed = app.rest("GET", "/api/v1/user-settings", Some(&token), None).await;
        assert_typed_document(&typed.body);
        // The default scope's `notifications` object is not a boolean: it does not show here.
        assert_eq!(typed.body["notifications"], true);
        let sparse = app.rest("GET", "/api/v1/users/settings", Some(&token), None).await;
        assert_sparse_document(&sparse.body["data"]);
        assert_eq!(sparse.body["data"]["locale"], "tr");
    }

    async fn a_value_another_scope_rejects_does_not_show_through(app) {
        let token = app.token("alice");
        // An object `theme` in the default scope is not contract 004's string `theme`.
        app.rest("PUT", "/api/v1/users/me/settings/theme", Some(&token), Some(json!({"value": {"mode": "dark"}}))).await;
        let sparse = app.rest("GET", "/api/v1/users/settings", Some(&token), None).await;
        assert_eq!(sparse.body["data"]["theme"], "dark", "the catalog default");
        let effective = app
            .data(&token, r#"{ effectiveSettings(scope: "contract-004", keys: ["theme"]) { value source } }"#, json!({}))
            .await;
        assert_eq!(effective["effectiveSettings"], json!([{"value": "dark", "source": "DEFAULT"}]));
        // A string it accepts does.
        app.rest("PUT", "/api/v1/users/me/settings/theme", Some(&token), Some(json!({"value": "light"}))).await;
        let sparse = app.rest("GET", "/api/v1/users/settings", Some(&token), None).await;
        assert_eq!(sparse.body["data"]["theme"], "light");
        // GraphQL sees each contract's data through its scope, with that scope's catalog.
        let definitions = app
            .data(&token, r#"{ a: settingDefinitions { key } b: settingDefinitions(scope: "contract-004") { key } }"#, json!({}))
            .await;
        assert_eq!(definitions["a"], json!([]));
        let keys: Vec<&str> = definitions["b"].as_array().unwrap().iter().map(|d| d["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["digestMode", "emailNotifications", "inAppNotifications", "locale", "pushNotifications", "theme"]);
    }

    async fn data_an_earlier_version_left_in_the_default_scope_is_served_by_the_same_routes(app) {
        let token = app.token("alice");
        app.rest("GET", "/api/v1/users/settings", Some(&token), None).await;
        // Before scopes, every contract stored its fields in the default scope.
        app.execute_sql(
            "INSERT INTO settings (user_id, scope, key, value, version, created_at, updated_at) VALUES \
             ('alice', '', 'locale', '\"de\"', 3, '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z'), \
             ('alice', '', 'preferredLanguage', '\"pt-BR\"', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'), \
             ('alice', '', 'followNotifications', 'false', 2, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z'), \
             ('alice', '', 'editor', '{\"tabs\": 2}', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        )
        .await;
        let sparse = app.rest("GET", "/api/v1/users/settings", Some(&token), None).await;
        assert_eq!(sparse.body["data"]["locale"], "de");
        assert_eq!(sparse.body["data"]["updatedAt"], "2026-01-02T00:00:00.000Z");
        let typed = app.rest("GET", "/api/v1/user-settings", Some(&token), None).await;
        assert_eq!((typed.body["preferredLanguage"].clone(), typed.body["followNotifications"].clone()), (json!("pt-BR"), json!(false)));
        let one = app.rest("GET", "/api/v1/users/me/settings/editor", Some(&token), None).await;
        assert_eq!(one.body["data"]["value"], json!({"tabs": 2}));
        let all = app.rest("GET", "/settings/user", Some(&token), None).await;
        assert_eq!(all.body["data"]["locale"], "de");

        // A write through the typed route goes to its scope and wins there from then on.
        let etag = sparse.header("etag").unwrap().to_owned();
        let reply = app.send(app.request("PATCH", "/api/v1/users/settings", Some(&token)).header("if-match", &etag).json(&json!({"locale": "fr"}))).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body["data"]["locale"], "fr");
        let one = app.rest("GET", "/api/v1/users/me/settings/locale", Some(&token), None).await;
        assert_eq!(one.body["data"]["value"], "de", "the default scope keeps its value");
    }
}

async fn contracts_bound_to_one_scope_share_its_data_and_the_union_of_their_types(
    backend: Backend,
) {
    let options = Options::default().env(
        "REST_SCOPES",
        r#"{"000": "shared", "003": "shared", "004": "shared"}"#,
    );
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    let token = app.token("alice");
    // 000 writes into the scope 004 reads, under 004's types there.
    let put = app
        .rest(
            "PUT",
            "/api/v1/users/me/settings/theme",
            Some(&token),
            Some(json!({"value": "solarized"})),
        )
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    let sparse = app
        .rest("GET", "/api/v1/users/settings", Some(&token), None)
        .await;
    assert_eq!(sparse.body["data"]["theme"], "solarized");
    let refused = app
        .rest(
            "PUT",
            "/api/v1/users/me/settings/theme",
            Some(&token),
            Some(json!({"value": {"theme": "dark"}})),
        )
        .await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "ValidationError");
    let refused = app
        .rest(
            "PUT",
            "/api/v1/users/me/settings/notifications",
            Some(&token),
            Some(json!({"value": "yes"})),
        )
        .await;
    assert_eq!(
        refused.status, 400,
        "003's boolean applies there too: {:?}",
        refused.body
    );
    // 003 and 004 write the same scope, which GraphQL reads by name.
    app.rest(
        "PATCH",
        "/api/v1/user-settings",
        Some(&token),
        Some(json!({"notifications": false})),
    )
    .await;
    let values = app.values_in(&token, "shared").await;
    assert_eq!(
        values,
        json!({"theme": "solarized", "notifications": false})
    );
    // The default scope is untouched, and untyped.
    assert_eq!(app.values(&token).await, json!({}));
    app.set(&token, "theme", json!({"any": "thing"})).await;
}

#[tokio::test]
async fn a_binding_the_scope_rules_refuse_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let long = "s".repeat(256);
    for (scopes, named) in [
        (format!(r#"{{"004": "{long}"}}"#), "REST_SCOPES"),
        (r#"{"007": "x"}"#.to_owned(), "007"),
    ] {
        let mut env = std::collections::HashMap::new();
        env.insert("DATABASE_URL".to_owned(), url.clone());
        env.insert("BIND_ADDR".to_owned(), "127.0.0.1:0".to_owned());
        env.insert("REST_SCOPES".to_owned(), scopes);
        let started = match settings_api::Config::from_lookup(|name| env.get(name).cloned()) {
            Err(err) => Err(err),
            Ok(config) => settings_api::Application::build(config).await.map(|_| ()),
        };
        let err = format!("{:#}", started.unwrap_err());
        assert!(err.contains(named), "{err}");
    }
}

on_both_backends!(contracts_bound_to_one_scope_share_its_data_and_the_union_of_their_types);
