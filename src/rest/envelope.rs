//! One classification of REST failures, which each contract renders in its own envelope: a
//! contract implements [`Envelope`], and [`ApiError`] does the rest for every handler.

use std::marker::PhantomData;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    error::{Error, Violation},
    telemetry,
};

/// How one contract writes its errors.
pub(crate) trait Envelope: 'static {
    /// The status of a stale `If-Match`: 412 unless the contract's document names another.
    const STALE: StatusCode = StatusCode::PRECONDITION_FAILED;
    /// The message of the 404 for a path below the contract's routes that names nothing.
    const NO_SUCH_RESOURCE: &'static str = "no such resource";
    /// Whether the contract's document lists 415; where it does not, a body that is not
    /// declared as JSON is one more validation failure (400).
    const LISTS_UNSUPPORTED_MEDIA_TYPE: bool = false;

    /// The status to answer, where the contract's document lists another than the standard one.
    fn status(problem: &Problem) -> StatusCode {
        problem.status
    }

    /// The contract's error body.
    fn render(problem: &Problem) -> impl Serialize;
}

const NOT_JSON: &str = "the request body must be JSON, sent with `Content-Type: application/json`";

/// Why a REST request failed: a domain error, or a problem with the HTTP request itself.
#[derive(Debug)]
pub(crate) enum Failure {
    Domain(Error),
    /// A contract's own validation of a body, which reports every problem at once.
    Invalid(Vec<Violation>),
    UnsupportedMediaType,
    MethodNotAllowed {
        allow: &'static str,
    },
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure::Domain(err)
    }
}

/// A failure of a handler of the contract `E`, answered in `E`'s envelope.
pub(crate) struct ApiError<E>(Failure, PhantomData<fn() -> E>);

impl<E, F: Into<Failure>> From<F> for ApiError<E> {
    fn from(failure: F) -> Self {
        ApiError(failure.into(), PhantomData)
    }
}

impl<E: Envelope> IntoResponse for ApiError<E> {
    fn into_response(self) -> Response {
        let failure = match self.0 {
            Failure::UnsupportedMediaType if !E::LISTS_UNSUPPORTED_MEDIA_TYPE => {
                Failure::Domain(Error::bad_input("Content-Type", "mediaType", NOT_JSON))
            }
            failure => failure,
        };
        let mut problem = Problem::new(failure, E::STALE);
        problem.status = E::status(&problem);
        let body = E::render(&problem);
        problem.respond(body)
    }
}

/// What a failure means to a client, for an envelope to render: the status, a message that is
/// safe to show, the rule broken (for bad input) and, for server-side failures, the correlation
/// id under which the cause was logged.
pub(crate) struct Problem {
    pub status: StatusCode,
    pub kind: Kind,
    pub message: String,
    /// What is wrong with the input, for bad input; at least one then.
    pub violations: Vec<Violation>,
    pub correlation_id: Option<String>,
    allow: Option<&'static str>,
    /// Seconds for `Retry-After`, when the client should wait.
    retry_after: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Unauthenticated,
    Forbidden,
    BadInput,
    NotFound,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
    MethodNotAllowed,
    Unavailable,
    Internal,
}

impl Problem {
    /// Classifies a failure. `stale` is the status of a stale `If-Match`. Logs server-side
    /// causes once.
    fn new(failure: Failure, stale: StatusCode) -> Self {
        let of_request = |status, kind, message| Problem {
            status,
            kind,
            message,
            violations: Vec::new(),
            correlation_id: None,
            allow: None,
            retry_after: None,
        };
        match failure {
            Failure::Domain(err) => Problem::of(err, stale),
            Failure::Invalid(violations) => {
                let messages: Vec<&str> = violations.iter().map(|v| v.message.as_str()).collect();
                let message = messages.join("; ");
                Problem {
                    violations,
                    ..of_request(StatusCode::BAD_REQUEST, Kind::BadInput, message)
                }
            }
            Failure::UnsupportedMediaType => of_request(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Kind::UnsupportedMediaType,
                NOT_JSON.into(),
            ),
            Failure::MethodNotAllowed { allow } => Problem {
                allow: Some(allow),
                ..of_request(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Kind::MethodNotAllowed,
                    format!("this route supports {allow}"),
                )
            },
        }
    }

    fn of(err: Error, stale: StatusCode) -> Self {
        let disclosure = err.disclose(telemetry::correlation_id);
        let kind = match &err {
            Error::Unauthenticated(_) => Kind::Unauthenticated,
            Error::Forbidden(_) | Error::Locked { .. } => Kind::Forbidden,
            Error::BadInput(_) => Kind::BadInput,
            Error::NotFound(_) | Error::CursorExpired(_) => Kind::NotFound,
            Error::Conflict { .. } => Kind::Conflict,
            Error::PreconditionFailed { .. } => Kind::PreconditionFailed,
            Error::PayloadTooLarge { .. } => Kind::PayloadTooLarge,
            Error::RateLimited { .. } => Kind::RateLimited,
            Error::Unavailable(_) | Error::TimedOut { .. } => Kind::Unavailable,
            Error::Internal(_) => Kind::Internal,
        };
        let status = match kind {
            Kind::PreconditionFailed => stale,
            _ => err.status(),
        };
        let retry_after = err.retry_after();
        let violations = match err {
            Error::BadInput(violation) => vec![violation],
            _ => Vec::new(),
        };
        Problem {
            status,
            kind,
            message: disclosure.message,
            violations,
            correlation_id: disclosure.correlation_id,
            allow: None,
            retry_after,
        }
    }

    /// The response: the envelope's body under this problem's status and headers.
    fn respond(&self, body: impl Serialize) -> Response {
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.kind == Kind::Unauthenticated {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
