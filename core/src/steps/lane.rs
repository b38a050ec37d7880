//! Group commit of step reports on SQLite (see [`crate::store`]).
//!
//! One task, the lane, takes every report waiting at that moment and writes them in ONE
//! transaction, then commits once and only then answers each of them. Nothing waits for a batch
//! to fill: a report that finds the lane idle is written at once, alone.
//!
//! Inside a batch, the common case (a clean step that continues its run) is decided in memory:
//! the batch's runs are read with one statement, the rate-limit windows with one more, the new
//! steps are inserted with one multi-row statement and each touched run is updated once. Any
//! other report (a replay, a refusal, a step with findings, a run not found) first writes out
//! what the batch holds so far, then goes through [`record_in`] against the transaction, exactly
//! as a report on its own would. Every decision is made on the same state either way: the run as
//! its earlier steps (in this batch or before it) left it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use governance_entities::{run, trace_step};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect, sea_query::Expr,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    RecordStep, StepRecord, check, compiled_snapshot, continues_cleanly, count_clean_step,
    record_committed, record_in, step_row, timestamp_of,
};
use crate::{
    error::{CoreError, CoreResult},
    outcome::{Committed, StepNotice},
    policy::SnapshotCache,
    store::{Store, next_batch},
    time::now,
};

/// Largest number of step reports written in one group commit.
const MAX_BATCH: usize = 256;

/// Rows per multi-row INSERT (SQLite allows 32,766 bound values; a step has 19 columns).
const INSERT_CHUNK: usize = 512;

/// A step report waiting for the lane.
struct PendingStep {
    tenant_id: String,
    input: RecordStep,
    cache: SnapshotCache,
    reply: oneshot::Sender<CoreResult<Committed<StepRecord>>>,
}

/// The group-commit lane for step reports. Cheap to clone.
#[derive(Clone)]
pub(crate) struct StepLane {
    queue: mpsc::UnboundedSender<PendingStep>,
}

