//! The post-execution audit of a governance job against its contract: input validation, the seven
//! checks, the verdict they add up to, and the rollout gate that reads the latest verdict.
//!
//! Everything here is a pure function of its arguments, so the audit job, the API and the tests
//! all judge a job the same way; storing the result is the caller's business.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use governance_entities::enums::{AuditVerdict, CheckResult};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{CoreError, CoreResult};

/// Recorded on every audit, so a stored verdict can be traced to the rules that produced it.
pub const AUDITOR_VERSION: &str = "governance-auditor/1.0.0";

/// Longest accepted `jobId` / `contractId`, in characters.
const MAX_ID_CHARS: usize = 200;

/// How many items a reason names before it says "and N more" (the evidence has them all).
const MAX_LISTED: usize = 5;

/// The check ids, in the order `run_checks` returns them.
pub const CHECK_IDS: [&str; 7] = [
    SCOPE_COMPLIANCE.id,
    HEALTH_PRESERVATION.id,
    EXECUTION_FIDELITY.id,
    TIMING_COMPLIANCE.id,
    ROLLBACK_AVAILABILITY.id,
    SIGNAL_CONSISTENCY.id,
    NO_UNAUTHORIZED_MUTATIONS.id,
];

/// How the job says it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Succeeded,
    Failed,
    Partial,
}

impl JobStatus {
    /// The API (and serde) spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Partial => "PARTIAL",
        }
    }
}

/// The judgement on one health signal; the value alone is never judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    Healthy,
    Degraded,
}

impl HealthStatus {
    /// The API (and serde) spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Degraded => "DEGRADED",
        }
    }
}

/// A change the contract authorised: `action` on `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProposedChange {
    pub target: String,
    pub action: String,
}

/// One step the job actually ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutedStep {
    pub target: String,
    pub action: String,
    pub mutates: bool,
    pub rollback_ref: Option<String>,
    pub succeeded: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A named health measurement and its judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSignal {
    pub name: String,
    pub value: f64,
    pub status: HealthStatus,
}

/// An inclusive interval of time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Everything the auditor is told about a finished job (`requestAudit`'s input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRequest {
    pub job_id: String,
    pub contract_id: String,
    pub job_status: JobStatus,
    pub contract_scope: Vec<String>,
    pub proposed_changes: Vec<ProposedChange>,
    pub steps: Vec<ExecutedStep>,
    pub mutations_observed: Vec<String>,
    pub health_before: Vec<HealthSignal>,
    pub health_after: Vec<HealthSignal>,
    pub activation_window: Option<TimeWindow>,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn blank(value: &str) -> bool {
    value.trim().is_empty()
}

fn check_id_field(field: &str, name: &str, value: &str) -> CoreResult<()> {
    if blank(value) {
        return Err(CoreError::bad_field(
            field,
            format!("`{name}` must not be empty"),
        ));
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(CoreError::bad_field(
            field,
            format!("`{name}` is longer than {MAX_ID_CHARS} characters; send a shorter id"),
        ));
    }
    Ok(())
}

