//! Human approval: a step held by a REQUIRE_APPROVAL policy waits for `approveStep` or
//! `denyStep` (an APPROVER key other than the one that reported it), or for its time to run
//! out. `approval` and `approvals` read them; `approvalEvents` streams their changes.

use async_graphql::{Context, ID, InputObject, Object};
use governance_core::{
    approvals::{self, ApprovalFilter, ApprovalState, Verdict},
    roles::Capability,
    tenancy,
};

use super::{
    enums::{ApprovalOnTimeout, ApprovalStatus, DecisionAction},
    error::GqlResultExt,
    loaders::{self, loader},
    pagination::{self, Conn, PageArgs},
    policies::Policy,
    principal,
    runs::{Run, load_run},
    scalars::DateTime,
    state,
    tenancy::ApiKey,
};

/// Approvals `approvals` lists at most (newest first).
const MAX_LISTED: u64 = 10_000;

#[derive(Clone)]
pub struct Approval(pub ApprovalState);

/// A step held for a person's decision, and what was decided.
#[Object]
impl Approval {
    /// `apr_…`
    async fn id(&self) -> ID {
        ID(self.0.approval.id.clone())
    }
    /// The run whose step is held.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        load_run(ctx, &self.0.approval.run_id).await
    }
    /// The held step.
    async fn step_index(&self) -> i64 {
        self.0.approval.step_index
    }
    /// PENDING until decided; then GRANTED, DENIED or EXPIRED.
    async fn status(&self) -> ApprovalStatus {
        self.0.status().into()
    }
    /// The held step's final decision once decided: CONTINUE or STOP.
    async fn decision(&self) -> Option<DecisionAction> {
        self.0.final_decision().map(Into::into)
    }
    /// The REQUIRE_APPROVAL policy that held the step.
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Policy>> {
        Ok(loader(ctx)?
            .load_one(loaders::PolicyId(self.0.approval.policy_id.clone()))
            .await?
            .map(Policy))
    }
    /// The version of that policy in the run's snapshot.
    async fn policy_version(&self) -> i32 {
        self.0.approval.policy_version
    }
    /// When the step was held.
    async fn requested_at(&self) -> DateTime {
        self.0.approval.requested_at.into()
    }
    /// When `onTimeout` applies if nobody decides.
    async fn expires_at(&self) -> DateTime {
        self.0.approval.expires_at.into()
    }
    /// What the step becomes at `expiresAt` if nobody decides.
    async fn on_timeout(&self) -> ApprovalOnTimeout {
        self.0.approval.on_timeout.into()
    }
    /// The key that reported the held step (it cannot decide it); null for the service.
    async fn requested_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ApiKey>> {
        key(ctx, self.0.approval.requested_by_key.as_deref()).await
    }
    /// When it was decided (or expired).
    async fn decided_at(&self) -> Option<DateTime> {
        self.0.decision.as_ref().map(|d| d.decided_at.into())
    }
    /// The key that decided it; null while pending and when it expired.
    async fn decided_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ApiKey>> {
        let decided_by = self
            .0
            .decision
            .as_ref()
            .and_then(|d| d.decided_by_key.as_deref());
        key(ctx, decided_by).await
    }
    /// The decider's note.
    async fn note(&self) -> Option<&str> {
        self.0.decision.as_ref().and_then(|d| d.note.as_deref())
    }
    /// The decision's entry in the run's hash chain (it follows the held step's).
    async fn entry_hash(&self) -> Option<&str> {
        self.0.decision.as_ref().map(|d| d.entry_hash.as_str())
    }
}

/// An API key of the caller's tenant, by id.
async fn key(ctx: &Context<'_>, id: Option<&str>) -> async_graphql::Result<Option<ApiKey>> {
    let Some(id) = id else { return Ok(None) };
    let principal = principal(ctx)?;
    Ok(tenancy::key_of(&state(ctx).db, &principal.tenant_id, id)
        .await
        .gql()?
        .map(ApiKey::from))
}

/// Which approvals to list.
#[derive(InputObject, Default)]
pub struct ApprovalFilterInput {
    /// Only approvals in this status.
    pub status: Option<ApprovalStatus>,
    /// Only approvals of this run.
    pub run_id: Option<ID>,
}

#[derive(Default)]
pub struct ApprovalQuery;

