//! How a contract mounts its routes, so that nothing under its paths can escape its envelope.

use std::marker::PhantomData;

use axum::{
    Router,
    routing::{MethodRouter, any},
};

use super::envelope::{ApiError, Envelope, Failure};
use crate::{app::AppState, error::Error};

/// The routes of the contract `E`. A method a route does not support is `E`'s 405, and every
/// path below a route that names nothing (a trailing slash, extra segments) is `E`'s 404.
pub(crate) struct Routes<E> {
    router: Router<AppState>,
    paths: Vec<&'static str>,
    envelope: PhantomData<fn() -> E>,
}

impl<E: Envelope> Routes<E> {
    pub fn new() -> Self {
        Routes {
            router: Router::new(),
            paths: Vec::new(),
            envelope: PhantomData,
        }
    }

    /// Serves `methods` at `path`; `allow` names them for the `Allow` header of a 405.
    pub fn route(
        mut self,
        path: &'static str,
        allow: &'static str,
        methods: MethodRouter<AppState>,
    ) -> Self {
        let methods = methods.fallback(move || async move {
            ApiError::<E>::from(Failure::MethodNotAllowed { allow })
        });
        self.router = self.router.route(path, methods);
        self.paths.push(path);
        self
    }

    pub fn finish(self) -> Router<AppState> {
        let mut router = self.router;
        for below in below_routes(&self.paths) {
            router = router.route(
                &below,
                any(|| async { ApiError::<E>::from(Error::NotFound(E::NO_SUCH_RESOURCE.into())) }),
            );
        }
        router
    }
}

/// The paths below `paths` that name nothing: each with a trailing slash, and everything
/// further down, except where a route has a parameter right below (its own paths cover it).
fn below_routes(paths: &[&str]) -> Vec<String> {
    let mut below = Vec::new();
    for path in paths {
        let slash = format!("{path}/");
        if !paths.contains(&slash.as_str()) {
            below.push(slash.clone());
        }
        let parameter_below = paths
            .iter()
            .any(|other| other.starts_with(&format!("{slash}{{")));
        if !parameter_below {
            below.push(format!("{slash}{{*rest}}"));
        }
    }
    below
}

#[cfg(test)]
mod tests {
    use super::below_routes;

    #[test]
    fn every_route_gets_its_trailing_slash_and_what_is_below() {
        assert_eq!(
            below_routes(&["/settings/user"]),
            ["/settings/user/", "/settings/user/{*rest}"]
        );
    }

    #[test]
    fn a_parameter_below_a_route_keeps_its_own_paths() {
        let paths = ["/me/settings", "/me/settings/{key}"];
        assert_eq!(
            below_routes(&paths),
            [
                "/me/settings/",
                "/me/settings/{key}/",
                "/me/settings/{key}/{*rest}"
            ]
        );
    }

    #[test]
    fn a_static_route_below_another_leaves_the_rest_to_the_catch_all() {
        let paths = ["/preferences", "/preferences/update"];
        assert_eq!(
            below_routes(&paths),
            [
                "/preferences/",
                "/preferences/{*rest}",
                "/preferences/update/",
                "/preferences/update/{*rest}"
            ]
        );
    }
}
