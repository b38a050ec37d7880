//! Job payloads and their handlers. A handler is a plain async function over its payload and
//! dependencies; tests call it directly, apalis only adapts it.

use governance_core::{
    CoreError,
    audits::{self, Performed},
    evaluation, exports, simulation,
    store::Store,
    transparency,
    webhooks::{self, DeliveryFailure},
};
use serde::{Deserialize, Serialize};

use crate::webhook_client::WebhookClient;

/// Write a run's one evaluation record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordEvaluation {
    pub tenant_id: String,
    pub run_id: String,
}

/// Run an audit's checks and store its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAudit {
    pub tenant_id: String,
    pub audit_id: String,
}

/// Replay a simulation's runs against its proposal and store the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSimulation {
    pub tenant_id: String,
    pub simulation_id: String,
}

/// Find the endpoints that want an outbox event; enqueue a delivery to each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutWebhooks {
    pub tenant_id: String,
    pub event_id: i64,
}

/// Deliver an outbox event to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverWebhook {
    pub tenant_id: String,
    pub webhook_id: String,
    pub event_id: i64,
}

/// Build, render and store an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildExport {
    pub tenant_id: String,
    pub export_id: String,
}

/// The identity of what a job works on: its idempotency key in its queue, so the same work is
/// never queued twice (ids are unique across tenants).
pub trait JobKey {
    fn key(&self) -> String;
}

impl JobKey for RecordEvaluation {
    fn key(&self) -> String {
        self.run_id.clone()
    }
}

impl JobKey for RunAudit {
    fn key(&self) -> String {
        self.audit_id.clone()
    }
}

impl JobKey for RunSimulation {
    fn key(&self) -> String {
        self.simulation_id.clone()
    }
}

impl JobKey for FanOutWebhooks {
    fn key(&self) -> String {
        self.event_id.to_string()
    }
}

impl JobKey for DeliverWebhook {
    fn key(&self) -> String {
        format!("{}/{}", self.webhook_id, self.event_id)
    }
}

impl JobKey for BuildExport {
    fn key(&self) -> String {
        self.export_id.clone()
    }
}

/// Runs of an export job after which a transient failure becomes the export's final error.
pub const EXPORT_ATTEMPTS: i32 = 5;

/// What a handler did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It wrote what the job asked for.
    Done,
    /// It was already done (a job run twice writes once).
    AlreadyDone,
}

/// Whether a failure is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job can never succeed (its subject is gone, its input is wrong).
    #[error("permanent: {0}")]
    Permanent(String),
    /// It may succeed later (the database is busy or unreachable).
    #[error("transient: {0}")]
    Transient(String),
}

impl From<CoreError> for JobError {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::Internal(inner) => JobError::Transient(format!("{inner:#}")),
            other => JobError::Permanent(other.to_string()),
        }
    }
}

/// Handler of [`RecordEvaluation`].
pub async fn record_evaluation(job: &RecordEvaluation, store: &Store) -> Result<Outcome, JobError> {
    let (record, created) = evaluation::record(store, &job.tenant_id, &job.run_id).await?;
    tracing::info!(
        run_id = %job.run_id,
        outcome = %record.outcome,
        created,
        "evaluation record"
    );
    Ok(if created {
        Outcome::Done
    } else {
        Outcome::AlreadyDone
    })
}

/// Handler of [`RunAudit`]. Returns what was committed, so the caller can publish its event.
pub async fn run_audit(
    job: &RunAudit,
    store: &Store,
) -> Result<governance_core::outcome::Committed<Performed>, JobError> {
    let committed = audits::perform(store, &job.tenant_id, &job.audit_id).await?;
    match &committed.value {
        Performed::Completed(audit) => tracing::info!(
            audit_id = %audit.id,
            job_id = %audit.job_id,
            verdict = ?audit.verdict,
            "audit completed"
        ),
        Performed::Failed(audit) => tracing::warn!(
            audit_id = %audit.id,
            error = ?audit.error,
            "audit could not run"
        ),
        Performed::AlreadyDone(audit) => {
            tracing::info!(audit_id = %audit.id, "audit already done")
        }
    }
    Ok(committed)
}

