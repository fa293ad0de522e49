//! The direct path of the `settings` query and of the `setSetting` and `updateSettings`
//! mutations answers byte for byte what the executor answers.
//! Each query runs as written, and again with `@include(if: true)` on its `settings` field:
//! the same query, which the direct path does not take (it takes no directives), so the
//! second answer is the executor's.

use serde_json::{Value, json};

use crate::helpers::*;

/// Values of every JSON kind, with text that needs escaping and numbers of every form.
async fn seed(app: &TestApp, token: &str) {
    let writes = [
        ("theme", json!("dark"), ""),
        (
            "appearance",
            json!({"mode": "dark", "accent": "#3b82f6", "fontScale": 1.5,
                   "label": "tab\t \"quoted\" \\ ü ✓ \u{1F600} </script>",
                   "controls \"named\"": "\u{1}\u{8}\u{c}\n\r\u{1f}\u{7f} line\u{2028}end",
                   "nested": {"z": [1, -2, 3.25, 1e300, 12345678901234567890u64], "a": null}}),
            "",
        ),
        ("recent", json!(["a", 1, true, null, {"b": 2, "a": 1}]), ""),
        ("count", json!(-7), ""),
        ("layout", json!({"columns": 3}), "mobile"),
    ];
    for (key, value, scope) in writes {
        let data = app
            .data(
                token,
                "mutation($k: String!, $v: JSON!, $s: String!) { setSetting(key: $k, value: $v, scope: $s) { version } }",
                json!({"k": key, "v": value, "s": scope}),
            )
            .await;
        assert_eq!(data["setSetting"]["version"], 1);
    }
    // One value that expires, so that `expiresAt` is not always null.
    app.data(
        token,
        r#"mutation { setSetting(key: "snooze", value: true, ttlSeconds: 3600) { version } }"#,
        json!({}),
    )
    .await;
}

/// The status, media type and body text of a query sent as clients send it.
async fn ask(
    app: &TestApp,
    token: &str,
    accept: &str,
    body: &Value,
) -> (u16, Option<String>, String) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .header("accept", accept)
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let media_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (status, media_type, response.text().await.expect("a body"))
}

