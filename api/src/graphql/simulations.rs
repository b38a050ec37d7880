//! Simulations: replay recorded runs against a proposed policy set (`simulatePolicies`), follow
//! the job (`simulation`, `simulations`, `simulationUpdates`), read the per-run results; and the
//! tenant setting that makes enabling or tightening a BLOCK policy cite a simulation
//! (`setRequireSimulation`).

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, OneofObject, Subscription};
use futures::{Stream, StreamExt};
use governance_core::{
    CoreError, events,
    policies::{NewPolicy, PolicyPatch},
    roles::Capability,
    simulation::{
        self,
        compare::{self, Effect, Outcome},
        lifecycle::SimulationRequest,
        proposal::{PolicyChange, Proposal, ProposalSource, Proposed, ProposedPolicy},
    },
};
use governance_entities::{enums as db, simulation as entity};
use serde_json::Value;

use super::{
    enums::{DecisionAction, PolicyAction, PolicyKind, PolicyMode, Severity, TerminationReason},
    error::GqlResultExt,
    pagination::{self, Conn, KeyKind, Order, PageArgs},
    policies::{CreatePolicyInput, Policy, UpdatePolicyInput},
    principal,
    runs::{Run, RunFilter, load_run},
    scalars::DateTime,
    state,
    tenancy::Tenant,
};

/// Where a simulation is.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum SimulationStatus {
    /// Requested; the job has not started.
    Pending,
    /// The job is replaying runs (`progress` says how far).
    Running,
    /// Every run was replayed; the results, totals and `resultHash` are set, and never change.
    Completed,
    /// The simulation could not complete; `error` says why.
    Failed,
}

impl From<db::SimulationStatus> for SimulationStatus {
    fn from(v: db::SimulationStatus) -> Self {
        match v {
            db::SimulationStatus::Pending => Self::Pending,
            db::SimulationStatus::Running => Self::Running,
            db::SimulationStatus::Completed => Self::Completed,
            db::SimulationStatus::Failed => Self::Failed,
        }
    }
}

/// How the proposed policies change a run's outcome.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum SimulationEffect {
    /// Every replayed step is decided as recorded.
    Unchanged,
    /// The run was not stopped; it would be.
    NewlyStopped,
    /// The run was stopped; it would not be (a loosening).
    NoLongerStopped,
    /// The run was stopped; it would be stopped at another step.
    StopMoved,
    /// Stopped (or not) at the same step, but some step is decided otherwise (another
    /// deciding policy, other warnings).
    Changed,
}

impl From<Effect> for SimulationEffect {
    fn from(v: Effect) -> Self {
        match v {
            Effect::Unchanged => Self::Unchanged,
            Effect::NewlyStopped => Self::NewlyStopped,
            Effect::NoLongerStopped => Self::NoLongerStopped,
            Effect::StopMoved => Self::StopMoved,
            Effect::Changed => Self::Changed,
        }
    }
}

/// How a policy of a proposal differs from the tenant's current one.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProposedChange {
    /// As it is now (or as the simulated snapshot holds it).
    Unchanged,
    /// Proposed for creation: it has no id yet.
    Created,
    /// A proposed new version of an existing policy.
    Updated,
    /// Proposed for removal (disabled).
    Removed,
}

impl From<Proposed> for ProposedChange {
    fn from(v: Proposed) -> Self {
        match v {
            Proposed::Unchanged => Self::Unchanged,
            Proposed::Created => Self::Created,
            Proposed::Updated => Self::Updated,
            Proposed::Removed => Self::Removed,
        }
    }
}

/// A policy as a simulation proposed it.
pub struct SimulatedPolicy(ProposedPolicy);

