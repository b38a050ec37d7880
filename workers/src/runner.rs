//! Running the workers: one apalis worker per job type on the configured storage, plus the
//! sweeper, all stopped by one cancellation token. In-flight jobs finish before `run` returns.

use std::time::Duration;

use apalis::{
    layers::retry::{
        HasherRng,
        backoff::{ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff},
    },
    prelude::*,
};
use governance_core::store::Store;
use tokio_util::sync::CancellationToken;

use crate::{
    Dispatcher, WorkerDeps,
    jobs::{
        self, BuildExport, DeliverWebhook, FanOutWebhooks, JobError, RecordEvaluation, RunAudit,
        RunSimulation,
    },
    queue::{CONCURRENCY, EVALUATION_CONCURRENCY, JobQueue, Storage},
    sweeper,
    wakeup::{POLL_INTERVAL, SQLITE_BACKSTOP, Wakeup, watch_sqlite_queues},
    webhook_client::WebhookClient,
};

/// Attempts after the first, for transient failures.
const RETRIES: usize = 5;
/// The longest pause between restarts of failed workers.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight jobs.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Transient failures are retried in-process with exponential backoff (200 ms doubling to 10 s,
/// with jitter). Without it apalis re-runs a failed job at once, up to its `max_attempts`.
fn backoff() -> anyhow::Result<ExponentialBackoff> {
    Ok(ExponentialBackoffMaker::new(
        Duration::from_millis(200),
        Duration::from_secs(10),
        0.2,
        HasherRng::default(),
    )
    .map_err(|e| anyhow::anyhow!("invalid backoff: {e}"))?
    .make_backoff())
}

/// Map a handler's error to apalis: permanent failures are not retried.
fn to_apalis(err: JobError) -> BoxDynError {
    // Logged here, once per failed attempt: apalis keeps retries quiet, and a job that keeps
    // failing (an export stuck RUNNING, say) must leave a trace an operator can find.
    match err {
        JobError::Permanent(message) => {
            tracing::warn!(error = %message, "job failed for good");
            AbortError::new(message).into()
        }
        JobError::Transient(message) => {
            tracing::warn!(error = %message, "job attempt failed; it will be retried");
            message.into()
        }
    }
}

/// Run one attempt of a `queue` job and record it: its wait (on the first attempt, from the
/// enqueue time the job's ULID carries), how long it ran, and how it ended.
async fn observed(
    queue: &'static str,
    id: &TaskId,
    attempt: &Attempt,
    work: impl Future<Output = Result<(), BoxDynError>>,
) -> Result<(), BoxDynError> {
    let metrics = crate::metrics::get();
    if attempt.current() <= 1
        && let Ok(ulid) = ulid::Ulid::from_string(&id.to_string())
        && let Ok(waited) = std::time::SystemTime::now().duration_since(ulid.datetime())
    {
        metrics
            .job_wait_seconds
            .with_label_values(&[queue])
            .observe(waited.as_secs_f64());
    }
    let started = std::time::Instant::now();
    let result = work.await;
    let outcome = match &result {
        Ok(()) => "done",
        Err(err) if err.downcast_ref::<AbortError>().is_some() => "failed",
        Err(_) => "retry",
    };
    metrics.job_ended(queue, outcome, started.elapsed());
    result
}

async fn handle_evaluation(
    job: RecordEvaluation,
    store: Data<Store>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    observed("evaluation", &id, &attempt, async {
        jobs::record_evaluation(&job, &store)
            .await
            .map(|_| ())
            .map_err(to_apalis)
    })
    .await
}

async fn handle_audit(
    job: RunAudit,
    store: Data<Store>,
    dispatcher: Data<Dispatcher>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    observed("audit", &id, &attempt, async {
        let committed = jobs::run_audit(&job, &store).await.map_err(to_apalis)?;
        dispatcher.dispatch(committed).await;
        Ok(())
    })
    .await
}

async fn handle_simulation(
    job: RunSimulation,
    store: Data<Store>,
    dispatcher: Data<Dispatcher>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    observed("simulation", &id, &attempt, async {
        jobs::run_simulation(&job, &store, &dispatcher)
            .await
            .map(|_| ())
            .map_err(to_apalis)
    })
    .await
}

/// What the export handler needs besides the store.
#[derive(Clone)]
struct ExportContext {
    dispatcher: Dispatcher,
    renderer: std::sync::Arc<crate::render::Renderer>,
    /// Bundles are anchored in the transparency log and signed.
    log: crate::sequencer::LogDeps,
}

