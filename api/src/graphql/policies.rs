//! Policies: create, update (a new version each time), enable/disable, read with history and
//! enforcement statistics.

use async_graphql::{
    Context, ID, InputObject, Json, MaybeUndefined, Object,
    connection::{Connection, EmptyFields},
};
use chrono::Duration;
use governance_core::policies::{self, NewPolicy, PolicyPatch};
use governance_entities::{policy, policy_enforcement, policy_version};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::Value;

use super::{
    enums::{EnforcementAction, PolicyAction, PolicyKind, Severity},
    error::GqlResultExt,
    pagination::{self, Order, Page},
    principal,
    scalars::DateTime,
    state,
};

/// A rule that governs runs. Every change writes a new version; old versions are kept.
pub struct Policy(pub policy::Model);

#[Object]
impl Policy {
    /// `pol_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn kind(&self) -> PolicyKind {
        self.0.kind.into()
    }
    /// The rule (thresholds), e.g. `{"maxTokens": 1000}`.
    async fn rule(&self) -> Json<Value> {
        Json(self.0.rule.clone())
    }
    async fn action(&self) -> PolicyAction {
        self.0.action.into()
    }
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    /// When set, the policy applies only to runs of this workflow.
    async fn workflow_id(&self) -> Option<&str> {
        self.0.workflow_id.as_deref()
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// The policy's own version number (1, 2, …).
    async fn version(&self) -> i32 {
        self.0.version
    }
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    async fn updated_at(&self) -> DateTime {
        self.0.updated_at.into()
    }
    /// Every version, newest first.
    async fn history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<PolicyVersion>> {
        let versions = policies::history(&state(ctx).db, &self.0.tenant_id, &self.0.id)
            .await
            .gql()?;
        Ok(versions.into_iter().map(PolicyVersion).collect())
    }
    /// How many runs this policy stopped or warned in the last 30 days.
    #[graphql(name = "triggerCount30d")]
    async fn trigger_count_30d(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let since = governance_core::time::now() - Duration::days(30);
        let (count, _) =
            policies::trigger_stats(&state(ctx).db, &self.0.tenant_id, &self.0.id, since)
                .await
                .gql()?;
        Ok(count)
    }
    /// When this policy last stopped or warned a run.
    async fn last_triggered_at(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<DateTime>> {
        let since = governance_core::time::now() - Duration::days(30);
        let (_, last) =
            policies::trigger_stats(&state(ctx).db, &self.0.tenant_id, &self.0.id, since)
                .await
                .gql()?;
        Ok(last.map(Into::into))
    }
    /// The append-only log of what this policy did, newest first.
    async fn enforcements(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: u64,
    ) -> async_graphql::Result<Vec<PolicyEnforcement>> {
        let rows = policies::enforcements(
            &state(ctx).db,
            &self.0.tenant_id,
            &self.0.id,
            first.min(state(ctx).config.limits.max_page_size as u64),
        )
        .await
        .gql()?;
        Ok(rows.into_iter().map(PolicyEnforcement).collect())
    }
}

/// One version of a policy, as it was written.
pub struct PolicyVersion(pub policy_version::Model);

#[Object]
impl PolicyVersion {
    async fn version(&self) -> i32 {
        self.0.version
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn kind(&self) -> PolicyKind {
        self.0.kind.into()
    }
    async fn rule(&self) -> Json<Value> {
        Json(self.0.rule.clone())
    }
    async fn action(&self) -> PolicyAction {
        self.0.action.into()
    }
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    async fn workflow_id(&self) -> Option<&str> {
        self.0.workflow_id.as_deref()
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// The tenant's policy-set version (semver) after this change.
    async fn policy_set_version(&self) -> &str {
        &self.0.policy_set_version
    }
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

/// An entry of the append-only enforcement log.
pub struct PolicyEnforcement(pub policy_enforcement::Model);

#[Object]
impl PolicyEnforcement {
    /// `enf_…`
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn policy_id(&self) -> Option<&str> {
        self.0.policy_id.as_deref()
    }
    async fn run_id(&self) -> &str {
        &self.0.run_id
    }
    async fn step_index(&self) -> Option<i64> {
        self.0.step_index
    }
    async fn action_taken(&self) -> EnforcementAction {
        self.0.action_taken.into()
    }
    async fn details(&self) -> Json<Value> {
        Json(self.0.details.clone())
    }
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

/// Input of `createPolicy`.
#[derive(InputObject)]
pub struct CreatePolicyInput {
    pub name: String,
    pub kind: PolicyKind,
    /// The rule for the kind, e.g. `{"maxTokens": 1000}`, `{"patterns": ["sk-[A-Za-z0-9]{20,}"]}`,
    /// `{"expression": "step.tokens > 500"}`.
    pub rule: Json<Value>,
    pub action: PolicyAction,
    pub severity: Severity,
    /// Limit the policy to runs of one workflow.
    pub workflow_id: Option<String>,
    #[graphql(default = true)]
    pub enabled: bool,
    pub description: Option<String>,
}

/// Input of `updatePolicy`: only the fields given change (null clears `workflowId`/`description`).
#[derive(InputObject)]
pub struct UpdatePolicyInput {
    pub name: Option<String>,
    pub kind: Option<PolicyKind>,
    pub rule: Option<Json<Value>>,
    pub action: Option<PolicyAction>,
    pub severity: Option<Severity>,
    pub workflow_id: MaybeUndefined<String>,
    pub enabled: Option<bool>,
    pub description: MaybeUndefined<String>,
}

fn maybe(value: MaybeUndefined<String>) -> Option<Option<String>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

/// Filter of `policies`.
#[derive(InputObject, Default)]
pub struct PolicyFilter {
    pub kind: Option<PolicyKind>,
    pub enabled: Option<bool>,
    pub workflow_id: Option<String>,
}

#[derive(Default)]
pub struct PolicyQuery;

#[Object]
impl PolicyQuery {
    /// The tenant's policies, oldest first.
    async fn policies(
        &self,
        ctx: &Context<'_>,
        filter: Option<PolicyFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Policy, Page, EmptyFields>> {
        let principal = principal(ctx)?;
        let filter = filter.unwrap_or_default();
        let mut query = policy::Entity::find()
            .filter(policy::Column::TenantId.eq(principal.tenant_id.as_str()));
        if let Some(kind) = filter.kind {
            query = query.filter(
                policy::Column::Kind.eq(governance_entities::enums::PolicyKind::from(kind)),
            );
        }
        if let Some(enabled) = filter.enabled {
            query = query.filter(policy::Column::Enabled.eq(enabled));
        }
        if let Some(workflow_id) = filter.workflow_id {
            query = query.filter(policy::Column::WorkflowId.eq(workflow_id));
        }
        let query = query.order_by_asc(policy::Column::Id);
        pagination::by_id(
            ctx,
            query,
            policy::Column::Id,
            Order::Asc,
            first,
            after,
            |m: &policy::Model| m.id.clone(),
            Policy,
        )
        .await
    }

    /// One policy of the tenant.
    async fn policy(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Policy> {
        let principal = principal(ctx)?;
        Ok(Policy(
            policies::get(&state(ctx).db, &principal.tenant_id, &id)
                .await
                .gql()?,
        ))
    }
}

#[derive(Default)]
pub struct PolicyMutation;

#[Object]
impl PolicyMutation {
    /// Create a policy. Its rule is validated for its kind; a bad rule is refused with
    /// `BAD_USER_INPUT` naming the field, and nothing is written.
    async fn create_policy(
        &self,
        ctx: &Context<'_>,
        input: CreatePolicyInput,
    ) -> async_graphql::Result<Policy> {
        let principal = principal(ctx)?;
        let created = policies::create(
            &state(ctx).store,
            &principal.tenant_id,
            NewPolicy {
                name: input.name,
                description: input.description,
                kind: input.kind.into(),
                rule: input.rule.0,
                action: input.action.into(),
                severity: input.severity.into(),
                workflow_id: input.workflow_id,
                enabled: input.enabled,
            },
        )
        .await
        .gql()?;
        Ok(Policy(created))
    }

    /// Change a policy: writes a new version (the old ones stay). Runs already started keep
    /// their snapshot; new runs get the new version.
    async fn update_policy(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdatePolicyInput,
    ) -> async_graphql::Result<Policy> {
        let principal = principal(ctx)?;
        let updated = policies::update(
            &state(ctx).store,
            &principal.tenant_id,
            &id,
            PolicyPatch {
                name: input.name,
                description: maybe(input.description),
                kind: input.kind.map(Into::into),
                rule: input.rule.map(|r| r.0),
                action: input.action.map(Into::into),
                severity: input.severity.map(Into::into),
                workflow_id: maybe(input.workflow_id),
                enabled: input.enabled,
            },
        )
        .await
        .gql()?;
        Ok(Policy(updated))
    }

    /// Enable or disable a policy (a new version).
    async fn set_policy_enabled(
        &self,
        ctx: &Context<'_>,
        id: ID,
        enabled: bool,
    ) -> async_graphql::Result<Policy> {
        let principal = principal(ctx)?;
        let updated = policies::set_enabled(&state(ctx).store, &principal.tenant_id, &id, enabled)
            .await
            .gql()?;
        Ok(Policy(updated))
    }
}
