//! GraphQL over Server-Sent Events, the graphql-sse protocol's distinct connections mode: a
//! `POST /graphql` (or a `GET` of a query or subscription) that accepts `text/event-stream`
//! gets its results as `next` events and then a `complete` event, on one connection per
//! operation, for clients behind proxies that break WebSockets. Same authentication, limits
//! and cost checks as every other transport; errors found before execution come as a `next`
//! event, as the protocol asks. The stream ends when the token expires or the service stops.

use std::{convert::Infallible, time::Duration};

use async_graphql::{Request as GraphqlRequest, Response as GraphqlResponse};
use axum::{
    http::HeaderMap,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::{Stream, StreamExt, stream};

use super::{GraphqlState, errors::add_missing_codes_to, errors::server_error, http::accepts};
use crate::{auth::Principal, connections::Slot, error::Error};

pub(super) const EVENT_STREAM: &str = "text/event-stream";

/// Whether the client asks for an event stream.
pub(super) fn wanted(headers: &HeaderMap) -> bool {
    accepts(headers, EVENT_STREAM)
}

/// Runs one operation and streams its results.
pub(super) async fn respond(
    state: GraphqlState,
    principal: Principal,
    mut request: GraphqlRequest,
    slot: Option<Slot>,
) -> Response {
    let events: std::pin::Pin<Box<dyn Stream<Item = GraphqlResponse> + Send>> =
        match super::http::admit(&state, &mut request).await {
            Err(refused) => Box::pin(stream::once(async { refused })),
            Ok(_) => {
                super::documents::omit_unprovided_variables(&mut request);
                let expires = super::websocket::instant_of(principal.expires_at);
                let mut request = request.data(principal);
                let name = request.operation_name.clone();
                let is_query = request
                    .parsed_query()
                    .is_ok_and(|document| super::http::is_query(document, name.as_deref()));
                if is_query {
                    request = request.data(state.store_loader());
                }
                let results = state.schema.execute_stream(request);
                let connections = state.connections.clone();
                // Ends with the token or the service, whichever comes first.
                let end: std::pin::Pin<Box<dyn Future<Output = Option<GraphqlResponse>> + Send>> =
                    Box::pin(async move {
                        tokio::select! {
                            () = tokio::time::sleep_until(expires) => Some(GraphqlResponse::from_errors(vec![
                                server_error(&Error::Unauthenticated(crate::error::AuthFailure::Expired)),
                            ])),
                            () = connections.stopping() => None,
                        }
                    });
                Box::pin(stream::unfold(Some((results, end)), |state| async move {
                    let (mut results, mut end) = state?;
                    tokio::select! {
                        item = results.next() => item.map(|item| (item, Some((results, end)))),
                        last = &mut end => last.map(|last| (last, None)),
                    }
                }))
            }
        };
    // The connection stays busy (never closed to make room) while the stream is open.
    let busy = slot.map(|slot| slot.busy());
    let events = events
        .map(|mut response| {
            add_missing_codes_to(&mut response);
            Ok::<_, Infallible>(
                Event::default()
                    .event("next")
                    .json_data(&response)
                    .unwrap_or_else(|_| Event::default().event("next").data("{}")),
            )
        })
        .chain(stream::once(async move {
            drop(busy);
            Ok(Event::default().event("complete").data(""))
        }));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
