//! "What governed this run at instant `at`?" — the snapshot and thresholds the run was checked
//! against, the decision in force at that instant and why, the run's status then, and where that
//! decision sits in the hash chain so a reader can check it with `verifyRun`.
//!
//! A run is checked against the snapshot taken when it started for its whole life, so the
//! snapshot and thresholds are the same whatever the instant; only the decision and the status
//! depend on `at`.

use crate::time::rfc3339;
use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{DecisionAction, RunStatus},
    policy_snapshot, run, trace_step,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;

use crate::{
    approvals::{self, ApprovalState},
    decision_record::{DecisionRecord, RecordedFinding},
    error::CoreResult,
    runs,
    time::to_millis,
};

/// Where the run was in its life at the instant asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `at` is before the run started: nothing governed it yet.
    BeforeStart,
    /// The run had started but no step had been recorded by `at`.
    BeforeFirstStep,
    /// The run was running; the decision shown was the last one recorded by `at`.
    Running,
    /// The run had ended by `at` (completed, failed, cancelled, or stopped by a policy); the
    /// decision shown is its last one.
    Ended,
}

/// The recorded decision in force at the instant, and the policy that decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainedDecision {
    pub action: DecisionAction,
    /// The step's recorded reason.
    pub reason: String,
    /// The deciding policy: for STOP the inflection policy, for WARN the first WARN finding
    /// (else the first finding), for CONTINUE none.
    pub policy_id: Option<String>,
    pub policy_name: Option<String>,
    pub policy_version: Option<i32>,
    /// The deciding policy's rule as recorded with the finding (else its snapshot threshold).
    pub threshold: Option<Value>,
    /// What the deciding policy observed, as text.
    pub observed_value: Option<String>,
    /// 0-based index of the step that recorded the decision.
    pub step_index: i64,
    pub step_timestamp: DateTime<Utc>,
    /// The step's `entry_hash`.
    pub entry_hash: String,
    /// Position of the step's entry in the run's hash chain. Position 0 is the genesis hash
    /// (binding the run id and the snapshot hash), so step `i` is at position `i + 1`.
    pub chain_position: i64,
    /// Every finding recorded with the decision, as stored.
    pub findings: Vec<RecordedFinding>,
    /// What the SHADOW policies would have done on that step (never part of the decision).
    pub shadow_findings: Vec<RecordedFinding>,
    /// The step's approval, when it was held; `action` is HOLD until the approval was decided
    /// (by `at`), then its final decision.
    pub approval: Option<ApprovalState>,
}

/// What governed a run at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The instant asked about, at millisecond precision.
    pub at: DateTime<Utc>,
    pub phase: Phase,
    /// The run's status then: `None` before it started, `RUNNING` while it ran, its final status
    /// once it had ended.
    pub status: Option<RunStatus>,
    pub run: run::Model,
    /// The run's snapshot: the same for every instant.
    pub snapshot: policy_snapshot::Model,
    /// The snapshot's thresholds (policy id → rule): the same for every instant.
    pub thresholds: Value,
    /// The last recorded decision at or before `at`; `None` before the first step.
    pub decision: Option<ExplainedDecision>,
    /// One or two plain sentences saying what the above means.
    pub note: String,
}

/// Explain what governed run `run_id` of the tenant at `at` (another tenant's run is
/// `NOT_FOUND`). Reads the run, its snapshot and at most one trace step.
pub async fn explain<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
    at: DateTime<Utc>,
) -> CoreResult<Explanation> {
    let at = to_millis(at);
    let run = runs::get(conn, tenant_id, run_id).await?;
    let snapshot = runs::snapshot_of(conn, &run).await?;
    let thresholds = parse_thresholds(&snapshot)?;
    let step = step_in_force(conn, tenant_id, run_id, at).await?;
    // A held step: its approval, and the approval decisions chained before it.
    let (approval, decided_before) = match &step {
        Some(s) => {
            let approval = match s.decision {
                DecisionAction::Hold => {
                    approvals::of_step(conn, tenant_id, run_id, s.step_index).await?
                }
                _ => None,
            };
            let before = approvals::decisions_of_run(conn, run_id)
                .await?
                .iter()
                .filter(|d| d.step_index < s.step_index)
                .count() as i64;
            (approval, before)
        }
        None => (None, 0),
    };
    Ok(with_approval(
        explain_at(run, snapshot, thresholds, step, at),
        approval,
        decided_before,
    ))
}

