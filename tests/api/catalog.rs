//! Typed keys: the catalog's schemas on every write, layered defaults, reset, org defaults.

use std::time::Duration;

use serde_json::{Value, json};
use settings_api::auth::TokenRequest;

use crate::helpers::*;

const SET: &str = "mutation($k: String!, $v: JSON!, $s: String! = \"\") { setSetting(key: $k, value: $v, scope: $s) { version } }";
const PATCH: &str = "mutation($p: JSON!) { updateSettings(patch: $p) { key } }";
const EFFECTIVE: &str = "query($s: String! = \"\", $k: [String!]) { effectiveSettings(scope: $s, keys: $k) { key value source setting { scope version } } }";
const SET_ORG: &str = "mutation($k: String!, $v: JSON) { setOrgDefault(key: $k, value: $v) { key default orgDefault } }";

fn admin(app: &TestApp) -> String {
    app.token_for(TokenRequest {
        sub: "root".into(),
        email: None,
        roles: vec!["admin".into()],
        scope: None,
        ttl: Duration::from_secs(600),
    })
}

/// `effectiveSettings` as key → (value, source).
async fn effective(app: &TestApp, token: &str, scope: &str, keys: Value) -> Value {
    let data = app
        .data(token, EFFECTIVE, json!({"s": scope, "k": keys}))
        .await;
    let mut map = serde_json::Map::new();
    for item in data["effectiveSettings"].as_array().unwrap() {
        map.insert(
            item["key"].as_str().unwrap().to_owned(),
            json!([item["value"], item["source"]]),
        );
    }
    Value::Object(map)
}

/// The built-in booleans: contract 003's, and contract 004's three.
fn booleans() -> impl Iterator<Item = &'static str> {
    CONTRACT_003_BOOLEANS.into_iter().chain([
        "emailNotifications",
        "pushNotifications",
        "inAppNotifications",
    ])
}

