//! An export's lifecycle: `request` writes the export `PENDING` (with an `EXPORT_UPDATED`
//! outbox event) and leaves its job; the job moves it to `RUNNING` with progress, then `READY`
//! (content, sha256, size) or `FAILED` (error), each change one transaction with its event. A
//! job run twice finds the export finished and does nothing.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{ExportFormat, ExportKind, ExportStatus},
    export,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde_json::json;

use crate::{
    error::{CoreError, CoreResult},
    events::{self, EventKind, NewEvent},
    hashing::sha256_hex,
    ids::{new_id, prefix},
    outcome::{Committed, FollowUp},
    records,
    store::Store,
    time::now,
};

const MAX_REASON: usize = 2000;

/// The export's outbox event: its status and progress now.
pub fn export_event(export: &export::Model) -> NewEvent {
    NewEvent {
        kind: EventKind::ExportUpdated,
        subject_id: export.id.clone(),
        run_id: Some(export.run_id.clone()),
        severity_rank: None,
        payload: json!({
            "exportId": export.id,
            "incidentId": export.incident_id,
            "kind": export.kind.as_str(),
            "format": export.format.as_str(),
            "status": export.status.as_str(),
            "progress": export.progress,
            "sha256": export.sha256,
            "error": export.error,
        }),
    }
}

/// Request an export of an incident.
pub async fn request(
    store: &Store,
    tenant_id: &str,
    incident_id: &str,
    kind: ExportKind,
    format: ExportFormat,
    reason: Option<String>,
    requested_by: &str,
) -> CoreResult<Committed<export::Model>> {
    let reason = reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON)
    {
        return Err(CoreError::bad_field(
            "reason",
            format!("the reason is longer than {MAX_REASON} characters"),
        ));
    }
    let txn = store.begin().await?;
    let found = records::incident(&*txn, tenant_id, incident_id).await?;
    let at = now();
    let model = export::ActiveModel {
        id: Set(new_id(prefix::EXPORT)),
        tenant_id: Set(tenant_id.to_string()),
        incident_id: Set(found.id.clone()),
        run_id: Set(found.run_id.clone()),
        kind: Set(kind),
        format: Set(format),
        status: Set(ExportStatus::Pending),
        progress: Set(0),
        reason: Set(reason),
        requested_by: Set(requested_by.to_string()),
        sha256: Set(None),
        size_bytes: Set(None),
        content: Set(None),
        content_type: Set(None),
        error: Set(None),
        attempts: Set(0),
        created_at: Set(at),
        updated_at: Set(at),
        completed_at: Set(None),
    }
    .insert(&*txn)
    .await?;
    let event = events::append(&*txn, tenant_id, export_event(&model)).await?;
    txn.commit().await?;
    let mut committed = Committed::new(model);
    committed.events.push(event);
    committed.follow_ups.push(FollowUp::BuildExport {
        tenant_id: tenant_id.to_string(),
        export_id: committed.value.id.clone(),
    });
    Ok(committed)
}

/// One export of the tenant (with its content).
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    id: &str,
) -> CoreResult<export::Model> {
    export::Entity::find_by_id(id.to_string())
        .filter(export::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Export", id))
}

async fn get_for_update<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    id: &str,
) -> CoreResult<export::Model> {
    crate::store::one_for_update(
        conn,
        export::Entity::find_by_id(id.to_string()).filter(export::Column::TenantId.eq(tenant_id)),
        || CoreError::not_found("Export", id),
    )
    .await
}

/// Apply `change` to an unfinished export and write its event, in one transaction. Returns
/// `None` when the export is already READY or FAILED (nothing is written).
async fn transition(
    store: &Store,
    tenant_id: &str,
    id: &str,
    change: impl FnOnce(&mut export::ActiveModel),
) -> CoreResult<Option<Committed<export::Model>>> {
    let txn = store.begin().await?;
    let current = get_for_update(&*txn, tenant_id, id).await?;
    if matches!(current.status, ExportStatus::Ready | ExportStatus::Failed) {
        return Ok(None);
    }
    let mut active: export::ActiveModel = current.into();
    change(&mut active);
    active.updated_at = Set(now());
    let updated = active.update(&*txn).await?;
    let event = events::append(&*txn, tenant_id, export_event(&updated)).await?;
    txn.commit().await?;
    let mut committed = Committed::new(updated);
    committed.events.push(event);
    Ok(Some(committed))
}

/// The job started (or restarted) building the export.
pub async fn mark_running(
    store: &Store,
    tenant_id: &str,
    id: &str,
    progress: i32,
) -> CoreResult<Option<Committed<export::Model>>> {
    transition(store, tenant_id, id, |e| {
        e.status = Set(ExportStatus::Running);
        e.progress = Set(progress.clamp(0, 99));
        let attempts = match &e.attempts {
            sea_orm::ActiveValue::Set(v) | sea_orm::ActiveValue::Unchanged(v) => *v,
            sea_orm::ActiveValue::NotSet => 0,
        };
        e.attempts = Set(attempts + 1);
    })
    .await
}

/// The export is built: store its bytes and their sha256.
pub async fn complete(
    store: &Store,
    tenant_id: &str,
    id: &str,
    content: Vec<u8>,
    content_type: &str,
) -> CoreResult<Option<Committed<export::Model>>> {
    let sha256 = sha256_hex(&content);
    let size = content.len() as i64;
    let at = now();
    transition(store, tenant_id, id, |e| {
        e.status = Set(ExportStatus::Ready);
        e.progress = Set(100);
        e.sha256 = Set(Some(sha256));
        e.size_bytes = Set(Some(size));
        e.content = Set(Some(content));
        e.content_type = Set(Some(content_type.to_string()));
        e.completed_at = Set(Some(at));
    })
    .await
}

/// The export cannot be built: FAILED with the error.
pub async fn fail(
    store: &Store,
    tenant_id: &str,
    id: &str,
    error: &str,
) -> CoreResult<Option<Committed<export::Model>>> {
    let at = now();
    let error = error.to_string();
    transition(store, tenant_id, id, |e| {
        e.status = Set(ExportStatus::Failed);
        e.error = Set(Some(error));
        e.completed_at = Set(Some(at));
    })
    .await
}

/// Exports still `PENDING` that were requested before `before` (their job was lost between the
/// commit and the enqueue): the sweeper enqueues them again. Oldest first.
pub async fn pending_before<C: ConnectionTrait>(
    conn: &C,
    before: DateTime<Utc>,
    limit: u64,
) -> CoreResult<Vec<(String, String)>> {
    use sea_orm::QuerySelect;
    Ok(export::Entity::find()
        .select_only()
        .column(export::Column::TenantId)
        .column(export::Column::Id)
        .filter(export::Column::Status.eq(ExportStatus::Pending))
        .filter(export::Column::CreatedAt.lt(before))
        .order_by_asc(export::Column::CreatedAt)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await?)
}
