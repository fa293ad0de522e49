//! Contract 002: `PUT /api/v1/users/preferences/update?space=…` and its GET.

use serde_json::json;
use settings_api::auth::TokenRequest;

use crate::helpers::*;

const UPDATE: &str = "/api/v1/users/preferences/update";
const READ: &str = "/api/v1/users/preferences";

fn user_response(reply: &Reply) {
    assert_seed_schema("002.json", "/components/schemas/UserResponse", &reply.body);
    assert_seed_schema(
        "002.json",
        "/components/schemas/CompleteUser",
        &reply.body["object"],
    );
}

fn error(reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
    assert_seed_schema("002.json", "/components/schemas/Error", &reply.body);
    assert_eq!(reply.body["status"], status.to_string());
    assert!(reply.body["title"].is_string() && reply.body["detail"].is_string());
}

both_backends! {
    async fn an_update_merges_into_the_space_and_answers_the_whole_preferences(app) {
        let token = app.token_for(TokenRequest {
            sub: "alice".into(),
            email: Some("alice@example.com".into()),
            roles: vec!["admin".into(), "editor".into()],
            ttl: std::time::Duration::from_secs(600),
            ..Default::default()
        });
        let body = json!({"updatedPreferences": {"layout": {"columns": 3, "dense": true}}});
        let reply = app.rest("PUT", &format!("{UPDATE}?space=workspace-1"), Some(&token), Some(body)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        user_response(&reply);
        assert_eq!(reply.body["object"]["email"], "alice@example.com");
        assert_eq!(reply.body["object"]["roles"], json!(["ROLE_USER", "ROLE_EDITOR", "ROLE_ADMINISTRATOR"]));
        assert_eq!(reply.body["object"]["preferences"], json!({"layout": {"columns": 3, "dense": true}}));

        let body = json!({"updatedPreferences": {"layout": {"dense": null}, "sidebar": "left"}});
        let reply = app.rest("PUT", &format!("{UPDATE}?space=workspace-1"), Some(&token), Some(body)).await;
        assert_eq!(reply.body["object"]["preferences"], json!({"layout": {"columns": 3}, "sidebar": "left"}));

        // The space is the GraphQL scope; without one, the default scope.
        let data = app.data(&token, r#"{ settings(scope: "workspace-1") { key value } }"#, json!({})).await;
        assert_eq!(data["settings"].as_array().unwrap().len(), 2);
        assert_eq!(app.values(&token).await, json!({}));
        app.rest("PUT", UPDATE, Some(&token), Some(json!({"updatedPreferences": {"theme": "light"}}))).await;
        assert_eq!(app.values(&token).await, json!({"theme": "light"}));

        let read = app.rest("GET", &format!("{READ}?space=workspace-1"), Some(&token), None).await;
        assert_eq!(read.status, 200);
        user_response(&read);
        assert_eq!(read.body["object"]["preferences"], json!({"layout": {"columns": 3}, "sidebar": "left"}));
        let plain = app.rest("GET", READ, Some(&app.token("bob")), None).await;
        assert_eq!(plain.body["object"], json!({"email": "", "roles": ["ROLE_USER"], "preferences": {}}));
    }

    async fn every_error_has_the_documented_shape_and_writes_nothing(app) {
        let token = app.token("alice");
        let cases = [
            (format!("{UPDATE}?space=web"), json!({"other": 1}), "updatedPreferences", "required"),
            (format!("{UPDATE}?space=web"), json!({"updatedPreferences": [1]}), "updatedPreferences", "type"),
            (format!("{UPDATE}?space=web"), json!("prefs"), "body", "type"),
            // A space whose catalog types keys: contract 004's, by default.
            (format!("{UPDATE}?space=contract-004"), json!({"updatedPreferences": {"theme": 7}}), "updatedPreferences.theme", "type"),
            (format!("{UPDATE}?space=contract-004"), json!({"updatedPreferences": {"digestMode": "HOURLY"}}), "updatedPreferences.digestMode", "enum"),
            (format!("{UPDATE}?space={}", "s".repeat(256)), json!({"updatedPreferences": {}}), "space", "maxLength"),
        ];
        for (path, body, property, rule) in cases {
            let reply = app.rest("PUT", &path, Some(&token), Some(body.clone())).await;
            error(&reply, 400);
            let violation = &reply.body["violations"][0];
            assert_eq!((violation["propertyPath"].as_str(), violation["type"].as_str()), (Some(property), Some(rule)), "{body}: {:?}", reply.body);
        }
        let malformed = app.send(app.request("PUT", UPDATE, Some(&token)).header("content-type", "application/json").body("{")).await;
        error(&malformed, 400);
        let text = app.send(app.request("PUT", UPDATE, Some(&token)).body("{}")).await;
        error(&text, 415);
        let not_allowed = app.rest("GET", UPDATE, Some(&token), None).await;
        error(&not_allowed, 405);
        for bad in [None, Some(expired_token("alice")), Some(forged_token("alice"))] {
            error(&app.rest("GET", READ, bad.as_deref(), None).await, 401);
            error(&app.rest("PUT", UPDATE, bad.as_deref(), Some(json!({"updatedPreferences": {}}))).await, 401);
        }
        let reply = app.rest("PUT", UPDATE, Some(&scoped_token("alice", "settings:read")), Some(json!({"updatedPreferences": {"a": 1}}))).await;
        error(&reply, 403);
        let stale = app.send(app.request("PUT", UPDATE, Some(&token)).header("if-match", "\"0123\"").json(&json!({"updatedPreferences": {"a": 1}}))).await;
        error(&stale, 412);
        assert_eq!(app.values(&token).await, json!({}));
        assert_eq!(history_count(&app, "alice").await, 0);
    }
}
