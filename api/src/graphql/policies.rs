//! Policies: create, update (a new version each time), enable/disable, read with history and
//! enforcement statistics.

use async_graphql::{Context, ID, InputObject, Json, MaybeUndefined, Object};
use governance_core::policies::{self, NewPolicy, PolicyPatch};
use governance_core::roles::Capability;
use governance_entities::{policy, policy_enforcement, policy_version, shadow_finding};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;

use super::{
    enums::{EnforcementAction, PolicyAction, PolicyKind, PolicyMode, Severity},
    error::GqlResultExt,
    incidents::{Violation, ViolationFilter, violation_page},
    loaders::{self, loader},
    pagination::{self, Conn, KeyKind, Order, PageArgs},
    principal,
    runs::{Run, load_run},
    scalars::DateTime,
    state,
};

pub struct Policy(pub policy::Model);

/// A rule that governs runs. Every change writes a new version; old versions are kept.
#[Object]
impl Policy {
    /// `pol_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The policy's name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// What the policy is for, in words.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// What the policy checks.
    async fn kind(&self) -> PolicyKind {
        self.0.kind.into()
    }
    /// The rule (thresholds), e.g. `{"maxTokens": 1000}`.
    async fn rule(&self) -> Json<Value> {
        Json(self.0.rule.clone())
    }
    /// BLOCK stops the run on a violation; WARN records it and lets the run go on.
    async fn action(&self) -> PolicyAction {
        self.0.action.into()
    }
    /// How serious a violation is.
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    /// When set, the policy applies only to runs of this workflow.
    async fn workflow_id(&self) -> Option<&str> {
        self.0.workflow_id.as_deref()
    }
    /// Disabled policies are left out of new snapshots.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// ENFORCE decides; SHADOW is evaluated and recorded on every step but never enforced.
    async fn mode(&self) -> PolicyMode {
        self.0.mode.into()
    }
    /// The policy's own version number (1, 2, …).
    async fn version(&self) -> i32 {
        self.0.version
    }
    /// When the policy was created.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    /// When the policy last changed.
    async fn updated_at(&self) -> DateTime {
        self.0.updated_at.into()
    }
    /// Every version, newest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<PolicyVersion>> {
        loaders::page_of(
            ctx,
            loaders::HistoryOfPolicy(self.0.id.clone()),
            PageArgs::new(first, after, last, before),
            |v| v.version.to_string(),
            PolicyVersion,
        )
        .await
    }
    /// How many times this policy stopped or warned a run in the last 30 days.
    #[graphql(name = "triggerCount30d")]
    async fn trigger_count_30d(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        Ok(self.trigger_stats(ctx).await?.count)
    }
    /// When this policy last stopped or warned a run (at any time).
    async fn last_triggered_at(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<DateTime>> {
        Ok(self.trigger_stats(ctx).await?.last.map(Into::into))
    }
    /// The append-only log of what this policy did, newest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn enforcements(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<PolicyEnforcement>> {
        let query = policy_enforcement::Entity::find()
            .filter(policy_enforcement::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .filter(policy_enforcement::Column::PolicyId.eq(self.0.id.as_str()));
        pagination::keyset(
            ctx,
            query,
            policy_enforcement::Column::Id,
            KeyKind::Text,
            Order::Desc,
            PageArgs::new(first, after, last, before),
            |e| e.id.clone(),
            PolicyEnforcement,
        )
        .await
    }
    /// What this policy would have done while it was SHADOW (any version), newest first: one
    /// finding per step it would have stopped or warned.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn shadow_findings(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<ShadowFinding>> {
        pagination::keyset(
            ctx,
            governance_core::shadow::of_policy(&self.0.tenant_id, &self.0.id),
            shadow_finding::Column::Id,
            KeyKind::Text,
            Order::Desc,
            PageArgs::new(first, after, last, before),
            |f| f.id.clone(),
            ShadowFinding,
        )
        .await
    }
    /// What this policy would have done as SHADOW in the last 30 days.
    #[graphql(name = "shadowStats30d")]
    async fn shadow_stats_30d(&self, ctx: &Context<'_>) -> async_graphql::Result<ShadowStats> {
        let since = governance_core::time::now() - chrono::Duration::days(30);
        let stats =
            governance_core::shadow::stats(&state(ctx).db, &self.0.tenant_id, &self.0.id, since)
                .await
                .gql()?;
        Ok(ShadowStats(stats))
    }
    /// Violations of this policy (any version), newest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn violations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Violation>> {
        let filter = ViolationFilter {
            policy_id: Some(ID(self.0.id.clone())),
            ..Default::default()
        };
        violation_page(
            ctx,
            filter,
            &self.0.tenant_id,
            PageArgs::new(first, after, last, before),
        )
        .await
    }
}