/// Handler of [`RunSimulation`]: RUNNING, progress, then COMPLETED (or FAILED), each change
/// published at once (subscribers of `simulationUpdates` follow along).
pub async fn run_simulation(
    job: &RunSimulation,
    store: &Store,
    dispatcher: &crate::Dispatcher,
) -> Result<Outcome, JobError> {
    let finished = simulation::lifecycle::perform(
        store,
        &job.tenant_id,
        &job.simulation_id,
        |committed| async move {
            dispatcher.dispatch(committed).await;
        },
    )
    .await?;
    match finished {
        Some(sim) => {
            tracing::info!(simulation_id = %sim.id, status = %sim.status, result_hash = ?sim.result_hash, "simulation finished");
            Ok(Outcome::Done)
        }
        None => Ok(Outcome::AlreadyDone),
    }
}

/// Handler of [`FanOutWebhooks`]: the deliveries to enqueue.
pub async fn fan_out_webhooks(
    job: &FanOutWebhooks,
    store: &Store,
) -> Result<Vec<governance_core::outcome::FollowUp>, JobError> {
    let event = webhooks::event(store.db(), &job.tenant_id, job.event_id).await?;
    let hooks = webhooks::matching(store.db(), &event).await?;
    Ok(hooks
        .into_iter()
        .map(|hook| governance_core::outcome::FollowUp::DeliverWebhook {
            tenant_id: job.tenant_id.clone(),
            webhook_id: hook.id,
            event_id: event.id,
        })
        .collect())
}

