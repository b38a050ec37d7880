//! Group commit of step reports, on SQLite and PostgreSQL alike.
//!
//! One task, the lane, takes every report waiting at that moment and writes them in ONE
//! transaction, then commits once and only then answers each of them. Nothing waits for a batch
//! to fill: a report that finds the lane idle is written at once, alone.
//!
//! Reports arrive decided (policy evaluation happens before, outside the lane), so the lane only
//! checks that each decision still holds for its run and writes. The common case, a clean step
//! that continues its run, is staged in memory ([`Group`]): the batch's runs are read with one
//! statement, the new steps are inserted with one multi-row statement and every touched run is
//! updated by one statement. A decision made on a state the batch has since moved past (two
//! steps of one run in one batch) is answered [`Written::Stale`], and its caller decides again.
//!
//! On SQLite a batch of only such reports is written in one round trip to the database, staged
//! from the runs its decisions were made on and guarded by them, or else in two, staged from the
//! runs as read ([`super::sqlite_batch`]). Any other batch, and every batch on PostgreSQL, takes
//! the ordinary way: one transaction through SeaORM, in which any other report (a re-sent step,
//! a refusal, a step with findings, a run not found) first writes out what the batch holds so
//! far, then goes through [`record_in`] against the transaction, exactly as a report on its own
//! would.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, OnceLock},
    time::Duration,
};

use governance_entities::{run, trace_step};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    RecordStep, Reporter, StepRecord,
    decision::{Decided, Report, classify, continues_cleanly, count_clean_step, step_row},
    sqlite_batch,
    write::{Written, record_committed, record_in, write_clean_steps},
};
use crate::{
    error::{CoreError, CoreResult},
    outcome::{Committed, StepNotice},
    store::{Store, next_batch},
    tenancy,
    time::now,
};

/// Largest number of step reports written in one group commit.
const MAX_BATCH: usize = 256;

/// What the lane tells its observer (for metrics); set once, after the lane started.
pub type BatchObserver = Arc<dyn Fn(LaneEvent) + Send + Sync>;

/// Something the lane did that an operator may want to count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LaneEvent {
    /// A commit of this many steps.
    Committed(usize),
    /// SQLite: a batch found the write lock held by another connection (this process's other
    /// writers take turns with the lane, so another process, or the job queue's own writes) and
    /// waited this long for it, or gave up after that long and took the ordinary way.
    WaitedForLock(Duration),
    /// SQLite: a batch written from the runs its decisions saw was refused by its guard (a run
    /// another process moved on or ended, or a key revoked, since the decision). Nothing of it
    /// was written; it was read afresh and written the slower way.
    GuardRefused,
}

/// A step report waiting for the lane.
pub(super) struct PendingStep {
    pub(super) tenant_id: String,
    /// The API key it was reported with; `None` for the service's own reports.
    pub(super) key_id: Option<String>,
    pub(super) input: RecordStep,
    pub(super) decided: Option<Decided>,
    pub(super) reply: oneshot::Sender<CoreResult<Written>>,
}

/// The group-commit lane for step reports. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StepLane {
    queue: mpsc::UnboundedSender<PendingStep>,
    observer: Arc<OnceLock<BatchObserver>>,
}

impl StepLane {
    /// Start the lane's task on the current runtime. `store` must not itself hold a lane (the
    /// task ends when the last sender, held by the stores that do, is dropped).
    pub(crate) fn start(store: Store) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let observer = Arc::new(OnceLock::new());
        tokio::spawn(run_lane(store, waiting, observer.clone()));
        Self { queue, observer }
    }

    /// Report every commit's size, and every wait for another connection's lock, to `observer`
    /// (the first observer set stays).
    pub(crate) fn observe(&self, observer: BatchObserver) {
        let _ = self.observer.set(observer);
    }

    /// Hand a decided report to the lane and wait for its committed answer.
    pub(super) async fn record(
        &self,
        reporter: Reporter<'_>,
        input: &RecordStep,
        decided: Option<Decided>,
    ) -> CoreResult<Written> {
        let (reply, answer) = oneshot::channel();
        let pending = PendingStep {
            tenant_id: reporter.tenant_id.to_string(),
            key_id: reporter.key_id.map(str::to_string),
            input: input.clone(),
            decided,
            reply,
        };
        if self.queue.send(pending).is_err() {
            return Err(anyhow::anyhow!("the step writer has stopped (shutting down)").into());
        }
        // The lane answers every report it takes unless its runtime is going away; then the
        // report may or may not have been committed, and the caller fails closed.
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the step writer stopped before answering"))?
    }
}

