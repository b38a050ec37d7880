//! `events`: the outbox. `id` gives the global order, `seq` the per-tenant order (unique per
//! tenant); consumers keep their own position. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "events")]
pub struct Model {
    /// Database-generated, increasing.
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: String,
    /// Per-tenant sequence number; unique with `tenant_id`.
    pub seq: i64,
    /// e.g. `INCIDENT_CREATED`.
    pub kind: String,
    /// The incident, run or export the event is about.
    pub subject_id: String,
    pub run_id: Option<String>,
    pub severity_rank: Option<i32>,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
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
    #[sea_orm(has_many = "super::webhook_delivery::Entity")]
    WebhookDelivery,
}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}

impl Related<super::webhook_delivery::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::WebhookDelivery.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
