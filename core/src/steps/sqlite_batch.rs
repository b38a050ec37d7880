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

use std::collections::HashSet;

use governance_entities::{api_key, run};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryResult, QuerySelect,
    QueryTrait, Statement,
    sqlx::{self, AssertSqlSafe, Row, Sqlite, pool::PoolConnection},
};
use sea_query_sqlx::SqlxValues;

use super::{
    lane::{Group, PendingStep, run_ids},
    write::{Written, insert_steps_statements, run_totals_statement},
};
use crate::{error::CoreResult, store::Store};

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

/// Write `batch` in one transaction of two round trips, or hand it back untouched.
pub(super) async fn write_batch(store: &Store, batch: &[PendingStep]) -> Outcome {
    // This process's writers take turns; the lane's turn comes ahead of ordinary writers.
    let _turn = store.writer_turn().await;
    let mut conn = match store.db().get_sqlite_connection_pool().acquire().await {
        Ok(conn) => conn,
        Err(err) => {
            tracing::warn!(error = %err, "no connection for the step batch; writing it the ordinary way");
            return Outcome::Ordinary;
        }
    };
    match stage_and_write(store, &mut conn, batch).await {
        Ok(outcome) => outcome,
        Err(err) => {
            // The transaction may be open (a failed write) or not (a failed BEGIN).
            rollback(store, &mut conn).await;
            tracing::warn!(error = %err, size = batch.len(), "the step batch failed; writing it the ordinary way");
            Outcome::Ordinary
        }
    }
}

async fn stage_and_write(
    store: &Store,
    conn: &mut PoolConnection<Sqlite>,
    batch: &[PendingStep],
) -> CoreResult<Outcome> {
    // Round trip 1: the transaction, the keys still active, the runs as they stand.
    let reads = reads(batch);
    let rows = counted(
        store,
        &reads,
        query(&reads.0, batch.len()).fetch_all(&mut **conn).await,
    )?;
    let mut active = HashSet::new();
    let mut runs = Vec::with_capacity(batch.len());
    for row in rows {
        match row.try_get::<String, _>(ACTIVE_KEY) {
            Ok(key) => {
                active.insert(key);
            }
            Err(_) => runs.push(run::Model::from_query_result(&QueryResult::from(row), "")?),
        }
    }

    let mut group = Group::of(runs);
    let mut answers = Vec::with_capacity(batch.len());
    for pending in batch {
        match group.answer(pending, &active) {
            Some(answer) => answers.push(answer),
            None => {
                rollback(store, conn).await;
                return Ok(Outcome::Ordinary);
            }
        }
    }
    let (steps, runs) = group.take_writes()?;
    if steps.is_empty() {
        rollback(store, conn).await;
        return Ok(Outcome::Answered {
            answers,
            written: 0,
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
        return Ok(Outcome::Answered {
            answers,
            written: 0,
        });
    }

    // Round trip 2: the steps, the runs' totals, the commit.
    let mut writes = insert_steps_statements(DbBackend::Sqlite, &steps);
    writes.extend(run_totals_statement(DbBackend::Sqlite, &runs));
    writes.push(Statement::from_string(DbBackend::Sqlite, "COMMIT"));
    let writes = joined(writes);
    counted(
        store,
        &writes,
        query(&writes.0, batch.len()).execute(&mut **conn).await,
    )?;
    Ok(Outcome::Answered {
        answers,
        written: steps.len(),
    })
}

/// `BEGIN IMMEDIATE`, the batch's active keys (as [`ACTIVE_KEY`]), and its runs.
fn reads(batch: &[PendingStep]) -> (Statement, usize) {
    let mut keys: Vec<&str> = batch.iter().filter_map(|p| p.key_id.as_deref()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut statements = vec![Statement::from_string(DbBackend::Sqlite, "BEGIN IMMEDIATE")];
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

/// Statements as one multi-statement request (their `?` parameters bind in order), and how
/// many they are.
fn joined(statements: Vec<Statement>) -> (Statement, usize) {
    let count = statements.len();
    let mut sql = String::new();
    let mut values = Vec::new();
    for statement in statements {
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&statement.sql);
        if let Some(bound) = statement.values {
            values.extend(bound.0);
        }
    }
    (
        Statement::from_sql_and_values(DbBackend::Sqlite, sql, values),
        count,
    )
}

/// Count a request's statements with the store's other statements.
fn counted<T>(
    store: &Store,
    request: &(Statement, usize),
    result: Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error> {
    store.ran_statements(request.1, result.is_err());
    result
}

/// Batches of at most this many reports keep their prepared statements in the connection's cache.
/// The text of a request depends on how many steps, runs and keys it holds, so larger batches
/// would churn the cache (100 statements per connection) with large prepared statements: under a
/// steady load that grew the server's memory by half in ten minutes. Preparing a large batch's
/// statements afresh costs little next to its commit.
const CACHED_UP_TO: usize = 4;

fn query(statement: &Statement, reports: usize) -> sqlx::query::Query<'_, Sqlite, SqlxValues> {
    let values = statement
        .values
        .clone()
        .unwrap_or_else(|| sea_orm::Values(Vec::new()));
    sqlx::query_with(AssertSqlSafe(statement.sql.as_str()), SqlxValues(values))
        .persistent(reports <= CACHED_UP_TO)
}

/// End the transaction without writing. A connection that cannot roll back is not reused.
async fn rollback(store: &Store, conn: &mut PoolConnection<Sqlite>) {
    let rolled_back = sqlx::query("ROLLBACK").execute(&mut **conn).await;
    store.ran_statements(1, rolled_back.is_err());
    if let Err(err) = rolled_back {
        let no_transaction = err
            .as_database_error()
            .is_some_and(|e| e.message().contains("no transaction is active"));
        if !no_transaction {
            tracing::warn!(error = %err, "rollback of a step batch failed; closing its connection");
            conn.close_on_drop();
        }
    }
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

        let Outcome::Answered { answers, written } = write_batch(&f.store, &batch).await else {
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
            write_batch(&f.store, &batch).await,
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
            write_batch(&f.store, &batch).await,
            Outcome::Answered { written: 1, .. }
        ));
        assert_eq!(f.totals(&run_ids[..1]).await, vec![(1, 5, 1)]);
    }
}
