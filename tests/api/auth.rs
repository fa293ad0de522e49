//! Every way a token can fail gets 401 UNAUTHENTICATED and changes nothing.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::StatusCode;
use serde_json::{Value, json};
use settings_api::auth::TokenRequest;

use crate::helpers::*;

const WRITE: &str =
    r#"{"query": "mutation { setSetting(key: \"theme\", value: \"dark\") { version } }"}"#;

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(claims: Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn assert_refused(app: &TestApp, authorization: Option<String>, message: &str) {
    let mut request = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(WRITE);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{message}");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        code(&body["errors"][0]),
        "UNAUTHENTICATED",
        "{message}: {body}"
    );
    assert!(
        body.get("data").is_none(),
        "{message}: nothing may run: {body}"
    );
}

async fn every_kind_of_bad_token_is_refused_and_writes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let valid = json!({"sub": "alice", "exp": now() + 600});
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "no Authorization header"),
        (Some("Basic YWxpY2U6cHc=".into()), "not a bearer token"),
        (Some("Bearer ".into()), "an empty bearer token"),
        (Some("Bearer not.a.jwt".into()), "garbage"),
        (
            Some(format!(
                "Bearer {}",
                sign(valid.clone(), "another-secret-of-at-least-32-bytes!!")
            )),
            "forged signature",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(json!({"sub": "alice", "exp": now() - 120}), SECRET)
            )),
            "expired beyond the leeway",
        ),
        (
            Some(format!("Bearer {}", sign(json!({"sub": "alice"}), SECRET))),
            "no exp",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(json!({"exp": now() + 600}), SECRET)
            )),
            "no sub",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(json!({"sub": "", "exp": now() + 600}), SECRET)
            )),
            "empty sub",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(json!({"sub": "s".repeat(256), "exp": now() + 600}), SECRET)
            )),
            "sub longer than a user id may be",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(
                    json!({"sub": "alice", "exp": now() + 600, "email": format!("{}@x.io", "e".repeat(320))}),
                    SECRET
                )
            )),
            "email longer than an address may be",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(
                    json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}),
                    SECRET
                )
            )),
            "not valid yet",
        ),
        (
            Some(format!(
                "Bearer {}",
                sign(
                    json!({"sub": "alice", "exp": now() + 600, "roles": "admin"}),
                    SECRET
                )
            )),
            "roles not an array",
        ),
    ];
    for (authorization, message) in cases {
        assert_refused(&app, authorization, message).await;
    }
    // An unsigned token ("alg": "none") is refused too.
    let header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64_url(&valid.to_string());
    assert_refused(
        &app,
        Some(format!("Bearer {header}.{payload}.")),
        "alg none",
    )
    .await;

    assert_eq!(app.values(&app.token("alice")).await, json!({}));
}

async fn tokens_against_the_jws_rules_or_with_an_unusable_identity_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let critical = Header {
        crit: Some(vec!["exp".into()]),
        ..Header::new(Algorithm::HS256)
    };
    let with_crit = encode(
        &critical,
        &json!({"sub": "alice", "exp": now() + 600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let claims = |extra: Value| {
        let mut claims = json!({"sub": "alice", "exp": now() + 600});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        format!("Bearer {}", sign(claims, SECRET))
    };
    let cases = [
        (format!("Bearer {with_crit}"), "a critical header extension"),
        (claims(json!({"sub": "   "})), "a sub of spaces"),
        (
            claims(json!({"sub": "ali\nce"})),
            "a control character in sub",
        ),
        (claims(json!({"sub": "ali\u{0}ce"})), "NUL in sub"),
        (
            claims(json!({"email": "a\u{0}@example.com"})),
            "NUL in email",
        ),
    ];
    for (authorization, message) in cases {
        assert_refused(&app, Some(authorization), message).await;
    }

    // Two Authorization headers are ambiguous, even when both hold the same valid token.
    let token = app.token("alice");
    let reply = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(WRITE)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.values(&token).await, json!({}));
}

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.token("alice");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let reply = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .header("authorization", format!("{scheme} {token}"))
            .body(WRITE)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK, "{scheme}");
        let body: Value = reply.json().await.unwrap();
        assert!(body.get("errors").is_none(), "{scheme}: {body}");
    }
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

async fn small_clock_skew_is_tolerated(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = sign(
        json!({"sub": "alice", "exp": now() - 5, "nbf": now() + 5}),
        SECRET,
    );
    app.data(&token, "{ me { id } }", json!({})).await;
}

/// A verified token is remembered, but never past its expiry, and only by its whole text.
async fn a_token_that_worked_is_refused_once_it_expires(backend: Backend) {
    let options = Options::default().env("JWT_LEEWAY_SECS", "0");
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    let exp = now() + 2;
    let claims = json!({"sub": "alice", "exp": exp});
    let token = sign(claims.clone(), SECRET);
    for _ in 0..2 {
        app.data(&token, "{ me { id } }", json!({})).await;
    }
    let forged = sign(claims, "another-secret-of-at-least-32-bytes!!");
    assert_refused(
        &app,
        Some(format!("Bearer {forged}")),
        "same claims, forged",
    )
    .await;
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_refused(
        &app,
        Some(format!("Bearer {token}")),
        "expired since it worked",
    )
    .await;
}

