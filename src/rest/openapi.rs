//! `GET /openapi.json`: an OpenAPI 3.1 document of every legacy REST route, generated from the
//! handlers and the types they serialize, so that it cannot drift from the code.

use std::sync::LazyLock;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

use super::{c000_per_key, c001_partial, c002_preferences, c003_typed, c004_sparse, export};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "settings-api legacy REST routes",
        description = "The REST routes that settings-api keeps for existing clients, each with \
                       the paths, status codes, bodies and error envelopes of the API those \
                       clients were written against. Every route reads and writes the same \
                       settings as the GraphQL API at /graphql. Beside them, \
                       `/api/v1/me/export` downloads the caller's export document."
    ),
    paths(
        c000_per_key::list,
        c000_per_key::read,
        c000_per_key::put,
        c000_per_key::delete,
        c001_partial::read,
        c001_partial::update,
        c002_preferences::read,
        c002_preferences::update,
        c003_typed::read,
        c003_typed::update,
        c004_sparse::read,
        c004_sparse::update,
        export::export,
    ),
    modifiers(&BearerSchemes)
)]
struct LegacyApi;

/// The contracts name their bearer scheme differently; both are the same JWT.
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["bearerAuth", "JWT-auth"] {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.bearer_format = Some("JWT".into());
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    LegacyApi::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

pub async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}
