//! The lane's group commit on SQLite, in two round trips to the connection's thread.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every statement to it and
//! its result back: two thread hand-offs per statement. A batch written statement by statement
//! (BEGIN, keys, runs, insert, update, COMMIT) therefore cost six round trips, and on a busy
//! 2-core machine each hand-off waits for a core. Here a batch is two multi-statement requests
//! on one connection:
//!
//! 1. `BEGIN IMMEDIATE`, then which of the batch's keys are active, then the batch's runs;
//! 2. the new steps, the runs' totals, and `COMMIT` (with its fsync).
//!
//! Between the two, the batch is staged in memory exactly as the ordinary lane stages it
//! ([`Group`]). A batch holding any report that needs more than a clean new step (a re-sent
//! step, a refusal, findings, a run not found) is rolled back before anything is written and
//! takes the ordinary way; so does a batch whose writes fail. The ordinary way reads everything
//! again, so a report is never written twice, whatever happened here.

use std::{collections::HashSet, time::Duration};

use governance_entities::{api_key, run};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryResult, QuerySelect,
    QueryTrait, Statement,
    sqlx::{self, Row, Sqlite, pool::PoolConnection},
};
use sea_query_sqlx::SqlxValues;

use super::{
    lane::{Group, LaneEvent, PendingStep, run_ids},
    write::{Written, insert_steps_statements, run_totals_statement},
};
use crate::{
    error::CoreResult,
    sqlite_request::{counted, joined, restore_busy_timeout, rollback},
    store::Store,
};

/// What became of a batch.
pub(super) enum Outcome {
    /// One answer per report; `written` steps were committed (none when nothing needed writing).
    Answered {
        answers: Vec<CoreResult<Written>>,
        written: usize,
    },
    /// Nothing was written: the batch takes the ordinary way.
    Ordinary,
}

/// The column the active keys are read under (a run row has no such column).
const ACTIVE_KEY: &str = "active_key";

/// The column of the row `PRAGMA busy_timeout = 0` answers with.
const BUSY_TIMEOUT: &str = "timeout";

/// How long a batch keeps trying for SQLite's write lock while another connection holds it
/// before it takes the ordinary way.
const LOCK_PATIENCE: Duration = Duration::from_millis(200);

/// How soon a batch tries again for the write lock another connection holds.
const LOCK_RETRY: Duration = Duration::from_millis(1);

/// Write `batch` in one transaction of two round trips, or hand it back untouched.
///
/// The batch's connection runs without SQLite's busy handler (`busy_timeout = 0`) from its
/// `BEGIN IMMEDIATE` to its `COMMIT`: when another connection holds the write lock, the
/// handler sleeps 1, 2, 5, 10, 15, 20… ms between looks, so a batch that met another
/// connection's commit of about a millisecond could wait 18 ms for it. Here it looks again every
/// [`LOCK_RETRY`] instead.
/// A wait for another connection's lock is told to `tell`.
pub(super) async fn write_batch(
    store: &Store,
    batch: &[PendingStep],
    tell: &(dyn Fn(LaneEvent) + Sync),
) -> Outcome {
    // This process's writers take turns; the lane's turn comes ahead of ordinary writers.
    let _turn = store.writer_turn().await;
    let mut conn = match store.db().get_sqlite_connection_pool().acquire().await {
        Ok(conn) => conn,
        Err(err) => {
            tracing::warn!(error = %err, "no connection for the step batch; writing it the ordinary way");
            return Outcome::Ordinary;
        }
    };
    let usual = match store.usual_busy_timeout(&mut conn).await {
        Ok(usual) => usual,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the connection's busy timeout; writing the step batch the ordinary way");
            return Outcome::Ordinary;
        }
    };
    let outcome = match stage_and_write(store, &mut conn, batch, usual, tell).await {
        Ok(outcome) => outcome,
        Err(err) => {
            // The transaction may be open (a failed write) or not (a failed BEGIN).
            rollback(store, &mut conn).await;
            tracing::warn!(error = %err, size = batch.len(), "the step batch failed; writing it the ordinary way");
            Staged {
                outcome: Outcome::Ordinary,
                restored: false,
            }
        }
    };
    if !outcome.restored {
        let restored = restore_busy_timeout(&mut conn, usual).await;
        store.ran_statements(1, !restored);
    }
    outcome.outcome
}

