//! `shadow_findings`: what a SHADOW policy would have done on a step (it is evaluated on every
//! step and recorded with the step's decision, in the hash chain, but never enforced). One row
//! per finding, written with its step, for `Policy.shadowFindings` and its counts. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "shadow_findings")]
pub struct Model {
    /// `shf_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub policy_id: String,
    pub policy_version: i32,
    pub run_id: String,
    pub step_index: i64,
    /// The policy's action is BLOCK: enforced, it would have stopped the run at this step.
    pub would_stop: bool,
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    pub observed_value: String,
    pub threshold: String,
    /// The step's time.
    pub timestamp: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