/// Take whatever reports are waiting, write them in one transaction, commit, answer.
async fn run_lane(
    store: Store,
    mut waiting: mpsc::UnboundedReceiver<PendingStep>,
    observer: Arc<OnceLock<BatchObserver>>,
) {
    while let Some(batch) = next_batch(&mut waiting, MAX_BATCH).await {
        commit_batch(&store, batch, &observer).await;
    }
}

async fn commit_batch(store: &Store, batch: Vec<PendingStep>, observer: &OnceLock<BatchObserver>) {
    let tell = |event: LaneEvent| {
        if let Some(observer) = observer.get() {
            observer(event);
        }
    };
    let observe = |size: usize| tell(LaneEvent::Committed(size));
    if store.backend() == DbBackend::Sqlite {
        match sqlite_batch::write_batch(store, &batch, &tell).await {
            sqlite_batch::Outcome::Answered { answers, written } => {
                if written > 0 {
                    observe(written);
                }
                answer_all(batch, answers);
                return;
            }
            // Nothing was written; the ordinary way below decides from a fresh read.
            sqlite_batch::Outcome::Ordinary => {}
        }
    }
    if batch.len() > 1 {
        match write_batch(store, &batch).await {
            Ok(answers) => {
                observe(batch.len());
                answer_all(batch, answers);
                return;
            }
            // One report broke the shared transaction (or it could not be begun or committed):
            // nothing of the batch is committed. Each report gets its own transaction below,
            // so one broken step cannot fail the others.
            Err(err) => {
                tracing::warn!(error = %err, size = batch.len(), "group commit failed; writing the batch one step at a time")
            }
        }
    }
    for pending in batch {
        let answer = record_committed(
            store,
            pending.reporter(),
            &pending.input,
            pending.decided.as_ref(),
        )
        .await;
        // Only a transaction that was committed: a stale decision or a refusal wrote nothing.
        if matches!(
            answer,
            Ok(Written::Done(_)) | Err(CoreError::RunTerminated(_))
        ) {
            observe(1);
        }
        let _ = pending.reply.send(answer);
    }
}

/// Answer every report of a batch, in order.
fn answer_all(batch: Vec<PendingStep>, answers: Vec<CoreResult<Written>>) {
    for (pending, answer) in batch.into_iter().zip(answers) {
        // A dropped receiver is a client that went away; its step is committed.
        let _ = pending.reply.send(answer);
    }
}

/// Every report of the batch in one transaction. `Err` when the transaction must be abandoned
/// (a database failure); refusals (conflicts, bad input, a terminated run) are answers.
async fn write_batch(store: &Store, batch: &[PendingStep]) -> CoreResult<Vec<CoreResult<Written>>> {
    let txn = store.begin_first().await?;
    let active =
        tenancy::active_keys(&*txn, batch.iter().filter_map(|p| p.key_id.as_deref())).await?;
    let mut group = Group::load(&*txn, batch).await?;
    let mut answers = Vec::with_capacity(batch.len());
    for pending in batch {
        if let Some(answer) = group.answer(pending, &active) {
            answers.push(answer);
            continue;
        }
        group.flush(&*txn).await?;
        let answer = record_in(
            &*txn,
            pending.reporter(),
            &pending.input,
            pending.decided.as_ref(),
        )
        .await;
        match answer {
            Err(CoreError::Internal(err)) => return Err(CoreError::Internal(err)),
            Ok(Written::Done(ref committed)) => group.recorded(&committed.value),
            Ok(Written::Stale) | Err(_) => {}
        }
        answers.push(answer);
    }
    group.flush(&*txn).await?;
    txn.commit().await?;
    Ok(answers)
}

impl PendingStep {
    pub(super) fn reporter(&self) -> Reporter<'_> {
        Reporter {
            tenant_id: &self.tenant_id,
            key_id: self.key_id.as_deref(),
        }
    }
}

/// What the lane can do with a report on its own.
// Lives for one report; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Staging {
    /// A new clean step, staged; this is its answer once the batch commits.
    Staged(Committed<StepRecord>),
    /// A new step decided on a state its run has left (or not decided): nothing to write;
    /// the caller decides again.
    Stale,
    /// Anything else (a re-sent step, a refusal, findings, a run not found): the ordinary
    /// write path, [`record_in`].
    Ordinary,
}

/// The batch's runs as its steps leave them, and what is not yet written.
pub(super) struct Group {
    runs: HashMap<String, run::Model>,
    new_steps: Vec<trace_step::Model>,
    dirty: Vec<String>,
}

