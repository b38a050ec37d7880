//! `violations`: the violation fact, persisted before any incident. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{PolicyAction, PolicyKind, Severity};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "violations")]
pub struct Model {
    /// `vio_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub run_id: String,
    pub policy_id: String,
    pub policy_version: i32,
    pub policy_type: PolicyKind,
    #[sea_orm(column_type = "Text")]
    pub violated_rule: String,
    #[sea_orm(column_type = "Text")]
    pub evaluated_value: String,
    #[sea_orm(column_type = "Text")]
    pub threshold_condition: String,
    pub severity: Severity,
    /// `severity.rank()`, for SQL filters.
    pub severity_rank: i32,
    pub action: PolicyAction,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    pub step_index: i64,
    /// The run's `SNAP-…` snapshot id.
    pub snapshot_id: String,
    pub timestamp: DateTimeUtc,
    pub created_at: DateTimeUtc,
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
        belongs_to = "super::run::Entity",
        from = "Column::RunId",
        to = "super::run::Column::Id"
    )]
    Run,
    #[sea_orm(
        belongs_to = "super::policy::Entity",
        from = "Column::PolicyId",
        to = "super::policy::Column::Id"
    )]
    Policy,
    #[sea_orm(has_many = "super::evidence::Entity")]
    Evidence,
    #[sea_orm(has_one = "super::incident::Entity")]
    Incident,
}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl Related<super::policy::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Policy.def()
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

impl ActiveModelBehavior for ActiveModel {}
