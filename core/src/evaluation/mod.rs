//! The evaluation record: exactly one per ended run, saying what governance concluded about it.

use governance_entities::{
    enums::{EvaluationOutcome, PolicyAction, RunStatus},
    policy_evaluation, run, violation,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
    sea_query::OnConflict,
};

use crate::{
    error::{CoreError, CoreResult},
    ids::{new_id, prefix},
    runs,
    store::Store,
    time::now,
};

/// The facts about an ended run that decide its outcome.
#[derive(Debug, Clone, Copy)]
pub struct RunFacts<'a> {
    pub status: RunStatus,
    pub policy_count: i32,
    pub warnings: u64,
    pub stopped_at_step: Option<i64>,
    pub violation_policy_id: Option<&'a str>,
    pub snapshot_id: &'a str,
}

/// Decide the outcome, its reason, and whether the run is a candidate for a draft policy change.
pub fn decide(facts: RunFacts<'_>) -> (EvaluationOutcome, String, bool) {
    if facts.status == RunStatus::FailedPolicy {
        let step = facts
            .stopped_at_step
            .map(|s| format!(" at step {s}"))
            .unwrap_or_default();
        let policy = facts
            .violation_policy_id
            .map(|p| format!(" by policy {p}"))
            .unwrap_or_default();
        return (
            EvaluationOutcome::Violation,
            format!("run stopped{step}{policy} (snapshot {})", facts.snapshot_id),
            false,
        );
    }
    if facts.policy_count == 0 {
        return (
            EvaluationOutcome::NotApplicable,
            format!(
                "no policy applied to the run (snapshot {} is empty)",
                facts.snapshot_id
            ),
            false,
        );
    }
    if facts.warnings > 0 {
        return (
            EvaluationOutcome::Advisory,
            format!(
                "{} warning(s) from WARN policies; no blocking violation (snapshot {})",
                facts.warnings, facts.snapshot_id
            ),
            true,
        );
    }
    (
        EvaluationOutcome::NoViolation,
        format!(
            "{} polic{} checked, none violated (snapshot {})",
            facts.policy_count,
            if facts.policy_count == 1 { "y" } else { "ies" },
            facts.snapshot_id
        ),
        false,
    )
}

async fn find<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<Option<policy_evaluation::Model>> {
    Ok(policy_evaluation::Entity::find()
        .filter(policy_evaluation::Column::TenantId.eq(tenant_id))
        .filter(policy_evaluation::Column::RunId.eq(run_id))
        .one(conn)
        .await?)
}

/// Write the run's evaluation record. Idempotent: when it exists, it is returned unchanged and
/// `false` says nothing was written (a job run twice writes once).
pub async fn record(
    store: &Store,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<(policy_evaluation::Model, bool)> {
    if let Some(existing) = find(store.db(), tenant_id, run_id).await? {
        return Ok((existing, false));
    }
    let run: run::Model = runs::get(store.db(), tenant_id, run_id).await?;
    if !run.status.is_terminal() {
        return Err(CoreError::Conflict(format!(
            "run `{run_id}` is still {}; it is evaluated when it ends",
            run.status
        )));
    }
    let snap = runs::snapshot_of(store.db(), &run).await?;
    let warnings = violation::Entity::find()
        .filter(violation::Column::TenantId.eq(tenant_id))
        .filter(violation::Column::RunId.eq(run_id))
        .filter(violation::Column::Action.eq(PolicyAction::Warn))
        .count(store.db())
        .await?;
    let (outcome, reason, draft_candidate) = decide(RunFacts {
        status: run.status,
        policy_count: snap.policy_count,
        warnings,
        stopped_at_step: run.stopped_at_step,
        violation_policy_id: run.violation_policy_id.as_deref(),
        snapshot_id: &snap.snapshot_id,
    });
    let txn = store.begin().await?;
    let inserted = policy_evaluation::Entity::insert(policy_evaluation::ActiveModel {
        id: Set(new_id(prefix::EVALUATION)),
        tenant_id: Set(tenant_id.to_string()),
        run_id: Set(run_id.to_string()),
        outcome: Set(outcome),
        policies_checked: Set(snap.policy_count),
        reason: Set(reason),
        draft_candidate: Set(draft_candidate),
        is_synthetic: Set(run.is_synthetic),
        synthetic_scenario_id: Set(run.synthetic_scenario_id.clone()),
        snapshot_id: Set(snap.snapshot_id.clone()),
        created_at: Set(now()),
    })
    // A concurrent duplicate job may have written it first: keep that one.
    .on_conflict(
        OnConflict::column(policy_evaluation::Column::RunId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&*txn)
    .await?;
    txn.commit().await?;
    // `inserted` is 0 when a concurrent duplicate won the conflict.
    let created = inserted > 0;
    let stored = find(store.db(), tenant_id, run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("evaluation of {run_id} vanished after insert"))?;
    Ok((stored, created))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: RunStatus, policy_count: i32, warnings: u64) -> RunFacts<'static> {
        RunFacts {
            status,
            policy_count,
            warnings,
            stopped_at_step: Some(3),
            violation_policy_id: Some("pol_x"),
            snapshot_id: "SNAP-000000000000",
        }
    }

    #[test]
    fn outcomes_follow_the_rule() {
        assert_eq!(
            decide(facts(RunStatus::FailedPolicy, 2, 0)).0,
            EvaluationOutcome::Violation
        );
        assert_eq!(
            decide(facts(RunStatus::Succeeded, 0, 0)).0,
            EvaluationOutcome::NotApplicable
        );
        let (outcome, _, draft) = decide(facts(RunStatus::Succeeded, 2, 1));
        assert_eq!(outcome, EvaluationOutcome::Advisory);
        assert!(draft);
        assert_eq!(
            decide(facts(RunStatus::Cancelled, 2, 0)).0,
            EvaluationOutcome::NoViolation
        );
        assert!(
            decide(facts(RunStatus::FailedPolicy, 2, 0))
                .1
                .contains("at step 3 by policy pol_x")
        );
    }
}
