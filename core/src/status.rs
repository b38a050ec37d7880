//! Governance status: the KPIs a dashboard shows for a time window, and the most recent runs.
//! The definitions are in the doc comments of [`Kpis`]; frontends display them as they are.
//!
//! Each family of counts is one aggregate statement (counts of `CASE WHEN … THEN 1 END`), so the
//! whole set costs five statements whatever the volume, and runs the same on SQLite and
//! PostgreSQL.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{IncidentStatus, RunStatus},
    incident, policy_evaluation, policy_snapshot, run, violation,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, ExprTrait, JoinType, QueryFilter,
    QueryOrder, QuerySelect, RelationDef, RelationTrait,
    sea_query::{Expr, Func, IntoCondition},
};

use crate::error::CoreResult;

/// Governance KPIs over the window `[from, to)` (`from` included, `to` excluded).
#[derive(Debug, Clone, PartialEq)]
pub struct Kpis {
    /// Start of the window (included).
    pub from: DateTime<Utc>,
    /// End of the window (excluded).
    pub to: DateTime<Utc>,
    /// Runs started in the window.
    pub runs: u64,
    /// Of those runs, the ones whose `policySnapshotId` names a snapshot the tenant actually has.
    pub runs_with_snapshot: u64,
    /// Snapshot coverage: `runs_with_snapshot / runs`, from 0 to 1; `None` when no run started in
    /// the window.
    pub snapshot_coverage: Option<f64>,
    /// Runs started in the window that a policy stopped (status `FAILED_POLICY`).
    pub stopped_runs: u64,
    /// Violations recorded with a timestamp in the window.
    pub violations: u64,
    /// Evaluation records (one per ended run) created in the window.
    pub evaluations: u64,
    /// Of those violations, the ones recorded against their run's own snapshot, which exists.
    pub linked_violations: u64,
    /// Of those evaluation records, the ones recorded against their run's own snapshot, which
    /// exists.
    pub linked_evaluations: u64,
    /// Verdict linkage: `(linked_violations + linked_evaluations) / (violations + evaluations)`,
    /// from 0 to 1 — the share of verdicts traceable to the exact policy set that produced them;
    /// `None` when there is no verdict in the window.
    pub verdict_linkage: Option<f64>,
    /// Incidents `OPEN` now, whenever they were opened.
    pub open_incidents: u64,
    /// Incidents `ACKNOWLEDGED` now (not yet resolved), whenever they were opened.
    pub acknowledged_incidents: u64,
    /// Incidents detected in the window.
    pub incidents_detected: u64,
    /// Mean time to detect, in milliseconds: over the incidents detected in the window, the mean
    /// of (incident detected − its violating step's timestamp), i.e. how long after the step
    /// happened governance detected it. `None` when no incident was detected in the window.
    /// A step reported with a timestamp later than its arrival counts negatively.
    pub mean_time_to_detect_ms: Option<f64>,
}

/// The governance KPIs of the tenant over `[from, to)`; see [`Kpis`] for each definition.
pub async fn kpis<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> CoreResult<Kpis> {
    let runs = run_counts(conn, tenant_id, from, to).await?;
    let violations = violation_counts(conn, tenant_id, from, to).await?;
    let evaluations = evaluation_counts(conn, tenant_id, from, to).await?;
    let (open_incidents, acknowledged_incidents) = incident_counts(conn, tenant_id).await?;
    let detections = detections(conn, tenant_id, from, to).await?;
    Ok(Kpis {
        from,
        to,
        runs: runs.total,
        runs_with_snapshot: runs.with_snapshot,
        snapshot_coverage: ratio(runs.with_snapshot, runs.total),
        stopped_runs: runs.stopped,
        violations: violations.total,
        evaluations: evaluations.total,
        linked_violations: violations.linked,
        linked_evaluations: evaluations.linked,
        verdict_linkage: ratio(
            violations.linked + evaluations.linked,
            violations.total + evaluations.total,
        ),
        open_incidents,
        acknowledged_incidents,
        incidents_detected: detections.len() as u64,
        mean_time_to_detect_ms: mean_delay_ms(&detections),
    })
}

