//! The per-user rate limit: past it, 429 with `Retry-After` on every interface, in each
//! envelope; other users are not affected.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_user_over_their_rate_waits_and_others_do_not() {
    // One request a minute after a burst of three: the fourth within the minute is refused.
    let options = Options::default()
        .env("RATE_LIMIT_PER_MINUTE", "1")
        .env("RATE_LIMIT_BURST", "3");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let alice = app.token("alice");
    for _ in 0..3 {
        app.data(&alice, "{ me { id } }", json!({})).await;
    }
    let reply = app
        .send(
            app.request("POST", "/graphql", Some(&alice))
                .json(&json!({"query": "{ me { id } }"})),
        )
        .await;
    assert_eq!(reply.status, 429, "{:?}", reply.body);
    let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        reply.body["errors"][0]["extensions"]["code"],
        "RATE_LIMITED"
    );
    assert_eq!(reply.body["errors"][0]["extensions"]["retryAfter"], wait);

    // The REST routes answer the same in their own envelopes.
    let sparse = app
        .rest("GET", "/api/v1/users/settings", Some(&alice), None)
        .await;
    assert_eq!(sparse.status, 429);
    assert!(sparse.header("retry-after").is_some());
    assert_eq!(sparse.body["error"]["code"], "RATE_LIMITED");
    let per_key = app
        .rest("GET", "/api/v1/users/me/settings", Some(&alice), None)
        .await;
    assert_eq!(
        (per_key.status.as_u16(), per_key.body["error"].as_str()),
        (429, Some("TooManyRequests"))
    );

    // Another user has a rate of their own.
    let bob = app.token("bob");
    assert_eq!(
        app.data(&bob, "{ me { id } }", json!({})).await["me"]["id"],
        "bob"
    );
}

#[tokio::test]
async fn a_rate_of_zero_turns_the_limit_off() {
    let options = Options::default()
        .env("RATE_LIMIT_PER_MINUTE", "0")
        .env("RATE_LIMIT_BURST", "1");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let alice = app.token("alice");
    for _ in 0..10 {
        app.data(&alice, "{ me { id } }", json!({})).await;
    }
}

#[tokio::test]
async fn one_address_over_its_rate_is_refused_before_its_tokens_are_looked_at() {
    let options = Options::default()
        .env("RATE_LIMIT_PER_IP_PER_MINUTE", "1")
        .env("RATE_LIMIT_PER_IP_BURST", "4");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    // Valid and invalid tokens alike count against the address.
    app.data(&alice, "{ me { id } }", json!({})).await;
    app.data(&bob, "{ me { id } }", json!({})).await;
    let forged = app
        .rest("GET", "/settings/user", Some("not-a-token"), None)
        .await;
    assert_eq!(forged.status, 401);
    let missing = app.rest("GET", "/settings/user", None, None).await;
    assert_eq!(missing.status, 401);
    // Past the burst: 429 before the token is checked, with Retry-After, in each envelope.
    let forged = app
        .rest("GET", "/settings/user", Some("not-a-token"), None)
        .await;
    assert_eq!(forged.status, 429, "{:?}", forged.body);
    assert!(forged.header("retry-after").is_some());
    let reply = app
        .send(
            app.request("POST", "/graphql", Some(&alice))
                .json(&json!({"query": "{ me { id } }"})),
        )
        .await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.body["errors"][0]["extensions"]["code"],
        "RATE_LIMITED"
    );
    // Health checks are never limited.
    let live = app.rest("GET", "/health/live", None, None).await;
    assert_eq!(live.status, 200);
}
