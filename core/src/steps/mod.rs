//! Recording a step, one way down: decide it (outside any transaction or lane: read the run,
//! evaluate the step against the run's snapshot), then write the step and everything its
//! decision entails in ONE transaction — alone, or with other reports in the group-commit lane —
//! and answer only after the commit. A decision made on a run that moved on meanwhile (another
//! step of it landed first) is not written: the step is decided again on the newer state.
//!
//! - [`decision`]: the pure rules (what a report is for the run, the evaluation, the row).
//! - [`write`]: the transaction (step, stop, violations, incident, enforcements, events).
//! - [`lane`]: group commit (one transaction for the reports waiting at that moment).
//! - [`sqlite_batch`]: the lane's common case on SQLite, in one round trip to the database (or
//!   two, when a run moved on since its decision).
//! - [`synthetic`]: bulk synthetic runs for benchmarks.
//!
//! Steps of one run are serialised (PostgreSQL: the run row is locked; SQLite: one writer), so
//! concurrent reports can never let a budget be exceeded by more than the one stopping step.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{DecisionAction, StepStatus, StepType, TerminationReason},
    incident, run, trace_step, violation,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::json;

use crate::{
    error::{CoreError, CoreResult},
    ids::new_id,
    outcome::Committed,
    policy::{CompiledSnapshot, Evaluation, SnapshotCache},
    runs,
    store::Store,
    tenancy::{self, Principal},
    time::now,
};

use decision::{Decided, Report, classify, content_hash, timestamp_of};
use turns::Known;
use write::{Written, record_committed};

/// How long the policies of one snapshot may take to evaluate one step, unless configured
/// otherwise. Past it the step is answered STOP (fail-closed) and its run stopped; nothing else
/// waits for it, because evaluation happens before the write path, on a thread of its own.
pub const EVALUATION_BUDGET: Duration = Duration::from_secs(1);

/// Records steps: decides each one (snapshots compiled once, from its cache; evaluation under
/// its budget), then writes it (through its group-commit lane). Reports of one
/// run are decided one after another in this process, so they do not race each other's
/// decisions; a decision overtaken anyway (a report of the same run through another process) is
/// made again. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    store: Store,
    cache: SnapshotCache,
    budget: EvaluationBudget,
    runs: turns::RunTurns,
    /// Group commit (when made inside a Tokio runtime); it ends with the last clone.
    lane: Option<StepLane>,
}

impl Recorder {
    pub fn new(store: Store, cache: SnapshotCache, budget: Duration) -> Self {
        let batched = tokio::runtime::Handle::try_current().is_ok();
        let mut recorder = Self::unbatched(store, cache, budget);
        if batched {
            recorder.lane = Some(StepLane::start(recorder.store.clone()));
        }
        recorder
    }