both_backends! {
    options = Options::typed_in_default_scope();

    async fn every_builtin_typed_key_rejects_values_its_schema_forbids(app) {
        let token = app.token("alice");
        let mut cases: Vec<(&str, Value, &str)> = Vec::new();
        for key in booleans() {
            cases.push((key, json!("yes"), "type"));
            cases.push((key, json!(1), "type"));
        }
        cases.extend([
            ("preferredLanguage", json!(7), "type"),
            ("preferredLanguage", json!("x".repeat(36)), "maxLength"),
            ("locale", json!(["en"]), "type"),
            ("locale", json!("x".repeat(11)), "maxLength"),
            ("theme", json!({"mode": "dark"}), "type"),
            ("theme", json!("x".repeat(21)), "maxLength"),
            ("digestMode", json!("HOURLY"), "enum"),
            ("digestMode", json!("daily"), "enum"),
            ("digestMode", json!(1), "enum"),
        ]);
        for (key, value, rule) in cases {
            let error = app.error(&token, SET, json!({"k": key, "v": value})).await;
            assert_eq!(code(&error), "BAD_USER_INPUT", "{key} = {value}: {error}");
            assert_eq!(error["extensions"]["field"], key);
            assert_eq!(error["extensions"]["rule"], rule, "{key} = {value}");
            assert_eq!(error["extensions"]["pointer"], "", "{key}");
        }
        assert_eq!(app.values(&token).await, json!({}));
        // The types are those of the scope: a scope without the typed contracts takes any value.
        app.data(&token, SET, json!({"k": "digestMode", "v": "HOURLY", "s": "mobile"})).await;
        for (key, value) in [("digestMode", json!("WEEKLY")), ("theme", json!("x".repeat(20))), ("locale", json!("pt-BR"))] {
            app.set(&token, key, value).await;
        }
    }

    async fn a_patch_with_one_invalid_typed_key_writes_none_of_its_keys(app) {
        let token = app.token("alice");
        app.set(&token, "theme", json!("light")).await;
        let error = app
            .error(&token, PATCH, json!({"p": {"theme": "dark", "free": {"a": 1}, "pushNotifications": "no"}}))
            .await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        assert_eq!(error["extensions"]["field"], "pushNotifications");
        assert_eq!(app.values(&token).await, json!({"theme": "light"}));
    }

    async fn effective_settings_resolve_every_layer_and_name_its_source(app) {
        let alice = app.token("alice");
        let keys = json!(["theme", "digestMode", "free"]);
        assert_eq!(
            effective(&app, &alice, "", keys.clone()).await,
            json!({"digestMode": ["DAILY", "DEFAULT"], "theme": ["dark", "DEFAULT"]})
        );

        app.data(&admin(&app), SET_ORG, json!({"k": "theme", "v": "light"})).await;
        assert_eq!(effective(&app, &alice, "", json!(["theme"])).await, json!({"theme": ["light", "ORG"]}));

        app.set(&alice, "theme", json!("solarized")).await;
        app.set(&alice, "free", json!({"x": 1})).await;
        assert_eq!(
            effective(&app, &alice, "", keys.clone()).await,
            json!({"digestMode": ["DAILY", "DEFAULT"], "free": [{"x": 1}, "USER"], "theme": ["solarized", "USER"]})
        );

        app.data(&alice, SET, json!({"k": "theme", "v": "contrast", "s": "mobile"})).await;
        // "mobile" has no catalog of its own: no default for digestMode there.
        assert_eq!(
            effective(&app, &alice, "mobile", keys.clone()).await,
            json!({"free": [{"x": 1}, "USER"], "theme": ["contrast", "SCOPE"]})
        );
        assert_eq!(effective(&app, &alice, "", json!(["theme"])).await, json!({"theme": ["solarized", "USER"]}));

        // The stored setting behind a value is returned with it.
        let data = app.data(&alice, EFFECTIVE, json!({"s": "mobile", "k": ["theme", "free"]})).await;
        assert_eq!(data["effectiveSettings"][0]["setting"], json!({"scope": "", "version": 1}));
        assert_eq!(data["effectiveSettings"][1]["setting"], json!({"scope": "mobile", "version": 1}));
        let data = app.data(&alice, EFFECTIVE, json!({"k": ["digestMode"]})).await;
        assert_eq!(data["effectiveSettings"][0]["setting"], Value::Null);

        // Without keys: every catalog key and every key of the user.
        let all = effective(&app, &alice, "", Value::Null).await;
        assert_eq!(all.as_object().unwrap().len(), 16, "{all}");
        assert_eq!(all["pushNotifications"], json!([true, "DEFAULT"]));
    }

    async fn reset_settings_removes_the_users_values_and_returns_what_applies(app) {
        let alice = app.token("alice");
        app.data(&admin(&app), SET_ORG, json!({"k": "theme", "v": "light"})).await;
        app.set(&alice, "theme", json!("solarized")).await;
        app.set(&alice, "free", json!(1)).await;
        app.data(&alice, SET, json!({"k": "theme", "v": "contrast", "s": "mobile"})).await;

        let reset = "mutation($s: String! = \"\", $k: [String!]) { resetSettings(scope: $s, keys: $k) { key value source } }";
        let data = app.data(&alice, reset, json!({"s": "mobile", "k": ["theme"]})).await;
        assert_eq!(data, json!({"resetSettings": [{"key": "theme", "value": "solarized", "source": "USER"}]}));

        let data = app.data(&alice, reset, json!({})).await;
        let after: Vec<&Value> = data["resetSettings"].as_array().unwrap().iter().filter(|s| s["key"] == "theme" || s["key"] == "free").collect();
        assert_eq!(after, vec![&json!({"key": "theme", "value": "light", "source": "ORG"})], "free is gone");
        assert_eq!(app.values(&alice).await, json!({}));
    }

    async fn org_defaults_need_an_admin_and_apply_to_every_user_at_once(app) {
        let alice = app.token("alice");
        let bob = app.token("bob");
        let error = app.error(&alice, SET_ORG, json!({"k": "digestMode", "v": "WEEKLY"})).await;
        assert_eq!(code(&error), "FORBIDDEN", "{error}");
        assert_eq!(effective(&app, &bob, "", json!(["digestMode"])).await, json!({"digestMode": ["DAILY", "DEFAULT"]}));

        let admin = admin(&app);
        let data = app.data(&admin, SET_ORG, json!({"k": "digestMode", "v": "WEEKLY"})).await;
        assert_eq!(data, json!({"setOrgDefault": {"key": "digestMode", "default": "DAILY", "orgDefault": "WEEKLY"}}));
        for user in [&alice, &bob] {
            assert_eq!(effective(&app, user, "", json!(["digestMode"])).await, json!({"digestMode": ["WEEKLY", "ORG"]}));
        }

        let error = app.error(&admin, SET_ORG, json!({"k": "digestMode", "v": "HOURLY"})).await;
        assert_eq!((code(&error), error["extensions"]["rule"].as_str()), ("BAD_USER_INPUT", Some("enum")));
        let error = app.error(&admin, SET_ORG, json!({"k": "notInCatalog", "v": 1})).await;
        assert_eq!(code(&error), "NOT_FOUND", "{error}");

        let data = app.data(&admin, SET_ORG, json!({"k": "digestMode", "v": null})).await;
        assert_eq!(data["setOrgDefault"]["orgDefault"], Value::Null);
        assert_eq!(effective(&app, &bob, "", json!(["digestMode"])).await, json!({"digestMode": ["DAILY", "DEFAULT"]}));
    }

    async fn setting_definitions_describe_every_key_for_a_settings_screen(app) {
        let token = app.token("alice");
        app.data(&admin(&app), SET_ORG, json!({"k": "theme", "v": "light"})).await;
        let data = app
            .data(&token, "{ settingDefinitions { key schema default description orgDefault } }", json!({}))
            .await;
        let definitions = data["settingDefinitions"].as_array().unwrap();
        assert_eq!(definitions.len(), 15);
        let digest = definitions.iter().find(|d| d["key"] == "digestMode").unwrap();
        assert_eq!(digest["schema"], json!({"enum": ["DAILY", "WEEKLY", "NONE"]}));
        assert_eq!(digest["default"], "DAILY");
        assert_eq!(digest["orgDefault"], Value::Null);
        assert!(!digest["description"].as_str().unwrap().is_empty());
        let theme = definitions.iter().find(|d| d["key"] == "theme").unwrap();
        assert_eq!((&theme["default"], &theme["orgDefault"]), (&json!("dark"), &json!("light")));
    }
}

