//! `log_checkpoints`: each tenant's signed tree heads, in the C2SP `tlog-checkpoint` format as a
//! signed note. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "log_checkpoints")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub pk: i64,
    pub tenant_id: String,
    pub tree_size: i64,
    /// Hex of the tree head.
    pub root_hash: String,
    /// The signed note, exactly as signed.
    #[sea_orm(column_type = "Text")]
    pub note: String,
    /// The signing key's id (8 hex).
    pub key_id: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
