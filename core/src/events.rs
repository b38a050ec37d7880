//! The transactional outbox. A state change and its event are written in the same transaction;
//! subscribers, webhooks and follow-up jobs are driven from these rows, which are never updated.
//! Each tenant's events carry a gap-free increasing `seq` that clients resume from.

use governance_entities::event;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
    sea_query::{Expr, Query, SimpleExpr},
};
use serde_json::Value;

use crate::{error::CoreResult, time::now};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    RunStarted,
    RunCompleted,
    RunStopped,
    IncidentCreated,
    IncidentAcknowledged,
    IncidentResolved,
    ExportUpdated,
    AuditCompleted,
    /// The tenant's transparency log has a new signed checkpoint.
    CheckpointSigned,
    /// The kill switch stopped the running runs of a scope and refuses new ones.
    RunsHalted,
    /// A halt was lifted.
    RunsResumed,
    /// A step was held for approval.
    ApprovalRequested,
    /// A held step was approved: it continues.
    ApprovalGranted,
    /// A held step was denied: its run stopped.
    ApprovalDenied,
    /// Nobody decided a held step in time: its policy's `onTimeout` applied.
    ApprovalExpired,
    /// A held step's run ended before anyone decided it.
    ApprovalCancelled,
    /// A simulation changed status or progress.
    SimulationUpdated,
}

impl EventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::RunStarted => "RUN_STARTED",
            EventKind::RunCompleted => "RUN_COMPLETED",
            EventKind::RunStopped => "RUN_STOPPED",
            EventKind::IncidentCreated => "INCIDENT_CREATED",
            EventKind::IncidentAcknowledged => "INCIDENT_ACKNOWLEDGED",
            EventKind::IncidentResolved => "INCIDENT_RESOLVED",
            EventKind::ExportUpdated => "EXPORT_UPDATED",
            EventKind::AuditCompleted => "AUDIT_COMPLETED",
            EventKind::CheckpointSigned => "CHECKPOINT_SIGNED",
            EventKind::RunsHalted => "RUNS_HALTED",
            EventKind::RunsResumed => "RUNS_RESUMED",
            EventKind::ApprovalRequested => "APPROVAL_REQUESTED",
            EventKind::ApprovalGranted => "APPROVAL_GRANTED",
            EventKind::ApprovalDenied => "APPROVAL_DENIED",
            EventKind::ApprovalExpired => "APPROVAL_EXPIRED",
            EventKind::ApprovalCancelled => "APPROVAL_CANCELLED",
            EventKind::SimulationUpdated => "SIMULATION_UPDATED",
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub subject_id: String,
    pub run_id: Option<String>,
    pub severity_rank: Option<i32>,
    pub payload: Value,
}

/// Append an event inside the caller's transaction and return the stored row.
///
/// The per-tenant sequence is taken under a per-tenant lock held until commit (PostgreSQL: a
/// transaction-scoped advisory lock; SQLite: the single-writer lock of [`crate::store::Store`]),
/// so sequence numbers become visible in order and a reader never sees seq N+1 before N.
pub async fn append<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    new: NewEvent,
) -> CoreResult<event::Model> {
    let backend = conn.get_database_backend();
    if let Some(lock) = lock_statement(backend, tenant_id) {
        conn.execute_raw(lock).await?;
    }
    event::Entity::find()
        .from_raw_sql(insert_statement(backend, tenant_id, new, None))
        .one(conn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("an event insert returned no row").into())
}

/// The statements that append an event, for a transaction that sends its statements together
/// ([`crate::store::Store::commit_statements`]): on PostgreSQL the tenant's event lock, then
/// the insert, which takes the next sequence number itself and returns the stored row.
pub(crate) fn append_statements(
    backend: DbBackend,
    tenant_id: &str,
    new: NewEvent,
) -> Vec<Statement> {
    statements_of(backend, tenant_id, new, None)
}

/// [`append_statements`], inserting the event only if `condition` holds when it runs.
pub(crate) fn append_statements_if(
    backend: DbBackend,
    tenant_id: &str,
    new: NewEvent,
    condition: SimpleExpr,
) -> Vec<Statement> {
    statements_of(backend, tenant_id, new, Some(condition))
}

/// The tenant's event lock (PostgreSQL) and the insert, under `condition` if any.
fn statements_of(
    backend: DbBackend,
    tenant_id: &str,
    new: NewEvent,
    condition: Option<SimpleExpr>,
) -> Vec<Statement> {
    let mut statements: Vec<Statement> = lock_statement(backend, tenant_id).into_iter().collect();
    statements.push(insert_statement(backend, tenant_id, new, condition));
    statements
}

/// PostgreSQL: the tenant's event lock, held until commit.
fn lock_statement(backend: DbBackend, tenant_id: &str) -> Option<Statement> {
    (backend == DbBackend::Postgres).then(|| {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("events:{tenant_id}").into()],
        )
    })
}

/// The insert of the event with the tenant's next sequence number, returning the stored row;
/// with a `condition`, only if it holds.
fn insert_statement(
    backend: DbBackend,
    tenant_id: &str,
    new: NewEvent,
    condition: Option<SimpleExpr>,
) -> Statement {
    let next_seq = Query::select()
        .expr(Expr::cust("COALESCE(MAX(seq), 0) + 1"))
        .from(event::Entity)
        .and_where(event::Column::TenantId.eq(tenant_id))
        .to_owned();
    let mut next = Query::select()
        .expr(Expr::val(tenant_id))
        .expr(SimpleExpr::SubQuery(None, Box::new(next_seq.into())))
        .expr(Expr::val(new.kind.as_str()))
        .expr(Expr::val(new.subject_id))
        .expr(Expr::val(new.run_id))
        .expr(Expr::val(new.severity_rank))
        .expr(Expr::val(new.payload))
        .expr(Expr::val(now()))
        .to_owned();
    if let Some(condition) = condition {
        next.and_where(condition);
    }
    let insert = Query::insert()
        .into_table(event::Entity)
        .columns([
            event::Column::TenantId,
            event::Column::Seq,
            event::Column::Kind,
            event::Column::SubjectId,
            event::Column::RunId,
            event::Column::SeverityRank,
            event::Column::Payload,
            event::Column::CreatedAt,
        ])
        .select_from(next)
        .expect("as many values as columns")
        .returning_all()
        .to_owned();
    backend.build(&insert)
}

/// The stored events of one run, in sequence order.
pub async fn of_run<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<Vec<event::Model>> {
    Ok(event::Entity::find()
        .filter(event::Column::TenantId.eq(tenant_id))
        .filter(event::Column::RunId.eq(run_id))
        .order_by_asc(event::Column::Seq)
        .all(conn)
        .await?)
}

/// The stored events of a tenant after sequence number `after`, in sequence order, at most
/// `limit`: what a subscriber replays, or catches up on.
pub async fn after<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    after: i64,
    limit: u64,
) -> CoreResult<Vec<event::Model>> {
    Ok(event::Entity::find()
        .filter(event::Column::TenantId.eq(tenant_id))
        .filter(event::Column::Seq.gt(after))
        .order_by_asc(event::Column::Seq)
        .limit(limit)
        .all(conn)
        .await?)
}

/// The tenant's latest sequence number (0 before any event).
pub async fn latest_seq<C: ConnectionTrait>(conn: &C, tenant_id: &str) -> CoreResult<i64> {
    let last: Option<i64> = event::Entity::find()
        .select_only()
        .column(event::Column::Seq)
        .filter(event::Column::TenantId.eq(tenant_id))
        .order_by_desc(event::Column::Seq)
        .limit(1)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(last.unwrap_or(0))
}
