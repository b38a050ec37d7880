//! `incidents`: one per violation (unique `violation_id`), so a retried request never opens a
//! second one.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{IncidentStatus, Severity};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "incidents")]
pub struct Model {
    /// `inc_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub run_id: String,
    /// Unique.
    pub violation_id: String,
    pub evidence_id: Option<String>,
    pub severity: Severity,
    /// `severity.rank()`, for SQL filters (`>= minSeverity`).
    pub severity_rank: i32,
    pub title: String,
    pub status: IncidentStatus,
    /// The resolution note.
    #[sea_orm(column_type = "Text", nullable)]
    pub note: Option<String>,
    pub created_at: DateTimeUtc,
    pub detected_at: DateTimeUtc,
    pub acknowledged_at: Option<DateTimeUtc>,
    pub resolved_at: Option<DateTimeUtc>,
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
        belongs_to = "super::run::Entity",
        from = "Column::RunId",
        to = "super::run::Column::Id"
    )]
    Run,
    #[sea_orm(
        belongs_to = "super::violation::Entity",
        from = "Column::ViolationId",
        to = "super::violation::Column::Id"
    )]
    Violation,
    #[sea_orm(
        belongs_to = "super::evidence::Entity",
        from = "Column::EvidenceId",
        to = "super::evidence::Column::Id"
    )]
    Evidence,
    #[sea_orm(has_many = "super::export::Entity")]
    Export,
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

impl Related<super::export::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Export.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
