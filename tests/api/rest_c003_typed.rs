//! Contract 003: `PATCH|GET /api/v1/user-settings`, typed fields with defaults and a stable `_id`.

use serde_json::{Value, json};

use crate::helpers::*;

/// The scope the contract is bound to by default.
const SCOPE: &str = "contract-003";

const PATH: &str = "/api/v1/user-settings";

fn assert_document(body: &Value) {
    let object = body.as_object().unwrap();
    let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = CONTRACT_003_BOOLEANS
        .iter()
        .copied()
        .chain(["preferredLanguage", "createdAt", "updatedAt", "_id"])
        .collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
    let id = body["_id"].as_str().unwrap();
    assert!(
        id.len() == 24
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
    for stamp in ["createdAt", "updatedAt"] {
        let text = body[stamp].as_str().unwrap();
        assert!(text.ends_with('Z') && text.len() == 24, "{stamp}: {text}");
    }
}

fn assert_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
    let body = reply.body.as_object().unwrap();
    assert_eq!(body.len(), 5, "{body:?}");
    assert_eq!(body["isSuccess"], false);
    assert_eq!(body["statusCode"], status);
    assert_eq!(body["data"], Value::Null);
    assert!(!body["errors"].as_array().unwrap().is_empty());
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
}

both_backends! {
    async fn get_fills_defaults_and_patch_updates_only_the_fields_sent(app) {
        let token = app.token("alice");
        let read = app.rest("GET", PATH, Some(&token), None).await;
        assert_eq!(read.status, 200);
        assert_document(&read.body);
        assert_eq!(read.body["notifications"], true);
        assert_eq!(read.body["preferredLanguage"], "en");

        let reply = app.rest("PATCH", PATH, Some(&token), Some(json!({"notifications": false, "preferredLanguage": "pt-BR"}))).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_document(&reply.body);
        assert_eq!((reply.body["notifications"].clone(), reply.body["preferredLanguage"].clone()), (json!(false), json!("pt-BR")));
        assert_eq!(reply.body["paymentNotifications"], true);
        assert_eq!(reply.body["_id"], read.body["_id"]);
        // Only the fields sent are stored; the rest stay defaults.
        assert_eq!(app.values_in(&token, SCOPE).await, json!({"notifications": false, "preferredLanguage": "pt-BR"}));

        let reply = app.rest("PATCH", PATH, Some(&token), Some(json!({"paymentNotifications": false}))).await;
        assert_eq!((reply.body["notifications"].clone(), reply.body["paymentNotifications"].clone()), (json!(false), json!(false)));
        assert!(reply.body["updatedAt"].as_str() >= reply.body["createdAt"].as_str());
    }

    async fn the_id_is_the_same_for_a_user_forever_and_differs_between_users(app) {
        let alice = app.token("alice");
        let first = app.rest("GET", PATH, Some(&alice), None).await.body["_id"].clone();
        app.rest("PATCH", PATH, Some(&alice), Some(json!({"followNotifications": false}))).await;
        app.rest("DELETE", "/api/v1/users/me/settings/followNotifications", Some(&alice), None).await;
        let later = app.rest("GET", PATH, Some(&alice), None).await.body["_id"].clone();
        assert_eq!(first, later);
        let bob = app.rest("GET", PATH, Some(&app.token("bob")), None).await.body["_id"].clone();
        assert_ne!(first, bob);
    }

    async fn unknown_fields_and_wrong_types_are_400_and_write_nothing(app) {
        let token = app.token("alice");
        let cases = [
            (json!({"notifications": "yes"}), "notifications must be a boolean value"),
            (json!({"notifications": null}), "notifications must be a boolean value"),
            (json!({"preferredLanguage": 5}), "preferredLanguage must be a string"),
            (json!({"theme": "dark"}), "property theme should not exist"),
            (json!([true]), "the body must be a JSON object"),
        ];
        for (body, message) in cases {
            let reply = app.rest("PATCH", PATH, Some(&token), Some(body.clone())).await;
            assert_error(&reply, 400);
            assert!(reply.body["errors"].as_array().unwrap().contains(&json!(message)), "{body}: {:?}", reply.body);
        }
        // Every problem of one body is reported.
        let reply = app.rest("PATCH", PATH, Some(&token), Some(json!({"notifications": 1, "paymentNotifications": true, "x": 1}))).await;
        assert_error(&reply, 400);
        assert_eq!(reply.body["errors"].as_array().unwrap().len(), 2);
        let malformed = app.send(app.request("PATCH", PATH, Some(&token)).header("content-type", "application/json").body("{\"notifications\": tru")).await;
        assert_error(&malformed, 400);
        assert_eq!(app.values_in(&token, SCOPE).await, json!({}));
    }

    async fn auth_permission_not_found_and_stale_writes_get_their_documented_status(app) {
        for bad in [None, Some(expired_token("alice")), Some(forged_token("alice"))] {
            assert_error(&app.rest("GET", PATH, bad.as_deref(), None).await, 401);
            assert_error(&app.rest("PATCH", PATH, bad.as_deref(), Some(json!({"notifications": false}))).await, 401);
        }
        let reply = app.rest("PATCH", PATH, Some(&scoped_token("alice", "settings:read")), Some(json!({"notifications": false}))).await;
        assert_error(&reply, 403);
        assert_error(&app.rest("GET", PATH, Some(&scoped_token("alice", "settings:write")), None).await, 403);
        assert_error(&app.rest("GET", &format!("{PATH}/507f1f77bcf86cd799439011"), Some(&app.token("alice")), None).await, 404);

        let token = app.token("alice");
        let read = app.rest("GET", PATH, Some(&token), None).await;
        let etag = read.header("etag").unwrap().to_owned();
        let patch = |body: Value| app.send(app.request("PATCH", PATH, Some(&token)).header("if-match", etag.clone()).json(&body));
        assert_eq!(patch(json!({"notifications": false})).await.status, 200);
        let stale = patch(json!({"notifications": true})).await;
        assert_error(&stale, 409);
        assert_eq!(app.values_in(&token, SCOPE).await, json!({"notifications": false}));
    }
}
