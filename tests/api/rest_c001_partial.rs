//! Contract 001: `PUT|GET /settings/user`, a partial update merged key by key.

use serde_json::json;

use crate::helpers::*;

const PATH: &str = "/settings/user";

both_backends! {
    async fn put_merges_each_key_and_keeps_the_keys_it_does_not_name(app) {
        let token = app.token("alice");
        let reply = app.rest("PUT", PATH, Some(&token), Some(json!({"theme": "light", "editor": {"tabs": 2, "wrap": true}}))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, json!({"success": true, "message": "User settings partially updated successfully"}));

        let reply = app.rest("PUT", PATH, Some(&token), Some(json!({"editor": {"wrap": null, "font": "mono"}}))).await;
        assert_eq!(reply.status, 200);
        let read = app.rest("GET", PATH, Some(&token), None).await;
        assert_eq!(read.status, 200);
        assert_eq!(read.body, json!({"success": true, "data": {"theme": "light", "editor": {"tabs": 2, "font": "mono"}}}));

        // `null` removes a key; an empty object changes nothing.
        app.rest("PUT", PATH, Some(&token), Some(json!({"theme": null}))).await;
        let reply = app.rest("PUT", PATH, Some(&token), Some(json!({}))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(app.values(&token).await, json!({"editor": {"tabs": 2, "font": "mono"}}));
    }

    async fn bad_input_is_a_400_that_says_what_is_wrong_and_writes_nothing(app) {
        let token = app.token("alice");
        app.rest("PUT", PATH, Some(&token), Some(json!({"editor": {"tabs": 2}}))).await;
        let cases = [
            (json!(["theme"]), "JSON object"),
            (json!({"editor": {"tabs": 4}, "bad\u{0007}key": 1}), "control characters"),
            (json!({"": 1}), "empty"),
        ];
        for (body, mentions) in cases {
            let reply = app.rest("PUT", PATH, Some(&token), Some(body.clone())).await;
            assert_eq!(reply.status, 400, "{body}");
            assert_eq!(reply.body["success"], false);
            let message = reply.body["message"].as_str().unwrap();
            assert!(message.contains(mentions), "{body}: {message}");
            assert_eq!(reply.body.as_object().unwrap().len(), 2, "{:?}", reply.body);
        }
        let malformed = app.send(app.request("PUT", PATH, Some(&token)).header("content-type", "application/json").body("{\"theme\"")).await;
        assert_eq!((malformed.status.as_u16(), malformed.body["success"].clone()), (400, json!(false)));
        assert!(malformed.body["message"].as_str().unwrap().contains("not valid JSON"));
        assert_eq!(app.values(&token).await, json!({"editor": {"tabs": 2}}));
    }

    async fn a_missing_expired_or_forged_token_is_a_401_in_the_same_envelope(app) {
        for token in [None, Some(expired_token("alice")), Some(forged_token("alice"))] {
            for method in ["GET", "PUT"] {
                let body = (method == "PUT").then(|| json!({"theme": "dark"}));
                let reply = app.rest(method, PATH, token.as_deref(), body).await;
                assert_eq!(reply.status, 401);
                assert_eq!((reply.body["success"].clone(), reply.body["message"].clone()), (json!(false), json!("Unauthorized")));
                assert!(reply.body["error"].is_string(), "{:?}", reply.body);
            }
        }
        let reply = app.rest("GET", PATH, Some(&expired_token("alice")), None).await;
        assert_eq!(reply.body["error"], "the token has expired");
    }

    async fn if_match_takes_the_etag_of_the_whole_object(app) {
        let token = app.token("alice");
        app.rest("PUT", PATH, Some(&token), Some(json!({"theme": "light"}))).await;
        let read = app.rest("GET", PATH, Some(&token), None).await;
        let etag = read.header("etag").unwrap().to_owned();

        let put = |tag: String, body| app.send(app.request("PUT", PATH, Some(&token)).header("if-match", tag).json(&body));
        let reply = put(etag.clone(), json!({"editor": {"tabs": 2}})).await;
        assert_eq!(reply.status, 200);
        // Another key changed since the read: the tag no longer holds.
        let reply = put(etag.clone(), json!({"theme": "dark"})).await;
        assert_eq!(reply.status, 412);
        assert_eq!(reply.body["success"], false);
        assert_eq!(app.values(&token).await, json!({"theme": "light", "editor": {"tabs": 2}}));

        let fresh = app.rest("GET", PATH, Some(&token), None).await;
        let new_tag = fresh.header("etag").unwrap().to_owned();
        assert_ne!(new_tag, etag);
        let cached = app.send(app.request("GET", PATH, Some(&token)).header("if-none-match", new_tag.clone())).await;
        assert_eq!(cached.status, 304);
        assert_eq!(put(new_tag, json!({"theme": "dark"})).await.status, 200);
    }
}
