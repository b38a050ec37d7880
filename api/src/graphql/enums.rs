//! GraphQL enums of the contract. They mirror the persistence enums of `governance-entities`
//! (which must not carry GraphQL derives) and convert both ways.

use async_graphql::Enum;
use governance_entities::enums as db;

macro_rules! mirror {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
        #[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl From<db::$name> for $name {
            fn from(v: db::$name) -> Self {
                match v { $(db::$name::$variant => $name::$variant),+ }
            }
        }

        impl From<$name> for db::$name {
            fn from(v: $name) -> Self {
                match v { $($name::$variant => db::$name::$variant),+ }
            }
        }
    };
}

mirror!(
    /// Where a run is in its life.
    RunStatus {
        /// Accepted, not started.
        Queued,
        /// Executing; steps are being checked.
        Running,
        /// Ended normally.
        Succeeded,
        /// Ended with an error reported by the integrator.
        Failed,
        /// Stopped by governance at the step that violated a BLOCK policy.
        FailedPolicy,
        /// Aborted by a user.
        Cancelled,
        /// A step is held for approval (a REQUIRE_APPROVAL policy); the run takes no other step
        /// until it is approved, denied or expires.
        AwaitingApproval,
    }
);

mirror!(
    /// Why a run ended.
    TerminationReason {
        /// The integrator reported success.
        Completed,
        /// A BLOCK policy (content, tools, expression, step limit) stopped the run.
        PolicyBlock,
        /// A token or cost budget was exceeded.
        BudgetExceeded,
        /// Too many steps in the rate-limit window.
        RateLimited,
        /// A user cancelled the run.
        UserAbort,
        /// The integrator reported a failure, or the service failed closed.
        SystemFailure,
        /// The run exceeded its duration limit (also when it fell silent).
        Timeout,
    }
);

mirror!(
    /// The outcome of a run's evaluation record.
    EvaluationOutcome {
        /// Policies applied and none was violated.
        NoViolation,
        /// The run was stopped by a BLOCK policy.
        Violation,
        /// Only WARN policies fired: a candidate for a draft policy change.
        Advisory,
        /// No policy applied to the run.
        NotApplicable,
    }
);

mirror!(
    /// What a policy checks.
    PolicyKind {
        /// `{"maxTokens": n}`: the run's tokens may not exceed n.
        TokenBudget,
        /// `{"maxCostMicros": n}`: the run's cost may not exceed n micro-dollars.
        CostBudget,
        /// `{"maxSteps": n}`: the run may not take more than n steps.
        StepLimit,
        /// `{"maxSteps": n, "windowSeconds": w}`: at most n steps in any trailing w seconds.
        RateLimit,
        /// `{"maxSeconds": n}`: the run may not last longer than n seconds (silent runs too).
        DurationLimit,
        /// `{"patterns": ["regex", …]}`: a step's content may not match any pattern.
        ContentRule,
        /// `{"tools": ["name", …]}`: a TOOL_CALL step's tool must be listed.
        ToolAllowlist,
        /// `{"expression": "CEL"}`: violated when the expression over `run` and `step` is true.
        Expression,
    }
);

mirror!(
    /// Whether a policy decides, or only records what it would have done.
    PolicyMode {
        /// It takes part in every step's decision (stops or warns runs).
        Enforce,
        /// It is evaluated on every step and what it would have done is recorded (with the
        /// decision and in the hash chain), but it never changes a decision, opens an incident
        /// or stops a run. Move it to ENFORCE (a new version) once it has proven itself.
        Shadow,
    }
);

mirror!(
    /// What happens when a policy is violated.
    PolicyAction {
        /// Stop the run at the violating step.
        Block,
        /// Let the run continue; record a warning.
        Warn,
        /// Hold the step (decision HOLD) until an APPROVER key approves or denies it, or its
        /// time runs out (`rule.approval: {timeoutSeconds, onTimeout: DENY | ALLOW}`; an hour
        /// and DENY unless given).
        RequireApproval,
    }
);

mirror!(
    /// How serious a violation is.
    Severity {
        /// Informational.
        Low,
        /// Needs attention.
        Medium,
        /// Needs prompt attention.
        High,
        /// Needs immediate attention.
        Critical,
    }
);

mirror!(
    /// What kind of work a step was.
    StepType {
        /// A call to a language model.
        LlmCall,
        /// A call to a tool.
        ToolCall,
        /// A retrieval (search, RAG lookup).
        Retrieval,
        /// Anything else (also service-written steps such as a timeout).
        Other,
    }
);