async fn handle_export(
    job: BuildExport,
    store: Data<Store>,
    context: Data<ExportContext>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    observed("export", &id, &attempt, async {
        jobs::build_export(
            &job,
            &store,
            &context.dispatcher,
            &context.renderer,
            &context.log,
        )
        .await
        .map(|_| ())
        .map_err(to_apalis)
    })
    .await
}

async fn handle_fan_out(
    job: FanOutWebhooks,
    store: Data<Store>,
    jobs: Data<JobQueue>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    observed("webhook-fan-out", &id, &attempt, async {
        let deliveries = jobs::fan_out_webhooks(&job, &store)
            .await
            .map_err(to_apalis)?;
        for delivery in deliveries {
            // A failed enqueue fails the fan-out, which is retried; deliveries are idempotent.
            jobs.enqueue(&delivery)
                .await
                .map_err(|e| -> BoxDynError { e.into() })?;
        }
        Ok(())
    })
    .await
}

async fn handle_delivery(
    job: DeliverWebhook,
    store: Data<Store>,
    client: Data<WebhookClient>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    observed("webhook-delivery", &id, &attempt, async {
        jobs::deliver_webhook(&job, &store, &client)
            .await
            .map(|_| ())
            .map_err(to_apalis)
    })
    .await
}

/// A worker name unique to this process and this start (apalis refuses a name reused within
/// its heartbeat interval, and tests run several servers in one process).
/// The name of `job`'s worker in the monitor of `generation`: unique across processes and
/// restarts, and telling which jobs a stopped monitor's workers held
/// ([`crate::queue::JobQueue::release_jobs_of`]).
fn worker_name(job: &str, generation: &str) -> String {
    format!("governance-{job}-{}-{generation}", std::process::id())
}

/// Register one worker for `$queue` on `$monitor`: polled (SQLite, Redis; woken at once by
/// this process's pushes, and on SQLite by [`watch_sqlite_queues`]) or notified (PostgreSQL),
/// with retries and backoff, `$concurrency` jobs at once, and the handler's data.
macro_rules! register {
    ($monitor:expr, $generation:expr, $queue:expr, $job:literal, $concurrency:expr, $backoff:expr, $handler:expr, [$($data:expr),*]) => {{
        let name = worker_name($job, $generation);
        let backoff = $backoff.clone();
        let pushed = $queue.pushed.clone();
        match $queue.storage.clone() {
            Storage::Sqlite(storage) => $monitor.register(move |run| {
                WorkerBuilder::new(format!("{name}-{run}"))
                    .backend(storage.clone().poll_with_strategy(Wakeup::new(pushed.clone(), SQLITE_BACKSTOP)))
                    .concurrency($concurrency)
                    .retry(RetryPolicy::retries(RETRIES).with_backoff(backoff.clone()))
                    $(.data($data.clone()))*
                    .build($handler)
            }),
            Storage::Postgres(storage) => $monitor.register(move |run| {
                WorkerBuilder::new(format!("{name}-{run}"))
                    .backend(storage.clone().with_pubsub())
                    .concurrency($concurrency)
                    .retry(RetryPolicy::retries(RETRIES).with_backoff(backoff.clone()))
                    $(.data($data.clone()))*
                    .build($handler)
            }),
            Storage::Redis(storage) => $monitor.register(move |run| {
                WorkerBuilder::new(format!("{name}-{run}"))
                    .backend(storage.clone().poll_with_strategy(Wakeup::new(pushed.clone(), POLL_INTERVAL)))
                    .concurrency($concurrency)
                    .retry(RetryPolicy::retries(RETRIES).with_backoff(backoff.clone()))
                    $(.data($data.clone()))*
                    .build($handler)
            }),
        }
    }};
}

