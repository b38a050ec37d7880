//! `policy_evaluations`: exactly one per run (unique `run_id`), written when the run ends.
//! Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::EvaluationOutcome;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "policy_evaluations")]
pub struct Model {
    /// `eval_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    /// Unique.
    pub run_id: String,
    pub outcome: EvaluationOutcome,
    pub policies_checked: i32,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    pub draft_candidate: bool,
    pub is_synthetic: bool,
    pub synthetic_scenario_id: Option<String>,
    /// The run's `SNAP-…` snapshot id.
    pub snapshot_id: String,
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

impl ActiveModelBehavior for ActiveModel {}
