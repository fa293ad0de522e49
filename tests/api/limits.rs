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

/// Fragments F0..F{depth} where each spreads the next twice: 2^depth fields once expanded, in
/// a document of a few hundred bytes.
fn doubling_fragments(depth: usize) -> String {
    let mut query = String::from("query { ...F0 }\n");
    for level in 0..depth {
        let next = level + 1;
        query += &format!("fragment F{level} on Query {{ ...F{next} ...F{next} }}\n");
    }
    query + &format!("fragment F{depth} on Query {{ settings {{ key }} }}\n")
}

#[tokio::test]
async fn documents_beyond_the_cost_limits_are_refused_before_they_run() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");
    let refused = |query: String, rule: &'static str| {
        let (app, token) = (&app, &token);
        async move {
            let error = app.error(token, &query, json!({})).await;
            assert_eq!(code(&error), "BAD_USER_INPUT", "{rule}: {error}");
            assert_eq!(error["extensions"]["field"], "query", "{error}");
            assert_eq!(error["extensions"]["rule"], rule, "{error}");
            error
        }
    };
    // The probe of the hardening issue: a DAG of depth 25 is 33 million fields.
    let error = refused(doubling_fragments(25), "maxSelections").await;
    assert!(
        error["message"].as_str().unwrap().contains("at most 2000"),
        "{error}"
    );
    refused(
        format!("{{ __typename {} }}", "@a ".repeat(300_000)),
        "maxTokens",
    )
    .await;
    refused(
        format!(
            "{{ settings {} {{ key }} }}",
            "@include(if: true) ".repeat(60)
        ),
        "maxDirectives",
    )
    .await;
    refused(
        "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }".into(),
        "fragmentCycle",
    )
    .await;
    // Within the limits the same shapes run: 2^7 spreads of `settings { key }`, directives.
    let data = app.data(&token, &doubling_fragments(7), json!({})).await;
    assert_eq!(data["settings"], json!([]));
    let within = "{ a: settings @include(if: true) @skip(if: false) { key } b: me @include(if: true) { id } }";
    app.data(&token, within, json!({})).await;
}

#[tokio::test]
async fn the_cost_limits_are_configurable() {
    let options = Options::default()
        .env("GRAPHQL_MAX_SELECTIONS", "3")
        .env("GRAPHQL_MAX_TOKENS", "40")
        .env("GRAPHQL_MAX_DIRECTIVES", "1");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let token = app.token("alice");
    app.data(&token, "{ settings { key value } }", json!({}))
        .await;
    let rule = |error: Value| error["extensions"]["rule"].as_str().unwrap().to_owned();
    let error = app
        .error(&token, "{ settings { key value version } }", json!({}))
        .await;
    assert_eq!(rule(error), "maxSelections");
    let error = app
        .error(&token, "{ a: me { id } b: me { id } c: me { id } d: me { id } e: me { id } f: me { id } g: me { id } }", json!({}))
        .await;
    assert_eq!(rule(error), "maxTokens");
    let error = app
        .error(
            &token,
            "{ me @skip(if: false) @include(if: true) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(rule(error), "maxDirectives");
}

#[tokio::test]
async fn a_persisted_query_is_judged_before_it_is_registered() {
    use sha2::Digest;
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");
    let query = doubling_fragments(20);
    let hash = format!("{:x}", sha2::Sha256::digest(query.as_bytes()));
    let persisted = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    let (_, body) = app
        .post_graphql(
            Some(&token),
            &json!({"query": query, "extensions": persisted}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["rule"], "maxSelections",
        "{body}"
    );
    // It was not kept: the hash alone is not found.
    let (_, body) = app
        .post_graphql(Some(&token), &json!({"extensions": persisted}))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{body}"
    );
}

/// PostgreSQL only: a table lock held from outside makes a read wait as long as the test
/// wants, so the timeout is what ends it (SQLite readers do not wait for a lock).
#[tokio::test]
async fn a_query_past_the_execution_timeout_is_stopped_with_timeout_and_the_service_goes_on() {
    let options = Options::default().env("GRAPHQL_EXECUTION_TIMEOUT_MS", "300");
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let token = app.token("alice");
    app.set(&token, "theme", json!("dark")).await;
    let lock = app.lock_settings_table().await;
    let (status, body) = app.graphql(&token, "{ settings { key } }", json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body["errors"][0]), "TIMEOUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("300 ms"),
        "{body}"
    );
    lock.release().await;
    // Nothing was left behind: reads and writes go on.
    app.set(&token, "theme", json!("light")).await;
    assert_eq!(app.values(&token).await, json!({"theme": "light"}));
}

