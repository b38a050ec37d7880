//! Change audits and the rollout gate: `requestAudit` stores the request and enqueues the
//! audit job; `audit`, `audits` and `rolloutGate` read the result.

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use governance_core::roles::Capability;
use governance_core::{
    auditing::{self, AuditRequest},
    audits,
};
use governance_entities::{audit, audit_check};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;

use super::{
    enums::{AuditStatus, AuditVerdict, CheckResult},
    error::GqlResultExt,
    pagination::{self, Conn, KeyKind, Order, PageArgs},
    principal,
    scalars::DateTime,
    state,
};

/// How the audited job ended, as its runner reported it.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Every step succeeded.
    Succeeded,
    /// The job failed.
    Failed,
    /// Some steps succeeded, some failed.
    Partial,
}

impl From<JobStatus> for auditing::JobStatus {
    fn from(status: JobStatus) -> Self {
        match status {
            JobStatus::Succeeded => auditing::JobStatus::Succeeded,
            JobStatus::Failed => auditing::JobStatus::Failed,
            JobStatus::Partial => auditing::JobStatus::Partial,
        }
    }
}

/// The state of a health signal.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    /// Within its normal range.
    Healthy,
    /// Outside its normal range.
    Degraded,
}

impl From<HealthStatus> for auditing::HealthStatus {
    fn from(status: HealthStatus) -> Self {
        match status {
            HealthStatus::Healthy => auditing::HealthStatus::Healthy,
            HealthStatus::Degraded => auditing::HealthStatus::Degraded,
        }
    }
}

impl From<auditing::HealthStatus> for HealthStatus {
    fn from(status: auditing::HealthStatus) -> Self {
        match status {
            auditing::HealthStatus::Healthy => HealthStatus::Healthy,
            auditing::HealthStatus::Degraded => HealthStatus::Degraded,
        }
    }
}

/// A change the contract proposes.
#[derive(InputObject)]
pub struct ProposedChangeInput {
    /// What is changed (a service, a table, a flag).
    pub target: String,
    /// What is done to it (e.g. `deploy`, `migrate`).
    pub action: String,
}

/// A step the job executed.
#[derive(InputObject)]
pub struct ExecutedStepInput {
    /// What the step acted on.
    pub target: String,
    /// What it did.
    pub action: String,
    /// True when the step changed state.
    pub mutates: bool,
    /// How to undo it (required of mutating steps by `rollback_availability`).
    pub rollback_ref: Option<String>,
    /// Whether the step succeeded.
    pub succeeded: bool,
    /// When the step started.
    pub started_at: Option<DateTime>,
    /// When the step ended.
    pub completed_at: Option<DateTime>,
}

/// A named health signal and its state.
#[derive(InputObject)]
pub struct HealthSignalInput {
    /// The signal's name (unique within one list).
    pub name: String,
    /// Its value.
    pub value: f64,
    /// HEALTHY or DEGRADED.
    pub status: HealthStatus,
}

/// An interval of time.
#[derive(InputObject)]
pub struct TimeWindowInput {
    /// Start (inclusive).
    pub start: DateTime,
    /// End (inclusive).
    pub end: DateTime,
}

/// Input of `requestAudit`: a job executed under a contract, and what it did.
#[derive(InputObject)]
pub struct AuditRequestInput {
    /// The audited job.
    pub job_id: String,
    /// The contract it ran under.
    pub contract_id: String,
    /// How the job ended.
    pub job_status: JobStatus,
    /// The targets the contract allows the job to touch (at least one).
    pub contract_scope: Vec<String>,
    /// The changes the contract proposes.
    #[graphql(default)]
    pub proposed_changes: Vec<ProposedChangeInput>,
    /// The steps executed.
    #[graphql(default)]
    pub steps: Vec<ExecutedStepInput>,
    /// Targets observed to have been mutated (by monitoring, not by the job's own report).
    #[graphql(default)]
    pub mutations_observed: Vec<String>,
    /// Health signals before the job.
    #[graphql(default)]
    pub health_before: Vec<HealthSignalInput>,
    /// Health signals after the job.
    #[graphql(default)]
    pub health_after: Vec<HealthSignalInput>,
    /// When the contract allowed the job to run.
    pub activation_window: Option<TimeWindowInput>,
    /// When the job started.
    pub started_at: DateTime,
    /// When the job ended.
    pub completed_at: DateTime,
}