/// Handler of [`DeliverWebhook`]: one signed attempt, recorded. A failed attempt is a transient
/// error, so the job is retried with backoff, except a target the egress policy refuses: nothing
/// is sent, and the recorded refusal is permanent. A message already delivered to the endpoint,
/// or an endpoint since deleted, is done.
pub async fn deliver_webhook(
    job: &DeliverWebhook,
    store: &Store,
    client: &WebhookClient,
) -> Result<Outcome, JobError> {
    let hook = match webhooks::get(store.db(), &job.tenant_id, &job.webhook_id).await {
        Ok(hook) => hook,
        Err(CoreError::NotFound { .. }) => return Ok(Outcome::AlreadyDone),
        Err(err) => return Err(err.into()),
    };
    let event = webhooks::event(store.db(), &job.tenant_id, job.event_id).await?;
    let (attempts, delivered) = webhooks::attempts(store.db(), &hook.id, event.id).await?;
    if delivered {
        return Ok(Outcome::AlreadyDone);
    }
    let body = webhooks::body(&event).to_string();
    let message_id = webhooks::message_id(&event);
    let timestamp = governance_core::time::now().timestamp();
    let secret = webhooks::signing_secret(store, &hook)?;
    let signature = webhooks::sign(&secret, &message_id, timestamp, &body)?;
    let headers = [
        ("content-type", "application/json".to_string()),
        ("webhook-id", message_id),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    let (status_code, failure) = match client.post(&hook.url, &headers, body).await {
        Ok(code) if (200..300).contains(&code) => (Some(code), None),
        Ok(code) => (Some(code), Some(DeliveryFailure::Status(code))),
        Err(failure) => (None, Some(failure)),
    };
    let attempt = webhooks::Attempt {
        attempt: i32::try_from(attempts + 1).unwrap_or(i32::MAX),
        succeeded: failure.is_none(),
        status_code: status_code.map(i32::from),
        error: failure.map(|f| f.message()),
        at: governance_core::time::now(),
    };
    webhooks::record_attempt(store, &hook, event.id, attempt).await?;
    let outcome = match &failure {
        None => "delivered",
        Some(failure) if failure.is_permanent() => "refused",
        Some(_) => "failed",
    };
    crate::metrics::get()
        .webhook_deliveries
        .with_label_values(&[outcome])
        .inc();
    match failure {
        None => Ok(Outcome::Done),
        Some(failure) if failure.is_permanent() => Err(JobError::Permanent(failure.message())),
        Some(failure) => Err(JobError::Transient(failure.message())),
    }
}

/// Handler of [`BuildExport`]: RUNNING, then READY with the rendered bytes, or FAILED with the
/// error. Each change is committed with its outbox event and published at once (subscribers
/// of `exportUpdates` follow along). A transient failure is retried until the export has had
/// [`EXPORT_ATTEMPTS`] runs; then it is FAILED with that error.
///
/// The bundle is anchored first: the run's head as loaded is appended to the tenant's
/// transparency log unless a leaf holds it already (a new checkpoint is published and
/// witnessed like the sequencer's), and the bundle carries its inclusion proof, then is signed.
pub async fn build_export(
    job: &BuildExport,
    store: &Store,
    dispatcher: &crate::Dispatcher,
    renderer: &std::sync::Arc<crate::render::Renderer>,
    log: &crate::sequencer::LogDeps,
) -> Result<Outcome, JobError> {
    let Some(running) = exports::mark_running(store, &job.tenant_id, &job.export_id, 10).await?
    else {
        return Ok(Outcome::AlreadyDone);
    };
    let export = dispatcher.dispatch(running).await;
    let built = async {
        let anchors = governance_core::verify::Anchors {
            keys: log.keys.verifiers(),
            witness_file: log.witness_file.clone(),
        };
        // The bundle shows the run as read; that head is anchored (unless the service's own
        // check finds the record rewritten: a forged head is never signed). When the log
        // already holds a later head (the run moved on between the read and the anchor), read
        // again, a few times, so what is shown is what is proven.
        let mut input = exports::load(store.db(), &export, &anchors).await?;
        for _ in 0..3 {
            if !input.verification.intact {
                break;
            }
            if let Some(checkpoint) =
                transparency::anchor(store, &log.keys, &log.settings, &input.run).await?
            {
                crate::sequencer::publish(log, dispatcher, checkpoint).await;
            }
            input.anchor =
                transparency::head_proof(store.db(), &input.run)
                    .await?
                    .map(|inclusion| exports::proof::Anchor {
                        key: log
                            .keys
                            .verifiers()
                            .into_iter()
                            .find(|k| k.key_id() == inclusion.checkpoint.key_id),
                        inclusion,
                    });
            if input.anchor.is_some() {
                break;
            }
            input = exports::load(store.db(), &export, &anchors).await?;
        }
        let mut bundle = exports::bundle(&input)?;
        exports::proof::seal(&mut bundle, &log.keys.active)?;
        if let Some(progress) =
            exports::mark_running(store, &job.tenant_id, &job.export_id, 60).await?
        {
            dispatcher.dispatch(progress).await;
        }
        let format = input.export.format;
        let rendering = std::time::Instant::now();
        let bytes = match format {
            governance_entities::enums::ExportFormat::Json => exports::render_json(&bundle),
            governance_entities::enums::ExportFormat::Pdf => {
                let renderer = renderer.clone();
                let template = exports::template_of(input.export.kind);
                let today = input.exported_at.date_naive();
                tokio::task::spawn_blocking(move || renderer.render(template, &bundle, today))
                    .await
                    .map_err(|e| CoreError::Internal(anyhow::anyhow!("renderer panicked: {e}")))?
                    // A template error is the export's final error, not a reason to retry.
                    .map_err(CoreError::bad_input)?
            }
        };
        crate::metrics::get()
            .export_render_seconds
            .with_label_values(&[format.as_str()])
            .observe(rendering.elapsed().as_secs_f64());
        Ok::<_, CoreError>((bytes, exports::content_type_of(format)))
    }
    .await;
    let finished = match built {
        Ok((bytes, content_type)) => {
            exports::complete(store, &job.tenant_id, &job.export_id, bytes, content_type).await?
        }
        Err(CoreError::Internal(err)) if export.attempts < EXPORT_ATTEMPTS => {
            return Err(JobError::Transient(format!("{err:#}")));
        }
        Err(err) => {
            // The tenant sees what went wrong, never internal error chains: those go to the
            // log under a reference the message names.
            let message = match &err {
                CoreError::Internal(inner) => {
                    let reference = governance_core::ids::new_id("err");
                    tracing::error!(error = ?inner, reference = %reference, export_id = %job.export_id, "export failed");
                    format!(
                        "the export could not be built; the server log has the details under reference {reference}"
                    )
                }
                other => other.to_string(),
            };
            exports::fail(store, &job.tenant_id, &job.export_id, &message).await?
        }
    };
    if let Some(finished) = finished {
        dispatcher.dispatch(finished).await;
    }
    Ok(Outcome::Done)
}
