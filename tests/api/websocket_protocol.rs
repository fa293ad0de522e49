//! `graphql-transport-ws` (PROTOCOL.md of enisdenjo/graphql-ws) to the letter over a raw
//! socket, every close code, and the legacy `graphql-ws` protocol closing cleanly.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use settings_api::auth::TokenRequest;

use crate::helpers::*;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(app: &TestApp, protocol: &'static str) -> Socket {
    let url = app.url("/graphql").replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    connect_async(request)
        .await
        .expect("the upgrade succeeds")
        .0
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next message: Ok(text message) or Err((close code, reason)).
async fn next(socket: &mut Socket) -> Result<Value, (u16, String)> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the server answers in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Ok(serde_json::from_str(text.as_str()).unwrap());
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                return Err((frame.code.into(), frame.reason.to_string()));
            }
            Some(Ok(Message::Close(None))) => return Err((1005, String::new())),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

async fn acknowledged(app: &TestApp, token: &str) -> Socket {
    let mut socket = open(app, "graphql-transport-ws").await;
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(
        next(&mut socket).await,
        Ok(json!({"type": "connection_ack"}))
    );
    socket
}

const SUBSCRIBE: &str = "subscription { settingChanged { key } }";

#[tokio::test]
async fn without_connection_init_the_socket_closes_with_4408_after_the_timeout() {
    let options = Options::default().env("GRAPHQL_WS_INIT_TIMEOUT_MS", "200");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let mut socket = open(&app, "graphql-transport-ws").await;
    let (code, reason) = next(&mut socket).await.unwrap_err();
    assert_eq!(
        (code, reason.as_str()),
        (4408, "Connection initialisation timeout")
    );
}

#[tokio::test]
async fn each_protocol_violation_closes_with_its_code() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");

    // Subscribe before the connection is acknowledged: 4401.
    let mut socket = open(&app, "graphql-transport-ws").await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "1", "payload": {"query": SUBSCRIBE}}),
    )
    .await;
    assert_eq!(next(&mut socket).await.unwrap_err().0, 4401);

    // A bad token in connection_init: 4403, saying why.
    let mut socket = open(&app, "graphql-transport-ws").await;
    send(&mut socket, json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", forged_token("alice"))}})).await;
    let (code, reason) = next(&mut socket).await.unwrap_err();
    assert_eq!(code, 4403);
    assert!(reason.contains("token"), "{reason}");

    // A second connection_init: 4429.
    let mut socket = acknowledged(&app, &token).await;
    send(&mut socket, json!({"type": "connection_init"})).await;
    assert_eq!(next(&mut socket).await.unwrap_err().0, 4429);

    // Two operations with one id: 4409, and the first one is not silently replaced.
    let mut socket = acknowledged(&app, &token).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "same", "payload": {"query": SUBSCRIBE}}),
    )
    .await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "same", "payload": {"query": SUBSCRIBE}}),
    )
    .await;
    let (code, reason) = next(&mut socket).await.unwrap_err();
    assert_eq!(
        (code, reason.as_str()),
        (4409, "Subscriber for same already exists")
    );

    // A message that is not one of the protocol's: 4400, with a reason a close frame can hold.
    for invalid in [
        json!({"type": "subscribe", "id": 7}),
        json!({"type": "nonsense", "x": "y".repeat(300)}),
        json!("text"),
    ] {
        let mut socket = acknowledged(&app, &token).await;
        send(&mut socket, invalid.clone()).await;
        let (code, reason) = next(&mut socket).await.unwrap_err();
        assert_eq!(code, 4400, "{invalid}");
        assert!(reason.len() <= 123, "{} bytes", reason.len());
    }
}

#[tokio::test]
async fn a_subscribe_that_does_not_validate_is_an_error_message_and_the_socket_stays_open() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");
    let mut socket = acknowledged(&app, &token).await;
    send(&mut socket, json!({"type": "subscribe", "id": "bad", "payload": {"query": "subscription { noSuchField }"}})).await;
    let error = next(&mut socket).await.unwrap();
    assert_eq!(
        (error["type"].as_str(), error["id"].as_str()),
        (Some("error"), Some("bad")),
        "{error}"
    );
    assert!(
        error["payload"]
            .as_array()
            .is_some_and(|errors| !errors.is_empty()),
        "{error}"
    );
    // The connection goes on: ping, pong, and a query over the socket answers next + complete.
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await, Ok(json!({"type": "pong"})));
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "q", "payload": {"query": "{ me { id } }"}}),
    )
    .await;
    assert_eq!(
        next(&mut socket).await.unwrap()["payload"]["data"]["me"]["id"],
        "alice"
    );
    assert_eq!(
        next(&mut socket).await,
        Ok(json!({"type": "complete", "id": "q"}))
    );
}