impl StepLane {
    /// Start the lane's task on the current runtime. `store` must not itself hold a lane (the
    /// task ends when the last sender, held by the stores that do, is dropped).
    pub(crate) fn start(store: Store) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run_lane(store, waiting));
        Self { queue }
    }

    /// Hand a report to the lane and wait for its committed answer.
    pub(super) async fn record(
        &self,
        cache: &SnapshotCache,
        tenant_id: &str,
        input: &RecordStep,
    ) -> CoreResult<Committed<StepRecord>> {
        let (reply, answer) = oneshot::channel();
        let pending = PendingStep {
            tenant_id: tenant_id.to_string(),
            input: input.clone(),
            cache: cache.clone(),
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
async fn run_lane(store: Store, mut waiting: mpsc::UnboundedReceiver<PendingStep>) {
    while let Some(batch) = next_batch(&mut waiting, MAX_BATCH).await {
        commit_batch(&store, batch).await;
    }
}

async fn commit_batch(store: &Store, batch: Vec<PendingStep>) {
    if batch.len() > 1 {
        match write_batch(store, &batch).await {
            Ok(answers) => {
                for (pending, answer) in batch.into_iter().zip(answers) {
                    // A dropped receiver is a client that went away; its step is committed.
                    let _ = pending.reply.send(answer);
                }
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
        let answer =
            record_committed(store, &pending.cache, &pending.tenant_id, &pending.input).await;
        let _ = pending.reply.send(answer);
    }
}

/// Every report of the batch in one transaction. `Err` when the transaction must be abandoned
/// (a database failure); refusals (conflicts, bad input, a terminated run) are answers.
async fn write_batch(
    store: &Store,
    batch: &[PendingStep],
) -> CoreResult<Vec<CoreResult<Committed<StepRecord>>>> {
    let txn = store.begin().await?;
    let mut group = Group::load(&*txn, batch).await?;
    let mut answers = Vec::with_capacity(batch.len());
    for pending in batch {
        if let Some(answer) = group.decide_in_memory(&*txn, pending).await? {
            answers.push(Ok(answer));
            continue;
        }
        group.flush(&*txn).await?;
        let answer = record_in(&*txn, &pending.cache, &pending.tenant_id, &pending.input).await;
        match answer {
            Err(CoreError::Internal(err)) => return Err(CoreError::Internal(err)),
            Ok(ref committed) => group.recorded(&committed.value),
            Err(_) => {}
        }
        answers.push(answer);
    }
    group.flush(&*txn).await?;
    txn.commit().await?;
    Ok(answers)
}

/// The batch's runs as its steps leave them, and what is not yet written.
struct Group {
    runs: HashMap<String, run::Model>,
    /// Step timestamps per run, as far back as the batch's rate limits look.
    recent: HashMap<String, Vec<DateTime<Utc>>>,
    /// Runs whose rate-limit history was not read (their snapshot was not cached when the
    /// batch was loaded): their reports take the ordinary path.
    unknown_history: Vec<String>,
    new_steps: Vec<trace_step::Model>,
    dirty: Vec<String>,
}

impl Group {
    /// One statement for the runs, one for the rate-limit history of those that need it.
    async fn load<C: ConnectionTrait>(conn: &C, batch: &[PendingStep]) -> CoreResult<Self> {
        let mut ids: Vec<String> = batch.iter().map(|p| p.input.run_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let runs: HashMap<String, run::Model> = run::Entity::find()
            .filter(run::Column::Id.is_in(ids))
            .all(conn)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        // How far back each run's rate limits look, for the steps of this batch.
        let mut since: HashMap<&str, DateTime<Utc>> = HashMap::new();
        let mut unknown_history = Vec::new();
        for pending in batch {
            let Some(run) = runs.get(&pending.input.run_id) else {
                continue;
            };
            let Some(snapshot) = pending
                .cache
                .get_by_id(&run.tenant_id, &run.policy_snapshot_id)
            else {
                unknown_history.push(run.id.clone());
                continue;
            };
            if let Some(window) = snapshot.max_rate_window_seconds() {
                let at = timestamp_of(&pending.input) - chrono::Duration::seconds(window);
                since
                    .entry(run.id.as_str())
                    .and_modify(|s| *s = (*s).min(at))
                    .or_insert(at);
            }
        }
        let mut recent: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        if !since.is_empty() {
            let mut any = Condition::any();
            for (run_id, at) in &since {
                any = any.add(
                    Condition::all()
                        .add(trace_step::Column::RunId.eq(*run_id))
                        .add(trace_step::Column::Timestamp.gt(*at)),
                );
            }
            let rows: Vec<(String, DateTime<Utc>)> = trace_step::Entity::find()
                .select_only()
                .column(trace_step::Column::RunId)
                .column(trace_step::Column::Timestamp)
                .filter(any)
                .into_tuple()
                .all(conn)
                .await?;
            for run_id in since.keys() {
                recent.insert((*run_id).to_string(), Vec::new());
            }
            for (run_id, at) in rows {
                recent.entry(run_id).or_default().push(at);
            }
        }
        Ok(Self {
            runs,
            recent,
            unknown_history,
            new_steps: Vec::new(),
            dirty: Vec::new(),
        })
    }

    /// Decide and stage a clean step that continues its run; `None` when the report needs the
    /// ordinary path.
    async fn decide_in_memory<C: ConnectionTrait>(
        &mut self,
        conn: &C,
        pending: &PendingStep,
    ) -> CoreResult<Option<Committed<StepRecord>>> {
        let input = &pending.input;
        let Some(run) = self.runs.get(&input.run_id) else {
            return Ok(None);
        };
        let index = input.step_index.unwrap_or(run.step_count);
        let timestamp = timestamp_of(input);
        if run.tenant_id != pending.tenant_id
            || run.status.is_terminal()
            || index != run.step_count
            || timestamp < run.started_at
            || self.unknown_history.contains(&run.id)
        {
            return Ok(None);
        }
        let snapshot = compiled_snapshot(conn, &pending.cache, run).await?;
        let recent: Vec<DateTime<Utc>> = match snapshot.max_rate_window_seconds() {
            Some(window) => {
                let Some(history) = self.recent.get(&run.id) else {
                    return Ok(None);
                };
                let since = timestamp - chrono::Duration::seconds(window);
                history.iter().copied().filter(|t| *t > since).collect()
            }
            None => Vec::new(),
        };
        let evaluation = check(&snapshot, run, index, input, timestamp, &recent);
        if !continues_cleanly(&evaluation) {
            return Ok(None);
        }
        let step = step_row(run, index, input, timestamp, &evaluation);
        let mut updated = run.clone();
        count_clean_step(&mut updated, input, &step);
        updated.updated_at = now();
        self.stage(updated.clone(), step.clone());
        Ok(Some(Committed {
            value: StepRecord {
                run: updated,
                step,
                violations: Vec::new(),
                incident: None,
                replayed: false,
            },
            events: Vec::new(),
            follow_ups: Vec::new(),
            steps: vec![StepNotice {
                tenant_id: pending.tenant_id.clone(),
                run_id: input.run_id.clone(),
                step_index: index,
            }],
        }))
    }

    fn stage(&mut self, run: run::Model, step: trace_step::Model) {
        if let Some(history) = self.recent.get_mut(&run.id) {
            history.push(step.timestamp);
        }
        if !self.dirty.contains(&run.id) {
            self.dirty.push(run.id.clone());
        }
        self.runs.insert(run.id.clone(), run);
        self.new_steps.push(step);
    }

    /// What the ordinary path recorded (it is already written).
    fn recorded(&mut self, record: &StepRecord) {
        if !record.replayed
            && let Some(history) = self.recent.get_mut(&record.run.id)
        {
            history.push(record.step.timestamp);
        }
        self.runs.insert(record.run.id.clone(), record.run.clone());
    }

    /// Write the staged steps (multi-row inserts) and the staged runs (one update each).
    async fn flush<C: ConnectionTrait>(&mut self, conn: &C) -> CoreResult<()> {
        let steps = std::mem::take(&mut self.new_steps);
        insert_steps(conn, &steps).await?;
        for run_id in std::mem::take(&mut self.dirty) {
            let run = self
                .runs
                .get(&run_id)
                .ok_or_else(|| anyhow::anyhow!("staged run {run_id} vanished from the batch"))?;
            update_run_totals(conn, run).await?;
        }
        Ok(())
    }
}

/// Insert step rows with multi-row statements.
pub(super) async fn insert_steps<C: ConnectionTrait>(
    conn: &C,
    steps: &[trace_step::Model],
) -> CoreResult<()> {
    for chunk in steps.chunks(INSERT_CHUNK) {
        let rows = chunk.iter().map(|step| {
            let mut active = trace_step::ActiveModel::from(step.clone()).reset_all();
            active.pk = sea_orm::ActiveValue::NotSet;
            active
        });
        trace_step::Entity::insert_many(rows)
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// Write what clean steps change on their run: totals, step count, chain head.
pub(super) async fn update_run_totals<C: ConnectionTrait>(
    conn: &C,
    run: &run::Model,
) -> CoreResult<()> {
    let updated = run::Entity::update_many()
        .col_expr(run::Column::TokensUsed, Expr::value(run.tokens_used))
        .col_expr(run::Column::CostMicros, Expr::value(run.cost_micros))
        .col_expr(run::Column::StepCount, Expr::value(run.step_count))
        .col_expr(
            run::Column::TraceHeadHash,
            Expr::value(run.trace_head_hash.clone()),
        )
        .col_expr(run::Column::UpdatedAt, Expr::value(run.updated_at))
        .filter(run::Column::Id.eq(run.id.as_str()))
        .exec(conn)
        .await?;
    if updated.rows_affected != 1 {
        return Err(anyhow::anyhow!("run {} could not be updated", run.id).into());
    }
    Ok(())
}
