//! Scalars of the contract: `DateTime` is RFC 3339, UTC, millisecond precision (`…T12:00:00.000Z`).

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::{SecondsFormat, Utc};

/// An instant: RFC 3339 in UTC with milliseconds, e.g. `2026-11-21T09:30:00.000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub chrono::DateTime<Utc>);

/// An instant, RFC 3339 in UTC with millisecond precision, e.g. `2026-11-21T09:30:00.000Z`.
#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| DateTime(governance_core::time::to_millis(t.with_timezone(&Utc))))
                .map_err(|e| {
                    InputValueError::custom(format!(
                        "`{s}` is not an RFC 3339 date-time ({e}); e.g. 2026-11-21T09:30:00.000Z"
                    ))
                }),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl From<chrono::DateTime<Utc>> for DateTime {
    fn from(t: chrono::DateTime<Utc>) -> Self {
        DateTime(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_utc_millis_and_parses_offsets() {
        let parsed =
            <DateTime as ScalarType>::parse(Value::from("2026-11-21T10:30:00.123456+01:00"))
                .expect("valid");
        assert_eq!(parsed.to_value(), Value::from("2026-11-21T09:30:00.123Z"));
        assert!(<DateTime as ScalarType>::parse(Value::from("yesterday")).is_err());
    }
}
