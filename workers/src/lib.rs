//! Background work: apalis job types and handlers, the choice of queue storage (SQLite by
//! default, PostgreSQL when the database is PostgreSQL, Redis when configured), the run sweeper,
//! and event fan-out. Handlers are plain async functions over a payload, callable without a
//! queue; the apalis wiring only adapts them.

pub mod events;
pub mod jobs;
pub mod metrics;
pub mod queue;
pub mod queue_stats;
pub mod redis_client;
pub mod render;
pub mod retention;
mod runner;
pub mod sequencer;
pub mod sweeper;
pub mod wakeup;
pub mod webhook_client;

use governance_core::{
    egress::EgressPolicy,
    outcome::{Committed, FollowUp},
    policy::SnapshotCache,
    store::Store,
};

pub use queue::{JobQueue, QueueSettings};
pub use runner::run;

use events::EventBus;

/// What workers need.
#[derive(Clone)]
pub struct WorkerDeps {
    pub store: Store,
    pub jobs: JobQueue,
    pub bus: EventBus,
    /// Compiled snapshots, shared with the API when embedded.
    pub cache: SnapshotCache,
    /// Renders export PDFs.
    pub renderer: std::sync::Arc<render::Renderer>,
    /// Which addresses webhook deliveries may connect to.
    pub egress: EgressPolicy,
    /// Records the steps the sweeper reports for silent runs (shared with the API when embedded).
    pub recorder: governance_core::steps::Recorder,
    /// The transparency log's signing key and settings.
    pub log: sequencer::LogDeps,
}

/// Carries out what a committed change leaves to do: publish its events, enqueue its jobs.
#[derive(Clone)]
pub struct Dispatcher {
    jobs: JobQueue,
    bus: EventBus,
}

impl Dispatcher {
    pub fn new(jobs: JobQueue, bus: EventBus) -> Self {
        Self { jobs, bus }
    }

    /// Publish and enqueue, then return the committed value. A failed enqueue is logged, not
    /// returned: the change is committed, and the sweeper enqueues the job again later.
    pub async fn dispatch<T>(&self, committed: Committed<T>) -> T {
        let mut follow_ups = committed.follow_ups;
        for event in committed.events {
            metrics::get()
                .events
                .with_label_values(&[event.kind.as_str()])
                .inc();
            if governance_core::webhooks::deliverable(&event.kind) {
                follow_ups.push(FollowUp::FanOutWebhooks {
                    tenant_id: event.tenant_id.clone(),
                    event_id: event.id,
                });
            }
            self.bus.publish(event);
        }
        for notice in committed.steps {
            self.bus.notify_step(notice);
        }
        for follow_up in follow_ups {
            if let Err(err) = self.jobs.enqueue(&follow_up).await {
                tracing::warn!(error = %err, ?follow_up, "cannot enqueue; the sweeper will retry");
            }
        }
        committed.value
    }
}
