//! `halt_resumptions`: the `resumeRuns` that lifted a halt; at most one per halt. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "halt_resumptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub halt_id: String,
    pub tenant_id: String,
    /// The API key (`key_…`) that resumed.
    pub resumed_by: String,
    pub resumed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
