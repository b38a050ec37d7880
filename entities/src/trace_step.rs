//! `trace_steps`: the hash-chained trace of a run, one row per step. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{DecisionAction, StepStatus, StepType};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "trace_steps")]
pub struct Model {
    /// Surrogate key, database-generated.
    #[sea_orm(primary_key)]
    pub pk: i64,
    pub tenant_id: String,
    pub run_id: String,
    /// 0-based; unique per run.
    pub step_index: i64,
    pub timestamp: DateTimeUtc,
    pub step_type: StepType,
    pub tokens: i64,
    pub cost_micros: i64,
    pub tool_name: Option<String>,
    /// sha256 of the reported content.
    pub content_hash: String,
    pub status: StepStatus,
    pub is_inflection: bool,
    pub decision: DecisionAction,
    pub policies_checked: i32,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    /// The full decision detail.
    #[sea_orm(column_type = "JsonBinary")]
    pub decision_json: Json,
    pub prev_hash: String,
    pub entry_hash: String,
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