    /// A recorder that writes every step in a transaction of its own (the tests compare the
    /// two paths).
    pub(crate) fn unbatched(store: Store, cache: SnapshotCache, budget: Duration) -> Self {
        Self {
            lane: None,
            store,
            cache,
            budget: EvaluationBudget::new(budget),
            runs: turns::RunTurns::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Tell `observer` the number of steps in every group commit, and every wait of a batch for
    /// SQLite's write lock held by another connection.
    pub fn observe_batches(&self, observer: BatchObserver) {
        if let Some(lane) = &self.lane {
            lane.observe(observer);
        }
    }

    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// Record a step on the service's own behalf (the sweeper's timeouts). On a failure to
    /// commit, the answer is STOP with `SYSTEM_FAILURE` (fail-closed), and the run is stopped if
    /// that can still be recorded.
    pub async fn record(
        &self,
        tenant_id: &str,
        input: RecordStep,
    ) -> CoreResult<Committed<StepOutcome>> {
        self.record_as(tenant_id, None, input).await
    }

    /// Record a step reported with an API key, as [`Recorder::record`] does; it commits only
    /// while the key is active (checked in the committing transaction), else the answer is
    /// `UNAUTHENTICATED` and nothing is written.
    pub async fn record_by_key(
        &self,
        principal: &Principal,
        input: RecordStep,
    ) -> CoreResult<Committed<StepOutcome>> {
        self.record_as(&principal.tenant_id, Some(&principal.key_id), input)
            .await
    }

    async fn record_as(
        &self,
        tenant_id: &str,
        key_id: Option<&str>,
        input: RecordStep,
    ) -> CoreResult<Committed<StepOutcome>> {
        validate(&input)?;
        let turn = self.runs.of(&input.run_id);
        let mut known = turn.lock().await;
        let answer = record(
            &self.store,
            self.lane.as_ref(),
            &self.cache,
            &self.budget,
            Reporter { tenant_id, key_id },
            input,
            &mut known,
        )
        .await;
        // What the write path answered is the run as stored; anything else is forgotten.
        match &answer {
            Ok(Committed {
                value: StepOutcome::Recorded(record),
                ..
            }) if !record.replayed => match known.as_mut() {
                Some(kept) => kept.stepped(record.run.clone(), record.step.timestamp),
                None => *known = Some(Known::new(record.run.clone())),
            },
            Ok(Committed {
                value: StepOutcome::Recorded(_),
                ..
            }) => {}
            _ => *known = None,
        }
        answer
    }
}

/// How long expression policies may take on one step, and how many evaluations of one tenant
/// may run at once.
#[derive(Clone)]
struct EvaluationBudget {
    per_step: Duration,
    running: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>>,
}

impl EvaluationBudget {
    /// Evaluations of one tenant's expression policies running at once, counting those still
    /// finishing after their budget ran out (a thread cannot be stopped): however costly a
    /// tenant's policies, they occupy at most this many threads, and other tenants keep the rest
    /// of the machine. A step waiting for its turn here waits within its budget.
    const PER_TENANT: usize = 2;
    /// Tenants remembered before the idle ones are dropped.
    const PRUNE_ABOVE: usize = 4096;

    fn new(per_step: Duration) -> Self {
        Self {
            per_step,
            running: Arc::default(),
        }
    }

    fn of(&self, tenant_id: &str) -> Arc<tokio::sync::Semaphore> {
        // A poisoned map only means a panic elsewhere mid-update; the map is still usable.
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(permits) = running.get(tenant_id) {
            return permits.clone();
        }
        if running.len() > Self::PRUNE_ABOVE {
            running.retain(|_, permits| Arc::strong_count(permits) > 1);
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(Self::PER_TENANT));
        running.insert(tenant_id.to_string(), permits.clone());
        permits
    }
}

/// Who reports a step: a tenant's API key (checked when the step commits), or the service itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reporter<'a> {
    pub tenant_id: &'a str,
    pub key_id: Option<&'a str>,
}

/// How many times a step is decided again because its run moved on before the decision could be
/// written (other steps of the same run reported at the same time).
const MAX_DECISIONS: usize = 8;

/// Largest accepted step content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

mod decision;
mod lane;
mod sqlite_batch;
mod synthetic;
#[cfg(test)]
mod tests;
mod turns;
mod write;

use lane::StepLane;
pub use lane::{BatchObserver, LaneEvent};
pub use synthetic::load_synthetic;

/// A step as an integrator reports it.
#[derive(Debug, Clone)]
pub struct RecordStep {
    pub run_id: String,
    /// 0-based; `None` means "the next one".
    pub step_index: Option<i64>,
    pub step_type: StepType,
    pub tokens: i64,
    pub cost_micros: i64,
    pub content: Option<String>,
    pub tool_name: Option<String>,
    /// Default: now.
    pub timestamp: Option<DateTime<Utc>>,
}

/// A recorded step with everything its decision produced.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub run: run::Model,
    pub step: trace_step::Model,
    pub violations: Vec<violation::Model>,
    pub incident: Option<incident::Model>,
    /// A held step's approval, as it stands (pending, or decided).
    pub approval: Option<crate::approvals::ApprovalState>,
    /// True when this answer repeats a decision recorded earlier (an idempotent retry).
    pub replayed: bool,
}

impl StepRecord {
    /// What the reporter is to do now: the recorded decision, or for a held step, HOLD until
    /// its approval is decided and then the final decision (CONTINUE or STOP).
    pub fn action(&self) -> DecisionAction {
        match (&self.step.decision, &self.approval) {
            (DecisionAction::Hold, Some(approval)) => {
                approval.final_decision().unwrap_or(DecisionAction::Hold)
            }
            (decision, _) => *decision,
        }
    }

    /// Why, in words: the step's recorded reason, and for a decided approval what was decided.
    pub fn reason(&self) -> String {
        let Some(decided) = self.approval.as_ref().and_then(|a| a.decision.as_ref()) else {
            return self.step.reason.clone();
        };
        let by = decided
            .decided_by_key
            .as_deref()
            .map(|k| format!(" by {k}"))
            .unwrap_or_default();
        let note = decided
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        format!(
            "Approval {}{by}{note} ({}). {}",
            decided.status, decided.decision, self.step.reason
        )
    }

