//! The decision on a reported step, as pure functions: what the report is for the run as it
//! stands (a new step, a re-sent one, one after the end, or one that cannot be recorded), the
//! evaluation of a new step against the run's snapshot, and the row that records it. The live
//! path (alone or in the group-commit lane) and the synthetic loader use these and nothing else;
//! none of them restates a precondition.
//!
//! A decision is made outside the write path, on the run as read then (its [`Basis`]); the write
//! path accepts it only while the run is still exactly so.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{DecisionAction, RunStatus},
    run, trace_step,
};
use serde_json::Value;

use super::RecordStep;
use crate::{
    chain,
    decision_record::DecisionRecord,
    error::{CoreError, CoreResult},
    hashing::sha256_hex,
    policy::{CompiledSnapshot, ContentInput, Evaluation, StepInput, evaluate},
    replay::{Totals, run_state},
    time::{now, to_millis},
};

/// What a report is, for the run as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// Its index is already recorded: answer the recorded decision (or a conflict).
    Resent(i64),
    /// The run has ended: refused, and the attempt is recorded.
    AfterEnd,
    /// A new step at `index`, happening at `timestamp`.
    New {
        index: i64,
        timestamp: DateTime<Utc>,
    },
}

/// Classify a report against the run as it stands; a step that cannot be recorded (not the next
/// index, or before the run started) is `BAD_USER_INPUT`, and a new step of a run waiting for an
/// approval is `CONFLICT`.
pub(crate) fn classify(run: &run::Model, input: &RecordStep) -> CoreResult<Report> {
    if let Some(index) = input.step_index
        && index < run.step_count
    {
        return Ok(Report::Resent(index));
    }
    if run.status.is_terminal() {
        return Ok(Report::AfterEnd);
    }
    if run.status == RunStatus::AwaitingApproval {
        return Err(CoreError::Conflict(format!(
            "run `{}` is waiting for approval of step {}; it takes no other step until that is decided: send step {} again to get its decision",
            run.id,
            run.step_count - 1,
            run.step_count - 1
        )));
    }
    let index = input.step_index.unwrap_or(run.step_count);
    if index != run.step_count {
        return Err(CoreError::bad_field(
            "input.stepIndex",
            format!(
                "step {index} cannot be recorded yet: the next step of run `{}` is {}",
                run.id, run.step_count
            ),
        ));
    }
    let timestamp = timestamp_of(input);
    if timestamp < run.started_at {
        return Err(CoreError::bad_field(
            "input.timestamp",
            "`timestamp` is before the run started",
        ));
    }
    Ok(Report::New { index, timestamp })
}

/// When the step happened: as reported (to the millisecond), else now.
pub(crate) fn timestamp_of(input: &RecordStep) -> DateTime<Utc> {
    input.timestamp.map(to_millis).unwrap_or_else(now)
}

/// What a decision was made on: the run's status, step count and chain head as read. A step,
/// an end or a stop of the run changes at least one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Basis {
    status: RunStatus,
    step_count: i64,
    head: String,
}

impl Basis {
    pub(crate) fn of(run: &run::Model) -> Self {
        Self {
            status: run.status,
            step_count: run.step_count,
            head: run.trace_head_hash.clone(),
        }
    }

    /// Is `run` still as the decision saw it?
    pub(crate) fn holds_for(&self, run: &run::Model) -> bool {
        self.status == run.status
            && self.step_count == run.step_count
            && self.head == run.trace_head_hash
    }
}

/// A new step, decided outside the write path.
#[derive(Debug, Clone)]
pub(crate) struct Decided {
    /// The run as the decision saw it (its [`Basis`] is what the write path checks).
    pub(crate) run: run::Model,
    pub(crate) index: i64,
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) evaluation: Evaluation,
}

impl Decided {
    /// The decision for `run` as it stands now, if it was made on this very state.
    pub(crate) fn for_run(&self, run: &run::Model, index: i64) -> Option<&Self> {
        (Basis::of(&self.run).holds_for(run) && self.index == index).then_some(self)
    }
}

/// The evaluation of step `index` of `run` (the run as it is before the step).
pub(crate) fn check(
    snapshot: &CompiledSnapshot,
    run: &run::Model,
    index: i64,
    input: &RecordStep,
    timestamp: DateTime<Utc>,
    recent: &[DateTime<Utc>],
) -> Evaluation {
    evaluate(
        snapshot,
        &run_state(run, Totals::of(run), recent),
        &StepInput {
            index,
            step_type: input.step_type,
            tokens: input.tokens,
            cost_micros: input.cost_micros,
            tool_name: input.tool_name.as_deref(),
            content: ContentInput::Text(input.content.as_deref()),
            timestamp,
        },
    )
}

/// A decision that continues the run and records nothing beside the step (no violation,
/// enforcement, incident or event): the steps the lane and the synthetic loader write in bulk.
pub(crate) fn continues_cleanly(evaluation: &Evaluation) -> bool {
    evaluation.action == DecisionAction::Continue
        && evaluation.findings.is_empty()
        && evaluation.shadow_findings.is_empty()
}

/// What a clean step changes on its run: totals, step count, chain head.
pub(crate) fn count_clean_step(run: &mut run::Model, input: &RecordStep, step: &trace_step::Model) {
    run.tokens_used += input.tokens;
    run.cost_micros += input.cost_micros;
    run.step_count += 1;
    run.trace_head_hash = step.entry_hash.clone();
}

pub(crate) fn content_hash(content: Option<&str>) -> String {
    sha256_hex(content.unwrap_or_default())
}

/// Does a re-sent step say the same as the recorded one?
pub(crate) fn same_step(recorded: &trace_step::Model, input: &RecordStep) -> bool {
    recorded.step_type == input.step_type
        && recorded.tokens == input.tokens
        && recorded.cost_micros == input.cost_micros
        && recorded.tool_name == input.tool_name
        && recorded.content_hash == content_hash(input.content.as_deref())
        && input
            .timestamp
            .is_none_or(|t| to_millis(t) == recorded.timestamp)
}

/// The decision detail stored with the step (and hashed into the chain).
fn decision_detail(evaluation: &Evaluation) -> Value {
    DecisionRecord::from(evaluation).to_json()
}

/// The step row as it will be (or would have been) recorded.
pub(crate) fn step_row(
    run: &run::Model,
    index: i64,
    input: &RecordStep,
    timestamp: DateTime<Utc>,
    evaluation: &Evaluation,
) -> trace_step::Model {
    let mut step = trace_step::Model {
        pk: 0,
        tenant_id: run.tenant_id.clone(),
        run_id: run.id.clone(),
        step_index: index,
        timestamp,
        step_type: input.step_type,
        tokens: input.tokens,
        cost_micros: input.cost_micros,
        tool_name: input.tool_name.clone(),
        content_hash: content_hash(input.content.as_deref()),
        status: evaluation.status,
        is_inflection: evaluation.action == DecisionAction::Stop,
        decision: evaluation.action,
        policies_checked: evaluation.policies_checked,
        reason: evaluation.reason.clone(),
        decision_json: decision_detail(evaluation),
        prev_hash: run.trace_head_hash.clone(),
        entry_hash: String::new(),
        created_at: now(),
    };
    step.entry_hash = chain::entry_hash(&step.prev_hash, &chain::step_document(run, &step));
    step
}
