//! `exports`: an evidence, SOC2 or executive-debrief bundle of an incident, as JSON or PDF.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{ExportFormat, ExportKind, ExportStatus};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "exports")]
pub struct Model {
    /// `exp_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub incident_id: String,
    pub run_id: String,
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub status: ExportStatus,
    /// 0–100.
    pub progress: i32,
    #[sea_orm(column_type = "Text", nullable)]
    pub reason: Option<String>,
    /// The id of the API key that requested it.
    pub requested_by: String,
    /// sha256 of `content`, hex.
    pub sha256: Option<String>,
    pub size_bytes: Option<i64>,
    /// The rendered bytes (bytea on PostgreSQL, blob on SQLite).
    #[sea_orm(column_type = "Blob", nullable)]
    pub content: Option<Vec<u8>>,
    pub content_type: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub attempts: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
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
        belongs_to = "super::incident::Entity",
        from = "Column::IncidentId",
        to = "super::incident::Column::Id"
    )]
    Incident,
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

impl Related<super::incident::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Incident.def()
    }
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// An export without its rendered bytes: what lists and status reads need.
#[derive(Clone, Debug, PartialEq, Eq, DerivePartialModel)]
#[sea_orm(entity = "Entity")]
pub struct Summary {
    pub id: String,
    pub tenant_id: String,
    pub incident_id: String,
    pub run_id: String,
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub status: ExportStatus,
    pub progress: i32,
    pub reason: Option<String>,
    pub requested_by: String,
    pub sha256: Option<String>,
    pub size_bytes: Option<i64>,
    pub content_type: Option<String>,
    pub error: Option<String>,
    pub attempts: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
}

impl From<Model> for Summary {
    /// The export without its bytes.
    fn from(e: Model) -> Self {
        Summary {
            id: e.id,
            tenant_id: e.tenant_id,
            incident_id: e.incident_id,
            run_id: e.run_id,
            kind: e.kind,
            format: e.format,
            status: e.status,
            progress: e.progress,
            reason: e.reason,
            requested_by: e.requested_by,
            sha256: e.sha256,
            size_bytes: e.size_bytes,
            content_type: e.content_type,
            error: e.error,
            attempts: e.attempts,
            created_at: e.created_at,
            updated_at: e.updated_at,
            completed_at: e.completed_at,
        }
    }
}