/// A policy of a simulation's proposed set: the current policy, a proposed new version of it,
/// or a proposed creation (which has no id yet: its `key` is `new:<n>`, its place among the
/// changes).
#[Object]
impl SimulatedPolicy {
    /// The policy's id (`pol_…`), or `new:<n>` for a proposed creation.
    async fn key(&self) -> ID {
        ID(self.0.policy.id.clone())
    }
    /// How it differs from the tenant's current policy.
    async fn proposed(&self) -> ProposedChange {
        self.0.proposed.into()
    }
    /// The name proposed.
    async fn name(&self) -> &str {
        &self.0.policy.name
    }
    /// The kind proposed.
    async fn kind(&self) -> PolicyKind {
        self.0.policy.kind.into()
    }
    /// The rule proposed.
    async fn rule(&self) -> Json<Value> {
        Json(self.0.policy.rule.clone())
    }
    /// The action proposed.
    async fn action(&self) -> PolicyAction {
        self.0.policy.action.into()
    }
    /// The severity proposed.
    async fn severity(&self) -> Severity {
        self.0.policy.severity.into()
    }
    /// The mode proposed.
    async fn mode(&self) -> PolicyMode {
        self.0.policy.mode.into()
    }
    /// The workflow scope proposed.
    async fn workflow_id(&self) -> Option<&str> {
        self.0.policy.workflow_id.as_deref()
    }
    /// Whether it is in the proposed set.
    async fn enabled(&self) -> bool {
        self.0.policy.enabled
    }
    /// The policy as it is now; null for a proposed creation.
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Policy>> {
        let Some(id) = self.0.policy_id() else {
            return Ok(None);
        };
        let principal = principal(ctx)?;
        let found = governance_core::policies::get(&state(ctx).db, &principal.tenant_id, id).await;
        match found {
            Ok(policy) => Ok(Some(Policy(policy))),
            Err(CoreError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err).gql(),
        }
    }
}

/// One run of a simulation: what was recorded against what the proposal would have decided.
pub struct SimulatedRun {
    result: compare::SimulatedRun,
    proposal: Arc<Proposal>,
}

impl SimulatedRun {
    fn policy(&self, key: &str) -> Option<SimulatedPolicy> {
        self.proposal.get(key).cloned().map(SimulatedPolicy)
    }
}

fn stop_reason(outcome: &Outcome) -> Option<TerminationReason> {
    outcome
        .stop_step
        .and(outcome.termination_reason)
        .map(Into::into)
}

/// A run replayed against the proposed policies, compared with its record.
#[Object]
impl SimulatedRun {
    /// The run replayed.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        load_run(ctx, &self.result.run_id).await
    }
    /// How the proposal changes the run's outcome.
    async fn effect(&self) -> SimulationEffect {
        self.result.effect.into()
    }
    /// The run's most severe recorded step decision: STOP, WARN or CONTINUE.
    async fn recorded_outcome(&self) -> DecisionAction {
        self.result.recorded.action.into()
    }
    /// The most severe decision the proposal gives its recorded steps.
    async fn simulated_outcome(&self) -> DecisionAction {
        self.result.simulated.action.into()
    }
    /// The first step decided otherwise than recorded (in action, or in the enforcing policies
    /// violated); null when every replayed step is decided as recorded.
    async fn diverges_at_step(&self) -> Option<i64> {
        self.result.diverges_at_step
    }
    /// The step a policy stopped the run at, as recorded.
    async fn recorded_stop_step(&self) -> Option<i64> {
        self.result.recorded.stop_step
    }
    /// The step the proposal would stop the run at.
    async fn simulated_stop_step(&self) -> Option<i64> {
        self.result.simulated.stop_step
    }
    /// Why a policy stopped the run, as recorded.
    async fn recorded_termination_reason(&self) -> Option<TerminationReason> {
        stop_reason(&self.result.recorded)
    }
    /// Why the proposal would stop the run.
    async fn simulated_termination_reason(&self) -> Option<TerminationReason> {
        stop_reason(&self.result.simulated)
    }
    /// The recorded policy that stopped (or first warned) the run.
    async fn recorded_deciding_policy_id(&self) -> Option<ID> {
        self.result.recorded.deciding_policy.clone().map(ID)
    }
    /// The proposed policy that would stop (or first warn) the run.
    async fn deciding_policy(&self) -> Option<SimulatedPolicy> {
        let key = self.result.simulated.deciding_policy.as_deref()?;
        self.policy(key)
    }
    /// Steps replayed: all recorded ones, or up to the simulated stop (later steps would not
    /// have happened).
    async fn steps_replayed(&self) -> i64 {
        self.result.steps_replayed
    }
    /// Proposed CONTENT_RULE policies that cannot be judged on this run (`NOT_REPLAYABLE`):
    /// step content is not stored, and their patterns are new or changed since the run's
    /// snapshot. They are counted as matching nothing here, never guessed.
    async fn not_replayable(&self) -> Vec<SimulatedPolicy> {
        self.result
            .not_replayable
            .iter()
            .filter_map(|key| self.policy(key))
            .collect()
    }
}

