//! Domain errors as GraphQL errors with `extensions.code`. The crate turns off async-graphql's
//! conversion of any displayable error (feature `custom-error-conversion`), so `?` on a domain
//! error in a resolver always comes through here, and any other error must be mapped on purpose.

use async_graphql::{BatchResponse, ErrorExtensionValues, Response, ServerError};

use crate::{error::Error, telemetry};

impl From<Error> for async_graphql::Error {
    fn from(err: Error) -> Self {
        Self::from(&err)
    }
}

/// For errors shared between fields, such as a failed batch load.
impl From<&Error> for async_graphql::Error {
    fn from(err: &Error) -> Self {
        let server_error = server_error(err);
        let mut error = async_graphql::Error::new(server_error.message);
        error.extensions = server_error.extensions;
        error
    }
}

/// A request-level error, reported before or instead of execution.
pub fn server_error(err: &Error) -> ServerError {
    let disclosure = err.disclose(telemetry::correlation_id);
    let mut error = ServerError::new(disclosure.message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", err.code());
    match err {
        Error::BadInput(violation) => {
            extensions.set("field", violation.field.as_str());
            extensions.set("rule", violation.rule.as_ref());
            if let Some(pointer) = &violation.pointer {
                extensions.set("pointer", pointer.as_str());
            }
        }
        Error::Locked { key } => {
            extensions.set("field", key.as_str());
            extensions.set("rule", "locked");
        }
        Error::Conflict {
            current_version: Some(version),
            ..
        }
        | Error::PreconditionFailed {
            current_version: Some(version),
            ..
        } => extensions.set("currentVersion", *version),
        Error::PayloadTooLarge { limit, .. } => extensions.set("limit", *limit as u64),
        Error::RateLimited { retry_after_secs } => extensions.set("retryAfter", *retry_after_secs),
        _ => {}
    }
    if let Some(id) = disclosure.correlation_id {
        extensions.set("correlationId", id);
    }
    error.extensions = Some(extensions);
    error
}

/// Gives every error a code: errors raised by async-graphql itself (syntax, validation, limits,
/// argument coercion) are the client's to fix.
pub fn add_missing_codes(response: &mut BatchResponse) {
    match response {
        BatchResponse::Single(one) => add_missing_codes_to(one),
        BatchResponse::Batch(many) => many.iter_mut().for_each(add_missing_codes_to),
    }
}

/// [`add_missing_codes`] for one response, as each WebSocket message carries.
pub fn add_missing_codes_to(response: &mut Response) {
    for error in response.errors.iter_mut() {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() && error.message == "PersistedQueryNotFound" {
            // The code Apollo's persisted-query link looks for, to send the query again.
            extensions.set("code", "PERSISTED_QUERY_NOT_FOUND");
        }
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_USER_INPUT");
            let rule = if error.message.contains("nested too deep") {
                Some("maxDepth")
            } else if error.message.contains("too complex") {
                Some("maxComplexity")
            } else {
                None
            };
            if let Some(rule) = rule {
                extensions.set("field", "query");
                extensions.set("rule", rule);
            }
        }
    }
}
