//! `approval_decisions`: what became of an approval — granted or denied by a person, or expired
//! — at most one per approval (keyed by it). Each is a chained entry of its run's record, after
//! the held step. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::{ApprovalStatus, DecisionAction};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "approval_decisions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub approval_id: String,
    pub tenant_id: String,
    pub run_id: String,
    pub step_index: i64,
    /// GRANTED, DENIED or EXPIRED (never PENDING).
    pub status: ApprovalStatus,
    /// The held step's final decision: CONTINUE or STOP.
    pub decision: DecisionAction,
    /// The key that decided; `None` when it expired.
    pub decided_by_key: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub note: Option<String>,
    pub decided_at: DateTimeUtc,
    /// The run's head before this entry (the held step's entry hash).
    pub prev_hash: String,
    pub entry_hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
