//! Policy snapshots: read one, list them, walk to the runs checked against one, and compare two.

use async_graphql::{Context, ID, Json, Object};
use governance_core::{
    CoreError,
    compare::{self, PolicyChange as CoreChange, SnapshotPolicy as CorePolicy},
};
use governance_entities::{policy_snapshot, run};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;

use super::{
    enums::{PolicyAction, PolicyKind, Severity},
    error::GqlResultExt,
    loaders::{self, loader},
    pagination::{self, Conn, KeyKind, Order, PageArgs},
    policies::Policy,
    principal,
    runs::Run,
    scalars::DateTime,
};

pub struct PolicySnapshot(pub policy_snapshot::Model);

/// An immutable, content-addressed set of policies: what a run is checked against. The same
/// policy set always gives the same snapshot (and id).
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
    /// How many policies the snapshot holds.
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
    /// The thresholds as a JSON object (policy id → rule).
    async fn thresholds(&self) -> async_graphql::Result<Json<Value>> {
        serde_json::from_str(&self.0.thresholds_json)
            .map(Json)
            .map_err(|e| CoreError::Internal(e.into()))
            .gql()
    }
    /// The policies as captured, sorted by id.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn policies(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<SnapshotPolicy>> {
        let policies = compare::snapshot_policies(&self.0).gql()?;
        pagination::in_memory(
            ctx,
            policies,
            PageArgs::new(first, after, last, before),
            |p| p.id.clone(),
            SnapshotPolicy,
        )
    }
    /// The runs checked against this snapshot, newest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Run>> {
        let query = run::Entity::find()
            .filter(run::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .filter(run::Column::PolicySnapshotId.eq(self.0.snapshot_id.as_str()));
        pagination::keyset(
            ctx,
            query,
            run::Column::Id,
            KeyKind::Text,
            Order::Desc,
            PageArgs::new(first, after, last, before),
            |r| r.id.clone(),
            Run,
        )
        .await
    }
    /// When the snapshot was first taken.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

pub struct SnapshotPolicy(pub CorePolicy);

/// A policy as a snapshot captured it (its version at the time, not as it is now).
#[Object]
impl SnapshotPolicy {
    /// The policy's id (`pol_…`).
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The policy's own version number when captured.
    async fn version(&self) -> i32 {
        self.0.version
    }
    /// The policy's name when captured.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The kind of rule.
    async fn kind(&self) -> PolicyKind {
        self.0.kind.into()
    }
    /// BLOCK stops the run on a violation; WARN records it and lets the run go on.
    async fn action(&self) -> PolicyAction {
        self.0.action.into()
    }
    /// How serious a violation is.
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    /// The workflow the policy was scoped to, if any.
    async fn workflow_id(&self) -> Option<&str> {
        self.0.workflow_id.as_deref()
    }
    /// The rule (thresholds) when captured, e.g. `{"maxTokens": 1000}`.
    async fn rule(&self) -> Json<Value> {
        Json(self.0.rule.clone())
    }
    /// The policy as it is now (null if it no longer exists).
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Policy>> {
        Ok(loader(ctx)?
            .load_one(loaders::PolicyId(self.0.id.clone()))
            .await?
            .map(Policy))
    }
}

pub struct PolicyChange(pub CoreChange);

/// A policy present in both snapshots with different content.
#[Object]
impl PolicyChange {
    /// The policy's id (`pol_…`).
    async fn policy_id(&self) -> ID {
        ID(self.0.policy_id.clone())
    }
    /// The policy's name in the newer snapshot.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Which fields differ (`name`, `kind`, `action`, `severity`, `workflowId`, `rule`,
    /// `version`).
    async fn changed_fields(&self) -> &[String] {
        &self.0.changed_fields
    }
    /// The rule (thresholds) in the `from` snapshot.
    async fn old_threshold(&self) -> Json<Value> {
        Json(self.0.old.rule.clone())
    }
    /// The rule (thresholds) in the `to` snapshot.
    async fn new_threshold(&self) -> Json<Value> {
        Json(self.0.new.rule.clone())
    }
    /// The policy as the `from` snapshot holds it.
    async fn old(&self) -> SnapshotPolicy {
        SnapshotPolicy(self.0.old.clone())
    }
    /// The policy as the `to` snapshot holds it.
    async fn new(&self) -> SnapshotPolicy {
        SnapshotPolicy(self.0.new.clone())
    }
}

pub struct SnapshotComparison(pub compare::SnapshotComparison);

/// The difference between two snapshots of the tenant.
#[Object]
impl SnapshotComparison {
    /// The older side of the comparison.
    async fn from(&self) -> PolicySnapshot {
        PolicySnapshot(self.0.from.clone())
    }
    /// The newer side of the comparison.
    async fn to(&self) -> PolicySnapshot {
        PolicySnapshot(self.0.to.clone())
    }
    /// True when both snapshots have the same content hash.
    async fn identical(&self) -> bool {
        self.0.identical
    }
    /// Policies in `to` and not in `from`, by id.
    async fn added(&self) -> Vec<SnapshotPolicy> {
        self.0.added.iter().cloned().map(SnapshotPolicy).collect()
    }
    /// Policies in `from` and not in `to`, by id.
    async fn removed(&self) -> Vec<SnapshotPolicy> {
        self.0.removed.iter().cloned().map(SnapshotPolicy).collect()
    }
    /// Policies in both whose content differs, with old and new thresholds.
    async fn changed(&self) -> Vec<PolicyChange> {
        self.0.changed.iter().cloned().map(PolicyChange).collect()
    }
    /// Policies identical in both.
    async fn unchanged(&self) -> Vec<SnapshotPolicy> {
        self.0
            .unchanged
            .iter()
            .cloned()
            .map(SnapshotPolicy)
            .collect()
    }
}

#[derive(Default)]
pub struct SnapshotQuery;

#[Object]
impl SnapshotQuery {
    /// One snapshot of the caller's tenant by its `SNAP-…` id.
    async fn policy_snapshot(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<PolicySnapshot> {
        loader(ctx)?
            .load_one(loaders::SnapshotId(id.to_string()))
            .await?
            .map(PolicySnapshot)
            .ok_or_else(|| CoreError::not_found("PolicySnapshot", id.to_string()))
            .gql()
    }

    /// The tenant's snapshots, newest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn policy_snapshots(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<PolicySnapshot>> {
        let principal = principal(ctx)?;
        let query = policy_snapshot::Entity::find()
            .filter(policy_snapshot::Column::TenantId.eq(principal.tenant_id.as_str()));
        pagination::keyset(
            ctx,
            query,
            policy_snapshot::Column::Pk,
            KeyKind::Int,
            Order::Desc,
            PageArgs::new(first, after, last, before),
            |s| s.pk.to_string(),
            PolicySnapshot,
        )
        .await
    }

    /// What changed between two snapshots: policies added, removed and changed (with old and
    /// new thresholds).
    async fn compare_policy_snapshots(
        &self,
        ctx: &Context<'_>,
        from: ID,
        to: ID,
    ) -> async_graphql::Result<SnapshotComparison> {
        let principal = principal(ctx)?;
        let comparison = compare::compare(&super::state(ctx).db, &principal.tenant_id, &from, &to)
            .await
            .gql()?;
        Ok(SnapshotComparison(comparison))
    }
}
