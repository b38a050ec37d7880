//! Group commit of evaluation records on SQLite (see [`crate::store`]).
//!
//! Evaluation-record jobs run many at once, and each writes one row. Alone, each would take
//! SQLite's one write lock and wait for its own fsync. The lane takes every record waiting at
//! that moment, inserts them all in ONE transaction, commits once, and only then answers each.
//! Nothing waits for a batch to fill: a record that finds the lane idle is written at once.

use governance_entities::policy_evaluation;
use sea_orm::{ConnectionTrait, EntityTrait, sea_query::OnConflict};
use tokio::sync::{mpsc, oneshot};

use crate::{
    error::CoreResult,
    store::{Store, next_batch},
};

/// Largest number of records written in one group commit.
const MAX_BATCH: usize = 256;

/// A record waiting for the lane, and where its answer goes: whether it was inserted (`false`
/// when the run already had one).
struct PendingRecord {
    row: policy_evaluation::Model,
    reply: oneshot::Sender<CoreResult<bool>>,
}

/// The group-commit lane for evaluation records. Cheap to clone.
#[derive(Clone)]
pub(crate) struct EvaluationLane {
    queue: mpsc::UnboundedSender<PendingRecord>,
}

impl EvaluationLane {
    /// Start the lane's task on the current runtime. `store` must not itself hold a lane (the
    /// task ends when the last sender, held by the stores that do, is dropped).
    pub(crate) fn start(store: Store) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run_lane(store, waiting));
        Self { queue }
    }

    /// Hand a record to the lane and wait until it is committed.
    pub(super) async fn insert(&self, row: policy_evaluation::Model) -> CoreResult<bool> {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(PendingRecord { row, reply }).is_err() {
            return Err(
                anyhow::anyhow!("the evaluation writer has stopped (shutting down)").into(),
            );
        }
        // Without an answer the record may or may not be committed: the job fails and is
        // retried, and a retry of a committed record writes nothing.
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the evaluation writer stopped before answering"))?
    }
}

async fn run_lane(store: Store, mut waiting: mpsc::UnboundedReceiver<PendingRecord>) {
    while let Some(batch) = next_batch(&mut waiting, MAX_BATCH).await {
        if batch.len() > 1 {
            let rows: Vec<_> = batch.iter().map(|p| p.row.clone()).collect();
            match write(&store, &rows).await {
                Ok(inserted) => {
                    for (pending, inserted) in batch.into_iter().zip(inserted) {
                        let _ = pending.reply.send(Ok(inserted));
                    }
                    continue;
                }
                // Nothing of the batch is committed; each record gets its own transaction
                // below, so one failure cannot fail the others.
                Err(err) => {
                    tracing::warn!(error = %err, size = batch.len(), "group commit of evaluation records failed; writing them one at a time")
                }
            }
        }
        for pending in batch {
            let answer = write(&store, std::slice::from_ref(&pending.row))
                .await
                .map(|inserted| inserted[0]);
            let _ = pending.reply.send(answer);
        }
    }
}

/// Insert `rows` in one transaction; for each, whether it was inserted.
async fn write(store: &Store, rows: &[policy_evaluation::Model]) -> CoreResult<Vec<bool>> {
    let txn = store.begin_first().await?;
    let mut inserted = Vec::with_capacity(rows.len());
    for row in rows {
        inserted.push(insert_in(&*txn, row).await?);
    }
    txn.commit().await?;
    Ok(inserted)
}

/// Insert one record unless its run already has one (a concurrent duplicate job may have
/// written it first: that one is kept). Whether it was inserted.
pub(super) async fn insert_in<C: ConnectionTrait>(
    conn: &C,
    row: &policy_evaluation::Model,
) -> CoreResult<bool> {
    let active: policy_evaluation::ActiveModel = row.clone().into();
    let inserted = policy_evaluation::Entity::insert(active)
        .on_conflict(
            OnConflict::column(policy_evaluation::Column::RunId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(inserted > 0)
}
