//! Runs: start, complete, cancel, read, and follow one run live.

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject, Subscription};
use governance_core::roles::Capability;

use futures::{Stream, StreamExt};
use governance_core::{
    CoreError,
    runs::{self, Completion, StartRun},
};
use governance_entities::{enums as db, policy_evaluation, run};
use serde_json::Value;

use super::{
    enums::{EvaluationOutcome, RunStatus, TerminationReason},
    error::GqlResultExt,
    explain::RunExplanation,
    exports::Export,
    incidents::{Incident, Violation},
    loaders::{self, loader},
    pagination::{self, Conn, KeyKind, Order, PageArgs},
    policies::PolicyEnforcement,
    principal,
    scalars::DateTime,
    snapshots::PolicySnapshot,
    state,
    steps::{Trace, TraceStep},
};
use governance_workers::events::{RunItem, run_stream};

pub struct Run(pub run::Model);

/// One execution of an agent or workflow, checked step by step against the policy snapshot
/// taken when it started.
#[Object]
impl Run {
    /// `run_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The workflow this run executes; workflow-scoped policies apply to it.
    async fn workflow_id(&self) -> &str {
        &self.0.workflow_id
    }
    /// The agent that executes the run.
    async fn agent(&self) -> Option<&str> {
        self.0.agent.as_deref()
    }
    /// Who or what started the run (user, schedule, upstream system).
    async fn triggered_by(&self) -> Option<&str> {
        self.0.triggered_by.as_deref()
    }
    /// Where the run is in its life.
    async fn status(&self) -> RunStatus {
        self.0.status.into()
    }
    /// Why the run ended; null while it runs.
    async fn termination_reason(&self) -> Option<TerminationReason> {
        self.0.termination_reason.map(Into::into)
    }
    /// The error the integrator reported, or the cancellation reason.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// When the run started (and its snapshot was taken).
    async fn started_at(&self) -> DateTime {
        self.0.started_at.into()
    }
    /// The run's latest logged head and the proof that it is in the tenant's latest signed
    /// checkpoint; null until the log holds it (seconds after the run ends, and every
    /// `log.head_interval_secs` while it runs).
    async fn inclusion_proof(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::transparency::InclusionProof>> {
        governance_core::transparency::inclusion_proof(
            &state(ctx).db,
            &self.0.tenant_id,
            &self.0.id,
        )
        .await
        .gql()
        .map(|p| p.map(super::transparency::InclusionProof))
    }
    /// The record format its hash chain is written in (`docs/verifying.md`): 2 since format 2
    /// (RFC 8785 documents, a genesis binding the run's header), 1 for runs recorded before.
    async fn record_format(&self) -> i32 {
        self.0.record_format
    }
    /// When the run ended; null while it runs.
    async fn completed_at(&self) -> Option<DateTime> {
        self.0.completed_at.map(Into::into)
    }
    /// Milliseconds from start to end; null while the run is running.
    async fn duration_ms(&self) -> Option<i64> {
        self.0
            .completed_at
            .map(|end| (end - self.0.started_at).num_milliseconds())
    }
    /// Tokens used by the recorded steps.
    async fn tokens_used(&self) -> i64 {
        self.0.tokens_used
    }
    /// Cost in micro-dollars (1 USD = 1,000,000).
    async fn cost_micros(&self) -> i64 {
        self.0.cost_micros
    }
    /// How many steps are recorded.
    async fn step_count(&self) -> i64 {
        self.0.step_count
    }
    /// The 0-based index of the step that stopped the run.
    async fn stopped_at_step(&self) -> Option<i64> {
        self.0.stopped_at_step
    }
    /// True for test and simulation runs.
    async fn is_synthetic(&self) -> bool {
        self.0.is_synthetic
    }
    /// The scenario a synthetic run plays.
    async fn synthetic_scenario_id(&self) -> Option<&str> {
        self.0.synthetic_scenario_id.as_deref()
    }
    /// Free-form JSON the integrator attached at the start.
    async fn metadata(&self) -> Option<Json<Value>> {
        self.0.metadata.clone().map(Json)
    }
    /// The policy-set version (semver) in force when the run started.
    async fn policy_version(&self) -> &str {
        &self.0.policy_set_version
    }
    /// The snapshot id (`SNAP-…`) the run is checked against; never changes.
    async fn policy_snapshot_id(&self) -> &str {
        &self.0.policy_snapshot_id
    }
    /// The immutable policy snapshot the run is checked against.
    async fn policy_snapshot(&self, ctx: &Context<'_>) -> async_graphql::Result<PolicySnapshot> {
        loader(ctx)?
            .load_one(loaders::SnapshotId(self.0.policy_snapshot_id.clone()))
            .await?
            .map(PolicySnapshot)
            .ok_or_else(|| {
                CoreError::Internal(anyhow::anyhow!(
                    "run {} names snapshot {} which does not exist",
                    self.0.id,
                    self.0.policy_snapshot_id
                ))
            })
            .gql()
    }
    /// The run's trace: steps, inflection, head of the hash chain.
    async fn trace(&self) -> Trace {
        Trace(self.0.clone())
    }
    /// Every violation of the run, in step order.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn violations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Violation>> {
        loaders::page_of(
            ctx,
            loaders::ViolationsOfRun(self.0.id.clone()),
            PageArgs::new(first, after, last, before),
            |v| v.id.clone(),
            Violation,
        )
        .await
    }
    /// The incident opened when the run was stopped.
    async fn incident(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Incident>> {
        Ok(loader(ctx)?
            .load_one(loaders::IncidentOfRun(self.0.id.clone()))
            .await?
            .map(Incident))
    }
    /// The run's enforcement log (stops, warnings, refused steps), oldest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn enforcements(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<PolicyEnforcement>> {
        loaders::page_of(
            ctx,
            loaders::EnforcementsOfRun(self.0.id.clone()),
            PageArgs::new(first, after, last, before),
            |e| e.id.clone(),
            PolicyEnforcement,
        )
        .await
    }
    /// The run's evaluation record, written once the run has ended (null until then).
    async fn evaluation(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<PolicyEvaluation>> {
        Ok(loader(ctx)?
            .load_one(loaders::EvaluationOfRun(self.0.id.clone()))
            .await?
            .map(PolicyEvaluation))
    }
    /// Exports of the run's incident, oldest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn exports(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Export>> {
        loaders::page_of(
            ctx,
            loaders::ExportsOfRun(self.0.id.clone()),
            PageArgs::new(first, after, last, before),
            |e| e.id.clone(),
            Export,
        )
        .await
    }
    /// What governed the run at instant `at`: the snapshot and thresholds in force, the last
    /// decision at or before `at` and why, the run's status then, and where that decision sits
    /// in the hash chain. Before the first step and after the end, `phase` and `note` say so.
    #[graphql(complexity = 20)]
    async fn explain(
        &self,
        ctx: &Context<'_>,
        at: DateTime,
    ) -> async_graphql::Result<RunExplanation> {
        super::rate_limit(ctx, governance_core::rate_limit::Costly::Explain)?;
        let explanation =
            governance_core::explain::explain(&state(ctx).db, &self.0.tenant_id, &self.0.id, at.0)
                .await
                .gql()?;
        Ok(RunExplanation(explanation))
    }
}

