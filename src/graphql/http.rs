//! `POST /graphql`.

use async_graphql::{BatchRequest, dataloader::DataLoader};
use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{
    errors::{add_missing_codes, to_server_error},
    loaders::SettingLoader,
};
use crate::{auth, error::Error, startup::AppState};

pub async fn graphql(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let principal = match auth::authenticate(&state, &headers).await {
        Ok(principal) => principal,
        Err(err) => return error_response(err),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let limit = state.config.limits.max_body_bytes;
            return error_response(Error::PayloadTooLarge {
                message: format!("the request body is larger than {limit} bytes"),
                limit,
            });
        }
        Err(rejection) => {
            return error_response(Error::bad_input("body", "readable", rejection.body_text()));
        }
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
    let max_batch = state.config.limits.graphql_max_batch;
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

fn status_of(err: &Error) -> StatusCode {
    match err {
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A request that was not executed: an HTTP error status with a GraphQL error body.
pub(super) fn error_response(err: Error) -> Response {
    let status = status_of(&err);
    let unauthenticated = matches!(err, Error::Unauthenticated(_));
    let body = serde_json::json!({ "errors": [to_server_error(err)] });
    let mut response = (status, Json(body)).into_response();
    if unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