fn check_signals(list: &str, signals: &[HealthSignal]) -> CoreResult<()> {
    let mut seen = HashSet::new();
    for (i, signal) in signals.iter().enumerate() {
        if blank(&signal.name) {
            return Err(CoreError::bad_field(
                format!("input.{list}[{i}].name"),
                format!("`{list}[{i}].name` must not be empty; name the signal (e.g. `errorRate`)"),
            ));
        }
        if !signal.value.is_finite() {
            return Err(CoreError::bad_field(
                format!("input.{list}[{i}].value"),
                format!("`{list}[{i}].value` must be a finite number, not NaN or infinity"),
            ));
        }
        if !seen.insert(signal.name.as_str()) {
            return Err(CoreError::bad_field(
                format!("input.{list}[{i}].name"),
                format!(
                    "signal `{}` appears more than once in `{list}`; send each signal once",
                    signal.name
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a request the checks could not judge fairly. Field paths are GraphQL input paths.
pub fn validate(request: &AuditRequest) -> CoreResult<()> {
    check_id_field("input.jobId", "jobId", &request.job_id)?;
    check_id_field("input.contractId", "contractId", &request.contract_id)?;
    if request.completed_at < request.started_at {
        return Err(CoreError::bad_field(
            "input.completedAt",
            "`completedAt` is before `startedAt`; send the instant the job finished, at or after it started",
        ));
    }
    if request.contract_scope.is_empty() {
        return Err(CoreError::bad_field(
            "input.contractScope",
            "`contractScope` must list at least one target the contract covers",
        ));
    }
    for (i, entry) in request.contract_scope.iter().enumerate() {
        if blank(entry) {
            return Err(CoreError::bad_field(
                format!("input.contractScope[{i}]"),
                format!("`contractScope[{i}]` must not be empty; remove it or name a target"),
            ));
        }
    }
    for (i, change) in request.proposed_changes.iter().enumerate() {
        for (key, value) in [("target", &change.target), ("action", &change.action)] {
            if blank(value) {
                return Err(CoreError::bad_field(
                    format!("input.proposedChanges[{i}].{key}"),
                    format!("`proposedChanges[{i}].{key}` must not be empty"),
                ));
            }
        }
    }
    for (i, step) in request.steps.iter().enumerate() {
        for (key, value) in [("target", &step.target), ("action", &step.action)] {
            if blank(value) {
                return Err(CoreError::bad_field(
                    format!("input.steps[{i}].{key}"),
                    format!("`steps[{i}].{key}` must not be empty"),
                ));
            }
        }
        if let (Some(started), Some(completed)) = (step.started_at, step.completed_at)
            && completed < started
        {
            return Err(CoreError::bad_field(
                format!("input.steps[{i}].completedAt"),
                format!(
                    "`steps[{i}].completedAt` is before `steps[{i}].startedAt`; send the instant the step finished, at or after it started"
                ),
            ));
        }
    }
    for (i, mutation) in request.mutations_observed.iter().enumerate() {
        if blank(mutation) {
            return Err(CoreError::bad_field(
                format!("input.mutationsObserved[{i}]"),
                format!("`mutationsObserved[{i}]` must not be empty; remove it or name the target"),
            ));
        }
    }
    check_signals("healthBefore", &request.health_before)?;
    check_signals("healthAfter", &request.health_after)?;
    if let Some(window) = &request.activation_window
        && window.end <= window.start
    {
        return Err(CoreError::bad_field(
            "input.activationWindow.end",
            "`activationWindow.end` must be after `activationWindow.start`",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// The judgement of one check, with what it looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub check_id: &'static str,
    pub name: &'static str,
    pub question: &'static str,
    pub result: CheckResult,
    /// One sentence, with specifics.
    pub reason: String,
    /// A JSON object holding exactly what the check looked at.
    pub evidence: Value,
}

struct Check {
    id: &'static str,
    name: &'static str,
    question: &'static str,
}

const SCOPE_COMPLIANCE: Check = Check {
    id: "scope_compliance",
    name: "Scope compliance",
    question: "Did every executed step stay inside the contract scope?",
};
const HEALTH_PRESERVATION: Check = Check {
    id: "health_preservation",
    name: "Health preservation",
    question: "Is every health signal at least as healthy after the job as before it?",
};
const EXECUTION_FIDELITY: Check = Check {
    id: "execution_fidelity",
    name: "Execution fidelity",
    question: "Was every proposed change executed, and did it succeed?",
};
const TIMING_COMPLIANCE: Check = Check {
    id: "timing_compliance",
    name: "Timing compliance",
    question: "Did the job and its steps run inside the activation window?",
};
const ROLLBACK_AVAILABILITY: Check = Check {
    id: "rollback_availability",
    name: "Rollback availability",
    question: "Does every mutating step have a rollback reference?",
};
const SIGNAL_CONSISTENCY: Check = Check {
    id: "signal_consistency",
    name: "Signal consistency",
    question: "Does the job's reported status agree with its step results?",
};
const NO_UNAUTHORIZED_MUTATIONS: Check = Check {
    id: "no_unauthorized_mutations",
    name: "No unauthorized mutations",
    question: "Was nothing mutated outside the proposed changes?",
};

impl Check {
    fn outcome(&self, result: CheckResult, reason: String, evidence: Value) -> CheckOutcome {
        CheckOutcome {
            check_id: self.id,
            name: self.name,
            question: self.question,
            result,
            reason,
            evidence,
        }
    }
}

/// Runs the seven checks, always all of them and always in the order of [`CHECK_IDS`].
/// Never panics, even on a request that `validate` would refuse.
pub fn run_checks(request: &AuditRequest) -> Vec<CheckOutcome> {
    vec![
        scope_compliance(request),
        health_preservation(request),
        execution_fidelity(request),
        timing_compliance(request),
        rollback_availability(request),
        signal_consistency(request),
        no_unauthorized_mutations(request),
    ]
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Distinct values, in first-seen order.
fn distinct<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .into_iter()
        .filter(|v| seen.insert(*v))
        .map(str::to_string)
        .collect()
}

/// "`a`, `b`, `c` and 4 more": names for a reason; the evidence carries the full list.
fn listed(items: &[String]) -> String {
    let mut text = items
        .iter()
        .take(MAX_LISTED)
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > MAX_LISTED {
        text.push_str(&format!(" and {} more", items.len() - MAX_LISTED));
    }
    text
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn step_label(index: usize, step: &ExecutedStep) -> String {
    format!("steps[{index}] {} on {}", step.action, step.target)
}

fn change_label(change: &ProposedChange) -> String {
    format!("{} on {}", change.action, change.target)
}

fn step_json(index: usize, step: &ExecutedStep) -> Value {
    json!({ "index": index, "target": step.target, "action": step.action })
}

fn scope_compliance(request: &AuditRequest) -> CheckOutcome {
    let check = &SCOPE_COMPLIANCE;
    let scope: HashSet<&str> = request.contract_scope.iter().map(String::as_str).collect();
    let executed = distinct(request.steps.iter().map(|s| s.target.as_str()));
    let out_of_scope: Vec<String> = executed
        .iter()
        .filter(|t| !scope.contains(t.as_str()))
        .cloned()
        .collect();
    let evidence = json!({
        "scope": request.contract_scope,
        "executedTargets": executed,
        "outOfScope": out_of_scope,
    });
    if request.steps.is_empty() {
        return check.outcome(
            CheckResult::Inconclusive,
            "No step was executed, so there is nothing to hold against the contract scope.".into(),
            evidence,
        );
    }
    if out_of_scope.is_empty() {
        check.outcome(
            CheckResult::Pass,
            format!(
                "All {} stayed inside the contract scope.",
                plural(executed.len(), "executed target", "executed targets")
            ),
            evidence,
        )
    } else {
        check.outcome(
            CheckResult::Fail,
            format!(
                "{} outside the contract scope: {}.",
                plural(
                    out_of_scope.len(),
                    "executed target is",
                    "executed targets are"
                ),
                listed(&out_of_scope)
            ),
            evidence,
        )
    }
}

fn health_preservation(request: &AuditRequest) -> CheckOutcome {
    let check = &HEALTH_PRESERVATION;
    // With duplicate names (refused by `validate`) the last one in `after` wins.
    let after: HashMap<&str, &HealthSignal> = request
        .health_after
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let before_names: HashSet<&str> = request
        .health_before
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut compared = Vec::new();
    let mut worsened = Vec::new();
    let mut missing_after = Vec::new();
    for signal in &request.health_before {
        match after.get(signal.name.as_str()) {
            Some(later) => {
                if signal.status == HealthStatus::Healthy && later.status == HealthStatus::Degraded
                {
                    worsened.push(signal.name.clone());
                }
                compared.push(json!({
                    "name": signal.name,
                    "before": signal.status.as_str(),
                    "after": later.status.as_str(),
                    "valueBefore": signal.value,
                    "valueAfter": later.value,
                }));
            }
            None => missing_after.push(signal.name.clone()),
        }
    }
    let new_after = distinct(
        request
            .health_after
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| !before_names.contains(n)),
    );
    let evidence = json!({
        "compared": compared,
        "worsened": worsened,
        "missingAfter": missing_after,
        "onlyAfter": new_after,
    });
    if !worsened.is_empty() {
        return check.outcome(
            CheckResult::Fail,
            format!(
                "{} from HEALTHY to DEGRADED: {}.",
                plural(worsened.len(), "signal went", "signals went"),
                listed(&worsened)
            ),
            evidence,
        );
    }
    if request.health_before.is_empty() || request.health_after.is_empty() {
        let which = match (
            request.health_before.is_empty(),
            request.health_after.is_empty(),
        ) {
            (true, true) => "No health signals were reported before or after the job",
            (true, false) => "No health signals were reported before the job",
            _ => "No health signals were reported after the job",
        };
        return check.outcome(
            CheckResult::Inconclusive,
            format!("{which}, so health before and after cannot be compared."),
            evidence,
        );
    }
    if !missing_after.is_empty() {
        return check.outcome(
            CheckResult::Inconclusive,
            format!(
                "{} reported before the job but not after, so cannot be compared: {}.",
                plural(missing_after.len(), "signal was", "signals were"),
                listed(&missing_after)
            ),
            evidence,
        );
    }
    check.outcome(
        CheckResult::Pass,
        format!(
            "None of the {} compared got worse.",
            plural(compared.len(), "health signal", "health signals")
        ),
        evidence,
    )
}

fn execution_fidelity(request: &AuditRequest) -> CheckOutcome {
    let check = &EXECUTION_FIDELITY;
    let mut not_executed = Vec::new();
    let mut not_succeeded = Vec::new();
    let mut problems = Vec::new();
    for change in &request.proposed_changes {
        let mut matching = request
            .steps
            .iter()
            .filter(|s| s.target == change.target && s.action == change.action)
            .peekable();
        if matching.peek().is_none() {
            not_executed.push(json!({ "target": change.target, "action": change.action }));
            problems.push(format!("{} (not executed)", change_label(change)));
        } else if !matching.any(|s| s.succeeded) {
            // A change counts as done when any attempt at it succeeded: a retry after a failed
            // attempt is fidelity, not a deviation.
            not_succeeded.push(json!({ "target": change.target, "action": change.action }));
            problems.push(format!("{} (did not succeed)", change_label(change)));
        }
    }
    let evidence = json!({
        "proposedChanges": request.proposed_changes,
        "executedSteps": request
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| json!({
                "index": i,
                "target": s.target,
                "action": s.action,
                "succeeded": s.succeeded,
            }))
            .collect::<Vec<_>>(),
        "notExecuted": not_executed,
        "notSucceeded": not_succeeded,
    });
    if request.proposed_changes.is_empty() {
        return check.outcome(
            CheckResult::Inconclusive,
            "No changes were proposed, so there is nothing to hold the execution against.".into(),
            evidence,
        );
    }
    if problems.is_empty() {
        check.outcome(
            CheckResult::Pass,
            format!(
                "All {} executed and succeeded.",
                plural(
                    request.proposed_changes.len(),
                    "proposed change was",
                    "proposed changes were"
                )
            ),
            evidence,
        )
    } else {
        check.outcome(
            CheckResult::Fail,
            format!(
                "{} of {} not carried out: {}.",
                problems.len(),
                plural(
                    request.proposed_changes.len(),
                    "proposed change was",
                    "proposed changes were"
                ),
                listed(&problems)
            ),
            evidence,
        )
    }
}

fn timing_compliance(request: &AuditRequest) -> CheckOutcome {
    let check = &TIMING_COMPLIANCE;
    let mut instants = vec![
        ("startedAt".to_string(), request.started_at),
        ("completedAt".to_string(), request.completed_at),
    ];
    for (i, step) in request.steps.iter().enumerate() {
        if let Some(at) = step.started_at {
            instants.push((format!("steps[{i}].startedAt"), at));
        }
        if let Some(at) = step.completed_at {
            instants.push((format!("steps[{i}].completedAt"), at));
        }
    }
    let Some(window) = &request.activation_window else {
        return check.outcome(
            CheckResult::Inconclusive,
            "No activation window was given, so the job's timing cannot be judged.".into(),
            json!({
                "window": Value::Null,
                "checked": instants.iter().map(|(f, at)| json!({ "field": f, "at": ts(*at) })).collect::<Vec<_>>(),
                "outside": [],
            }),
        );
    };
    let outside: Vec<(String, DateTime<Utc>)> = instants
        .iter()
        .filter(|(_, at)| *at < window.start || *at > window.end)
        .cloned()
        .collect();
    let evidence = json!({
        "window": { "start": ts(window.start), "end": ts(window.end) },
        "checked": instants.iter().map(|(f, at)| json!({ "field": f, "at": ts(*at) })).collect::<Vec<_>>(),
        "outside": outside.iter().map(|(f, at)| json!({ "field": f, "at": ts(*at) })).collect::<Vec<_>>(),
    });
    let window_text = format!("{} to {}", ts(window.start), ts(window.end));
    if outside.is_empty() {
        check.outcome(
            CheckResult::Pass,
            format!(
                "All {} fall inside the activation window {window_text}.",
                plural(instants.len(), "recorded instant", "recorded instants")
            ),
            evidence,
        )
    } else {
        let offending: Vec<String> = outside
            .iter()
            .map(|(f, at)| format!("{f} {}", ts(*at)))
            .collect();
        check.outcome(
            CheckResult::Fail,
            format!(
                "{} outside the activation window {window_text}: {}.",
                plural(outside.len(), "instant falls", "instants fall"),
                listed(&offending)
            ),
            evidence,
        )
    }
}

fn rollback_availability(request: &AuditRequest) -> CheckOutcome {
    let check = &ROLLBACK_AVAILABILITY;
    let mutating: Vec<(usize, &ExecutedStep)> = request
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.mutates)
        .collect();
    // A failed mutating step counts too: it may have changed something before it failed.
    let without: Vec<(usize, &ExecutedStep)> = mutating
        .iter()
        .filter(|(_, s)| s.rollback_ref.as_deref().is_none_or(blank))
        .copied()
        .collect();
    let evidence = json!({
        "mutatingSteps": mutating
            .iter()
            .map(|(i, s)| json!({
                "index": i,
                "target": s.target,
                "action": s.action,
                "rollbackRef": s.rollback_ref,
            }))
            .collect::<Vec<_>>(),
        "withoutRollback": without.iter().map(|(i, s)| step_json(*i, s)).collect::<Vec<_>>(),
    });
    if mutating.is_empty() {
        return check.outcome(
            CheckResult::Pass,
            "No step mutated anything, so there is nothing to roll back.".into(),
            evidence,
        );
    }
    if without.is_empty() {
        check.outcome(
            CheckResult::Pass,
            format!(
                "All {} have a rollback reference.",
                plural(mutating.len(), "mutating step", "mutating steps")
            ),
            evidence,
        )
    } else {
        let labels: Vec<String> = without.iter().map(|(i, s)| step_label(*i, s)).collect();
        check.outcome(
            CheckResult::Fail,
            format!(
                "{} of {} no rollback reference: {}.",
                without.len(),
                plural(mutating.len(), "mutating step has", "mutating steps have"),
                listed(&labels)
            ),
            evidence,
        )
    }
}

fn signal_consistency(request: &AuditRequest) -> CheckOutcome {
    let check = &SIGNAL_CONSISTENCY;
    let status = request.job_status.as_str();
    let total = request.steps.len();
    let failed: Vec<(usize, &ExecutedStep)> = request
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.succeeded)
        .collect();
    let succeeded = total - failed.len();
    let evidence = json!({
        "jobStatus": status,
        "stepsSucceeded": succeeded,
        "stepsFailed": failed.len(),
        "failedSteps": failed.iter().map(|(i, s)| step_json(*i, s)).collect::<Vec<_>>(),
    });
    if total == 0 {
        return check.outcome(
            CheckResult::Inconclusive,
            format!("The job reports {status} but no steps were reported to compare it with."),
            evidence,
        );
    }
    let steps = plural(total, "step", "steps");
    let failed_labels: Vec<String> = failed.iter().map(|(i, s)| step_label(*i, s)).collect();
    let (consistent, reason) = match request.job_status {
        JobStatus::Succeeded if failed.is_empty() => (
            true,
            format!("The job reports SUCCEEDED and all {steps} succeeded."),
        ),
        JobStatus::Succeeded => (
            false,
            format!(
                "The job reports SUCCEEDED but {} of {steps} failed: {}.",
                failed.len(),
                listed(&failed_labels)
            ),
        ),
        JobStatus::Failed if !failed.is_empty() => (
            true,
            format!(
                "The job reports FAILED and {} of {steps} failed.",
                failed.len()
            ),
        ),
        JobStatus::Failed => (
            false,
            format!("The job reports FAILED but all {steps} succeeded."),
        ),
        JobStatus::Partial if succeeded > 0 && !failed.is_empty() => (
            true,
            format!(
                "The job reports PARTIAL and {succeeded} of {steps} succeeded while {} failed.",
                failed.len()
            ),
        ),
        JobStatus::Partial => (
            false,
            format!(
                "The job reports PARTIAL but all {steps} {}; PARTIAL needs at least one success and one failure.",
                if failed.is_empty() {
                    "succeeded"
                } else {
                    "failed"
                }
            ),
        ),
    };
    let result = if consistent {
        CheckResult::Pass
    } else {
        CheckResult::Fail
    };
    check.outcome(result, reason, evidence)
}

fn no_unauthorized_mutations(request: &AuditRequest) -> CheckOutcome {
    let check = &NO_UNAUTHORIZED_MUTATIONS;
    let authorized = distinct(request.proposed_changes.iter().map(|c| c.target.as_str()));
    let allowed: HashSet<&str> = authorized.iter().map(String::as_str).collect();
    let mutated = distinct(
        request.mutations_observed.iter().map(String::as_str).chain(
            request
                .steps
                .iter()
                .filter(|s| s.mutates)
                .map(|s| s.target.as_str()),
        ),
    );
    let unauthorized: Vec<String> = mutated
        .iter()
        .filter(|t| !allowed.contains(t.as_str()))
        .cloned()
        .collect();
    let evidence = json!({
        "authorizedTargets": authorized,
        "mutationsObserved": request.mutations_observed,
        "mutatingStepTargets": distinct(
            request.steps.iter().filter(|s| s.mutates).map(|s| s.target.as_str())
        ),
        "unauthorized": unauthorized,
    });
    if mutated.is_empty() {
        return check.outcome(
            CheckResult::Pass,
            "Nothing was mutated, so nothing was mutated outside the proposed changes.".into(),
            evidence,
        );
    }
    if unauthorized.is_empty() {
        check.outcome(
            CheckResult::Pass,
            format!(
                "All {} a proposed change.",
                plural(
                    mutated.len(),
                    "mutated target is covered by",
                    "mutated targets are covered by"
                )
            ),
            evidence,
        )
    } else {
        check.outcome(
            CheckResult::Fail,
            format!(
                "{} not covered by any proposed change: {}.",
                plural(
                    unauthorized.len(),
                    "mutated target is",
                    "mutated targets are"
                ),
                listed(&unauthorized)
            ),
            evidence,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Verdict and gate
// ---------------------------------------------------------------------------------------------

fn ids_with(checks: &[CheckOutcome], result: CheckResult) -> Vec<&'static str> {
    checks
        .iter()
        .filter(|c| c.result == result)
        .map(|c| c.check_id)
        .collect()
}

/// Any FAIL → FAIL, else any INCONCLUSIVE → INCONCLUSIVE, else PASS; with the reason.
/// No checks at all is INCONCLUSIVE, never a vacuous PASS that would authorize a rollout.
pub fn verdict(checks: &[CheckOutcome]) -> (AuditVerdict, String) {
    let failed = ids_with(checks, CheckResult::Fail);
    if !failed.is_empty() {
        return (AuditVerdict::Fail, format!("failed: {}", failed.join(", ")));
    }
    let inconclusive = ids_with(checks, CheckResult::Inconclusive);
    if !inconclusive.is_empty() {
        return (
            AuditVerdict::Inconclusive,
            format!("inconclusive: {}", inconclusive.join(", ")),
        );
    }
    if checks.is_empty() {
        return (AuditVerdict::Inconclusive, "no checks were run".into());
    }
    (
        AuditVerdict::Pass,
        format!("all {} checks passed", checks.len()),
    )
}

/// `(passed, failed, inconclusive)`, for `checksPassed` / `checksFailed` / `checksInconclusive`.
pub fn counts(checks: &[CheckOutcome]) -> (i32, i32, i32) {
    checks
        .iter()
        .fold((0, 0, 0), |(p, f, i), c| match c.result {
            CheckResult::Pass => (p + 1, f, i),
            CheckResult::Fail => (p, f + 1, i),
            CheckResult::Inconclusive => (p, f, i + 1),
        })
}

/// Where a job's rollout stands (`rolloutGate.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateStatus {
    PendingAudit,
    Authorized,
    Blocked,
    NeedsReview,
}

/// The rollout gate's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub status: GateStatus,
    /// True only when `status` is `Authorized`.
    pub authorized: bool,
    pub reason: String,
}

/// One stored check result, as the gate needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcomeSummary {
    pub check_id: String,
    pub result: CheckResult,
}

impl From<&CheckOutcome> for CheckOutcomeSummary {
    fn from(outcome: &CheckOutcome) -> Self {
        CheckOutcomeSummary {
            check_id: outcome.check_id.to_string(),
            result: outcome.result,
        }
    }
}

fn summary_ids(checks: &[CheckOutcomeSummary], result: CheckResult) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| c.result == result)
        .map(|c| c.check_id.as_str())
        .collect()
}

fn blocked_or_review(status: GateStatus, reason: String) -> Gate {
    Gate {
        status,
        authorized: false,
        reason,
    }
}

/// The rollout gate over the latest completed audit of a job: authorized only on PASS.
pub fn gate(latest_completed: Option<(AuditVerdict, &[CheckOutcomeSummary])>) -> Gate {
    let Some((verdict, checks)) = latest_completed else {
        return blocked_or_review(
            GateStatus::PendingAudit,
            "no completed audit of this job yet".into(),
        );
    };
    let failed = summary_ids(checks, CheckResult::Fail);
    let inconclusive = summary_ids(checks, CheckResult::Inconclusive);
    match verdict {
        AuditVerdict::Fail if failed.is_empty() => {
            blocked_or_review(GateStatus::Blocked, "the latest audit failed".into())
        }
        AuditVerdict::Fail => blocked_or_review(
            GateStatus::Blocked,
            format!("the latest audit failed: {}", failed.join(", ")),
        ),
        AuditVerdict::Inconclusive if inconclusive.is_empty() => blocked_or_review(
            GateStatus::NeedsReview,
            "the latest audit was inconclusive; review it before rolling out".into(),
        ),
        AuditVerdict::Inconclusive => blocked_or_review(
            GateStatus::NeedsReview,
            format!(
                "the latest audit was inconclusive: {}; review it before rolling out",
                inconclusive.join(", ")
            ),
        ),
        // A stored PASS whose own checks say otherwise is not trusted to authorize anything.
        AuditVerdict::Pass if !failed.is_empty() || !inconclusive.is_empty() => {
            let disagreeing: Vec<&str> = failed.iter().chain(&inconclusive).copied().collect();
            blocked_or_review(
                GateStatus::NeedsReview,
                format!(
                    "the latest audit's PASS verdict disagrees with its checks: {}",
                    disagreeing.join(", ")
                ),
            )
        }
        AuditVerdict::Pass => Gate {
            status: GateStatus::Authorized,
            authorized: true,
            reason: "the latest audit passed all checks".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, hour, minute, 0)
            .single()
            .expect("valid time")
    }

    fn step(target: &str, action: &str) -> ExecutedStep {
        ExecutedStep {
            target: target.into(),
            action: action.into(),
            mutates: true,
            rollback_ref: Some(format!("rb-{target}")),
            succeeded: true,
            started_at: Some(at(10, 5)),
            completed_at: Some(at(10, 10)),
        }
    }

    fn signal(name: &str, status: HealthStatus) -> HealthSignal {
        HealthSignal {
            name: name.into(),
            value: 0.5,
            status,
        }
    }

    /// A clean request: every check passes.
    fn request() -> AuditRequest {
        AuditRequest {
            job_id: "job_1".into(),
            contract_id: "ctr_1".into(),
            job_status: JobStatus::Succeeded,
            contract_scope: vec!["svc/api".into(), "svc/web".into()],
            proposed_changes: vec![
                ProposedChange {
                    target: "svc/api".into(),
                    action: "restart".into(),
                },
                ProposedChange {
                    target: "svc/web".into(),
                    action: "scale".into(),
                },
            ],
            steps: vec![step("svc/api", "restart"), step("svc/web", "scale")],
            mutations_observed: vec!["svc/api".into()],
            health_before: vec![
                signal("errorRate", HealthStatus::Healthy),
                signal("latency", HealthStatus::Degraded),
            ],
            health_after: vec![
                signal("errorRate", HealthStatus::Healthy),
                signal("latency", HealthStatus::Healthy),
            ],
            activation_window: Some(TimeWindow {
                start: at(10, 0),
                end: at(11, 0),
            }),
            started_at: at(10, 0),
            completed_at: at(10, 30),
        }
    }

    fn check(request: &AuditRequest, id: &str) -> CheckOutcome {
        run_checks(request)
            .into_iter()
            .find(|c| c.check_id == id)
            .expect("check exists")
    }

    fn field_of(request: &AuditRequest) -> String {
        match validate(request) {
            Err(CoreError::BadInput {
                field: Some(field), ..
            }) => field,
            other => panic!("expected a bad field, got {other:?}"),
        }
    }

    #[test]
    fn the_clean_request_passes_every_check_in_order() {
        let request = request();
        validate(&request).expect("valid");
        let checks = run_checks(&request);
        let ids: Vec<&str> = checks.iter().map(|c| c.check_id).collect();
        assert_eq!(ids, CHECK_IDS);
        for c in &checks {
            assert_eq!(c.result, CheckResult::Pass, "{}: {}", c.check_id, c.reason);
            assert!(c.evidence.is_object());
            assert!(!c.name.is_empty() && c.question.ends_with('?'));
        }
        assert_eq!(
            verdict(&checks),
            (AuditVerdict::Pass, "all 7 checks passed".to_string())
        );
        assert_eq!(counts(&checks), (7, 0, 0));
    }

    // --- scope_compliance

    #[test]
    fn scope_compliance_fails_on_out_of_scope_targets() {
        let mut r = request();
        r.steps.push(step("db/main", "migrate"));
        let c = check(&r, "scope_compliance");
        assert_eq!(c.result, CheckResult::Fail);
        assert!(c.reason.contains("`db/main`"), "{}", c.reason);
        assert_eq!(c.evidence["outOfScope"], json!(["db/main"]));
        assert_eq!(c.evidence["scope"], json!(["svc/api", "svc/web"]));
    }

    #[test]
    fn scope_compliance_is_inconclusive_without_steps() {
        let mut r = request();
        r.steps.clear();
        assert_eq!(
            check(&r, "scope_compliance").result,
            CheckResult::Inconclusive
        );
    }

    // --- health_preservation

    #[test]
    fn health_preservation_fails_when_a_signal_degrades() {
        let mut r = request();
        r.health_after[0].status = HealthStatus::Degraded;
        // Missing signals do not soften a failure.
        r.health_after.pop();
        let c = check(&r, "health_preservation");
        assert_eq!(c.result, CheckResult::Fail);
        assert!(c.reason.contains("`errorRate`"), "{}", c.reason);
        assert_eq!(c.evidence["worsened"], json!(["errorRate"]));
    }

    #[test]
    fn health_preservation_ignores_value_changes() {
        let mut r = request();
        r.health_after[0].value = 99.0;
        assert_eq!(check(&r, "health_preservation").result, CheckResult::Pass);
    }

    #[test]
    fn health_preservation_is_inconclusive_when_it_cannot_compare() {
        let mut missing = request();
        missing.health_after.remove(1);
        let c = check(&missing, "health_preservation");
        assert_eq!(c.result, CheckResult::Inconclusive);
        assert_eq!(c.evidence["missingAfter"], json!(["latency"]));

        let mut empty = request();
        empty.health_before.clear();
        empty.health_after.clear();
        assert_eq!(
            check(&empty, "health_preservation").result,
            CheckResult::Inconclusive
        );
    }

    // --- execution_fidelity

    #[test]
    fn execution_fidelity_fails_on_unexecuted_or_failed_changes() {
        let mut r = request();
        r.steps[0].succeeded = false;
        r.proposed_changes.push(ProposedChange {
            target: "svc/web".into(),
            action: "drain".into(),
        });
        let c = check(&r, "execution_fidelity");
        assert_eq!(c.result, CheckResult::Fail);
        assert_eq!(
            c.evidence["notSucceeded"],
            json!([{ "target": "svc/api", "action": "restart" }])
        );
        assert_eq!(
            c.evidence["notExecuted"],
            json!([{ "target": "svc/web", "action": "drain" }])
        );
        assert!(c.reason.contains("drain on svc/web (not executed)"));
    }

    #[test]
    fn execution_fidelity_accepts_a_successful_retry() {
        let mut r = request();
        let mut failed = step("svc/api", "restart");
        failed.succeeded = false;
        r.steps.insert(0, failed);
        assert_eq!(check(&r, "execution_fidelity").result, CheckResult::Pass);
    }

    #[test]
    fn execution_fidelity_is_inconclusive_without_proposed_changes() {
        let mut r = request();
        r.proposed_changes.clear();
        assert_eq!(
            check(&r, "execution_fidelity").result,
            CheckResult::Inconclusive
        );
    }

    // --- timing_compliance

    #[test]
    fn timing_compliance_is_inclusive_at_the_edges() {
        let mut r = request();
        r.completed_at = at(11, 0);
        assert_eq!(check(&r, "timing_compliance").result, CheckResult::Pass);
    }

    #[test]
    fn timing_compliance_fails_with_the_offending_instants() {
        let mut r = request();
        r.completed_at = at(11, 30);
        r.steps[1].completed_at = Some(at(11, 1));
        let c = check(&r, "timing_compliance");
        assert_eq!(c.result, CheckResult::Fail);
        assert_eq!(
            c.evidence["outside"],
            json!([
                { "field": "completedAt", "at": "2025-03-01T11:30:00Z" },
                { "field": "steps[1].completedAt", "at": "2025-03-01T11:01:00Z" },
            ])
        );
        assert!(c.reason.contains("completedAt 2025-03-01T11:30:00Z"));
    }

    #[test]
    fn timing_compliance_is_inconclusive_without_a_window() {
        let mut r = request();
        r.activation_window = None;
        assert_eq!(
            check(&r, "timing_compliance").result,
            CheckResult::Inconclusive
        );
    }

    // --- rollback_availability

    #[test]
    fn rollback_availability_fails_on_missing_or_blank_refs() {
        let mut r = request();
        r.steps[0].rollback_ref = None;
        r.steps[1].rollback_ref = Some("  ".into());
        let c = check(&r, "rollback_availability");
        assert_eq!(c.result, CheckResult::Fail);
        assert_eq!(
            c.evidence["withoutRollback"]
                .as_array()
                .map(Vec::len)
                .unwrap_or_default(),
            2
        );
    }

    #[test]
    fn rollback_availability_passes_without_mutating_steps() {
        let mut r = request();
        for s in &mut r.steps {
            s.mutates = false;
            s.rollback_ref = None;
        }
        let c = check(&r, "rollback_availability");
        assert_eq!(c.result, CheckResult::Pass);
        assert!(c.reason.contains("nothing to roll back"));
    }

    // --- signal_consistency

    #[test]
    fn signal_consistency_fails_when_status_and_steps_disagree() {
        let mut succeeded_with_failure = request();
        succeeded_with_failure.steps[1].succeeded = false;
        assert_eq!(
            check(&succeeded_with_failure, "signal_consistency").result,
            CheckResult::Fail
        );

        let mut failed_all_ok = request();
        failed_all_ok.job_status = JobStatus::Failed;
        assert_eq!(
            check(&failed_all_ok, "signal_consistency").result,
            CheckResult::Fail
        );

        let mut partial_all_ok = request();
        partial_all_ok.job_status = JobStatus::Partial;
        assert_eq!(
            check(&partial_all_ok, "signal_consistency").result,
            CheckResult::Fail
        );
    }

    #[test]
    fn signal_consistency_passes_partial_and_failed_when_steps_agree() {
        let mut r = request();
        r.steps[1].succeeded = false;
        r.job_status = JobStatus::Partial;
        assert_eq!(check(&r, "signal_consistency").result, CheckResult::Pass);
        r.job_status = JobStatus::Failed;
        assert_eq!(check(&r, "signal_consistency").result, CheckResult::Pass);
    }

    #[test]
    fn signal_consistency_is_inconclusive_without_steps() {
        let mut r = request();
        r.steps.clear();
        assert_eq!(
            check(&r, "signal_consistency").result,
            CheckResult::Inconclusive
        );
    }

    // --- no_unauthorized_mutations

    #[test]
    fn no_unauthorized_mutations_fails_on_unproposed_targets() {
        let mut r = request();
        r.mutations_observed.push("db/main".into());
        let mut rogue = step("svc/cache", "flush");
        rogue.succeeded = false;
        r.steps.push(rogue);
        let c = check(&r, "no_unauthorized_mutations");
        assert_eq!(c.result, CheckResult::Fail);
        assert_eq!(c.evidence["unauthorized"], json!(["db/main", "svc/cache"]));
    }

    #[test]
    fn no_unauthorized_mutations_passes_when_nothing_mutated() {
        let mut r = request();
        r.mutations_observed.clear();
        for s in &mut r.steps {
            s.mutates = false;
        }
        // Non-mutating steps on unproposed targets are not mutations.
        let mut read = step("svc/other", "inspect");
        read.mutates = false;
        r.steps.push(read);
        let c = check(&r, "no_unauthorized_mutations");
        assert_eq!(c.result, CheckResult::Pass);
        assert!(c.reason.starts_with("Nothing was mutated"));
    }

    // --- validate

    type Mutate = Box<dyn Fn(&mut AuditRequest)>;

    #[test]
    fn validate_names_the_offending_field() {
        let cases: Vec<(&str, Mutate)> = vec![
            ("input.jobId", Box::new(|r| r.job_id = " ".into())),
            ("input.jobId", Box::new(|r| r.job_id = "j".repeat(201))),
            ("input.contractId", Box::new(|r| r.contract_id.clear())),
            ("input.completedAt", Box::new(|r| r.completed_at = at(9, 0))),
            (
                "input.contractScope",
                Box::new(|r| r.contract_scope.clear()),
            ),
            (
                "input.contractScope[2]",
                Box::new(|r| r.contract_scope.push("".into())),
            ),
            (
                "input.proposedChanges[0].action",
                Box::new(|r| r.proposed_changes[0].action = " ".into()),
            ),
            (
                "input.steps[1].target",
                Box::new(|r| r.steps[1].target.clear()),
            ),
            (
                "input.steps[0].action",
                Box::new(|r| r.steps[0].action.clear()),
            ),
            (
                "input.steps[1].completedAt",
                Box::new(|r| r.steps[1].completed_at = Some(at(10, 0))),
            ),
            (
                "input.mutationsObserved[0]",
                Box::new(|r| r.mutations_observed[0] = "".into()),
            ),
            (
                "input.healthBefore[0].name",
                Box::new(|r| r.health_before[0].name = " ".into()),
            ),
            (
                "input.healthAfter[1].value",
                Box::new(|r| r.health_after[1].value = f64::NAN),
            ),
            (
                "input.healthBefore[1].value",
                Box::new(|r| r.health_before[1].value = f64::INFINITY),
            ),
            (
                "input.healthAfter[1].name",
                Box::new(|r| r.health_after[1].name = "errorRate".into()),
            ),
            (
                "input.activationWindow.end",
                Box::new(|r| {
                    r.activation_window = Some(TimeWindow {
                        start: at(10, 0),
                        end: at(10, 0),
                    })
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut r = request();
            mutate(&mut r);
            assert_eq!(field_of(&r), field);
            assert_eq!(
                validate(&r).map_err(|e| e.code()).err(),
                Some("BAD_USER_INPUT")
            );
        }
    }

    #[test]
    fn validate_explains_a_reversed_job() {
        let mut r = request();
        r.completed_at = at(9, 0);
        let message = validate(&r).map_err(|e| e.to_string()).err();
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.starts_with("`completedAt` is before `startedAt`")),
            "{message:?}"
        );
    }

    #[test]
    fn validate_accepts_a_200_character_id_and_open_step_times() {
        let mut r = request();
        r.job_id = "é".repeat(200);
        r.steps[0].completed_at = None;
        r.steps[1].started_at = None;
        r.activation_window = None;
        assert!(validate(&r).is_ok());
    }

    // --- verdict and gate

    fn outcome(check_id: &'static str, result: CheckResult) -> CheckOutcome {
        CheckOutcome {
            check_id,
            name: "",
            question: "",
            result,
            reason: String::new(),
            evidence: json!({}),
        }
    }

    #[test]
    fn verdict_names_the_checks_behind_it() {
        let mut r = request();
        r.steps.push(step("db/main", "migrate"));
        r.activation_window = None;
        let checks = run_checks(&r);
        let (v, reason) = verdict(&checks);
        assert_eq!(v, AuditVerdict::Fail);
        assert_eq!(
            reason,
            "failed: scope_compliance, no_unauthorized_mutations"
        );
        assert_eq!(counts(&checks), (4, 2, 1));

        let mut r = request();
        r.activation_window = None;
        assert_eq!(
            verdict(&run_checks(&r)),
            (
                AuditVerdict::Inconclusive,
                "inconclusive: timing_compliance".to_string()
            )
        );
        assert_eq!(verdict(&[]).0, AuditVerdict::Inconclusive);
    }

    fn summaries(results: &[(&str, CheckResult)]) -> Vec<CheckOutcomeSummary> {
        results
            .iter()
            .map(|(id, result)| CheckOutcomeSummary {
                check_id: (*id).to_string(),
                result: *result,
            })
            .collect()
    }

    #[test]
    fn gate_is_pending_without_a_completed_audit() {
        let g = gate(None);
        assert_eq!(g.status, GateStatus::PendingAudit);
        assert!(!g.authorized);
        assert_eq!(g.reason, "no completed audit of this job yet");
    }

    #[test]
    fn gate_authorizes_only_on_pass() {
        let checks: Vec<CheckOutcomeSummary> =
            run_checks(&request()).iter().map(Into::into).collect();
        let g = gate(Some((AuditVerdict::Pass, &checks)));
        assert_eq!(g.status, GateStatus::Authorized);
        assert!(g.authorized);
    }

    #[test]
    fn gate_blocks_on_fail_naming_the_failures() {
        let checks = summaries(&[
            ("scope_compliance", CheckResult::Fail),
            ("timing_compliance", CheckResult::Inconclusive),
            ("signal_consistency", CheckResult::Fail),
        ]);
        let g = gate(Some((AuditVerdict::Fail, &checks)));
        assert_eq!(g.status, GateStatus::Blocked);
        assert!(!g.authorized);
        assert_eq!(
            g.reason,
            "the latest audit failed: scope_compliance, signal_consistency"
        );
    }

    #[test]
    fn gate_needs_review_on_inconclusive() {
        let checks = summaries(&[
            ("scope_compliance", CheckResult::Pass),
            ("timing_compliance", CheckResult::Inconclusive),
        ]);
        let g = gate(Some((AuditVerdict::Inconclusive, &checks)));
        assert_eq!(g.status, GateStatus::NeedsReview);
        assert!(!g.authorized);
        assert!(g.reason.contains("timing_compliance"), "{}", g.reason);
    }

    #[test]
    fn gate_does_not_trust_a_pass_its_checks_contradict() {
        let checks = summaries(&[("scope_compliance", CheckResult::Fail)]);
        let g = gate(Some((AuditVerdict::Pass, &checks)));
        assert_eq!(g.status, GateStatus::NeedsReview);
        assert!(!g.authorized);
    }

    #[test]
    fn requests_round_trip_in_the_api_spelling() {
        let json = serde_json::to_value(request()).expect("serialises");
        assert_eq!(json["jobStatus"], "SUCCEEDED");
        assert_eq!(json["healthBefore"][1]["status"], "DEGRADED");
        assert_eq!(json["steps"][0]["rollbackRef"], "rb-svc/api");
        let back: AuditRequest = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, request());
    }

    fn any_result() -> impl Strategy<Value = CheckResult> {
        prop_oneof![
            Just(CheckResult::Pass),
            Just(CheckResult::Fail),
            Just(CheckResult::Inconclusive),
        ]
    }

    proptest! {
        /// The verdict is a function of the checks: any FAIL, else any INCONCLUSIVE, else PASS.
        #[test]
        fn verdict_follows_the_rule(results in proptest::collection::vec(any_result(), 7)) {
            let checks: Vec<CheckOutcome> = results
                .iter()
                .zip(CHECK_IDS)
                .map(|(result, id)| outcome(id, *result))
                .collect();
            let expected = if results.contains(&CheckResult::Fail) {
                AuditVerdict::Fail
            } else if results.contains(&CheckResult::Inconclusive) {
                AuditVerdict::Inconclusive
            } else {
                AuditVerdict::Pass
            };
            let (v, reason) = verdict(&checks);
            prop_assert_eq!(v, expected);
            let (p, f, i) = counts(&checks);
            prop_assert_eq!(p + f + i, 7);
            if v == AuditVerdict::Fail {
                for c in checks.iter().filter(|c| c.result == CheckResult::Fail) {
                    prop_assert!(reason.contains(c.check_id));
                }
            }
            let summaries: Vec<CheckOutcomeSummary> = checks.iter().map(Into::into).collect();
            prop_assert_eq!(gate(Some((v, &summaries))).authorized, v == AuditVerdict::Pass);
        }
    }
}