pub struct PolicyEvaluation(pub policy_evaluation::Model);

/// What governance concluded about an ended run. Exactly one per run.
#[Object]
impl PolicyEvaluation {
    /// `eval_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The verdict on the whole run.
    async fn outcome(&self) -> EvaluationOutcome {
        self.0.outcome.into()
    }
    /// How many policies of the snapshot applied.
    async fn policies_checked(&self) -> i32 {
        self.0.policies_checked
    }
    /// The verdict in words.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// True when only WARN policies fired: a candidate for tightening into a draft policy.
    async fn draft_candidate(&self) -> bool {
        self.0.draft_candidate
    }
    /// True when the run was synthetic.
    async fn is_synthetic(&self) -> bool {
        self.0.is_synthetic
    }
    /// The scenario of a synthetic run.
    async fn synthetic_scenario_id(&self) -> Option<&str> {
        self.0.synthetic_scenario_id.as_deref()
    }
    /// The snapshot (`SNAP-…`) the run was checked against.
    async fn snapshot_id(&self) -> &str {
        &self.0.snapshot_id
    }
    /// The snapshot the verdict was reached under.
    async fn snapshot(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<PolicySnapshot>> {
        Ok(loader(ctx)?
            .load_one(loaders::SnapshotId(self.0.snapshot_id.clone()))
            .await?
            .map(PolicySnapshot))
    }
    /// The run evaluated.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        load_run(ctx, &self.0.run_id).await
    }
    /// When the record was written.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

/// A run of the caller's tenant through the loader (batched with its siblings).
pub async fn load_run(ctx: &Context<'_>, id: &str) -> async_graphql::Result<Run> {
    loader(ctx)?
        .load_one(loaders::RunId(id.to_string()))
        .await?
        .map(Run)
        .ok_or_else(|| CoreError::not_found("Run", id))
        .gql()
}

/// Filter of `runs`. Every field narrows the list; lists match any of their values.
#[derive(InputObject, Default)]
pub struct RunFilter {
    /// Runs in any of these statuses.
    pub status: Option<Vec<RunStatus>>,
    /// Runs that ended for any of these reasons.
    pub termination_reason: Option<Vec<TerminationReason>>,
    /// Runs of this workflow.
    pub workflow_id: Option<String>,
    /// Runs of this agent.
    pub agent: Option<String>,
    /// Runs started at or after this instant.
    pub from: Option<DateTime>,
    /// Runs started before this instant.
    pub to: Option<DateTime>,
    /// Runs checked against this snapshot (`SNAP-…`).
    pub policy_snapshot_id: Option<String>,
    /// True: only runs with an incident; false: only runs without one.
    pub has_incident: Option<bool>,
    /// True: only synthetic (test) runs; false: only real ones.
    pub is_synthetic: Option<bool>,
}

impl From<RunFilter> for governance_core::run_filter::RunFilter {
    fn from(f: RunFilter) -> Self {
        Self {
            status: f
                .status
                .map(|s| s.into_iter().map(db::RunStatus::from).collect()),
            termination_reason: f
                .termination_reason
                .map(|r| r.into_iter().map(db::TerminationReason::from).collect()),
            workflow_id: f.workflow_id,
            agent: f.agent,
            from: f.from.map(|t| t.0),
            to: f.to.map(|t| t.0),
            policy_snapshot_id: f.policy_snapshot_id,
            has_incident: f.has_incident,
            is_synthetic: f.is_synthetic,
        }
    }
}

/// Input of `startRun`.
#[derive(InputObject)]
pub struct StartRunInput {
    /// The workflow this run executes; policies scoped to it apply.
    pub workflow_id: String,
    /// The agent that executes the run.
    pub agent: Option<String>,
    /// Who or what started the run.
    pub triggered_by: Option<String>,
    /// True for a test or simulation run (kept apart in KPIs and filters).
    #[graphql(default = false)]
    pub is_synthetic: bool,
    /// The scenario a synthetic run plays.
    pub synthetic_scenario_id: Option<String>,
    /// Free-form JSON object kept with the run.
    pub metadata: Option<Json<Value>>,
}

/// How an integrator ends a run.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum RunCompletionStatus {
    /// Ended normally (termination reason `COMPLETED`).
    Succeeded,
    /// Ended with an error (termination reason `SYSTEM_FAILURE`).
    Failed,
}

