//! `Run.explain(at:)`: what governed a run at one instant, and where that is recorded.

use async_graphql::{Context, Enum, Json, Object};
use governance_core::explain::{ExplainedDecision, Explanation, Phase};
use serde_json::Value;

use super::{
    enums::{DecisionAction, RunStatus},
    loaders::{self, loader},
    policies::Policy,
    scalars::DateTime,
    snapshots::PolicySnapshot,
};

/// Where the run was at the instant asked about.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(name = "RunPhase")]
pub enum RunPhase {
    /// The instant is before the run started.
    BeforeStart,
    /// The run had started, but no step had been recorded yet.
    BeforeFirstStep,
    /// The run was executing; `decision` is the last one taken.
    Running,
    /// The run had ended (at its stop, or later); `decision` is its last.
    Ended,
}

impl From<Phase> for RunPhase {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::BeforeStart => RunPhase::BeforeStart,
            Phase::BeforeFirstStep => RunPhase::BeforeFirstStep,
            Phase::Running => RunPhase::Running,
            Phase::Ended => RunPhase::Ended,
        }
    }
}

pub struct RunExplanation(pub Explanation);

/// The answer of `Run.explain(at:)`.
#[Object]
impl RunExplanation {
    /// The instant explained.
    async fn at(&self) -> DateTime {
        self.0.at.into()
    }
    /// Where the run was at that instant.
    async fn phase(&self) -> RunPhase {
        self.0.phase.into()
    }
    /// The run's status at that instant (null before it started).
    async fn status(&self) -> Option<RunStatus> {
        self.0.status.map(Into::into)
    }
    /// The snapshot in force: the one taken at the start, the same for every instant of the run.
    async fn snapshot(&self) -> PolicySnapshot {
        PolicySnapshot(self.0.snapshot.clone())
    }
    /// The thresholds in force (policy id → rule), from the snapshot.
    async fn thresholds(&self) -> Json<Value> {
        Json(self.0.thresholds.clone())
    }
    /// The last decision at or before the instant; null before the first step.
    async fn decision(&self) -> Option<ExplainedStepDecision> {
        self.0.decision.clone().map(ExplainedStepDecision)
    }
    /// The explanation in words; says explicitly when the instant is before the first step or
    /// after the end.
    async fn note(&self) -> &str {
        &self.0.note
    }
}

pub struct ExplainedStepDecision(pub ExplainedDecision);

/// A recorded decision, why it was taken, and where it sits in the hash chain.
#[Object]
impl ExplainedStepDecision {
    /// CONTINUE, WARN, STOP, or HOLD (waiting for an approval).
    async fn action(&self) -> DecisionAction {
        self.0.action.into()
    }
    /// Why, as recorded with the step.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// The id of the policy that decided it (null for CONTINUE).
    async fn policy_id(&self) -> Option<&str> {
        self.0.policy_id.as_deref()
    }
    /// The deciding policy's name as captured in the snapshot.
    async fn policy_name(&self) -> Option<&str> {
        self.0.policy_name.as_deref()
    }
    /// The deciding policy's version as captured in the snapshot.
    async fn policy_version(&self) -> Option<i32> {
        self.0.policy_version
    }
    /// The deciding policy as it is now.
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Policy>> {
        let Some(id) = &self.0.policy_id else {
            return Ok(None);
        };
        Ok(loader(ctx)?
            .load_one(loaders::PolicyId(id.clone()))
            .await?
            .map(Policy))
    }
    /// The deciding policy's threshold (its rule in the snapshot).
    async fn threshold(&self) -> Option<Json<Value>> {
        self.0.threshold.clone().map(Json)
    }
    /// The value observed at the step, against the threshold.
    async fn observed_value(&self) -> Option<&str> {
        self.0.observed_value.as_deref()
    }
    /// Every finding of the step (each policy that fired, with threshold and observed value).
    async fn findings(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.0.findings).unwrap_or_default())
    }
    /// What the SHADOW policies would have done on that step (each with threshold and observed
    /// value), shown beside the decision they took no part in.
    async fn shadow_findings(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.0.shadow_findings).unwrap_or_default())
    }
    /// The step's approval when it was held: the action is HOLD until it was decided (by the
    /// instant explained), then its final decision.
    async fn approval(&self) -> Option<super::approvals::Approval> {
        self.0.approval.clone().map(super::approvals::Approval)
    }
    /// The 0-based index of the step that carries the decision.
    async fn step_index(&self) -> i64 {
        self.0.step_index
    }
    /// When that step happened.
    async fn step_timestamp(&self) -> DateTime {
        self.0.step_timestamp.into()
    }
    /// The step's `entryHash`: check it with `verifyRun`.
    async fn entry_hash(&self) -> &str {
        &self.0.entry_hash
    }
    /// The link's position in the hash chain: the genesis hash is position 0, step `i` is
    /// position `i + 1`.
    async fn chain_position(&self) -> i64 {
        self.0.chain_position
    }
}
