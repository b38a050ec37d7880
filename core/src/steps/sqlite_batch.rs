//! The lane's group commit on SQLite, in one round trip to the connection's thread, or two.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every statement to it and
//! its result back: two thread hand-offs per statement. A batch written statement by statement
//! (BEGIN, keys, runs, insert, update, COMMIT) therefore cost six round trips, and on a busy
//! 2-core machine each hand-off waits for a core. Here a batch is multi-statement requests on one
//! connection.
//!
//! **One request, as decided.** Each report arrives with the run its decision was made on. When
//! every report of the batch is a new clean step of a run of its own, the lane stages the batch
//! from those runs, reading nothing, and sends one request: `BEGIN IMMEDIATE`, the runs' totals
//! (guarded, see [`guarded_totals`]), the new steps, and `COMMIT` with its fsync. The guard makes
//! the request fail, before anything is committed, unless every run is still as its decision saw
//! it and every key is still active: a run another process moved on, or a key revoked since, is
//! caught inside the transaction that would have written the step.
//!
//! **Two requests, as read.** Otherwise, or when the guard failed:
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
    write::{Written, insert_steps_statements, run_totals_statement, totals_row},
};
use crate::placeholders::values_rows;
use crate::{
    error::CoreResult,
    sqlite_request::{counted, joined, outcome_of, restore_busy_timeout, rollback},
    store::{StatementOutcome, Store},
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

/// Write `batch` in one transaction of one round trip or two, or hand it back untouched.
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
    if let Some(decided) = AsDecided::plan(batch, usual) {
        if store.commit_fault() {
            return injected_failure(decided.answers);
        }
        let written = decided.steps;
        let request = &decided.request;
        let mut patience = LockPatience::start();
        let result = loop {
            let result = counted(
                store,
                request,
                query(&request.0, batch.len()).execute(&mut *conn).await,
            );
            if !patience.send_again(&result).await {
                break result;
            }
        };
        patience.told(tell);
        match result {
            Ok(_) => {
                return Outcome::Answered {
                    answers: decided.answers,
                    written,
                };
            }
            // A run moved on, a key was revoked, or the write lock stayed taken past the lane's
            // patience: nothing was committed, and the batch is read and staged afresh below.
            Err(err) => {
                if outcome_of(&err) == StatementOutcome::Refused {
                    tell(LaneEvent::GuardRefused);
                }
                tracing::debug!(error = %err, size = batch.len(), "the step batch as decided was refused; reading it afresh");
                rollback(store, &mut conn).await;
            }
        }
    }
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
        store.ran_statements(1, StatementOutcome::of(restored));
    }
    outcome.outcome
}

/// What became of a batch, and whether its connection has its busy timeout back.
struct Staged {
    outcome: Outcome,
    restored: bool,
}

/// How long a request that begins with `BEGIN IMMEDIATE` ([`begin_without_busy_handler`]) has
/// waited for SQLite's write lock another connection holds. A request refused for the lock
/// stopped at its `BEGIN`, with nothing done and no transaction open, so it is sent again every
/// [`LOCK_RETRY`], for at most [`LOCK_PATIENCE`].
struct LockPatience {
    started: tokio::time::Instant,
    waited: bool,
}

impl LockPatience {
    fn start() -> Self {
        Self {
            started: tokio::time::Instant::now(),
            waited: false,
        }
    }

    /// Whether the request that ended in `result` is to be sent again: it was refused for the
    /// lock and patience is left. If so, this returns after [`LOCK_RETRY`].
    async fn send_again<T>(&mut self, result: &Result<T, sqlx::Error>) -> bool {
        let busy = result
            .as_ref()
            .is_err_and(|err| outcome_of(err) == StatementOutcome::Busy);
        if !busy || self.started.elapsed() >= LOCK_PATIENCE {
            return false;
        }
        self.waited = true;
        tokio::time::sleep(LOCK_RETRY).await;
        true
    }

    /// Tell `tell` how long the request waited, if it did.
    fn told(self, tell: &(dyn Fn(LaneEvent) + Sync)) {
        if self.waited {
            tell(LaneEvent::WaitedForLock(self.started.elapsed()));
        }
    }
}

async fn stage_and_write(
    store: &Store,
    conn: &mut PoolConnection<Sqlite>,
    batch: &[PendingStep],
    usual_busy_timeout: i64,
    tell: &(dyn Fn(LaneEvent) + Sync),
) -> CoreResult<Staged> {
    // Round trip 1: the transaction, the keys still active, the runs as they stand.
    let reads = reads(batch);
    let mut patience = LockPatience::start();
    let rows = loop {
        let result = counted(
            store,
            &reads,
            query(&reads.0, batch.len()).fetch_all(&mut **conn).await,
        );
        if !patience.send_again(&result).await {
            break result;
        }
    };
    patience.told(tell);
    let rows = rows?;
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
        return Ok(Staged {
            outcome: injected_failure(answers),
            restored: false,
        });
    }

    // Round trip 2: the steps, the runs' totals, the usual busy timeout, the commit.
    let mut writes = insert_steps_statements(DbBackend::Sqlite, &steps);
    writes.extend(run_totals_statement(DbBackend::Sqlite, &runs));
    writes.extend(restore_and_commit(usual_busy_timeout));
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

