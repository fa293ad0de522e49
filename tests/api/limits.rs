//! Bad input gets a clear error and changes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const SET: &str = "mutation($k: String!, $v: JSON!) { setSetting(key: $k, value: $v) { version } }";

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("leaf"), |inner, _| json!({ "n": inner }))
}

both_backends! {
    async fn invalid_keys_are_refused_with_the_rule_they_break(app) {
        let token = app.token("alice");
        for (key, rule) in [
            (String::new(), "minLength"),
            ("k".repeat(256), "maxLength"),
            ("line\nbreak".to_owned(), "noControlCharacters"),
            ("nul\u{0}".to_owned(), "noControlCharacters"),
        ] {
            let error = app.error(&token, SET, json!({"k": key, "v": 1})).await;
            assert_eq!(code(&error), "BAD_USER_INPUT", "{key:?}: {error}");
            assert_eq!(error["extensions"]["field"], "key");
            assert_eq!(error["extensions"]["rule"], rule, "{key:?}");
        }
        // The longest allowed key works, counted in characters.
        app.set(&token, &"é".repeat(255), json!(1)).await;
        assert_eq!(app.values(&token).await.as_object().unwrap().len(), 1);
    }

    async fn a_value_over_the_size_limit_is_refused_and_not_stored(app) {
        let token = app.token("alice");
        app.set(&token, "blob", json!("small")).await;
        let error = app.error(&token, SET, json!({"k": "blob", "v": "x".repeat(64 * 1024)})).await;
        assert_eq!(code(&error), "PAYLOAD_TOO_LARGE", "{error}");
        assert_eq!(error["extensions"]["limit"], 65536);
        assert_eq!(app.values(&token).await, json!({"blob": "small"}));
        // Just under the limit (the quotes count) is fine.
        app.set(&token, "blob", json!("x".repeat(64 * 1024 - 2))).await;
    }

    async fn a_value_nested_beyond_the_limit_is_refused(app) {
        let token = app.token("alice");
        app.set(&token, "deep", nested(32)).await;
        let error = app.error(&token, SET, json!({"k": "deep", "v": nested(33)})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        assert_eq!(error["extensions"]["rule"], "maxDepth");
        assert_eq!(app.values(&token).await["deep"], nested(32));
    }

    async fn a_nul_character_anywhere_in_a_value_is_a_validation_error(app) {
        let token = app.token("alice");
        for value in [json!("a\u{0}b"), json!({"list": ["ok", "\u{0}"]}), json!({"na\u{0}me": 1})] {
            let error = app.error(&token, SET, json!({"k": "text", "v": value})).await;
            assert_eq!(code(&error), "BAD_USER_INPUT", "{value}: {error}");
            assert_eq!(error["extensions"]["rule"], "noNulCharacter");
        }
        let patch = "mutation($p: JSON!) { updateSettings(patch: $p) { key } }";
        let error = app.error(&token, patch, json!({"p": {"text": {"x": "\u{0}"}}})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        assert_eq!(app.values(&token).await, json!({}));
    }

    async fn a_body_over_the_limit_is_refused_with_413(app) {
        let token = app.token("alice");
        let body = json!({"query": SET, "variables": {"k": "big", "v": "x".repeat(1024 * 1024)}});
        let (status, body) = app.post_graphql(Some(&token), &body).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(code(&body["errors"][0]), "PAYLOAD_TOO_LARGE", "{body}");
        assert_eq!(app.values(&token).await, json!({}));
    }
}

#[tokio::test]
async fn queries_beyond_the_depth_limit_are_refused() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        Options::default().env("GRAPHQL_MAX_DEPTH", "2"),
    )
    .await
    .unwrap();
    let token = app.token("alice");
    app.data(&token, "{ settings { key } }", json!({})).await;
    let error = app
        .error(&token, "{ me { settings { key } } }", json!({}))
        .await;
    assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
    assert_eq!(error["extensions"]["rule"], "maxDepth");
}

