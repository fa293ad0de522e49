//! `POST /graphql`.

use async_graphql::{BatchRequest, dataloader::DataLoader};
use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::{
    GraphqlState,
    errors::{add_missing_codes, server_error},
    loaders::SettingLoader,
};
use crate::error::Error;

pub async fn graphql(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let principal = match state.auth.authenticate(&headers).await {
        Ok(principal) => principal,
        Err(err) => return error_response(err),
    };
    let body = match state.body_limit.read(body) {
        Ok(body) => body,
        Err(err) => return error_response(err),
    };
    let mut request: BatchRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error_response(Error::bad_input(
                "body",
                "graphqlRequest",
                format!("the body is not a GraphQL request in JSON: {err}"),
            ));
        }
    };
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
    state.documents.prepare(&mut request);
    let loader = Arc::new(DataLoader::new(
        SettingLoader {
            store: state.store.clone(),
        },
        tokio::spawn,
    ));
    let request = request.data(principal).data(loader);
    let mut response = state.schema.execute_batch(request).await;
    add_missing_codes(&mut response);
    Json(response).into_response()
}

/// A request that was not executed: an HTTP error status with a GraphQL error body.
pub(super) fn error_response(err: Error) -> Response {
    let status = err.status();
    let unauthenticated = matches!(err, Error::Unauthenticated(_));
    let body = serde_json::json!({ "errors": [server_error(&err)] });
    let mut response = (status, Json(body)).into_response();
    if unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