/// The start of both requests that begin a batch's transaction: no busy handler (see
/// [`write_batch`]), then `BEGIN IMMEDIATE`, which takes SQLite's write lock or fails at once.
fn begin_without_busy_handler() -> [Statement; 2] {
    [
        Statement::from_string(DbBackend::Sqlite, "PRAGMA busy_timeout = 0"),
        Statement::from_string(DbBackend::Sqlite, "BEGIN IMMEDIATE"),
    ]
}

/// The end of a write request: the connection's usual busy timeout, then `COMMIT`. The commit
/// comes last, so a request that succeeded is committed and one that failed is not: a failure
/// after the commit would have the batch read afresh and its steps decided again on runs that
/// already hold them.
fn restore_and_commit(usual_busy_timeout: i64) -> [Statement; 2] {
    [
        Statement::from_string(
            DbBackend::Sqlite,
            format!("PRAGMA busy_timeout = {usual_busy_timeout}"),
        ),
        Statement::from_string(DbBackend::Sqlite, "COMMIT"),
    ]
}

/// A commit the test hook made fail ([`Store::fail_next_commits`]): every report that would
/// have been written is answered with the failure, and nothing is written.
fn injected_failure(answers: Vec<CoreResult<Written>>) -> Outcome {
    let answers = answers
        .into_iter()
        .map(|answer| match answer {
            Ok(Written::Done(_)) => {
                Err(anyhow::anyhow!("injected commit failure (test hook)").into())
            }
            other => other,
        })
        .collect();
    Outcome::Answered {
        answers,
        written: 0,
    }
}

/// A batch staged from the runs its decisions were made on, and the one request that writes it.
struct AsDecided {
    answers: Vec<CoreResult<Written>>,
    /// How many steps the request writes.
    steps: usize,
    request: (Statement, usize),
}

impl AsDecided {
    /// The batch as decided, when every report is a new clean step of a run no other report of
    /// the batch has (reports of one run are decided one after another in this process, so a
    /// batch seldom holds two); else `None`. `usual` is the connection's busy timeout, given back
    /// at the end of the request.
    fn plan(batch: &[PendingStep], usual: i64) -> Option<Self> {
        let mut seen = HashSet::with_capacity(batch.len());
        let mut decided_on = Vec::with_capacity(batch.len());
        for pending in batch {
            let decided = pending.decided.as_ref()?;
            if !seen.insert(decided.run.id.as_str()) {
                return None;
            }
            decided_on.push(decided.run.clone());
        }
        // Every key counts as active here; the request's guard is what checks them.
        let keys: HashSet<String> = batch.iter().filter_map(|p| p.key_id.clone()).collect();
        let mut group = Group::of(decided_on);
        let mut answers = Vec::with_capacity(batch.len());
        for pending in batch {
            match group.answer(pending, &keys) {
                Some(answer @ Ok(Written::Done(_))) => answers.push(answer),
                _ => return None,
            }
        }
        let (steps, runs) = group.take_writes().ok()?;
        let mut guarded = Vec::with_capacity(batch.len());
        for (pending, after) in batch.iter().zip(runs) {
            let before = &pending.decided.as_ref()?.run;
            if before.id != after.id {
                return None;
            }
            guarded.push(GuardedRun {
                before,
                after,
                key_id: pending.key_id.as_deref(),
            });
        }
        let mut statements = Vec::from(begin_without_busy_handler());
        statements.push(guarded_totals(&guarded));
        statements.extend(insert_steps_statements(DbBackend::Sqlite, &steps));
        statements.extend(restore_and_commit(usual));
        Some(Self {
            answers,
            steps: steps.len(),
            request: joined(statements),
        })
    }
}

/// A run of a batch written as decided: as its decision saw it, as the batch leaves it, and the
/// key its step was reported with (`None` for the service's own reports).
struct GuardedRun<'a> {
    before: &'a run::Model,
    after: &'a run::Model,
    key_id: Option<&'a str>,
}

