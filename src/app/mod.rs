//! Builds the application: keys, database, migrations, state, router; then serves until
//! stopped.

mod routes;
mod serve;
mod state;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use base64::Engine;
use migration::{Migrator, MigratorTrait};
use rand::RngCore;
use tokio::net::TcpListener;

pub use state::{AppShared, AppState, BodyLimit, MetricsState};

use crate::{
    auth::{Authenticator, Issuer, TokenRequest, Verifier},
    catalog::Catalog,
    config::{AppEnv, Config, HistoryConfig, JwtKey, Secret, redact_url},
    connections::Connections,
    graphql::GraphqlState,
    rest::{ContractScopes, RestShared, RestState},
    settings::{Quotas, Retention, Store, ValueLimits, connect_readers, store_connect},
};

pub struct Application {
    listener: TcpListener,
    store: Arc<Store>,
    history: HistoryConfig,
    router: Router,
    local_addr: SocketAddr,
    shutdown_timeout: Duration,
    /// The token printed for development when no key is configured.
    dev_token: Option<String>,
    /// For the task that lets the rate limiters forget quiet callers.
    forgetting: Authenticator,
    connections: Arc<Connections>,
    serve_limits: serve::ServeLimits,
    /// The PostgreSQL URL whose health is watched.
    health_watch: Option<String>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Before anything is created: a broken binding or catalog must stop start-up cleanly.
        let scopes = ContractScopes::new(&config.rest_scopes)
            .map_err(|err| anyhow::anyhow!("REST_SCOPES names an invalid scope: {err}"))?;
        let catalog = Catalog::load(
            config.catalog.file.as_deref(),
            config.catalog.strict,
            &config.rest_scopes.by_contract(),
        )?;
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

        let db = connect_and_migrate(&config, config.database_max_connections).await?;
        // Opened once the migrations ran: SQLite's readers beside its writer.
        let readers = connect_readers(&config.database_url, config.database_max_connections)
            .await
            .with_context(|| {
                format!(
                    "cannot open readers of DATABASE_URL {}",
                    redact_url(&config.database_url)
                )
            })?;
        // PostgreSQL's health is watched on a connection of its own; an embedded SQLite file
        // has no outage to watch for.
        let health_watch = (db.get_database_backend() == sea_orm::DbBackend::Postgres)
            .then(|| config.database_url.clone());

        let listener = TcpListener::bind(config.bind_addr)
            .await
            .with_context(|| format!("cannot listen on BIND_ADDR {}", config.bind_addr))?;
        let local_addr = listener.local_addr()?;

