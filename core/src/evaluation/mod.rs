//! The evaluation record: exactly one per ended run, saying what governance concluded about it.

mod lane;

pub(crate) use lane::EvaluationLane;

use governance_entities::{
    enums::{EvaluationOutcome, PolicyAction, RunStatus},
    policy_evaluation,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, Statement,
};

use crate::{
    error::{CoreError, CoreResult},
    ids::{new_id, prefix},
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

/// What [`record`] reads about a run, in one statement.
#[derive(Debug, FromQueryResult)]
struct StoredFacts {
    status: RunStatus,
    is_synthetic: bool,
    synthetic_scenario_id: Option<String>,
    stopped_at_step: Option<i64>,
    violation_policy_id: Option<String>,
    policy_snapshot_id: String,
    /// `None` when the run's snapshot row is missing.
    policy_count: Option<i32>,
    warnings: i64,
    /// Evaluation records the run already has (0 or 1).
    evaluated: i64,
}

/// The run, its snapshot's policy count, its WARN (and REQUIRE_APPROVAL) violations and whether it is already
/// evaluated, in one statement; `None` when the tenant has no such run.
async fn stored_facts<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<Option<StoredFacts>> {
    let backend = conn.get_database_backend();
    let (tenant, run, warn, approve) = match backend {
        DbBackend::Postgres => ("$1", "$2", "$3", "$4"),
        _ => ("?1", "?2", "?3", "?4"),
    };
    let sql = format!(
        "SELECT r.status, r.is_synthetic, r.synthetic_scenario_id, r.stopped_at_step, \
                r.violation_policy_id, r.policy_snapshot_id, s.policy_count, \
                (SELECT COUNT(*) FROM violations v \
                  WHERE v.tenant_id = r.tenant_id AND v.run_id = r.id AND v.action IN ({warn}, {approve})) AS warnings, \
                (SELECT COUNT(*) FROM policy_evaluations e \
                  WHERE e.tenant_id = r.tenant_id AND e.run_id = r.id) AS evaluated \
           FROM runs r \
           LEFT JOIN policy_snapshots s \
             ON s.tenant_id = r.tenant_id AND s.snapshot_id = r.policy_snapshot_id \
          WHERE r.tenant_id = {tenant} AND r.id = {run}"
    );
    Ok(
        StoredFacts::find_by_statement(Statement::from_sql_and_values(
            backend,
            sql,
            [
                tenant_id.into(),
                run_id.into(),
                PolicyAction::Warn.as_str().into(),
                // A step held for approval and let through is advice too, not a clean run.
                PolicyAction::RequireApproval.as_str().into(),
            ],
        ))
        .one(conn)
        .await?,
    )
}

/// Write the run's evaluation record. Idempotent: when it exists, it is returned unchanged and
/// `false` says nothing was written (a job run twice writes once).
pub async fn record(
    store: &Store,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<(policy_evaluation::Model, bool)> {
    let facts = stored_facts(store.db(), tenant_id, run_id)
        .await?
        .ok_or_else(|| CoreError::not_found("Run", run_id))?;
    if facts.evaluated > 0
        && let Some(existing) = find(store.db(), tenant_id, run_id).await?
    {
        return Ok((existing, false));
    }
    if !facts.status.is_terminal() {
        return Err(CoreError::Conflict(format!(
            "run `{run_id}` is still {}; it is evaluated when it ends",
            facts.status
        )));
    }
    let policy_count = facts.policy_count.ok_or_else(|| {
        anyhow::anyhow!(
            "run {run_id} names snapshot {} which does not exist",
            facts.policy_snapshot_id
        )
    })?;
    let (outcome, reason, draft_candidate) = decide(RunFacts {
        status: facts.status,
        policy_count,
        warnings: facts.warnings as u64,
        stopped_at_step: facts.stopped_at_step,
        violation_policy_id: facts.violation_policy_id.as_deref(),
        snapshot_id: &facts.policy_snapshot_id,
    });
    let row = policy_evaluation::Model {
        id: new_id(prefix::EVALUATION),
        tenant_id: tenant_id.to_string(),
        run_id: run_id.to_string(),
        outcome,
        policies_checked: policy_count,
        reason,
        draft_candidate,
        is_synthetic: facts.is_synthetic,
        synthetic_scenario_id: facts.synthetic_scenario_id.clone(),
        snapshot_id: facts.policy_snapshot_id.clone(),
        created_at: now(),
    };
    let created = match store.evaluation_lane() {
        Some(lane) => lane.insert(row.clone()).await?,
        None => {
            let txn = store.begin().await?;
            let inserted = lane::insert_in(&*txn, &row).await?;
            txn.commit().await?;
            inserted
        }
    };
    if created {
        return Ok((row, true));
    }
    // A concurrent duplicate job won: return the record it wrote.
    let stored = find(store.db(), tenant_id, run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("evaluation of {run_id} vanished after insert"))?;
    Ok((stored, false))
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
