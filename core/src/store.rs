//! Write transactions. SQLite allows one writer at a time, and a deferred transaction that reads
//! before it writes fails with SQLITE_BUSY (not a wait) when another writer got in first. So on
//! SQLite every write transaction starts with BEGIN IMMEDIATE, and the writers of this process
//! first take one async lock, so they queue in memory rather than in SQLite's busy loop.
//! PostgreSQL needs neither (row locks and advisory locks do it).
//!
//! Group commit of step reports belongs to the step recorder (`crate::steps::Recorder`); the
//! store keeps only the lane for evaluation records, which every store clone shares.

use std::{
    ops::Deref,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, QueryResult,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{
    error::{CoreError, CoreResult},
    sqlite_request,
};

/// The next group commit's worth of a lane's queue: wait for one item, then take whatever else
/// is already waiting, up to `max`. Nothing waits for a batch to fill. `None` once every sender
/// is gone.
pub(crate) async fn next_batch<T>(
    waiting: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    max: usize,
) -> Option<Vec<T>> {
    let first = waiting.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match waiting.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Told of statements run outside SeaORM: how many, and how their request ended.
pub type StatementObserver = Arc<dyn Fn(usize, StatementOutcome) + Send + Sync>;

/// How a request of statements run outside SeaORM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementOutcome {
    Ok,
    /// A constraint refused it, and nothing of it was written: a guarded write whose guard found
    /// the state it was planned from changed (another process, or another writer, got there
    /// first), or a unique index doing the same. Expected under concurrency; the writer plans
    /// again.
    Refused,
    /// SQLite's write lock was held by another connection; the writer tries again.
    Busy,
    /// Anything else.
    Failed,
}

impl StatementOutcome {
    /// A statement whose failure is only a failure (a rollback, restoring a setting).
    pub(crate) fn of(succeeded: bool) -> Self {
        if succeeded { Self::Ok } else { Self::Failed }
    }

    /// The `outcome` label of `governance_db_statements_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Busy => "busy",
            Self::Failed => "failed",
        }
    }
}

/// The database plus what it takes to write to it safely.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    writer: Option<Arc<Mutex<()>>>,
    /// SQLite: taken before `writer` by every write transaction but the group-commit lanes', so
    /// at most one of those waits for `writer` at a time. A burst of other writes (32 runs
    /// started at once, each its own commit) then delays the next group commit by one
    /// transaction, not by the whole burst.
    queue: Option<Arc<Mutex<()>>>,
    faults: Arc<AtomicU32>,
    /// The group-commit lane for evaluation records (SQLite, inside a Tokio runtime).
    evaluation_lane: Option<crate::evaluation::EvaluationLane>,
    /// Told of the statements run outside SeaORM (which counts its own), see
    /// [`Store::observe_statements`].
    statements: Arc<OnceLock<StatementObserver>>,
    /// SQLite: the busy timeout (ms) the pool's connections are opened with, once read.
    busy_timeout: Arc<OnceLock<i64>>,
    /// Keeps the WAL checkpointer (SQLite) running while any clone of this store lives, and
    /// whom it tells of each checkpoint ([`Store::observe_checkpoints`]).
    checkpoints: Arc<OnceLock<crate::db::CheckpointObserver>>,
    /// The key that seals secrets stored in the database (see [`crate::sealing`]).
    secrets: Option<Arc<crate::sealing::SecretsKey>>,
}