both_backends! {
    options = Options::default().env("QUOTA_KEYS_PER_SCOPE", "3");
    async fn a_write_past_the_key_quota_of_a_scope_is_refused_and_writes_nothing(app) {
        let token = app.token("alice");
        for key in ["a", "b", "c"] {
            app.set(&token, key, json!(1)).await;
        }
        let error = app.error(&token, SET, json!({"k": "d", "v": 1})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        assert_eq!(error["extensions"]["rule"], "quotaKeys", "{error}");
        assert!(error["message"].as_str().unwrap().contains("at most 3 keys"), "{error}");
        let patch = "mutation($p: JSON!) { updateSettings(patch: $p) { key } }";
        let error = app.error(&token, patch, json!({"p": {"a": 2, "e": 1}})).await;
        assert_eq!(error["extensions"]["rule"], "quotaKeys", "{error}");
        // Through a legacy route too, in its envelope.
        let reply = app.rest("PUT", "/settings/user", Some(&token), Some(json!({"f": 1}))).await;
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        assert_eq!(app.values(&token).await, json!({"a": 1, "b": 1, "c": 1}));
        assert_eq!(history_count(&app, "alice").await, 3);
        // Updating a kept key is fine; so is a patch that removes as many as it adds.
        app.set(&token, "c", json!(2)).await;
        app.data(&token, patch, json!({"p": {"a": null, "d": 4}})).await;
        assert_eq!(app.values(&token).await, json!({"b": 1, "c": 2, "d": 4}));
        // The quota is per scope.
        app.data(&token, "mutation { setSetting(scope: \"other\", key: \"x\", value: 1) { key } }", json!({})).await;
    }
}

both_backends! {
    options = Options::default().env("QUOTA_BYTES_PER_SCOPE", "100");
    async fn a_write_past_the_byte_quota_of_a_scope_is_refused_and_a_smaller_one_applies(app) {
        let token = app.token("alice");
        app.set(&token, "big", json!("x".repeat(50))).await;
        app.set(&token, "small", json!("y".repeat(20))).await;
        // Growing a stored value past the quota (on PostgreSQL, the one-statement path).
        let error = app.error(&token, SET, json!({"k": "big", "v": "x".repeat(80)})).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{error}");
        assert_eq!(error["extensions"]["rule"], "quotaBytes", "{error}");
        let error = app.error(&token, SET, json!({"k": "new", "v": "z".repeat(40)})).await;
        assert_eq!(error["extensions"]["rule"], "quotaBytes", "{error}");
        assert_eq!(app.values(&token).await["big"], json!("x".repeat(50)));
        assert_eq!(history_count(&app, "alice").await, 2);
        // Within it: growing a little, and shrinking.
        app.set(&token, "big", json!("x".repeat(60))).await;
        app.set(&token, "big", json!("x")).await;
        app.set(&token, "new", json!("z".repeat(40))).await;
    }
}

/// PostgreSQL only: concurrent transactions (SQLite has one writer at a time).
#[tokio::test]
async fn concurrent_writes_never_pass_the_key_quota() {
    let options = Options::default().env("QUOTA_KEYS_PER_SCOPE", "5");
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let token = app.token("alice");
    let patch = "mutation($p: JSON!) { updateSettings(patch: $p) { key } }";
    let writes = (0..20).map(|n| {
        let (app, token) = (&app, &token);
        async move {
            let (_, body) = app
                .graphql(token, patch, json!({"p": {format!("k{n}"): n}}))
                .await;
            body["errors"][0]["extensions"]["rule"]
                .as_str()
                .map(str::to_owned)
        }
    });
    let refused = futures_util::future::join_all(writes).await;
    assert!(
        refused.iter().flatten().all(|rule| rule == "quotaKeys"),
        "{refused:?}"
    );
    assert_eq!(refused.iter().filter(|r| r.is_none()).count(), 5);
    assert_eq!(app.values(&token).await.as_object().unwrap().len(), 5);
}