async fn issuer_and_audience_are_enforced_when_configured(backend: Backend) {
    let options = Options::default()
        .env("JWT_ISSUER", "https://auth.example")
        .env("JWT_AUDIENCE", "settings");
    let Some(app) = TestApp::spawn_with(backend, options).await else {
        return;
    };
    let exp = now() + 600;
    let good = sign(
        json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": "settings"}),
        SECRET,
    );
    app.data(&good, "{ me { id } }", json!({})).await;
    // `aud` may also be an array that includes the configured audience.
    let several = sign(
        json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": ["billing", "settings"]}),
        SECRET,
    );
    app.data(&several, "{ me { id } }", json!({})).await;
    for (claims, message) in [
        (json!({"sub": "a", "exp": exp, "aud": "settings"}), "no iss"),
        (
            json!({"sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "settings"}),
            "wrong iss",
        ),
        (
            json!({"sub": "a", "exp": exp, "iss": "https://auth.example"}),
            "no aud",
        ),
        (
            json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": "other"}),
            "wrong aud",
        ),
        (
            json!({"sub": "a", "exp": exp, "iss": "https://auth.example", "aud": ["other"]}),
            "wrong aud",
        ),
    ] {
        assert_refused(
            &app,
            Some(format!("Bearer {}", sign(claims, SECRET))),
            message,
        )
        .await;
    }
}

async fn public_key_app(algorithm: &str, name: &str) -> TestApp {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let options = Options {
        private_key: Some(std::fs::read(format!("{fixtures}{name}-private.pem")).unwrap()),
        ..Options::default()
    }
    .without("JWT_SECRET")
    .env("JWT_ALGORITHM", algorithm)
    .env(
        "JWT_PUBLIC_KEY_FILE",
        &format!("{fixtures}{name}-public.pem"),
    );
    TestApp::spawn_with(Backend::Sqlite, options).await.unwrap()
}

#[tokio::test]
async fn eddsa_es256_and_rs256_tokens_verify_with_a_public_key_and_hs256_is_then_refused() {
    for (algorithm, name) in [("EdDSA", "ed25519"), ("ES256", "es256"), ("RS256", "rsa")] {
        let app = public_key_app(algorithm, name).await;
        let token = app.token("alice");
        assert_eq!(
            app.data(&token, "{ me { id } }", json!({})).await,
            json!({"me": {"id": "alice"}})
        );
        // Only the configured algorithm is accepted.
        let hs256 = sign(json!({"sub": "alice", "exp": now() + 600}), SECRET);
        assert_refused(&app, Some(format!("Bearer {hs256}")), algorithm).await;
    }
}

async fn roles_in_the_token_become_the_users_roles(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let token = app.token_for(TokenRequest {
        sub: "root".into(),
        email: None,
        roles: vec!["admin".into(), "support".into()],
        scope: None,
        ttl: Duration::from_secs(60),
    });
    let me = app.data(&token, "{ me { roles } }", json!({})).await;
    assert_eq!(me, json!({"me": {"roles": ["admin", "support"]}}));
}

async fn a_token_with_an_oauth_scope_claim_reads_and_writes_only_as_granted(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let exp = now() + 600;
    let token = |scope: Value| sign(json!({"sub": "alice", "exp": exp, "scope": scope}), SECRET);
    let read = "{ settings { key } }";
    let write = "mutation { setSetting(key: \"a\", value: 1) { version } }";

    let read_only = token(json!("openid settings:read"));
    app.data(&read_only, read, json!({})).await;
    let error = app.error(&read_only, write, json!({})).await;
    assert_eq!(code(&error), "FORBIDDEN", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("settings:write")
    );

    let write_only = token(json!(["settings:write"]));
    app.data(&write_only, write, json!({})).await;
    let error = app.error(&write_only, read, json!({})).await;
    assert_eq!(code(&error), "FORBIDDEN", "{error}");

    let both = token(json!("settings:read settings:write"));
    app.data(&both, write, json!({})).await;
    assert_eq!(app.values(&both).await, json!({"a": 1}));
    // A token without a scope claim is not limited.
    assert_eq!(app.values(&app.token("alice")).await, json!({"a": 1}));
}

on_both_backends!(
    every_kind_of_bad_token_is_refused_and_writes_nothing,
    small_clock_skew_is_tolerated,
    a_token_that_worked_is_refused_once_it_expires,
    issuer_and_audience_are_enforced_when_configured,
    roles_in_the_token_become_the_users_roles,
    a_token_with_an_oauth_scope_claim_reads_and_writes_only_as_granted,
    tokens_against_the_jws_rules_or_with_an_unusable_identity_are_refused,
    the_bearer_scheme_is_case_insensitive,
);