#[derive(Default)]
pub struct RunQuery;

#[Object]
impl RunQuery {
    /// The tenant's runs, newest first.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        filter: Option<RunFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Run>> {
        let principal = principal(ctx)?;
        let filter = governance_core::run_filter::RunFilter::from(filter.unwrap_or_default());
        pagination::keyset(
            ctx,
            filter.query(&principal.tenant_id),
            run::Column::Id,
            KeyKind::Text,
            Order::Desc,
            PageArgs::new(first, after, last, before),
            |r| r.id.clone(),
            Run,
        )
        .await
    }

    /// One run of the caller's tenant.
    async fn run(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Run> {
        let principal = principal(ctx)?;
        let run = runs::get(&state(ctx).db, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Run(run))
    }
}

#[derive(Default)]
pub struct RunMutation;

#[Object]
impl RunMutation {
    /// Start a run: the snapshot of the policies that apply to its workflow is taken now and is
    /// what every step of the run will be checked against.
    async fn start_run(
        &self,
        ctx: &Context<'_>,
        input: StartRunInput,
    ) -> async_graphql::Result<Run> {
        let principal = super::authorized(ctx, Capability::ReportRuns)?;
        let state = state(ctx);
        let committed = runs::start(
            &state.store,
            &principal.tenant_id,
            StartRun {
                workflow_id: input.workflow_id,
                agent: input.agent,
                triggered_by: input.triggered_by,
                is_synthetic: input.is_synthetic,
                synthetic_scenario_id: input.synthetic_scenario_id,
                metadata: input.metadata.map(|j| j.0),
            },
        )
        .await
        .gql()?;
        Ok(Run(state.after_commit(committed).await))
    }

