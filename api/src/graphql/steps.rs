//! Steps and their proof: `recordStep` (the decision for each step, in the run's path), the
//! trace with its hash chain and inflection, violations, incidents, and `verifyRun`.

use async_graphql::ErrorExtensions;
use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use governance_core::{
    CoreError, records,
    steps::{self, RecordStep, StepOutcome},
    verify,
};
use governance_entities::{evidence, incident, policy, run, trace_step, violation};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::Value;

use super::{
    enums::{
        DecisionAction, IncidentStatus, PolicyKind, Severity, StepStatus, StepType,
        TerminationReason,
    },
    error::GqlResultExt,
    policies::Policy,
    principal,
    runs::Run,
    scalars::DateTime,
    state,
};

/// One step of a run, as recorded, with its decision and its link in the hash chain.
pub struct TraceStep(pub trace_step::Model);

#[Object]
impl TraceStep {
    /// 0-based.
    async fn step_index(&self) -> i64 {
        self.0.step_index
    }
    async fn timestamp(&self) -> DateTime {
        self.0.timestamp.into()
    }
    #[graphql(name = "type")]
    async fn step_type(&self) -> StepType {
        self.0.step_type.into()
    }
    async fn tokens(&self) -> i64 {
        self.0.tokens
    }
    async fn cost_micros(&self) -> i64 {
        self.0.cost_micros
    }
    async fn tool_name(&self) -> Option<&str> {
        self.0.tool_name.as_deref()
    }
    /// sha256 of the reported content (the content itself is not stored).
    async fn content_hash(&self) -> &str {
        &self.0.content_hash
    }
    async fn status(&self) -> StepStatus {
        self.0.status.into()
    }
    /// True for the step that stopped the run.
    async fn is_inflection(&self) -> bool {
        self.0.is_inflection
    }
    async fn decision(&self) -> DecisionAction {
        self.0.decision.into()
    }
    async fn reason(&self) -> &str {
        &self.0.reason
    }
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
}

/// A violated policy at one step: the fact, persisted before any incident.
pub struct Violation(pub violation::Model);

