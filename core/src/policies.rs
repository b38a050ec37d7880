//! Policies: written with validated rules, versioned append-only, and counted in a per-tenant
//! policy-set version (semver): adding or removing a policy (creating, enabling, disabling) bumps
//! MINOR, a change of a policy's kind or rule shape bumps MAJOR, any other change (a threshold,
//! the action, the severity, the scope, the name) bumps PATCH.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{EnforcementAction, PolicyAction, PolicyKind, PolicyMode, Severity},
    policy, policy_enforcement, policy_version,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};
use serde_json::Value;

use crate::{
    error::{CoreError, CoreResult},
    ids::{new_id, prefix},
    policy::{rule_for_action, rule_shape, validate_rule},
    simulation::gate,
    snapshot::INITIAL_POLICY_SET_VERSION,
    store::Store,
    time::now,
};

const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 4000;

/// At most this many policies per tenant, enabled or not: every snapshot is checked against on
/// every step, so the set a step is checked against stays bounded.
pub const MAX_POLICIES_PER_TENANT: u64 = 200;
/// At most this many content patterns across the tenant's enabled CONTENT_RULE policies (the
/// most one snapshot can scan a step's content with).
pub const MAX_SNAPSHOT_PATTERNS: usize = 256;
/// The compiled size (and lazy-DFA cache) the content patterns of one snapshot may take together.
pub const SNAPSHOT_PATTERN_BYTES: usize = 32 << 20;

/// Refuse a policy that would make the tenant's enabled content patterns more than one snapshot
/// may hold: too many, or too large compiled together. Checked whenever a write leaves an
/// enabled CONTENT_RULE policy (creating, changing or enabling it).
async fn check_content_budget<C: ConnectionTrait>(
    conn: &C,
    candidate: &policy::Model,
) -> CoreResult<()> {
    if !candidate.enabled || candidate.kind != PolicyKind::ContentRule {
        return Ok(());
    }
    let others: Vec<Value> = policy::Entity::find()
        .select_only()
        .column(policy::Column::Rule)
        .filter(policy::Column::TenantId.eq(candidate.tenant_id.as_str()))
        .filter(policy::Column::Kind.eq(PolicyKind::ContentRule))
        .filter(policy::Column::Enabled.eq(true))
        .filter(policy::Column::Id.ne(candidate.id.as_str()))
        .into_tuple()
        .all(conn)
        .await?;
    let patterns: Vec<&str> = others
        .iter()
        .chain(std::iter::once(&candidate.rule))
        .filter_map(|rule| rule.get("patterns").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if patterns.len() > MAX_SNAPSHOT_PATTERNS {
        return Err(CoreError::limit(
            "snapshot_patterns",
            format!(
                "the tenant's enabled content rules would hold {} patterns, {} more than the {MAX_SNAPSHOT_PATTERNS} one snapshot may scan with: combine patterns with `|`, or disable a content rule",
                patterns.len(),
                patterns.len() - MAX_SNAPSHOT_PATTERNS
            ),
        ));
    }
    regex::RegexSetBuilder::new(&patterns)
        .size_limit(SNAPSHOT_PATTERN_BYTES)
        .dfa_size_limit(SNAPSHOT_PATTERN_BYTES)
        .build()
        .map_err(|_| {
            CoreError::limit(
                "snapshot_pattern_bytes",
                format!(
                    "the tenant's enabled content patterns would compile to more than {} MiB together; simplify or remove patterns (bounded repetitions such as `\\w{{1000}}` are the usual cause)",
                    SNAPSHOT_PATTERN_BYTES >> 20
                ),
            )
        })?;
    Ok(())
}

/// How a change moves the policy-set version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bump {
    Patch,
    Minor,
    Major,
}

