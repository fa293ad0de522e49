//! Contract 004: `PATCH|GET /api/v1/users/settings` and its side effects.

use serde_json::{Value, json};

use crate::helpers::*;

/// The scope the contract is bound to by default.
const SCOPE: &str = "contract-004";

const PATH: &str = "/api/v1/users/settings";

fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
    assert_eq!(reply.body["success"], false);
    let error = &reply.body["error"];
    assert_eq!(error["code"], code, "{:?}", reply.body);
    assert!(error["message"].is_string() && error["i18nKey"].is_string());
    assert!(!error["details"].as_array().unwrap().is_empty());
    for detail in error["details"].as_array().unwrap() {
        assert!(detail["message"].is_string());
    }
    // The correlation id of the body is the request's, also sent as a header.
    assert_eq!(
        error["correlationId"].as_str(),
        reply.header("x-correlation-id")
    );
}

async fn row(app: &TestApp, token: &str) -> Value {
    let reply = app.rest("GET", PATH, Some(token), None).await;
    assert_eq!(reply.status, 200);
    reply.body["data"].clone()
}

both_backends! {
    async fn a_sparse_update_creates_what_is_missing_and_answers_a_fresh_read(app) {
        let token = app.token("alice");
        let before = row(&app, &token).await;
        assert_eq!(before["userId"], "alice");
        assert_eq!((before["locale"].clone(), before["digestMode"].clone()), (json!("en"), json!("DAILY")));

        let reply = app.rest("PATCH", PATH, Some(&token), Some(json!({"locale": "tr", "pushNotifications": false, "digestMode": "WEEKLY"}))).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body["success"], true);
        let data = &reply.body["data"];
        let mut names: Vec<&str> = data.as_object().unwrap().keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["createdAt", "digestMode", "emailNotifications", "id", "inAppNotifications", "locale", "pushNotifications", "theme", "updatedAt", "userId"]);
        assert_eq!(data["id"], before["id"]);
        assert!(uuid::Uuid::parse_str(data["id"].as_str().unwrap()).is_ok());
        assert_eq!((data["locale"].clone(), data["pushNotifications"].clone(), data["digestMode"].clone()), (json!("tr"), json!(false), json!("WEEKLY")));
        assert_eq!(data["theme"], "dark");
        assert_eq!(&row(&app, &token).await, data);
        assert_eq!(app.values_in(&token, SCOPE).await, json!({"locale": "tr", "pushNotifications": false, "digestMode": "WEEKLY"}));
    }

    async fn an_empty_body_returns_the_row_and_writes_nothing(app) {
        let token = app.token("alice");
        app.rest("PATCH", PATH, Some(&token), Some(json!({"theme": "light"}))).await;
        let before = row(&app, &token).await;
        let history = history_count(&app, "alice").await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;

        let empty = app.rest("PATCH", PATH, Some(&token), Some(json!({}))).await;
        assert_eq!(empty.status, 200);
        assert_eq!(empty.body["data"], before);
        let no_body = app.send(app.request("PATCH", PATH, Some(&token))).await;
        assert_eq!(no_body.status, 200);
        assert_eq!(no_body.body["data"], before);

        assert_eq!(history_count(&app, "alice").await, history);
        let data = app.data(&token, r#"{ setting(key: "theme", scope: "contract-004") { version updatedAt } }"#, json!({})).await;
        assert_eq!(data["setting"]["version"], 1);
        assert_eq!(row(&app, &token).await["updatedAt"], before["updatedAt"]);
    }

    async fn locale_is_mirrored_to_the_users_legacy_locale_in_the_same_transaction(app) {
        let token = app.token("alice");
        assert_eq!(legacy_locale(&app, "alice").await, None);
        app.rest("PATCH", PATH, Some(&token), Some(json!({"locale": "tr"}))).await;
        assert_eq!(legacy_locale(&app, "alice").await.as_deref(), Some("tr"));
        let me = app.data(&token, "{ me { locale } }", json!({})).await;
        assert_eq!(me["me"]["locale"], "tr");

        // A patch that fails on another field changes neither the setting nor the mirror.
        let reply = app.rest("PATCH", PATH, Some(&token), Some(json!({"locale": "de", "digestMode": "HOURLY"}))).await;
        assert_error(&reply, 400, "VALIDATION_FAILED");
        assert_eq!(legacy_locale(&app, "alice").await.as_deref(), Some("tr"));
        assert_eq!(row(&app, &token).await["locale"], "tr");

        // The mirror follows the scope contract 004 is bound to, whatever writes there: GraphQL
        // writes it, and removing the setting clears it.
        app.data(&token, r#"mutation { setSetting(key: "locale", value: "pt-BR", scope: "contract-004") { version } }"#, json!({})).await;
        assert_eq!(legacy_locale(&app, "alice").await.as_deref(), Some("pt-BR"));
        app.data(&token, r#"mutation { deleteSetting(key: "locale", scope: "contract-004") }"#, json!({})).await;
        assert_eq!(legacy_locale(&app, "alice").await, None);
        // Another scope's locale, the default scope's included, is not the legacy one.
        app.set(&token, "locale", json!("fr")).await;
        app.data(&token, r#"mutation { setSetting(key: "locale", value: "fr", scope: "web") { version } }"#, json!({})).await;
        assert_eq!(legacy_locale(&app, "alice").await, None);
    }

    async fn validation_auth_and_body_errors_use_the_documented_envelope(app) {
        let token = app.token("alice");
        let cases = [
            (json!({"digestMode": "HOURLY"}), "digestMode must be one of the following values: DAILY, WEEKLY, NONE"),
            (json!({"locale": "a-very-long-locale"}), "locale must be shorter than or equal to 10 characters"),
            (json!({"theme": "t".repeat(21)}), "theme must be shorter than or equal to 20 characters"),
            (json!({"emailNotifications": "false"}), "emailNotifications must be a boolean value"),
            (json!({"nickname": "al"}), "property nickname should not exist"),
        ];
        for (body, message) in cases {
            let reply = app.rest("PATCH", PATH, Some(&token), Some(body.clone())).await;
            assert_error(&reply, 400, "VALIDATION_FAILED");
            assert_eq!(reply.body["error"]["details"][0]["message"], message, "{body}");
        }
        let malformed = app.send(app.request("PATCH", PATH, Some(&token)).header("content-type", "application/json").body("{\"locale\":")).await;
        assert_error(&malformed, 400, "VALIDATION_FAILED");
        // The document lists no 415: a body not declared as JSON fails validation.
        let text = app.send(app.request("PATCH", PATH, Some(&token)).header("content-type", "text/plain").body("{}")).await;
        assert_error(&text, 400, "VALIDATION_FAILED");
        for bad in [None, Some(expired_token("alice")), Some(forged_token("alice"))] {
            assert_error(&app.rest("GET", PATH, bad.as_deref(), None).await, 401, "AUTH_UNAUTHORIZED");
            assert_error(&app.rest("PATCH", PATH, bad.as_deref(), Some(json!({"theme": "x"}))).await, 401, "AUTH_UNAUTHORIZED");
        }
        let stale = app.send(app.request("PATCH", PATH, Some(&token)).header("if-match", "\"00\"").json(&json!({"theme": "light"}))).await;
        assert_error(&stale, 412, "PRECONDITION_FAILED");
        assert_eq!(app.values_in(&token, SCOPE).await, json!({}));
    }
}

async fn a_locale_the_legacy_column_cannot_hold_is_refused_with_the_setting_unwritten(
    backend: Backend,
) {
    // An operator may widen `locale`; the users table still holds ten characters, so the
    // mirror fails, and with it the whole write.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    std::fs::write(
        &catalog,
        r#"{"locale": {"schema": {"type": "string", "maxLength": 40}, "default": "en", "description": "Locale"}}"#,
    )
    .unwrap();
    let options = Options::default().env("SETTINGS_CATALOG", catalog.to_str().unwrap());
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    let token = app.token("alice");
    let error = app
        .error(
            &token,
            r#"mutation { setSetting(key: "locale", value: "en-US-x-a-long-private-tag", scope: "contract-004") { version } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
    assert_eq!(error["extensions"]["rule"], "legacyLocale");
    assert_eq!(app.values_in(&token, SCOPE).await, json!({}));
    assert_eq!(history_count(&app, "alice").await, 0);
}

on_both_backends!(a_locale_the_legacy_column_cannot_hold_is_refused_with_the_setting_unwritten,);