#[tokio::test]
async fn queries_beyond_the_complexity_limit_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");
    let fields: String = (0..300)
        .map(|i| format!("a{i}: settings {{ key value }} "))
        .collect();
    let error = app
        .error(&token, &format!("{{ {fields} }}"), json!({}))
        .await;
    assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
    assert_eq!(error["extensions"]["rule"], "maxComplexity");
}

async fn batches_beyond_the_cap_are_refused_and_smaller_ones_run(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.token("alice");
    let one = json!({"query": "mutation { setSetting(key: \"n\", value: 1) { version } }"});

    let (status, body) = app
        .post_graphql(Some(&token), &json!(vec![one.clone(); 11]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"][0]["extensions"]["rule"], "maxBatchSize",
        "{body}"
    );
    assert_eq!(
        app.values(&token).await,
        json!({}),
        "no operation of the batch ran"
    );

    let (status, body) = app.post_graphql(Some(&token), &json!(vec![one; 10])).await;
    assert_eq!(status, StatusCode::OK);
    // The operations of a batch may run concurrently: each write counts once.
    let mut versions: Vec<u64> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|reply| {
            reply["data"]["setSetting"]["version"]
                .as_u64()
                .expect("a version")
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=10).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_body_that_is_not_a_graphql_request_is_a_bad_request() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(app.token("alice"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body["errors"][0]), "BAD_USER_INPUT", "{body}");
}

#[tokio::test]
async fn graphiqls_schema_query_fits_the_default_limits() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    // The shape of graphql-js's getIntrospectionQuery(), which GraphiQL sends on load.
    let type_ref = (0..9).fold("kind name".to_owned(), |inner, _| {
        format!("kind name ofType {{ {inner} }}")
    });
    let query = format!(
        "query IntrospectionQuery {{ __schema {{ queryType {{ name }} mutationType {{ name }} \
         subscriptionType {{ name }} types {{ ...FullType }} directives {{ name description \
         locations args {{ ...InputValue }} }} }} }} \
         fragment FullType on __Type {{ kind name description fields(includeDeprecated: true) {{ \
         name description args {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated \
         deprecationReason }} inputFields {{ ...InputValue }} interfaces {{ ...TypeRef }} \
         enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }} \
         possibleTypes {{ ...TypeRef }} }} \
         fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue }} \
         fragment TypeRef on __Type {{ {type_ref} }}"
    );
    let data = app.data(&app.token("alice"), &query, json!({})).await;
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
}

on_both_backends!(batches_beyond_the_cap_are_refused_and_smaller_ones_run,);

both_backends! {
    async fn a_patch_of_up_to_max_keys_per_write_keys_works_and_a_larger_one_is_refused_clearly(app) {
        let token = app.token("alice");
        let patch = |keys: usize| {
            let members: serde_json::Map<String, Value> = (0..keys).map(|n| (format!("k{n:04}"), json!({"n": n}))).collect();
            Value::Object(members)
        };
        // The default limit, 1000 keys: one transaction of 1000 rows and 1000 history rows.
        let data = app.data(&token, "mutation($p: JSON!) { updateSettings(patch: $p) { key } }", json!({"p": patch(1000)})).await;
        assert_eq!(data["updateSettings"].as_array().unwrap().len(), 1000);
        let reply = app.rest("PUT", "/settings/user", Some(&token), Some(patch(1000))).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);

        // Past it (4,000 keys was an INTERNAL error on both backends): a 400 naming the limit.
        let error = app.error(&token, "mutation($p: JSON!) { updateSettings(patch: $p) { key } }", json!({"p": patch(4000)})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        assert_eq!(error["extensions"]["rule"], "maxKeys");
        assert!(error["message"].as_str().unwrap().contains("1000"), "{error}");
        let reply = app.rest("PUT", "/settings/user", Some(&token), Some(patch(1001))).await;
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        let reply = app.rest("PUT", "/api/v1/users/preferences/update", Some(&token), Some(json!({"updatedPreferences": patch(1001)}))).await;
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        assert_eq!(history_count(&app, "alice").await, 2000, "nothing of the refused writes");
    }
}