impl Policy {
    async fn trigger_stats(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<policies::TriggerStats> {
        Ok(loader(ctx)?
            .load_one(loaders::TriggerStatsOfPolicy(self.0.id.clone()))
            .await?
            .unwrap_or_default())
    }
}

pub struct ShadowFinding(pub shadow_finding::Model);

/// What a SHADOW policy would have done on one step. Recorded with the step's decision (and in
/// its hash chain), never enforced.
#[Object]
impl ShadowFinding {
    /// The run.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        load_run(ctx, &self.0.run_id).await
    }
    /// The step (0-based).
    async fn step_index(&self) -> i64 {
        self.0.step_index
    }
    /// The policy's version at that step.
    async fn policy_version(&self) -> i32 {
        self.0.policy_version
    }
    /// The policy's action is BLOCK: enforced, it would have stopped the run at this step
    /// (false: it would have warned).
    async fn would_stop(&self) -> bool {
        self.0.would_stop
    }
    /// Why, as a sentence naming the policy.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// The value observed, as text.
    async fn observed_value(&self) -> &str {
        &self.0.observed_value
    }
    /// The condition that was true, e.g. `tokensUsed > 1000`.
    async fn threshold(&self) -> &str {
        &self.0.threshold
    }
    /// When the step happened.
    async fn timestamp(&self) -> DateTime {
        self.0.timestamp.into()
    }
}

pub struct ShadowStats(governance_core::shadow::ShadowStats);

/// What a SHADOW policy would have done over a window.
#[Object]
impl ShadowStats {
    /// Distinct runs it would have stopped.
    async fn runs_would_stop(&self) -> u64 {
        self.0.runs_would_stop
    }
    /// Distinct runs it would have warned.
    async fn runs_would_warn(&self) -> u64 {
        self.0.runs_would_warn
    }
    /// Its findings (steps).
    async fn findings(&self) -> u64 {
        self.0.findings
    }
}

pub struct PolicyVersion(pub policy_version::Model);

