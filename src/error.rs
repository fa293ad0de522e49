//! The one domain error type, with the HTTP status and the code of each failure and what a
//! client may be told of it. GraphQL renders it in `graphql::errors`, each REST contract in its
//! own envelope through `rest::envelope`.

use std::borrow::Cow;

use axum::http::StatusCode;
use sea_orm::DbErr;

/// The rule a piece of input broke, so that clients can react without parsing messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The input that is wrong: an argument name, a setting key, or a key plus a JSON pointer.
    pub field: String,
    /// A short, stable name of the rule: `minLength`, `maxLength`, `noControlCharacters`, or the
    /// JSON Schema keyword that a catalog key's value broke.
    pub rule: Cow<'static, str>,
    /// Where inside the value the rule broke, as a JSON pointer, when it is about a value.
    pub pointer: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unauthenticated(AuthFailure),
    #[error("{0}")]
    Forbidden(String),
    /// A write to a key that the organisation locked.
    #[error(
        "`{key}` is locked by the organisation: its value is set for everyone and cannot be changed"
    )]
    Locked { key: String },
    #[error("{}", .0.message)]
    BadInput(Violation),
    #[error("{0}")]
    NotFound(String),
    /// The write kept racing with other writers; retrying may succeed.
    #[error("{message}")]
    Conflict {
        message: String,
        current_version: Option<i32>,
    },
    /// A precondition of the request (an expected version, an ETag) does not hold; nothing was
    /// written.
    #[error("{message}")]
    PreconditionFailed {
        message: String,
        current_version: Option<i32>,
    },
    #[error("{message}")]
    PayloadTooLarge { message: String, limit: usize },
    /// The caller sent more requests than its rate allows; it may retry after this long.
    #[error("too many requests: retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    /// A feed cursor older than the retained history: take a new snapshot.
    #[error("{0}")]
    CursorExpired(String),
    /// A query ran past the execution timeout and was stopped.
    #[error("the operation did not finish within {} ms and was stopped; ask for less at a time", .after.as_millis())]
    TimedOut { after: std::time::Duration },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Why a request carried no usable identity. The text is safe to show to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing bearer token")]
    Missing,
    #[error("the Authorization header is not a bearer token")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is invalid")]
    Invalid,
}

impl Error {
    pub fn bad_input(
        field: impl Into<String>,
        rule: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Error::BadInput(Violation {
            field: field.into(),
            rule: rule.into(),
            pointer: None,
            message: message.into(),
        })
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Error::Internal(err.into())
    }

    /// The `Retry-After` of the answer, in seconds, when the client should wait.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The stable code of the GraphQL `extensions.code`, one per kind of failure.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated(_) => "UNAUTHENTICATED",
            Error::Forbidden(_) | Error::Locked { .. } => "FORBIDDEN",
            Error::BadInput(_) => "BAD_USER_INPUT",
            Error::NotFound(_) => "NOT_FOUND",
            Error::Conflict { .. } | Error::PreconditionFailed { .. } => "CONFLICT",
            Error::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::TimedOut { .. } => "TIMEOUT",
            Error::CursorExpired(_) => "CURSOR_EXPIRED",
            Error::Internal(_) => "INTERNAL",
        }
    }

    /// The HTTP status of each failure, for every interface; a REST contract answers another
    /// only where its document names one.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::Locked { .. } => StatusCode::FORBIDDEN,
            Error::BadInput(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) | Error::TimedOut { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::CursorExpired(_) => StatusCode::GONE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client may be told. A server-side cause is logged under the request's
    /// correlation id (`correlation_id` is asked only then) and replaced by that id; other
    /// errors are the client's to fix, their message is safe to show, and nothing is logged.
    pub fn disclose(&self, correlation_id: impl FnOnce() -> String) -> Disclosure {
        let rule = match self {
            Error::BadInput(violation) => violation.rule.to_string(),
            Error::Locked { .. } => "locked".to_owned(),
            _ => String::new(),
        };
        // Every error answered, by code (and the rule broken, for bad input: the limits a
        // request ran into among them).
        metrics::counter!("settings_api_errors_total", "code" => self.code(), "rule" => rule)
            .increment(1);
        let (message, id) = match self {
            Error::Unavailable(cause) if refuses_writes(cause) => {
                let id = correlation_id();
                tracing::error!(correlation_id = %id, error = %cause, "the database refuses writes");
                let message = format!(
                    "the database takes no writes right now (it is read-only or out of space); \
                     reads still work; retry later (correlation id {id})"
                );
                (message, id)
            }
            Error::Unavailable(cause) => {
                let id = correlation_id();
                tracing::error!(correlation_id = %id, error = %cause, "database unavailable");
                let message =
                    format!("the database is unavailable; retry later (correlation id {id})");
                (message, id)
            }
            Error::Internal(cause) => {
                let id = correlation_id();
                tracing::error!(correlation_id = %id, error = ?cause, "internal error");
                (format!("internal error (correlation id {id})"), id)
            }
            _ => {
                return Disclosure {
                    message: self.to_string(),
                    correlation_id: None,
                };
            }
        };
        Disclosure {
            message,
            correlation_id: Some(id),
        }
    }
}

/// What a client is told of an error: see [`Error::disclose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclosure {
    pub message: String,
    /// For server-side failures: the id under which the cause was logged.
    pub correlation_id: Option<String>,
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        if is_unavailable(&err) {
            Error::Unavailable(err)
        } else {
            Error::Internal(err.into())
        }
    }
}

/// Whether the database could not be reached, as opposed to refusing a statement. Pooled
/// connections are not pinged before use, so a lost server also shows up as a failed query.
pub(crate) fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx::Error as Sqlx};
    let sqlx = match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Query(RuntimeErr::SqlxError(sqlx)) | DbErr::Exec(RuntimeErr::SqlxError(sqlx)) => {
            sqlx
        }
        _ => return false,
    };
    match sqlx.as_ref() {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => true,
        // SQLSTATE class 08 is a connection exception; 57P0x an administrator or crash shutdown
        // (57P01 terminates the sessions of a database being dropped); 3D000: no such database.
        Sqlx::Database(db) => {
            db.code().is_some_and(|code| {
                code.starts_with("08") || code.starts_with("57P0") || code == "3D000"
            }) || refuses_writes(err)
        }
        _ => false,
    }
}

/// Whether the database refused a write because it takes none now: read-only (PostgreSQL
/// 25006: a standby or `default_transaction_read_only`; SQLite `SQLITE_READONLY`) or out of
/// space (PostgreSQL 53100; SQLite `SQLITE_FULL`).
pub fn refuses_writes(err: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx::Error as Sqlx};
    let (DbErr::Query(RuntimeErr::SqlxError(sqlx)) | DbErr::Exec(RuntimeErr::SqlxError(sqlx))) =
        err
    else {
        return false;
    };
    let Sqlx::Database(db) = sqlx.as_ref() else {
        return false;
    };
    let Some(code) = db.code() else {
        return false;
    };
    if db
        .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // SQLite's extended result codes keep the primary code in the low byte.
        return code
            .parse::<i32>()
            .is_ok_and(|code| matches!(code & 0xff, 8 | 13));
    }
    matches!(code.as_ref(), "25006" | "53100")
}

impl From<sea_orm::TransactionError<Error>> for Error {
    fn from(err: sea_orm::TransactionError<Error>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(inner) => inner,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
