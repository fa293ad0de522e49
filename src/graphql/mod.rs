//! The GraphQL interface: schema, resolvers and the HTTP handler. Resolvers stay thin: parse the
//! arguments, call one store function, map the result.

mod documents;
mod errors;
pub mod graphiql;
mod http;
mod loaders;
mod mutation;
mod query;
mod subscription;
mod types;
mod websocket;

use std::sync::Arc;

use async_graphql::Schema;

pub use documents::Documents;
pub use errors::to_graphql_error;
pub use http::graphql;
pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;
pub use websocket::graphiql_or_websocket;

use crate::{config::Limits, settings::Store};

pub type AppSchema = Schema<Query, Mutation, Subscription>;

pub fn build_schema(store: Arc<Store>, limits: &Limits) -> AppSchema {
    Schema::build(Query, Mutation, Subscription)
        .data(store)
        .limit_depth(limits.graphql_max_depth)
        .limit_complexity(limits.graphql_max_complexity)
        .finish()
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, Subscription).finish().sdl()
}
