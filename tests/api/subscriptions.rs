//! Live sync: `settingChanged` over GraphQL on WebSocket (`graphql-transport-ws`).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::helpers::*;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// Opens a socket on `/graphql`, with the token in the upgrade request when given.
async fn open(app: &TestApp, header_token: Option<&str>) -> Socket {
    let url = app.url("/graphql").replacen("http", "ws", 1);
    let mut request = url.into_client_request().expect("a WebSocket request");
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    if let Some(token) = header_token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
        headers.insert("Authorization", value);
    }
    let (socket, _) = connect_async(request).await.expect("the upgrade succeeds");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("message sent");
}

/// The next protocol message, or None when the server closed the socket (with its reason).
async fn next(socket: &mut Socket) -> Result<Value, String> {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("the server answers in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Ok(serde_json::from_str(text.as_str()).expect("JSON"));
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map(|f| f.reason.to_string()).unwrap_or_default());
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(err.to_string()),
            None => return Err("closed".into()),
        }
    }
}

/// Sends `connection_init` and waits for the acknowledgement.
async fn init(socket: &mut Socket, payload: Value) {
    send(
        socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    assert_eq!(next(socket).await, Ok(json!({"type": "connection_ack"})));
}

const SUBSCRIPTION: &str = "subscription($scope: String!, $keys: [String!]) {
    settingChanged(scope: $scope, keys: $keys) {
        key scope kind version actor interface changedAt setting { key value version }
    }
}";

async fn subscribe(socket: &mut Socket, id: &str, scope: &str, keys: Option<Vec<&str>>) {
    let payload = json!({"query": SUBSCRIPTION, "variables": {"scope": scope, "keys": keys}});
    send(
        socket,
        json!({"id": id, "type": "subscribe", "payload": payload}),
    )
    .await;
}

/// The next `settingChanged` event that is not about `skip`.
async fn event(socket: &mut Socket, skip: &str) -> Value {
    loop {
        let message = next(socket).await.expect("the socket stays open");
        assert_eq!(message["type"], "next", "{message}");
        let event = message["payload"]["data"]["settingChanged"].clone();
        assert!(event.is_object(), "{message}");
        if event["key"] != skip {
            return event;
        }
    }
}

/// A subscription starts listening when the server first polls it, which the protocol does not
/// acknowledge: write `probe` until its event arrives, so that later writes are certainly seen.
async fn wait_until_listening(app: &TestApp, socket: &mut Socket, token: &str, scope: &str) {
    for attempt in 0..50 {
        app.data(
            token,
            "mutation($v: JSON!, $s: String!) { setSetting(key: \"probe\", value: $v, scope: $s) { version } }",
            json!({"v": attempt, "s": scope}),
        )
        .await;
        let arrived = tokio::time::timeout(Duration::from_millis(200), socket.next()).await;
        if let Ok(Some(Ok(Message::Text(text)))) = arrived {
            let message: Value = serde_json::from_str(text.as_str()).expect("JSON");
            assert_eq!(
                message["payload"]["data"]["settingChanged"]["key"], "probe",
                "{message}"
            );
            return;
        }
    }
    panic!("the subscription never delivered an event");
}

