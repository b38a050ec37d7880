//! `governanceStatus`: the dashboard header — recent runs with the snapshot and policy-set
//! version they ran under, and the KPIs over a window.

use async_graphql::{Context, Object};
use chrono::Duration;
use governance_core::{CoreError, status};

use super::{error::GqlResultExt, principal, runs::Run, scalars::DateTime, state};

pub struct GovernanceKpis(pub status::Kpis);

/// KPIs over a window `[from, to)`. Ratios are 0–1, null when there is nothing to measure.
#[Object]
impl GovernanceKpis {
    /// Start of the window (inclusive).
    async fn from(&self) -> DateTime {
        self.0.from.into()
    }
    /// End of the window (exclusive).
    async fn to(&self) -> DateTime {
        self.0.to.into()
    }
    /// Runs started in the window.
    async fn runs(&self) -> u64 {
        self.0.runs
    }
    /// Of those, runs whose policy snapshot exists and is the tenant's.
    async fn runs_with_snapshot(&self) -> u64 {
        self.0.runs_with_snapshot
    }
    /// `runsWithSnapshot / runs`: the share of runs checked against a stored snapshot.
    async fn snapshot_coverage(&self) -> Option<f64> {
        self.0.snapshot_coverage
    }
    /// Runs started in the window that governance stopped (FAILED_POLICY).
    async fn stopped_runs(&self) -> u64 {
        self.0.stopped_runs
    }
    /// Violations whose step happened in the window.
    async fn violations(&self) -> u64 {
        self.0.violations
    }
    /// Evaluation records written in the window.
    async fn evaluations(&self) -> u64 {
        self.0.evaluations
    }
    /// Violations that name their run's snapshot (and it exists).
    async fn linked_violations(&self) -> u64 {
        self.0.linked_violations
    }
    /// Evaluation records that name their run's snapshot (and it exists).
    async fn linked_evaluations(&self) -> u64 {
        self.0.linked_evaluations
    }
    /// `(linkedViolations + linkedEvaluations) / (violations + evaluations)`: the share of
    /// verdicts traceable to the exact policy set that produced them.
    async fn verdict_linkage(&self) -> Option<f64> {
        self.0.verdict_linkage
    }
    /// Incidents OPEN now (any age).
    async fn open_incidents(&self) -> u64 {
        self.0.open_incidents
    }
    /// Incidents ACKNOWLEDGED now and not yet resolved (any age).
    async fn acknowledged_incidents(&self) -> u64 {
        self.0.acknowledged_incidents
    }
    /// Incidents detected in the window.
    async fn incidents_detected(&self) -> u64 {
        self.0.incidents_detected
    }
    /// Mean time to detect, in milliseconds: for incidents detected in the window, the mean of
    /// (detection − the violating step's timestamp).
    async fn mean_time_to_detect_ms(&self) -> Option<f64> {
        self.0.mean_time_to_detect_ms
    }
}

pub struct GovernanceStatus {
    kpis: status::Kpis,
    recent: Vec<governance_entities::run::Model>,
    halts: Vec<governance_core::halts::Halt>,
}

/// The tenant's governance at a glance.
#[Object]
impl GovernanceStatus {
    /// The newest runs, each with `policySnapshotId` and `policyVersion`.
    async fn recent_runs(&self) -> Vec<Run> {
        self.recent.iter().cloned().map(Run).collect()
    }
    /// The KPIs over the window.
    async fn kpis(&self) -> GovernanceKpis {
        GovernanceKpis(self.kpis.clone())
    }
    /// The halts of the kill switch that stand now, newest first: no run starts in their
    /// scope.
    async fn active_halts(&self) -> Vec<super::halts::Halt> {
        self.halts.iter().cloned().map(super::halts::Halt).collect()
    }
}

#[derive(Default)]
pub struct StatusQuery;

#[Object]
impl StatusQuery {
    /// Recent runs and KPIs over `[from, to)` (default: the 24 hours before now).
    async fn governance_status(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime>,
        to: Option<DateTime>,
        #[graphql(
            default = 10,
            desc = "How many recent runs (at most the largest page)."
        )]
        recent_runs: i32,
    ) -> async_graphql::Result<GovernanceStatus> {
        let principal = principal(ctx)?;
        let state = state(ctx);
        let to = to.map(|t| t.0).unwrap_or_else(governance_core::time::now);
        let from = from.map(|f| f.0).unwrap_or(to - Duration::hours(24));
        if from >= to {
            return Err(CoreError::bad_field("from", "`from` must be before `to`")).gql();
        }
        let max = state.config.limits.max_page_size;
        if recent_runs < 0 || recent_runs as usize > max {
            return Err(CoreError::bad_field(
                "recentRuns",
                format!("`recentRuns` must be between 0 and {max}"),
            ))
            .gql();
        }
        let kpis = status::kpis(&state.db, &principal.tenant_id, from, to)
            .await
            .gql()?;
        let recent = status::recent_runs(&state.db, &principal.tenant_id, recent_runs as u64)
            .await
            .gql()?;
        let halts = governance_core::halts::list(&state.db, &principal.tenant_id, true, 100)
            .await
            .gql()?;
        Ok(GovernanceStatus {
            kpis,
            recent,
            halts,
        })
    }
}