/// The runs' new totals, refused unless each run is still as its decision saw it (status, step
/// count, chain head: [`super::decision::Basis`]) and its step's key is still active.
///
/// SQLite raises errors from constraints and triggers only, so the guard is a constraint: a run
/// that fails it would get no step count, and `runs.step_count` is `NOT NULL`. The statement then
/// fails as a whole, before the steps are inserted, and the request stops there; the lane rolls
/// the transaction back and reads the batch afresh.
fn guarded_totals(runs: &[GuardedRun<'_>]) -> Statement {
    const COLUMNS: usize = 10;
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(runs.len() * COLUMNS);
    for run in runs {
        let before = run.before;
        values.extend(totals_row(run.after));
        values.extend([
            before.status.as_str().into(),
            before.step_count.into(),
            before.trace_head_hash.clone().into(),
            run.key_id.map(str::to_string).into(),
        ]);
    }
    let sql = format!(
        "UPDATE runs SET tokens_used = v.column2, cost_micros = v.column3, \
         step_count = CASE WHEN runs.status = v.column7 AND runs.step_count = v.column8 \
         AND runs.trace_head_hash = v.column9 AND (v.column10 IS NULL OR EXISTS \
         (SELECT 1 FROM api_keys AS k WHERE k.id = v.column10 AND k.revoked_at IS NULL)) \
         THEN v.column4 END, trace_head_hash = v.column5, updated_at = v.column6 \
         FROM (VALUES {}) AS v WHERE runs.id = v.column1",
        values_rows(DbBackend::Sqlite, 1, runs.len(), COLUMNS)
    );
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

/// No busy handler, `BEGIN IMMEDIATE`, the batch's active keys (as [`ACTIVE_KEY`]), and its runs.
fn reads(batch: &[PendingStep]) -> (Statement, usize) {
    let mut keys: Vec<&str> = batch.iter().filter_map(|p| p.key_id.as_deref()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut statements = Vec::from(begin_without_busy_handler());
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
    use std::sync::{Arc, Mutex};

    use super::{Outcome, write_batch};
    use crate::{
        error::CoreError,
        steps::{
            lane::{LaneEvent, fixture::Fixture},
            write::Written,
        },
        store::StatementOutcome::{self, Busy, Ok as Done, Refused},
        verify,
    };
    use sea_orm::sqlx;

    type Requests = Vec<(usize, StatementOutcome)>;

    /// The requests sent outside SeaORM from now on: each one's statement count, and how it
    /// ended.
    fn requests(f: &Fixture) -> Arc<Mutex<Requests>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        f.store.observe_statements(Arc::new(move |count, outcome| {
            log.lock().expect("requests").push((count, outcome));
        }));
        seen
    }

    /// How many times the lane would have told its observer of a guard's refusal.
    fn guard_refusals() -> (Arc<Mutex<usize>>, impl Fn(LaneEvent) + Sync) {
        let count = Arc::new(Mutex::new(0));
        let seen = count.clone();
        (count, move |event| {
            if event == LaneEvent::GuardRefused {
                *seen.lock().expect("refusals") += 1;
            }
        })
    }

    fn taken(seen: &Mutex<Requests>) -> Requests {
        std::mem::take(&mut *seen.lock().expect("requests"))
    }

    /// New clean steps of runs of their own are written in ONE request, from the runs their
    /// decisions were made on; a run that moved on since its decision, or a key revoked since,
    /// fails that request's guard before anything is committed, and the batch is read afresh
    /// and answered as the read says (stale, refused), with nothing written twice.
    #[tokio::test]
    async fn a_batch_as_decided_is_one_request_and_its_guard_catches_what_changed_since() {
        let f = Fixture::new().await;
        let seen = requests(&f);
        let (a, b) = (f.start_run().await, f.start_run().await);
        let step = Fixture::clean_step;
        // Two decisions on run `a` as it stands now: the first one written moves `a` on.
        let first = f.pending(&f.active_key, step(&a, None)).await;
        let overtaken = f.pending(&f.active_key, step(&a, None)).await;
        let of_b = f.pending(&f.active_key, step(&b, None)).await;
        taken(&seen);

        let Outcome::Answered { answers, written } = write_batch(&f.store, &[first], &|_| {}).await
        else {
            panic!("a clean step as decided is written");
        };
        assert_eq!(written, 1);
        assert!(matches!(answers[0], Ok(Written::Done(_))), "{answers:?}");
        // PRAGMA, BEGIN IMMEDIATE, totals, steps, PRAGMA, COMMIT: one request.
        assert_eq!(taken(&seen), vec![(6, Done)], "one request, nothing else");

        // `a` moved on since `overtaken` was decided: the guard refuses the request (counted as
        // refused, not failed, and told to the lane's observer), and the batch read afresh
        // answers it stale (its caller decides again) and writes `b`'s step.
        let (refusals, tell) = guard_refusals();
        let Outcome::Answered { answers, written } =
            write_batch(&f.store, &[overtaken, of_b], &tell).await
        else {
            panic!("the batch is answered");
        };
        assert_eq!(written, 1);
        assert!(matches!(answers[0], Ok(Written::Stale)), "{:?}", answers[0]);
        assert!(
            matches!(answers[1], Ok(Written::Done(_))),
            "{:?}",
            answers[1]
        );
        let sent = taken(&seen);
        assert_eq!(
            sent[0],
            (6, Refused),
            "the request as decided was refused: {sent:?}"
        );
        assert!(
            sent[1..].iter().all(|(_, ended)| *ended == Done),
            "{sent:?}"
        );
        assert_eq!(*refusals.lock().expect("refusals"), 1);
        assert_eq!(
            f.totals(&[a.clone(), b.clone()]).await,
            vec![(1, 5, 1), (1, 5, 1)]
        );

        // A key revoked after the decision: refused, and its step is not written.
        let revoked = f.pending(&f.revoked_key, step(&b, None)).await;
        taken(&seen);
        let Outcome::Answered { answers, written } =
            write_batch(&f.store, &[revoked], &|_| {}).await
        else {
            panic!("the batch is answered");
        };
        assert_eq!(written, 0);
        assert!(
            matches!(answers[0], Err(CoreError::Unauthenticated(_))),
            "{:?}",
            answers[0]
        );
        assert_eq!(taken(&seen)[0], (6, Refused));
        assert_eq!(
            f.totals(&[a.clone(), b.clone()]).await,
            vec![(1, 5, 1), (1, 5, 1)]
        );

        // A run ended since the decision (same step count, same chain head): the guard refuses
        // the request, and the batch, read afresh, needs the ordinary way; nothing is written.
        let after_end = f.pending(&f.active_key, step(&b, None)).await;
        crate::runs::cancel(&f.store, &f.tenant_id, &b, None)
            .await
            .expect("cancel");
        taken(&seen);
        assert!(matches!(
            write_batch(&f.store, &[after_end], &|_| {}).await,
            Outcome::Ordinary
        ));
        assert_eq!(taken(&seen)[0], (6, Refused));
        assert_eq!(f.totals(std::slice::from_ref(&b)).await, vec![(1, 5, 1)]);
        for run_id in [&a, &b] {
            let verified = verify::verify(&f.db, &f.tenant_id, run_id)
                .await
                .expect("verify");
            assert!(verified.intact && verified.reproduced, "{verified:?}");
        }
    }

    /// Another connection holding SQLite's write lock (the job queue's, a checkpoint's reset)
    /// does not cost a batch as decided its one request, nor its guard: the request is sent
    /// again until the lock is free, the wait is told, and the step is written by that request.
    #[tokio::test]
    async fn a_batch_as_decided_is_sent_again_while_another_connection_holds_the_write_lock() {
        let f = Fixture::new().await;
        let run = f.start_run().await;
        let pending = f
            .pending(&f.active_key, Fixture::clean_step(&run, None))
            .await;
        let mut holder = f
            .store
            .db()
            .get_sqlite_connection_pool()
            .acquire()
            .await
            .expect("a second connection");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *holder)
            .await
            .expect("the write lock");
        let (sent, mut requests) = tokio::sync::mpsc::unbounded_channel();
        f.store.observe_statements(Arc::new(move |count, outcome| {
            let _ = sent.send((count, outcome));
        }));
        let told = Arc::new(Mutex::new(Vec::new()));
        let tell = {
            let told = told.clone();
            move |event| told.lock().expect("events").push(event)
        };
        let store = f.store.clone();
        let writing = tokio::spawn(async move { write_batch(&store, &[pending], &tell).await });

        // The lock is let go once the batch has met it.
        let mut seen = Vec::new();
        while !seen.contains(&(6, Busy)) {
            seen.push(requests.recv().await.expect("the batch's requests"));
        }
        sqlx::query("COMMIT")
            .execute(&mut *holder)
            .await
            .expect("the lock let go");
        let Outcome::Answered { answers, written } = writing.await.expect("the batch") else {
            panic!("a clean step as decided is written");
        };
        assert_eq!(written, 1);
        assert!(matches!(answers[0], Ok(Written::Done(_))), "{answers:?}");
        while let Ok(request) = requests.try_recv() {
            seen.push(request);
        }
        let batch: Requests = seen.into_iter().filter(|(count, _)| *count == 6).collect();
        let (last, waits) = batch.split_last().expect("requests");
        assert_eq!(
            *last,
            (6, Done),
            "the request as decided wrote it: {batch:?}"
        );
        assert!(
            waits.iter().all(|request| *request == (6, Busy)),
            "before that, only the lock refused it: {batch:?}"
        );
        let told = std::mem::take(&mut *told.lock().expect("events"));
        assert!(
            matches!(told.as_slice(), [LaneEvent::WaitedForLock(_)]),
            "the wait is told, and nothing else: {told:?}"
        );
        assert_eq!(f.totals(std::slice::from_ref(&run)).await, vec![(1, 5, 1)]);
    }

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