fn signals(input: Vec<HealthSignalInput>) -> Vec<auditing::HealthSignal> {
    input
        .into_iter()
        .map(|s| auditing::HealthSignal {
            name: s.name,
            value: s.value,
            status: s.status.into(),
        })
        .collect()
}

impl From<AuditRequestInput> for AuditRequest {
    fn from(input: AuditRequestInput) -> Self {
        AuditRequest {
            job_id: input.job_id,
            contract_id: input.contract_id,
            job_status: input.job_status.into(),
            contract_scope: input.contract_scope,
            proposed_changes: input
                .proposed_changes
                .into_iter()
                .map(|c| auditing::ProposedChange {
                    target: c.target,
                    action: c.action,
                })
                .collect(),
            steps: input
                .steps
                .into_iter()
                .map(|s| auditing::ExecutedStep {
                    target: s.target,
                    action: s.action,
                    mutates: s.mutates,
                    rollback_ref: s.rollback_ref,
                    succeeded: s.succeeded,
                    started_at: s.started_at.map(|t| t.0),
                    completed_at: s.completed_at.map(|t| t.0),
                })
                .collect(),
            mutations_observed: input.mutations_observed,
            health_before: signals(input.health_before),
            health_after: signals(input.health_after),
            activation_window: input.activation_window.map(|w| auditing::TimeWindow {
                start: w.start.0,
                end: w.end.0,
            }),
            started_at: input.started_at.0,
            completed_at: input.completed_at.0,
        }
    }
}

/// A health signal as the audit recorded it.
#[derive(SimpleObject)]
pub struct HealthSignal {
    /// The signal's name.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// HEALTHY or DEGRADED.
    pub status: HealthStatus,
}

fn stored_signals(json: &Option<serde_json::Value>) -> Vec<HealthSignal> {
    json.clone()
        .and_then(|v| serde_json::from_value::<Vec<auditing::HealthSignal>>(v).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|s| HealthSignal {
            name: s.name,
            value: s.value,
            status: s.status.into(),
        })
        .collect()
}

pub struct AuditCheck(pub audit_check::Model);

/// One of the seven checks of an audit.
#[Object]
impl AuditCheck {
    /// `chk_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// `scope_compliance`, `health_preservation`, `execution_fidelity`, `timing_compliance`,
    /// `rollback_availability`, `signal_consistency` or `no_unauthorized_mutations`.
    async fn check_id(&self) -> &str {
        &self.0.check_id
    }
    /// The check's name, for people.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The question the check answers.
    async fn question(&self) -> &str {
        &self.0.question
    }
    /// PASS, FAIL or INCONCLUSIVE.
    async fn result(&self) -> CheckResult {
        self.0.result.into()
    }
    /// Why, with specifics.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// What the check looked at.
    async fn evidence(&self) -> Json<Value> {
        Json(self.0.evidence.clone())
    }
}

pub struct Audit(pub audit::Model);

