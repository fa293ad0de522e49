//! Hostile and forgetful connections: silent and trickling sockets are given up, a flood of
//! them never locks out real clients, and shutdown ends everything, WebSockets with 1001.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::helpers::*;

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Whether the server closes the socket within `within`: reading ends (or fails) instead of
/// waiting.
async fn closed_by_server(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, socket.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn a_socket_that_never_finishes_its_headers_is_closed() {
    let options = Options::default().env("HTTP_HEADER_TIMEOUT_SECS", "1");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let mut silent = TcpStream::connect(host(&app)).await.unwrap();
    let mut trickling = TcpStream::connect(host(&app)).await.unwrap();
    trickling
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(15)).await);
    assert!(closed_by_server(&mut trickling, Duration::from_secs(15)).await);
}

#[tokio::test]
async fn a_keep_alive_connection_left_idle_is_closed() {
    let options = Options::default().env("HTTP_HEADER_TIMEOUT_SECS", "1");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let mut socket = TcpStream::connect(host(&app)).await.unwrap();
    socket
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let read = socket.read(&mut buffer).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"),
        "the request is answered"
    );
    assert!(closed_by_server(&mut socket, Duration::from_secs(15)).await);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_given_up() {
    let options = Options::default().env("HTTP_BODY_TIMEOUT_SECS", "1");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let token = app.token("alice");
    let mut socket = TcpStream::connect(host(&app)).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"query\":"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut answer))
        .await
        .expect("the server gives up on the body");
    assert!(read.is_ok());
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("BAD_USER_INPUT"), "{answer}");
}

#[tokio::test]
async fn a_flood_of_silent_sockets_does_not_lock_out_real_requests() {
    let options = Options::default().env("MAX_CONNECTIONS", "20");
    let app = TestApp::spawn_with(Backend::Sqlite, options).await.unwrap();
    let token = app.token("alice");
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(TcpStream::connect(host(&app)).await.unwrap());
    }
    // Fresh connections each time, as a client behind the flood makes them.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..5 {
        let live = client.get(app.url("/health/live")).send().await.unwrap();
        assert_eq!(live.status(), 200);
        let data = client
            .post(app.url("/graphql"))
            .bearer_auth(&token)
            .json(&json!({"query": "{ me { id } }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(data.status(), 200);
    }
    // The oldest silent sockets made room.
    let mut closed = 0;
    for socket in &mut flood {
        if closed_by_server(socket, Duration::from_millis(100)).await {
            closed += 1;
        }
    }
    assert!(closed >= 40, "{closed} of 60 silent sockets were closed");
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.token("alice");
    let url = app.url("/graphql").replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = connect_async(request).await.unwrap();
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    socket.send(Message::text(init.to_string())).await.unwrap();
    let ack = socket.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"));
    app.shut_down().await;
    let close = loop {
        match socket.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.map(|frame| u16::from(frame.code)), Some(1001));
}

/// PostgreSQL only: a request held inside the database (a lock from outside) outlives the
/// shutdown timeout, and the server stops anyway.
#[tokio::test]
async fn shutdown_ends_within_its_timeout_while_a_request_is_stuck() {
    let options = Options::default().env("SHUTDOWN_TIMEOUT_SECS", "1");
    let Some(app) = TestApp::spawn_with(Backend::Postgres, options).await else {
        return;
    };
    let token = app.token("alice");
    app.set(&token, "theme", json!("dark")).await;
    let lock = app.lock_settings_table().await;
    let stuck = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url("/graphql"));
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"query": "mutation { setSetting(key: \"theme\", value: 1) { version } }"}))
                .send()
                .await
        }
    });
    // The write is waiting for the lock once its user's row exists and it has begun.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.shut_down().await;
    assert!(!stuck.is_finished(), "the stuck request is still waiting");
    lock.release().await;
}