    /// Why the run ended, when the answer is STOP because of this step.
    pub fn termination_reason(&self) -> Option<TerminationReason> {
        let stopped_here = self.action() == DecisionAction::Stop
            && self.run.stopped_at_step == Some(self.step.step_index);
        stopped_here
            .then_some(self.run.termination_reason)
            .flatten()
    }
}

/// The answer to a step report.
// Lives for one request; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// The decision was committed.
    Recorded(StepRecord),
    /// The decision could not be committed: the answer is STOP (`SYSTEM_FAILURE`), never CONTINUE.
    FailClosed {
        /// The run as it is now (stopped, if the stop itself could be recorded).
        run: Option<run::Model>,
        /// The step that was reported, as it would have been recorded (not in the trace).
        step: trace_step::Model,
        reason: String,
    },
}

fn validate(input: &RecordStep) -> CoreResult<()> {
    if input.tokens < 0 {
        return Err(CoreError::bad_field(
            "input.tokens",
            "`tokens` must be 0 or more",
        ));
    }
    if input.tokens > crate::canonical::MAX_SAFE_INTEGER {
        return Err(CoreError::bad_field(
            "input.tokens",
            "`tokens` must be at most 9007199254740991 (2^53 − 1)",
        ));
    }
    if input.cost_micros > crate::canonical::MAX_SAFE_INTEGER {
        return Err(CoreError::bad_field(
            "input.costMicros",
            "`costMicros` must be at most 9007199254740991 (2^53 − 1)",
        ));
    }
    if input.cost_micros < 0 {
        return Err(CoreError::bad_field(
            "input.costMicros",
            "`costMicros` must be 0 or more (micro-dollars: 1 USD = 1000000)",
        ));
    }
    if let Some(index) = input.step_index
        && index < 0
    {
        return Err(CoreError::bad_field(
            "input.stepIndex",
            "`stepIndex` is 0-based and must be 0 or more",
        ));
    }
    if let Some(content) = &input.content
        && content.len() > MAX_CONTENT_BYTES
    {
        return Err(CoreError::bad_field(
            "input.content",
            format!("`content` is larger than {MAX_CONTENT_BYTES} bytes"),
        ));
    }
    if let Some(tool) = &input.tool_name
        && (tool.trim().is_empty() || tool.len() > 256)
    {
        return Err(CoreError::bad_field(
            "input.toolName",
            "`toolName` must be 1 to 256 characters",
        ));
    }
    Ok(())
}

/// The run's compiled snapshot: from the cache by snapshot id (no read at all), else read once
/// and compiled once per content hash.
pub async fn compiled_snapshot<C: ConnectionTrait>(
    conn: &C,
    cache: &SnapshotCache,
    run: &run::Model,
) -> CoreResult<std::sync::Arc<CompiledSnapshot>> {
    if let Some(hit) = cache.get_by_id(&run.tenant_id, &run.policy_snapshot_id) {
        return Ok(hit);
    }
    let snap = runs::snapshot_of(conn, run).await?;
    let compiled = cache.get_or_compile(&snap.content_hash, &snap.policies_json)?;
    cache.remember_id(&run.tenant_id, &run.policy_snapshot_id, &snap.content_hash);
    Ok(compiled)
}

