//! The state the router holds, and the parts of it each handler takes (axum `FromRef`
//! substates), so that a handler sees only what it uses: never the configuration or a key.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRef, rejection::BytesRejection},
    http::StatusCode,
};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    auth::Authenticator, config::Secret, error::Error, graphql::GraphqlState, rest::RestState,
    settings::Store,
};

/// The router's state. Cloned for every request, so a clone shares it.
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl AppState {
    pub fn new(shared: AppShared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppShared {
    pub store: Arc<Store>,
    pub graphql: GraphqlState,
    pub rest: RestState,
    pub metrics: MetricsState,
}

/// What `GET /metrics` uses.
#[derive(Clone)]
pub struct MetricsState {
    pub handle: PrometheusHandle,
    pub store: Arc<Store>,
    /// The bearer token the endpoint requires, when one is configured.
    pub token: Option<Secret>,
}

impl FromRef<AppState> for MetricsState {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl FromRef<AppState> for Arc<Store> {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}

impl FromRef<AppState> for GraphqlState {
    fn from_ref(state: &AppState) -> Self {
        state.graphql.clone()
    }
}

impl FromRef<AppState> for RestState {
    fn from_ref(state: &AppState) -> Self {
        state.rest.clone()
    }
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.rest.auth.clone()
    }
}

/// The largest request body, for the handlers that read their body themselves: the router's
/// body limit stops reading there, and this turns that into the service's error.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

impl BodyLimit {
    /// The body's bytes, or why they could not be read (`PAYLOAD_TOO_LARGE` past the limit).
    pub fn read(self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Error> {
        match body {
            Ok(body) => Ok(body),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::PayloadTooLarge {
                    message: format!("the request body is larger than {} bytes", self.0),
                    limit: self.0,
                })
            }
            Err(rejection) => Err(Error::bad_input("body", "readable", rejection.body_text())),
        }
    }
}
