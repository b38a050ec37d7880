//! Runs: start, complete, cancel, read, and follow one run live.

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject, Subscription};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use governance_core::{
    CoreError, evaluation, events,
    runs::{self, Completion, StartRun},
};
use governance_entities::{
    incident, policy_enforcement, policy_evaluation, policy_snapshot, run, violation,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::Value;

use super::{
    enums::{EvaluationOutcome, RunStatus, TerminationReason},
    error::GqlResultExt,
    policies::PolicyEnforcement,
    principal,
    scalars::DateTime,
    state,
    steps::{Incident, Trace, Violation},
};

/// One execution of an agent or workflow, checked step by step against the policy snapshot
/// taken when it started.
pub struct Run(pub run::Model);

#[Object]
impl Run {
    /// `run_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn workflow_id(&self) -> &str {
        &self.0.workflow_id
    }
    async fn agent(&self) -> Option<&str> {
        self.0.agent.as_deref()
    }
    async fn triggered_by(&self) -> Option<&str> {
        self.0.triggered_by.as_deref()
    }
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
    async fn started_at(&self) -> DateTime {
        self.0.started_at.into()
    }
    async fn completed_at(&self) -> Option<DateTime> {
        self.0.completed_at.map(Into::into)
    }
    /// Milliseconds from start to end; null while the run is running.
    async fn duration_ms(&self) -> Option<i64> {
        self.0
            .completed_at
            .map(|end| (end - self.0.started_at).num_milliseconds())
    }
    async fn tokens_used(&self) -> i64 {
        self.0.tokens_used
    }
    /// Cost in micro-dollars (1 USD = 1,000,000).
    async fn cost_micros(&self) -> i64 {
        self.0.cost_micros
    }
    async fn step_count(&self) -> i64 {
        self.0.step_count
    }
    /// The 0-based index of the step that stopped the run.
    async fn stopped_at_step(&self) -> Option<i64> {
        self.0.stopped_at_step
    }
    async fn is_synthetic(&self) -> bool {
        self.0.is_synthetic
    }
    async fn synthetic_scenario_id(&self) -> Option<&str> {
        self.0.synthetic_scenario_id.as_deref()
    }
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
        let snap = runs::snapshot_of(&state(ctx).db, &self.0).await.gql()?;
        Ok(PolicySnapshot(snap))
    }
    /// The run's trace: steps, inflection, head of the hash chain.
    async fn trace(&self) -> Trace {
        Trace(self.0.clone())
    }
    /// Every violation of the run, in step order.
    async fn violations(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Violation>> {
        let rows = violation::Entity::find()
            .filter(violation::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .filter(violation::Column::RunId.eq(self.0.id.as_str()))
            .order_by_asc(violation::Column::StepIndex)
            .order_by_asc(violation::Column::Id)
            .all(&state(ctx).db)
            .await
            .map_err(CoreError::from)
            .gql()?;
        Ok(rows.into_iter().map(Violation).collect())
    }
    /// The incident opened when the run was stopped.
    async fn incident(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Incident>> {
        let row = incident::Entity::find()
            .filter(incident::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .filter(incident::Column::RunId.eq(self.0.id.as_str()))
            .one(&state(ctx).db)
            .await
            .map_err(CoreError::from)
            .gql()?;
        Ok(row.map(Incident))
    }
    /// The run's enforcement log (stops, warnings, refused steps), oldest first.
    async fn enforcements(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<PolicyEnforcement>> {
        let rows = policy_enforcement::Entity::find()
            .filter(policy_enforcement::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .filter(policy_enforcement::Column::RunId.eq(self.0.id.as_str()))
            .order_by_asc(policy_enforcement::Column::CreatedAt)
            .order_by_asc(policy_enforcement::Column::Id)
            .all(&state(ctx).db)
            .await
            .map_err(CoreError::from)
            .gql()?;
        Ok(rows.into_iter().map(PolicyEnforcement).collect())
    }
    /// The run's evaluation record, written once the run has ended.
    async fn evaluation(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<PolicyEvaluation>> {
        let found = evaluation::of_run(&state(ctx).db, &self.0.tenant_id, &self.0.id)
            .await
            .gql()?;
        Ok(found.map(PolicyEvaluation))
    }
}

/// An immutable, content-addressed set of policies: what a run is checked against.
pub struct PolicySnapshot(pub policy_snapshot::Model);

#[Object]
impl PolicySnapshot {
    /// `SNAP-` + the first 12 hex characters of `contentHash`.
    pub async fn id(&self) -> ID {
        ID(self.0.snapshot_id.clone())
    }
    /// sha256(policiesJson ‖ thresholdsJson), 64 hex characters.
    async fn content_hash(&self) -> &str {
        &self.0.content_hash
    }
    /// The policy-set version (semver) when the snapshot was first taken.
    async fn version(&self) -> &str {
        &self.0.version
    }
    async fn policy_count(&self) -> i32 {
        self.0.policy_count
    }
    /// The canonical JSON text of the policies, exactly as hashed.
    async fn policies_json(&self) -> &str {
        &self.0.policies_json
    }
    /// The canonical JSON text of the thresholds (policy id → rule), exactly as hashed.
    async fn thresholds_json(&self) -> &str {
        &self.0.thresholds_json
    }
    /// The thresholds as a JSON object.
    async fn thresholds(&self) -> async_graphql::Result<Json<Value>> {
        serde_json::from_str(&self.0.thresholds_json)
            .map(Json)
            .map_err(|e| CoreError::Internal(e.into()))
            .gql()
    }
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

/// What governance concluded about an ended run. Exactly one per run.
pub struct PolicyEvaluation(pub policy_evaluation::Model);

#[Object]
impl PolicyEvaluation {
    /// `eval_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn outcome(&self) -> EvaluationOutcome {
        self.0.outcome.into()
    }
    async fn policies_checked(&self) -> i32 {
        self.0.policies_checked
    }
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// True when only WARN policies fired: a candidate for tightening into a draft policy.
    async fn draft_candidate(&self) -> bool {
        self.0.draft_candidate
    }
    async fn is_synthetic(&self) -> bool {
        self.0.is_synthetic
    }
    async fn synthetic_scenario_id(&self) -> Option<&str> {
        self.0.synthetic_scenario_id.as_deref()
    }
    /// The snapshot (`SNAP-…`) the run was checked against.
    async fn snapshot_id(&self) -> &str {
        &self.0.snapshot_id
    }
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

/// Input of `startRun`.
#[derive(InputObject)]
pub struct StartRunInput {
    /// The workflow this run executes; policies scoped to it apply.
    pub workflow_id: String,
    pub agent: Option<String>,
    pub triggered_by: Option<String>,
    #[graphql(default = false)]
    pub is_synthetic: bool,
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
        let principal = principal(ctx)?;
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
        let principal = principal(ctx)?;
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
        let principal = principal(ctx)?;
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
    Started,
    Completed,
    Stopped,
}

/// An event of one run, as it happens.
#[derive(SimpleObject)]
pub struct RunEvent {
    /// The tenant-wide event sequence number: resume after it.
    pub cursor: String,
    pub kind: RunEventKind,
    pub run_id: ID,
    pub status: RunStatus,
    pub occurred_at: DateTime,
}

#[derive(Default)]
pub struct RunSubscription;

#[Subscription]
impl RunSubscription {
    /// Events of one run, live, until it ends.
    async fn run_events(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = RunEvent> + use<>> {
        let principal = principal(ctx)?.clone();
        let state = state(ctx).clone();
        // Subscribe first, then read what is stored: an event committed in between is in both,
        // and the sequence number removes the duplicate. Nothing can fall in the gap.
        let receiver = state.bus.subscribe();
        let run = runs::get(&state.db, &principal.tenant_id, &run_id)
            .await
            .gql()?;
        let stored = events::of_run(&state.db, &principal.tenant_id, &run.id)
            .await
            .gql()?;
        let replayed_up_to = stored.last().map(|e| e.seq).unwrap_or(0);
        let run_id = run.id.clone();
        let live = receiver.into_stream().filter_map(move |event| {
            let keep = event.tenant_id == principal.tenant_id
                && event.run_id.as_deref() == Some(run_id.as_str())
                && event.seq > replayed_up_to;
            async move { keep.then_some(event) }
        });
        let stream = futures::stream::iter(stored.into_iter().map(Arc::new))
            .chain(live)
            .filter_map(|event| async move {
                let kind = match event.kind.as_str() {
                    "RUN_STARTED" => RunEventKind::Started,
                    "RUN_COMPLETED" => RunEventKind::Completed,
                    "RUN_STOPPED" => RunEventKind::Stopped,
                    _ => return None,
                };
                let status = event
                    .payload
                    .get("status")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<governance_entities::enums::RunStatus>().ok())?;
                Some(RunEvent {
                    cursor: event.seq.to_string(),
                    kind,
                    run_id: ID(event.subject_id.clone()),
                    status: status.into(),
                    occurred_at: event.created_at.into(),
                })
            })
            .boxed();
        let stream = until_inclusive(stream, |event| {
            matches!(event.kind, RunEventKind::Completed | RunEventKind::Stopped)
        });
        Ok(stream)
    }
}

/// Yield items up to and including the first for which `last` holds, then end at once (without
/// waiting for another item, which may never come).
fn until_inclusive<T>(
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
