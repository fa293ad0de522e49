//! `updateSettings` applies RFC 7386 JSON Merge Patch, all keys or none.

use serde_json::{Value, json};

use crate::helpers::*;

const UPDATE: &str = "mutation($p: JSON!, $s: String! = \"\") { updateSettings(patch: $p, scope: $s) { key value version } }";

/// RFC 7386 Appendix A: (original, patch, result). Each runs as the value of one key.
fn appendix_a() -> Vec<(Value, Value, Value)> {
    vec![
        (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
        (json!({"a":"b"}), json!({"a":null}), json!({})),
        (
            json!({"a":"b","b":"c"}),
            json!({"a":null}),
            json!({"b":"c"}),
        ),
        (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
        (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
        (
            json!({"a":{"b":"c"}}),
            json!({"a":{"b":"d","c":null}}),
            json!({"a":{"b":"d"}}),
        ),
        (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a":"b"}), json!(["c"]), json!(["c"])),
        (json!({"a":"foo"}), json!("bar"), json!("bar")),
        (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
        (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
        (
            json!({}),
            json!({"a":{"bb":{"ccc":null}}}),
            json!({"a":{"bb":{}}}),
        ),
    ]
}

both_backends! {
    async fn update_settings_follows_every_example_of_rfc_7386_appendix_a(app) {
        let token = app.token("alice");
        let cases = appendix_a();
        // One patch for all cases at once: each case is its own key.
        let mut patch = serde_json::Map::new();
        let mut expected = serde_json::Map::new();
        for (i, (original, member, result)) in cases.into_iter().enumerate() {
            let key = format!("case{i:02}");
            app.set(&token, &key, original).await;
            patch.insert(key.clone(), member);
            expected.insert(key, result);
        }
        let data = app.data(&token, UPDATE, json!({"p": patch})).await;
        let written = data["updateSettings"].as_array().unwrap();
        assert_eq!(written.len(), expected.len());
        assert!(written.iter().all(|s| s["version"] == 2), "{data}");
        assert_eq!(app.values(&token).await, Value::Object(expected));
    }

    async fn a_null_member_removes_its_key_and_the_original_null_patch_case(app) {
        // RFC 7386 Appendix A, {"a":"foo"} patched with null: the key is removed.
        let token = app.token("alice");
        app.set(&token, "gone", json!({"a": "foo"})).await;
        app.set(&token, "kept", json!(1)).await;
        let data = app.data(&token, UPDATE, json!({"p": {"gone": null, "never": null}})).await;
        assert_eq!(data, json!({"updateSettings": []}));
        assert_eq!(app.values(&token).await, json!({"kept": 1}));
    }

    async fn a_patch_creates_missing_keys_without_their_null_members(app) {
        let token = app.token("alice");
        let data = app
            .data(&token, UPDATE, json!({"p": {"alerts": {"email": true, "sms": null}, "lang": "en"}}))
            .await;
        assert_eq!(
            data,
            json!({"updateSettings": [
                {"key": "alerts", "value": {"email": true}, "version": 1},
                {"key": "lang", "value": "en", "version": 1},
            ]})
        );
    }

    async fn a_patch_applies_to_the_scope_it_names(app) {
        let token = app.token("alice");
        app.set(&token, "layout", json!({"mode": "light"})).await;
        app.data(&token, UPDATE, json!({"p": {"layout": {"mode": "dark"}}, "s": "mobile"})).await;
        assert_eq!(app.values(&token).await, json!({"layout": {"mode": "light"}}));
        let mobile = app.data(&token, r#"{ settings(scope: "mobile") { key value } }"#, json!({})).await;
        assert_eq!(mobile, json!({"settings": [{"key": "layout", "value": {"mode": "dark"}}]}));
    }

    async fn an_invalid_key_in_a_patch_changes_no_key(app) {
        let token = app.token("alice");
        app.set(&token, "a", json!({"x": 1})).await;
        let error = app
            .error(&token, UPDATE, json!({"p": {"a": {"y": 2}, "b": "new", "bad\u{7}key": 1}}))
            .await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        assert_eq!(error["extensions"]["rule"], "noControlCharacters");
        assert_eq!(app.values(&token).await, json!({"a": {"x": 1}}));
    }

    async fn a_value_too_large_after_merging_changes_no_key(app) {
        let token = app.token("alice");
        app.set(&token, "a", json!(1)).await;
        app.set(&token, "big", json!({"half": "x".repeat(40_000)})).await;
        // Each half fits the 64 KiB limit; merged, the value does not.
        let error = app
            .error(&token, UPDATE, json!({"p": {"a": 2, "big": {"other": "y".repeat(40_000)}}}))
            .await;
        assert_eq!(code(&error), "PAYLOAD_TOO_LARGE", "{error}");
        let values = app.values(&token).await;
        assert_eq!(values["a"], 1);
        assert_eq!(values["big"].as_object().unwrap().len(), 1);
    }

    async fn a_patch_that_fails_half_way_through_changes_nothing(app) {
        let token = app.token("alice");
        app.set(&token, "removed", json!(1)).await;
        app.set(&token, "changed", json!({"v": 1})).await;
        // A storage failure on the last write of the patch, after its DELETE has run.
        if app.is_postgres() {
            app.execute_sql(
                "CREATE FUNCTION fail_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.key = 'boom' THEN RAISE EXCEPTION 'storage failure'; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER fail_boom BEFORE INSERT ON settings FOR EACH ROW EXECUTE FUNCTION fail_boom();",
            )
            .await;
        } else {
            app.execute_sql(
                "CREATE TRIGGER fail_boom BEFORE INSERT ON settings WHEN NEW.key = 'boom' \
                 BEGIN SELECT RAISE(ABORT, 'storage failure'); END;",
            )
            .await;
        }
        let error = app
            .error(&token, UPDATE, json!({"p": {"removed": null, "changed": {"v": 2}, "boom": 1}}))
            .await;
        assert_eq!(code(&error), "INTERNAL", "{error}");
        assert!(error["extensions"]["correlationId"].is_string(), "{error}");
        assert!(!error["message"].as_str().unwrap().contains("storage failure"), "the cause leaked: {error}");

        assert_eq!(app.values(&token).await, json!({"changed": {"v": 1}, "removed": 1}));
        let versions = app.data(&token, "{ settings { version } }", json!({})).await;
        assert_eq!(versions, json!({"settings": [{"version": 1}, {"version": 1}]}));
    }

    async fn a_patch_that_is_not_an_object_is_refused(app) {
        let token = app.token("alice");
        for patch in [json!("text"), json!([1, 2]), json!(5), json!(true)] {
            let error = app.error(&token, UPDATE, json!({"p": patch})).await;
            assert_eq!(code(&error), "BAD_USER_INPUT", "{patch}: {error}");
            assert_eq!(error["extensions"]["field"], "patch");
        }
        assert_eq!(app.values(&token).await, json!({}));
    }
}