/// Decide and write a validated step, deciding again while its run moves on underneath.
async fn record(
    store: &Store,
    lane: Option<&StepLane>,
    cache: &SnapshotCache,
    budget: &EvaluationBudget,
    reporter: Reporter<'_>,
    input: RecordStep,
    known: &mut Option<Known>,
) -> CoreResult<Committed<StepOutcome>> {
    let tenant_id = reporter.tenant_id;
    for _ in 0..MAX_DECISIONS {
        let decided = match decide(store, cache, budget, tenant_id, &input, known).await {
            Ok(decided) => decided,
            Err(Undecided::OverBudget) => {
                let reason = format!(
                    "the policies' evaluation budget ({} ms per step) was exceeded; failing closed: STOP ({})",
                    budget.per_step.as_millis(),
                    TerminationReason::SystemFailure
                );
                return fail_closed(store, reporter, &input, reason).await;
            }
            Err(Undecided::Failed(CoreError::Internal(err))) => {
                return fail_closed_on_error(store, reporter, &input, err).await;
            }
            Err(Undecided::Failed(other)) => return Err(other),
        };
        let written = match lane {
            Some(lane) => lane.record(reporter, &input, decided).await,
            None => record_committed(store, reporter, &input, decided.as_ref()).await,
        };
        match written {
            Ok(Written::Done(committed)) => {
                return Ok(Committed {
                    value: StepOutcome::Recorded(committed.value),
                    events: committed.events,
                    follow_ups: committed.follow_ups,
                    steps: committed.steps,
                });
            }
            // Decide again on the run as stored.
            Ok(Written::Stale) => *known = None,
            Err(CoreError::Internal(err)) => {
                return fail_closed_on_error(store, reporter, &input, err).await;
            }
            Err(other) => return Err(other),
        }
    }
    Err(CoreError::Conflict(format!(
        "run `{}` changed {MAX_DECISIONS} times while this step was being decided (other steps of it are being reported at the same time); send the step again",
        input.run_id
    )))
}

/// Why a report could not be decided.
enum Undecided {
    /// Evaluating the snapshot took longer than its budget.
    OverBudget,
    Failed(CoreError),
}

impl From<CoreError> for Undecided {
    fn from(err: CoreError) -> Self {
        Undecided::Failed(err)
    }
}

/// Decide a report before the write path: read the run (and the recent step times its rate
/// limits need) and evaluate the step, outside any transaction, lock or lane. `None` when, by
/// what was read, the report is not a new step (a re-sent one, a run that ended or is not the
/// caller's, an index that is not next): the write path answers those without evaluating.
async fn decide(
    store: &Store,
    cache: &SnapshotCache,
    budget: &EvaluationBudget,
    tenant_id: &str,
    input: &RecordStep,
    known: &mut Option<Known>,
) -> Result<Option<Decided>, Undecided> {
    let kept = match known.take() {
        Some(kept) if kept.run.id == input.run_id => kept,
        _ => match runs::get(store.db(), tenant_id, &input.run_id).await {
            Ok(run) => Known::new(run),
            Err(CoreError::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(err.into()),
        },
    };
    // Another tenant's run is "not found", as the write path will say.
    if kept.run.tenant_id != tenant_id {
        *known = Some(kept);
        return Ok(None);
    }
    let kept = known.insert(kept);
    let run = &kept.run;
    let Ok(Report::New { index, timestamp }) = classify(run, input) else {
        return Ok(None);
    };
    let snapshot = compiled_snapshot(store.db(), cache, run).await?;
    let recent = match snapshot.max_rate_window_seconds() {
        Some(window) => {
            let since = timestamp - chrono::Duration::seconds(window);
            match kept.times.after(since) {
                Some(times) => times,
                None => kept
                    .times
                    .remember(since, step_times_since(store.db(), &run.id, since).await?),
            }
        }
        None => Arc::default(),
    };
    let evaluation =
        evaluate_within_budget(snapshot, run, index, input, timestamp, recent, budget).await?;
    Ok(Some(Decided {
        run: run.clone(),
        index,
        timestamp,
        evaluation,
    }))
}

/// Evaluate a step. Snapshots with EXPRESSION policies (whose cost depends on run data) are
/// evaluated on a blocking thread under `budget`; the others are a few integer
/// comparisons, a set lookup and one bounded regex scan, done in place.
async fn evaluate_within_budget(
    snapshot: Arc<CompiledSnapshot>,
    run: &run::Model,
    index: i64,
    input: &RecordStep,
    timestamp: DateTime<Utc>,
    recent: Arc<Vec<DateTime<Utc>>>,
    budget: &EvaluationBudget,
) -> Result<Evaluation, Undecided> {
    if !snapshot.has_expressions() {
        return Ok(decision::check(
            &snapshot, run, index, input, timestamp, &recent,
        ));
    }
    // The blocking thread may outlive this call (past the budget): it gets its own copies.
    let deadline = tokio::time::Instant::now() + budget.per_step;
    let permits = budget.of(&run.tenant_id);
    let permit = match tokio::time::timeout_at(deadline, permits.acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(closed)) => {
            return Err(Undecided::Failed(CoreError::Internal(anyhow::anyhow!(
                "evaluation permits closed: {closed}"
            ))));
        }
        Err(_) => return Err(Undecided::OverBudget),
    };
    let (run, input) = (run.clone(), input.clone());
    let evaluation = tokio::task::spawn_blocking(move || {
        // Held until the evaluation ends, even past its budget.
        let _running = permit;
        decision::check(&snapshot, &run, index, &input, timestamp, &recent)
    });
    match tokio::time::timeout_at(deadline, evaluation).await {
        Ok(Ok(evaluation)) => Ok(evaluation),
        Ok(Err(join)) => Err(Undecided::Failed(CoreError::Internal(anyhow::anyhow!(
            "policy evaluation failed: {join}"
        )))),
        // The thread finishes on its own; it holds nothing anyone waits for.
        Err(_) => Err(Undecided::OverBudget),
    }
}

