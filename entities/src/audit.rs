//! `audits`: a post-execution audit of a job against its contract, with its verdict.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{AuditStatus, AuditVerdict};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "audits")]
pub struct Model {
    /// `aud_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub job_id: String,
    pub contract_id: String,
    pub status: AuditStatus,
    pub verdict: Option<AuditVerdict>,
    #[sea_orm(column_type = "Text", nullable)]
    pub verdict_reason: Option<String>,
    /// The `AuditRequestInput` as received.
    #[sea_orm(column_type = "JsonBinary")]
    pub request: Json,
    pub checks_passed: i32,
    pub checks_failed: i32,
    pub checks_inconclusive: i32,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub health_before: Option<Json>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub health_after: Option<Json>,
    pub audited_at: Option<DateTimeUtc>,
    pub duration_ms: Option<i64>,
    pub auditor_version: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
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
    #[sea_orm(has_many = "super::audit_check::Entity")]
    AuditCheck,
}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}

impl Related<super::audit_check::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::AuditCheck.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
