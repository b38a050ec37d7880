//! Reading what SHADOW policies would have done. Their findings are recorded with each step's
//! decision (and chained) by the step path, and one row per finding in `shadow_findings`; this
//! module answers from those rows.

use chrono::{DateTime, Utc};
use governance_entities::shadow_finding;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, ExprTrait},
};

use crate::error::CoreResult;

/// What a shadow policy would have done over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShadowStats {
    /// Distinct runs it would have stopped (a BLOCK finding).
    pub runs_would_stop: u64,
    /// Distinct runs it would have warned (a WARN finding).
    pub runs_would_warn: u64,
    /// Its findings.
    pub findings: u64,
}

/// The shadow findings of `policy_id` (any version) recorded since `since`, counted.
pub async fn stats<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    policy_id: &str,
    since: DateTime<Utc>,
) -> CoreResult<ShadowStats> {
    // Counted by the database: a shadow policy may fire on every step.
    let rows: Vec<(bool, i64, i64)> = shadow_finding::Entity::find()
        .select_only()
        .column(shadow_finding::Column::WouldStop)
        .column_as(
            Expr::col(shadow_finding::Column::RunId).count_distinct(),
            "runs",
        )
        .column_as(Expr::col(shadow_finding::Column::Id).count(), "findings")
        .filter(shadow_finding::Column::TenantId.eq(tenant_id))
        .filter(shadow_finding::Column::PolicyId.eq(policy_id))
        .filter(shadow_finding::Column::CreatedAt.gte(since))
        .group_by(shadow_finding::Column::WouldStop)
        .into_tuple()
        .all(conn)
        .await?;
    let mut stats = ShadowStats::default();
    for (would_stop, runs, findings) in rows {
        if would_stop {
            stats.runs_would_stop = runs as u64;
        } else {
            stats.runs_would_warn = runs as u64;
        }
        stats.findings += findings as u64;
    }
    Ok(stats)
}

/// The query of a policy's shadow findings (for paging by the adapter).
pub fn of_policy(tenant_id: &str, policy_id: &str) -> sea_orm::Select<shadow_finding::Entity> {
    shadow_finding::Entity::find()
        .filter(shadow_finding::Column::TenantId.eq(tenant_id))
        .filter(shadow_finding::Column::PolicyId.eq(policy_id))
}
