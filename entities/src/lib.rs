//! SeaORM persistence models, one module per table. These are storage types only: the GraphQL
//! types live in the API crate and are built from them.
//!
//! Conventions: primary keys are the application's prefixed public ids (`run_…`), except the
//! surrogate integer keys of `policy_snapshots.pk`, `trace_steps.pk` and `events.id`; every row
//! carries `tenant_id`; enums are stored as their contract spelling in string columns; JSON is
//! `serde_json::Value`; money is `cost_micros` (i64); times are UTC.
//!
//! The tables listed in [`APPEND_ONLY_TABLES`] refuse UPDATE and DELETE in the database
//! (triggers created by the `migration` crate), and `runs.policy_snapshot_id` can never change.

pub mod enums;
pub mod prelude;

pub mod api_key;
pub mod approval;
pub mod approval_decision;
pub mod audit;
pub mod audit_check;
pub mod event;
pub mod evidence;
pub mod export;
pub mod halt;
pub mod halt_resumption;
pub mod incident;
pub mod log_checkpoint;
pub mod log_leaf;
pub mod log_node;
pub mod policy;
pub mod policy_enforcement;
pub mod policy_evaluation;
pub mod policy_snapshot;
pub mod policy_version;
pub mod run;
pub mod service_key;
pub mod shadow_finding;
pub mod simulation;
pub mod tenant;
pub mod trace_step;
pub mod violation;
pub mod webhook;
pub mod webhook_delivery;

pub use enums::*;

/// The tables whose rows, once written, are never updated or deleted (enforced by triggers).
pub const APPEND_ONLY_TABLES: &[&str] = &[
    "policy_versions",
    "policy_snapshots",
    "trace_steps",
    "violations",
    "evidence",
    "policy_enforcements",
    "policy_evaluations",
    "events",
    "log_leaves",
    "log_nodes",
    "log_checkpoints",
];
