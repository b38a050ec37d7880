//! What every request handler and resolver can reach.

use std::sync::Arc;

use governance_core::{policy::SnapshotCache, store::Store};
use governance_workers::{JobQueue, events::EventBus};
use sea_orm::DatabaseConnection;

use crate::{config::Config, metrics::Metrics, ws::tenants::TenantSockets};

/// Shared, cheaply clonable application state.
#[derive(Clone)]
pub struct AppState {
    /// The database pool (reads).
    pub db: DatabaseConnection,
    /// Writes go through the store, which serialises writers where the database needs it.
    pub store: Store,
    /// Durable job queues.
    pub jobs: JobQueue,
    /// Event fan-out to subscribers.
    pub bus: EventBus,
    /// Compiled policy snapshots by content hash.
    pub cache: SnapshotCache,
    /// Decides and writes step reports (owns the per-run ordering and the evaluation budget).
    pub recorder: governance_core::steps::Recorder,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Signs export download URLs (shared by every replica through the database).
    pub download_key: Arc<Vec<u8>>,
    /// Per-tenant quotas of the costly operations.
    pub rate_limiter: Arc<governance_core::rate_limit::RateLimiter>,
    /// Webhook endpoint rules (egress policy, per-tenant cap), parsed from the configuration.
    pub webhook_rules: Arc<governance_core::webhooks::WebhookRules>,
    /// Subscription sockets open per tenant on this replica.
    pub ws_sockets: TenantSockets,
    /// Principals of recently seen API keys, for requests that only record steps.
    pub keys: Arc<governance_core::tenancy::KeyCache>,
    /// The deployment's signing key and the retired keys it still publishes.
    pub signing: Arc<governance_core::signing::KeyRing>,
}

impl AppState {
    /// After a commit: publish its events and enqueue its follow-up jobs, then hand back the
    /// value. Both are recoverable from the database if this process dies first.
    pub async fn after_commit<T>(&self, committed: governance_core::outcome::Committed<T>) -> T {
        self.dispatcher().dispatch(committed).await
    }

    pub fn dispatcher(&self) -> governance_workers::Dispatcher {
        governance_workers::Dispatcher::new(self.jobs.clone(), self.bus.clone())
    }
}
