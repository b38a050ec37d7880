//! The `approval` field of a REQUIRE_APPROVAL policy's rule: how long a held step waits for a
//! person, and what it becomes when nobody decides in time. Every kind of rule takes it, beside
//! the kind's own keys, and only REQUIRE_APPROVAL policies do.

use governance_entities::enums::ApprovalOnTimeout;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{CoreError, CoreResult};

/// The rule key that carries the terms.
pub(crate) const KEY: &str = "approval";
/// A held step waits this long unless the policy says otherwise (one hour).
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 3_600;
/// The longest a held step may wait (seven days).
pub const MAX_TIMEOUT_SECONDS: i64 = 7 * 24 * 3_600;

/// How a held step is decided when nobody decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalTerms {
    pub timeout_seconds: i64,
    pub on_timeout: ApprovalOnTimeout,
}

impl Default for ApprovalTerms {
    fn default() -> Self {
        Self {
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            on_timeout: ApprovalOnTimeout::Deny,
        }
    }
}

impl ApprovalTerms {
    /// The terms as stored in the rule (every key present).
    pub fn to_json(self) -> Value {
        json!({ "timeoutSeconds": self.timeout_seconds, "onTimeout": self.on_timeout.as_str() })
    }

    /// Parse `approval` as written by a caller: both keys optional (an hour, DENY).
    fn parse(value: &Value) -> CoreResult<Self> {
        let field = |key: &str| format!("input.rule.{KEY}.{key}");
        let Value::Object(map) = value else {
            return Err(CoreError::bad_field(
                format!("input.rule.{KEY}"),
                r#"must be an object such as {"timeoutSeconds": 3600, "onTimeout": "DENY"}"#,
            ));
        };
        if let Some(unknown) = map
            .keys()
            .filter(|k| !["timeoutSeconds", "onTimeout"].contains(&k.as_str()))
            .min()
        {
            return Err(CoreError::bad_field(
                field(unknown),
                "unknown key; `approval` takes timeoutSeconds and onTimeout (DENY or ALLOW)",
            ));
        }
        let mut terms = Self::default();
        if let Some(timeout) = map.get("timeoutSeconds") {
            terms.timeout_seconds = timeout
                .as_i64()
                .filter(|t| (1..=MAX_TIMEOUT_SECONDS).contains(t))
                .ok_or_else(|| {
                    CoreError::bad_field(
                        field("timeoutSeconds"),
                        format!(
                            "must be a whole number of seconds from 1 to {MAX_TIMEOUT_SECONDS} (seven days); got {timeout}"
                        ),
                    )
                })?;
        }
        if let Some(on_timeout) = map.get("onTimeout") {
            terms.on_timeout = on_timeout
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    CoreError::bad_field(
                        field("onTimeout"),
                        format!("must be \"DENY\" or \"ALLOW\"; got {on_timeout}"),
                    )
                })?;
        }
        Ok(terms)
    }
}

/// Split `approval` off a rule: the kind's own rule, and the terms if the rule has them.
pub(crate) fn split(rule: &Value) -> CoreResult<(Value, Option<ApprovalTerms>)> {
    match rule {
        Value::Object(map) if map.contains_key(KEY) => {
            let mut own: Map<String, Value> = map.clone();
            let terms = own
                .remove(KEY)
                .map(|v| ApprovalTerms::parse(&v))
                .transpose()?;
            Ok((Value::Object(own), terms))
        }
        other => Ok((other.clone(), None)),
    }
}