/// `query` has `@D` where a directive on its `settings` field goes.
const QUERIES: &[(&str, Option<&str>, &str)] = &[
    (
        "{ settings @D { key value version updatedAt } }",
        None,
        "{}",
    ),
    (
        "query Everything { all: settings @D { __typename id k: key scope value version createdAt updatedAt expiresAt } }",
        None,
        "{}",
    ),
    (
        "query Everything { settings @D { expiresAt key } }",
        Some("Everything"),
        "{}",
    ),
    (
        "query($k: [String!]) { settings(keys: $k) @D { key value } }",
        None,
        r#"{"k": ["theme", "recent", "missing"]}"#,
    ),
    (
        "query($k: [String!]) { settings(keys: $k) @D { key } }",
        None,
        r#"{"k": null}"#,
    ),
    (
        "query($k: [String!]) { settings(keys: $k) @D { key } }",
        None,
        "{}",
    ),
    (
        "query($k: [String!]!) { settings(keys: $k) @D { key } }",
        None,
        r#"{"k": []}"#,
    ),
    (
        "query($s: String!) { settings(scope: $s) @D { scope key value } }",
        None,
        r#"{"s": "mobile"}"#,
    ),
    (
        r#"{ settings(scope: "mobile", keys: ["layout", "theme"]) @D { key value } }"#,
        None,
        "{}",
    ),
    (r#"{ settings(scope: "nowhere") @D { key } }"#, None, "{}"),
    // Requests the executor answers with an error, either way.
    (
        r#"{ settings(scope: "not a scope!") @D { key } }"#,
        None,
        "{}",
    ),
    (
        "query($s: String!) { settings(scope: $s) @D { key } }",
        None,
        "{}",
    ),
    (
        "query($k: [String!]) { settings(keys: $k) @D { key } }",
        None,
        r#"{"k": ["ok", null]}"#,
    ),
    (
        "query($k: [String!]) { settings(keys: $k) @D { key } }",
        None,
        r#"{"k": 3}"#,
    ),
    ("query A { settings @D { key } }", Some("B"), "{}"),
];

const ACCEPTS: &[&str] = &[
    "application/json",
    "application/graphql-response+json, application/json;q=0.9",
];

/// Sends each case as written with `direct_token`, and with `@include(if: true)` in place of
/// its `@D` with `executed_token`, in each media type, and compares the answers.
async fn compare_each(
    app: &TestApp,
    cases: &[(&str, Option<&str>, &str)],
    direct_token: &str,
    executed_token: &str,
) {
    for &(query, operation_name, variables) in cases {
        for accept in ACCEPTS {
            let body = |directive: &str| {
                let mut body = json!({
                    "query": query.replace("@D", directive),
                    "variables": serde_json::from_str::<Value>(variables).unwrap(),
                });
                if let Some(name) = operation_name {
                    body["operationName"] = json!(name);
                }
                body
            };
            let direct = ask(app, direct_token, accept, &body("")).await;
            let executed = ask(app, executed_token, accept, &body("@include(if: true)")).await;
            assert_eq!(direct, executed, "{query} {variables} ({accept})");
        }
    }
}

async fn compare(app: &TestApp, token: &str) {
    compare_each(app, QUERIES, token, token).await;
}

both_backends! {
    async fn the_direct_settings_read_answers_what_the_executor_answers(app) {
        let token = app.token("alice");
        seed(&app, &token).await;
        compare(&app, &token).await;
        // The data is there, and in selection order.
        let (status, _, text) = ask(&app, &token, ACCEPTS[0], &json!({"query": "{ settings { version key } }"})).await;
        assert_eq!(status, 200);
        assert!(text.starts_with(r#"{"data":{"settings":[{"version":1,"key":"appearance"}"#), "{text}");
        // A token without read access is refused, as by the executor.
        let writer = scoped_token("alice", "settings:write");
        let (status, _, text) = ask(&app, &writer, ACCEPTS[0], &json!({"query": "{ settings { key } }"})).await;
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, code(&body["errors"][0])), (200, "FORBIDDEN"), "{text}");
    }
}

both_backends! {
    options = Options::default().env("SETTINGS_CACHE_MB", "0");
    async fn without_the_cache_too(app) {
        let token = app.token("alice");
        seed(&app, &token).await;
        compare(&app, &token).await;
    }
}

/// Writes, each sent twice with the same input: as written, for one user, and with
/// `@include(if: true)` on its root field, for another user with the same settings, which the
/// executor answers. The selections leave out what differs between the two users (`id`) and
/// between two instants (`createdAt`, `updatedAt`); `a_direct_write_answers_what_it_wrote`
/// checks those.
const WRITES: &[(&str, Option<&str>, &str)] = &[
    (
        r#"mutation($v: JSON!) { setSetting(key: "appearance", value: $v) @D { version } }"#,
        None,
        r#"{"v": {"mode": "light", "label": "tab\t \"q\" ü ✓ </script>", "n": [1, -2.5, 1e300]}}"#,
    ),
    (
        "mutation Set($k: String!, $v: JSON!, $s: String!) { s: setSetting(key: $k, value: $v, scope: $s) @D { __typename k: key scope value version expiresAt } }",
        Some("Set"),
        r#"{"k": "layout", "v": [null, true, "x"], "s": "mobile"}"#,
    ),
    (
        "mutation($k: String!, $v: JSON!) { setSetting(key: $k, value: $v) @D { key value version } }",
        None,
        r#"{"k": "fresh", "v": 12345678901234567890}"#,
    ),
    (
        "mutation($p: JSON!) { updateSettings(patch: $p) @D { key value version } }",
        None,
        r##"{"p": {"appearance": {"mode": null, "accent": "#fff"}, "count": 8, "recent": null, "new": {"a": {"b": 1}}}}"##,
    ),
    (
        r#"mutation Patch($p: JSON!) { u: updateSettings(scope: "mobile", patch: $p) @D { scope key version value } }"#,
        Some("Patch"),
        r#"{"p": {"layout": {"columns": 4}}}"#,
    ),
    (
        "mutation($p: JSON!) { updateSettings(patch: $p) @D { key } }",
        None,
        r#"{"p": {}}"#,
    ),
    // Refused by the store, after the direct path asked it to write: it reports the error.
    (
        "mutation($p: JSON!) { updateSettings(patch: $p) @D { key } }",
        None,
        r#"{"p": 3}"#,
    ),
    (
        "mutation($p: JSON!) { updateSettings(patch: $p) @D { key } }",
        None,
        r#"{"p": {"ok": 1, "": 2}}"#,
    ),
    (
        r#"mutation($v: JSON!) { setSetting(key: "deep", value: $v) @D { version } }"#,
        None,
        r#"{"v": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
    ),
    // Refused before any write: the executor reports these, either way.
    (
        "mutation($k: String!, $v: JSON!) { setSetting(key: $k, value: $v) @D { version } }",
        None,
        r#"{"k": "", "v": 1}"#,
    ),
    (
        r#"mutation($v: JSON!) { setSetting(key: "a", value: $v, scope: "not a scope!") @D { version } }"#,
        None,
        r#"{"v": 1}"#,
    ),
    (
        "mutation($p: JSON!) { updateSettings(patch: $p) @D { key } }",
        None,
        r#"{"p": null}"#,
    ),
    (
        "mutation($p: JSON!) { updateSettings(patch: $p) @D { key } }",
        None,
        "{}",
    ),
    (
        "mutation A($p: JSON!) { updateSettings(patch: $p) @D { key } }",
        Some("B"),
        r#"{"p": {"a": 1}}"#,
    ),
];

async fn compare_writes(app: &TestApp, direct_token: &str, executed_token: &str) {
    compare_each(app, WRITES, direct_token, executed_token).await;
    // Each write went in once: both users have the same settings and versions.
    let all = "query($s: String!) { settings(scope: $s) { key value version } }";
    for scope in ["", "mobile"] {
        let variables = json!({"s": scope});
        assert_eq!(
            app.data(direct_token, all, variables.clone()).await,
            app.data(executed_token, all, variables).await
        );
    }
}

both_backends! {
    async fn a_direct_write_answers_what_the_executor_answers(app) {
        let (alice, bob) = (app.token("alice"), app.token("bob"));
        seed(&app, &alice).await;
        seed(&app, &bob).await;
        compare_writes(&app, &alice, &bob).await;
        let versions = app.data(&alice, "{ settings { key version } }", json!({})).await;
        // Two writes of each of the six that succeeded, one per accepted media type.
        assert!(versions["settings"].as_array().unwrap().contains(&json!({"key": "appearance", "version": 5})), "{versions}");
        // A token without write access is refused before anything is written.
        let reader = scoped_token("alice", "settings:read");
        let (status, _, text) = ask(&app, &reader, ACCEPTS[0], &json!({
            "query": "mutation($p: JSON!) { updateSettings(patch: $p) { key } }",
            "variables": {"p": {"count": 1}},
        })).await;
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, code(&body["errors"][0])), (200, "FORBIDDEN"), "{text}");
        assert_eq!(app.values(&alice).await["count"], 8);
    }
}

