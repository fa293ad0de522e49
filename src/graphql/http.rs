//! GraphQL over HTTP (graphql-over-http): `POST /graphql` takes any operation as JSON; `GET
//! /graphql` takes queries in the URL, and is GraphiQL for a browser or a WebSocket upgrade.
//! Responses are `application/graphql-response+json` when the client accepts it, with 400 for
//! a request that could not run; `application/json` otherwise, always 200, as older clients
//! expect.

use std::sync::Arc;

use async_graphql::{
    BatchRequest, BatchResponse, Request as GraphqlRequest,
    extensions::apollo_persisted_queries::CacheStorage,
    parser::types::{DocumentOperations, ExecutableDocument, OperationType},
};
use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Query, Request, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{
    GraphqlState,
    documents::omit_unprovided_variables,
    errors::{add_missing_codes, server_error},
    graphiql,
    hot::{Answer, HotOperation},
    sse, websocket,
};
use crate::{connections::Slot, error::Error};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// `POST /graphql`.
pub async fn post(
    State(state): State<GraphqlState>,
    slot: Option<Extension<Slot>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let principal = match state.auth.authenticate(&headers).await {
        Ok(principal) => principal,
        Err(err) => return error_response(err),
    };
    // Only JSON runs: a form or `text/plain` post, which a page on any site can send without
    // a preflight, never reaches the executor.
    if !declares_json(&headers) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::bad_input(
                "Content-Type",
                "mediaType",
                "a GraphQL request is JSON, sent with `Content-Type: application/json`",
            ),
        );
    }
    let body = match state.body_limit.read(body) {
        Ok(body) => body,
        Err(err) => return error_response(err),
    };
    let request = match parse_request(&body) {
        Ok(request) => request,
        Err(err) => {
            return error_response(Error::bad_input(
                "body",
                "graphqlRequest",
                format!("the body is not a GraphQL request in JSON: {err}"),
            ));
        }
    };
    if sse::wanted(&headers) {
        return match request {
            BatchRequest::Single(request) => {
                sse::respond(state, principal, request, slot.map(|Extension(slot)| slot)).await
            }
            BatchRequest::Batch(_) => error_response(Error::bad_input(
                "body",
                "eventStream",
                "an event stream carries one operation, not a batch",
            )),
        };
    }
    let max_batch = state.max_batch;
    if let BatchRequest::Batch(requests) = &request
        && requests.len() > max_batch
    {
        return error_response(Error::bad_input(
            "body",
            "maxBatchSize",
            format!(
                "a batch may hold at most {max_batch} operations, not {}",
                requests.len()
            ),
        ));
    }
    execute(&state, &headers, principal, request).await
}

/// A request or a batch (a JSON array). async-graphql's `BatchRequest` takes either, but as an
/// untagged enum it first copies the whole body into a tree of serde's own and then reads that
/// again; a body that is not an array is read as one request directly.
fn parse_request(body: &[u8]) -> serde_json::Result<BatchRequest> {
    match body.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body),
        _ => serde_json::from_slice(body).map(BatchRequest::Single),
    }
}