#[tokio::test]
async fn the_token_may_come_under_headers_in_the_payload_as_hasura_and_apollo_send_it() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");
    let mut socket = open(&app, "graphql-transport-ws").await;
    send(&mut socket, json!({"type": "connection_init", "payload": {"headers": {"Authorization": format!("Bearer {token}")}}})).await;
    assert_eq!(
        next(&mut socket).await,
        Ok(json!({"type": "connection_ack"}))
    );
}

#[tokio::test]
async fn the_legacy_protocol_subscribes_and_closes_with_a_close_frame_on_terminate() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");
    let mut socket = open(&app, "graphql-ws").await;
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(
        next(&mut socket).await,
        Ok(json!({"type": "connection_ack"}))
    );
    send(
        &mut socket,
        json!({"type": "start", "id": "1", "payload": {"query": "{ me { id } }"}}),
    )
    .await;
    let data = next(&mut socket).await.unwrap();
    assert_eq!(
        (
            data["type"].as_str(),
            data["payload"]["data"]["me"]["id"].as_str()
        ),
        (Some("data"), Some("alice"))
    );
    assert_eq!(
        next(&mut socket).await,
        Ok(json!({"type": "complete", "id": "1"}))
    );
    send(&mut socket, json!({"type": "connection_terminate"})).await;
    assert_eq!(next(&mut socket).await.unwrap_err().0, 1000);
}

#[tokio::test]
async fn a_subscribe_beyond_the_cost_limits_is_an_error_message() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");
    let mut socket = acknowledged(&app, &token).await;
    let directives = "@include(if: true) ".repeat(60);
    let query = format!("subscription {{ settingChanged {directives} {{ key }} }}");
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "costly", "payload": {"query": query}}),
    )
    .await;
    let error = next(&mut socket).await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "costly", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["rule"], "maxDirectives",
        "{error}"
    );
    let tokens = format!("{{ __typename {} }}", "@a ".repeat(20_000));
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "long", "payload": {"query": tokens}}),
    )
    .await;
    let error = next(&mut socket).await.unwrap();
    assert_eq!(
        error["payload"][0]["extensions"]["rule"], "maxTokens",
        "{error}"
    );
    // The socket goes on.
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await, Ok(json!({"type": "pong"})));
}

#[tokio::test]
async fn a_message_over_the_body_limit_closes_the_socket() {
    let options = Options::default().env("MAX_BODY_BYTES", "4096");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let token = app.token("alice");
    let mut socket = acknowledged(&app, &token).await;
    let padding = "x".repeat(8 * 1024);
    let big = json!({"type": "subscribe", "id": "big", "payload": {"query": format!("{{ me {{ id }} }} # {padding}")}});
    // The server may close before the whole message is written.
    let _ = socket.send(Message::text(big.to_string())).await;
    let closed = next(&mut socket).await;
    assert!(
        matches!(closed, Err((1009, _))),
        "closed as too big (1009): {closed:?}"
    );
}

#[tokio::test]
async fn a_socket_closes_with_4403_when_its_token_expires() {
    // The leeway is part of the token's life: none here.
    let options = Options::default().env("JWT_LEEWAY_SECS", "0");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let token = app.token_for(TokenRequest {
        sub: "alice".into(),
        ttl: Duration::from_secs(2),
        ..Default::default()
    });
    let mut socket = acknowledged(&app, &token).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "id": "1", "payload": {"query": SUBSCRIBE}}),
    )
    .await;
    // Events stop with the token: the socket closes, and the client reconnects with a new one.
    // No event was written, so the next message is the close.
    assert_eq!(
        next(&mut socket).await,
        Err((4403, "Forbidden: the token has expired".to_owned()))
    );
}
