//! Instants as every interface writes them: RFC 3339 in UTC with milliseconds and `Z`, such as
//! `2026-11-22T09:30:00.000Z` (the GraphQL `DateTime` scalar, the REST contracts, exports).

use chrono::{DateTime, SecondsFormat, Utc};

/// `at` in the one form every interface writes.
pub fn rfc3339_millis(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
