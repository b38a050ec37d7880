//! `audit_checks`: the result of one check of an audit; (audit_id, check_id) is unique.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::CheckResult;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "audit_checks")]
pub struct Model {
    /// `chk_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub audit_id: String,
    /// e.g. `scope_compliance`.
    pub check_id: String,
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub question: String,
    pub result: CheckResult,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub evidence: Json,
    /// Display order within the audit.
    pub position: i32,
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
        belongs_to = "super::audit::Entity",
        from = "Column::AuditId",
        to = "super::audit::Column::Id"
    )]
    Audit,
}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}

impl Related<super::audit::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Audit.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