mirror!(
    /// The outcome of checking a step.
    StepStatus {
        /// No policy violated.
        Ok,
        /// Only WARN policies violated.
        Warning,
        /// A BLOCK policy violated: the run stopped here.
        Violation,
    }
);

mirror!(
    /// The decision for a step.
    DecisionAction {
        /// No policy violated: go on.
        Continue,
        /// Only WARN policies violated: go on, warned.
        Warn,
        /// A BLOCK policy violated: the run is stopped at this step.
        Stop,
        /// A REQUIRE_APPROVAL policy violated (and no BLOCK): wait. Send the same step again
        /// (same index, same content) to get its final decision once the approval is decided.
        Hold,
    }
);

mirror!(
    /// Where an approval stands.
    ApprovalStatus {
        /// Waiting for an APPROVER.
        Pending,
        /// Approved: the held step continues.
        Granted,
        /// Denied: the run stopped at the held step.
        Denied,
        /// Nobody decided in time: the policy's `onTimeout` applied.
        Expired,
        /// The run ended (cancelled, halted, or reported FAILED) while the step waited: the
        /// step did not proceed, and there is nothing left to decide.
        Cancelled,
    }
);

mirror!(
    /// What a held step becomes when nobody decides it in time.
    ApprovalOnTimeout {
        /// The run stops at the step (`TIMEOUT`).
        Deny,
        /// The step continues.
        Allow,
    }
);

mirror!(
    /// Where an incident is in its handling.
    IncidentStatus {
        /// Opened, nobody has taken it yet.
        Open,
        /// Someone is on it.
        Acknowledged,
        /// Closed, with a note.
        Resolved,
    }
);

mirror!(
    /// What enforcement did.
    EnforcementAction {
        /// The run was stopped by the policy.
        Stopped,
        /// The run was aborted.
        Aborted,
        /// A step reported after the run ended was refused.
        Blocked,
        /// A WARN policy was violated.
        Warned,
    }
);

mirror!(
    /// Which bundle an export holds.
    ExportKind {
        /// The run, incident, snapshot and every trace step with hashes.
        Evidence,
        /// Evidence plus control objectives, attestation and compliance period.
        #[graphql(name = "SOC2")]
        Soc2,
        /// A plain-language summary for executives.
        ExecutiveDebrief,
    }
);

mirror!(
    /// How an export is rendered.
    ExportFormat {
        /// Machine-readable JSON.
        Json,
        /// A PDF rendered by Typst.
        Pdf,
    }
);

mirror!(
    /// Where an export is.
    ExportStatus {
        /// Requested, waiting for a worker.
        Pending,
        /// Being built.
        Running,
        /// Built: download it.
        Ready,
        /// Failed for good; `error` says why.
        Failed,
    }
);

mirror!(
    /// Where an audit is.
    AuditStatus {
        /// Requested; the audit job has not finished.
        Pending,
        /// The audit job is checking.
        Running,
        /// The checks ran; `verdict` is set.
        Completed,
        /// The audit could not run; `error` says why.
        Failed,
    }
);

mirror!(
    /// The outcome of an audit.
    AuditVerdict {
        /// Every check passed: the rollout may proceed.
        Pass,
        /// At least one check failed.
        Fail,
        /// No check failed, but at least one could not decide.
        Inconclusive,
    }
);

mirror!(
    /// The result of one audit check.
    CheckResult {
        /// The check holds.
        Pass,
        /// The check does not hold.
        Fail,
        /// The input does not allow a decision.
        Inconclusive,
    }
);

mirror!(
    /// The state of one webhook delivery attempt.
    DeliveryStatus {
        /// Not answered yet.
        Pending,
        /// The endpoint answered 2xx.
        Succeeded,
        /// The endpoint answered otherwise, timed out, or could not be reached.
        Failed,
    }
);

/// What an API key may do. A call outside the key's roles is refused with `FORBIDDEN`, whose
/// `extensions.requiredRole` names the role it needs.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum KeyRole {
    /// Start runs, report steps, complete and cancel runs; read.
    Integrator,
    /// Decide approvals, acknowledge and resolve incidents; read.
    Approver,
    /// Everything: policies, webhooks, keys, halts, and all the other roles do.
    Admin,
    /// Read only (including requesting exports and audits).
    Reader,
}

impl From<governance_core::roles::KeyRole> for KeyRole {
    fn from(role: governance_core::roles::KeyRole) -> Self {
        use governance_core::roles::KeyRole as Core;
        match role {
            Core::Integrator => KeyRole::Integrator,
            Core::Approver => KeyRole::Approver,
            Core::Admin => KeyRole::Admin,
            Core::Reader => KeyRole::Reader,
        }
    }
}