        let connections = Connections::new(connection_cap(
            config.connections.max_connections,
            config.database_max_connections,
        ));
        let limits = &config.limits;
        let store = Arc::new(
            Store::new(
                db,
                ValueLimits {
                    max_bytes: limits.max_value_bytes,
                    max_depth: limits.max_value_depth,
                    max_keys: limits.max_keys_per_write,
                    quotas: Quotas {
                        keys: (limits.quota_keys_per_scope > 0)
                            .then_some(limits.quota_keys_per_scope),
                        bytes: (limits.quota_bytes_per_scope > 0)
                            .then_some(limits.quota_bytes_per_scope),
                    },
                },
                Arc::new(catalog),
                // Contract 004 is the one that mirrors `locale` to the users table.
                scopes.c004.clone(),
            )
            .with_cache(limits.settings_cache_mb * 1024 * 1024)
            .with_readers(readers),
        );
        let auth = Authenticator::new(verifier, store.clone(), &config.rate_limit);
        let forgetting = auth.clone();
        let metrics = MetricsState {
            handle: crate::telemetry::metrics().map_err(anyhow::Error::msg)?,
            store: store.clone(),
            token: config.metrics_token.clone(),
        };
        let body_limit = BodyLimit(limits.max_body_bytes);
        let state = AppState::new(AppShared {
            store: store.clone(),
            graphql: GraphqlState::new(
                store.clone(),
                auth.clone(),
                limits,
                config.conveniences,
                body_limit,
                dev_token.as_deref(),
                connections.clone(),
            ),
            rest: RestState::new(RestShared {
                auth,
                store: store.clone(),
                body_limit,
                scopes: Arc::new(scopes),
            }),
            metrics,
        });
        Ok(Application {
            listener,
            store,
            history: config.history.clone(),
            router: routes::router(
                state,
                limits.max_body_bytes,
                &config.cors,
                config.connections.body_timeout,
            ),
            local_addr,
            shutdown_timeout: config.shutdown_timeout,
            dev_token,
            forgetting,
            connections,
            serve_limits: serve::ServeLimits {
                header_timeout: config.connections.header_timeout,
            },
            health_watch,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The store the application serves, for embedding and tests.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
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
        let purging = tokio::spawn(purge_expired_forever(
            self.store.clone(),
            self.history.expiry_purge_interval,
        ));
        let forgetting = tokio::spawn(forget_quiet_callers(self.forgetting));
        // Other instances' changes, for this one's subscribers (PostgreSQL).
        let listening = self.health_watch.is_some().then(|| {
            (
                tokio::spawn(self.store.clone().deliver_other_instances_changes()),
                tokio::spawn(self.store.clone().send_notices()),
            )
        });
        let watching = self.health_watch.map(|url| {
            let store = self.store.clone();
            tokio::spawn(async move { store.watch_health(url, Duration::from_secs(1)).await })
        });
        let connections = self.connections.clone();
        let server = tokio::spawn(serve::serve(
            self.listener,
            self.router,
            connections.clone(),
            self.serve_limits,
        ));
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        // Stops accepting, lets every connection finish its request, and closes WebSockets
        // with 1001.
        connections.stop();
        let _ = server.await;
        if tokio::time::timeout(self.shutdown_timeout, connections.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "connections did not finish within the shutdown timeout"
            );
        }
        pruning.abort();
        purging.abort();
        forgetting.abort();
        if let Some(watching) = watching {
            watching.abort();
        }
        if let Some((listening, notifying)) = listening {
            listening.abort();
            // The other instances should hear of the last writes (a rolling restart).
            self.store.flush_notices(Duration::from_secs(1)).await;
            notifying.abort();
        }
        Ok(())
    }
}

/// The most connections to allow: `configured`, or fewer when the process may not open that
/// many files. The soft file-descriptor limit is first raised to the hard one; room is kept
/// for the database pool, the listener and the files the process opens.
fn connection_cap(configured: usize, pool: u32) -> usize {
    let files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(files) => files,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read or raise the file-descriptor limit");
            return configured;
        }
    };
    let reserved = u64::from(pool) + 64;
    let allowed = usize::try_from(files.saturating_sub(reserved)).unwrap_or(usize::MAX);
    if allowed < configured {
        tracing::warn!(
            file_descriptors = files,
            max_connections = allowed,
            "MAX_CONNECTIONS lowered to what the file-descriptor limit allows"
        );
    }
    configured.min(allowed).max(1)
}

/// Keeps the rate limiters' memory to the users and addresses seen lately.
async fn forget_quiet_callers(auth: Authenticator) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        interval.tick().await;
        auth.forget_quiet_callers();
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

/// Records the expiry of expired values (already invisible to reads) every `interval`, so
/// that subscribers and the feed hear of it.
async fn purge_expired_forever(store: Arc<Store>, interval: Duration) {
    let mut interval = tokio::time::interval(interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // A full batch means more are due: go on at once.
        loop {
            match store.purge_expired(PURGE_BATCH).await {
                Ok(purged) if purged >= PURGE_BATCH as usize => continue,
                Ok(_) => break,
                // The outage is reported by the health watch already.
                Err(crate::error::Error::Unavailable(_)) => break,
                Err(err) => {
                    tracing::warn!(error = ?err, "could not purge expired values");
                    break;
                }
            }
        }
    }
}

/// Scopes purged of expired values per query.
const PURGE_BATCH: u64 = 100;

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
    connect_and_migrate(config, 1).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// A pool of `max_connections` to the configured database, with every migration applied.
async fn connect_and_migrate(
    config: &Config,
    max_connections: u32,
) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = store_connect(&config.database_url, max_connections)
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
    Ok(db)
}
