//! Browser apps on other origins: CORS preflights as a browser sends them, on GraphQL and on
//! the REST routes, answered before authentication.

use serde_json::json;

use crate::helpers::*;

const APP: &str = "https://app.example.com";

/// A preflight as a browser sends it before a cross-origin request with a bearer token.
async fn preflight(app: &TestApp, path: &str, method: &str, origin: &str) -> Reply {
    let request = app
        .client
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        );
    app.send(request).await
}

fn allowed_methods(reply: &Reply) -> String {
    reply
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase()
}

#[tokio::test]
async fn in_development_any_origin_may_call_graphql_and_the_rest_routes() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    for (path, method) in [
        ("/graphql", "POST"),
        ("/api/v1/users/settings", "PATCH"),
        ("/api/v1/users/me/settings/theme", "PUT"),
    ] {
        let reply = preflight(&app, path, method, APP).await;
        assert!(reply.status.is_success(), "{path}: {}", reply.status);
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        assert!(
            allowed_methods(&reply).contains(method),
            "{path}: {:?}",
            reply.header("access-control-allow-methods")
        );
        let headers = reply
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{path}: {headers}"
        );
    }
    // The request itself: answered with the origin allowed and the entity tag readable.
    let token = app.token("alice");
    let reply = app
        .send(
            app.request("GET", "/api/v1/users/settings", Some(&token))
                .header("origin", APP),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let exposed = reply
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("etag") && exposed.contains("x-correlation-id"),
        "{exposed}"
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        None,
        "no credentials with `*`"
    );
}

#[tokio::test]
async fn with_configured_origins_only_those_may_call_with_credentials() {
    let options = Options::default().env(
        "CORS_ALLOWED_ORIGINS",
        &format!("{APP}, http://localhost:5173"),
    );
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let allowed = preflight(&app, "/graphql", "POST", APP).await;
    assert!(allowed.status.is_success());
    assert_eq!(allowed.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    let other = preflight(&app, "/graphql", "POST", "https://elsewhere.example").await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    let token = app.token("alice");
    let reply = app
        .send(
            app.request("POST", "/graphql", Some(&token))
                .header("origin", APP)
                .json(&json!({"query": "{ me { id } }"})),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
}

#[tokio::test]
async fn with_no_allowed_origin_no_browser_app_is_let_in() {
    let options = Options::default().env("CORS_ALLOWED_ORIGINS", "none");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let reply = preflight(&app, "/graphql", "POST", APP).await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
}