/// One version of a policy, as it was written.
#[Object]
impl PolicyVersion {
    /// `pv_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The policy this is a version of.
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Policy>> {
        Ok(loader(ctx)?
            .load_one(loaders::PolicyId(self.0.policy_id.clone()))
            .await?
            .map(Policy))
    }
    /// The version number (1, 2, …).
    async fn version(&self) -> i32 {
        self.0.version
    }
    /// The name in this version.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The description in this version.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// The kind in this version.
    async fn kind(&self) -> PolicyKind {
        self.0.kind.into()
    }
    /// The rule (thresholds) in this version.
    async fn rule(&self) -> Json<Value> {
        Json(self.0.rule.clone())
    }
    /// The action in this version.
    async fn action(&self) -> PolicyAction {
        self.0.action.into()
    }
    /// The severity in this version.
    async fn severity(&self) -> Severity {
        self.0.severity.into()
    }
    /// The workflow scope in this version.
    async fn workflow_id(&self) -> Option<&str> {
        self.0.workflow_id.as_deref()
    }
    /// Whether this version was enabled.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// ENFORCE or SHADOW, as it was in this version.
    async fn mode(&self) -> PolicyMode {
        self.0.mode.into()
    }
    /// The tenant's policy-set version (semver) after this change.
    async fn policy_set_version(&self) -> &str {
        &self.0.policy_set_version
    }
    /// When this version was written.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

pub struct PolicyEnforcement(pub policy_enforcement::Model);

/// An entry of the append-only enforcement log.
#[Object]
impl PolicyEnforcement {
    /// `enf_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The policy enforced (null for a refused step that no policy names).
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Policy>> {
        let Some(id) = &self.0.policy_id else {
            return Ok(None);
        };
        Ok(loader(ctx)?
            .load_one(loaders::PolicyId(id.clone()))
            .await?
            .map(Policy))
    }
    /// The run enforced on.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        load_run(ctx, &self.0.run_id).await
    }
    /// The id of the policy enforced.
    async fn policy_id(&self) -> Option<&str> {
        self.0.policy_id.as_deref()
    }
    /// The id of the run enforced on.
    async fn run_id(&self) -> &str {
        &self.0.run_id
    }
    /// The step it happened at.
    async fn step_index(&self) -> Option<i64> {
        self.0.step_index
    }
    /// What was done.
    async fn action_taken(&self) -> EnforcementAction {
        self.0.action_taken.into()
    }
    /// Details: the finding, or the refused step.
    async fn details(&self) -> Json<Value> {
        Json(self.0.details.clone())
    }
    /// When it happened.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

/// Input of `createPolicy`.
#[derive(InputObject)]
pub struct CreatePolicyInput {
    /// A name for people (1–200 characters).
    pub name: String,
    /// What the policy checks.
    pub kind: PolicyKind,
    /// The rule for the kind, e.g. `{"maxTokens": 1000}`, `{"patterns": ["sk-[A-Za-z0-9]{20,}"]}`,
    /// `{"expression": "step.tokens > 500"}`.
    pub rule: Json<Value>,
    /// BLOCK stops the run on a violation; WARN records it.
    pub action: PolicyAction,
    /// How serious a violation is.
    pub severity: Severity,
    /// Limit the policy to runs of one workflow.
    pub workflow_id: Option<String>,
    /// Disabled policies are left out of new snapshots.
    #[graphql(default = true)]
    pub enabled: bool,
    /// SHADOW to try the policy on live runs without enforcing it.
    #[graphql(default_with = "PolicyMode::Enforce")]
    pub mode: PolicyMode,
    /// What the policy is for.
    pub description: Option<String>,
    /// A COMPLETED simulation of the policy set this creation leaves: required when the tenant
    /// requires simulations and the policy is an enabled, enforcing BLOCK policy.
    pub simulation_id: Option<ID>,
}

impl From<CreatePolicyInput> for NewPolicy {
    fn from(input: CreatePolicyInput) -> Self {
        NewPolicy {
            name: input.name,
            description: input.description,
            kind: input.kind.into(),
            rule: input.rule.0,
            action: input.action.into(),
            severity: input.severity.into(),
            workflow_id: input.workflow_id,
            enabled: input.enabled,
            mode: input.mode.into(),
        }
    }
}

/// Input of `updatePolicy`: only the fields given change (null clears `workflowId`/`description`).
#[derive(InputObject)]
pub struct UpdatePolicyInput {
    /// A new name.
    pub name: Option<String>,
    /// A new kind (give a rule for it too).
    pub kind: Option<PolicyKind>,
    /// A new rule, validated for the kind.
    pub rule: Option<Json<Value>>,
    /// A new action.
    pub action: Option<PolicyAction>,
    /// A new severity.
    pub severity: Option<Severity>,
    /// A new workflow scope; null makes the policy apply to every workflow.
    pub workflow_id: MaybeUndefined<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Move between SHADOW and ENFORCE (a new version like any other change).
    pub mode: Option<PolicyMode>,
    /// A new description; null clears it.
    pub description: MaybeUndefined<String>,
    /// A COMPLETED simulation of the policy set this change leaves: required when the tenant
    /// requires simulations and the change enables or tightens an enforcing BLOCK policy.
    pub simulation_id: Option<ID>,
}

impl From<UpdatePolicyInput> for PolicyPatch {
    fn from(input: UpdatePolicyInput) -> Self {
        PolicyPatch {
            name: input.name,
            description: maybe(input.description),
            kind: input.kind.map(Into::into),
            rule: input.rule.map(|r| r.0),
            action: input.action.map(Into::into),
            severity: input.severity.map(Into::into),
            workflow_id: maybe(input.workflow_id),
            enabled: input.enabled,
            mode: input.mode.map(Into::into),
        }
    }
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
    /// Policies of this kind.
    pub kind: Option<PolicyKind>,
    /// Only enabled (true) or disabled (false) policies.
    pub enabled: Option<bool>,
    /// Policies scoped to this workflow.
    pub workflow_id: Option<String>,
}

#[derive(Default)]
pub struct PolicyQuery;

#[Object]
impl PolicyQuery {
    /// The tenant's policies, oldest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn policies(
        &self,
        ctx: &Context<'_>,
        filter: Option<PolicyFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Policy>> {
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
        pagination::keyset(
            ctx,
            query,
            policy::Column::Id,
            KeyKind::Text,
            Order::Asc,
            PageArgs::new(first, after, last, before),
            |m| m.id.clone(),
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
    /// `BAD_USER_INPUT` naming the field, and nothing is written. When the tenant requires
    /// simulations, an enabled, enforcing BLOCK policy needs `simulationId` (else `CONFLICT`).
    async fn create_policy(
        &self,
        ctx: &Context<'_>,
        input: CreatePolicyInput,
    ) -> async_graphql::Result<Policy> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let simulation_id = input.simulation_id.clone();
        let created = policies::create(
            &state(ctx).store,
            &principal.tenant_id,
            input.into(),
            simulation_id.as_ref().map(|id| id.as_str()),
        )
        .await
        .gql()?;
        Ok(Policy(created))
    }

    /// Change a policy: writes a new version (the old ones stay). Runs already started keep
    /// their snapshot; new runs get the new version. When the tenant requires simulations, a
    /// change that enables or tightens an enforcing BLOCK policy needs `simulationId` (else
    /// `CONFLICT`).
    async fn update_policy(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdatePolicyInput,
    ) -> async_graphql::Result<Policy> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let simulation_id = input.simulation_id.clone();
        let updated = policies::update(
            &state(ctx).store,
            &principal.tenant_id,
            &id,
            input.into(),
            simulation_id.as_ref().map(|id| id.as_str()),
        )
        .await
        .gql()?;
        Ok(Policy(updated))
    }

    /// Enable or disable a policy (a new version). When the tenant requires simulations,
    /// enabling an enforcing BLOCK policy needs `simulationId` (else `CONFLICT`).
    async fn set_policy_enabled(
        &self,
        ctx: &Context<'_>,
        id: ID,
        enabled: bool,
        #[graphql(desc = "A COMPLETED simulation of the policy set this change leaves.")]
        simulation_id: Option<ID>,
    ) -> async_graphql::Result<Policy> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let updated = policies::set_enabled(
            &state(ctx).store,
            &principal.tenant_id,
            &id,
            enabled,
            simulation_id.as_ref().map(|id| id.as_str()),
        )
        .await
        .gql()?;
        Ok(Policy(updated))
    }
}
