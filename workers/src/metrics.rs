//! What the background work reports to `/metrics`: jobs by queue and outcome, how long they
//! waited and ran, export render times, webhook delivery outcomes, and the events committed
//! changes published (incidents opened, runs stopped…). Labels are fixed, small sets.
//!
//! One set per process, registered into the API's registry by the process that serves
//! `/metrics` (a `governance worker` process keeps its own and serves none).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The process's worker metrics.
pub struct WorkerMetrics {
    /// Job attempts ended, by queue and `outcome` (`done`, `retry`, `failed`).
    pub jobs: IntCounterVec,
    /// How long an attempt ran, by queue.
    pub job_seconds: HistogramVec,
    /// From enqueue to the start of the first attempt, by queue.
    pub job_wait_seconds: HistogramVec,
    /// Rendering one export, by format (`JSON`, `PDF`).
    pub export_render_seconds: HistogramVec,
    /// Webhook delivery attempts, by `outcome` (`delivered`, `failed`, `refused`).
    pub webhook_deliveries: IntCounterVec,
    /// Events published by committed changes, by kind.
    pub events: IntCounterVec,
}

const SECONDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

fn build() -> prometheus::Result<WorkerMetrics> {
    Ok(WorkerMetrics {
        jobs: IntCounterVec::new(
            Opts::new("jobs_total", "job attempts ended, by queue and outcome"),
            &["queue", "outcome"],
        )?,
        job_seconds: HistogramVec::new(
            HistogramOpts::new("job_duration_seconds", "job attempt run time, by queue")
                .buckets(SECONDS.to_vec()),
            &["queue"],
        )?,
        job_wait_seconds: HistogramVec::new(
            HistogramOpts::new(
                "job_wait_seconds",
                "from enqueue to the start of a job's first attempt, by queue",
            )
            .buckets(SECONDS.to_vec()),
            &["queue"],
        )?,
        export_render_seconds: HistogramVec::new(
            HistogramOpts::new("export_render_seconds", "rendering one export, by format")
                .buckets(SECONDS.to_vec()),
            &["format"],
        )?,
        webhook_deliveries: IntCounterVec::new(
            Opts::new(
                "webhook_deliveries_total",
                "webhook delivery attempts, by outcome",
            ),
            &["outcome"],
        )?,
        events: IntCounterVec::new(
            Opts::new(
                "events_total",
                "events published by committed changes, by kind",
            ),
            &["kind"],
        )?,
    })
}

static METRICS: LazyLock<WorkerMetrics> =
    LazyLock::new(|| build().expect("worker metric definitions are valid"));

/// The process's worker metrics.
pub fn get() -> &'static WorkerMetrics {
    &METRICS
}

impl WorkerMetrics {
    /// Add every worker metric to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.jobs.clone()))?;
        registry.register(Box::new(self.job_seconds.clone()))?;
        registry.register(Box::new(self.job_wait_seconds.clone()))?;
        registry.register(Box::new(self.export_render_seconds.clone()))?;
        registry.register(Box::new(self.webhook_deliveries.clone()))?;
        registry.register(Box::new(self.events.clone()))?;
        Ok(())
    }

    /// Record one ended attempt of a `queue` job.
    pub fn job_ended(&self, queue: &str, outcome: &str, took: Duration) {
        self.jobs.with_label_values(&[queue, outcome]).inc();
        self.job_seconds
            .with_label_values(&[queue])
            .observe(took.as_secs_f64());
    }
}