impl Store {
    /// Open the store. On SQLite, called inside a Tokio runtime, this also starts the
    /// evaluation-record lane and the WAL checkpointer on that runtime; they end when the last
    /// clone of this store is dropped.
    pub fn new(db: DatabaseConnection) -> Self {
        let sqlite = db.get_database_backend() == DbBackend::Sqlite;
        let writer = sqlite.then(|| Arc::new(Mutex::new(())));
        let queue = sqlite.then(|| Arc::new(Mutex::new(())));
        let mut store = Self {
            db,
            writer,
            queue,
            faults: Arc::new(AtomicU32::new(0)),
            evaluation_lane: None,
            statements: Arc::default(),
            busy_timeout: Arc::default(),
            checkpoints: Arc::default(),
            secrets: None,
        };
        crate::db::checkpoint_in_background(
            store.db.clone(),
            store.writer.clone(),
            Arc::downgrade(&store.checkpoints),
        );
        if sqlite && tokio::runtime::Handle::try_current().is_ok() {
            // A lane's own store has no lane, so a lane does not keep itself alive.
            let plain = store.clone();
            store.evaluation_lane = Some(crate::evaluation::EvaluationLane::start(plain));
        }
        store
    }

    /// This store with the key that seals the secrets it stores (webhook secrets, the
    /// download-link key). A store without one refuses to read or write them.
    pub fn with_secrets(mut self, key: Arc<crate::sealing::SecretsKey>) -> Self {
        self.secrets = Some(key);
        self
    }

    /// The key that seals stored secrets.
    pub fn secrets(&self) -> crate::error::CoreResult<&crate::sealing::SecretsKey> {
        self.secrets.as_deref().ok_or_else(|| {
            crate::error::CoreError::Internal(anyhow::anyhow!(
                "no secrets key: stored secrets can be read and written only with one \
                 (`secrets.key_path`)"
            ))
        })
    }

    /// The group-commit lane for evaluation records, when they are batched.
    pub(crate) fn evaluation_lane(&self) -> Option<&crate::evaluation::EvaluationLane> {
        self.evaluation_lane.as_ref()
    }

    /// Test hook: make the next `n` commits fail (rolled back) as a broken disk or a lost
    /// connection would. Only reachable in-process; used to prove the service fails closed.
    pub fn fail_next_commits(&self, n: u32) {
        self.faults.store(n, Ordering::SeqCst);
    }

    /// SQLite: this process's turn to write, ahead of the queue of ordinary writers (as
    /// [`Store::begin_first`] takes it), for a lane that drives its own connection and
    /// transaction. Hold it until that transaction has ended. `None` on PostgreSQL.
    pub(crate) async fn writer_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.writer {
            Some(lock) => Some(lock_reporting_waits(lock, "writer").await),
            None => None,
        }
    }

    /// SQLite: the busy timeout (ms) the pool's connections are opened with (read from `conn`,
    /// once), for a writer that turns the busy handler off for a while to give it back.
    pub(crate) async fn usual_busy_timeout(
        &self,
        conn: &mut sea_orm::sqlx::SqliteConnection,
    ) -> Result<i64, sea_orm::sqlx::Error> {
        use sea_orm::sqlx::Row;
        if let Some(ms) = self.busy_timeout.get() {
            return Ok(*ms);
        }
        let ms: i64 = sea_orm::sqlx::query("PRAGMA busy_timeout")
            .fetch_one(conn)
            .await?
            .try_get(0)?;
        let _ = self.busy_timeout.set(ms);
        Ok(ms)
    }

    /// SQLite: an ordinary writer's place in the queue (see [`Store`]), taken before
    /// [`Store::writer_turn`]. `None` on PostgreSQL.
    async fn queue_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.queue {
            Some(lock) => Some(lock_reporting_waits(lock, "queue").await),
            None => None,
        }
    }

    /// Whether the commit about to be made must fail instead (see
    /// [`Store::fail_next_commits`]); each `true` uses up one injected failure.
    pub(crate) fn commit_fault(&self) -> bool {
        take_fault(&self.faults)
    }

    /// Tell `observer` how many statements each request run outside SeaORM held, and how it
    /// ended (the SQLite step batch sends several per request), so a statement count kept
    /// through SeaORM's metric callback stays whole. The first observer set stays.
    pub fn observe_statements(&self, observer: StatementObserver) {
        let _ = self.statements.set(observer);
    }

    /// Tell `observer` of every WAL checkpoint this store's checkpointer makes (SQLite), and of
    /// how long each reset held the writer lock. The first observer set stays.
    pub fn observe_checkpoints(&self, observer: crate::db::CheckpointObserver) {
        let _ = self.checkpoints.set(observer);
    }

    pub(crate) fn ran_statements(&self, count: usize, outcome: StatementOutcome) {
        if let Some(observer) = self.statements.get() {
            observer(count, outcome);
        }
    }

    /// The pool, for reads.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Begin a write transaction. Commit it with [`WriteTxn::commit`]; dropping it rolls back.
    pub async fn begin(&self) -> CoreResult<WriteTxn> {
        let queued = self.queue_turn().await;
        let mut txn = self.begin_first().await?;
        txn._queued = queued;
        Ok(txn)
    }

    /// Begin a write transaction ahead of the queue of ordinary ones: it waits for at most the
    /// one transaction in progress and one queued. For the group-commit lanes, whose batches
    /// carry many waiting callers each.
    pub(crate) async fn begin_first(&self) -> CoreResult<WriteTxn> {
        let guard = self.writer_turn().await;
        let options = match self.backend() {
            // READ COMMITTED, the connections' default (see `db::connect`): a plain BEGIN.
            DbBackend::Postgres => TransactionOptions::default(),
            // BEGIN IMMEDIATE takes the write lock up front, waiting (busy_timeout) if another
            // connection holds it. A deferred transaction would instead fail with SQLITE_BUSY when
            // it tries to upgrade from reading to writing while the job queue is writing.
            _ => TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            },
        };
        let txn = self.db.begin_with_options(options).await?;
        Ok(WriteTxn {
            txn,
            _guard: guard,
            _queued: None,
            faults: self.faults.clone(),
        })
    }
}