/// An explanation whose step in force was held: the approval in it, the decision in force at
/// `at` (HOLD while the approval was pending then, else its final decision) and the status
/// (AWAITING_APPROVAL while pending); and the step's chain position counting the
/// `decided_before` approval entries chained before it.
pub fn with_approval(
    mut explanation: Explanation,
    approval: Option<ApprovalState>,
    decided_before: i64,
) -> Explanation {
    let at = explanation.at;
    let Some(decision) = explanation.decision.as_mut() else {
        return explanation;
    };
    decision.chain_position += decided_before;
    let Some(mut approval) = approval else {
        return explanation;
    };
    // What was decided later than `at` was not in force then: it is not shown.
    approval.decision = approval.decision.filter(|d| d.decided_at <= at);
    match &approval.decision {
        Some(decided) => decision.action = decided.decision,
        None if explanation.phase == Phase::Running => {
            explanation.status = Some(RunStatus::AwaitingApproval);
        }
        None => {}
    }
    decision.approval = Some(approval);
    explanation.note = note_for(
        &explanation.run,
        &explanation.snapshot,
        explanation.phase,
        explanation.decision.as_ref(),
        at,
    );
    explanation
}

/// The snapshot's `thresholds_json`, parsed. Malformed text is an internal error: snapshots are
/// written by this service only.
pub fn parse_thresholds(snapshot: &policy_snapshot::Model) -> CoreResult<Value> {
    serde_json::from_str(&snapshot.thresholds_json).map_err(|err| {
        anyhow::anyhow!(
            "snapshot {} has malformed thresholds_json: {err}",
            snapshot.snapshot_id
        )
        .into()
    })
}

/// The recorded step in force at `at`: the greatest timestamp at or before it (ties: the highest
/// index). Only steps in the chain (non-empty `entry_hash`) count.
async fn step_in_force<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
    at: DateTime<Utc>,
) -> CoreResult<Option<trace_step::Model>> {
    Ok(trace_step::Entity::find()
        .filter(trace_step::Column::TenantId.eq(tenant_id))
        .filter(trace_step::Column::RunId.eq(run_id))
        .filter(trace_step::Column::Timestamp.lte(at))
        .filter(trace_step::Column::EntryHash.ne(""))
        .order_by_desc(trace_step::Column::Timestamp)
        .order_by_desc(trace_step::Column::StepIndex)
        .limit(1)
        .one(conn)
        .await?)
}

/// The pure part of [`explain`]: given the run, its snapshot and thresholds, and the step in
/// force at `at` (if any), decide the phase, the status then, the decision and the note.
///
/// - `at` before the run started → `BeforeStart`, no status, no decision.
/// - The run had ended by `at` (its `completed_at` is at or before `at`, or the step in force is
///   its inflection step) → `Ended` with its final status; the decision is its last one.
/// - No step by `at` → `BeforeFirstStep`, `RUNNING`, no decision.
/// - Otherwise → `Running`, `RUNNING`, the step's decision.
pub fn explain_at(
    run: run::Model,
    snapshot: policy_snapshot::Model,
    thresholds: Value,
    step: Option<trace_step::Model>,
    at: DateTime<Utc>,
) -> Explanation {
    let (phase, status) = phase_at(&run, step.as_ref(), at);
    // Before the start nothing is in force, whatever the caller passed.
    let decision = match phase {
        Phase::BeforeStart => None,
        _ => step.as_ref().map(|s| explain_step(s, &thresholds)),
    };
    let note = note_for(&run, &snapshot, phase, decision.as_ref(), at);
    Explanation {
        at,
        phase,
        status,
        run,
        snapshot,
        thresholds,
        decision,
        note,
    }
}

/// The phase and the status of the run at `at`.
fn phase_at(
    run: &run::Model,
    step: Option<&trace_step::Model>,
    at: DateTime<Utc>,
) -> (Phase, Option<RunStatus>) {
    if at < run.started_at {
        return (Phase::BeforeStart, None);
    }
    let ended =
        run.completed_at.is_some_and(|end| at >= end) || step.is_some_and(|s| s.is_inflection);
    match (ended, step) {
        (true, _) => (Phase::Ended, Some(run.status)),
        (false, None) => (Phase::BeforeFirstStep, Some(RunStatus::Running)),
        (false, Some(_)) => (Phase::Running, Some(RunStatus::Running)),
    }
}