/// The next semver after `current` for a change of this size.
pub fn bump(current: &str, change: Bump) -> String {
    let mut parts = current
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0))
        .chain(std::iter::repeat(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    match change {
        Bump::Major => format!("{}.0.0", major + 1),
        Bump::Minor => format!("{major}.{}.0", minor + 1),
        Bump::Patch => format!("{major}.{minor}.{}", patch + 1),
    }
}

fn parse_semver(v: &str) -> (u64, u64, u64) {
    let mut it = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// What a new policy is.
#[derive(Debug, Clone)]
pub struct NewPolicy {
    pub name: String,
    pub description: Option<String>,
    pub kind: PolicyKind,
    pub rule: Value,
    pub action: PolicyAction,
    pub severity: Severity,
    pub workflow_id: Option<String>,
    pub enabled: bool,
    pub mode: PolicyMode,
}

/// A change to a policy; `None` leaves a field as it is (`Some(None)` clears an optional one).
#[derive(Debug, Clone, Default)]
pub struct PolicyPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub kind: Option<PolicyKind>,
    pub rule: Option<Value>,
    pub action: Option<PolicyAction>,
    pub severity: Option<Severity>,
    pub workflow_id: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub mode: Option<PolicyMode>,
}

fn check_text(field: &str, value: &str, max: usize, required: bool) -> CoreResult<()> {
    if required && value.trim().is_empty() {
        return Err(CoreError::bad_field(
            field,
            format!("`{field}` must not be empty"),
        ));
    }
    if value.chars().count() > max {
        return Err(CoreError::bad_field(
            field,
            format!("`{field}` is longer than {max} characters"),
        ));
    }
    Ok(())
}

/// Serialise the tenant's policy writes and read its current policy-set version.
async fn lock_policy_set<C: ConnectionTrait>(conn: &C, tenant_id: &str) -> CoreResult<String> {
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("policies:{tenant_id}").into()],
        ))
        .await?;
    }
    // Versions only grow; take the highest of the newest few (several can share a millisecond).
    let recent: Vec<String> = policy_version::Entity::find()
        .select_only()
        .column(policy_version::Column::PolicySetVersion)
        .filter(policy_version::Column::TenantId.eq(tenant_id))
        .order_by_desc(policy_version::Column::CreatedAt)
        .limit(8)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(recent
        .into_iter()
        .max_by_key(|v| parse_semver(v))
        .unwrap_or_else(|| INITIAL_POLICY_SET_VERSION.to_string()))
}

fn version_row(p: &policy::Model, set_version: &str) -> policy_version::ActiveModel {
    policy_version::ActiveModel {
        id: Set(p.current_version_id.clone()),
        tenant_id: Set(p.tenant_id.clone()),
        policy_id: Set(p.id.clone()),
        version: Set(p.version),
        name: Set(p.name.clone()),
        description: Set(p.description.clone()),
        kind: Set(p.kind),
        rule: Set(p.rule.clone()),
        action: Set(p.action),
        severity: Set(p.severity),
        workflow_id: Set(p.workflow_id.clone()),
        enabled: Set(p.enabled),
        mode: Set(p.mode),
        policy_set_version: Set(set_version.to_string()),
        created_at: Set(p.updated_at),
    }
}

/// The policy `input` describes, validated (version 1, new ids, not yet written): what
/// [`create`] writes and what a simulation proposes. Nothing is read or written.
pub fn prepare_new(tenant_id: &str, input: NewPolicy) -> CoreResult<policy::Model> {
    check_text("input.name", &input.name, MAX_NAME, true)?;
    if let Some(d) = &input.description {
        check_text("input.description", d, MAX_DESCRIPTION, false)?;
    }
    if let Some(w) = &input.workflow_id {
        check_text("input.workflowId", w, MAX_NAME, true)?;
    }
    let rule = validate_rule(input.kind, input.action, &input.rule)?;
    let at = now();
    Ok(policy::Model {
        id: new_id(prefix::POLICY),
        tenant_id: tenant_id.to_string(),
        name: input.name.trim().to_string(),
        description: input.description,
        kind: input.kind,
        rule,
        action: input.action,
        severity: input.severity,
        workflow_id: input.workflow_id,
        enabled: input.enabled,
        mode: input.mode,
        version: 1,
        current_version_id: new_id(prefix::POLICY_VERSION),
        created_at: at,
        updated_at: at,
    })
}

