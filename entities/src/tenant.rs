//! `tenants`: the unit of isolation. Every other row carries a `tenant_id`.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    /// `ten_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Unique.
    pub name: String,
    pub created_at: DateTimeUtc,
    /// Enabling or tightening a BLOCK policy must cite a completed simulation of the set the
    /// change leaves (`governance_core::simulation::gate`).
    pub require_simulation: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::api_key::Entity")]
    ApiKey,
    #[sea_orm(has_many = "super::policy::Entity")]
    Policy,
    #[sea_orm(has_many = "super::policy_snapshot::Entity")]
    PolicySnapshot,
    #[sea_orm(has_many = "super::run::Entity")]
    Run,
    #[sea_orm(has_many = "super::incident::Entity")]
    Incident,
    #[sea_orm(has_many = "super::audit::Entity")]
    Audit,
    #[sea_orm(has_many = "super::export::Entity")]
    Export,
    #[sea_orm(has_many = "super::event::Entity")]
    Event,
    #[sea_orm(has_many = "super::webhook::Entity")]
    Webhook,
}

impl Related<super::api_key::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ApiKey.def()
    }
}

impl Related<super::policy::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Policy.def()
    }
}

impl Related<super::policy_snapshot::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::PolicySnapshot.def()
    }
}

impl Related<super::run::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Run.def()
    }
}

impl Related<super::incident::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Incident.def()
    }
}

impl Related<super::audit::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Audit.def()
    }
}

impl Related<super::export::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Export.def()
    }
}

impl Related<super::event::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Event.def()
    }
}

impl Related<super::webhook::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Webhook.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
