//! Steps and their proof: `recordStep` (the decision for each step, in the run's path), the
//! trace with its hash chain and inflection, violations, incidents, and `verifyRun`.

use async_graphql::ErrorExtensions;
use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use governance_core::roles::Capability;
use governance_core::{
    ids,
    steps::{RecordStep, StepOutcome},
    verify,
};
use governance_entities::{incident, run, trace_step, violation};
use serde_json::Value;

use super::{
    approvals::Approval,
    enums::{DecisionAction, StepStatus, StepType, TerminationReason},
    error::GqlResultExt,
    incidents::{Incident, Violation},
    loaders::{self, loader},
    pagination::{self, Conn, PageArgs},
    policies::Policy,
    principal,
    runs::{Run, load_run},
    scalars::DateTime,
    state,
};

pub struct TraceStep(pub trace_step::Model);

/// One step of a run, as recorded, with its decision and its link in the hash chain.
#[Object]
impl TraceStep {
    /// `stp_<run ulid>_<step index>`.
    pub async fn id(&self) -> ID {
        ID(ids::step_id(&self.0.run_id, self.0.step_index))
    }
    /// The run the step belongs to.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        load_run(ctx, &self.0.run_id).await
    }
    /// 0-based.
    async fn step_index(&self) -> i64 {
        self.0.step_index
    }
    /// When the step happened (as reported, or when it was recorded).
    async fn timestamp(&self) -> DateTime {
        self.0.timestamp.into()
    }
    /// What kind of work the step was.
    #[graphql(name = "type")]
    async fn step_type(&self) -> StepType {
        self.0.step_type.into()
    }
    /// Tokens the step used.
    async fn tokens(&self) -> i64 {
        self.0.tokens
    }
    /// Cost of the step in micro-dollars.
    async fn cost_micros(&self) -> i64 {
        self.0.cost_micros
    }
    /// The tool called, for TOOL_CALL steps.
    async fn tool_name(&self) -> Option<&str> {
        self.0.tool_name.as_deref()
    }
    /// sha256 of the reported content (the content itself is not stored).
    async fn content_hash(&self) -> &str {
        &self.0.content_hash
    }
    /// OK, WARNING (a WARN policy fired) or VIOLATION (the run stopped here).
    async fn status(&self) -> StepStatus {
        self.0.status.into()
    }
    /// True for the step that stopped the run.
    async fn is_inflection(&self) -> bool {
        self.0.is_inflection
    }
    /// The decision taken for the step.
    async fn decision(&self) -> DecisionAction {
        self.0.decision.into()
    }
    /// Why, in words.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// How many policies the step was checked against.
    async fn policies_checked(&self) -> i32 {
        self.0.policies_checked
    }
    /// The full decision: every finding with threshold and observed value.
    async fn decision_detail(&self) -> Json<Value> {
        Json(self.0.decision_json.clone())
    }
    /// The previous step's `entryHash` (for step 0: the genesis binding run and snapshot).
    async fn prev_hash(&self) -> &str {
        &self.0.prev_hash
    }
    /// sha256(prevHash ‖ canonical step and decision). Empty when the step was not recorded.
    async fn entry_hash(&self) -> &str {
        &self.0.entry_hash
    }
    /// The step's approval, when it was held (decision HOLD): pending, or what was decided (its
    /// decision is the next entry of the chain).
    async fn approval(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Approval>> {
        if self.0.decision != governance_entities::enums::DecisionAction::Hold {
            return Ok(None);
        }
        let found = governance_core::approvals::of_step(
            &state(ctx).db,
            &self.0.tenant_id,
            &self.0.run_id,
            self.0.step_index,
        )
        .await
        .gql()?;
        Ok(found.map(Approval))
    }
}

/// The stopping point of a run.
#[derive(SimpleObject)]
pub struct Inflection {
    /// The 0-based index of the stopping step.
    pub step_index: i64,
    /// When the stopping step happened.
    pub timestamp: DateTime,
    /// The policy that stopped the run, as it is now.
    pub policy: Option<Policy>,
    /// The id of the policy that stopped the run.
    pub policy_id: Option<String>,
    /// Why the run was stopped.
    pub reason: Option<String>,
}

pub struct Trace(pub run::Model);