/// What became of a batch, and whether its connection has its busy timeout back.
struct Staged {
    outcome: Outcome,
    restored: bool,
}

/// Whether SQLite refused for a lock another connection holds.
fn is_busy(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == SQLITE_BUSY)
}

const SQLITE_BUSY: i32 = 5;

async fn stage_and_write(
    store: &Store,
    conn: &mut PoolConnection<Sqlite>,
    batch: &[PendingStep],
    usual_busy_timeout: i64,
    tell: &(dyn Fn(LaneEvent) + Sync),
) -> CoreResult<Staged> {
    // Round trip 1: the transaction, the keys still active, the runs as they stand.
    let reads = reads(batch);
    let started = tokio::time::Instant::now();
    let patience = started + LOCK_PATIENCE;
    let mut waited = false;
    let rows = loop {
        let result = counted(
            store,
            &reads,
            query(&reads.0, batch.len()).fetch_all(&mut **conn).await,
        );
        match result {
            Err(err) if is_busy(&err) && tokio::time::Instant::now() < patience => {
                waited = true;
                tokio::time::sleep(LOCK_RETRY).await;
            }
            other => {
                if waited {
                    tell(LaneEvent::WaitedForLock(started.elapsed()));
                }
                break other?;
            }
        }
    };
    let mut active = HashSet::new();
    let mut runs = Vec::with_capacity(batch.len());
    for row in rows {
        if let Ok(key) = row.try_get::<String, _>(ACTIVE_KEY) {
            active.insert(key);
        } else if row.try_get::<i64, _>(BUSY_TIMEOUT).is_err() {
            runs.push(run::Model::from_query_result(&QueryResult::from(row), "")?);
        }
    }

    let mut group = Group::of(runs);
    let mut answers = Vec::with_capacity(batch.len());
    for pending in batch {
        match group.answer(pending, &active) {
            Some(answer) => answers.push(answer),
            None => {
                rollback(store, conn).await;
                return Ok(Staged {
                    outcome: Outcome::Ordinary,
                    restored: false,
                });
            }
        }
    }
    let (steps, runs) = group.take_writes()?;
    if steps.is_empty() {
        rollback(store, conn).await;
        return Ok(Staged {
            outcome: Outcome::Answered {
                answers,
                written: 0,
            },
            restored: false,
        });
    }
    if store.commit_fault() {
        rollback(store, conn).await;
        let answers = answers
            .into_iter()
            .map(|answer| match answer {
                Ok(Written::Done(_)) => {
                    Err(anyhow::anyhow!("injected commit failure (test hook)").into())
                }
                other => other,
            })
            .collect();
        return Ok(Staged {
            outcome: Outcome::Answered {
                answers,
                written: 0,
            },
            restored: false,
        });
    }

    // Round trip 2: the steps, the runs' totals, the commit, the usual busy timeout.
    let mut writes = insert_steps_statements(DbBackend::Sqlite, &steps);
    writes.extend(run_totals_statement(DbBackend::Sqlite, &runs));
    writes.push(Statement::from_string(DbBackend::Sqlite, "COMMIT"));
    writes.push(Statement::from_string(
        DbBackend::Sqlite,
        format!("PRAGMA busy_timeout = {usual_busy_timeout}"),
    ));
    let writes = joined(writes);
    counted(
        store,
        &writes,
        query(&writes.0, batch.len()).execute(&mut **conn).await,
    )?;
    Ok(Staged {
        outcome: Outcome::Answered {
            answers,
            written: steps.len(),
        },
        restored: true,
    })
}