/// A post-execution audit of a job against its contract.
#[Object]
impl Audit {
    /// `aud_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The audited job.
    async fn job_id(&self) -> &str {
        &self.0.job_id
    }
    /// The contract the job ran under.
    async fn contract_id(&self) -> &str {
        &self.0.contract_id
    }
    /// PENDING until the audit job has run, then COMPLETED (or FAILED).
    async fn status(&self) -> AuditStatus {
        self.0.status.into()
    }
    /// PASS, FAIL or INCONCLUSIVE, once COMPLETED.
    async fn verdict(&self) -> Option<AuditVerdict> {
        self.0.verdict.map(Into::into)
    }
    /// Why the verdict, naming the checks that decided it.
    async fn verdict_reason(&self) -> Option<&str> {
        self.0.verdict_reason.as_deref()
    }
    /// The seven checks in their fixed order (empty until COMPLETED).
    async fn checks(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AuditCheck>> {
        let rows = audits::checks(&state(ctx).db, &self.0.tenant_id, &self.0.id)
            .await
            .gql()?;
        Ok(rows.into_iter().map(AuditCheck).collect())
    }
    /// How many checks passed.
    async fn checks_passed(&self) -> i32 {
        self.0.checks_passed
    }
    /// How many checks failed.
    async fn checks_failed(&self) -> i32 {
        self.0.checks_failed
    }
    /// How many checks could not decide.
    async fn checks_inconclusive(&self) -> i32 {
        self.0.checks_inconclusive
    }
    /// The health signals before the job, as audited.
    async fn health_before(&self) -> Vec<HealthSignal> {
        stored_signals(&self.0.health_before)
    }
    /// The health signals after the job, as audited.
    async fn health_after(&self) -> Vec<HealthSignal> {
        stored_signals(&self.0.health_after)
    }
    /// When the checks ran.
    async fn audited_at(&self) -> Option<DateTime> {
        self.0.audited_at.map(Into::into)
    }
    /// How long the audit job took to check and store the result, in milliseconds.
    async fn duration_ms(&self) -> Option<i64> {
        self.0.duration_ms
    }
    /// The version of the check rules that judged the job.
    async fn auditor_version(&self) -> Option<&str> {
        self.0.auditor_version.as_deref()
    }
    /// Why the audit FAILED to run.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// The request as received.
    async fn request(&self) -> Json<Value> {
        Json(self.0.request.clone())
    }
    /// When the audit was requested.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

/// Where a job's rollout stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum RolloutStatus {
    /// No completed audit of the job yet.
    PendingAudit,
    /// The latest completed audit passed: the rollout may proceed.
    Authorized,
    /// The latest completed audit failed; `reason` names the failing checks.
    Blocked,
    /// The latest completed audit was inconclusive: a person must decide.
    NeedsReview,
}

/// Whether a job's rollout may proceed.
#[derive(SimpleObject)]
pub struct RolloutGate {
    /// The job.
    pub job_id: String,
    /// True only when the latest completed audit's verdict is PASS.
    pub authorized: bool,
    /// Why it is (not) authorized, as a state.
    pub status: RolloutStatus,
    /// Why, in words.
    pub reason: String,
    /// The latest completed audit the decision rests on.
    pub audit: Option<Audit>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// One audit of the tenant.
    async fn audit(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Audit> {
        let principal = principal(ctx)?;
        let found = audits::get(&state(ctx).db, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Audit(found))
    }

    /// The tenant's audits, newest first; of one job when `jobId` is given.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn audits(
        &self,
        ctx: &Context<'_>,
        job_id: Option<String>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Audit>> {
        let principal = principal(ctx)?;
        let mut query =
            audit::Entity::find().filter(audit::Column::TenantId.eq(principal.tenant_id.as_str()));
        if let Some(job) = job_id {
            query = query.filter(audit::Column::JobId.eq(job));
        }
        pagination::keyset(
            ctx,
            query,
            audit::Column::Id,
            KeyKind::Text,
            Order::Desc,
            PageArgs::new(first, after, last, before),
            |a| a.id.clone(),
            Audit,
        )
        .await
    }

    /// Whether the rollout of `jobId` may proceed: authorized only when its latest completed
    /// audit passed.
    async fn rollout_gate(
        &self,
        ctx: &Context<'_>,
        job_id: String,
    ) -> async_graphql::Result<RolloutGate> {
        let principal = principal(ctx)?;
        let (gate, latest) = audits::rollout_gate(&state(ctx).db, &principal.tenant_id, &job_id)
            .await
            .gql()?;
        Ok(RolloutGate {
            job_id,
            authorized: gate.authorized,
            status: match gate.status {
                auditing::GateStatus::PendingAudit => RolloutStatus::PendingAudit,
                auditing::GateStatus::Authorized => RolloutStatus::Authorized,
                auditing::GateStatus::Blocked => RolloutStatus::Blocked,
                auditing::GateStatus::NeedsReview => RolloutStatus::NeedsReview,
            },
            reason: gate.reason,
            audit: latest.map(Audit),
        })
    }
}

#[derive(Default)]
pub struct AuditMutation;

#[Object]
impl AuditMutation {
    /// Audit a job executed under a contract. The request is validated (nothing is stored or
    /// enqueued when it is invalid), stored, and answered `PENDING`; the audit job runs the seven
    /// checks. Poll `audit(id)` or `rolloutGate(jobId)`.
    #[graphql(complexity = 20)]
    async fn request_audit(
        &self,
        ctx: &Context<'_>,
        input: AuditRequestInput,
    ) -> async_graphql::Result<Audit> {
        super::rate_limit(ctx, governance_core::rate_limit::Costly::RequestAudit)?;
        let principal = super::authorized(ctx, Capability::Read)?;
        let state = state(ctx);
        let committed = audits::request(&state.store, &principal.tenant_id, input.into())
            .await
            .gql()?;
        Ok(Audit(state.after_commit(committed).await))
    }
}

/// An audit finished (COMPLETED with a verdict, or FAILED).
pub struct AuditEvent {
    event: governance_entities::event::Model,
}

/// An audit's completion, from the outbox. Resume after `cursor` to lose nothing.
#[Object]
impl AuditEvent {
    /// The position in the tenant's event sequence: pass it as `after` to resume.
    async fn cursor(&self) -> String {
        self.event.seq.to_string()
    }
    /// The audit's id.
    async fn audit_id(&self) -> ID {
        ID(self.event.subject_id.clone())
    }
    /// The audited job.
    async fn job_id(&self) -> Option<&str> {
        self.event.payload.get("jobId").and_then(Value::as_str)
    }
    /// COMPLETED or FAILED.
    async fn status(&self) -> Option<AuditStatus> {
        self.event
            .payload
            .get("status")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<governance_entities::enums::AuditStatus>().ok())
            .map(Into::into)
    }
    /// PASS, FAIL or INCONCLUSIVE, when COMPLETED.
    async fn verdict(&self) -> Option<AuditVerdict> {
        self.event
            .payload
            .get("verdict")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<governance_entities::enums::AuditVerdict>().ok())
            .map(Into::into)
    }
    /// When the result was committed.
    async fn occurred_at(&self) -> DateTime {
        self.event.created_at.into()
    }
    /// The audit with its checks.
    async fn audit(&self, ctx: &Context<'_>) -> async_graphql::Result<Audit> {
        let found = audits::get(
            &state(ctx).db,
            &self.event.tenant_id,
            &self.event.subject_id,
        )
        .await
        .gql()?;
        Ok(Audit(found))
    }
}

#[derive(Default)]
pub struct AuditSubscription;

#[async_graphql::Subscription]
impl AuditSubscription {
    /// Audit completions of the tenant (of one job when `jobId` is given): first every stored
    /// one after `after` (from the beginning when omitted), then live, in order, with no gap
    /// and no duplicate.
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        job_id: Option<String>,
        after: Option<String>,
    ) -> async_graphql::Result<impl futures::Stream<Item = AuditEvent> + use<>> {
        use futures::StreamExt;
        let principal = principal(ctx)?;
        let after = super::incidents::parse_event_cursor(after.as_deref()).gql()?;
        let state = state(ctx);
        let stream = governance_workers::events::tenant_stream(
            state.db.clone(),
            &state.bus,
            principal.tenant_id.clone(),
            after,
        )
        .filter_map(move |event| {
            let keep = event.kind == "AUDIT_COMPLETED"
                && job_id.as_deref().is_none_or(|job| {
                    event.payload.get("jobId").and_then(Value::as_str) == Some(job)
                });
            async move { keep.then_some(AuditEvent { event }) }
        });
        Ok(stream)
    }
}
