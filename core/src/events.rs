//! The transactional outbox. A state change and its event are written in the same transaction;
//! subscribers, webhooks and follow-up jobs are driven from these rows, which are never updated.
//! Each tenant's events carry a gap-free increasing `seq` that clients resume from.

use governance_entities::event;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, Statement,
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
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("events:{tenant_id}").into()],
        ))
        .await?;
    }
    let last: Option<i64> = event::Entity::find()
        .select_only()
        .column(event::Column::Seq)
        .filter(event::Column::TenantId.eq(tenant_id))
        .order_by_desc(event::Column::Seq)
        .limit(1)
        .into_tuple()
        .one(conn)
        .await?;
    let model = event::ActiveModel {
        tenant_id: Set(tenant_id.to_string()),
        seq: Set(last.unwrap_or(0) + 1),
        kind: Set(new.kind.as_str().to_string()),
        subject_id: Set(new.subject_id),
        run_id: Set(new.run_id),
        severity_rank: Set(new.severity_rank),
        payload: Set(new.payload),
        created_at: Set(now()),
        ..Default::default()
    };
    Ok(event::Entity::insert(model)
        .exec_with_returning(conn)
        .await?)
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