impl Store {
    /// Commit `statements` as one transaction and return the rows they returned (`RETURNING`),
    /// in order. On SQLite the whole transaction (`BEGIN IMMEDIATE`, the statements, `COMMIT`)
    /// is one request to a connection's thread (see [`crate::sqlite_request`]), so SQLite's
    /// write lock is held for the statements' own work, not for a round trip per statement
    /// through a busy runtime. For writes planned from reads made before it, whose staleness a
    /// unique index or a guarded `UPDATE` catches: nothing here can read and then decide.
    /// A failed statement rolls everything back.
    pub(crate) async fn commit_statements(
        &self,
        statements: Vec<Statement>,
    ) -> CoreResult<Vec<QueryResult>> {
        if self.backend() != DbBackend::Sqlite {
            let txn = self.begin().await?;
            let mut rows = Vec::new();
            for statement in statements {
                rows.extend(txn.query_all_raw(statement).await?);
            }
            txn.commit().await?;
            return Ok(rows);
        }
        let _queued = self.queue_turn().await;
        let _turn = self.writer_turn().await;
        let mut conn = self
            .db
            .get_sqlite_connection_pool()
            .acquire()
            .await
            .map_err(|err| anyhow::anyhow!("no connection to write with: {err}"))?;
        if take_fault(&self.faults) {
            return Err(anyhow::anyhow!("injected commit failure (test hook)").into());
        }
        let mut all = vec![Statement::from_string(DbBackend::Sqlite, "BEGIN IMMEDIATE")];
        all.extend(statements);
        all.push(Statement::from_string(DbBackend::Sqlite, "COMMIT"));
        let request = sqlite_request::joined(all);
        let result = sqlite_request::counted(
            self,
            &request,
            sqlite_request::query(&request.0, false)
                .fetch_all(&mut *conn)
                .await,
        );
        match result {
            Ok(rows) => Ok(rows.into_iter().map(QueryResult::from).collect()),
            Err(err) => {
                sqlite_request::rollback(self, &mut conn).await;
                Err(err.into())
            }
        }
    }
}

