//! `policies`: the current head of each policy. Every version, including the current one, is
//! also in `policy_versions` (append-only).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{PolicyAction, PolicyKind, PolicyMode, Severity};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "policies")]
pub struct Model {
    /// `pol_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    pub kind: PolicyKind,
    #[sea_orm(column_type = "JsonBinary")]
    pub rule: Json,
    pub action: PolicyAction,
    pub severity: Severity,
    /// `ENFORCE` decides; `SHADOW` is evaluated and recorded, never enforced.
    pub mode: PolicyMode,
    /// Optional scope: the policy applies only to runs of this workflow.
    pub workflow_id: Option<String>,
    pub enabled: bool,
    /// The policy's own version number, starting at 1.
    pub version: i32,
    /// The `policy_versions.id` (`pv_…`) of the current version.
    pub current_version_id: String,
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
    #[sea_orm(has_many = "super::policy_version::Entity")]
    PolicyVersion,
    #[sea_orm(has_many = "super::violation::Entity")]
    Violation,
    #[sea_orm(has_many = "super::policy_enforcement::Entity")]
    PolicyEnforcement,
    /// Runs stopped by this policy (`runs.violation_policy_id`).
    #[sea_orm(has_many = "super::run::Entity")]
    Run,
}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}

impl Related<super::policy_version::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PolicyVersion.def()
    }
}

impl Related<super::violation::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Violation.def()
    }
}

impl Related<super::policy_enforcement::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PolicyEnforcement.def()
    }
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
