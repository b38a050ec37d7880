//! What a committed change leaves for the adapters to do afterwards: publish its outbox events to
//! live subscribers and enqueue follow-up jobs. Both are also recoverable from the database (the
//! outbox rows, the sweeper), so a crash between commit and these steps loses nothing.

use governance_entities::event;

/// A job that must follow a committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    /// Write the run's one evaluation record.
    RecordEvaluation { tenant_id: String, run_id: String },
    /// Run an audit's checks and store its verdict.
    RunAudit { tenant_id: String, audit_id: String },
    /// Replay a simulation's runs against its proposal and store the result.
    RunSimulation {
        tenant_id: String,
        simulation_id: String,
    },
    /// Build, render and store an export.
    BuildExport {
        tenant_id: String,
        export_id: String,
    },
    /// Find the endpoints that want an outbox event and enqueue one delivery to each.
    FanOutWebhooks { tenant_id: String, event_id: i64 },
    /// Deliver an outbox event to one endpoint (one attempt per run; retried with backoff).
    DeliverWebhook {
        tenant_id: String,
        webhook_id: String,
        event_id: i64,
    },
}

/// A step was recorded: live followers of the run read it from the trace (steps are not outbox
/// events; the trace itself is their durable record).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepNotice {
    pub tenant_id: String,
    pub run_id: String,
    pub step_index: i64,
}

/// The result of a committed change.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    /// Outbox rows written by the transaction, in sequence order.
    pub events: Vec<event::Model>,
    pub follow_ups: Vec<FollowUp>,
    /// Steps the transaction recorded.
    pub steps: Vec<StepNotice>,
}

impl<T> Committed<T> {
    pub fn new(value: T) -> Self {
        Self {
            value,
            events: Vec::new(),
            follow_ups: Vec::new(),
            steps: Vec::new(),
        }
    }
}
