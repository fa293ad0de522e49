//! GraphQL over WebSocket (the `graphql-transport-ws` protocol, or the older `graphql-ws`) for
//! subscriptions, on `GET /graphql` with an upgrade. The token comes in the upgrade
//! request's `Authorization` header or, from browsers, in the `connection_init` payload as
//! `{"Authorization": "Bearer …"}`.

use async_graphql::{Data, http::ALL_WEBSOCKET_PROTOCOLS};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::{
    extract::{FromRequestParts, Request, ws::WebSocketUpgrade},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::GraphqlState;
use crate::auth::Principal;

/// Upgrades `request` (see [`is_websocket_upgrade`]) to a GraphQL WebSocket.
pub(super) async fn upgrade(state: GraphqlState, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(protocol) => protocol,
        Err(status) => return status.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    // A token sent with the upgrade must be valid; without one, `connection_init` brings it.
    let from_header = match parts.headers.contains_key(header::AUTHORIZATION) {
        true => match state.auth.verify_headers(&parts.headers) {
            Ok(principal) => Some(principal),
            Err(err) => return super::http::error_response(err),
        },
        false => None,
    };
    let schema = state.schema.clone();
    let auth = state.auth.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let principal = match from_header {
                        Some(principal) => principal,
                        None => auth.verify_headers(&payload_headers(&payload))?,
                    };
                    auth.admit(&principal).await?;
                    let mut data = Data::default();
                    data.insert::<Principal>(principal);
                    Ok(data)
                })
                .serve()
        })
        .into_response()
}

pub(super) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The `Authorization` member of a `connection_init` payload, as a header.
fn payload_headers(payload: &serde_json::Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = ["Authorization", "authorization"]
        .iter()
        .find_map(|name| payload.get(name)?.as_str());
    if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers
}