/// A run's trace: its steps in order and the head of its hash chain.
#[Object]
impl Trace {
    /// `entryHash` of the last entry: the last step, or the approval decision that follows it
    /// (the genesis hash before the first step).
    async fn head_hash(&self) -> &str {
        &self.0.trace_head_hash
    }
    /// How many steps are recorded.
    async fn step_count(&self) -> i64 {
        self.0.step_count
    }
    /// The step that stopped the run, if one did.
    async fn inflection(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Inflection>> {
        let (Some(step_index), Some(timestamp)) =
            (self.0.violation_step_index, self.0.violation_timestamp)
        else {
            return Ok(None);
        };
        let policy = match &self.0.violation_policy_id {
            Some(id) => loader(ctx)?
                .load_one(loaders::PolicyId(id.clone()))
                .await?
                .map(Policy),
            None => None,
        };
        Ok(Some(Inflection {
            step_index,
            timestamp: timestamp.into(),
            policy,
            policy_id: self.0.violation_policy_id.clone(),
            reason: self.0.violation_reason.clone(),
        }))
    }
    /// The steps in order (0-based). Cursors are stable: a step, once recorded, never moves.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn steps(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<TraceStep>> {
        // Steps are dense (0..stepCount) and never move: the page is an index range, loaded in
        // one batch with the pages of every other run in the response.
        let total = self.0.step_count;
        let page =
            pagination::dense_window(ctx, total, &PageArgs::new(first, after, last, before))?;
        let rows = if page.start < page.end {
            loader(ctx)?
                .load_one(loaders::StepsOfRun {
                    run_id: self.0.id.clone(),
                    start: page.start,
                    end: page.end,
                })
                .await?
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(pagination::dense_connection(
            &page,
            total,
            rows,
            |s| s.step_index.to_string(),
            TraceStep,
        ))
    }
}

pub struct StepDecision {
    action: DecisionAction,
    reason: String,
    recorded: bool,
    replayed: bool,
    termination_reason: Option<TerminationReason>,
    step: trace_step::Model,
    violations: Vec<violation::Model>,
    incident: Option<incident::Model>,
    approval: Option<Approval>,
    run: run::Model,
}

/// The answer to `recordStep`: what to do now, and why.
#[Object]
impl StepDecision {
    /// CONTINUE, WARN, STOP (stop executing the run now), or HOLD (wait: a person must approve
    /// the step; send it again to get the final decision).
    async fn action(&self) -> DecisionAction {
        self.action
    }
    /// Why, in words.
    async fn reason(&self) -> &str {
        &self.reason
    }
    /// True when the decision is committed. False only when failing closed: the service could
    /// not record the step, so the answer is STOP with `SYSTEM_FAILURE`.
    async fn recorded(&self) -> bool {
        self.recorded
    }
    /// True when this repeats the decision recorded for the same step earlier.
    async fn replayed(&self) -> bool {
        self.replayed
    }
    /// Why the run ends, when the action is STOP.
    async fn termination_reason(&self) -> Option<TerminationReason> {
        self.termination_reason
    }
    /// The step as recorded (or, when failing closed, as it would have been).
    async fn step(&self) -> TraceStep {
        TraceStep(self.step.clone())
    }
    /// Every policy this step violated.
    async fn violations(&self) -> Vec<Violation> {
        self.violations.iter().cloned().map(Violation).collect()
    }
    /// The incident opened by this step's stop.
    async fn incident(&self) -> Option<Incident> {
        self.incident.clone().map(Incident)
    }
    /// The run after this step.
    async fn run(&self) -> Run {
        Run(self.run.clone())
    }
    /// A held step's approval (HOLD; and once decided, what was decided).
    async fn approval(&self) -> Option<Approval> {
        self.approval.clone()
    }
}

/// Input of `recordStep`.
#[derive(InputObject)]
pub struct RecordStepInput {
    /// The running run the step belongs to.
    pub run_id: ID,
    /// 0-based; omitted means the next one. Re-sending a recorded index with the same step
    /// returns its recorded decision; with a different step it is a `CONFLICT`.
    pub step_index: Option<i64>,
    /// What kind of work the step was.
    #[graphql(name = "type")]
    pub step_type: StepType,
    /// Tokens the step used (0 or more).
    pub tokens: i64,
    /// Cost of the step in micro-dollars (0 or more).
    #[graphql(default = 0)]
    pub cost_micros: i64,
    /// The step's content (prompt, output, tool arguments); only its sha256 is stored.
    pub content: Option<String>,
    /// The tool called, for TOOL_CALL steps (checked by tool allowlists).
    pub tool_name: Option<String>,
    /// Default: now.
    pub timestamp: Option<DateTime>,
}

/// One difference `verifyRun` found.
#[derive(SimpleObject)]
pub struct VerificationMismatch {
    /// The step where it was found (null for the run or snapshot as a whole).
    pub step_index: Option<i64>,
    /// What differs, e.g. `ENTRY_HASH`, `DECISION`, `SNAPSHOT_HASH`.
    pub kind: String,
    /// What recomputing gives.
    pub expected: String,
    /// What is stored.
    pub found: String,
}

/// The result of `verifyRun`.
#[derive(SimpleObject)]
pub struct RunVerification {
    /// Every hash checks out: snapshot, each step's chain link, the head; and, once the run is
    /// in the tenant's transparency log, the logged head lies on that chain, the leaf is in the
    /// latest checkpoint, the checkpoint is signed by a published key, and the log extends the
    /// last witnessed checkpoint.
    pub intact: bool,
    /// Replaying each step against the snapshot reproduces every recorded decision.
    pub reproduced: bool,
    /// The recomputed head of the hash chain.
    pub head_hash: String,
    /// How many steps were recomputed and replayed.
    pub steps_checked: i64,
    /// Every difference found; empty when the run is intact and reproduced.
    pub mismatches: Vec<VerificationMismatch>,
    /// The size of the signed checkpoint the run was checked against; null while the log does
    /// not hold the run yet.
    pub checkpoint_tree_size: Option<i64>,
}

#[derive(Default)]
pub struct StepQuery;

#[Object]
impl StepQuery {
    /// Recompute a run's hash chain, replay every step against its snapshot, and check the run
    /// against the tenant's transparency log. Costly: rate limited per tenant (`RATE_LIMITED`
    /// with `retryAfterMs`).
    #[graphql(complexity = 100)]
    async fn verify_run(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<RunVerification> {
        super::rate_limit(ctx, governance_core::rate_limit::Costly::VerifyRun)?;
        let principal = principal(ctx)?;
        let state = state(ctx);
        let anchors = verify::Anchors {
            keys: state.signing.verifiers(),
            witness_file: state.config.log.witness_file.clone(),
        };
        let v = verify::verify_anchored(&state.db, &principal.tenant_id, &id, &anchors)
            .await
            .gql()?;
        Ok(RunVerification {
            intact: v.intact,
            reproduced: v.reproduced,
            head_hash: v.head_hash,
            steps_checked: v.steps_checked,
            mismatches: v
                .mismatches
                .into_iter()
                .map(|m| VerificationMismatch {
                    step_index: m.step_index,
                    kind: m.kind,
                    expected: m.expected,
                    found: m.found,
                })
                .collect(),
            checkpoint_tree_size: v.checkpoint_tree_size,
        })
    }
}

#[derive(Default)]
pub struct StepMutation;

#[Object]
impl StepMutation {
    /// Report a step of a running run and get the decision: CONTINUE, WARN, STOP, or HOLD (see
    /// `approveStep`). The step is
    /// checked against the run's snapshot; the answer comes only after the decision is committed.
    /// A step reported after the run ended is refused with `RUN_TERMINATED`.
    async fn record_step(
        &self,
        ctx: &Context<'_>,
        input: RecordStepInput,
    ) -> async_graphql::Result<StepDecision> {
        let principal = super::authorized(ctx, Capability::ReportRuns)?;
        let state = state(ctx);
        let started = std::time::Instant::now();
        let committed = state
            .recorder
            .record_by_key(
                principal,
                RecordStep {
                    run_id: input.run_id.to_string(),
                    step_index: input.step_index,
                    step_type: input.step_type.into(),
                    tokens: input.tokens,
                    cost_micros: input.cost_micros,
                    content: input.content,
                    tool_name: input.tool_name,
                    timestamp: input.timestamp.map(|t| t.0),
                },
            )
            .await;
        let decision = match &committed {
            Ok(c) => match &c.value {
                StepOutcome::Recorded(record) if record.replayed => "REPLAYED",
                StepOutcome::Recorded(record) => record.step.decision.as_str(),
                StepOutcome::FailClosed { .. } => "FAIL_CLOSED",
            },
            Err(_) => "REFUSED",
        };
        state
            .metrics
            .step_seconds
            .observe(started.elapsed().as_secs_f64());
        state.metrics.steps.with_label_values(&[decision]).inc();
        let outcome = state.after_commit(committed.gql()?).await;
        Ok(match outcome {
            StepOutcome::Recorded(record) => StepDecision {
                action: record.action().into(),
                reason: record.reason(),
                recorded: true,
                replayed: record.replayed,
                termination_reason: record.termination_reason().map(Into::into),
                approval: record.approval.clone().map(Approval),
                step: record.step,
                violations: record.violations,
                incident: record.incident,
                run: record.run,
            },
            StepOutcome::FailClosed {
                run: Some(run),
                step,
                reason,
            } => StepDecision {
                action: DecisionAction::Stop,
                reason,
                recorded: false,
                replayed: false,
                termination_reason: Some(TerminationReason::SystemFailure),
                step,
                violations: Vec::new(),
                incident: None,
                approval: None,
                run,
            },
            // Not even the run could be read: still fail closed, as an error that says STOP.
            StepOutcome::FailClosed {
                run: None, reason, ..
            } => {
                return Err(async_graphql::Error::new(reason).extend_with(|_, ext| {
                    ext.set("code", "INTERNAL");
                    ext.set("action", "STOP");
                    ext.set("terminationReason", "SYSTEM_FAILURE");
                }));
            }
        })
    }
}
