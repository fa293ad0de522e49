//! GraphQL over HTTP as graphql-over-http and the GET-based clients (urql's default, Apollo's
//! `useGETForQueries`) expect: queries over GET, mutations only over POST, JSON only, and the
//! `application/graphql-response+json` format with 4xx for requests that never ran.

use serde_json::{Value, json};

use crate::helpers::*;

const WRITE: &str = r#"mutation { setSetting(key: "theme", value: "dark") { version } }"#;

fn url(app: &TestApp, params: &[(&str, &str)]) -> reqwest::Url {
    reqwest::Url::parse_with_params(&app.url("/graphql"), params).unwrap()
}

fn get(app: &TestApp, token: &str, params: &[(&str, &str)]) -> reqwest::RequestBuilder {
    app.client.get(url(app, params)).bearer_auth(token).header(
        "accept",
        "application/graphql-response+json, application/json",
    )
}

both_backends! {
    async fn queries_run_over_get_and_mutations_are_refused_there(app) {
        let token = app.token("alice");
        app.set(&token, "theme", json!("light")).await;
        let query = "query($k: [String!]) { settings(keys: $k) { key value } }";
        let reply = app.send(get(&app, &token, &[("query", query), ("variables", r#"{"k": ["theme"]}"#)])).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body["data"]["settings"], json!([{"key": "theme", "value": "light"}]));
        assert_eq!(reply.header("content-type"), Some("application/graphql-response+json"));

        // urql and Apollo send plain `application/json` too.
        let plain = app.send(app.client.get(url(&app, &[("query", "{ me { id } }")])).bearer_auth(&token).header("accept", "application/json")).await;
        assert_eq!((plain.status.as_u16(), plain.body["data"]["me"]["id"].clone()), (200, json!("alice")));

        // A mutation over GET is refused and writes nothing, named or chosen by operationName.
        for params in [vec![("query", WRITE)], vec![("query", "query A { me { id } } mutation B { deleteSetting(key: \"theme\") }"), ("operationName", "B")]] {
            let refused = app.send(get(&app, &token, &params)).await;
            assert_eq!(refused.status, 405, "{:?}", refused.body);
            assert_eq!(refused.header("allow"), Some("POST"));
        }
        assert_eq!(app.values(&token).await, json!({"theme": "light"}));

        // Without a query, a client (not a browser) gets a clear 400.
        let empty = app.send(app.client.get(app.url("/graphql")).bearer_auth(&token).header("accept", "application/json")).await;
        assert_eq!(empty.status, 400);
        assert_eq!(empty.body["errors"][0]["extensions"]["field"], "query");
        // A browser gets GraphiQL.
        let page = app.client.get(app.url("/graphql")).header("accept", "text/html,application/xhtml+xml,*/*;q=0.8").send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("GraphiQL"));
    }

    async fn only_json_posts_run_so_a_form_can_never_send_a_mutation(app) {
        let token = app.token("alice");
        for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
            let mut request = app.client.post(app.url("/graphql")).bearer_auth(&token).body(json!({"query": WRITE}).to_string());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let reply = app.send(request).await;
            assert_eq!(reply.status, 415, "{content_type:?}: {:?}", reply.body);
            assert_eq!(reply.body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        }
        assert_eq!(app.values(&token).await, json!({}));
    }

    async fn a_body_that_is_not_a_graphql_request_is_refused_saying_what_is_wrong(app) {
        let token = app.token("alice");
        let post = |body: &str| app.client.post(app.url("/graphql")).bearer_auth(&token).header("content-type", "application/json").body(body.to_owned());
        for (body, says) in [
            (r#"{"query": 3}"#, "invalid type: integer `3`, expected a string"),
            (r#"  {"query": "{ settings { key } }", "variables": [1]}"#, "invalid type: sequence"),
            (r#""{ settings { key } }""#, "invalid type: string"),
            (r#"{"query": "{ settings { key } }""#, "EOF"),
        ] {
            let reply = app.send(post(body)).await;
            assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
            let error = &reply.body["errors"][0];
            assert_eq!((code(error), error["extensions"]["field"].as_str(), error["extensions"]["rule"].as_str()), ("BAD_USER_INPUT", Some("body"), Some("graphqlRequest")), "{body}: {error}");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(says), "{body}: {message}");
        }
        // One request, with space before it, and a batch of one.
        let reply = app.send(post(r#" {"query": "{ settings { key } }"}"#)).await;
        assert_eq!((reply.status.as_u16(), &reply.body), (200, &json!({"data": {"settings": []}})));
        let reply = app.send(post(r#"
            [{"query": "{ settings { key } }"}]"#)).await;
        assert_eq!((reply.status.as_u16(), &reply.body), (200, &json!([{"data": {"settings": []}}])));
    }

    async fn the_graphql_response_format_answers_400_without_data_when_nothing_ran(app) {
        let token = app.token("alice");
        let post = |body: Value| app.client.post(app.url("/graphql")).bearer_auth(&token).header("accept", "application/graphql-response+json").json(&body);
        for body in [
            json!({"query": "{ settings { key "}),
            json!({"query": "{ noSuchField }"}),
            json!({"query": "query($n: Int!) { settingHistory(key: \"k\", first: $n) { edges { cursor } } }", "variables": {"n": "many"}}),
        ] {
            let reply = app.send(post(body.clone())).await;
            assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
            assert_eq!(reply.header("content-type"), Some("application/graphql-response+json"));
            assert!(reply.body.get("data").is_none(), "{body}: {:?}", reply.body);
            assert!(!reply.body["errors"].as_array().unwrap().is_empty());
        }
        // A request that ran answers 200, even with an error in a field.
        let ran = app.send(post(json!({"query": "{ settingHistory(key: \"k\", first: 0) { edges { cursor } } }"}))).await;
        assert_eq!(ran.status, 200, "{:?}", ran.body);
        // Without that format, clients keep the `application/json` answer they know: 200.
        let (status, body) = app.post_graphql(Some(&token), &json!({"query": "{ settings { key "})).await;
        assert_eq!(status, 200);
        assert_eq!(body["data"], Value::Null);
    }
}

both_backends! {
    async fn an_omitted_variable_leaves_the_arguments_default_in_place(app) {
        let token = app.token("alice");
        app.set(&token, "theme", json!("light")).await;
        // `scope: String! = ""` filled by a nullable variable that the client did not send.
        let data = app.data(&token, "query($s: String) { settings(scope: $s) { key } }", json!({})).await;
        assert_eq!(data["settings"], json!([{"key": "theme"}]));
        let data = app
            .data(&token, "query($s: String, $n: Int) { settingHistory(key: \"theme\", scope: $s, first: $n) { edges { node { version } } } }", json!({}))
            .await;
        assert_eq!(data["settingHistory"]["edges"], json!([{"node": {"version": 1}}]));
        // Inside a fragment, over GET, and beside a variable that was sent.
        let query = "query($s: String, $k: [String!]) { ...f } fragment f on Query { settings(scope: $s, keys: $k) { key } }";
        let reply = app.send(get(&app, &token, &[("query", query), ("variables", r#"{"k": ["theme"]}"#)])).await;
        assert_eq!(reply.body["data"]["settings"], json!([{"key": "theme"}]), "{:?}", reply.body);
        // A variable sent as null is a null: refused where the argument takes none.
        let (_, body) = app.graphql(&token, "query($s: String) { settings(scope: $s) { key } }", json!({"s": null})).await;
        assert!(body["errors"].is_array(), "{body}");
        // A non-null variable that is missing is still the client's error.
        let (_, body) = app.graphql(&token, "query($s: String!) { settings(scope: $s) { key } }", json!({})).await;
        assert!(body["errors"].is_array(), "{body}");
    }
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(text.as_bytes()))
}

fn persisted(hash: &str) -> Value {
    json!({"persistedQuery": {"version": 1, "sha256Hash": hash}})
}

async fn automatic_persisted_queries_over_post_and_get(backend: Backend) {
    let options = Options::default().env("GRAPHQL_PERSISTED_QUERIES", "2");
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    let token = app.token("alice");
    let query = "{ me { id } }";
    let hash = sha256(query);

    // The hash alone, unknown: the error Apollo's link answers by sending the query too.
    let (status, body) = app
        .post_graphql(Some(&token), &json!({"extensions": persisted(&hash)}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    // The query with its hash runs and registers it; then the hash alone runs, by POST and GET.
    let (_, body) = app
        .post_graphql(
            Some(&token),
            &json!({"query": query, "extensions": persisted(&hash)}),
        )
        .await;
    assert_eq!(body["data"]["me"]["id"], "alice", "{body}");
    let (_, body) = app
        .post_graphql(Some(&token), &json!({"extensions": persisted(&hash)}))
        .await;
    assert_eq!(body["data"]["me"]["id"], "alice", "{body}");
    let extensions = persisted(&hash).to_string();
    let reply = app
        .send(get(&app, &token, &[("extensions", &extensions)]))
        .await;
    assert_eq!(reply.body["data"]["me"]["id"], "alice", "{:?}", reply.body);

    // A hash that is not the query's is refused, and nothing runs.
    let (_, body) = app
        .post_graphql(
            Some(&token),
            &json!({"query": WRITE, "extensions": persisted(&hash)}),
        )
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{body}"
    );
    assert_eq!(app.values(&token).await, json!({}));

    // A persisted mutation runs by POST, never by GET.
    let write_hash = sha256(WRITE);
    let (_, body) = app
        .post_graphql(
            Some(&token),
            &json!({"query": WRITE, "extensions": persisted(&write_hash)}),
        )
        .await;
    assert_eq!(body["data"]["setSetting"]["version"], 1, "{body}");
    let extensions = persisted(&write_hash).to_string();
    let refused = app
        .send(get(&app, &token, &[("extensions", &extensions)]))
        .await;
    assert_eq!(refused.status, 405, "{:?}", refused.body);
    assert_eq!(
        app.data(
            &token,
            r#"{ setting(key: "theme") { version } }"#,
            json!({})
        )
        .await["setting"]["version"],
        1
    );

    // The store is bounded: past its size the least recently used hash is forgotten.
    let third = "{ settings { key } }";
    app.post_graphql(
        Some(&token),
        &json!({"query": third, "extensions": persisted(&sha256(third))}),
    )
    .await;
    let (_, body) = app
        .post_graphql(Some(&token), &json!({"extensions": persisted(&hash)}))
        .await;
    assert_eq!(
        body["errors"][0]["message"], "PersistedQueryNotFound",
        "{body}"
    );
}

on_both_backends!(automatic_persisted_queries_over_post_and_get);

#[tokio::test]
async fn in_production_introspection_suggestions_and_graphiql_are_off_unless_enabled() {
    let introspect = "{ __schema { queryType { name } } }";
    let misspelt = "{ setings { key } }";
    let production = Options::default().env("APP_ENV", "production");
    let app = TestApp::spawn_with(Backend::Sqlite, production)
        .await
        .unwrap();
    let token = app.token("alice");
    let (_, body) = app.graphql(&token, introspect, json!({})).await;
    assert_eq!(
        body["data"]["__schema"],
        Value::Null,
        "the schema is not described: {body}"
    );
    let (_, body) = app.graphql(&token, misspelt, json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("Did you mean"), "{message}");
    let page = app
        .client
        .get(app.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_ne!(page.status(), 200, "no GraphiQL");
    let asset = app
        .client
        .get(app.url("/graphql/assets/graphiql.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 404);

    // Each can be enabled on its own; in development all are on.
    let enabled = Options::default()
        .env("APP_ENV", "production")
        .env("GRAPHQL_INTROSPECTION", "true");
    let app = TestApp::spawn_with(Backend::Sqlite, enabled).await.unwrap();
    let data = app.data(&app.token("alice"), introspect, json!({})).await;
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
    let development = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let (_, body) = development
        .graphql(&development.token("alice"), misspelt, json!({}))
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Did you mean"),
        "{body}"
    );
}

both_backends! {
    async fn graphql_response_json_keeps_the_order_of_the_selection(app) {
        let token = app.token("alice");
        let reply = app.client.post(app.url("/graphql")).bearer_auth(&token)
            .header("accept", "application/graphql-response+json")
            .json(&json!({"query": "{ me { roles id } }"})).send().await.unwrap();
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.text().await.unwrap(), r#"{"data":{"me":{"roles":[],"id":"alice"}}}"#);

        // A request that never ran: its error's message comes first, as the spec lists it.
        let reply = app.client.post(app.url("/graphql")).bearer_auth(&token)
            .header("accept", "application/graphql-response+json")
            .json(&json!({"query": "{ me { nothing } }"})).send().await.unwrap();
        assert_eq!(reply.status(), 400);
        let text = reply.text().await.unwrap();
        assert!(text.starts_with(r#"{"errors":[{"message":"#), "{text}");
    }
}
