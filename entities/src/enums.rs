//! The enums stored in string columns. Each value is written to the database exactly as the
//! GraphQL contract spells it (`TOKEN_BUDGET`, `FAILED_POLICY`, …), and serde uses the same
//! spelling, so a value reads the same in the database, in JSON and in the API.
//!
//! Every enum also has `as_str()`, `Display` and `FromStr` (case-sensitive, the stored spelling).

use std::{fmt, str::FromStr};

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// The error of `FromStr` on one of these enums: the value that is not a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariant {
    pub enum_name: &'static str,
    pub value: String,
}

impl fmt::Display for UnknownVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a {}", self.value, self.enum_name)
    }
}

impl std::error::Error for UnknownVariant {}

macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:tt ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize,
            Deserialize,
        )]
        #[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[sea_orm(string_value = $value)]
                #[serde(rename = $value)]
                $variant,
            )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and API) spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($value => Ok($name::$variant),)+
                    _ => Err(UnknownVariant {
                        enum_name: stringify!($name),
                        value: s.to_owned(),
                    }),
                }
            }
        }
    };
}

string_enum! {
    /// What a policy limits; decides the shape of its `rule`.
    PolicyKind {
        TokenBudget = "TOKEN_BUDGET",
        CostBudget = "COST_BUDGET",
        StepLimit = "STEP_LIMIT",
        RateLimit = "RATE_LIMIT",
        DurationLimit = "DURATION_LIMIT",
        ContentRule = "CONTENT_RULE",
        ToolAllowlist = "TOOL_ALLOWLIST",
        Expression = "EXPRESSION",
    }
}

string_enum! {
    /// Whether a policy decides (`ENFORCE`) or only records what it would have done (`SHADOW`).
    PolicyMode {
        Enforce = "ENFORCE",
        Shadow = "SHADOW",
    }
}

string_enum! {
    /// What a violated policy does to the run.
    PolicyAction {
        Block = "BLOCK",
        Warn = "WARN",
        /// Hold the step until a person approves or denies it (or its approval times out).
        RequireApproval = "REQUIRE_APPROVAL",
    }
}

string_enum! {
    /// Declared from least to most severe, so `Ord` compares by severity.
    #[derive(PartialOrd, Ord)]
    Severity {
        Low = "LOW",
        Medium = "MEDIUM",
        High = "HIGH",
        Critical = "CRITICAL",
    }
}

impl Severity {
    /// The integer stored beside the severity (`severity_rank`) so SQL can filter
    /// `severity_rank >= minSeverity.rank()`: LOW = 1, MEDIUM = 2, HIGH = 3, CRITICAL = 4.
    pub const fn rank(self) -> i32 {
        match self {
            Severity::Low => 1,
            Severity::Medium => 2,
            Severity::High => 3,
            Severity::Critical => 4,
        }
    }

    /// The severity with this rank, if any.
    pub const fn from_rank(rank: i32) -> Option<Self> {
        match rank {
            1 => Some(Severity::Low),
            2 => Some(Severity::Medium),
            3 => Some(Severity::High),
            4 => Some(Severity::Critical),
            _ => None,
        }
    }
}

string_enum! {
    RunStatus {
        Queued = "QUEUED",
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        FailedPolicy = "FAILED_POLICY",
        Cancelled = "CANCELLED",
        /// A step is held for approval; the run takes no other step until it is decided.
        AwaitingApproval = "AWAITING_APPROVAL",
    }
}

impl RunStatus {
    /// Whether the run has ended (no more steps are accepted).
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded
                | RunStatus::Failed
                | RunStatus::FailedPolicy
                | RunStatus::Cancelled
        )
    }
}

string_enum! {
    TerminationReason {
        Completed = "COMPLETED",
        PolicyBlock = "POLICY_BLOCK",
        BudgetExceeded = "BUDGET_EXCEEDED",
        RateLimited = "RATE_LIMITED",
        UserAbort = "USER_ABORT",
        SystemFailure = "SYSTEM_FAILURE",
        Timeout = "TIMEOUT",
    }
}

string_enum! {
    StepType {
        LlmCall = "LLM_CALL",
        ToolCall = "TOOL_CALL",
        Retrieval = "RETRIEVAL",
        Other = "OTHER",
    }
}

