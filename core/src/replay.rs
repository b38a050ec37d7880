//! Replaying a run's recorded steps: the run state each step was decided on, rebuilt from the
//! steps before it exactly as the live path holds it on the run (totals, step count, the
//! timestamps a rate window needs), and each step evaluated with the one pure [`evaluate`].
//! `verifyRun` replays against the run's own snapshot; a simulation against a proposed one.
//! Step content is not stored: a replayed step's content is the list of CONTENT_RULE policies
//! it matched when recorded ([`ContentInput::Recorded`]).

use chrono::{DateTime, Utc};
use governance_entities::{run, trace_step};

use crate::policy::{CompiledSnapshot, ContentInput, Evaluation, RunState, StepInput, evaluate};

/// What a run had accumulated before a step: the counters the decision reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub tokens: i64,
    pub cost_micros: i64,
    pub steps: i64,
}

impl Totals {
    /// The totals the run row holds now (the live path decides on these).
    pub fn of(run: &run::Model) -> Self {
        Self {
            tokens: run.tokens_used,
            cost_micros: run.cost_micros,
            steps: run.step_count,
        }
    }
}

/// The run as it was before a step with `totals`, for [`evaluate`]: the one place a
/// [`RunState`] is built from a run.
pub fn run_state<'a>(
    run: &'a run::Model,
    totals: Totals,
    recent_step_timestamps: &'a [DateTime<Utc>],
) -> RunState<'a> {
    RunState {
        run_id: &run.id,
        workflow_id: &run.workflow_id,
        agent: run.agent.as_deref(),
        started_at: run.started_at,
        tokens_used: totals.tokens,
        cost_micros: totals.cost_micros,
        step_count: totals.steps,
        is_synthetic: run.is_synthetic,
        metadata: run.metadata.as_ref(),
        recent_step_timestamps,
    }
}

/// A run's recorded steps replayed in order: [`Replay::evaluate`] the next step, then
/// [`Replay::advance`] past it.
#[derive(Debug)]
pub struct Replay<'r> {
    run: &'r run::Model,
    totals: Totals,
    timestamps: Vec<DateTime<Utc>>,
}

impl<'r> Replay<'r> {
    /// Before the run's first step.
    pub fn new(run: &'r run::Model) -> Self {
        Self {
            run,
            totals: Totals::default(),
            timestamps: Vec::new(),
        }
    }

    /// The decision `snapshot` gives the recorded `step`, on the run as it was before it, with
    /// `content_matches` as the verdicts on its content.
    pub fn evaluate(
        &self,
        snapshot: &CompiledSnapshot,
        step: &trace_step::Model,
        content_matches: &[String],
    ) -> Evaluation {
        evaluate(
            snapshot,
            &run_state(self.run, self.totals, &self.timestamps),
            &StepInput {
                index: step.step_index,
                step_type: step.step_type,
                tokens: step.tokens,
                cost_micros: step.cost_micros,
                tool_name: step.tool_name.as_deref(),
                content: ContentInput::Recorded(content_matches),
                timestamp: step.timestamp,
            },
        )
    }

    /// Count `step` in: what the run held after it.
    pub fn advance(&mut self, step: &trace_step::Model) {
        self.totals.tokens += step.tokens;
        self.totals.cost_micros += step.cost_micros;
        self.totals.steps += 1;
        self.timestamps.push(step.timestamp);
    }

    /// The totals of the steps counted in so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }
}
