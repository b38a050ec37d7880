//! Job payloads and their handlers. A handler is a plain async function over its payload and
//! dependencies; tests call it directly, apalis only adapts it.

use governance_core::{
    CoreError,
    audits::{self, Performed},
    evaluation,
    store::Store,
};
use serde::{Deserialize, Serialize};

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
