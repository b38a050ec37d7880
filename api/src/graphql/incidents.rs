//! Violations (the facts), their evidence, and incidents (the workflow around a stop): read,
//! filter, acknowledge, resolve.

use async_graphql::{Context, ID, InputObject, Json, Object};
use governance_core::roles::Capability;
use governance_core::{CoreError, incidents as core_incidents, records};
use governance_entities::{enums as db, evidence, incident, violation};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter};
use serde_json::Value;

use super::{
    enums::{IncidentStatus, PolicyAction, PolicyKind, Severity},
    error::GqlResultExt,
    exports::Export,
    loaders::{self, loader},
    pagination::{self, Conn, KeyKind, Order, PageArgs},
    policies::Policy,
    principal,
    runs::{Run, load_run},
    scalars::DateTime,
    snapshots::PolicySnapshot,
    state,
};

pub struct Violation(pub violation::Model);

/// A violated policy at one step: the fact, persisted before any incident.
#[Object]
impl Violation {
    /// `vio_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The violated policy's id.
    async fn policy_id(&self) -> &str {
        &self.0.policy_id
    }
    /// The policy as it is now (its version at the time is `policyVersion`).
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Policy>> {
        Ok(loader(ctx)?
            .load_one(loaders::PolicyId(self.0.policy_id.clone()))
            .await?
            .map(Policy))
    }
    /// The policy's version the step was checked against.
    async fn policy_version(&self) -> i32 {
        self.0.policy_version
    }
    /// The kind of the violated policy.
    async fn policy_type(&self) -> PolicyKind {
        self.0.policy_type.into()
    }
    /// The rule that was violated, in words.
    async fn violated_rule(&self) -> &str {
        &self.0.violated_rule
    }
    /// The value observed at the step (e.g. cumulative tokens).
    async fn evaluated_value(&self) -> &str {
        &self.0.evaluated_value
    }
    /// The condition that was crossed (e.g. `tokens > 1000`).
    async fn threshold_condition(&self) -> &str {
        &self.0.threshold_condition
    }
    /// The policy's severity.
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    /// What the policy does on a violation: BLOCK stops the run, WARN lets it go on.
    async fn action(&self) -> PolicyAction {
        self.0.action.into()
    }
    /// Why, in one sentence.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// The 0-based index of the violating step.
    async fn step_index(&self) -> i64 {
        self.0.step_index
    }
    /// When the violating step happened.
    async fn timestamp(&self) -> DateTime {
        self.0.timestamp.into()
    }
    /// The snapshot (`SNAP-…`) the step was checked against.
    async fn snapshot_id(&self) -> &str {
        &self.0.snapshot_id
    }
    /// The snapshot the step was checked against.
    async fn snapshot(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<PolicySnapshot>> {
        Ok(loader(ctx)?
            .load_one(loaders::SnapshotId(self.0.snapshot_id.clone()))
            .await?
            .map(PolicySnapshot))
    }
    /// What was checked (content matches masked).
    async fn evidence(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Evidence>> {
        Ok(loader(ctx)?
            .load_one(loaders::EvidenceOfViolation(self.0.id.clone()))
            .await?
            .map(Evidence))
    }
    /// The run the violation happened in.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        load_run(ctx, &self.0.run_id).await
    }
    /// The incident this violation opened (only the stopping violation opens one).
    async fn incident(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Incident>> {
        Ok(loader(ctx)?
            .load_one(loaders::IncidentOfViolation(self.0.id.clone()))
            .await?
            .map(Incident))
    }
}

pub struct Evidence(pub evidence::Model);

/// What a violation was decided on. Matched content is masked, never stored in full.
#[Object]
impl Evidence {
    /// `evi_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The evidence document (step, findings, masked matches).
    async fn content(&self) -> Json<Value> {
        Json(self.0.content.clone())
    }
    /// sha256 of the canonical content.
    async fn content_hash(&self) -> &str {
        &self.0.content_hash
    }
    /// When it was recorded.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    /// The violation it supports.
    async fn violation(&self, ctx: &Context<'_>) -> async_graphql::Result<Violation> {
        load_violation(ctx, &self.0.violation_id).await
    }
}

async fn load_violation(ctx: &Context<'_>, id: &str) -> async_graphql::Result<Violation> {
    loader(ctx)?
        .load_one(loaders::ViolationId(id.to_string()))
        .await?
        .map(Violation)
        .ok_or_else(|| CoreError::not_found("Violation", id))
        .gql()
}

pub struct Incident(pub incident::Model);

/// An incident: opened once, when a run is stopped by a violation; then acknowledged and
/// resolved by people.
#[Object]
impl Incident {
    /// `inc_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// A one-line summary: which policy stopped which run at which step.
    async fn title(&self) -> &str {
        &self.0.title
    }
    /// The stopping policy's severity.
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    /// OPEN, then ACKNOWLEDGED, then RESOLVED.
    async fn status(&self) -> IncidentStatus {
        self.0.status.into()
    }
    /// The resolution note.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    /// When the incident was opened.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    /// When governance detected the violation (the commit of the stopping step).
    async fn detected_at(&self) -> DateTime {
        self.0.detected_at.into()
    }
    /// When someone acknowledged it.
    async fn acknowledged_at(&self) -> Option<DateTime> {
        self.0.acknowledged_at.map(Into::into)
    }
    /// When it was resolved.
    async fn resolved_at(&self) -> Option<DateTime> {
        self.0.resolved_at.map(Into::into)
    }
    /// When it last changed.
    async fn updated_at(&self) -> DateTime {
        self.0.updated_at.into()
    }
    /// The stopped run.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        load_run(ctx, &self.0.run_id).await
    }
    /// The violation that stopped the run.
    async fn violation(&self, ctx: &Context<'_>) -> async_graphql::Result<Violation> {
        load_violation(ctx, &self.0.violation_id).await
    }
    /// The evidence of the stopping violation.
    async fn evidence(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Evidence>> {
        let Some(id) = &self.0.evidence_id else {
            return Ok(None);
        };
        Ok(loader(ctx)?
            .load_one(loaders::EvidenceId(id.clone()))
            .await?
            .map(Evidence))
    }
    /// Exports requested for this incident, oldest first.
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
            loaders::ExportsOfIncident(self.0.id.clone()),
            PageArgs::new(first, after, last, before),
            |e| e.id.clone(),
            Export,
        )
        .await
    }
}

