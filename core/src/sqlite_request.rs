//! Several statements sent to a SQLite connection's thread as one request.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every statement to it and
//! its result back: two thread hand-offs per statement, and on a busy 2-core machine each
//! hand-off waits for a core. A write transaction sent statement by statement holds SQLite's one
//! write lock across all those waits; sent as one request (`BEGIN IMMEDIATE; …; COMMIT`), it
//! holds it for the statements' own work. The step lane ([`crate::steps`]) and the transparency
//! log's sequencer ([`crate::transparency`]) write this way.

use sea_orm::{
    DbBackend, Statement,
    sqlx::{self, AssertSqlSafe, Sqlite, pool::PoolConnection},
};
use sea_query_sqlx::SqlxValues;

use crate::store::{StatementOutcome, Store};

/// SQLite's primary result codes that say how a request was refused (its low byte).
const SQLITE_BUSY: i32 = 5;
const SQLITE_CONSTRAINT: i32 = 19;

/// Statements as one multi-statement request (their `?` parameters bind in order), and how
/// many they are.
pub(crate) fn joined(statements: Vec<Statement>) -> (Statement, usize) {
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
pub(crate) fn counted<T>(
    store: &Store,
    request: &(Statement, usize),
    result: Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error> {
    let outcome = match &result {
        Ok(_) => StatementOutcome::Ok,
        Err(err) => outcome_of(err),
    };
    store.ran_statements(request.1, outcome);
    result
}

/// How a failed request ended: refused by a constraint (a guard, a unique index), refused for
/// the write lock another connection holds, or failed.
pub(crate) fn outcome_of(err: &sqlx::Error) -> StatementOutcome {
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok());
    match code.map(|code| code & 0xff) {
        Some(SQLITE_CONSTRAINT) => StatementOutcome::Refused,
        Some(SQLITE_BUSY) => StatementOutcome::Busy,
        _ => StatementOutcome::Failed,
    }
}

/// The request, its prepared statement kept in the connection's cache when `cached`. A request
/// whose text varies with the size of what it writes should not be: it would churn the cache
/// (100 statements per connection) with large prepared statements.
pub(crate) fn query(
    statement: &Statement,
    cached: bool,
) -> sqlx::query::Query<'_, Sqlite, SqlxValues> {
    let values = statement
        .values
        .clone()
        .unwrap_or_else(|| sea_orm::Values(Vec::new()));
    sqlx::query_with(AssertSqlSafe(statement.sql.as_str()), SqlxValues(values)).persistent(cached)
}

/// Give `conn` its usual busy timeout (ms) back after a spell without SQLite's busy handler.
/// A connection that cannot have it back is closed rather than returned to the pool: with the
/// wrong timeout it must not serve anyone else. Whether it was restored.
pub(crate) async fn restore_busy_timeout(conn: &mut PoolConnection<Sqlite>, usual: i64) -> bool {
    let restored = sqlx::query(AssertSqlSafe(format!("PRAGMA busy_timeout = {usual}")))
        .execute(&mut **conn)
        .await;
    if let Err(err) = &restored {
        tracing::warn!(error = %err, "cannot restore a connection's busy timeout; closing it");
        conn.close_on_drop();
    }
    restored.is_ok()
}

/// End the transaction without writing. A connection that cannot roll back is not reused.
pub(crate) async fn rollback(store: &Store, conn: &mut PoolConnection<Sqlite>) {
    let rolled_back = sqlx::query("ROLLBACK").execute(&mut **conn).await;
    store.ran_statements(1, StatementOutcome::of(rolled_back.is_ok()));
    if let Err(err) = rolled_back {
        let no_transaction = err
            .as_database_error()
            .is_some_and(|e| e.message().contains("no transaction is active"));
        if !no_transaction {
            tracing::warn!(error = %err, "rollback of a one-request transaction failed; closing its connection");
            conn.close_on_drop();
        }
    }
}
