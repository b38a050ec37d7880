//! `halts`: each `haltRuns` of the kill switch: its scope (a workflow, an agent, both, or the
//! whole tenant when neither), why, by which key, and how many running runs it stopped.
//! Append-only; a halt is lifted by its `halt_resumptions` row.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "halts")]
pub struct Model {
    /// `hlt_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub workflow_id: Option<String>,
    pub agent: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    /// The API key (`key_…`) that halted.
    pub halted_by: String,
    pub runs_stopped: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
