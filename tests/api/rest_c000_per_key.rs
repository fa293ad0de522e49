//! Contract 000: `PUT|GET|DELETE /api/v1/users/me/settings/{key}` and the list.

use serde_json::{Value, json};

use crate::helpers::*;

const THEME: &str = "/api/v1/users/me/settings/theme";
const EDITOR: &str = "/api/v1/users/me/settings/editor";

fn seed(reply: &Reply) {
    let status = reply.status.as_u16().to_string();
    assert_seed_schema("000.json", &format!("/responses/{status}"), &reply.body);
}

async fn put(app: &TestApp, token: &str, path: &str, body: Value) -> Reply {
    app.rest("PUT", path, Some(token), Some(body)).await
}

both_backends! {
    async fn put_creates_with_201_then_replaces_with_200_in_the_documented_shape(app) {
        let token = app.token("alice");
        let created = put(&app, &token, EDITOR, json!({"value": {"fontSize": 12}})).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        seed(&created);
        let data = &created.body["data"];
        assert_eq!(data["key"], "editor");
        assert_eq!(data["value"], json!({"fontSize": 12}));
        assert_eq!(data["createdAt"], data["updatedAt"]);
        assert_eq!(created.header("etag"), Some("\"1\""));

        let replaced = put(&app, &token, EDITOR, json!({"value": [1, "two", null]})).await;
        assert_eq!(replaced.status, 200, "{:?}", replaced.body);
        seed(&replaced);
        assert_eq!(replaced.body["data"]["value"], json!([1, "two", null]));
        assert_eq!(replaced.body["data"]["createdAt"], data["createdAt"]);
        assert!(replaced.body["data"]["updatedAt"].as_str() >= data["updatedAt"].as_str());
        assert_eq!(replaced.header("etag"), Some("\"2\""));
        assert_eq!(app.values(&token).await, json!({"editor": [1, "two", null]}));

        // A JSON null is a value like any other: stored, not a removal.
        let nulled = put(&app, &token, EDITOR, json!({"value": null})).await;
        assert_eq!(nulled.status, 200, "{:?}", nulled.body);
        seed(&nulled);
        assert_eq!(nulled.body["data"]["value"], Value::Null);
        assert_eq!(nulled.header("etag"), Some("\"3\""));
        assert_eq!(app.values(&token).await, json!({"editor": null}));
        let stored = app.query_text("SELECT CAST(value AS TEXT) FROM settings WHERE key = 'editor'").await;
        assert_eq!(stored.as_deref(), Some("null"));
    }

    async fn get_lists_reads_and_delete_removes_with_404_when_absent(app) {
        let token = app.token("alice");
        put(&app, &token, EDITOR, json!({"value": {"tabs": 2}})).await;
        put(&app, &token, THEME, json!({"value": "light"})).await;

        let list = app.rest("GET", "/api/v1/users/me/settings", Some(&token), None).await;
        assert_eq!(list.status, 200);
        let keys: Vec<&str> = list.body["data"].as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["editor", "theme"]);
        for item in list.body["data"].as_array().unwrap() {
            seed(&Reply { status: reqwest::StatusCode::OK, headers: Default::default(), body: json!({"data": item}) });
        }

        let one = app.rest("GET", THEME, Some(&token), None).await;
        assert_eq!((one.status.as_u16(), one.body["data"]["value"].clone()), (200, json!("light")));
        assert_eq!(one.header("etag"), Some("\"1\""));

        let deleted = app.rest("DELETE", THEME, Some(&token), None).await;
        assert_eq!((deleted.status.as_u16(), deleted.body.clone()), (204, Value::Null));
        let again = app.rest("DELETE", THEME, Some(&token), None).await;
        assert_eq!(again.status, 404);
        assert_eq!(again.body["error"], "NotFound");
        let gone = app.rest("GET", THEME, Some(&token), None).await;
        assert_eq!(gone.status, 404);
        assert!(gone.body["message"].as_str().unwrap().contains("theme"), "{:?}", gone.body);
        assert_eq!(app.values(&token).await, json!({"editor": {"tabs": 2}}));
    }

    async fn every_invalid_request_is_a_validation_error_naming_the_field_and_writes_nothing(app) {
        let token = app.token("alice");
        let long_key = format!("/api/v1/users/me/settings/{}", "k".repeat(256));
        let cases = [
            (EDITOR.to_owned(), json!({}), "value", "required"),
            (EDITOR.to_owned(), json!({"value": 1, "extra": 2}), "extra", "additionalProperties"),
            (EDITOR.to_owned(), json!([1]), "body", "type"),
            (long_key, json!({"value": 1}), "key", "maxLength"),
            (EDITOR.to_owned(), json!({"value": "a\u{0000}b"}), "value", "noNulCharacter"),
        ];
        for (path, body, field, constraint) in cases {
            let reply = put(&app, &token, &path, body.clone()).await;
            assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
            seed(&reply);
            assert_eq!(reply.body["error"], "ValidationError");
            let detail = &reply.body["details"][0];
            assert_eq!((detail["field"].as_str(), detail["constraint"].as_str()), (Some(field), Some(constraint)), "{body}: {:?}", reply.body);
        }

        let malformed = app.send(app.request("PUT", EDITOR, Some(&token)).header("content-type", "application/json").body("{\"value\": ")).await;
        assert_eq!(malformed.status, 400);
        seed(&malformed);
        assert_eq!(malformed.body["details"][0]["constraint"], "json");

        // The document lists no 415: a body not declared as JSON is a validation error, and
        // so is a PUT without a body.
        let text = app.send(app.request("PUT", EDITOR, Some(&token)).header("content-type", "text/plain").body("{\"value\": 1}")).await;
        assert_eq!((text.status.as_u16(), text.body["error"].as_str()), (400, Some("ValidationError")));
        seed(&text);
        assert_eq!(text.body["details"][0]["field"], "Content-Type");
        let empty = app.send(app.request("PUT", EDITOR, Some(&token))).await;
        assert_eq!((empty.status.as_u16(), empty.body["error"].as_str()), (400, Some("ValidationError")));
        seed(&empty);
        assert_eq!(app.values(&token).await, json!({}));
    }

    async fn a_missing_expired_or_forged_token_gets_the_documented_401(app) {
        for token in [None, Some(expired_token("alice")), Some(forged_token("alice"))] {
            for (method, path) in [("GET", "/api/v1/users/me/settings"), ("GET", THEME), ("PUT", THEME), ("DELETE", THEME)] {
                let body = (method == "PUT").then(|| json!({"value": "dark"}));
                let reply = app.rest(method, path, token.as_deref(), body).await;
                assert_eq!(reply.status, 401, "{method} {path}");
                assert_eq!(reply.body, json!({"error": "Unauthorized", "message": "Unauthorized"}));
                seed(&reply);
            }
        }
    }

    async fn if_match_and_if_none_match_make_writes_conditional(app) {
        let token = app.token("alice");
        let conditional = |header: &'static str, tag: &'static str, value: i64| {
            app.request("PUT", EDITOR, Some(&token)).header(header, tag).json(&json!({"value": value}))
        };
        // Create only: the first succeeds, the second finds the setting.
        let created = app.send(conditional("if-none-match", "*", 1)).await;
        assert_eq!(created.status, 201);
        let refused = app.send(conditional("if-none-match", "*", 2)).await;
        assert_eq!((refused.status.as_u16(), refused.body["error"].as_str()), (412, Some("PreconditionFailed")));

        let updated = app.send(conditional("if-match", "\"1\"", 3)).await;
        assert_eq!((updated.status.as_u16(), updated.header("etag")), (200, Some("\"2\"")));
        for stale in ["\"1\"", "W/\"2\"", "\"two\""] {
            let reply = app.send(conditional("if-match", stale, 4)).await;
            assert_eq!(reply.status, 412, "If-Match: {stale}");
            assert_eq!(reply.body["error"], "PreconditionFailed");
        }
        let deleted = app.send(app.request("DELETE", EDITOR, Some(&token)).header("if-match", "\"1\"")).await;
        assert_eq!(deleted.status, 412);
        assert_eq!(app.values(&token).await, json!({"editor": 3}));

        // `If-Match: *` needs the setting to exist.
        let missing = app.send(app.request("PUT", THEME, Some(&token)).header("if-match", "*").json(&json!({"value": "dark"}))).await;
        assert_eq!(missing.status, 412);

        let cached = app.send(app.request("GET", EDITOR, Some(&token)).header("if-none-match", "\"2\"")).await;
        assert_eq!((cached.status.as_u16(), cached.body.clone()), (304, Value::Null));
        let deleted = app.send(app.request("DELETE", EDITOR, Some(&token)).header("if-match", "\"2\"")).await;
        assert_eq!(deleted.status, 204);
        assert_eq!(app.values(&token).await, json!({}));

        // Written again, the setting goes on from its last version: a tag read before the
        // delete names the old value and no longer matches.
        let recreated = put(&app, &token, EDITOR, json!({"value": 5})).await;
        assert_eq!((recreated.status.as_u16(), recreated.header("etag")), (201, Some("\"3\"")));
        assert_eq!(recreated.body["data"]["value"], 5);
        let stale = app.send(conditional("if-match", "\"1\"", 6)).await;
        assert_eq!(stale.status, 412);
        let cached = app.send(app.request("GET", EDITOR, Some(&token)).header("if-none-match", "\"2\"")).await;
        assert_eq!(cached.status, 200);
        assert_eq!(app.values(&token).await, json!({"editor": 5}));
    }

    async fn scopes_methods_and_oversized_bodies_answer_in_the_same_envelope(app) {
        let reader = scoped_token("alice", "settings:read");
        let reply = put(&app, &reader, THEME, json!({"value": "dark"})).await;
        assert_eq!((reply.status.as_u16(), reply.body["error"].as_str()), (403, Some("Forbidden")));
        assert!(reply.body["message"].as_str().unwrap().contains("settings:write"));

        let token = app.token("alice");
        let reply = app.rest("POST", THEME, Some(&token), Some(json!({"value": 1}))).await;
        assert_eq!((reply.status.as_u16(), reply.body["error"].as_str()), (405, Some("MethodNotAllowed")));
        assert_eq!(reply.header("allow"), Some("GET, HEAD, PUT, DELETE"));

        let huge = json!({"value": "x".repeat(1024 * 1024)});
        let reply = put(&app, &token, THEME, huge).await;
        assert_eq!((reply.status.as_u16(), reply.body["error"].as_str()), (413, Some("PayloadTooLarge")));
        assert_eq!(app.values(&token).await, json!({}));
    }
}
