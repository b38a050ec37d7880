//! The policy engine: rule validation, snapshot compilation and step evaluation. Pure: no
//! database, no clock, no I/O — the same snapshot, run state and step always give the same
//! [`Evaluation`], which is what lets `verifyRun` replay a recorded trace.
//!
//! - [`validate_rule`] checks a rule when a policy is written (`rules.rs`, `cel.rs`).
//! - [`CompiledSnapshot::compile`] builds every regex, tool set and CEL program of a snapshot once;
//!   [`SnapshotCache`] keeps compiled snapshots by content hash (`compiled.rs`).
//! - [`evaluate`] checks one step "after applying it" and decides CONTINUE / WARN / STOP
//!   (`evaluate.rs`). Content matches are masked in evidence (`mask.rs`).

mod approval_terms;
mod cel;
mod compiled;
mod evaluate;
mod mask;
mod rules;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use governance_entities::enums::{
    DecisionAction, PolicyAction, PolicyKind, Severity, StepStatus, StepType, TerminationReason,
};
use serde::Serialize;

pub use approval_terms::{ApprovalTerms, DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS};
pub use compiled::{CompiledPolicy, CompiledSnapshot, SnapshotCache, silent_run_limit_seconds};
pub use evaluate::evaluate;
pub(crate) use evaluate::{elapsed_ms, past_duration_limit};
pub use rules::rule_shape;

use crate::error::{CoreError, CoreResult};

/// Validate a policy rule for its kind and action when a policy is written. Returns the
/// normalised rule (keys as the contract spells them, values as given; a REQUIRE_APPROVAL
/// policy's `approval` with every key, defaults filled in). Errors are `BAD_USER_INPUT` with the
/// field path, e.g. `input.rule.maxTokens` or `input.rule.patterns[2]`, and say how to fix it.
pub fn validate_rule(
    kind: PolicyKind,
    action: PolicyAction,
    rule: &serde_json::Value,
) -> CoreResult<serde_json::Value> {
    let (own, terms) = approval_terms::split(rule)?;
    let parsed = rules::parse_rule(kind, &own)?;
    if let rules::Rule::Expression { expression } = &parsed {
        let program = cel::parse(expression)
            .map_err(|err| CoreError::bad_field("input.rule.expression", err))?;
        cel::check_sample(&program)
            .map_err(|err| CoreError::bad_field("input.rule.expression", err))?;
    }
    let mut normalised = parsed.to_json();
    match (action, terms) {
        (PolicyAction::RequireApproval, terms) => {
            normalised[approval_terms::KEY] = terms.unwrap_or_default().to_json();
        }
        (other, Some(_)) => {
            return Err(CoreError::bad_field(
                "input.rule.approval",
                format!(
                    "only REQUIRE_APPROVAL policies take `approval`; this policy's action is {other}"
                ),
            ));
        }
        (_, None) => {}
    }
    Ok(normalised)
}

/// A stored rule as it stands under another action: `approval` dropped unless the action is
/// REQUIRE_APPROVAL, and added (an hour, DENY) when it is and the rule has none.
pub fn rule_for_action(
    kind: PolicyKind,
    action: PolicyAction,
    rule: &serde_json::Value,
) -> CoreResult<serde_json::Value> {
    let mut rule = rule.clone();
    if action != PolicyAction::RequireApproval
        && let serde_json::Value::Object(map) = &mut rule
    {
        map.remove(approval_terms::KEY);
    }
    validate_rule(kind, action, &rule)
}

/// Would a rule of `kind` changed from `old` to `new` stop a run that the old one let through?
/// Numeric limits tighten when lowered (a rate window when widened), content rules when a
/// pattern is added, allowlists when a tool is removed; a changed expression, or a rule that
/// does not parse, counts as tightening (it cannot be told apart).
pub fn rule_tightens(kind: PolicyKind, old: &serde_json::Value, new: &serde_json::Value) -> bool {
    use rules::Rule;
    let (Ok(old), Ok(new)) = (rules::parse_rule(kind, old), rules::parse_rule(kind, new)) else {
        return true;
    };
    match (old, new) {
        (Rule::TokenBudget { max_tokens: a }, Rule::TokenBudget { max_tokens: b }) => b < a,
        (Rule::CostBudget { max_cost_micros: a }, Rule::CostBudget { max_cost_micros: b }) => b < a,
        (Rule::StepLimit { max_steps: a }, Rule::StepLimit { max_steps: b }) => b < a,
        (
            Rule::RateLimit {
                max_steps: a,
                window_seconds: wa,
            },
            Rule::RateLimit {
                max_steps: b,
                window_seconds: wb,
            },
        ) => b < a || wb > wa,
        (Rule::DurationLimit { max_seconds: a }, Rule::DurationLimit { max_seconds: b }) => b < a,
        (Rule::Content { patterns: a }, Rule::Content { patterns: b }) => {
            b.iter().any(|p| !a.contains(p))
        }
        (Rule::ToolAllowlist { tools: a }, Rule::ToolAllowlist { tools: b }) => {
            a.iter().any(|t| !b.contains(t))
        }
        (Rule::Expression { expression: a }, Rule::Expression { expression: b }) => a != b,
        _ => true,
    }
}

/// The run as it was BEFORE this step.
#[derive(Debug, Clone, Copy)]
pub struct RunState<'a> {
    pub run_id: &'a str,
    pub workflow_id: &'a str,
    pub agent: Option<&'a str>,
    pub started_at: DateTime<Utc>,
    pub tokens_used: i64,
    pub cost_micros: i64,
    pub step_count: i64,
    pub is_synthetic: bool,
    pub metadata: Option<&'a serde_json::Value>,
    /// Timestamps of earlier steps of the run that fall inside the longest rate window ending at
    /// this step's timestamp (may contain older ones: evaluation filters them).
    pub recent_step_timestamps: &'a [DateTime<Utc>],
}

