//! The gate for policy changes: when the tenant requires simulations (`requireSimulation`), a
//! write that enables or tightens an enforcing BLOCK policy must cite a completed simulation of
//! exactly the set that write leaves (compared by proposal hash, see [`super::proposal`]);
//! otherwise it is refused with `CONFLICT`, saying what to run. Loosening, WARN and SHADOW
//! policies, and tenants without the setting, pass as before. The audits' rollout gate is the
//! model: a change is authorised by a completed check of exactly that change.

use governance_entities::{
    enums::{PolicyAction, PolicyMode, SimulationStatus},
    policy, simulation, tenant,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::proposal;
use crate::{
    error::{CoreError, CoreResult},
    policy::rule_tightens,
};

/// Does a policy stop runs as it stands (enabled, enforcing, BLOCK)?
fn blocks(p: &policy::Model) -> bool {
    p.enabled && p.mode == PolicyMode::Enforce && p.action == PolicyAction::Block
}

/// Does writing `new` over `old` (`None`: a creation) enable or tighten a BLOCK policy? Only a
/// change that can stop a run the old policy let through counts: enabling it (or moving it to
/// ENFORCE or to BLOCK), a tighter rule, another kind, or a wider workflow scope.
pub fn tightens(old: Option<&policy::Model>, new: &policy::Model) -> bool {
    if !blocks(new) {
        return false;
    }
    let Some(old) = old.filter(|old| blocks(old)) else {
        return true;
    };
    if old.kind != new.kind {
        return true;
    }
    let wider_scope = match (&old.workflow_id, &new.workflow_id) {
        (_, None) => old.workflow_id.is_some(),
        (Some(a), Some(b)) => a != b,
        (None, Some(_)) => false,
    };
    wider_scope || rule_tightens(new.kind, &old.rule, &new.rule)
}

/// Does the tenant require a simulation before BLOCK policies are enabled or tightened?
pub async fn required<C: ConnectionTrait>(conn: &C, tenant_id: &str) -> CoreResult<bool> {
    Ok(tenant::Entity::find_by_id(tenant_id.to_string())
        .one(conn)
        .await?
        .is_some_and(|t| t.require_simulation))
}

/// Refuse (`CONFLICT`) writing `new` over `old` unless the tenant does not require
/// simulations, the write does not enable or tighten a BLOCK policy, or `simulation_id` names a
/// COMPLETED simulation of the tenant whose proposal hash is the hash of the set the write
/// leaves. Called inside the write's transaction, with the tenant's policy writes serialised.
pub async fn check<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    old: Option<&policy::Model>,
    new: &policy::Model,
    simulation_id: Option<&str>,
) -> CoreResult<()> {
    if !tightens(old, new) || !required(conn, tenant_id).await? {
        return Ok(());
    }
    let others = policy::Entity::find()
        .filter(policy::Column::TenantId.eq(tenant_id))
        .filter(policy::Column::Id.ne(new.id.as_str()))
        .all(conn)
        .await?;
    let id_of_new = old.map(|_| new.id.as_str());
    let expected = proposal::hash_of(
        others
            .iter()
            .map(|p| (Some(p.id.as_str()), p))
            .chain(std::iter::once((id_of_new, new))),
    );
    let what = if old.is_some() {
        format!("this change to policy `{}`", new.id)
    } else {
        "this new policy".to_string()
    };
    let run_this = format!(
        "run `simulatePolicies` with {what} as its change (proposed snapshot hash {expected}), wait for it to be COMPLETED, and send its id as `simulationId`"
    );
    let Some(simulation_id) = simulation_id else {
        return Err(CoreError::Conflict(format!(
            "the tenant requires a simulation before a BLOCK policy is enabled or tightened: {run_this}"
        )));
    };
    let cited = simulation::Entity::find_by_id(simulation_id.to_string())
        .filter(simulation::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Simulation", simulation_id))?;
    if cited.status != SimulationStatus::Completed {
        return Err(CoreError::Conflict(format!(
            "simulation `{simulation_id}` is {}, not COMPLETED: wait for it to complete (or {run_this})",
            cited.status
        )));
    }
    if cited.proposed_snapshot_hash != expected {
        return Err(CoreError::Conflict(format!(
            "simulation `{simulation_id}` replayed another policy set (proposed snapshot hash {}) than the one this write leaves: {run_this}",
            cited.proposed_snapshot_hash
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use governance_entities::enums::{PolicyKind, Severity};
    use serde_json::json;

    use super::*;

    fn policy(max: i64) -> policy::Model {
        policy::Model {
            id: "pol_a".into(),
            tenant_id: "ten_1".into(),
            name: "budget".into(),
            description: None,
            kind: PolicyKind::TokenBudget,
            rule: json!({ "maxTokens": max }),
            action: PolicyAction::Block,
            severity: Severity::High,
            workflow_id: None,
            enabled: true,
            mode: PolicyMode::Enforce,
            version: 1,
            current_version_id: "pv".into(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn only_enabling_or_tightening_a_block_policy_is_gated() {
        let old = policy(100);
        assert!(tightens(None, &old), "a new BLOCK policy");
        assert!(tightens(Some(&old), &policy(99)), "a lower budget");
        assert!(!tightens(Some(&old), &policy(101)), "a higher budget");
        let mut warn = policy(10);
        warn.action = PolicyAction::Warn;
        assert!(!tightens(Some(&old), &warn), "now only warns");
        assert!(tightens(Some(&warn), &old), "WARN to BLOCK");
        let mut shadow = old.clone();
        shadow.mode = PolicyMode::Shadow;
        assert!(!tightens(None, &shadow), "a shadow policy stops nothing");
        assert!(tightens(Some(&shadow), &old), "SHADOW to ENFORCE");
        let mut disabled = old.clone();
        disabled.enabled = false;
        assert!(tightens(Some(&disabled), &old), "enabling");
        assert!(!tightens(Some(&old), &disabled), "disabling");
        let mut scoped = old.clone();
        scoped.workflow_id = Some("wf".into());
        assert!(tightens(Some(&scoped), &old), "to every workflow");
        assert!(!tightens(Some(&old), &scoped), "to one workflow");
        let mut renamed = old.clone();
        renamed.name = "renamed".into();
        assert!(!tightens(Some(&old), &renamed), "a new name");
    }
}