both_backends! {
    async fn a_subscriber_sees_every_change_of_its_settings_from_graphql_and_rest(app) {
        let token = app.token("alice");
        let mut socket = open(&app, None).await;
        init(&mut socket, json!({"Authorization": format!("Bearer {token}")})).await;
        subscribe(&mut socket, "1", "", None).await;
        wait_until_listening(&app, &mut socket, &token, "").await;

        app.set(&token, "theme", json!("dark")).await;
        let created = event(&mut socket, "probe").await;
        assert_eq!(created["key"], "theme");
        assert_eq!(created["scope"], "");
        assert_eq!(created["kind"], "CREATE");
        assert_eq!(created["version"], 1);
        assert_eq!(created["actor"], "alice");
        assert_eq!(created["interface"], "graphql");
        assert_eq!(created["setting"], json!({"key": "theme", "value": "dark", "version": 1}));

        let reply = app
            .rest("PUT", "/api/v1/users/me/settings/theme", Some(&token), Some(json!({"value": "light"})))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let updated = event(&mut socket, "probe").await;
        assert_eq!(updated["kind"], "UPDATE");
        assert_eq!(updated["version"], 2);
        assert_eq!(updated["setting"]["value"], "light");
        assert_ne!(updated["interface"], "graphql");

        app.data(&token, r#"mutation { deleteSetting(key: "theme") }"#, json!({})).await;
        let deleted = event(&mut socket, "probe").await;
        assert_eq!(deleted["kind"], "DELETE");
        assert_eq!(deleted["version"], 2);
        assert_eq!(deleted["setting"], Value::Null);
    }

    async fn a_subscriber_sees_neither_other_users_nor_other_scopes_nor_unwanted_keys(app) {
        let alice = app.token("alice");
        let bob = app.token("bob");
        let mut socket = open(&app, Some(&alice)).await;
        init(&mut socket, json!({})).await;
        subscribe(&mut socket, "1", "mobile", Some(vec!["probe", "wanted"])).await;
        wait_until_listening(&app, &mut socket, &alice, "mobile").await;

        let set_in = |token: &str, key: &str, scope: &str| {
            let (token, key, scope) = (token.to_owned(), key.to_owned(), scope.to_owned());
            let app = &app;
            async move {
                app.data(
                    &token,
                    "mutation($k: String!, $s: String!) { setSetting(key: $k, value: 1, scope: $s) { version } }",
                    json!({"k": key, "s": scope}),
                )
                .await;
            }
        };
        set_in(&bob, "wanted", "mobile").await;
        set_in(&alice, "wanted", "").await;
        set_in(&alice, "unwanted", "mobile").await;
        set_in(&alice, "wanted", "mobile").await;

        // The first event after the probe is the last write: the three before it were not sent.
        let event = event(&mut socket, "probe").await;
        assert_eq!(event["key"], "wanted");
        assert_eq!(event["scope"], "mobile");
        assert_eq!(event["actor"], "alice");
    }

    async fn a_socket_without_a_valid_token_is_closed_and_a_read_only_token_can_subscribe(app) {
        let mut socket = open(&app, None).await;
        send(&mut socket, json!({"type": "connection_init", "payload": {}})).await;
        let closed = next(&mut socket).await.expect_err("the server closes the socket");
        assert!(closed.contains("token"), "{closed}");

        let mut socket = open(&app, None).await;
        let forged = forged_token("alice");
        send(&mut socket, json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {forged}")}})).await;
        assert!(next(&mut socket).await.is_err());

        let upgrade = app
            .request("GET", "/graphql", Some(&expired_token("alice")))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Protocol", "graphql-transport-ws")
            .send()
            .await
            .expect("request sent");
        assert_eq!(upgrade.status(), 401);

        let reader = scoped_token("alice", "settings:read");
        let mut socket = open(&app, None).await;
        init(&mut socket, json!({"Authorization": format!("Bearer {reader}")})).await;
        subscribe(&mut socket, "1", "", None).await;
        wait_until_listening(&app, &mut socket, &app.token("alice"), "").await;
    }
}

const RESUMING: &str = "subscription($since: String) {
    settingChanged(since: $since) { cursor key kind setting { value } }
}";

async fn subscribe_since(socket: &mut Socket, id: &str, since: Option<&str>) {
    let payload = json!({"query": RESUMING, "variables": {"since": since}});
    send(
        socket,
        json!({"id": id, "type": "subscribe", "payload": payload}),
    )
    .await;
}

/// The next `settingChanged` event.
async fn next_event(socket: &mut Socket) -> Value {
    let message = next(socket).await.expect("the socket stays open");
    assert_eq!(message["type"], "next", "{message}");
    let event = message["payload"]["data"]["settingChanged"].clone();
    assert!(event.is_object(), "{message}");
    event
}

async fn snapshot_cursor(app: &TestApp, token: &str) -> String {
    app.data(token, "{ snapshot { cursor } }", json!({})).await["snapshot"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned()
}

both_backends! {
    async fn a_subscriber_resuming_with_since_gets_exactly_what_it_missed_then_live_changes(app) {
        let token = app.token("alice");
        let cursor = snapshot_cursor(&app, &token).await;
        // Offline: changes it has not seen, a removal among them.
        app.set(&token, "a", json!(1)).await;
        app.set(&token, "b", json!(2)).await;
        app.data(&token, r#"mutation { deleteSetting(key: "a") }"#, json!({})).await;

        let mut socket = open(&app, Some(&token)).await;
        init(&mut socket, json!({})).await;
        subscribe_since(&mut socket, "1", Some(&cursor)).await;
        let replayed = [next_event(&mut socket).await, next_event(&mut socket).await, next_event(&mut socket).await];
        let seen: Vec<(&str, &str)> = replayed.iter().map(|e| (e["key"].as_str().unwrap(), e["kind"].as_str().unwrap())).collect();
        assert_eq!(seen, [("a", "CREATE"), ("b", "CREATE"), ("a", "DELETE")]);
        assert_eq!(replayed[2]["setting"], Value::Null);
        // Then live, with nothing twice at the seam.
        app.set(&token, "c", json!(3)).await;
        let live = next_event(&mut socket).await;
        assert_eq!((live["key"].as_str(), live["kind"].as_str()), (Some("c"), Some("CREATE")));
        // Its cursor resumes after it: a second subscription from there sees only what follows.
        subscribe_since(&mut socket, "2", live["cursor"].as_str()).await;
        app.set(&token, "d", json!(4)).await;
        let (mut from_one, mut from_two) = (None, None);
        for _ in 0..2 {
            let message = next(&mut socket).await.unwrap();
            let key = message["payload"]["data"]["settingChanged"]["key"].clone();
            match message["id"].as_str() {
                Some("1") => from_one = Some(key),
                Some("2") => from_two = Some(key),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((from_one, from_two), (Some(json!("d")), Some(json!("d"))));
    }

    async fn a_since_cursor_that_is_not_one_is_an_error_message(app) {
        let token = app.token("alice");
        let mut socket = open(&app, Some(&token)).await;
        init(&mut socket, json!({})).await;
        subscribe_since(&mut socket, "1", Some("nonsense")).await;
        let message = next(&mut socket).await.unwrap();
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["payload"]["errors"][0]["extensions"]["rule"], "cursor", "{message}");
    }
}

/// A second instance on the same PostgreSQL database as `app`, and the `application_name`
/// of its connections, unique to this test (tests run side by side on one server).
async fn second_instance(app: &TestApp) -> (TestApp, String) {
    let name = format!("instance-b-{}", uuid::Uuid::new_v4().simple());
    let separator = if app.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{separator}application_name={name}", app.database_url);
    let b = TestApp::spawn_with(
        Backend::Postgres,
        Options::default().env("DATABASE_URL_OVERRIDE", &url),
    )
    .await
    .expect("the second instance starts");
    (b, name)
}

/// Ends every connection of the instance named `name`.
async fn terminate_connections_of(name: &str) {
    use sea_orm::ConnectionTrait;
    let admin = sea_orm::Database::connect(std::env::var("TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
        ))
        .await
        .unwrap();
    admin.close().await.ok();
}

/// Instance B beside `a`, and a socket on B subscribed to `token`'s changes from now.
async fn subscribed_on_second_instance(a: &TestApp, token: &str) -> (TestApp, Socket, String) {
    let (b, name) = second_instance(a).await;
    let cursor = snapshot_cursor(a, token).await;
    let mut socket = open(&b, Some(token)).await;
    init(&mut socket, json!({})).await;
    // With `since`, the subscription is certainly listening once the first event came.
    subscribe_since(&mut socket, "1", Some(&cursor)).await;
    (b, socket, name)
}

#[tokio::test]
async fn a_change_committed_on_one_instance_reaches_a_subscriber_on_another() {
    let Some(a) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = a.token("alice");
    let (_b, mut socket, _) = subscribed_on_second_instance(&a, &token).await;
    a.set(&token, "theme", json!("dark")).await;
    let event = next_event(&mut socket).await;
    assert_eq!(event["key"], "theme");
    // A REST write on A too.
    a.rest(
        "PUT",
        "/settings/user",
        Some(&token),
        Some(json!({"rest": 1})),
    )
    .await;
    assert_eq!(next_event(&mut socket).await["key"], "rest");
}

#[tokio::test]
async fn every_change_arrives_exactly_once_across_a_dropped_listener() {
    use sea_orm::ConnectionTrait;
    let Some(a) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = a.token("alice");
    let (_b, mut socket, name) = subscribed_on_second_instance(&a, &token).await;
    a.set(&token, "k0", json!(0)).await;
    assert_eq!(next_event(&mut socket).await["key"], "k0");

    let admin = sea_orm::Database::connect(std::env::var("TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    let b_connections = admin
        .query_one_raw(sea_orm::Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = '{name}'"),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert!(
        b_connections >= 2,
        "B's pool and its listener: {b_connections}"
    );
    let writes = async {
        for n in 1..=60 {
            a.set(&token, &format!("k{n}"), json!(n)).await;
            if n % 20 == 10 {
                // B's connections, its listener among them, go away in the middle of the burst.
                terminate_connections_of(&name).await;
            }
        }
    };
    let received = async {
        let mut keys = Vec::new();
        while keys.len() < 60 {
            keys.push(
                next_event(&mut socket).await["key"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        keys
    };
    let ((), keys) = futures_util::future::join(writes, received).await;
    let expected: Vec<String> = (1..=60).map(|n| format!("k{n}")).collect();
    assert_eq!(keys, expected, "each change once, in commit order");
    // And nothing more comes.
    let extra = tokio::time::timeout(Duration::from_millis(500), socket.next()).await;
    assert!(extra.is_err(), "no duplicate: {extra:?}");
}

/// Reads `key` on `app` until it is `expected` (at most 10 s): another instance's write shows
/// once its notification arrives. Failed reads count as not yet.
async fn until_value(app: &TestApp, token: &str, key: &str, expected: Value) {
    let query = "query($k: [String!]) { settings(keys: $k) { value } }";
    let mut seen = Value::Null;
    for _ in 0..100 {
        // A pooled connection the database dropped fails once.
        let (_, body) = app.graphql(token, query, json!({"k": [key]})).await;
        seen = body["data"]["settings"][0]["value"].clone();
        if seen == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{key} stayed {seen}, not {expected}");
}

#[tokio::test]
async fn the_read_cache_of_one_instance_follows_the_writes_of_another() {
    let Some(a) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let (b, name) = second_instance(&a).await;
    let token = a.token("alice");
    a.set(&token, "theme", json!("dark")).await;
    // B reads (and keeps) the value, A changes it, B sees the change.
    until_value(&b, &token, "theme", json!("dark")).await;
    until_value(&b, &token, "theme", json!("dark")).await;
    a.set(&token, "theme", json!("light")).await;
    until_value(&b, &token, "theme", json!("light")).await;
    // B's listener drops; a write meanwhile still shows on B.
    terminate_connections_of(&name).await;
    a.set(&token, "theme", json!("system")).await;
    until_value(&b, &token, "theme", json!("system")).await;
}

/// Reads `key` on `app` until a read of it costs no statement: the value is in the cache.
async fn until_cached(app: &TestApp, token: &str, key: &str) {
    let query = "query($k: [String!]) { settings(keys: $k) { value } }";
    for _ in 0..100 {
        let (_, statements) = app
            .data_and_statements(token, query, json!({"k": [key]}))
            .await;
        if statements == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{key} never came from the cache");
}

/// The shared write statements notify the other instances themselves, in as many
/// notifications as their notices need (PostgreSQL takes at most 8000 bytes in one).
#[tokio::test]
async fn the_writes_of_many_users_in_one_statement_reach_the_cache_of_another_instance() {
    let Some(a) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let (b, _) = second_instance(&a).await;
    // Ids long enough that the 40 notices take about 10,000 bytes.
    let users: Vec<String> = (0..40)
        .map(|n| format!("{n:02}-{}", "é".repeat(120)))
        .collect();
    for user in &users {
        a.set(&a.token(user), "theme", json!("light")).await;
    }
    for user in &users {
        let token = a.token(user);
        until_value(&b, &token, "theme", json!("light")).await;
        until_cached(&b, &token, "theme").await;
    }

    a.store.flush_notices(Duration::from_secs(5)).await;
    let before = a.store.statements();
    let writes = users
        .iter()
        .map(|user| (user.clone(), "theme", json!(format!("dark {}", &user[..2]))))
        .collect();
    for answer in write_together(&a.store, "", writes).await {
        let (setting, created) = answer.expect("replaced");
        assert!(!created && setting.version == 2, "{setting:?}");
    }
    a.store.flush_notices(Duration::from_secs(5)).await;
    let statements = a.store.statements() - before;
    // The notices went with the writes: a statement refused for its notices would have been
    // followed by one statement for each write.
    assert!(
        statements <= 3,
        "40 replacements took {statements} statements"
    );
    for user in &users {
        let token = a.token(user);
        until_value(&b, &token, "theme", json!(format!("dark {}", &user[..2]))).await;
    }

    // A patch of stored keys (a checked update) reaches B's cache too.
    let token = a.token(&users[0]);
    until_cached(&b, &token, "theme").await;
    let patch = "mutation($p: JSON!) { updateSettings(patch: $p) { key version } }";
    let data = a
        .data(&token, patch, json!({"p": {"theme": "patched"}}))
        .await;
    assert_eq!(
        data["updateSettings"],
        json!([{"key": "theme", "version": 3}])
    );
    until_value(&b, &token, "theme", json!("patched")).await;
}

#[tokio::test]
async fn the_last_writes_of_an_instance_that_stops_still_reach_the_others() {
    let Some(a) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = a.token("alice");
    let (b, mut socket, _) = subscribed_on_second_instance(&a, &token).await;
    until_value(&b, &token, "theme", Value::Null).await;
    for n in 0..20 {
        a.set(&token, &format!("k{n}"), json!(n)).await;
    }
    a.set(&token, "theme", json!("last")).await;
    a.shut_down().await;
    // B's cache and its subscriber both hear of every one.
    until_value(&b, &token, "theme", json!("last")).await;
    for n in 0..20 {
        assert_eq!(next_event(&mut socket).await["key"], format!("k{n}"));
    }
    assert_eq!(next_event(&mut socket).await["key"], "theme");
}

/// A tombstone ends the user's subscriptions on this instance and on another.
async fn expect_tombstone(socket: &mut Socket, id: &str) {
    let message = next(socket).await.expect("the socket stays open");
    assert_eq!(message["type"], "next", "{message}");
    let event = &message["payload"]["data"]["settingChanged"];
    assert_eq!(event["kind"], "ERASE", "{message}");
    assert_eq!(event["setting"], Value::Null);
    assert_eq!(
        next(socket).await,
        Ok(json!({"id": id, "type": "complete"}))
    );
}

both_backends! {
    async fn erasing_a_user_sends_their_subscribers_a_last_event_and_ends_the_subscription(app) {
        let token = app.token("alice");
        let mut socket = open(&app, Some(&token)).await;
        init(&mut socket, json!({})).await;
        // Filtered to one key of another scope: the tombstone comes all the same.
        subscribe(&mut socket, "1", "mobile", Some(vec!["probe"])).await;
        wait_until_listening(&app, &mut socket, &token, "mobile").await;
        app.data(&token, "mutation { eraseUser(userId: \"alice\") }", json!({})).await;
        expect_tombstone(&mut socket, "1").await;
    }
}

#[tokio::test]
async fn an_erasure_on_one_instance_reaches_the_subscribers_and_the_cache_of_another() {
    let Some(a) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let token = a.token("alice");
    a.set(&token, "theme", json!("dark")).await;
    let (b, mut socket, _) = subscribed_on_second_instance(&a, &token).await;
    // Once an event came, the subscription is certainly listening.
    a.set(&token, "theme", json!("light")).await;
    assert_eq!(next_event(&mut socket).await["key"], "theme");
    // B reads (and caches) the value.
    until_value(&b, &token, "theme", json!("light")).await;
    until_value(&b, &token, "theme", json!("light")).await;
    a.data(
        &token,
        "mutation { eraseUser(userId: \"alice\") }",
        json!({}),
    )
    .await;
    expect_tombstone(&mut socket, "1").await;
    assert_eq!(b.values(&token).await, json!({}));
    // B writes a new account's first setting (it knows the row is gone).
    b.set(&token, "theme", json!("new")).await;
    assert_eq!(a.values(&token).await, json!({"theme": "new"}));
}

#[tokio::test]
async fn a_subscriber_hears_an_expiry_as_a_change() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        Options::default().env("EXPIRY_PURGE_INTERVAL_MS", "50"),
    )
    .await
    .unwrap();
    let token = app.token("alice");
    let mut socket = open(&app, Some(&token)).await;
    init(&mut socket, json!({})).await;
    subscribe(&mut socket, "1", "", Some(vec!["probe", "snooze"])).await;
    wait_until_listening(&app, &mut socket, &token, "").await;
    app.data(
        &token,
        "mutation { setSetting(key: \"snooze\", value: true, ttlSeconds: 1) { version } }",
        json!({}),
    )
    .await;
    assert_eq!(event(&mut socket, "probe").await["kind"], "CREATE");
    let expired = event(&mut socket, "probe").await;
    assert_eq!(expired["kind"], "EXPIRE", "{expired}");
    assert_eq!(expired["key"], "snooze");
    assert_eq!(expired["setting"], Value::Null);
    assert_eq!(expired["actor"], "system");
}