/// Build the monitor with one worker per job type on the configured storage, its workers named
/// for `generation`.
fn monitor(deps: &WorkerDeps, generation: &str) -> anyhow::Result<Monitor> {
    let backoff = backoff()?;
    let monitor = Monitor::new().shutdown_timeout(SHUTDOWN_TIMEOUT);
    let monitor = {
        let store = deps.store.clone();
        register!(
            monitor,
            generation,
            deps.jobs.evaluation,
            "evaluation",
            EVALUATION_CONCURRENCY,
            backoff,
            handle_evaluation,
            [store]
        )
    };
    let monitor = {
        let store = deps.store.clone();
        let context = ExportContext {
            dispatcher: Dispatcher::new(deps.jobs.clone(), deps.bus.clone()),
            renderer: deps.renderer.clone(),
            log: deps.log.clone(),
        };
        register!(
            monitor,
            generation,
            deps.jobs.export,
            "export",
            CONCURRENCY,
            backoff,
            handle_export,
            [store, context]
        )
    };
    let monitor = {
        let store = deps.store.clone();
        let jobs = deps.jobs.clone();
        register!(
            monitor,
            generation,
            deps.jobs.fan_out,
            "webhook-fan-out",
            CONCURRENCY,
            backoff,
            handle_fan_out,
            [store, jobs]
        )
    };
    let monitor = {
        let store = deps.store.clone();
        let client = WebhookClient::new(deps.egress.clone())?;
        register!(
            monitor,
            generation,
            deps.jobs.delivery,
            "webhook-delivery",
            CONCURRENCY,
            backoff,
            handle_delivery,
            [store, client]
        )
    };
    let monitor = {
        let store = deps.store.clone();
        let dispatcher = Dispatcher::new(deps.jobs.clone(), deps.bus.clone());
        register!(
            monitor,
            generation,
            deps.jobs.audit,
            "audit",
            CONCURRENCY,
            backoff,
            handle_audit,
            [store, dispatcher]
        )
    };
    let monitor = {
        let store = deps.store.clone();
        let dispatcher = Dispatcher::new(deps.jobs.clone(), deps.bus.clone());
        register!(
            monitor,
            generation,
            deps.jobs.simulation,
            "simulation",
            CONCURRENCY,
            backoff,
            handle_simulation,
            [store, dispatcher]
        )
    };
    Ok(monitor)
}

/// Run every worker until `shutdown` is cancelled. A worker that fails (its storage became
/// unreachable, say) is started again after a growing pause, so an outage neither stops the
/// workers for good nor makes them spin.
pub async fn run(deps: WorkerDeps, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Our own token: the workers ending must not stop whoever shares `shutdown` (the HTTP
    // server, when embedded).
    let shutdown = shutdown.child_token();
    let sweeper = tokio::spawn(sweeper::run(deps.clone(), shutdown.clone()));
    let watcher = deps
        .jobs
        .is_sqlite()
        .then(|| tokio::spawn(watch_sqlite_queues(deps.jobs.clone(), shutdown.clone())));
    const FIRST_PAUSE: Duration = Duration::from_millis(500);
    let mut pause = FIRST_PAUSE;
    loop {
        // A Redis backlog past apalis's promotion limit must be cut down before it fetches.
        match deps.jobs.promote_due_jobs().await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(moved, "promoted due Redis jobs before starting workers"),
            Err(err) => tracing::warn!(error = %err, "promoting due Redis jobs failed"),
        }
        let stop = shutdown.clone();
        let generation = ulid::Ulid::new().to_string().to_lowercase();
        let started = std::time::Instant::now();
        // One worker failing (its storage did not answer in time, say) stops them all, to be
        // started again together below: apalis would otherwise leave it dead while the others
        // keep the monitor running, and its queue would never be served again.
        let failed = CancellationToken::new();
        let on_failure = failed.clone();
        let result = monitor(&deps, &generation)?
            .should_restart(move |worker, error| {
                tracing::warn!(
                    worker = worker.name(),
                    ?error,
                    "a worker failed; restarting the workers"
                );
                on_failure.cancel();
                false
            })
            .run_with_signal(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = failed.cancelled() => {}
                }
                Ok(())
            })
            .await;
        if shutdown.is_cancelled() {
            break;
        }
        // The stopped workers' jobs go back to the queue now, not when apalis notices them.
        // (The storage may still be busy: a few tries, a second apart.)
        for attempt in 1..=3 {
            match deps.jobs.release_jobs_of(&generation).await {
                Ok(0) => break,
                Ok(released) => {
                    tracing::info!(released, "released the stopped workers' jobs");
                    break;
                }
                Err(err) if attempt == 3 => {
                    tracing::warn!(error = %err, "could not release the stopped workers' jobs")
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        // Workers that ran a good while before stopping start again promptly.
        if started.elapsed() > MAX_RESTART_PAUSE * 2 {
            pause = FIRST_PAUSE;
        }
        match result {
            Ok(()) => tracing::warn!("workers stopped unexpectedly; restarting"),
            Err(err) => {
                tracing::error!(error = %err, ?pause, "workers failed; restarting after a pause")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_RESTART_PAUSE);
    }
    let _ = sweeper.await;
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    Ok(())
}
