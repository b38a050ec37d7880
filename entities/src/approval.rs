//! `approvals`: a step held by a REQUIRE_APPROVAL policy, waiting for a person. Written with
//! the held step; what was decided is in `approval_decisions`. Append-only.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::ApprovalOnTimeout;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "approvals")]
pub struct Model {
    /// `apr_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub run_id: String,
    /// The held step.
    pub step_index: i64,
    /// The REQUIRE_APPROVAL policy that held it.
    pub policy_id: String,
    pub policy_version: i32,
    /// The API key that reported the step (it may not decide it); `None` for the service.
    pub requested_by_key: Option<String>,
    pub timeout_seconds: i64,
    pub on_timeout: ApprovalOnTimeout,
    pub requested_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