/// Filter of `incidents`. Every field narrows the list; lists match any of their values.
#[derive(InputObject, Default)]
pub struct IncidentFilter {
    /// Incidents of this run.
    pub run_id: Option<ID>,
    /// Incidents in any of these statuses.
    pub status: Option<Vec<IncidentStatus>>,
    /// Incidents of any of these severities.
    pub severity: Option<Vec<Severity>>,
    /// Incidents at least this severe.
    pub min_severity: Option<Severity>,
    /// Incidents opened at or after this instant.
    pub from: Option<DateTime>,
    /// Incidents opened before this instant.
    pub to: Option<DateTime>,
}

impl IncidentFilter {
    fn condition(self, tenant_id: &str) -> Condition {
        use incident::Column as C;
        let mut cond = Condition::all().add(C::TenantId.eq(tenant_id));
        if let Some(run) = self.run_id {
            cond = cond.add(C::RunId.eq(run.to_string()));
        }
        if let Some(statuses) = self.status {
            cond = cond.add(C::Status.is_in(statuses.into_iter().map(db::IncidentStatus::from)));
        }
        if let Some(severities) = self.severity {
            cond = cond.add(C::Severity.is_in(severities.into_iter().map(db::Severity::from)));
        }
        if let Some(min) = self.min_severity {
            cond = cond.add(C::SeverityRank.gte(db::Severity::from(min).rank()));
        }
        if let Some(from) = self.from {
            cond = cond.add(C::CreatedAt.gte(from.0));
        }
        if let Some(to) = self.to {
            cond = cond.add(C::CreatedAt.lt(to.0));
        }
        cond
    }
}

/// Filter of `violations`. Every field narrows the list; lists match any of their values.
#[derive(InputObject, Default)]
pub struct ViolationFilter {
    /// Violations of this policy.
    pub policy_id: Option<ID>,
    /// Violations in this run.
    pub run_id: Option<ID>,
    /// Violations of any of these severities.
    pub severity: Option<Vec<Severity>>,
    /// Violations at least this severe.
    pub min_severity: Option<Severity>,
    /// Violations of BLOCK (stopping) or WARN policies only.
    pub action: Option<PolicyAction>,
    /// Violations whose step happened at or after this instant.
    pub from: Option<DateTime>,
    /// Violations whose step happened before this instant.
    pub to: Option<DateTime>,
}

