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

use super::{account_settings, me_settings, preferences, settings_user, user_settings};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "settings-api legacy REST routes",
        description = "The REST routes that settings-api keeps for existing clients, each with \
                       the paths, status codes, bodies and error envelopes of the API those \
                       clients were written against. Every route reads and writes the same \
                       settings as the GraphQL API at /graphql."
    ),
    paths(
        me_settings::list,
        me_settings::read,
        me_settings::put,
        me_settings::delete,
        settings_user::read,
        settings_user::update,
        preferences::read,
        preferences::update,
        user_settings::read,
        user_settings::update,
        account_settings::read,
        account_settings::update,
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
