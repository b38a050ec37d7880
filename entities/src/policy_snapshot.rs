//! `policy_snapshots`: the immutable policy set a run is checked against. Append-only.
//!
//! The public id is `snapshot_id` (`SNAP-` + first 12 hex of `content_hash`). Two tenants with the
//! same policy set have the same `snapshot_id`, so the primary key is a surrogate `pk`;
//! (tenant_id, content_hash) and (tenant_id, snapshot_id) are unique.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "policy_snapshots")]
pub struct Model {
    /// Surrogate key, database-generated.
    #[sea_orm(primary_key)]
    pub pk: i64,
    pub tenant_id: String,
    /// `SNAP-<12 hex>`; unique per tenant.
    pub snapshot_id: String,
    /// sha256(policies_json ‖ thresholds_json), 64 hex; unique per tenant.
    pub content_hash: String,
    /// Canonical JSON, stored as text so the hashed bytes are kept exactly.
    #[sea_orm(column_type = "Text")]
    pub policies_json: String,
    /// Canonical JSON, stored as text so the hashed bytes are kept exactly.
    #[sea_orm(column_type = "Text")]
    pub thresholds_json: String,
    pub policy_count: i32,
    /// Policy-set semver.
    pub version: String,
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
    /// Runs checked against this snapshot (joined on tenant_id and snapshot_id).
    #[sea_orm(has_many = "super::run::Entity")]
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
