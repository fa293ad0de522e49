//! The GraphQL interface: schema, resolvers, and the HTTP and WebSocket transports. Resolvers
//! stay thin: parse the arguments, call one store function, map the result.

mod cost;
mod documents;
mod errors;
mod graphiql;
mod hot;
mod http;
mod loaders;
mod mutation;
mod query;
mod sse;
mod subscription;
mod types;
mod websocket;

use std::{sync::Arc, time::Duration};

use async_graphql::{Schema, extensions::apollo_persisted_queries::LruCacheStorage};
use axum::{Router, routing::get};

pub use documents::Documents;
pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

use crate::{
    app::{AppState, BodyLimit},
    auth::Authenticator,
    config::{Conveniences, Limits},
    connections::Connections,
    settings::Store,
};

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// What the GraphQL handlers use. Cloned for every request, so a clone shares it.
#[derive(Clone)]
pub struct GraphqlState(Arc<GraphqlShared>);

impl std::ops::Deref for GraphqlState {
    type Target = GraphqlShared;

    fn deref(&self) -> &GraphqlShared {
        &self.0
    }
}

/// The parts of [`GraphqlState`].
pub struct GraphqlShared {
    schema: AppSchema,
    auth: Authenticator,
    /// For the per-request loaders.
    store: Arc<Store>,
    documents: Arc<Documents>,
    /// The GraphiQL page, when it is served.
    graphiql_html: Option<Arc<str>>,
    body_limit: BodyLimit,
    max_batch: usize,
    /// Apollo's automatic persisted queries, by hash (`http::resolve_persisted`).
    persisted: LruCacheStorage,
    /// How long a WebSocket may stay open before its `connection_init`.
    connection_init_timeout: Duration,
    /// How long a query may run.
    execution_timeout: Duration,
    /// For WebSockets: to close them with 1001 when the service stops.
    connections: Arc<Connections>,
}

impl GraphqlState {
    /// `dev_token` is filled into GraphiQL's headers when there is one.
    pub fn new(
        store: Arc<Store>,
        auth: Authenticator,
        limits: &Limits,
        conveniences: Conveniences,
        body_limit: BodyLimit,
        dev_token: Option<&str>,
        connections: Arc<Connections>,
    ) -> Self {
        let persisted = LruCacheStorage::new(limits.graphql_persisted_queries);
        let mut schema = Schema::build(Query, Mutation, Subscription)
            .data(store.clone())
            .limit_depth(limits.graphql_max_depth)
            .limit_complexity(limits.graphql_max_complexity);
        if !conveniences.introspection {
            schema = schema.disable_introspection();
        }
        if !conveniences.suggestions {
            schema = schema.disable_suggestions();
        }
        let schema = schema.finish();
        GraphqlState(Arc::new(GraphqlShared {
            schema,
            auth,
            store,
            documents: Arc::new(Documents::new(
                cost::DocumentLimits {
                    max_tokens: limits.graphql_max_tokens,
                    max_selections: limits.graphql_max_selections,
                    max_directives: limits.graphql_max_directives,
                },
                hot::ExecutorLimits {
                    max_depth: limits.graphql_max_depth,
                    max_complexity: limits.graphql_max_complexity,
                },
            )),
            graphiql_html: conveniences
                .graphiql
                .then(|| graphiql::page(dev_token).into()),
            body_limit,
            max_batch: limits.graphql_max_batch,
            persisted,
            connection_init_timeout: limits.graphql_ws_init_timeout,
            execution_timeout: limits.graphql_execution_timeout,
            connections,
        }))
    }
}

impl GraphqlState {
    /// A request's batch loader, which `Query.setting` reads through.
    fn store_loader(&self) -> Arc<async_graphql::dataloader::DataLoader<loaders::StoreLoader>> {
        Arc::new(async_graphql::dataloader::DataLoader::new(
            loaders::StoreLoader {
                store: self.store.clone(),
            },
            tokio::spawn,
        ))
    }
}

/// `/graphql` (POST: any operation; GET: a query, GraphiQL for a browser, or a WebSocket) and
/// GraphiQL's assets.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/graphql", get(http::get).post(http::post))
        .route("/graphql/assets/{name}", get(graphiql::asset))
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, Subscription).finish().sdl()
}