impl ViolationFilter {
    /// The filter as a SQL condition, within `tenant_id`.
    pub fn condition(self, tenant_id: &str) -> Condition {
        use violation::Column as C;
        let mut cond = Condition::all().add(C::TenantId.eq(tenant_id));
        if let Some(policy) = self.policy_id {
            cond = cond.add(C::PolicyId.eq(policy.to_string()));
        }
        if let Some(run) = self.run_id {
            cond = cond.add(C::RunId.eq(run.to_string()));
        }
        if let Some(severities) = self.severity {
            cond = cond.add(C::Severity.is_in(severities.into_iter().map(db::Severity::from)));
        }
        if let Some(min) = self.min_severity {
            cond = cond.add(C::SeverityRank.gte(db::Severity::from(min).rank()));
        }
        if let Some(action) = self.action {
            cond = cond.add(C::Action.eq(db::PolicyAction::from(action)));
        }
        if let Some(from) = self.from {
            cond = cond.add(C::Timestamp.gte(from.0));
        }
        if let Some(to) = self.to {
            cond = cond.add(C::Timestamp.lt(to.0));
        }
        cond
    }
}

/// One page of violations matching `filter`, newest first.
pub async fn violation_page(
    ctx: &Context<'_>,
    filter: ViolationFilter,
    tenant_id: &str,
    args: PageArgs,
) -> async_graphql::Result<Conn<Violation>> {
    pagination::keyset(
        ctx,
        violation::Entity::find().filter(filter.condition(tenant_id)),
        violation::Column::Id,
        KeyKind::Text,
        Order::Desc,
        args,
        |v| v.id.clone(),
        Violation,
    )
    .await
}

#[derive(Default)]
pub struct IncidentQuery;

#[Object]
impl IncidentQuery {
    /// The tenant's incidents, newest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn incidents(
        &self,
        ctx: &Context<'_>,
        filter: Option<IncidentFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Incident>> {
        let principal = principal(ctx)?;
        let cond = filter.unwrap_or_default().condition(&principal.tenant_id);
        pagination::keyset(
            ctx,
            incident::Entity::find().filter(cond),
            incident::Column::Id,
            KeyKind::Text,
            Order::Desc,
            PageArgs::new(first, after, last, before),
            |i| i.id.clone(),
            Incident,
        )
        .await
    }

