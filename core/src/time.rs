//! Time as the service records it: UTC, millisecond precision (the API's `DateTime` contract).

use chrono::{DateTime, SubsecRound, Utc};

/// Now, truncated to milliseconds so what is stored equals what the API shows.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// An instant truncated to milliseconds.
pub fn to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(3)
}

/// An instant as the service writes it in JSON and hashed documents: RFC 3339, UTC,
/// milliseconds, `Z`.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