    /// Report that a run ended. Repeating the same report is harmless.
    async fn complete_run(
        &self,
        ctx: &Context<'_>,
        id: ID,
        status: RunCompletionStatus,
        error: Option<String>,
    ) -> async_graphql::Result<Run> {
        let principal = super::authorized(ctx, Capability::ReportRuns)?;
        let state = state(ctx);
        let completion = match status {
            RunCompletionStatus::Succeeded => Completion::Succeeded,
            RunCompletionStatus::Failed => Completion::Failed,
        };
        let committed = runs::complete(&state.store, &principal.tenant_id, &id, completion, error)
            .await
            .gql()?;
        Ok(Run(state.after_commit(committed).await))
    }

    /// Abort a run (`CANCELLED`, `USER_ABORT`).
    async fn cancel_run(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<Run> {
        let principal = super::authorized(ctx, Capability::ReportRuns)?;
        let state = state(ctx);
        let committed = runs::cancel(&state.store, &principal.tenant_id, &id, reason)
            .await
            .gql()?;
        Ok(Run(state.after_commit(committed).await))
    }
}

/// Something that happened to a run.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum RunEventKind {
    /// The run started.
    Started,
    /// A step was recorded (see `step` for its decision).
    StepRecorded,
    /// The run ended without a stop (succeeded, failed or cancelled).
    Completed,
    /// Governance stopped the run at a step.
    Stopped,
    /// A step was held for approval (see `approvalId`); the run waits.
    ApprovalRequested,
    /// The held step was approved: the run goes on.
    ApprovalGranted,
    /// The held step was denied: the run stops (a STOPPED event follows).
    ApprovalDenied,
    /// Nobody decided the held step in time: its policy's `onTimeout` applied.
    ApprovalExpired,
    /// The run ended before anyone decided the held step (a COMPLETED event follows).
    ApprovalCancelled,
}

/// An event of one run, as it happens.
#[derive(SimpleObject)]
pub struct RunEvent {
    /// For STARTED, STOPPED and COMPLETED the tenant-wide event sequence number; for
    /// STEP_RECORDED `step-<index>`.
    pub cursor: String,
    /// What happened.
    pub kind: RunEventKind,
    /// The run.
    pub run_id: ID,
    /// The run's status after the event.
    pub status: RunStatus,
    /// When it happened.
    pub occurred_at: DateTime,
    /// The recorded step, for STEP_RECORDED.
    pub step: Option<TraceStep>,
    /// The approval (`apr_…`), for the APPROVAL_… kinds.
    pub approval_id: Option<ID>,
}

