//! GraphQL over WebSocket on `GET /graphql` with an upgrade: the `graphql-transport-ws`
//! protocol (PROTOCOL.md of enisdenjo/graphql-ws) to the letter, and the older `graphql-ws`
//! (subscriptions-transport-ws) that Apollo's legacy link speaks. The token comes with the
//! upgrade's `Authorization` header or in the `connection_init` payload, as
//! `{"Authorization": "Bearer …"}` or `{"headers": {"Authorization": "Bearer …"}}`.

use std::{collections::HashMap, pin::Pin};

use async_graphql::{Request as GraphqlRequest, Response as GraphqlResponse};
use axum::{
    extract::{
        FromRequestParts, Request,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures_util::{
    Stream, StreamExt,
    stream::{self, AbortHandle, Abortable, SelectAll},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::GraphqlState;
use crate::auth::Principal;

const TRANSPORT_WS: &str = "graphql-transport-ws";
const LEGACY_WS: &str = "graphql-ws";

/// The WebSocket's read buffer (each socket holds one); a larger message grows it while it
/// is read.
const READ_BUFFER: usize = 1024;

/// RFC 6455 allows 123 bytes of reason in a close frame.
const MAX_CLOSE_REASON: usize = 123;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `graphql-transport-ws`.
    Transport,
    /// The legacy `graphql-ws` of subscriptions-transport-ws.
    Legacy,
}

/// Upgrades `request` (see [`is_websocket_upgrade`]) to a GraphQL WebSocket.
pub(super) async fn upgrade(state: GraphqlState, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    if let Err(err) = state.auth.check_client() {
        return super::http::error_response(err);
    }
    // A token sent with the upgrade must be valid; without one, `connection_init` brings it.
    let from_header = match parts.headers.contains_key(header::AUTHORIZATION) {
        true => match state.auth.verify_headers(&parts.headers) {
            Ok(principal) => Some(principal),
            Err(err) => return super::http::error_response(err),
        },
        false => None,
    };
    // The socket keeps its connection's place under the cap, busy, for as long as it is open.
    let busy = parts
        .extensions
        .get::<crate::connections::Slot>()
        .map(crate::connections::Slot::busy);
    let upgrade = upgrade
        .protocols([TRANSPORT_WS, LEGACY_WS])
        .max_message_size(state.body_limit.0)
        .max_frame_size(state.body_limit.0)
        // An idle subscriber should cost a few KB, not the 128 KiB buffers each way that
        // tungstenite starts with: reads grow the buffer as a message needs, and each message
        // is written out at once.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let protocol = match upgrade.selected_protocol().map(HeaderValue::as_bytes) {
        Some(b"graphql-ws") => Protocol::Legacy,
        _ => Protocol::Transport,
    };
    upgrade
        .on_upgrade(move |socket| async move {
            Connection::new(state, protocol, from_header)
                .serve(socket)
                .await;
            drop(busy);
        })
        .into_response()
}

pub(super) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// A message from the client, of either protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default)]
        #[allow(dead_code)] // A pong carries nothing to act on.
        payload: Option<Value>,
    },
    /// `start` in the legacy protocol.
    #[serde(alias = "start")]
    Subscribe { id: String, payload: Operation },
    /// `stop` in the legacy protocol.
    #[serde(alias = "stop")]
    Complete { id: String },
    /// Legacy only: the client is leaving.
    ConnectionTerminate,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Operation {
    query: String,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    extensions: Option<Value>,
}

/// Why the server closes the socket, with the code each protocol gives it.
struct Close {
    code: u16,
    reason: String,
}

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
        }
    }
}

type Events = Pin<Box<dyn Stream<Item = (String, Option<GraphqlResponse>)> + Send>>;

struct Connection {
    state: GraphqlState,
    protocol: Protocol,
    from_header: Option<Principal>,
    /// Set once `connection_init` is acknowledged.
    principal: Option<Principal>,
    /// The running operations by id, and whether each has answered yet.
    running: HashMap<String, (AbortHandle, bool)>,
    events: SelectAll<Events>,
}

impl Connection {
    fn new(state: GraphqlState, protocol: Protocol, from_header: Option<Principal>) -> Self {
        Connection {
            state,
            protocol,
            from_header,
            principal: None,
            running: HashMap::new(),
            events: SelectAll::new(),
        }
    }