/// The tenant's most recent runs, newest first (by start, then by id), at most `limit`.
pub async fn recent_runs<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    limit: u64,
) -> CoreResult<Vec<run::Model>> {
    Ok(run::Entity::find()
        .filter(run::Column::TenantId.eq(tenant_id))
        .order_by_desc(run::Column::StartedAt)
        .order_by_desc(run::Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// `numerator / denominator`, or `None` when the denominator is 0.
pub fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// The mean of `later − earlier` over the pairs, in milliseconds; `None` for no pairs.
pub fn mean_delay_ms(pairs: &[(DateTime<Utc>, DateTime<Utc>)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let total: i128 = pairs
        .iter()
        .map(|(later, earlier)| i128::from((*later - *earlier).num_milliseconds()))
        .sum();
    Some(total as f64 / pairs.len() as f64)
}

/// `COUNT(CASE WHEN cond THEN 1 END)`: the rows for which `cond` holds.
fn count_when(cond: impl IntoCondition) -> Expr {
    Func::count(Expr::case(cond, 1)).into()
}

/// `COUNT(column)`: the rows where the column is not NULL.
fn count_of(column: impl ColumnTrait) -> Expr {
    Func::count(Expr::col(column.as_column_ref())).into()
}

/// A count from the database (never negative) as `u64`.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

struct RunCounts {
    total: u64,
    with_snapshot: u64,
    stopped: u64,
}

/// Runs started in the window: all, those whose snapshot row exists (LEFT JOIN on the tenant and
/// the snapshot id), and those stopped by a policy.
async fn run_counts<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> CoreResult<RunCounts> {
    let row: Option<(i64, i64, i64)> = run::Entity::find()
        .select_only()
        .expr_as(count_of(run::Column::Id), "total")
        .expr_as(count_of(policy_snapshot::Column::Pk), "with_snapshot")
        .expr_as(
            count_when(run::Column::Status.eq(RunStatus::FailedPolicy)),
            "stopped",
        )
        .join(JoinType::LeftJoin, run::Relation::PolicySnapshot.def())
        .filter(run::Column::TenantId.eq(tenant_id))
        .filter(run::Column::StartedAt.gte(from))
        .filter(run::Column::StartedAt.lt(to))
        .into_tuple()
        .one(conn)
        .await?;
    let (total, with_snapshot, stopped) = row.unwrap_or_default();
    Ok(RunCounts {
        total: count(total),
        with_snapshot: count(with_snapshot),
        stopped: count(stopped),
    })
}

/// Verdicts (violations or evaluation records) in the window: all, and those linked.
struct VerdictCounts {
    total: u64,
    linked: u64,
}

/// A verdict is linked when its `snapshot_id` is its run's `policy_snapshot_id` and that
/// snapshot row exists (the snapshot is LEFT JOINed through the run).
fn linked(verdict_tenant: impl ColumnTrait, verdict_snapshot: impl ColumnTrait) -> Condition {
    Condition::all()
        .add(
            Expr::col(run::Column::TenantId.as_column_ref()).equals(verdict_tenant.as_column_ref()),
        )
        .add(
            Expr::col(run::Column::PolicySnapshotId.as_column_ref())
                .equals(verdict_snapshot.as_column_ref()),
        )
        .add(Expr::col(policy_snapshot::Column::Pk.as_column_ref()).is_not_null())
}

/// The columns a verdict table is counted by.
struct VerdictColumns<E: EntityTrait> {
    id: E::Column,
    tenant: E::Column,
    snapshot: E::Column,
    /// When the verdict counts as falling in the window.
    time: E::Column,
    /// The verdict's run.
    run: RelationDef,
}

/// Verdicts of one kind in the window, and the linked ones (one statement).
async fn verdict_counts<E: EntityTrait, C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cols: VerdictColumns<E>,
) -> CoreResult<VerdictCounts> {
    let row: Option<(i64, i64)> = E::find()
        .select_only()
        .expr_as(count_of(cols.id), "total")
        .expr_as(count_when(linked(cols.tenant, cols.snapshot)), "linked")
        .join(JoinType::LeftJoin, cols.run)
        .join(JoinType::LeftJoin, run::Relation::PolicySnapshot.def())
        .filter(cols.tenant.eq(tenant_id))
        .filter(cols.time.gte(from))
        .filter(cols.time.lt(to))
        .into_tuple()
        .one(conn)
        .await?;
    let (total, linked) = row.unwrap_or_default();
    Ok(VerdictCounts {
        total: count(total),
        linked: count(linked),
    })
}

/// Violations with a timestamp in the window, and the linked ones.
async fn violation_counts<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> CoreResult<VerdictCounts> {
    use violation::Column as V;
    let cols = VerdictColumns::<violation::Entity> {
        id: V::Id,
        tenant: V::TenantId,
        snapshot: V::SnapshotId,
        time: V::Timestamp,
        run: violation::Relation::Run.def(),
    };
    verdict_counts(conn, tenant_id, from, to, cols).await
}

/// Evaluation records created in the window, and the linked ones.
async fn evaluation_counts<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> CoreResult<VerdictCounts> {
    use policy_evaluation::Column as P;
    let cols = VerdictColumns::<policy_evaluation::Entity> {
        id: P::Id,
        tenant: P::TenantId,
        snapshot: P::SnapshotId,
        time: P::CreatedAt,
        run: policy_evaluation::Relation::Run.def(),
    };
    verdict_counts(conn, tenant_id, from, to, cols).await
}

/// Incidents `OPEN` and `ACKNOWLEDGED` now, whenever they were opened.
async fn incident_counts<C: ConnectionTrait>(conn: &C, tenant_id: &str) -> CoreResult<(u64, u64)> {
    let row: Option<(i64, i64)> = incident::Entity::find()
        .select_only()
        .expr_as(
            count_when(incident::Column::Status.eq(IncidentStatus::Open)),
            "open",
        )
        .expr_as(
            count_when(incident::Column::Status.eq(IncidentStatus::Acknowledged)),
            "acknowledged",
        )
        .filter(incident::Column::TenantId.eq(tenant_id))
        .into_tuple()
        .one(conn)
        .await?;
    let (open, acknowledged) = row.unwrap_or_default();
    Ok((count(open), count(acknowledged)))
}

/// For each incident detected in the window: (detected at, its violation's step timestamp).
async fn detections<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> CoreResult<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    Ok(incident::Entity::find()
        .select_only()
        .column(incident::Column::DetectedAt)
        .column(violation::Column::Timestamp)
        .join(JoinType::InnerJoin, incident::Relation::Violation.def())
        .filter(incident::Column::TenantId.eq(tenant_id))
        .filter(violation::Column::TenantId.eq(tenant_id))
        .filter(incident::Column::DetectedAt.gte(from))
        .filter(incident::Column::DetectedAt.lt(to))
        .into_tuple()
        .all(conn)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ms(millis: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_700_000_000_000 + millis)
            .unwrap()
    }

    #[test]
    fn ratio_is_none_without_denominator() {
        assert_eq!(ratio(0, 0), None);
        assert_eq!(ratio(3, 0), None);
        assert_eq!(ratio(0, 4), Some(0.0));
        assert_eq!(ratio(3, 4), Some(0.75));
        assert_eq!(ratio(4, 4), Some(1.0));
    }

    #[test]
    fn mean_delay_is_the_mean_of_differences() {
        assert_eq!(mean_delay_ms(&[]), None);
        assert_eq!(mean_delay_ms(&[(ms(250), ms(0))]), Some(250.0));
        assert_eq!(
            mean_delay_ms(&[(ms(1_000), ms(0)), (ms(5_500), ms(5_000)), (ms(20), ms(20))]),
            Some(500.0)
        );
        // A step stamped after it arrived counts negatively.
        assert_eq!(mean_delay_ms(&[(ms(0), ms(100))]), Some(-100.0));
    }

    #[test]
    fn counts_never_go_negative() {
        assert_eq!(count(-1), 0);
        assert_eq!(count(7), 7);
    }
}
