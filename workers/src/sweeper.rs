//! The run sweeper: periodic repair work that needs no trigger. It enqueues the evaluation job of
//! any run that ended without one (the process died between commit and enqueue), so no ended run
//! stays unevaluated.

use std::time::Duration;

use governance_core::{outcome::FollowUp, runs, store::Store};
use tokio_util::sync::CancellationToken;

use crate::queue::JobQueue;

/// How often the sweeper looks.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// A run that ended less than this long ago is left to its own job.
pub const GRACE: Duration = Duration::from_secs(30);
/// At most this many runs per sweep, oldest first.
const BATCH: u64 = 200;

/// One sweep: enqueue evaluation jobs for ended, unevaluated runs. Returns how many it enqueued.
pub async fn sweep_once(store: &Store, jobs: &JobQueue) -> anyhow::Result<usize> {
    // Leave the normal path time to do its work before repairing it.
    let cutoff = governance_core::time::now() - chrono::Duration::from_std(GRACE)?;
    let pending = runs::ended_without_evaluation(store.db(), cutoff, BATCH).await?;
    let mut enqueued = 0;
    for (tenant_id, run_id) in pending {
        jobs.enqueue(&FollowUp::RecordEvaluation { tenant_id, run_id })
            .await?;
        enqueued += 1;
    }
    Ok(enqueued)
}

/// Sweep every [`INTERVAL`] until `shutdown`.
pub async fn run(store: Store, jobs: JobQueue, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; skip it so a fresh start does not race the normal path.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match sweep_once(&store, &jobs).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(enqueued = n, "sweeper enqueued evaluation jobs"),
            Err(err) => tracing::warn!(error = %err, "sweep failed; retrying next interval"),
        }
    }
}