/// The decision recorded with `step`, attributed to its deciding policy. A record that does not
/// parse explains nothing beyond the step's own columns (`verifyRun` reports it).
fn explain_step(step: &trace_step::Model, thresholds: &Value) -> ExplainedDecision {
    let record = DecisionRecord::from_json(&step.decision_json).ok();
    let deciding = record.as_ref().and_then(DecisionRecord::deciding_finding);
    let threshold = deciding.and_then(|f| {
        Some(f.threshold.clone())
            .filter(|t| !t.is_null())
            .or_else(|| thresholds.get(&f.policy_id).cloned())
    });
    ExplainedDecision {
        action: step.decision,
        reason: step.reason.clone(),
        policy_id: deciding.map(|f| f.policy_id.clone()),
        policy_name: deciding.map(|f| f.policy_name.clone()),
        policy_version: deciding.map(|f| f.policy_version),
        threshold,
        observed_value: deciding.map(RecordedFinding::observed_text),
        step_index: step.step_index,
        step_timestamp: step.timestamp,
        entry_hash: step.entry_hash.clone(),
        chain_position: step.step_index + 1,
        shadow_findings: record
            .as_ref()
            .map(|r| r.shadow_findings.clone())
            .unwrap_or_default(),
        findings: record.map(|r| r.findings).unwrap_or_default(),
        approval: None,
    }
}

/// The note: what the phase means, then that the snapshot does not depend on the instant.
fn note_for(
    run: &run::Model,
    snapshot: &policy_snapshot::Model,
    phase: Phase,
    decision: Option<&ExplainedDecision>,
    at: DateTime<Utc>,
) -> String {
    let head = match phase {
        Phase::BeforeStart => format!(
            "run `{}` had not started at {}: it started at {}, so no decision was in force.",
            run.id,
            rfc3339(at),
            rfc3339(run.started_at)
        ),
        Phase::BeforeFirstStep => format!(
            "no step had been recorded by {}; the run was running under snapshot {}.",
            rfc3339(at),
            snapshot.snapshot_id
        ),
        Phase::Running => match decision {
            Some(d) if d.action == DecisionAction::Hold => sentence(format!(
                "the run was waiting for a person to approve step {}; the decision in force was {}",
                d.step_index,
                summary(d)
            )),
            Some(d) => sentence(format!(
                "the run was running; the decision in force was {}",
                summary(d)
            )),
            None => "the run was running.".to_string(),
        },
        Phase::Ended => ended_note(run, decision),
    };
    format!(
        "{head} The snapshot {} and its thresholds are those taken when the run started: the same at any instant.",
        snapshot.snapshot_id
    )
}

fn ended_note(run: &run::Model, decision: Option<&ExplainedDecision>) -> String {
    let reason = run
        .termination_reason
        .map(|r| format!(", {r}"))
        .unwrap_or_default();
    let at_step = run
        .stopped_at_step
        .map(|i| format!(", stopped at step {i}"))
        .unwrap_or_default();
    let ended = run
        .completed_at
        .map(|c| format!(" at {}", rfc3339(c)))
        .unwrap_or_default();
    let last = match decision {
        Some(d) => sentence(format!(
            "The decision shown is the last one: {}",
            summary(d)
        )),
        None => "It ended before any step was recorded, so there is no decision.".to_string(),
    };
    format!(
        "the run had ended{ended} ({}{reason}{at_step}). {last}",
        run.status
    )
}

/// `text` ending with a full stop, unless it already ends with punctuation (recorded reasons
/// usually do).
fn sentence(text: String) -> String {
    if text.ends_with(['.', '!', '?']) {
        text
    } else {
        format!("{text}.")
    }
}