/// `GET /graphql`: a WebSocket upgrade; GraphiQL for a browser that asks for a page without a
/// query; otherwise a query in the URL (`query`, `variables`, `operationName`).
pub async fn get(State(state): State<GraphqlState>, request: Request) -> Response {
    if websocket::is_websocket_upgrade(request.headers()) {
        return websocket::upgrade(state, request).await;
    }
    let headers = request.headers().clone();
    let parsed = from_url(request.uri());
    if parsed.as_ref().is_ok_and(|r| r.query.is_empty())
        && wants_a_page(&headers)
        && let Some(page) = graphiql::graphiql(&state)
    {
        return page.into_response();
    }
    let principal = match state.auth.authenticate(&headers).await {
        Ok(principal) => principal,
        Err(err) => return error_response(err),
    };
    let query = match parsed {
        Ok(query) if query.query.is_empty() && persisted_hash(&query).is_none() => {
            return error_response(Error::bad_input(
                "query",
                "required",
                "a GET needs the operation in its `query` parameter",
            ));
        }
        Ok(query) => query,
        Err(err) => {
            return error_response(Error::bad_input(
                "query",
                "graphqlRequest",
                format!("the URL is not a GraphQL request: {err}"),
            ));
        }
    };
    let mut query = query;
    if let Err(refused) = admit(&state, &mut query).await {
        return respond(&headers, BatchResponse::Single(refused));
    }
    // A GET must not change anything: a link, an image or a prefetch could send it. A
    // persisted query is judged by the document its hash names.
    let operation_name = query.operation_name.clone();
    if query
        .parsed_query()
        .is_ok_and(|document| !is_query(document, operation_name.as_deref()))
    {
        let mut response = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            Error::bad_input(
                "query",
                "method",
                "only queries may be sent with GET; send mutations and subscriptions with POST",
            ),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    execute(&state, &headers, principal, BatchRequest::Single(query)).await
}

async fn execute(
    state: &GraphqlState,
    headers: &HeaderMap,
    principal: crate::auth::Principal,
    mut request: BatchRequest,
) -> Response {
    // A text admitted before as a hot operation takes the direct path without a copy of its
    // document; should the executor answer after all, the request is admitted below.
    let mut tried = false;
    if let BatchRequest::Single(one) = &request
        && !one.extensions.contains_key("persistedQuery")
        && let Some(hot) = state.documents.hot(&one.query)
    {
        tried = true;
        if let Some(response) = run_hot(state, headers, &principal, one, &hot).await {
            return response;
        }
    }
    // A request that cannot run answers alone; the rest of a batch still runs.
    let mut refused = Vec::new();
    let mut admitted_hot = None;
    let requests = match &mut request {
        BatchRequest::Single(one) => std::slice::from_mut(one),
        BatchRequest::Batch(many) => many.as_mut_slice(),
    };
    for (index, one) in requests.iter_mut().enumerate() {
        match admit(state, one).await {
            Ok(hot) => admitted_hot = hot,
            Err(response) => refused.push((index, response)),
        }
    }
    if let (BatchRequest::Single(_), Some((_, response))) = (&request, refused.pop()) {
        return respond(headers, BatchResponse::Single(response));
    }
    // A text admitted just now.
    if let BatchRequest::Single(one) = &request
        && !tried
        && let Some(hot) = admitted_hot
        && let Some(response) = run_hot(state, headers, &principal, one, &hot).await
    {
        return response;
    }
    // Only queries are stopped at the timeout: a mutation finishes what it started, so that
    // its answer says what happened.
    let timeout = request
        .iter_mut()
        .all(|one| {
            let name = one.operation_name.clone();
            one.parsed_query()
                .is_ok_and(|document| is_query(document, name.as_deref()))
        })
        .then_some(state.execution_timeout);
    for one in request.iter_mut() {
        omit_unprovided_variables(one);
    }
    let request = request.data(principal).data(state.store_loader());
    let run = async {
        match (request, refused.is_empty()) {
            (request, true) => state.schema.execute_batch(request).await,
            (BatchRequest::Batch(requests), false) => {
                let mut responses = Vec::new();
                for (index, request) in requests.into_iter().enumerate() {
                    match refused.iter().position(|(at, _)| *at == index) {
                        Some(found) => responses.push(refused.swap_remove(found).1),
                        None => responses.push(state.schema.execute(request).await),
                    }
                }
                BatchResponse::Batch(responses)
            }
            (request, false) => state.schema.execute_batch(request).await,
        }
    };
    let response = match timeout {
        None => run.await,
        Some(timeout) => match tokio::time::timeout(timeout, run).await {
            Ok(response) => response,
            Err(_) => return error_response(Error::TimedOut { after: timeout }),
        },
    };
    respond(headers, response)
}

/// The direct path's response to a single request of a hot operation, or `None` when the
/// executor must answer it.
async fn run_hot(
    state: &GraphqlState,
    headers: &HeaderMap,
    principal: &crate::auth::Principal,
    one: &GraphqlRequest,
    hot: &HotOperation,
) -> Option<Response> {
    let run = hot.run(one, principal, &state.store);
    // As in `execute`, only a query is stopped at the timeout.
    let answer = if hot.is_query() {
        let timeout = state.execution_timeout;
        match tokio::time::timeout(timeout, run).await {
            Ok(answer) => answer,
            Err(_) => return Some(error_response(Error::TimedOut { after: timeout })),
        }
    } else {
        run.await
    };
    match answer? {
        Answer::Data(body) => Some(respond_with(headers, StatusCode::OK, body)),
        Answer::Failed(response) => Some(respond(headers, BatchResponse::Single(response))),
    }
}

/// Readies one request to run: resolves its persisted query, then judges its document
/// against the cost limits. The response of a request that cannot run.
pub(super) async fn admit(
    state: &GraphqlState,
    request: &mut GraphqlRequest,
) -> Result<Option<Arc<HotOperation>>, async_graphql::Response> {
    let refuse = |err: Error| async_graphql::Response::from_errors(vec![server_error(&err)]);
    let register = resolve_persisted(state, request).await?;
    let hot = state.documents.admit(request).map_err(refuse)?;
    if let Some(hash) = register
        && let Ok(document) = request.parsed_query()
    {
        let document = document.clone();
        state.persisted.set(hash, document).await;
    }
    Ok(hot)
}

/// Apollo's automatic persisted queries, before execution (an async-graphql extension would
/// cost every field of every request): a hash alone takes the document registered under it;
/// a query with its hash is to be registered, once admitted, if the hash is the query's
/// SHA-256.
async fn resolve_persisted(
    state: &GraphqlState,
    request: &mut GraphqlRequest,
) -> Result<Option<String>, async_graphql::Response> {
    let Some(hash) = persisted_hash(request) else {
        return Ok(None);
    };
    request.extensions.remove("persistedQuery");
    let refuse = |message: &str| {
        async_graphql::Response::from_errors(vec![async_graphql::ServerError::new(message, None)])
    };
    if request.query.is_empty() {
        return match state.persisted.get(hash).await {
            Some(document) => {
                request.set_parsed_query(document);
                Ok(None)
            }
            None => Err(refuse("PersistedQueryNotFound")),
        };
    }
    use sha2::Digest;
    if format!("{:x}", sha2::Sha256::digest(request.query.as_bytes())) != hash {
        return Err(refuse("provided sha does not match query"));
    }
    Ok(Some(hash))
}

/// The executed response in the format the client accepts, every error with its code.
fn respond(headers: &HeaderMap, mut response: BatchResponse) -> Response {
    add_missing_codes(&mut response);
    /// A response that never ran, without its `data` member.
    #[derive(serde::Serialize)]
    struct Refused<'a> {
        errors: &'a [async_graphql::ServerError],
    }
    let written = match &response {
        // A request that never ran (it did not parse, validate or coerce its variables) has
        // errors without a path and no data: 400, and no `data` member.
        BatchResponse::Single(one)
            if accepts(headers, GRAPHQL_RESPONSE)
                && one.data == async_graphql::Value::Null
                && !one.errors.is_empty()
                && one.errors.iter().all(|err| err.path.is_empty()) =>
        {
            serde_json::to_vec(&Refused {
                errors: &one.errors,
            })
            .map(|body| (StatusCode::BAD_REQUEST, body))
        }
        _ => serde_json::to_vec(&response).map(|body| (StatusCode::OK, body)),
    };
    match written {
        Ok((status, body)) => respond_with(headers, status, body),
        Err(err) => error_response(Error::internal(err)),
    }
}

