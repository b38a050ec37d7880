//! The governance domain. Every rule that matters lives here once: policy evaluation, snapshots,
//! the trace hash chain, the run lifecycle, audits and export bundles. `api` and `workers` are thin
//! adapters that authenticate, translate and call into this crate. No HTTP, GraphQL or apalis here.

pub mod approvals;
pub mod auditing;
pub mod audits;
pub mod bundle_verify;
pub mod canonical;
pub mod chain;
pub mod compare;
pub mod db;
pub mod decision_record;
pub mod egress;
pub mod error;
pub mod evaluation;
pub mod events;
pub mod explain;
pub mod exports;
pub mod halts;
pub mod hashing;
pub mod ids;
pub mod incidents;
pub mod key_file;
pub mod merkle;
pub mod outcome;
mod placeholders;
pub mod policies;
pub mod policy;
pub mod rate_limit;
pub mod records;
pub mod replay;
pub mod roles;
pub mod run_filter;
pub mod runs;
pub mod sealing;
pub mod shadow;
pub mod signing;
pub mod simulation;
pub mod snapshot;
mod sqlite_request;
pub mod status;
pub mod steps;
mod stops;
pub mod store;
pub mod tenancy;
#[cfg(test)]
mod test_support;
pub mod time;
pub mod timeouts;
pub mod transparency;
pub mod verify;
#[cfg(test)]
mod verifying_vectors;
pub mod webhooks;

pub use error::{CoreError, CoreResult};