/// How long a write transaction waits for a lock before the wait is logged (and again after
/// each such period): a wait this long means a transaction is held far longer than any should be.
const LONG_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Take `lock`, logging a warning for every [`LONG_WAIT`] spent waiting, so a stuck writer
/// shows up in the log instead of as silence.
async fn lock_reporting_waits(lock: &Arc<Mutex<()>>, name: &'static str) -> OwnedMutexGuard<()> {
    let taking = lock.clone().lock_owned();
    tokio::pin!(taking);
    let mut waited = std::time::Duration::ZERO;
    loop {
        match tokio::time::timeout(LONG_WAIT, &mut taking).await {
            Ok(guard) => return guard,
            Err(_) => {
                waited += LONG_WAIT;
                tracing::warn!(
                    lock = name,
                    waited_secs = waited.as_secs(),
                    "a write transaction is still waiting for the store's {name} lock"
                );
            }
        }
    }
}

/// A write transaction holding the writer lock (on SQLite) until it commits or is dropped.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    _guard: Option<OwnedMutexGuard<()>>,
    /// The ordinary writers' queue, held until the end (see [`Store`]).
    _queued: Option<OwnedMutexGuard<()>>,
    faults: Arc<AtomicU32>,
}

impl WriteTxn {
    /// Commit; only after this returns may the change be acknowledged to anyone.
    pub async fn commit(self) -> CoreResult<()> {
        if take_fault(&self.faults) {
            self.txn.rollback().await?;
            return Err(anyhow::anyhow!("injected commit failure (test hook)").into());
        }
        self.txn.commit().await?;
        Ok(())
    }
}

/// Use up one injected commit failure, if any is left.
fn take_fault(faults: &AtomicU32) -> bool {
    faults
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

/// The one row `query` selects, locked for the rest of the transaction: a row lock on
/// PostgreSQL, so concurrent changes of one object are serialised (SQLite has one writer at a
/// time through [`Store`] anyway). `not_found` when there is no such row.
pub async fn one_for_update<E, C>(
    conn: &C,
    query: sea_orm::Select<E>,
    not_found: impl FnOnce() -> CoreError,
) -> CoreResult<E::Model>
where
    E: sea_orm::EntityTrait,
    C: sea_orm::ConnectionTrait,
{
    use sea_orm::QuerySelect;
    let query = if conn.get_database_backend() == DbBackend::Postgres {
        query.lock_exclusive()
    } else {
        query
    };
    query.one(conn).await?.ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::Store;
    use crate::db;

    /// A group commit does not queue behind a burst of ordinary write transactions: it waits
    /// for the one in progress only, and takes the write lock before the ordinary ones queued
    /// ahead of it.
    #[tokio::test]
    async fn a_lane_begins_ahead_of_queued_ordinary_writers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db::migrated_sqlite(dir.path()).await;
        let store = Store::new(db);
        let order = Arc::new(Mutex::new(Vec::new()));
        let settle = || async {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        };

        let first = store.begin().await.expect("first");
        let mut waiting = tokio::task::JoinSet::new();
        for name in ["ordinary 1", "ordinary 2"] {
            let (store, order) = (store.clone(), order.clone());
            waiting.spawn(async move {
                let txn = store.begin().await.expect("begin");
                order.lock().unwrap().push(name);
                txn.commit().await.expect("commit");
            });
            settle().await;
        }
        let (lane_store, lane_order) = (store.clone(), order.clone());
        waiting.spawn(async move {
            let txn = lane_store.begin_first().await.expect("begin first");
            lane_order.lock().unwrap().push("lane");
            txn.commit().await.expect("commit");
        });
        settle().await;
        assert!(order.lock().unwrap().is_empty(), "all wait for the first");
        first.commit().await.expect("commit first");
        while let Some(done) = waiting.join_next().await {
            done.expect("writer task");
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["lane", "ordinary 1", "ordinary 2"]
        );
    }
}