    /// One incident of the tenant.
    async fn incident(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Incident> {
        let principal = principal(ctx)?;
        let found = records::incident(&state(ctx).db, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Incident(found))
    }

    /// The tenant's violations, newest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn violations(
        &self,
        ctx: &Context<'_>,
        filter: Option<ViolationFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Violation>> {
        let principal = principal(ctx)?;
        violation_page(
            ctx,
            filter.unwrap_or_default(),
            &principal.tenant_id,
            PageArgs::new(first, after, last, before),
        )
        .await
    }

    /// One violation of the tenant.
    async fn violation(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Violation> {
        let principal = principal(ctx)?;
        let found = records::violation(&state(ctx).db, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Violation(found))
    }
}

#[derive(Default)]
pub struct IncidentMutation;

#[Object]
impl IncidentMutation {
    /// Someone is on it: OPEN → ACKNOWLEDGED (sets `acknowledgedAt`, emits ACKNOWLEDGED).
    /// Acknowledging again changes nothing; a RESOLVED incident is a `CONFLICT`.
    async fn acknowledge_incident(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Incident> {
        let principal = super::authorized(ctx, Capability::Decide)?;
        let state = state(ctx);
        let committed = core_incidents::acknowledge(&state.store, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Incident(state.after_commit(committed).await))
    }

    /// Close the incident with a note: → RESOLVED (sets `resolvedAt`, emits RESOLVED). The note
    /// is required. Resolving again with the same note changes nothing; with another note it is
    /// a `CONFLICT`.
    async fn resolve_incident(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: String,
    ) -> async_graphql::Result<Incident> {
        let principal = super::authorized(ctx, Capability::Decide)?;
        let state = state(ctx);
        let committed = core_incidents::resolve(&state.store, &principal.tenant_id, &id, &note)
            .await
            .gql()?;
        Ok(Incident(state.after_commit(committed).await))
    }
}

/// What happened to an incident.
#[derive(async_graphql::Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum IncidentEventKind {
    /// A run was stopped and the incident opened.
    Created,
    /// Someone acknowledged it.
    Acknowledged,
    /// It was resolved.
    Resolved,
}

impl IncidentEventKind {
    fn of(kind: &str) -> Option<Self> {
        match kind {
            "INCIDENT_CREATED" => Some(Self::Created),
            "INCIDENT_ACKNOWLEDGED" => Some(Self::Acknowledged),
            "INCIDENT_RESOLVED" => Some(Self::Resolved),
            _ => None,
        }
    }
}

/// An incident event, as stored in the outbox.
pub struct IncidentEvent {
    event: governance_entities::event::Model,
    kind: IncidentEventKind,
}

/// Something that happened to an incident. Resume a stream after `cursor` to lose nothing.
#[Object]
impl IncidentEvent {
    /// The event's position in the tenant's event sequence: pass it as `after` to resume.
    async fn cursor(&self) -> String {
        self.event.seq.to_string()
    }
    /// CREATED, ACKNOWLEDGED or RESOLVED.
    async fn kind(&self) -> IncidentEventKind {
        self.kind
    }
    /// When it happened (committed).
    async fn occurred_at(&self) -> DateTime {
        self.event.created_at.into()
    }
    /// The incident's id.
    async fn incident_id(&self) -> ID {
        ID(self.event.subject_id.clone())
    }
    /// The incident's status right after the event.
    async fn status(&self) -> Option<IncidentStatus> {
        self.event
            .payload
            .get("status")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<db::IncidentStatus>().ok())
            .map(Into::into)
    }
    /// The incident's severity.
    async fn severity(&self) -> Option<Severity> {
        self.event
            .severity_rank
            .and_then(db::Severity::from_rank)
            .map(Into::into)
    }
    /// The incident as it is now.
    async fn incident(&self, ctx: &Context<'_>) -> async_graphql::Result<Incident> {
        loader(ctx)?
            .load_one(loaders::IncidentId(self.event.subject_id.clone()))
            .await?
            .map(Incident)
            .ok_or_else(|| CoreError::not_found("Incident", self.event.subject_id.as_str()))
            .gql()
    }
}

/// The caller's tenant events of `kinds` after the cursor `after` (from the beginning when
/// omitted): stored ones first, then live, in order, with no gap and no duplicate. Returns the
/// stream with the database and tenant, for streams that read more per event.
pub fn tenant_events_of(
    ctx: &Context<'_>,
    after: Option<&str>,
    kinds: &'static [&'static str],
) -> async_graphql::Result<(
    impl futures::Stream<Item = governance_entities::event::Model> + use<>,
    sea_orm::DatabaseConnection,
    String,
)> {
    use futures::StreamExt;
    let principal = principal(ctx)?;
    let after = parse_event_cursor(after).gql()?;
    let state = state(ctx);
    let stream = governance_workers::events::tenant_stream(
        state.db.clone(),
        &state.bus,
        principal.tenant_id.clone(),
        after,
    )
    .filter(move |event| std::future::ready(kinds.contains(&event.kind.as_str())));
    Ok((stream, state.db.clone(), principal.tenant_id.clone()))
}

/// A cursor of the tenant's event sequence, or `BAD_USER_INPUT`.
pub fn parse_event_cursor(cursor: Option<&str>) -> Result<i64, CoreError> {
    match cursor {
        None => Ok(0),
        Some(text) => text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            CoreError::bad_field(
                "after",
                format!(
                    "`{text}` is not an event cursor: pass the `cursor` of an event you received"
                ),
            )
        }),
    }
}

#[derive(Default)]
pub struct IncidentSubscription;

#[async_graphql::Subscription]
impl IncidentSubscription {
    /// Incident events of the tenant: first every stored event after `after` (from the
    /// beginning when omitted), then live ones as they are committed, in sequence order, with
    /// no gap and no duplicate. Reconnect with the last `cursor` you received to lose nothing.
    /// `minSeverity` keeps only incidents at least that severe.
    async fn incident_events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        min_severity: Option<Severity>,
    ) -> async_graphql::Result<impl futures::Stream<Item = IncidentEvent> + use<>> {
        use futures::StreamExt;
        let principal = principal(ctx)?;
        let after = parse_event_cursor(after.as_deref()).gql()?;
        let min_rank = min_severity
            .map(|s| db::Severity::from(s).rank())
            .unwrap_or(0);
        let state = state(ctx);
        let stream = governance_workers::events::tenant_stream(
            state.db.clone(),
            &state.bus,
            principal.tenant_id.clone(),
            after,
        )
        .filter_map(move |event| async move {
            let kind = IncidentEventKind::of(&event.kind)?;
            (event.severity_rank.unwrap_or(0) >= min_rank).then_some(IncidentEvent { event, kind })
        });
        Ok(stream)
    }
}
