//! Logging, metrics, and the per-request span and correlation id.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
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

/// How often the recorder folds the histograms' samples into their buckets.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process's Prometheus recorder, installed by the first application built in it (tests
/// build many): every metric of the process, rendered by `GET /metrics`.
pub fn metrics() -> Result<PrometheusHandle, String> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut handle = HANDLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(handle) = handle.as_ref() {
        return Ok(handle.clone());
    }
    let installed = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .map_err(|err| err.to_string())?
        .install_recorder()
        .map_err(|err| format!("cannot install the metrics recorder: {err}"))?;
    // Histograms keep every sample until upkeep folds them into their buckets, which a scrape
    // of `/metrics` also does: without it, a service nobody scrapes grows by every request.
    let upkeep = installed.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(METRICS_UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .map_err(|err| format!("cannot start the metrics upkeep: {err}"))?;
    *handle = Some(installed.clone());
    Ok(installed)
}

tokio::task_local! {
    static CORRELATION_ID: String;
    static CLIENT_IP: Option<IpAddr>;
}

/// The address the request being served came from (the peer of its connection).
pub fn client_ip() -> Option<IpAddr> {
    CLIENT_IP.try_with(|ip| *ip).ok().flatten()
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

/// The request counter and duration histogram of each series (method, route, status) that
/// [`request_span`] records, registered with the recorder once: making a series' key and
/// finding it in the recorder for every request cost more than the rest of its metrics.
/// A series is registered at its first request, when the application has installed the
/// recorder ([`metrics`]).
#[derive(Clone, Default)]
pub struct RequestMetrics(Arc<Mutex<SeriesByRoute>>);

/// The series by route pattern; a route's are few (its methods and statuses).
type SeriesByRoute = HashMap<Arc<str>, Vec<Series>, foldhash::fast::RandomState>;

/// The handles of one series.
struct Series {
    method: Method,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

/// Beyond this many series, new ones are registered for each request and not kept: a client
/// that invents methods cannot grow the map (the recorder keeps its series regardless).
const MOST_SERIES: usize = 1024;

impl RequestMetrics {
    fn record(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let mut series = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let found = series.get(route).and_then(|of_route| {
            of_route
                .iter()
                .find(|one| one.status == status && one.method == method)
        });
        if let Some(one) = found {
            one.requests.increment(1);
            one.duration.record(seconds);
            return;
        }
        let labels = [
            ("method", method.to_string()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        let one = Series {
            method: method.clone(),
            status,
            requests: metrics::counter!("settings_api_http_requests_total", &labels),
            duration: metrics::histogram!(
                "settings_api_http_request_duration_seconds",
                &labels[..2]
            ),
        };
        one.requests.increment(1);
        one.duration.record(seconds);
        if kept(&series) < MOST_SERIES {
            series.entry(route.into()).or_default().push(one);
        }
    }
}

/// How many series `series` holds.
fn kept(series: &SeriesByRoute) -> usize {
    series.values().map(Vec::len).sum()
}

/// Wraps each request in a span (method, path, status, latency, user id, correlation id), logs
/// its completion, records its metrics, and returns the correlation id in a response header.
pub async fn request_span(
    State(metrics): State<RequestMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let id = incoming_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    // The route's pattern, not the path: one series per route, whatever the keys in it.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        correlation_id = %id,
        user_id = Empty,
        status = Empty,
        latency_ms = Empty,
    );
    let client_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let started = Instant::now();
    let mut response = CORRELATION_ID
        .scope(id.clone(), CLIENT_IP.scope(client_ip, next.run(request)))
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics.record(&method, route, status, latency_ms / 1000.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_metrics_keep_at_most_their_limit_of_series() {
        let metrics = RequestMetrics::default();
        let series = |metrics: &RequestMetrics| kept(&metrics.0.lock().unwrap());
        for route in ["/graphql", "/api/v1/users/me/settings"] {
            for method in [Method::GET, Method::POST] {
                metrics.record(&method, route, 200, 0.001);
                metrics.record(&method, route, 200, 0.002);
            }
        }
        assert_eq!(
            series(&metrics),
            4,
            "one series per method, route and status"
        );
        // Series beyond the limit (a client inventing methods, say) are recorded, not kept.
        for status in 0..(MOST_SERIES as u16 + 100) {
            metrics.record(&Method::PATCH, "unmatched", status, 0.001);
        }
        assert_eq!(series(&metrics), MOST_SERIES);
        metrics.record(&Method::GET, "/graphql", 200, 0.001);
        assert_eq!(series(&metrics), MOST_SERIES);
    }
}