/// Create a policy (version 1). The rule is validated for its kind; nothing is written if not.
/// When the tenant requires simulations, enabling a BLOCK policy must cite one
/// ([`crate::simulation::gate`]).
pub async fn create(
    store: &Store,
    tenant_id: &str,
    input: NewPolicy,
    simulation_id: Option<&str>,
) -> CoreResult<policy::Model> {
    let model = prepare_new(tenant_id, input)?;
    let txn = store.begin().await?;
    let current = lock_policy_set(&*txn, tenant_id).await?;
    let count = policy::Entity::find()
        .filter(policy::Column::TenantId.eq(tenant_id))
        .count(&*txn)
        .await?;
    if count >= MAX_POLICIES_PER_TENANT {
        return Err(CoreError::limit(
            "policies_per_tenant",
            format!(
                "the tenant has {count} policies, the most allowed is {MAX_POLICIES_PER_TENANT} (disabled ones count: their history is kept); change an existing policy with `updatePolicy` instead"
            ),
        ));
    }
    gate::check(&*txn, tenant_id, None, &model, simulation_id).await?;
    // A disabled policy is not in the set, so creating one does not change the set.
    let set_version = if model.enabled {
        bump(&current, Bump::Minor)
    } else {
        current
    };
    check_content_budget(&*txn, &model).await?;
    let active: policy::ActiveModel = model.into();
    let stored = active.reset_all().insert(&*txn).await?;
    version_row(&stored, &set_version).insert(&*txn).await?;
    txn.commit().await?;
    Ok(stored)
}

/// Load a policy of the tenant.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    id: &str,
) -> CoreResult<policy::Model> {
    policy::Entity::find_by_id(id.to_string())
        .filter(policy::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Policy", id))
}

/// Check a patch's texts before anything is read.
fn check_patch(patch: &PolicyPatch) -> CoreResult<()> {
    if let Some(name) = &patch.name {
        check_text("input.name", name, MAX_NAME, true)?;
    }
    if let Some(Some(d)) = &patch.description {
        check_text("input.description", d, MAX_DESCRIPTION, false)?;
    }
    if let Some(Some(w)) = &patch.workflow_id {
        check_text("input.workflowId", w, MAX_NAME, true)?;
    }
    Ok(())
}

/// `old` with `patch` applied and validated (the version, ids and times are left as they
/// were): what [`update`] writes and what a simulation proposes. Nothing is read or written.
pub fn apply_patch(old: &policy::Model, patch: PolicyPatch) -> CoreResult<policy::Model> {
    check_patch(&patch)?;
    let kind = patch.kind.unwrap_or(old.kind);
    let action = patch.action.unwrap_or(old.action);
    let rule = match (&patch.rule, patch.kind) {
        (Some(rule), _) => validate_rule(kind, action, rule)?,
        (None, Some(new_kind)) if new_kind != old.kind => {
            return Err(CoreError::bad_field(
                "input.rule",
                format!("changing the kind to {new_kind} needs a rule for it: send `rule` too"),
            ));
        }
        // The rule stays; its approval terms follow the action.
        (None, _) => rule_for_action(kind, action, &old.rule)?,
    };
    let mut new = old.clone();
    new.kind = kind;
    new.rule = rule;
    if let Some(name) = patch.name {
        new.name = name.trim().to_string();
    }
    if let Some(description) = patch.description {
        new.description = description;
    }
    if let Some(action) = patch.action {
        new.action = action;
    }
    if let Some(severity) = patch.severity {
        new.severity = severity;
    }
    if let Some(workflow_id) = patch.workflow_id {
        new.workflow_id = workflow_id;
    }
    if let Some(enabled) = patch.enabled {
        new.enabled = enabled;
    }
    if let Some(mode) = patch.mode {
        new.mode = mode;
    }
    Ok(new)
}

/// Apply a patch: a new version when anything changes; the old versions stay. When the tenant
/// requires simulations, enabling or tightening a BLOCK policy must cite one
/// ([`crate::simulation::gate`]).
pub async fn update(
    store: &Store,
    tenant_id: &str,
    id: &str,
    patch: PolicyPatch,
    simulation_id: Option<&str>,
) -> CoreResult<policy::Model> {
    check_patch(&patch)?;
    let txn = store.begin().await?;
    let current_set = lock_policy_set(&*txn, tenant_id).await?;
    let old = get(&*txn, tenant_id, id).await?;
    let mut new = apply_patch(&old, patch)?;
    let change = classify(&old, &new);
    let Some(change) = change else {
        // Nothing changed: no new version.
        return Ok(old);
    };
    gate::check(&*txn, tenant_id, Some(&old), &new, simulation_id).await?;
    check_content_budget(&*txn, &new).await?;
    new.version = old.version + 1;
    new.current_version_id = new_id(prefix::POLICY_VERSION);
    new.updated_at = now();
    // A change to a policy outside the set (disabled before and after) leaves the set alone.
    let set_version = if !old.enabled && !new.enabled {
        current_set
    } else {
        bump(&current_set, change)
    };
    let active: policy::ActiveModel = new.into();
    let stored = active.reset_all().update(&*txn).await?;
    version_row(&stored, &set_version).insert(&*txn).await?;
    txn.commit().await?;
    Ok(stored)
}

/// How big a change is for the policy set, or `None` if nothing changed.
pub fn classify(old: &policy::Model, new: &policy::Model) -> Option<Bump> {
    // Enabling or disabling, or moving between SHADOW and ENFORCE, changes what the set
    // enforces.
    if old.enabled != new.enabled || old.mode != new.mode {
        return Some(Bump::Minor);
    }
    if old.kind != new.kind || rule_shape(&old.rule) != rule_shape(&new.rule) {
        return Some(Bump::Major);
    }
    let changed = old.rule != new.rule
        || old.action != new.action
        || old.severity != new.severity
        || old.workflow_id != new.workflow_id
        || old.name != new.name
        || old.description != new.description;
    changed.then_some(Bump::Patch)
}

/// Enable or disable a policy (a new version; MINOR for the set).
pub async fn set_enabled(
    store: &Store,
    tenant_id: &str,
    id: &str,
    enabled: bool,
    simulation_id: Option<&str>,
) -> CoreResult<policy::Model> {
    update(
        store,
        tenant_id,
        id,
        PolicyPatch {
            enabled: Some(enabled),
            ..Default::default()
        },
        simulation_id,
    )
    .await
}

/// How often a policy fired (stopped or warned a run) since some instant, and when it last did
/// (at any time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TriggerStats {
    pub count: u64,
    pub last: Option<DateTime<Utc>>,
}