impl RunEvent {
    fn of(item: RunItem) -> Option<Self> {
        match item {
            RunItem::Step(step) => Some(RunEvent {
                cursor: format!("step-{}", step.step_index),
                kind: RunEventKind::StepRecorded,
                run_id: ID(step.run_id.clone()),
                status: if step.is_inflection {
                    RunStatus::FailedPolicy
                } else if step.decision == db::DecisionAction::Hold {
                    RunStatus::AwaitingApproval
                } else {
                    RunStatus::Running
                },
                occurred_at: step.created_at.into(),
                step: Some(TraceStep(step)),
                approval_id: None,
            }),
            RunItem::Event(event) => {
                let kind = match event.kind.as_str() {
                    "RUN_STARTED" => RunEventKind::Started,
                    "RUN_COMPLETED" => RunEventKind::Completed,
                    "RUN_STOPPED" => RunEventKind::Stopped,
                    "APPROVAL_REQUESTED" => RunEventKind::ApprovalRequested,
                    "APPROVAL_GRANTED" => RunEventKind::ApprovalGranted,
                    "APPROVAL_DENIED" => RunEventKind::ApprovalDenied,
                    "APPROVAL_EXPIRED" => RunEventKind::ApprovalExpired,
                    "APPROVAL_CANCELLED" => RunEventKind::ApprovalCancelled,
                    _ => return None,
                };
                let payload_text = |key: &str| event.payload.get(key).and_then(Value::as_str);
                let (status, approval_id) = match event.payload.get("approvalId") {
                    // An approval's event: the run waits while it is pending, and goes on or
                    // stops with its decision.
                    Some(_) => (
                        match payload_text("decision") {
                            None => db::RunStatus::AwaitingApproval,
                            Some("STOP") => db::RunStatus::FailedPolicy,
                            Some(_) => db::RunStatus::Running,
                        },
                        payload_text("approvalId").map(|id| ID(id.to_string())),
                    ),
                    None => (payload_text("status").and_then(|s| s.parse().ok())?, None),
                };
                Some(RunEvent {
                    cursor: event.seq.to_string(),
                    kind,
                    run_id: ID(event.run_id.clone().unwrap_or(event.subject_id.clone())),
                    status: status.into(),
                    occurred_at: event.created_at.into(),
                    step: None,
                    approval_id,
                })
            }
        }
    }
}

#[derive(Default)]
pub struct RunSubscription;

#[Subscription]
impl RunSubscription {
    /// Everything that happens to one run: its start, every step recorded (with its decision),
    /// and its stop or completion, replayed from the start and then live, until it ends.
    async fn run_events(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = RunEvent> + use<>> {
        let principal = principal(ctx)?.clone();
        let state = state(ctx).clone();
        let run = runs::get(&state.db, &principal.tenant_id, &run_id)
            .await
            .gql()?;
        let stream = run_stream(
            state.db.clone(),
            &state.bus,
            principal.tenant_id.clone(),
            run.id,
        )
        .filter_map(|item| async move { RunEvent::of(item) })
        .boxed();
        let stream = until_inclusive(stream, |event| {
            matches!(event.kind, RunEventKind::Completed | RunEventKind::Stopped)
        });
        Ok(stream)
    }
}

/// Yield items up to and including the first for which `last` holds, then end at once (without
/// waiting for another item, which may never come).
pub fn until_inclusive<T>(
    mut inner: futures::stream::BoxStream<'static, T>,
    last: impl Fn(&T) -> bool + Send + 'static,
) -> impl Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
{
    let mut done = false;
    futures::stream::poll_fn(move |cx| {
        if done {
            return std::task::Poll::Ready(None);
        }
        let polled = inner.poll_next_unpin(cx);
        if let std::task::Poll::Ready(Some(item)) = &polled {
            done = last(item);
        }
        polled
    })
}
