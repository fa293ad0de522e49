//! Logging, and the per-request span and correlation id.

use std::time::Instant;

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::{Instrument, field::Empty};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub const CORRELATION_ID_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// Installs the global subscriber, writing one JSON object per line when `json`, else text;
/// `RUST_LOG` filters (default `info`).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // A second call (tests start many apps in one process) keeps the first subscriber.
    let _ = match json {
        true => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        false => registry.with(fmt::layer()).try_init(),
    };
}

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// The correlation id of the request being served, or a fresh one outside a request.
pub fn correlation_id() -> String {
    CORRELATION_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

/// Accepts a caller's id when it is short and plain, so that ids can be followed across services.
fn incoming_id(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(CORRELATION_ID_HEADER)?
        .to_str()
        .ok()?;
    let plain = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    plain.then(|| value.to_owned())
}

/// Wraps each request in a span (method, path, status, latency, user id, correlation id), logs
/// its completion, and returns the correlation id in a response header.
pub async fn request_span(request: Request, next: Next) -> Response {
    let id = incoming_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        correlation_id = %id,
        user_id = Empty,
        status = Empty,
        latency_ms = Empty,
    );
    let started = Instant::now();
    let mut response = CORRELATION_ID
        .scope(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, latency_ms, "request failed");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CORRELATION_ID_HEADER, value);
    }
    response
}