#[Object]
impl Violation {
    /// `vio_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn policy_id(&self) -> &str {
        &self.0.policy_id
    }
    /// The policy as it is now (its version at the time is `policyVersion`).
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Policy>> {
        let found = policy::Entity::find_by_id(self.0.policy_id.clone())
            .filter(policy::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .one(&state(ctx).db)
            .await
            .map_err(CoreError::from)
            .gql()?;
        Ok(found.map(Policy))
    }
    async fn policy_version(&self) -> i32 {
        self.0.policy_version
    }
    async fn policy_type(&self) -> PolicyKind {
        self.0.policy_type.into()
    }
    async fn violated_rule(&self) -> &str {
        &self.0.violated_rule
    }
    async fn evaluated_value(&self) -> &str {
        &self.0.evaluated_value
    }
    async fn threshold_condition(&self) -> &str {
        &self.0.threshold_condition
    }
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    async fn action(&self) -> super::enums::PolicyAction {
        self.0.action.into()
    }
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    async fn step_index(&self) -> i64 {
        self.0.step_index
    }
    async fn timestamp(&self) -> DateTime {
        self.0.timestamp.into()
    }
    /// The snapshot (`SNAP-…`) the step was checked against.
    async fn snapshot_id(&self) -> &str {
        &self.0.snapshot_id
    }
    /// What was checked (content matches masked).
    async fn evidence(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Evidence>> {
        let found = evidence::Entity::find()
            .filter(evidence::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .filter(evidence::Column::ViolationId.eq(self.0.id.as_str()))
            .one(&state(ctx).db)
            .await
            .map_err(CoreError::from)
            .gql()?;
        Ok(found.map(Evidence))
    }
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        let run = governance_core::runs::get(&state(ctx).db, &self.0.tenant_id, &self.0.run_id)
            .await
            .gql()?;
        Ok(Run(run))
    }
    /// The incident this violation opened (only the stopping violation opens one).
    async fn incident(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Incident>> {
        let found = incident::Entity::find()
            .filter(incident::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .filter(incident::Column::ViolationId.eq(self.0.id.as_str()))
            .one(&state(ctx).db)
            .await
            .map_err(CoreError::from)
            .gql()?;
        Ok(found.map(Incident))
    }
}

/// What a violation was decided on. Matched content is masked, never stored in full.
pub struct Evidence(pub evidence::Model);

#[Object]
impl Evidence {
    /// `evi_…`
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn content(&self) -> Json<Value> {
        Json(self.0.content.clone())
    }
    /// sha256 of the canonical content.
    async fn content_hash(&self) -> &str {
        &self.0.content_hash
    }
}

/// An incident: opened once, when a run is stopped by a violation.
pub struct Incident(pub incident::Model);

#[Object]
impl Incident {
    /// `inc_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    async fn status(&self) -> IncidentStatus {
        self.0.status.into()
    }
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    async fn detected_at(&self) -> DateTime {
        self.0.detected_at.into()
    }
    async fn acknowledged_at(&self) -> Option<DateTime> {
        self.0.acknowledged_at.map(Into::into)
    }
    async fn resolved_at(&self) -> Option<DateTime> {
        self.0.resolved_at.map(Into::into)
    }
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        let run = governance_core::runs::get(&state(ctx).db, &self.0.tenant_id, &self.0.run_id)
            .await
            .gql()?;
        Ok(Run(run))
    }
    async fn violation(&self, ctx: &Context<'_>) -> async_graphql::Result<Violation> {
        let found = records::violation(&state(ctx).db, &self.0.tenant_id, &self.0.violation_id)
            .await
            .gql()?;
        Ok(Violation(found))
    }
}

/// The stopping point of a run.
#[derive(SimpleObject)]
pub struct Inflection {
    pub step_index: i64,
    pub timestamp: DateTime,
    pub policy: Option<Policy>,
    pub policy_id: Option<String>,
    pub reason: Option<String>,
}

/// A run's trace: its steps in order and the head of its hash chain.
pub struct Trace(pub run::Model);

#[Object]
impl Trace {
    /// `entryHash` of the last step (the genesis hash before the first step).
    async fn head_hash(&self) -> &str {
        &self.0.trace_head_hash
    }
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
            Some(id) => policy::Entity::find_by_id(id.clone())
                .filter(policy::Column::TenantId.eq(self.0.tenant_id.as_str()))
                .one(&state(ctx).db)
                .await
                .map_err(CoreError::from)
                .gql()?
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
    /// The steps in order (0-based), `first` at most the page limit, from `after` (a step index).
    async fn steps(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] first: i64,
        #[graphql(default = -1)] after: i64,
    ) -> async_graphql::Result<Vec<TraceStep>> {
        use sea_orm::QuerySelect;
        let limit = first.clamp(0, 1000) as u64;
        let rows = trace_step::Entity::find()
            .filter(trace_step::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .filter(trace_step::Column::RunId.eq(self.0.id.as_str()))
            .filter(trace_step::Column::StepIndex.gt(after))
            .order_by_asc(trace_step::Column::StepIndex)
            .limit(limit)
            .all(&state(ctx).db)
            .await
            .map_err(CoreError::from)
            .gql()?;
        Ok(rows.into_iter().map(TraceStep).collect())
    }
}

/// The answer to `recordStep`: what to do now, and why.
pub struct StepDecision {
    action: DecisionAction,
    reason: String,
    recorded: bool,
    replayed: bool,
    termination_reason: Option<TerminationReason>,
    step: trace_step::Model,
    violations: Vec<violation::Model>,
    incident: Option<incident::Model>,
    run: run::Model,
}

#[Object]
impl StepDecision {
    /// CONTINUE, WARN, or STOP (stop executing the run now).
    async fn action(&self) -> DecisionAction {
        self.action
    }
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
}

/// Input of `recordStep`.
#[derive(InputObject)]
pub struct RecordStepInput {
    pub run_id: ID,
    /// 0-based; omitted means the next one. Re-sending a recorded index with the same step
    /// returns its recorded decision; with a different step it is a `CONFLICT`.
    pub step_index: Option<i64>,
    #[graphql(name = "type")]
    pub step_type: StepType,
    pub tokens: i64,
    #[graphql(default = 0)]
    pub cost_micros: i64,
    /// The step's content (prompt, output, tool arguments); only its sha256 is stored.
    pub content: Option<String>,
    pub tool_name: Option<String>,
    /// Default: now.
    pub timestamp: Option<DateTime>,
}

/// One difference `verifyRun` found.
#[derive(SimpleObject)]
pub struct VerificationMismatch {
    pub step_index: Option<i64>,
    pub kind: String,
    pub expected: String,
    pub found: String,
}

/// The result of `verifyRun`.
#[derive(SimpleObject)]
pub struct RunVerification {
    /// Every hash checks out: snapshot, each step's chain link, the head.
    pub intact: bool,
    /// Replaying each step against the snapshot reproduces every recorded decision.
    pub reproduced: bool,
    pub head_hash: String,
    pub steps_checked: i64,
    pub mismatches: Vec<VerificationMismatch>,
}

#[derive(Default)]
pub struct StepQuery;

#[Object]
impl StepQuery {
    /// Recompute a run's hash chain and replay every step against its snapshot.
    async fn verify_run(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<RunVerification> {
        let principal = principal(ctx)?;
        let v = verify::verify(&state(ctx).db, &principal.tenant_id, &id)
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
        })
    }

    /// One incident of the tenant.
    async fn incident(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Incident> {
        let principal = principal(ctx)?;
        let found = records::incident(&state(ctx).db, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Incident(found))
    }
}

#[derive(Default)]
pub struct StepMutation;

#[Object]
impl StepMutation {
    /// Report a step of a running run and get the decision: CONTINUE, WARN, or STOP. The step is
    /// checked against the run's snapshot; the answer comes only after the decision is committed.
    /// A step reported after the run ended is refused with `RUN_TERMINATED`.
    async fn record_step(
        &self,
        ctx: &Context<'_>,
        input: RecordStepInput,
    ) -> async_graphql::Result<StepDecision> {
        let principal = principal(ctx)?;
        let state = state(ctx);
        let committed = steps::record(
            &state.store,
            &state.cache,
            &principal.tenant_id,
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
        .await
        .gql()?;
        let outcome = state.after_commit(committed).await;
        Ok(match outcome {
            StepOutcome::Recorded(record) => StepDecision {
                action: record.step.decision.into(),
                reason: record.step.reason.clone(),
                recorded: true,
                replayed: record.replayed,
                termination_reason: record
                    .step
                    .is_inflection
                    .then_some(record.run.termination_reason)
                    .flatten()
                    .map(Into::into),
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