/// No busy handler, `BEGIN IMMEDIATE`, the batch's active keys (as [`ACTIVE_KEY`]), and its runs.
fn reads(batch: &[PendingStep]) -> (Statement, usize) {
    let mut keys: Vec<&str> = batch.iter().filter_map(|p| p.key_id.as_deref()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut statements = vec![
        Statement::from_string(DbBackend::Sqlite, "PRAGMA busy_timeout = 0"),
        Statement::from_string(DbBackend::Sqlite, "BEGIN IMMEDIATE"),
    ];
    if !keys.is_empty() {
        statements.push(
            api_key::Entity::find()
                .select_only()
                .column_as(api_key::Column::Id, ACTIVE_KEY)
                .filter(api_key::Column::Id.is_in(keys))
                .filter(api_key::Column::RevokedAt.is_null())
                .build(DbBackend::Sqlite),
        );
    }
    statements.push(
        run::Entity::find()
            .filter(run::Column::Id.is_in(run_ids(batch)))
            .build(DbBackend::Sqlite),
    );
    joined(statements)
}

/// Batches of at most this many reports keep their prepared statements in the connection's cache.
/// The text of a request depends on how many steps, runs and keys it holds, so larger batches
/// would churn the cache (100 statements per connection) with large prepared statements: under a
/// steady load that grew the server's memory by half in ten minutes. Preparing a large batch's
/// statements afresh costs little next to its commit.
const CACHED_UP_TO: usize = 4;

fn query(statement: &Statement, reports: usize) -> sqlx::query::Query<'_, Sqlite, SqlxValues> {
    crate::sqlite_request::query(statement, reports <= CACHED_UP_TO)
}

#[cfg(test)]
mod tests {
    use super::{Outcome, write_batch};
    use crate::{
        error::CoreError,
        steps::{lane::fixture::Fixture, write::Written},
        verify,
    };

    /// Two round trips write what the ordinary lane would: a revoked key's report is refused,
    /// a second report decided on a state its run has left is stale, the others are written
    /// (the chain intact, the decisions reproducible); and a batch holding a report the fast
    /// way cannot write (a re-sent step) writes nothing and is handed back whole.
    #[tokio::test]
    async fn a_batch_is_written_in_two_round_trips_or_handed_back_untouched() {
        let f = Fixture::new().await;
        let mut run_ids = Vec::new();
        for _ in 0..3 {
            run_ids.push(f.start_run().await);
        }
        let step = Fixture::clean_step;
        let batch = vec![
            f.pending(&f.revoked_key, step(&run_ids[0], None)).await,
            f.pending(&f.active_key, step(&run_ids[1], None)).await,
            f.pending(&f.active_key, step(&run_ids[2], None)).await,
            // Decided on the same state as the report before it, which moves the run on.
            f.pending(&f.active_key, step(&run_ids[2], None)).await,
        ];

        let Outcome::Answered { answers, written } = write_batch(&f.store, &batch, &|_| {}).await
        else {
            panic!("a batch of clean steps is written the fast way");
        };
        assert_eq!(written, 2);
        assert!(
            matches!(answers[0], Err(CoreError::Unauthenticated(_))),
            "the revoked key's report is refused: {:?}",
            answers[0]
        );
        for answer in &answers[1..3] {
            assert!(
                matches!(answer, Ok(Written::Done(_))),
                "the active key's reports are written: {answer:?}"
            );
        }
        assert!(matches!(answers[3], Ok(Written::Stale)), "{:?}", answers[3]);
        let written_so_far = vec![(0, 0, 0), (1, 5, 1), (1, 5, 1)];
        assert_eq!(f.totals(&run_ids).await, written_so_far);
        for run_id in &run_ids {
            let verified = verify::verify(&f.db, &f.tenant_id, run_id)
                .await
                .expect("verify");
            assert!(
                verified.intact && verified.reproduced,
                "the chain holds and the decisions reproduce: {verified:?}"
            );
        }

        // A re-sent step needs the ordinary way: the whole batch is handed back unwritten.
        let batch = vec![
            f.pending(&f.active_key, step(&run_ids[2], None)).await,
            f.pending(&f.active_key, step(&run_ids[1], Some(0))).await,
        ];
        assert!(matches!(
            write_batch(&f.store, &batch, &|_| {}).await,
            Outcome::Ordinary
        ));
        assert_eq!(
            f.totals(&run_ids).await,
            written_so_far,
            "nothing of a handed-back batch is written"
        );
        // And the connection it used is usable again: the next batch commits.
        let batch = vec![f.pending(&f.active_key, step(&run_ids[0], None)).await];
        assert!(matches!(
            write_batch(&f.store, &batch, &|_| {}).await,
            Outcome::Answered { written: 1, .. }
        ));
        assert_eq!(f.totals(&run_ids[..1]).await, vec![(1, 5, 1)]);
    }
}