impl Group {
    /// One statement for the batch's runs; on PostgreSQL their rows are locked, in id order (as
    /// every batch of every replica locks them, so two batches cannot deadlock on each other).
    async fn load<C: ConnectionTrait>(conn: &C, batch: &[PendingStep]) -> CoreResult<Self> {
        let mut query = run::Entity::find()
            .filter(run::Column::Id.is_in(run_ids(batch)))
            .order_by_asc(run::Column::Id);
        if conn.get_database_backend() == DbBackend::Postgres {
            query = query.lock_exclusive();
        }
        Ok(Self::of(query.all(conn).await?))
    }

    /// The group of a batch whose runs (as stored, in this transaction) are `runs`.
    pub(super) fn of(runs: Vec<run::Model>) -> Self {
        Self {
            runs: runs.into_iter().map(|r| (r.id.clone(), r)).collect(),
            new_steps: Vec::new(),
            dirty: Vec::new(),
        }
    }

    /// The answer the lane gives `pending` on its own: refused when its key is not among the
    /// batch's `active` keys, else staged or stale; `None` when it needs the ordinary write path.
    pub(super) fn answer(
        &mut self,
        pending: &PendingStep,
        active: &HashSet<String>,
    ) -> Option<CoreResult<Written>> {
        if pending
            .key_id
            .as_ref()
            .is_some_and(|key| !active.contains(key))
        {
            return Some(Err(tenancy::key_refused()));
        }
        match self.stage(pending) {
            Staging::Staged(answer) => Some(Ok(Written::Done(answer))),
            Staging::Stale => Some(Ok(Written::Stale)),
            Staging::Ordinary => None,
        }
    }

    /// Stage a new step whose decision holds and continues its run cleanly.
    fn stage(&mut self, pending: &PendingStep) -> Staging {
        let input = &pending.input;
        let Some(run) = self.runs.get(&input.run_id) else {
            return Staging::Ordinary;
        };
        if run.tenant_id != pending.tenant_id {
            return Staging::Ordinary;
        }
        let Ok(Report::New { index, .. }) = classify(run, input) else {
            return Staging::Ordinary;
        };
        let Some(decided) = pending.decided.as_ref().and_then(|d| d.for_run(run, index)) else {
            return Staging::Stale;
        };
        if !continues_cleanly(&decided.evaluation) {
            return Staging::Ordinary;
        }
        let step = step_row(run, index, input, decided.timestamp, &decided.evaluation);
        let mut updated = run.clone();
        count_clean_step(&mut updated, input, &step);
        updated.updated_at = now();
        if !self.dirty.contains(&updated.id) {
            self.dirty.push(updated.id.clone());
        }
        self.runs.insert(updated.id.clone(), updated.clone());
        self.new_steps.push(step.clone());
        Staging::Staged(Committed {
            value: StepRecord {
                run: updated,
                step,
                violations: Vec::new(),
                incident: None,
                approval: None,
                replayed: false,
            },
            events: Vec::new(),
            follow_ups: Vec::new(),
            steps: vec![StepNotice {
                tenant_id: pending.tenant_id.clone(),
                run_id: input.run_id.clone(),
                step_index: index,
            }],
        })
    }

    /// What the ordinary path recorded (it is already written).
    fn recorded(&mut self, record: &StepRecord) {
        self.runs.insert(record.run.id.clone(), record.run.clone());
    }

