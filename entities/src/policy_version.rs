//! `policy_versions`: every version of every policy. Append-only (database triggers refuse
//! UPDATE and DELETE).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{PolicyAction, PolicyKind, PolicyMode, Severity};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "policy_versions")]
pub struct Model {
    /// `pv_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub policy_id: String,
    /// Unique per policy.
    pub version: i32,
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
    pub workflow_id: Option<String>,
    pub enabled: bool,
    /// Semver of the tenant's policy set after this change.
    pub policy_set_version: String,
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
        belongs_to = "super::policy::Entity",
        from = "Column::PolicyId",
        to = "super::policy::Column::Id"
    )]
    Policy,
}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}

impl Related<super::policy::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Policy.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
