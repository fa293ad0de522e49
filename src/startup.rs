//! Builds the application: database, migrations, keys, router; then serves until stopped.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    middleware,
    response::IntoResponse,
    routing::get,
};
use base64::Engine;
use migration::{Migrator, MigratorTrait};
use rand::RngCore;
use tokio::net::TcpListener;

use crate::{
    auth::{Issuer, TokenRequest, Verifier},
    catalog::Catalog,
    config::{AppEnv, Config, HistoryConfig, JwtKey, Secret, redact_url},
    graphql::{self, AppSchema},
    rest,
    settings::{Retention, Store, ValueLimits, store_connect},
    telemetry,
};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    pub verifier: Arc<Verifier>,
    pub schema: AppSchema,
    pub documents: Arc<graphql::Documents>,
    pub graphiql_html: Arc<str>,
}

pub struct Application {
    listener: TcpListener,
    store: Arc<Store>,
    history: HistoryConfig,
    router: Router,
    local_addr: SocketAddr,
    shutdown_timeout: Duration,
    /// The token printed for development when no key is configured.
    dev_token: Option<String>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Before anything is created: a broken catalog must stop start-up cleanly.
        let catalog = Catalog::load(config.catalog.file.as_deref(), config.catalog.strict)?;
        let db = store_connect(&config.database_url, config.database_max_connections)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to DATABASE_URL {}",
                    redact_url(&config.database_url)
                )
            })?;
        Migrator::up(&db, None)
            .await
            .context("cannot apply database migrations")?;

        let listener = TcpListener::bind(config.bind_addr)
            .await
            .with_context(|| format!("cannot listen on BIND_ADDR {}", config.bind_addr))?;
        let local_addr = listener.local_addr()?;

        let (key, dev_token) = match &config.jwt.key {
            Some(key) => (key.clone(), None),
            None => {
                debug_assert_ne!(config.app_env, AppEnv::Production);
                let key = JwtKey::Secret(random_secret());
                let token = Issuer::new(&config.jwt, &key, None)?.mint(&TokenRequest {
                    sub: "dev".into(),
                    email: Some("dev@localhost".into()),
                    roles: vec!["admin".into()],
                    scope: None,
                    ttl: Duration::from_secs(24 * 3600),
                })?;
                (key, Some(token))
            }
        };
        let verifier = Verifier::new(&config.jwt, &key)?;

        let limits = &config.limits;
        let store = Arc::new(Store::new(
            db,
            ValueLimits {
                max_bytes: limits.max_value_bytes,
                max_depth: limits.max_value_depth,
            },
            Arc::new(catalog),
        ));
        let schema = graphql::build_schema(store.clone(), limits);
        let graphiql_html = graphql::graphiql::page(dev_token.as_deref());
        let state = AppState {
            store: store.clone(),
            verifier: Arc::new(verifier),
            schema,
            documents: Arc::default(),
            graphiql_html: graphiql_html.into(),
            config: Arc::new(config.clone()),
        };
        Ok(Application {
            listener,
            store,
            history: config.history.clone(),
            router: router(state),
            local_addr,
            shutdown_timeout: config.shutdown_timeout,
            dev_token,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn dev_token(&self) -> Option<&str> {
        self.dev_token.as_deref()
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes; then stops accepting connections and lets in-flight
    /// requests finish, for at most the configured shutdown timeout.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let pruning = tokio::spawn(prune_history_forever(
            self.store.clone(),
            self.history.clone(),
        ));
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            notify.notify_one();
        });
        let deadline = async {
            stopping.notified().await;
            tokio::time::sleep(self.shutdown_timeout).await;
        };
        let served = tokio::select! {
            served = server => served,
            () = deadline => {
                tracing::warn!("in-flight requests did not finish within the shutdown timeout");
                Ok(())
            }
        };
        pruning.abort();
        served
    }
}

/// Prunes the change history on an interval, in batches, beside the server.
async fn prune_history_forever(store: Arc<Store>, config: HistoryConfig) {
    let retention = Retention {
        keep_versions: (config.keep_versions > 0).then_some(config.keep_versions),
        keep_days: (config.keep_days > 0).then_some(config.keep_days),
        batch: 1000,
    };
    if retention.keep_versions.is_none() && retention.keep_days.is_none() {
        return;
    }
    let mut interval = tokio::time::interval(config.prune_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match store.prune_history(retention).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned the change history"),
            Err(err) => tracing::warn!(error = ?err, "could not prune the change history"),
        }
    }
}

fn router(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route(
            "/graphql",
            get(graphql::graphiql_or_websocket).post(graphql::graphql),
        )
        .route("/graphql/assets/{name}", get(graphql::graphiql::asset))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/openapi.json", get(rest::openapi::document))
        .merge(rest::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(telemetry::request_span))
        .with_state(state)
}

async fn live() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ok", "database": "ok" })),
        ),
        Err(err) => {
            tracing::warn!(error = ?err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "unavailable", "database": "unreachable" })),
            )
        }
    }
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": "not found" })),
    )
}

fn random_secret() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Applies pending migrations; `settings-api migrate`.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = store_connect(&config.database_url, 1)
        .await
        .with_context(|| {
            format!(
                "cannot connect to DATABASE_URL {}",
                redact_url(&config.database_url)
            )
        })?;
    Migrator::up(&db, None)
        .await
        .context("cannot apply database migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}