/// A response body in JSON, labelled with the media type the client accepts.
fn respond_with(headers: &HeaderMap, status: StatusCode, body: Vec<u8>) -> Response {
    let media_type = if accepts(headers, GRAPHQL_RESPONSE) {
        GRAPHQL_RESPONSE
    } else {
        "application/json"
    };
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(media_type))],
        body,
    )
        .into_response()
}

/// The parameters of a GET, as graphql-over-http names them.
#[derive(serde::Deserialize)]
struct GetParameters {
    #[serde(default)]
    query: String,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

fn from_url(uri: &axum::http::Uri) -> Result<GraphqlRequest, String> {
    let Query(parameters) =
        Query::<GetParameters>::try_from_uri(uri).map_err(|err| err.body_text())?;
    let json = |name: &str, text: Option<String>| {
        text.map(|text| serde_json::from_str::<serde_json::Value>(&text))
            .transpose()
            .map_err(|err| format!("`{name}` is not JSON: {err}"))
    };
    let mut request = GraphqlRequest::new(parameters.query);
    if let Some(name) = parameters.operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = json("variables", parameters.variables)? {
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(serde_json::Value::Object(extensions)) = json("extensions", parameters.extensions)?
    {
        for (name, value) in extensions {
            let value = async_graphql::Value::from_json(value).map_err(|err| err.to_string())?;
            request.extensions.insert(name, value);
        }
    }
    Ok(request)
}

/// The hash of an Apollo persisted query the request names.
fn persisted_hash(request: &GraphqlRequest) -> Option<String> {
    let persisted = request.extensions.get("persistedQuery")?;
    let async_graphql::Value::Object(members) = persisted else {
        return None;
    };
    match members.get("sha256Hash") {
        Some(async_graphql::Value::String(hash)) => Some(hash.clone()),
        _ => None,
    }
}

/// Whether the document's operation (the one named, or its only one) is a query.
pub(super) fn is_query(document: &ExecutableDocument, operation_name: Option<&str>) -> bool {
    let kind = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(operation.node.ty),
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .iter()
            .find(|(operation, _)| operation.as_str() == name)
            .map(|(_, operation)| operation.node.ty),
        (DocumentOperations::Multiple(_), None) => None,
    };
    kind.is_none_or(|kind| kind == OperationType::Query)
}

pub(super) fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.split(';').next().unwrap_or_default().trim() == media_type)
}

/// A browser navigating to the endpoint: it asks for HTML, or for anything.
fn wants_a_page(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::ACCEPT)
        || accepts(headers, "text/html")
        || accepts(headers, "*/*")
}

fn declares_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// A request that was not executed: an HTTP error status with a GraphQL error body.
pub(super) fn error_response(err: Error) -> Response {
    refuse(err.status(), err)
}

/// Like [`error_response`], with a status of the transport's own (405, 415).
fn refuse(status: StatusCode, err: Error) -> Response {
    let unauthenticated = matches!(err, Error::Unauthenticated(_));
    let retry_after = err.retry_after();
    let body = serde_json::json!({ "errors": [server_error(&err)] });
    let mut response = (status, Json(body)).into_response();
    if unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
