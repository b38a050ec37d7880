//! Prometheus metrics, served as text on `/metrics`.

use std::time::Instant;

use crate::state::AppState;
use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The service's metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// GraphQL errors by `extensions.code`.
    pub graphql_errors: IntCounterVec,
    /// WebSocket connections open now.
    pub ws_connections: IntGauge,
    /// Subscriptions (operations) active now over all sockets.
    pub subscriptions: IntGauge,
    /// Jobs by queue and state (`pending`, `running`, `dead`), read at each scrape.
    jobs_queued: IntGaugeVec,
    /// Seconds the oldest due job of each queue has waited, read at each scrape.
    job_oldest_due: GaugeVec,
    /// 1 when the last scrape could read the queues, 0 when it could not.
    jobs_readable: Gauge,
    /// SQL statements executed by the service (through the ORM, and the requests it sends
    /// SQLite directly; the job queue's own statements are not counted), by `outcome`: `ok`,
    /// `failed`, and for those direct requests `refused` (a guard or unique index found the
    /// state the write was planned from changed, and it is planned again) and `busy` (another
    /// connection held SQLite's write lock, and it is tried again).
    pub db_statements: IntCounterVec,
    /// `recordStep` on the server: received → decided → committed → answered.
    pub step_seconds: Histogram,
    /// Steps answered, by decision (`CONTINUE`, `WARN`, `STOP`, `REPLAYED`, `FAIL_CLOSED`) or
    /// `REFUSED` (an error answer).
    pub steps: IntCounterVec,
    /// Steps per group commit (SQLite); its `_count` is the number of commits.
    pub step_batch_size: Histogram,
    /// SQLite: how long step batches waited for the write lock another connection held (the
    /// job queue's own writes, or another process); its `_count` is how many batches waited.
    pub step_batch_lock_wait: Histogram,
    /// SQLite: step batches whose guard found a run or key changed since their decisions
    /// (another process stepped or ended the run, or the key was revoked): read afresh and
    /// written the slower way.
    pub step_batch_guard_refusals: IntCounter,
    /// SQLite: the WAL checkpointer's work by `kind`: `copy` (a PASSIVE checkpoint, no lock
    /// held), `reset` (the time a reset held this process's writer lock, which step batches wait
    /// for), `reset_gave_up` (the same, for a reset that gave up on readers of old frames).
    pub wal_checkpoint_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("governance".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
            &["route"],
        )?;
        let graphql_errors = IntCounterVec::new(
            Opts::new("graphql_errors_total", "GraphQL errors by extensions.code"),
            &["code"],
        )?;
        let ws_connections = IntGauge::new("ws_connections", "open WebSocket connections")?;
        let subscriptions = IntGauge::new(
            "subscriptions",
            "subscriptions active over all WebSocket connections",
        )?;
        let jobs_queued = IntGaugeVec::new(
            Opts::new("jobs", "jobs in the queues now, by queue and state"),
            &["queue", "state"],
        )?;
        let job_oldest_due = GaugeVec::new(
            Opts::new(
                "job_oldest_due_seconds",
                "how long the oldest due job of each queue has waited",
            ),
            &["queue"],
        )?;
        let jobs_readable = Gauge::new(
            "jobs_readable",
            "1 when the last scrape could read the job queues, else 0",
        )?;
        let db_statements = IntCounterVec::new(
            Opts::new(
                "db_statements_total",
                "SQL statements executed by the service, by outcome",
            ),
            &["outcome"],
        )?;
        let step_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "step_decision_seconds",
                "recordStep from request to committed answer, on the server",
            )
            .buckets(vec![
                0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05,
                0.1, 0.25, 1.0,
            ]),
        )?;
        let steps = IntCounterVec::new(
            Opts::new("steps_total", "steps answered, by decision"),
            &["decision"],
        )?;
        let step_batch_size = Histogram::with_opts(
            HistogramOpts::new("step_batch_size", "steps written per group commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        registry.register(Box::new(step_seconds.clone()))?;
        registry.register(Box::new(steps.clone()))?;
        let step_batch_lock_wait = Histogram::with_opts(
            HistogramOpts::new(
                "step_batch_lock_wait_seconds",
                "time a step batch waited for SQLite's write lock held by another connection",
            )
            .buckets(vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]),
        )?;
        registry.register(Box::new(step_batch_size.clone()))?;
        let step_batch_guard_refusals = IntCounter::new(
            "step_batch_guard_refusals_total",
            "step batches refused by their guard because a run or key changed since their decisions, then read afresh",
        )?;
        let wal_checkpoint_seconds = HistogramVec::new(
            HistogramOpts::new(
                "wal_checkpoint_seconds",
                "SQLite WAL checkpoints by kind: copy (no lock held), reset and reset_gave_up (the writer lock held that long)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            &["kind"],
        )?;
        registry.register(Box::new(wal_checkpoint_seconds.clone()))?;
        registry.register(Box::new(step_batch_lock_wait.clone()))?;
        registry.register(Box::new(step_batch_guard_refusals.clone()))?;
        registry.register(Box::new(db_statements.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(graphql_errors.clone()))?;
        registry.register(Box::new(ws_connections.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        registry.register(Box::new(jobs_queued.clone()))?;
        registry.register(Box::new(job_oldest_due.clone()))?;
        registry.register(Box::new(jobs_readable.clone()))?;
        governance_workers::metrics::get().register(&registry)?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            graphql_errors,
            ws_connections,
            subscriptions,
            jobs_queued,
            job_oldest_due,
            jobs_readable,
            db_statements,
            step_seconds,
            steps,
            step_batch_size,
            step_batch_lock_wait,
            step_batch_guard_refusals,
            wal_checkpoint_seconds,
        })
    }

    /// Read the queues' depths into their gauges (on each scrape: they live in the storage).
    pub async fn read_queues(&self, jobs: &governance_workers::JobQueue) {
        match governance_workers::queue_stats::stats(jobs).await {
            Ok(all) => {
                for queue in all {
                    for (state, n) in [
                        ("pending", queue.pending),
                        ("running", queue.running),
                        ("dead", queue.dead),
                    ] {
                        self.jobs_queued
                            .with_label_values(&[queue.queue, state])
                            .set(i64::try_from(n).unwrap_or(i64::MAX));
                    }
                    self.job_oldest_due
                        .with_label_values(&[queue.queue])
                        .set(queue.oldest_due_secs);
                }
                self.jobs_readable.set(1.0);
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the job queues for /metrics");
                self.jobs_readable.set(0.0);
            }
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(err) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %err, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Middleware: count and time every request by its route pattern (not its raw path, which
/// would make one series per id).
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.clone());
    let started = Instant::now();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        let status = response.status().as_u16().to_string();
        metrics
            .http_requests
            .with_label_values(&[route.as_str(), status.as_str()])
            .inc();
        metrics
            .http_duration
            .with_label_values(&[route.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(response)
}