fn catalog_file(content: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), content).unwrap();
    file
}

async fn strict_mode_refuses_keys_the_catalog_does_not_know(backend: Backend) {
    let Some(app) = TestApp::spawn_with(
        backend,
        Options::typed_in_default_scope().env("SETTINGS_STRICT", "true"),
    )
    .await
    else {
        return;
    };
    let token = app.token("alice");
    let error = app.error(&token, SET, json!({"k": "free", "v": 1})).await;
    assert_eq!(
        (code(&error), error["extensions"]["rule"].as_str()),
        ("BAD_USER_INPUT", Some("knownKey"))
    );
    let error = app
        .error(&token, PATCH, json!({"p": {"theme": "light", "free": 1}}))
        .await;
    assert_eq!(error["extensions"]["field"], "free");
    assert_eq!(app.values(&token).await, json!({}));
    app.set(&token, "theme", json!("light")).await;
}

async fn an_operator_catalog_adds_keys_and_overrides_builtin_defaults(backend: Backend) {
    let file = catalog_file(
        r#"{"fontSize": {"schema": {"type": "integer", "minimum": 8}, "default": 14, "description": "Editor font size"},
            "editor": {"schema": {"type": "object", "properties": {"tabs": {"type": "integer", "maximum": 8}}}, "default": {}},
            "theme": {"default": "light"}}"#,
    );
    let options =
        Options::typed_in_default_scope().env("SETTINGS_CATALOG", file.path().to_str().unwrap());
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    let token = app.token("alice");
    assert_eq!(
        effective(&app, &token, "", json!(["fontSize", "theme"])).await,
        json!({"fontSize": [14, "DEFAULT"], "theme": ["light", "DEFAULT"]})
    );
    let error = app
        .error(&token, SET, json!({"k": "fontSize", "v": 4}))
        .await;
    assert_eq!(
        (code(&error), error["extensions"]["rule"].as_str()),
        ("BAD_USER_INPUT", Some("minimum"))
    );
    // A violation deep inside a value names its JSON pointer, also after a merge.
    app.set(&token, "editor", json!({"tabs": 4})).await;
    let error = app
        .error(&token, PATCH, json!({"p": {"editor": {"tabs": 9}}}))
        .await;
    assert_eq!(error["extensions"]["pointer"], "/tabs", "{error}");
    assert_eq!(app.values(&token).await, json!({"editor": {"tabs": 4}}));
}

#[test]
fn start_up_refuses_a_broken_catalog_naming_the_key_and_the_problem() {
    let bin = env!("CARGO_BIN_EXE_settings-api");
    let dir = tempfile::tempdir().unwrap();
    for (content, problem) in [
        (
            r#"{"fontSize": {"schema": {"type": "int"}, "default": 14}}"#,
            "invalid schema",
        ),
        (
            r#"{"fontSize": {"schema": {"type": "integer", "minimum": 8}, "default": 4}}"#,
            "fails its own schema",
        ),
        (
            r#"{"digestMode": {"default": "HOURLY"}}"#,
            "fails its own schema",
        ),
    ] {
        let file = catalog_file(content);
        let output = std::process::Command::new(bin)
            .current_dir(dir.path())
            .env_clear()
            .env("SETTINGS_CATALOG", file.path())
            .env("BIND_ADDR", "127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{content}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let key = if content.contains("digestMode") {
            "`digestMode`"
        } else {
            "`fontSize`"
        };
        assert!(
            stderr.contains(problem) && stderr.contains(key),
            "{content}: {stderr}"
        );
    }
}

#[tokio::test]
async fn the_readme_catalog_example_is_a_valid_catalog() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/catalog.example.json"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let text = std::fs::read_to_string(example).unwrap();
    assert!(
        readme.contains(text.trim()),
        "README.md shows tests/fixtures/catalog.example.json as it is"
    );
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        Options::default().env("SETTINGS_CATALOG", example),
    )
    .await
    .unwrap();
    let token = app.token("alice");
    // `editor` names no scope, so it applies in every scope; `theme` is built into contract
    // 004's scope, where the override sets its default.
    assert_eq!(
        effective(&app, &token, "contract-004", json!(["editor", "theme"])).await,
        json!({"editor": [{"tabWidth": 4, "wordWrap": false}, "DEFAULT"], "theme": ["system", "DEFAULT"]})
    );
}

on_both_backends!(
    strict_mode_refuses_keys_the_catalog_does_not_know,
    an_operator_catalog_adds_keys_and_overrides_builtin_defaults,
);
