//! `runs`: one execution of an agent or workflow. `policy_snapshot_id` is set at start and can
//! never change (a database trigger refuses an UPDATE that changes it).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{RunStatus, TerminationReason};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "runs")]
pub struct Model {
    /// `run_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub workflow_id: String,
    pub agent: Option<String>,
    pub triggered_by: Option<String>,
    pub status: RunStatus,
    pub termination_reason: Option<TerminationReason>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// The `policy_snapshots.snapshot_id` (`SNAP-…`) of this tenant the run is checked against.
    /// Immutable.
    pub policy_snapshot_id: String,
    pub policy_set_version: String,
    pub stopped_at_step: Option<i64>,
    pub violation_policy_id: Option<String>,
    pub tokens_used: i64,
    pub cost_micros: i64,
    pub step_count: i64,
    pub is_synthetic: bool,
    pub synthetic_scenario_id: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub metadata: Option<Json>,
    pub started_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
    /// `entry_hash` of the last trace step (or the chain's genesis hash before the first step).
    pub trace_head_hash: String,
    /// Inflection: the step that stopped the run.
    pub violation_step_index: Option<i64>,
    pub violation_timestamp: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text", nullable)]
    pub violation_reason: Option<String>,
    /// The record format the run's chain is written in (`docs/verifying.md`): 1 for runs recorded
    /// before format 2, 2 since. Immutable.
    pub record_format: i32,
    /// The head the transparency log holds last for this run (null before its first leaf).
    pub logged_head_hash: Option<String>,
    /// When that head was logged.
    pub logged_at: Option<DateTimeUtc>,
    /// No DURATION_LIMIT can end the run before this time (its start plus its snapshot's
    /// smallest enforcing BLOCK `maxSeconds`); null when none can. The sweeper reads only runs
    /// past it, checks each against its snapshot, and stops it or stores the deadline it gives.
    pub deadline_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::tenant::Entity",
        from = "Column::TenantId",
        to = "super::tenant::Column::Id"
    )]
    Tenant,
    #[sea_orm(
        belongs_to = "super::policy_snapshot::Entity",
        from = "(Column::TenantId, Column::PolicySnapshotId)",
        to = "(super::policy_snapshot::Column::TenantId, super::policy_snapshot::Column::SnapshotId)"
    )]
    PolicySnapshot,
    /// The policy that stopped the run.
    #[sea_orm(
        belongs_to = "super::policy::Entity",
        from = "Column::ViolationPolicyId",
        to = "super::policy::Column::Id"
    )]
    ViolationPolicy,
    #[sea_orm(has_many = "super::trace_step::Entity")]
    TraceStep,
    #[sea_orm(has_many = "super::violation::Entity")]
    Violation,
    #[sea_orm(has_many = "super::evidence::Entity")]
    Evidence,
    #[sea_orm(has_many = "super::incident::Entity")]
    Incident,
    #[sea_orm(has_one = "super::policy_evaluation::Entity")]
    PolicyEvaluation,
    #[sea_orm(has_many = "super::policy_enforcement::Entity")]
    PolicyEnforcement,
    #[sea_orm(has_many = "super::export::Entity")]
    Export,
}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}

impl Related<super::policy_snapshot::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PolicySnapshot.def()
    }
}

impl Related<super::policy::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ViolationPolicy.def()
    }
}

impl Related<super::trace_step::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::TraceStep.def()
    }
}

impl Related<super::violation::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Violation.def()
    }
}

impl Related<super::evidence::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Evidence.def()
    }
}

impl Related<super::incident::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Incident.def()
    }
}

impl Related<super::policy_evaluation::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PolicyEvaluation.def()
    }
}

impl Related<super::policy_enforcement::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PolicyEnforcement.def()
    }
}

impl Related<super::export::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Export.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
