//! `service_keys`: secrets the service generates for itself (e.g. the export download URL key),
//! shared by every replica through the database.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "service_keys")]
pub struct Model {
    /// What the key is for, e.g. `export_download`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Hex of the random key bytes.
    pub key: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