/// [`TriggerStats`] of many policies at once (two statements however many policies): what a
/// page of policies needs. Policies that never fired are absent from the map.
pub async fn trigger_stats<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    policy_ids: &[String],
    since: DateTime<Utc>,
) -> CoreResult<std::collections::HashMap<String, TriggerStats>> {
    use policy_enforcement::Column as E;
    let fired = || {
        policy_enforcement::Entity::find()
            .select_only()
            .column(E::PolicyId)
            .filter(E::TenantId.eq(tenant_id))
            .filter(E::PolicyId.is_in(policy_ids.iter().cloned()))
            .filter(E::ActionTaken.is_in([EnforcementAction::Stopped, EnforcementAction::Warned]))
            .group_by(E::PolicyId)
    };
    let counts: Vec<(String, i64)> = fired()
        .column_as(E::Id.count(), "count")
        .filter(E::CreatedAt.gte(since))
        .into_tuple()
        .all(conn)
        .await?;
    let lasts: Vec<(String, Option<DateTime<Utc>>)> = fired()
        .column_as(E::CreatedAt.max(), "last")
        .into_tuple()
        .all(conn)
        .await?;
    let mut stats = std::collections::HashMap::<String, TriggerStats>::new();
    for (id, last) in lasts {
        stats.entry(id).or_default().last = last;
    }
    for (id, count) in counts {
        stats.entry(id).or_default().count = count.max(0) as u64;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(rule: Value) -> policy::Model {
        policy::Model {
            id: "pol_1".into(),
            tenant_id: "ten_1".into(),
            name: "budget".into(),
            description: None,
            kind: PolicyKind::TokenBudget,
            rule,
            action: PolicyAction::Block,
            severity: Severity::High,
            workflow_id: None,
            enabled: true,
            mode: governance_entities::enums::PolicyMode::Enforce,
            version: 1,
            current_version_id: "pv_1".into(),
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn semver_bumps() {
        assert_eq!(bump("0.0.0", Bump::Minor), "0.1.0");
        assert_eq!(bump("1.4.2", Bump::Patch), "1.4.3");
        assert_eq!(bump("1.4.2", Bump::Minor), "1.5.0");
        assert_eq!(bump("1.4.2", Bump::Major), "2.0.0");
    }

    #[test]
    fn changes_are_classified() {
        let old = policy(json!({ "maxTokens": 100 }));
        let mut threshold = old.clone();
        threshold.rule = json!({ "maxTokens": 200 });
        assert_eq!(classify(&old, &threshold), Some(Bump::Patch));
        let mut kind = old.clone();
        kind.kind = PolicyKind::CostBudget;
        kind.rule = json!({ "maxCostMicros": 100 });
        assert_eq!(classify(&old, &kind), Some(Bump::Major));
        let mut disabled = old.clone();
        disabled.enabled = false;
        assert_eq!(classify(&old, &disabled), Some(Bump::Minor));
        assert_eq!(classify(&old, &old.clone()), None);
    }
}