/// `step 3 (CONTINUE): <reason>`.
fn summary(decision: &ExplainedDecision) -> String {
    format!(
        "step {} ({}): {}",
        decision.step_index, decision.action, decision.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use governance_entities::enums::{StepStatus, StepType, TerminationReason};
    use serde_json::json;

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    fn run_model() -> run::Model {
        run::Model {
            id: "run_1".into(),
            tenant_id: "ten_1".into(),
            workflow_id: "wf".into(),
            agent: None,
            triggered_by: None,
            status: RunStatus::Running,
            termination_reason: None,
            error: None,
            policy_snapshot_id: "SNAP-abcdefabcdef".into(),
            policy_set_version: "1.0.0".into(),
            stopped_at_step: None,
            violation_policy_id: None,
            tokens_used: 0,
            cost_micros: 0,
            step_count: 0,
            is_synthetic: false,
            synthetic_scenario_id: None,
            metadata: None,
            started_at: t(0),
            completed_at: None,
            trace_head_hash: "genesis".into(),
            violation_step_index: None,
            violation_timestamp: None,
            violation_reason: None,
            record_format: 2,
            logged_head_hash: None,
            logged_at: None,
            deadline_at: None,
            created_at: t(0),
            updated_at: t(0),
        }
    }

    fn stopped_run() -> run::Model {
        run::Model {
            status: RunStatus::FailedPolicy,
            termination_reason: Some(TerminationReason::BudgetExceeded),
            stopped_at_step: Some(2),
            completed_at: Some(t(30)),
            ..run_model()
        }
    }

    fn snapshot() -> policy_snapshot::Model {
        policy_snapshot::Model {
            pk: 1,
            tenant_id: "ten_1".into(),
            snapshot_id: "SNAP-abcdefabcdef".into(),
            content_hash: "abcdef".into(),
            policies_json: "[]".into(),
            thresholds_json: r#"{"pol_a":{"maxTokens":100},"pol_w":{"maxSteps":5}}"#.into(),
            policy_count: 2,
            version: "1.0.0".into(),
            created_at: t(0),
        }
    }

    fn thresholds() -> Value {
        parse_thresholds(&snapshot()).unwrap()
    }

    fn finding(id: &str, action: &str, observed: Value) -> Value {
        json!({
            "policyId": id,
            "policyVersion": 3,
            "policyName": format!("policy {id}"),
            "kind": "TOKEN_BUDGET",
            "action": action,
            "severity": "HIGH",
            "threshold": { "maxTokens": 100 },
            "observed": observed,
            "violatedRule": "maxTokens",
            "evaluatedValue": "120",
            "thresholdCondition": "tokensUsed > 100",
            "reason": "over budget",
        })
    }

    fn step(index: i64, at: i64, decision: DecisionAction, detail: Value) -> trace_step::Model {
        trace_step::Model {
            pk: index + 1,
            tenant_id: "ten_1".into(),
            run_id: "run_1".into(),
            step_index: index,
            timestamp: t(at),
            step_type: StepType::LlmCall,
            tokens: 10,
            cost_micros: 0,
            tool_name: None,
            content_hash: "c".into(),
            status: StepStatus::Ok,
            is_inflection: decision == DecisionAction::Stop,
            decision,
            policies_checked: 2,
            reason: format!("reason {index}"),
            decision_json: detail,
            prev_hash: "p".into(),
            entry_hash: format!("h{index}"),
            created_at: t(at),
        }
    }

    fn continue_step(index: i64, at: i64) -> trace_step::Model {
        step(
            index,
            at,
            DecisionAction::Continue,
            json!({ "action": "CONTINUE", "findings": [], "inflectionPolicyId": null }),
        )
    }

    fn stop_step(index: i64, at: i64) -> trace_step::Model {
        step(
            index,
            at,
            DecisionAction::Stop,
            json!({
                "action": "STOP",
                "findings": [finding("pol_w", "WARN", json!(6)), finding("pol_a", "BLOCK", json!(120))],
                "inflectionPolicyId": "pol_a",
                "terminationReason": "BUDGET_EXCEEDED",
            }),
        )
    }

    #[test]
    fn before_start_has_no_status_and_no_decision() {
        let e = explain_at(run_model(), snapshot(), thresholds(), None, t(-5));
        assert_eq!(e.phase, Phase::BeforeStart);
        assert_eq!(e.status, None);
        assert!(e.decision.is_none());
        assert!(e.note.contains("had not started"));
        assert!(e.note.contains(&rfc3339(t(0))));
        assert_eq!(e.thresholds, thresholds());
    }

    #[test]
    fn before_first_step_is_running_without_decision() {
        let e = explain_at(run_model(), snapshot(), thresholds(), None, t(5));
        assert_eq!(e.phase, Phase::BeforeFirstStep);
        assert_eq!(e.status, Some(RunStatus::Running));
        assert!(e.decision.is_none());
        assert!(e.note.starts_with("no step had been recorded by"));
        assert!(e.note.contains("SNAP-abcdefabcdef"));
        assert!(e.note.contains("same at any instant"));
    }

    #[test]
    fn running_shows_the_step_in_force() {
        let e = explain_at(
            run_model(),
            snapshot(),
            thresholds(),
            Some(continue_step(3, 10)),
            t(12),
        );
        assert_eq!(e.phase, Phase::Running);
        assert_eq!(e.status, Some(RunStatus::Running));
        let d = e.decision.unwrap();
        assert_eq!(d.action, DecisionAction::Continue);
        assert_eq!((d.step_index, d.chain_position), (3, 4));
        assert_eq!(d.entry_hash, "h3");
        assert_eq!(d.step_timestamp, t(10));
        assert!(e.note.contains("step 3 (CONTINUE): reason 3. The snapshot"));
    }

    #[test]
    fn the_stop_step_means_ended_even_before_completed_at() {
        // A run stopped at t(30), asked about exactly the stop step's instant.
        let mut run = stopped_run();
        run.completed_at = Some(t(31));
        let e = explain_at(run, snapshot(), thresholds(), Some(stop_step(2, 30)), t(30));
        assert_eq!(e.phase, Phase::Ended);
        assert_eq!(e.status, Some(RunStatus::FailedPolicy));
        assert!(
            e.note
                .contains("FAILED_POLICY, BUDGET_EXCEEDED, stopped at step 2")
        );
        assert!(e.note.contains("last one: step 2 (STOP)"));
    }

    #[test]
    fn after_the_end_the_last_decision_is_shown() {
        let mut run = run_model();
        run.status = RunStatus::Succeeded;
        run.termination_reason = Some(TerminationReason::Completed);
        run.completed_at = Some(t(40));
        let e = explain_at(
            run,
            snapshot(),
            thresholds(),
            Some(continue_step(4, 35)),
            t(50),
        );
        assert_eq!(e.phase, Phase::Ended);
        assert_eq!(e.status, Some(RunStatus::Succeeded));
        assert_eq!(e.decision.unwrap().step_index, 4);
        assert!(e.note.contains("SUCCEEDED, COMPLETED"));
    }

    #[test]
    fn ended_without_steps_has_no_decision() {
        let mut run = run_model();
        run.status = RunStatus::Cancelled;
        run.termination_reason = Some(TerminationReason::UserAbort);
        run.completed_at = Some(t(3));
        let e = explain_at(run, snapshot(), thresholds(), None, t(3));
        assert_eq!(e.phase, Phase::Ended);
        assert_eq!(e.status, Some(RunStatus::Cancelled));
        assert!(e.decision.is_none());
        assert!(e.note.contains("before any step was recorded"));
    }

    #[test]
    fn stop_is_attributed_to_the_inflection_policy() {
        let d = explain_step(&stop_step(2, 30), &thresholds());
        assert_eq!(d.policy_id.as_deref(), Some("pol_a"));
        assert_eq!(d.policy_name.as_deref(), Some("policy pol_a"));
        assert_eq!(d.policy_version, Some(3));
        assert_eq!(d.threshold, Some(json!({ "maxTokens": 100 })));
        assert_eq!(d.observed_value.as_deref(), Some("120"));
        assert_eq!(d.findings.len(), 2);
    }

    #[test]
    fn warn_is_attributed_to_the_first_warn_finding() {
        let mut without_threshold = finding("pol_w", "WARN", json!("six steps"));
        without_threshold["threshold"] = Value::Null;
        let s = step(
            1,
            5,
            DecisionAction::Warn,
            json!({
                "action": "WARN",
                "findings": [finding("pol_b", "BLOCK", json!(1)), without_threshold],
                "inflectionPolicyId": null,
            }),
        );
        let d = explain_step(&s, &thresholds());
        assert_eq!(d.policy_id.as_deref(), Some("pol_w"));
        // Falls back to the snapshot's threshold of the policy.
        assert_eq!(d.threshold, Some(json!({ "maxSteps": 5 })));
        assert_eq!(d.observed_value.as_deref(), Some("six steps"));
    }

    #[test]
    fn warn_without_warn_finding_takes_the_first_and_observed_falls_back() {
        let s = step(
            1,
            5,
            DecisionAction::Warn,
            json!({ "action": "WARN", "findings": [finding("pol_x", "BLOCK", Value::Null)] }),
        );
        let d = explain_step(&s, &thresholds());
        assert_eq!(d.policy_id.as_deref(), Some("pol_x"));
        assert_eq!(d.observed_value.as_deref(), Some("120"));
    }

    #[test]
    fn recorded_reasons_are_not_punctuated_twice() {
        assert_eq!(sentence("none violated.".into()), "none violated.");
        assert_eq!(sentence("none violated".into()), "none violated.");
    }

    #[test]
    fn continue_names_no_policy() {
        let d = explain_step(&continue_step(0, 1), &thresholds());
        assert_eq!(d.policy_id, None);
        assert_eq!(d.policy_name, None);
        assert_eq!(d.policy_version, None);
        assert_eq!(d.threshold, None);
        assert_eq!(d.observed_value, None);
        assert_eq!(d.chain_position, 1);
    }
}