    async fn serve(mut self, mut socket: WebSocket) {
        metrics::gauge!("settings_api_websockets_open").increment(1);
        let init_timeout = tokio::time::sleep(self.state.connection_init_timeout);
        tokio::pin!(init_timeout);
        // Rearmed once `connection_init` is acknowledged, for the token's expiry.
        let expiry = tokio::time::sleep(std::time::Duration::MAX);
        tokio::pin!(expiry);
        let mut expiry_armed = false;
        let closing = loop {
            if !expiry_armed && let Some(principal) = &self.principal {
                expiry.as_mut().reset(instant_of(principal.expires_at));
                expiry_armed = true;
            }
            tokio::select! {
                () = &mut init_timeout, if self.principal.is_none() => {
                    break Some(Close::new(4408, "Connection initialisation timeout"));
                }
                () = self.state.connections.stopping() => {
                    break Some(Close::new(1001, "the server is shutting down"));
                }
                // What the token allowed ends with it: the client reconnects with a new one.
                () = &mut expiry, if expiry_armed => {
                    break Some(Close::new(4403, "Forbidden: the token has expired"));
                }
                message = socket.recv() => {
                    let text = match message {
                        Some(Err(err)) if is_too_big(&err) => {
                            break Some(Close::new(1009, "the message is larger than the body limit"));
                        }
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(_))) => {
                            break Some(Close::new(4400, "binary messages are not GraphQL messages"));
                        }
                        Some(Ok(_)) => continue,
                    };
                    // Boxed: the handler's future would otherwise sit in every idle
                    // socket's state.
                    match Box::pin(self.handle(&text)).await {
                        Ok(replies) => {
                            if send_all(&mut socket, replies).await.is_err() {
                                break None;
                            }
                        }
                        Err(close) => break Some(close),
                    }
                }
                Some((id, response)) = self.events.next(), if !self.events.is_empty() => {
                    let reply = self.event(id, response);
                    if send_all(&mut socket, reply.into_iter().collect()).await.is_err() {
                        break None;
                    }
                }
            }
        };
        for (handle, _) in self.running.values() {
            handle.abort();
        }
        metrics::gauge!("settings_api_websocket_operations").decrement(self.running.len() as f64);
        metrics::gauge!("settings_api_websockets_open").decrement(1);
        if let Some(close) = closing {
            let reason = truncate(&close.reason, MAX_CLOSE_REASON);
            let frame = CloseFrame {
                code: close.code,
                reason: Utf8Bytes::from(reason),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
    }

    /// The replies to one client message, or why the socket closes.
    async fn handle(&mut self, text: &str) -> Result<Vec<Value>, Close> {
        let message: ClientMessage = serde_json::from_str(text)
            .map_err(|err| Close::new(4400, format!("Invalid message: {err}")))?;
        match message {
            ClientMessage::ConnectionInit { payload } => self.init(payload).await,
            ClientMessage::Ping { payload } => Ok(vec![match payload {
                Some(payload) => json!({"type": "pong", "payload": payload}),
                None => json!({"type": "pong"}),
            }]),
            ClientMessage::Pong { .. } => Ok(Vec::new()),
            ClientMessage::Subscribe { id, payload } => self.subscribe(id, payload).await,
            ClientMessage::Complete { id } => {
                if let Some(handle) = self.finish(&id) {
                    handle.abort();
                }
                // The legacy protocol confirms a stop.
                Ok(match self.protocol {
                    Protocol::Legacy => vec![json!({"type": "complete", "id": id})],
                    Protocol::Transport => Vec::new(),
                })
            }
            ClientMessage::ConnectionTerminate => Err(Close::new(1000, "Normal closure")),
        }
    }

    async fn init(&mut self, payload: Option<Value>) -> Result<Vec<Value>, Close> {
        if self.principal.is_some() {
            return Err(Close::new(4429, "Too many initialisation requests"));
        }
        let auth = &self.state.auth;
        let verified = match self.from_header.take() {
            Some(principal) => Ok(principal),
            None => auth.verify_headers(&payload_headers(payload.as_ref())),
        };
        let principal = match verified {
            Ok(principal) => principal,
            Err(err) => return Err(Close::new(4403, format!("Forbidden: {err}"))),
        };
        if let Err(err) = auth.admit(&principal).await {
            let disclosure = err.disclose(crate::telemetry::correlation_id);
            return Err(Close::new(1011, disclosure.message));
        }
        self.principal = Some(principal);
        Ok(vec![json!({"type": "connection_ack"})])
    }

    async fn subscribe(&mut self, id: String, operation: Operation) -> Result<Vec<Value>, Close> {
        let Some(principal) = self.principal.clone() else {
            return Err(Close::new(4401, "Unauthorized"));
        };
        if self.running.contains_key(&id) {
            return Err(Close::new(
                4409,
                format!("Subscriber for {id} already exists"),
            ));
        }
        let mut request = GraphqlRequest::new(operation.query);
        if let Some(name) = operation.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = operation.variables {
            request = request.variables(async_graphql::Variables::from_json(variables));
        }
        if let Some(Value::Object(extensions)) = operation.extensions {
            for (name, value) in extensions {
                if let Ok(value) = async_graphql::Value::from_json(value) {
                    request.extensions.insert(name, value);
                }
            }
        }
        // The same limits as over HTTP, before anything runs.
        if let Err(mut refused) = super::http::admit(&self.state, &mut request).await {
            super::errors::add_missing_codes_to(&mut refused);
            return Ok(vec![self.error_message(&id, &refused)]);
        }
        let name = request.operation_name.clone();
        let is_query = request
            .parsed_query()
            .is_ok_and(|document| super::http::is_query(document, name.as_deref()));
        super::documents::omit_unprovided_variables(&mut request);
        let mut request = request.data(principal);
        if is_query {
            // Aliased `setting` fields are read in one query here too. (Only queries read
            // through the loader; a subscriber does not carry one.)
            request = request.data(self.state.store_loader());
        }
        let responses: Pin<Box<dyn Stream<Item = GraphqlResponse> + Send>> = if is_query {
            // A query has one result, and the execution timeout, as over HTTP.
            let schema = self.state.schema.clone();
            let timeout = self.state.execution_timeout;
            Box::pin(stream::once(async move {
                match tokio::time::timeout(timeout, schema.execute(request)).await {
                    Ok(response) => response,
                    Err(_) => GraphqlResponse::from_errors(vec![super::errors::server_error(
                        &crate::error::Error::TimedOut { after: timeout },
                    )]),
                }
            }))
        } else {
            Box::pin(self.state.schema.execute_stream(request))
        };
        let (handle, registration) = AbortHandle::new_pair();
        let tagged = id.clone();
        let events = responses
            .map(move |response| (tagged.clone(), Some(response)))
            .chain(stream::once({
                let id = id.clone();
                async move { (id, None) }
            }));
        self.events
            .push(Box::pin(Abortable::new(events, registration)) as Events);
        self.running.insert(id, (handle, false));
        metrics::gauge!("settings_api_websocket_operations").increment(1);
        Ok(Vec::new())
    }

    /// The `error` message that ends operation `id` before it ran.
    fn error_message(&self, id: &str, response: &GraphqlResponse) -> Value {
        let errors = serde_json::to_value(&response.errors).unwrap_or_default();
        match self.protocol {
            Protocol::Transport => json!({"type": "error", "id": id, "payload": errors}),
            Protocol::Legacy => json!({"type": "error", "id": id, "payload": {"errors": errors}}),
        }
    }

    /// Forgets the operation `id`; its handle, when it was running.
    fn finish(&mut self, id: &str) -> Option<AbortHandle> {
        let (handle, _) = self.running.remove(id)?;
        metrics::gauge!("settings_api_websocket_operations").decrement(1);
        Some(handle)
    }

    /// What to send for an event of operation `id`: its next result, or its end.
    fn event(&mut self, id: String, response: Option<GraphqlResponse>) -> Option<Value> {
        let (_, answered) = self.running.get_mut(&id)?;
        let Some(mut response) = response else {
            self.finish(&id);
            return Some(json!({"type": "complete", "id": id}));
        };
        let first = !*answered;
        *answered = true;
        super::errors::add_missing_codes_to(&mut response);
        // An operation that never ran (it did not parse or validate) is an `error` message,
        // and the operation is over.
        let never_ran = response.data == async_graphql::Value::Null
            && !response.errors.is_empty()
            && response.errors.iter().all(|err| err.path.is_empty());
        if first && never_ran {
            if let Some(handle) = self.finish(&id) {
                handle.abort();
            }
            return Some(self.error_message(&id, &response));
        }
        let payload = serde_json::to_value(&response).unwrap_or_default();
        Some(match self.protocol {
            Protocol::Transport => json!({"type": "next", "id": id, "payload": payload}),
            Protocol::Legacy => json!({"type": "data", "id": id, "payload": payload}),
        })
    }
}