pub struct Simulation(pub entity::Model);

/// A replay of recorded runs against a proposed policy set. Deterministic: the same proposal
/// and runs give the same results and `resultHash`.
#[Object]
impl Simulation {
    /// `sim_…`
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// PENDING, RUNNING, then COMPLETED or FAILED.
    async fn status(&self) -> SimulationStatus {
        self.0.status.into()
    }
    /// 0–100.
    async fn progress(&self) -> i32 {
        self.0.progress
    }
    /// The hash of the proposed policy set: what a gated policy change is compared with (its
    /// `simulationId` must name a COMPLETED simulation with the hash of the set it leaves).
    async fn proposed_snapshot_hash(&self) -> &str {
        &self.0.proposed_snapshot_hash
    }
    /// Runs chosen by the filter (the newest up to `limit`).
    async fn runs_selected(&self) -> i64 {
        self.0.run_ids.as_array().map_or(0, |a| a.len() as i64)
    }
    /// Runs replayed (once COMPLETED).
    async fn runs_replayed(&self) -> i64 {
        self.0.runs_replayed
    }
    /// Runs not stopped that the proposal would stop.
    async fn newly_stopped(&self) -> i64 {
        self.0.newly_stopped
    }
    /// Runs stopped that the proposal would not stop: a loosening.
    async fn no_longer_stopped(&self) -> i64 {
        self.0.no_longer_stopped
    }
    /// Runs the proposal would stop at another step.
    async fn stop_moved(&self) -> i64 {
        self.0.stop_moved
    }
    /// Whether any run would no longer be stopped.
    async fn loosens(&self) -> bool {
        self.0.no_longer_stopped > 0
    }
    /// sha256 of the canonical result (the proposal hash and every run's result, in order),
    /// once COMPLETED.
    async fn result_hash(&self) -> Option<&str> {
        self.0.result_hash.as_deref()
    }
    /// Why it FAILED.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// When it was requested.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    /// When it was COMPLETED or FAILED.
    async fn completed_at(&self) -> Option<DateTime> {
        self.0.completed_at.map(Into::into)
    }
    /// Every policy the proposal names (removed ones too, with `enabled: false`).
    async fn policies(&self) -> async_graphql::Result<Vec<SimulatedPolicy>> {
        let proposal = simulation::lifecycle::proposal_of(&self.0).gql()?;
        Ok(proposal.policies.into_iter().map(SimulatedPolicy).collect())
    }
    /// Each replayed run's result, newest run first (once COMPLETED); `effect` narrows them.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        effect: Option<Vec<SimulationEffect>>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<SimulatedRun>> {
        let proposal = Arc::new(simulation::lifecycle::proposal_of(&self.0).gql()?);
        let results: Vec<compare::SimulatedRun> = simulation::lifecycle::results(&self.0)
            .gql()?
            .into_iter()
            .filter(|r| {
                effect
                    .as_ref()
                    .is_none_or(|wanted| wanted.contains(&r.effect.into()))
            })
            .collect();
        pagination::in_memory(
            ctx,
            results,
            PageArgs::new(first, after, last, before),
            |r| r.run_id.clone(),
            |result| SimulatedRun {
                result,
                proposal: proposal.clone(),
            },
        )
    }
}

/// A proposed change to an existing policy.
#[derive(InputObject)]
pub struct PolicyUpdateChangeInput {
    /// The policy (`pol_…`).
    pub id: ID,
    /// The change, as `updatePolicy` takes it (`simulationId` is ignored here).
    pub input: UpdatePolicyInput,
}

