//! `simulations`: each `simulatePolicies`: the proposed policy set (resolved when requested),
//! the runs it replays (chosen when requested), and once COMPLETED the per-run results, their
//! totals and hash. A completed or failed simulation is immutable (a trigger refuses updates);
//! no row is ever deleted.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::enums::SimulationStatus;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "simulations")]
pub struct Model {
    /// `sim_…`
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub status: SimulationStatus,
    /// 0–100.
    pub progress: i32,
    /// The proposal as resolved: every policy it names, and its hash.
    #[sea_orm(column_type = "JsonBinary")]
    pub proposal: Json,
    /// The hash the policy gate compares (see `governance_core::simulation::proposal`).
    pub proposed_snapshot_hash: String,
    /// The run filter as given (for display).
    #[sea_orm(column_type = "JsonBinary")]
    pub run_filter: Json,
    /// The ids of the runs to replay, newest first.
    #[sea_orm(column_type = "JsonBinary")]
    pub run_ids: Json,
    pub runs_replayed: i64,
    pub newly_stopped: i64,
    pub no_longer_stopped: i64,
    pub stop_moved: i64,
    /// Each run's result, in `run_ids` order (once COMPLETED).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub results: Option<Json>,
    pub result_hash: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// The API key (`key_…`) that requested it.
    pub requested_by: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub completed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