string_enum! {
    StepStatus {
        Ok = "OK",
        Warning = "WARNING",
        Violation = "VIOLATION",
    }
}

string_enum! {
    /// The decision on a step.
    DecisionAction {
        Continue = "CONTINUE",
        Warn = "WARN",
        Stop = "STOP",
        /// The step waits for a person's approval (a REQUIRE_APPROVAL policy, and no BLOCK).
        Hold = "HOLD",
    }
}

string_enum! {
    /// Where an approval stands.
    ApprovalStatus {
        Pending = "PENDING",
        Granted = "GRANTED",
        Denied = "DENIED",
        Expired = "EXPIRED",
        /// The run ended (cancelled, halted, failed) while the step waited.
        Cancelled = "CANCELLED",
    }
}
string_enum! {
    /// What an approval that nobody decided in time becomes.
    ApprovalOnTimeout {
        Deny = "DENY",
        Allow = "ALLOW",
    }
}
string_enum! {
    IncidentStatus {
        Open = "OPEN",
        Acknowledged = "ACKNOWLEDGED",
        Resolved = "RESOLVED",
    }
}

string_enum! {
    /// The outcome of a run's one evaluation record.
    EvaluationOutcome {
        NoViolation = "NO_VIOLATION",
        Violation = "VIOLATION",
        Advisory = "ADVISORY",
        NotApplicable = "NOT_APPLICABLE",
    }
}

string_enum! {
    EnforcementAction {
        Stopped = "STOPPED",
        Aborted = "ABORTED",
        Blocked = "BLOCKED",
        Warned = "WARNED",
    }
}

string_enum! {
    ExportKind {
        Evidence = "EVIDENCE",
        Soc2 = "SOC2",
        ExecutiveDebrief = "EXECUTIVE_DEBRIEF",
    }
}

string_enum! {
    ExportFormat {
        Json = "JSON",
        Pdf = "PDF",
    }
}

string_enum! {
    ExportStatus {
        Pending = "PENDING",
        Running = "RUNNING",
        Ready = "READY",
        Failed = "FAILED",
    }
}

string_enum! {
    AuditStatus {
        Pending = "PENDING",
        Running = "RUNNING",
        Completed = "COMPLETED",
        Failed = "FAILED",
    }
}

string_enum! {
    SimulationStatus {
        Pending = "PENDING",
        Running = "RUNNING",
        Completed = "COMPLETED",
        Failed = "FAILED",
    }
}

string_enum! {
    AuditVerdict {
        Pass = "PASS",
        Fail = "FAIL",
        Inconclusive = "INCONCLUSIVE",
    }
}

string_enum! {
    /// The result of one audit check.
    CheckResult {
        Pass = "PASS",
        Fail = "FAIL",
        Inconclusive = "INCONCLUSIVE",
    }
}

string_enum! {
    /// The state of one webhook delivery attempt.
    DeliveryStatus {
        Pending = "PENDING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_and_ranks_agree() {
        let mut all = Severity::ALL.to_vec();
        all.reverse();
        all.sort();
        assert_eq!(all, Severity::ALL);
        for pair in Severity::ALL.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].rank() < pair[1].rank());
        }
        for s in Severity::ALL {
            assert_eq!(Severity::from_rank(s.rank()), Some(*s));
        }
        assert_eq!(Severity::from_rank(0), None);
    }

    #[test]
    fn stored_spelling_round_trips() {
        assert_eq!(PolicyKind::TokenBudget.to_value(), "TOKEN_BUDGET");
        assert_eq!(ExportKind::Soc2.as_str(), "SOC2");
        assert_eq!(
            "FAILED_POLICY".parse::<RunStatus>(),
            Ok(RunStatus::FailedPolicy)
        );
        assert!("failed_policy".parse::<RunStatus>().is_err());
        assert_eq!(
            serde_json::to_string(&ExportKind::ExecutiveDebrief).ok(),
            Some("\"EXECUTIVE_DEBRIEF\"".to_owned())
        );
        for k in PolicyKind::ALL {
            assert_eq!(PolicyKind::try_from_value(&k.to_value()).ok(), Some(*k));
            assert_eq!(k.to_string().parse::<PolicyKind>(), Ok(*k));
        }
    }
}