async fn send_all(socket: &mut WebSocket, replies: Vec<Value>) -> Result<(), axum::Error> {
    for reply in replies {
        socket.send(Message::Text(reply.to_string().into())).await?;
    }
    Ok(())
}

/// A message or frame over `max_message_size`.
fn is_too_big(err: &axum::Error) -> bool {
    matches!(
        std::error::Error::source(err).and_then(|inner| inner.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// The instant of a Unix time in seconds, on tokio's clock.
pub(super) fn instant_of(unix_secs: u64) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = std::time::Duration::from_secs(unix_secs).saturating_sub(now);
    // Far enough for any token, and never past what `Instant` can hold.
    tokio::time::Instant::now() + left.min(std::time::Duration::from_secs(10 * 365 * 24 * 3600))
}

/// The longest prefix of `text` within `max` bytes, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The `Authorization` of a `connection_init` payload, as a header: at the top
/// (`{"Authorization": "Bearer …"}`) or under `headers`, as Hasura and Apollo clients send it.
fn payload_headers(payload: Option<&Value>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let find = |object: &Value| {
        ["Authorization", "authorization"]
            .iter()
            .find_map(|name| object.get(name)?.as_str().map(str::to_owned))
    };
    let value =
        payload.and_then(|payload| find(payload).or_else(|| payload.get("headers").and_then(find)));
    if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_reason_fits_the_frame_and_ends_on_a_character() {
        assert_eq!(truncate("short", MAX_CLOSE_REASON), "short");
        let long = "é".repeat(100);
        let cut = truncate(&long, MAX_CLOSE_REASON);
        assert!(cut.len() <= MAX_CLOSE_REASON && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_token_may_come_at_the_top_of_the_payload_or_under_headers() {
        for payload in [
            json!({"Authorization": "Bearer a"}),
            json!({"authorization": "Bearer a"}),
            json!({"headers": {"Authorization": "Bearer a"}}),
        ] {
            let headers = payload_headers(Some(&payload));
            assert_eq!(headers[header::AUTHORIZATION], "Bearer a", "{payload}");
        }
        assert!(payload_headers(None).is_empty());
    }
}