/// What the step's content is: the text (live), or — when replaying a recorded step whose text
/// is not stored — the ids of the CONTENT_RULE policies that matched when it was recorded.
#[derive(Debug, Clone, Copy)]
pub enum ContentInput<'a> {
    Text(Option<&'a str>),
    Recorded(&'a [String]),
}

/// The step being reported.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    pub index: i64,
    pub step_type: StepType,
    pub tokens: i64,
    pub cost_micros: i64,
    pub tool_name: Option<&'a str>,
    pub content: ContentInput<'a>,
    pub timestamp: DateTime<Utc>,
}

/// One violated policy.
///
/// Every field but `evidence` depends only on what replay also has (the snapshot, the run's
/// counters, the step's numbers and tool, and which content policies matched), never on the
/// step's text: a replayed step reproduces them exactly. `evidence` of a CONTENT_RULE finding
/// holds the masked match and the content's sha256 live, and says the text is not stored on
/// replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub policy_id: String,
    pub policy_version: i32,
    pub policy_name: String,
    pub kind: PolicyKind,
    pub action: PolicyAction,
    pub severity: Severity,
    /// The rule key that was exceeded: `maxTokens`, `patterns`, `tools`, `expression`, …
    pub violated_rule: String,
    /// The value that exceeded it, as text: `1200`, ``tool `rm_rf` ``, `true`, …
    pub evaluated_value: String,
    /// The condition that was true: `tokensUsed > 1000`.
    pub threshold_condition: String,
    /// A plain sentence naming the policy.
    pub reason: String,
    pub termination_reason: TerminationReason,
    /// The policy's rule: the thresholds in force.
    pub threshold: serde_json::Value,
    /// The observed value as JSON.
    pub observed: serde_json::Value,
    /// What was checked. Never holds a matched secret in full.
    pub evidence: serde_json::Value,
}

/// The decision on one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// STOP if any BLOCK policy is violated, else HOLD if any REQUIRE_APPROVAL policy is, else
    /// WARN if any WARN policy is, else CONTINUE.
    pub action: DecisionAction,
    /// VIOLATION for STOP, WARNING for HOLD and WARN, OK for CONTINUE.
    pub status: StepStatus,
    /// Why the run continued or stopped.
    pub reason: String,
    /// Policies evaluated for this step (every policy of the snapshot).
    pub policies_checked: i32,
    /// Every violated policy, in snapshot order.
    pub findings: Vec<Finding>,
    /// Index in `findings` of the most severe BLOCK finding (ties: first in snapshot order);
    /// `None` unless the action is STOP.
    pub inflection: Option<usize>,
    /// Index in `findings` of the REQUIRE_APPROVAL finding that holds the step (the most
    /// severe; ties: first in snapshot order); `None` unless the action is HOLD.
    pub hold: Option<usize>,
    /// How the held step is decided when nobody decides it (its policy's terms); HOLD only.
    pub approval: Option<ApprovalTerms>,
    /// Ids of the CONTENT_RULE policies whose patterns matched, in snapshot order (shadow ones
    /// too): recorded so replay can reproduce the decision without the text.
    pub content_matches: Vec<String>,
    /// What the SHADOW policies would have done, in snapshot order: recorded with the decision,
    /// never part of it.
    pub shadow_findings: Vec<Finding>,
}

impl Evaluation {
    /// The termination reason of the inflection, when the step stops the run.
    pub fn termination_reason(&self) -> Option<TerminationReason> {
        self.inflection
            .and_then(|i| self.findings.get(i))
            .map(|f| f.termination_reason)
    }

    /// The inflection finding, when the step stops the run.
    pub fn inflection_finding(&self) -> Option<&Finding> {
        self.inflection.and_then(|i| self.findings.get(i))
    }

    /// The finding that holds the step for approval, when it is held.
    pub fn hold_finding(&self) -> Option<&Finding> {
        self.hold.and_then(|i| self.findings.get(i))
    }

    /// Whether two evaluations decide the same, finding for finding, ignoring only `evidence`
    /// (which, for content matches, only a live evaluation can fill). A replay from
    /// [`ContentInput::Recorded`] is `same_decision` as the live evaluation it replays.
    pub fn same_decision(&self, other: &Evaluation) -> bool {
        self.action == other.action
            && self.status == other.status
            && self.reason == other.reason
            && self.policies_checked == other.policies_checked
            && self.inflection == other.inflection
            && self.hold == other.hold
            && self.approval == other.approval
            && self.content_matches == other.content_matches
            && same_findings(&self.findings, &other.findings)
            && same_findings(&self.shadow_findings, &other.shadow_findings)
    }
}

/// The same findings, ignoring only `evidence`.
pub(crate) fn same_findings(left: &[Finding], right: &[Finding]) -> bool {
    left.len() == right.len()
        && left.iter().zip(right).all(|(a, b)| {
            a.policy_id == b.policy_id
                && a.policy_version == b.policy_version
                && a.policy_name == b.policy_name
                && a.kind == b.kind
                && a.action == b.action
                && a.severity == b.severity
                && a.violated_rule == b.violated_rule
                && a.evaluated_value == b.evaluated_value
                && a.threshold_condition == b.threshold_condition
                && a.reason == b.reason
                && a.termination_reason == b.termination_reason
                && a.threshold == b.threshold
                && a.observed == b.observed
        })
}
