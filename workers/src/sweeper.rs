//! The run sweeper: periodic work that needs no trigger. It stops running runs past their
//! `DURATION_LIMIT` (silent runs included), and enqueues the evaluation job of any run that ended
//! without one (the process died between commit and enqueue), so no ended run stays unevaluated.

use std::time::Duration;

use governance_core::{
    audits, exports, outcome::FollowUp, runs, simulation, store::Store, timeouts, webhooks,
};
use tokio_util::sync::CancellationToken;

use crate::{Dispatcher, WorkerDeps, queue::JobQueue};

/// How often the sweeper looks.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Ticks between two scans for ended runs without an evaluation record.
const REPAIR_EVERY: u64 = 10;
/// A run that ended less than this long ago is left to its own job.
pub const GRACE: Duration = Duration::from_secs(30);
/// At most this many runs per sweep, oldest first.
const BATCH: u64 = 200;
/// Ticks between two retention passes over the job tables.
const RETENTION_EVERY: u64 = 60;

/// One sweep: enqueue evaluation jobs for ended, unevaluated runs, and audit jobs for audits
/// still pending. Returns how many jobs it enqueued.
pub async fn sweep_once(store: &Store, jobs: &JobQueue) -> anyhow::Result<usize> {
    // Leave the normal path time to do its work before repairing it.
    let cutoff = governance_core::time::now() - chrono::Duration::from_std(GRACE)?;
    let unevaluated = runs::ended_without_evaluation(store.db(), cutoff, BATCH)
        .await?
        .into_iter()
        .map(|(tenant_id, run_id)| FollowUp::RecordEvaluation { tenant_id, run_id });
    let unaudited = audits::pending_before(store.db(), cutoff, BATCH)
        .await?
        .into_iter()
        .map(|(tenant_id, audit_id)| FollowUp::RunAudit {
            tenant_id,
            audit_id,
        });
    let unsimulated = simulation::lifecycle::pending_before(store.db(), cutoff, BATCH)
        .await?
        .into_iter()
        .map(|(tenant_id, simulation_id)| FollowUp::RunSimulation {
            tenant_id,
            simulation_id,
        });
    let unexported = exports::pending_before(store.db(), cutoff, BATCH)
        .await?
        .into_iter()
        .map(|(tenant_id, export_id)| FollowUp::BuildExport {
            tenant_id,
            export_id,
        });
    // Webhook deliveries of the last hour whose fan-out was lost.
    let window_start = cutoff - chrono::Duration::hours(1);
    let undelivered = webhooks::undelivered(store.db(), window_start, cutoff, BATCH)
        .await?
        .into_iter()
        .map(
            |(tenant_id, webhook_id, event_id)| FollowUp::DeliverWebhook {
                tenant_id,
                webhook_id,
                event_id,
            },
        );
    let mut enqueued = 0;
    for follow_up in unevaluated
        .chain(unaudited)
        .chain(unsimulated)
        .chain(unexported)
        .chain(undelivered)
    {
        jobs.enqueue(&follow_up).await?;
        enqueued += 1;
    }
    Ok(enqueued)
}

/// Stop overdue runs and publish/enqueue what their stops committed. Returns how many stopped.
pub async fn stop_overdue(deps: &WorkerDeps) -> anyhow::Result<usize> {
    let stopped = timeouts::stop_overdue(&deps.recorder).await?;
    let count = stopped.len();
    let dispatcher = Dispatcher::new(deps.jobs.clone(), deps.bus.clone());
    for committed in stopped {
        dispatcher.dispatch(committed).await;
    }
    Ok(count)
}

/// Apply `onTimeout` to approvals nobody decided in time and publish/enqueue what each
/// committed. Returns how many expired.
pub async fn expire_approvals(deps: &WorkerDeps) -> anyhow::Result<usize> {
    let expired = governance_core::approvals::expire_due(deps.recorder.store()).await?;
    let count = expired.len();
    let dispatcher = Dispatcher::new(deps.jobs.clone(), deps.bus.clone());
    for committed in expired {
        dispatcher.dispatch(committed).await;
    }
    Ok(count)
}

/// Sweep every [`INTERVAL`] until `shutdown`.
pub async fn run(deps: WorkerDeps, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; skip it so a fresh start does not race the normal path.
    ticker.tick().await;
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match stop_overdue(&deps).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                stopped = n,
                "sweeper stopped runs past their duration limit"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "timeout sweep failed; retrying next interval")
            }
        }
        match expire_approvals(&deps).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "sweeper applied onTimeout to approvals"),
            Err(err) => {
                tracing::warn!(error = %err, "approval sweep failed; retrying next interval")
            }
        }
        if let Err(err) = crate::sequencer::sequence_once(&deps).await {
            tracing::warn!(error = %err, "the transparency log's sequencer failed; retrying next interval");
        }
        if let Err(err) = deps.jobs.promote_due_jobs().await {
            tracing::warn!(error = %err, "promoting due Redis jobs failed; retrying next interval");
        }
        // The repair scan is heavier and rarely finds anything: every REPAIR_EVERY ticks.
        ticks += 1;
        if ticks.is_multiple_of(RETENTION_EVERY) {
            match crate::retention::apply(&deps.jobs).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed finished jobs past retention"),
                Err(err) => tracing::warn!(error = %err, "job retention failed; retrying later"),
            }
        }
        if !ticks.is_multiple_of(REPAIR_EVERY) {
            continue;
        }
        match sweep_once(&deps.store, &deps.jobs).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                enqueued = n,
                "sweeper enqueued lost evaluation, audit, export and webhook jobs"
            ),
            Err(err) => tracing::warn!(error = %err, "sweep failed; retrying next interval"),
        }
    }
}