#[Object]
impl ApprovalQuery {
    /// One approval of the tenant.
    async fn approval(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Approval> {
        let principal = principal(ctx)?;
        let found = approvals::get(&state(ctx).db, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Approval(found))
    }

    /// The tenant's approvals, newest first; `filter: { status: PENDING }` is the queue of
    /// steps waiting for a person.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn approvals(
        &self,
        ctx: &Context<'_>,
        filter: Option<ApprovalFilterInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Approval>> {
        let principal = principal(ctx)?;
        let filter = filter.unwrap_or_default();
        let filter = ApprovalFilter {
            status: filter.status.map(Into::into),
            run_id: filter.run_id.map(|id| id.to_string()),
        };
        let all = approvals::list(&state(ctx).db, &principal.tenant_id, &filter, MAX_LISTED)
            .await
            .gql()?;
        pagination::in_memory(
            ctx,
            all,
            PageArgs::new(first, after, last, before),
            |a| a.approval.id.clone(),
            Approval,
        )
    }
}

#[derive(Default)]
pub struct ApprovalMutation;

impl ApprovalMutation {
    async fn decide(
        ctx: &Context<'_>,
        id: ID,
        verdict: Verdict,
        note: Option<String>,
    ) -> async_graphql::Result<Approval> {
        let principal = super::authorized(ctx, Capability::Decide)?;
        let state = state(ctx);
        let committed = approvals::decide(&state.store, principal, &id, verdict, note)
            .await
            .gql()?;
        Ok(Approval(state.after_commit(committed).await))
    }
}

#[Object]
impl ApprovalMutation {
    /// Approve a held step: its final decision is CONTINUE, recorded as a chained entry of the
    /// run's record naming this key and the note, and the run goes on (send the held step again
    /// to get the decision). APPROVER (or ADMIN), and not the key that reported the step
    /// (`FORBIDDEN`); a decided approval cannot be decided again (`CONFLICT`).
    async fn approve_step(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(desc = "Why; recorded with the decision.")] note: Option<String>,
    ) -> async_graphql::Result<Approval> {
        Self::decide(ctx, id, Verdict::Grant, note).await
    }

    /// Deny a held step: the run stops at it through the normal stop path (FAILED_POLICY with
    /// POLICY_BLOCK, enforcement, incident, events, evaluation record). Same rules as
    /// `approveStep`.
    async fn deny_step(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(desc = "Why; recorded with the decision.")] note: Option<String>,
    ) -> async_graphql::Result<Approval> {
        Self::decide(ctx, id, Verdict::Deny, note).await
    }
}

pub struct ApprovalEvent {
    event: governance_entities::event::Model,
    approval: Option<ApprovalState>,
}

/// An approval requested, granted, denied or expired, from the outbox. Resume after `cursor`
/// to lose nothing.
#[Object]
impl ApprovalEvent {
    /// The position in the tenant's event sequence: pass it as `after` to resume.
    async fn cursor(&self) -> String {
        self.event.seq.to_string()
    }
    /// `APPROVAL_REQUESTED`, `APPROVAL_GRANTED`, `APPROVAL_DENIED`, `APPROVAL_EXPIRED` or
    /// `APPROVAL_CANCELLED`.
    async fn kind(&self) -> &str {
        &self.event.kind
    }
    /// The approval, as it is now.
    async fn approval(&self) -> Option<Approval> {
        self.approval.clone().map(Approval)
    }
    /// When it was committed.
    async fn occurred_at(&self) -> DateTime {
        self.event.created_at.into()
    }
}

/// The approval event kinds.
pub const APPROVAL_EVENT_KINDS: [&str; 5] = [
    "APPROVAL_REQUESTED",
    "APPROVAL_GRANTED",
    "APPROVAL_DENIED",
    "APPROVAL_EXPIRED",
    "APPROVAL_CANCELLED",
];

#[derive(Default)]
pub struct ApprovalSubscription;

#[async_graphql::Subscription]
impl ApprovalSubscription {
    /// Approvals requested and decided: first those stored after `after` (from the beginning
    /// when omitted), then live, in order, with no gap and no duplicate.
    async fn approval_events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> async_graphql::Result<impl futures::Stream<Item = ApprovalEvent> + use<>> {
        use futures::StreamExt;
        let (stream, db, tenant_id) =
            super::incidents::tenant_events_of(ctx, after.as_deref(), &APPROVAL_EVENT_KINDS)?;
        let stream = stream.then(move |event| {
            let (db, tenant_id) = (db.clone(), tenant_id.clone());
            async move {
                let approval = approvals::get(&db, &tenant_id, &event.subject_id)
                    .await
                    .map_err(|err| tracing::error!(error = %err, "could not read an approval"))
                    .ok();
                ApprovalEvent { event, approval }
            }
        });
        Ok(stream)
    }
}