    /// What is staged and not yet written: the new steps, and the runs they change (as they
    /// leave them).
    pub(super) fn take_writes(&mut self) -> CoreResult<(Vec<trace_step::Model>, Vec<&run::Model>)> {
        let steps = std::mem::take(&mut self.new_steps);
        let dirty = std::mem::take(&mut self.dirty);
        let runs = dirty
            .iter()
            .map(|run_id| {
                self.runs
                    .get(run_id)
                    .ok_or_else(|| anyhow::anyhow!("staged run {run_id} vanished from the batch"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((steps, runs))
    }

    /// Write the staged steps and the staged runs ([`write_clean_steps`]).
    async fn flush<C: ConnectionTrait>(&mut self, conn: &C) -> CoreResult<()> {
        let (steps, runs) = self.take_writes()?;
        write_clean_steps(conn, &steps, &runs).await
    }
}

/// The batch's run ids, sorted, each once.
pub(super) fn run_ids(batch: &[PendingStep]) -> Vec<String> {
    let mut ids: Vec<String> = batch.iter().map(|p| p.input.run_id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A tenant with an active and a revoked key, and what deciding its steps takes: for the tests
/// of the lane's two ways of writing a batch.
#[cfg(test)]
pub(super) mod fixture {
    use governance_entities::enums::StepType;
    use sea_orm::DatabaseConnection;
    use tokio::sync::oneshot;

    use super::PendingStep;
    use crate::{
        db,
        policy::SnapshotCache,
        runs::{self, StartRun},
        steps::{EVALUATION_BUDGET, EvaluationBudget, RecordStep, decide},
        store::Store,
        tenancy,
    };

    pub(in crate::steps) struct Fixture {
        pub db: DatabaseConnection,
        pub store: Store,
        pub tenant_id: String,
        pub active_key: String,
        pub revoked_key: String,
        cache: SnapshotCache,
        budget: EvaluationBudget,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        pub async fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = db::migrated_sqlite(dir.path()).await;
            let store = Store::new(db.clone());
            let first = tenancy::create_tenant(&store, "acme", &[crate::roles::KeyRole::Admin])
                .await
                .expect("tenant");
            let second =
                tenancy::create_key(&db, "acme", "second", &[crate::roles::KeyRole::Admin])
                    .await
                    .expect("key");
            tenancy::revoke_key(&db, &second.key_id)
                .await
                .expect("revoke");
            Self {
                db,
                store,
                tenant_id: first.tenant_id,
                active_key: first.key_id,
                revoked_key: second.key_id,
                cache: SnapshotCache::new(),
                budget: EvaluationBudget::new(EVALUATION_BUDGET),
                _dir: dir,
            }
        }

        pub async fn start_run(&self) -> String {
            runs::start(&self.store, &self.tenant_id, StartRun::of_workflow("batch"))
                .await
                .expect("run")
                .value
                .id
        }

        /// A clean 5-token step of `run_id`.
        pub fn clean_step(run_id: &str, step_index: Option<i64>) -> RecordStep {
            RecordStep {
                run_id: run_id.to_string(),
                step_index,
                step_type: StepType::LlmCall,
                tokens: 5,
                cost_micros: 1,
                content: Some("hello".to_string()),
                tool_name: None,
                timestamp: None,
            }
        }

        /// `input` decided on its run as stored now, reported with `key_id`.
        pub async fn pending(&self, key_id: &str, input: RecordStep) -> PendingStep {
            let decided = decide(
                &self.store,
                &self.cache,
                &self.budget,
                &self.tenant_id,
                &input,
                &mut None,
            )
            .await
            .unwrap_or_else(|_| panic!("decided"));
            let (reply, _answer) = oneshot::channel();
            PendingStep {
                tenant_id: self.tenant_id.clone(),
                key_id: Some(key_id.to_string()),
                input,
                decided,
                reply,
            }
        }

        /// Each run's step count, tokens and cost as stored.
        pub async fn totals(&self, run_ids: &[String]) -> Vec<(i64, i64, i64)> {
            let mut stored = Vec::new();
            for run_id in run_ids {
                let run = runs::get(&self.db, &self.tenant_id, run_id)
                    .await
                    .expect("run");
                stored.push((run.step_count, run.tokens_used, run.cost_micros));
            }
            stored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fixture::Fixture, write_batch};
    use crate::{error::CoreError, steps::write::Written};

    /// One group commit holding reports of a revoked key and of an active one: the first are
    /// refused and write nothing, the others are written (two runs' totals in one update).
    #[tokio::test]
    async fn a_batch_refuses_the_reports_of_a_revoked_key_and_writes_the_others() {
        let f = Fixture::new().await;
        let mut batch = Vec::new();
        let mut run_ids = Vec::new();
        for key_id in [&f.revoked_key, &f.active_key, &f.active_key] {
            let run_id = f.start_run().await;
            let pending = f.pending(key_id, Fixture::clean_step(&run_id, None)).await;
            assert!(
                pending.decided.is_some(),
                "a new step of a running run is decided"
            );
            batch.push(pending);
            run_ids.push(run_id);
        }

        let answers = write_batch(&f.store, &batch)
            .await
            .expect("batch committed");
        assert!(
            matches!(answers[0], Err(CoreError::Unauthenticated(_))),
            "the revoked key's report is refused: {:?}",
            answers[0]
        );
        for answer in &answers[1..] {
            assert!(
                matches!(answer, Ok(Written::Done(_))),
                "the active key's reports are written: {answer:?}"
            );
        }
        assert_eq!(
            f.totals(&run_ids).await,
            vec![(0, 0, 0), (1, 5, 1), (1, 5, 1)]
        );
    }
}