/// One proposed change: exactly one of `create`, `update`, `remove`.
#[derive(OneofObject)]
pub enum PolicyChangeInput {
    /// A new policy, as `createPolicy` takes it (`simulationId` is ignored here).
    Create(CreatePolicyInput),
    /// A new version of a policy.
    Update(PolicyUpdateChangeInput),
    /// Take a policy out of the set (as disabling it would).
    Remove(ID),
}

/// Input of `simulatePolicies`: the proposed set (a snapshot, or the current policies with
/// `changes`), and which recorded runs to replay.
#[derive(InputObject)]
pub struct SimulationInput {
    /// Replay against this stored snapshot's policies (`SNAP-…`). Not with `changes`.
    pub snapshot_id: Option<ID>,
    /// Replay against the tenant's current policies with these changes applied in order
    /// (none: the current policies as they are).
    pub changes: Option<Vec<PolicyChangeInput>>,
    /// Which runs (the filter of `runs`); all of the tenant's when omitted.
    pub runs: Option<RunFilter>,
    /// Replay the newest this many matching runs (1–1000, default 100).
    pub limit: Option<i32>,
}

fn change_of(change: PolicyChangeInput) -> PolicyChange {
    match change {
        PolicyChangeInput::Create(input) => PolicyChange::Create(NewPolicy::from(input)),
        PolicyChangeInput::Update(update) => PolicyChange::Update {
            id: update.id.to_string(),
            patch: PolicyPatch::from(update.input),
        },
        PolicyChangeInput::Remove(id) => PolicyChange::Remove { id: id.to_string() },
    }
}

#[derive(Default)]
pub struct SimulationQuery;

#[Object]
impl SimulationQuery {
    /// One simulation of the tenant (poll it until `status` is COMPLETED or FAILED).
    async fn simulation(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Simulation> {
        let principal = principal(ctx)?;
        let found = simulation::lifecycle::get(&state(ctx).db, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Simulation(found))
    }

    /// The tenant's simulations, newest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn simulations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Simulation>> {
        let principal = principal(ctx)?;
        pagination::keyset(
            ctx,
            simulation::lifecycle::of_tenant(&principal.tenant_id),
            entity::Column::Id,
            KeyKind::Text,
            Order::Desc,
            PageArgs::new(first, after, last, before),
            |s| s.id.clone(),
            Simulation,
        )
        .await
    }
}

#[derive(Default)]
pub struct SimulationMutation;

#[Object]
impl SimulationMutation {
    /// Replay recorded runs against a proposed policy set: the tenant's current policies with
    /// `changes` applied, or a stored snapshot. Answered PENDING; a job replays each selected
    /// run's recorded steps with the same decision the live path uses, and reports per run the
    /// recorded outcome against the simulated one. Follow it with `simulationUpdates(id)` or
    /// poll `simulation(id)`. Each change is validated as its write would be (`BAD_USER_INPUT`
    /// naming it, e.g. `input.changes[0].create.rule.maxTokens`). ADMIN only.
    #[graphql(complexity = 20)]
    async fn simulate_policies(
        &self,
        ctx: &Context<'_>,
        input: SimulationInput,
    ) -> async_graphql::Result<Simulation> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let source = match (input.snapshot_id, input.changes) {
            (Some(_), Some(_)) => {
                return Err(CoreError::bad_field(
                    "input.snapshotId",
                    "give either `snapshotId` or `changes`, not both",
                ))
                .gql();
            }
            (Some(snapshot), None) => ProposalSource::Snapshot(snapshot.to_string()),
            (None, changes) => ProposalSource::Changes(
                changes
                    .unwrap_or_default()
                    .into_iter()
                    .map(change_of)
                    .collect(),
            ),
        };
        let state = state(ctx);
        let committed = simulation::lifecycle::request(
            &state.store,
            &principal.tenant_id,
            SimulationRequest {
                source,
                runs: input.runs.map(Into::into).unwrap_or_default(),
                limit: input.limit.map(i64::from),
            },
            &principal.key_id,
        )
        .await
        .gql()?;
        Ok(Simulation(state.after_commit(committed).await))
    }

    /// Require (or stop requiring) that enabling or tightening an enforcing BLOCK policy cite
    /// a COMPLETED simulation of exactly the policy set the change leaves (`simulationId` on
    /// `createPolicy`, `updatePolicy` and `setPolicyEnabled`); without one such a change is
    /// refused with `CONFLICT`, saying what to run. ADMIN only.
    async fn set_require_simulation(
        &self,
        ctx: &Context<'_>,
        required: bool,
    ) -> async_graphql::Result<Tenant> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let tenant = simulation::set_required(&state(ctx).store, &principal.tenant_id, required)
            .await
            .gql()?;
        Ok(Tenant(tenant))
    }
}