/// Timestamps of the run's steps after `since` (for rate limits).
async fn step_times_since<C: ConnectionTrait>(
    conn: &C,
    run_id: &str,
    since: DateTime<Utc>,
) -> CoreResult<Vec<DateTime<Utc>>> {
    Ok(trace_step::Entity::find()
        .select_only()
        .column(trace_step::Column::Timestamp)
        .filter(trace_step::Column::RunId.eq(run_id))
        .filter(trace_step::Column::Timestamp.gt(since))
        .into_tuple()
        .all(conn)
        .await?)
}

/// The step could not be decided or recorded because of `err`: fail closed, with a reference
/// to the log entry that has the details.
async fn fail_closed_on_error(
    store: &Store,
    reporter: Reporter<'_>,
    input: &RecordStep,
    err: anyhow::Error,
) -> CoreResult<Committed<StepOutcome>> {
    let reference = new_id("err");
    tracing::error!(error = ?err, reference = %reference, run_id = %input.run_id, "cannot record step; failing closed");
    let reason = format!(
        "the decision could not be recorded (reference {reference}); failing closed: STOP ({})",
        TerminationReason::SystemFailure
    );
    fail_closed(store, reporter, input, reason).await
}

/// Answer STOP (`SYSTEM_FAILURE`) with `reason`, never CONTINUE; stop the run if that can still
/// be recorded, so its later steps are refused too. A key known to be revoked stops nothing: its
/// answer is `UNAUTHENTICATED` (a key that cannot be checked now does not hold the stop back).
async fn fail_closed(
    store: &Store,
    reporter: Reporter<'_>,
    input: &RecordStep,
    reason: String,
) -> CoreResult<Committed<StepOutcome>> {
    let tenant_id = reporter.tenant_id;
    if let Some(key_id) = reporter.key_id
        && let Ok(active) = tenancy::active_keys(store.db(), [key_id]).await
        && active.is_empty()
    {
        return Err(tenancy::key_refused());
    }
    // Best effort: stop the run so later steps are refused too. This may fail as well.
    let stopped = runs::stop_for_system_failure(store, tenant_id, &input.run_id, &reason).await;
    let (run, events, follow_ups) = match stopped {
        Ok(committed) => (
            Some(committed.value),
            committed.events,
            committed.follow_ups,
        ),
        Err(stop_err) => {
            tracing::error!(error = %stop_err, run_id = %input.run_id, "cannot record the fail-closed stop either");
            let run = runs::get(store.db(), tenant_id, &input.run_id).await.ok();
            (run, Vec::new(), Vec::new())
        }
    };
    let step = trace_step::Model {
        pk: 0,
        tenant_id: tenant_id.to_string(),
        run_id: input.run_id.clone(),
        step_index: input
            .step_index
            .or(run.as_ref().map(|r| r.step_count))
            .unwrap_or(0),
        timestamp: timestamp_of(input),
        step_type: input.step_type,
        tokens: input.tokens,
        cost_micros: input.cost_micros,
        tool_name: input.tool_name.clone(),
        content_hash: content_hash(input.content.as_deref()),
        status: StepStatus::Violation,
        is_inflection: false,
        decision: DecisionAction::Stop,
        policies_checked: 0,
        reason: reason.clone(),
        decision_json: json!({ "action": "STOP", "terminationReason": "SYSTEM_FAILURE", "recorded": false }),
        prev_hash: run
            .as_ref()
            .map(|r| r.trace_head_hash.clone())
            .unwrap_or_default(),
        entry_hash: String::new(),
        created_at: now(),
    };
    Ok(Committed {
        value: StepOutcome::FailClosed { run, step, reason },
        events,
        follow_ups,
        steps: Vec::new(),
    })
}
