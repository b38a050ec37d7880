//! `log_leaves`: the leaves of each tenant's transparency log, in order. A leaf is a run's head
//! (its final head when it ends, and the head of a long-running run at an interval); its
//! `leaf_data` is the RFC 8785 document `docs/verifying.md` specifies, and `leaf_hash` its RFC 6962
//! leaf hash. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "log_leaves")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub pk: i64,
    pub tenant_id: String,
    /// 0-based position in the tenant's log; unique per tenant, no gaps.
    pub leaf_index: i64,
    pub run_id: String,
    pub head_hash: String,
    pub step_count: i64,
    /// The run's status when its head was logged.
    pub status: String,
    #[sea_orm(column_type = "Text")]
    pub leaf_data: String,
    /// Hex of `SHA-256(0x00 ‖ leaf_data)`.
    pub leaf_hash: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