both_backends! {
    async fn a_direct_write_answers_what_it_wrote(app) {
        let token = app.token("alice");
        let written = app.data(&token, "mutation($p: JSON!) { updateSettings(patch: $p) { id key value version createdAt updatedAt } }", json!({"p": {"a": [1], "b": {"c": "d"}}})).await;
        let set = app.data(&token, r#"mutation($v: JSON!) { setSetting(key: "b", value: $v) { id key value version createdAt updatedAt } }"#, json!({"v": false})).await;
        // What a read through the executor answers afterwards, field for field.
        let read = app.data(&token, "{ settings @include(if: true) { id key value version createdAt updatedAt } }", json!({})).await;
        assert_eq!(written["updateSettings"][0], read["settings"][0]);
        assert_eq!(set["setSetting"], read["settings"][1]);
        assert_eq!(set["setSetting"]["version"], 2);
        assert_eq!(written["updateSettings"][1]["value"], json!({"c": "d"}));
    }
}

both_backends! {
    options = Options::default().env("SETTINGS_CACHE_MB", "0");
    async fn direct_writes_without_the_cache_too(app) {
        let (alice, bob) = (app.token("alice"), app.token("bob"));
        seed(&app, &alice).await;
        seed(&app, &bob).await;
        compare_writes(&app, &alice, &bob).await;
    }
}
