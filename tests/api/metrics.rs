//! `GET /metrics`: what the service is doing, in Prometheus' text format, without a JWT, and
//! behind `METRICS_TOKEN` when an operator sets one.

use serde_json::json;

use crate::helpers::*;

/// The value of the sample whose line starts with `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// The metrics as `GET /metrics` renders them.
async fn scrape(app: &TestApp) -> String {
    let reply = app.client.get(app.url("/metrics")).send().await.unwrap();
    reply.text().await.unwrap()
}

/// How much `series` grew from the scrape `before` to the scrape `after`. The recorder is the
/// process's: other tests may add to a series, never take from it.
fn added(before: &str, after: &str, series: &str) -> f64 {
    sample(after, series).unwrap_or(0.0) - sample(before, series).unwrap_or(0.0)
}

#[tokio::test]
async fn requests_errors_sockets_and_the_pool_are_counted() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("metrics-user");
    app.data(&token, "{ me { id } }", json!({})).await;
    app.rest(
        "PUT",
        "/api/v1/users/me/settings/k",
        Some(&token),
        Some(json!({"nope": 1})),
    )
    .await;

    let reply = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let text = reply.text().await.unwrap();
    let graphql = sample(
        &text,
        r#"settings_api_http_requests_total{method="POST",route="/graphql",status="200"}"#,
    );
    assert!(graphql.is_some_and(|n| n >= 1.0), "{text}");
    let by_route = r#"settings_api_http_requests_total{method="PUT",route="/api/v1/users/me/settings/{key}",status="400"}"#;
    assert!(
        sample(&text, by_route).is_some_and(|n| n >= 1.0),
        "one series per route pattern: {text}"
    );
    assert!(
        text.contains("settings_api_http_request_duration_seconds_bucket"),
        "{text}"
    );
    let rule = r#"settings_api_errors_total{code="BAD_USER_INPUT",rule="additionalProperties"}"#;
    assert!(sample(&text, rule).is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        text.contains(r#"settings_api_db_pool_connections{state="idle"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn every_request_of_a_series_is_counted_and_timed() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let requests =
        r#"settings_api_http_requests_total{method="GET",route="/openapi.json",status="200"}"#;
    let timed =
        r#"settings_api_http_request_duration_seconds_count{method="GET",route="/openapi.json"}"#;
    let before = scrape(&app).await;
    for _ in 0..3 {
        let reply = app.client.get(app.url("/openapi.json")).send().await;
        assert_eq!(reply.unwrap().status(), 200);
    }
    let after = scrape(&app).await;
    for series in [requests, timed] {
        let counted = added(&before, &after, series);
        assert!(
            counted >= 3.0,
            "{series}: {counted} more after 3 requests\n{after}"
        );
    }
}

#[tokio::test]
async fn the_read_cache_counts_its_misses_and_its_hits() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("cache-metrics-user");
    let miss = r#"settings_api_cache_lookups_total{result="miss"}"#;
    let hit = r#"settings_api_cache_lookups_total{result="hit"}"#;
    let before = scrape(&app).await;
    // The user's first read misses and fills the cache; the next two find it there.
    for _ in 0..3 {
        app.data(&token, "{ settings { key } }", json!({})).await;
    }
    let after = scrape(&app).await;
    for (series, least) in [(miss, 1.0), (hit, 2.0)] {
        let counted = added(&before, &after, series);
        assert!(
            counted >= least,
            "{series}: {counted} more after 3 reads\n{after}"
        );
    }
}

#[tokio::test]
async fn with_a_metrics_token_only_its_bearer_reads_the_metrics() {
    let options = Options::default().env("METRICS_TOKEN", "scrape-secret");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let url = app.url("/metrics");
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 401);
    let user = app.token("alice");
    assert_eq!(
        app.client
            .get(&url)
            .bearer_auth(&user)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "a user's JWT is not the metrics token"
    );
    let scraped = app
        .client
        .get(&url)
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("settings_api_"));
}

#[tokio::test]
async fn limits_connections_and_rate_denials_are_counted() {
    let options = Options::default()
        .env("RATE_LIMIT_PER_IP_PER_MINUTE", "1")
        .env("RATE_LIMIT_PER_IP_BURST", "3");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let token = app.token("metrics-limits");
    let costly = format!("{{ __typename {} }}", "@a ".repeat(20_000));
    app.error(&token, &costly, json!({})).await;
    for _ in 0..3 {
        app.rest("GET", "/settings/user", Some(&token), None).await;
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rule = r#"settings_api_errors_total{code="BAD_USER_INPUT",rule="maxTokens"}"#;
    assert!(sample(&text, rule).is_some_and(|n| n >= 1.0), "{text}");
    let denied = r#"settings_api_rate_limited_total{by="ip"}"#;
    assert!(sample(&text, denied).is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        sample(&text, "settings_api_db_pool_waiting").is_some(),
        "{text}"
    );
    // The scrape's own connection is open.
    assert!(
        sample(&text, "settings_api_connections_open").is_some_and(|n| n >= 1.0),
        "{text}"
    );
}
