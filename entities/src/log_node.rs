//! `log_nodes`: the hash of every perfect subtree of each tenant's log: the node at
//! `(level, node_index)` covers leaves `[node_index·2^level, (node_index+1)·2^level)`. Heads and
//! proofs are folded from them. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "log_nodes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub pk: i64,
    pub tenant_id: String,
    pub level: i32,
    pub node_index: i64,
    /// Hex.
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