/// One state of a simulation, as a subscriber sees it change.
pub struct SimulationUpdate {
    cursor: String,
    status: db::SimulationStatus,
    progress: i32,
    result_hash: Option<String>,
    error: Option<String>,
    occurred_at: chrono::DateTime<chrono::Utc>,
    simulation_id: String,
}

impl SimulationUpdate {
    fn of_event(event: &governance_entities::event::Model) -> Option<Self> {
        let payload = &event.payload;
        Some(Self {
            cursor: event.seq.to_string(),
            status: payload.get("status")?.as_str()?.parse().ok()?,
            progress: payload.get("progress")?.as_i64()? as i32,
            result_hash: payload
                .get("resultHash")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            error: payload
                .get("error")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            occurred_at: event.created_at,
            simulation_id: event.subject_id.clone(),
        })
    }

    fn is_final(&self) -> bool {
        matches!(
            self.status,
            db::SimulationStatus::Completed | db::SimulationStatus::Failed
        )
    }
}

/// A simulation's status and progress at one moment.
#[Object]
impl SimulationUpdate {
    /// The position in the tenant's event sequence.
    async fn cursor(&self) -> &str {
        &self.cursor
    }
    /// The status then.
    async fn status(&self) -> SimulationStatus {
        self.status.into()
    }
    /// The progress then (0–100).
    async fn progress(&self) -> i32 {
        self.progress
    }
    /// The result hash, once COMPLETED.
    async fn result_hash(&self) -> Option<&str> {
        self.result_hash.as_deref()
    }
    /// Why it FAILED.
    async fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    /// When the change was committed.
    async fn occurred_at(&self) -> DateTime {
        self.occurred_at.into()
    }
    /// The simulation as it is now.
    async fn simulation(&self, ctx: &Context<'_>) -> async_graphql::Result<Simulation> {
        let principal = principal(ctx)?;
        let found =
            simulation::lifecycle::get(&state(ctx).db, &principal.tenant_id, &self.simulation_id)
                .await
                .gql()?;
        Ok(Simulation(found))
    }
}

#[derive(Default)]
pub struct SimulationSubscription;

#[Subscription]
impl SimulationSubscription {
    /// One simulation's status and progress: its state now, then every change in order until
    /// it is COMPLETED or FAILED, then the stream completes.
    async fn simulation_updates(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = SimulationUpdate> + use<>> {
        let principal = principal(ctx)?.clone();
        let state = state(ctx).clone();
        // Live changes from the current end of the sequence, subscribed before the state is
        // read: a change in between shows up twice (harmless), never not at all.
        let from = events::latest_seq(&state.db, &principal.tenant_id)
            .await
            .gql()?;
        let simulation_id = id.to_string();
        let live = governance_workers::events::tenant_stream(
            state.db.clone(),
            &state.bus,
            principal.tenant_id.clone(),
            from,
        );
        let current = simulation::lifecycle::get(&state.db, &principal.tenant_id, &simulation_id)
            .await
            .gql()?;
        let now = SimulationUpdate {
            cursor: from.to_string(),
            status: current.status,
            progress: current.progress,
            result_hash: current.result_hash,
            error: current.error,
            occurred_at: current.updated_at,
            simulation_id: current.id,
        };
        let updates = live.filter_map(move |event| {
            let update = (event.kind == "SIMULATION_UPDATED" && event.subject_id == simulation_id)
                .then(|| SimulationUpdate::of_event(&event))
                .flatten();
            async move { update }
        });
        let stream = futures::stream::iter([now]).chain(updates).boxed();
        Ok(super::runs::until_inclusive(
            stream,
            SimulationUpdate::is_final,
        ))
    }
}
