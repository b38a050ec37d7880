//! Audits as stored: a request is written `PENDING` with its follow-up job; the job runs the
//! seven checks of [`crate::auditing`] and writes the checks, the verdict and the completion
//! event in one transaction, once (a job run twice finds the audit completed and writes
//! nothing). The rollout gate reads the latest completed audit of a job.

use std::time::Instant;

use governance_entities::{
    audit, audit_check,
    enums::{AuditStatus, AuditVerdict},
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::{Value, json};

use crate::{
    auditing::{self, AuditRequest, CheckOutcomeSummary, Gate},
    error::{CoreError, CoreResult},
    events::{self, EventKind, NewEvent},
    ids::{new_id, prefix},
    outcome::{Committed, FollowUp},
    store::Store,
    time::now,
};

/// Store an audit request (`PENDING`) and leave its job to be enqueued. Invalid input is refused
/// before anything is written.
pub async fn request(
    store: &Store,
    tenant_id: &str,
    request: AuditRequest,
) -> CoreResult<Committed<audit::Model>> {
    auditing::validate(&request)?;
    let stored = serde_json::to_value(&request).map_err(|e| CoreError::Internal(e.into()))?;
    let at = now();
    let txn = store.begin().await?;
    let model = audit::ActiveModel {
        id: Set(new_id(prefix::AUDIT)),
        tenant_id: Set(tenant_id.to_string()),
        job_id: Set(request.job_id.clone()),
        contract_id: Set(request.contract_id.clone()),
        status: Set(AuditStatus::Pending),
        verdict: Set(None),
        verdict_reason: Set(None),
        request: Set(stored),
        checks_passed: Set(0),
        checks_failed: Set(0),
        checks_inconclusive: Set(0),
        health_before: Set(None),
        health_after: Set(None),
        audited_at: Set(None),
        duration_ms: Set(None),
        auditor_version: Set(None),
        error: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(&*txn)
    .await?;
    txn.commit().await?;
    let mut committed = Committed::new(model);
    committed.follow_ups.push(FollowUp::RunAudit {
        tenant_id: tenant_id.to_string(),
        audit_id: committed.value.id.clone(),
    });
    Ok(committed)
}

/// One audit of the tenant.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    audit_id: &str,
) -> CoreResult<audit::Model> {
    audit::Entity::find_by_id(audit_id.to_string())
        .filter(audit::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Audit", audit_id))
}

/// The checks of an audit, in their fixed order.
pub async fn checks<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    audit_id: &str,
) -> CoreResult<Vec<audit_check::Model>> {
    Ok(audit_check::Entity::find()
        .filter(audit_check::Column::TenantId.eq(tenant_id))
        .filter(audit_check::Column::AuditId.eq(audit_id))
        .order_by_asc(audit_check::Column::Position)
        .all(conn)
        .await?)
}

/// What running an audit job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Performed {
    /// The checks ran and the result is stored.
    Completed(audit::Model),
    /// The stored request could not be audited; the audit is `FAILED` with the error.
    Failed(audit::Model),
    /// The audit was already completed or failed (a job run twice writes once).
    AlreadyDone(audit::Model),
}

async fn get_for_update<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    audit_id: &str,
) -> CoreResult<audit::Model> {
    crate::store::one_for_update(
        conn,
        audit::Entity::find_by_id(audit_id.to_string())
            .filter(audit::Column::TenantId.eq(tenant_id)),
        || CoreError::not_found("Audit", audit_id),
    )
    .await
}

fn completion_event(audit: &audit::Model) -> NewEvent {
    NewEvent {
        kind: EventKind::AuditCompleted,
        subject_id: audit.id.clone(),
        run_id: None,
        severity_rank: None,
        payload: json!({
            "auditId": audit.id,
            "jobId": audit.job_id,
            "contractId": audit.contract_id,
            "status": audit.status.as_str(),
            "verdict": audit.verdict.map(|v| v.as_str()),
            "verdictReason": audit.verdict_reason,
        }),
    }
}

/// Run the audit's checks and store the result, in one transaction with its completion event.
pub async fn perform(
    store: &Store,
    tenant_id: &str,
    audit_id: &str,
) -> CoreResult<Committed<Performed>> {
    let started = Instant::now();
    let txn = store.begin().await?;
    let stored = get_for_update(&*txn, tenant_id, audit_id).await?;
    if matches!(stored.status, AuditStatus::Completed | AuditStatus::Failed) {
        return Ok(Committed::new(Performed::AlreadyDone(stored)));
    }
    let at = now();
    let mut active: audit::ActiveModel = stored.clone().into();
    active.updated_at = Set(at);
    active.audited_at = Set(Some(at));
    active.auditor_version = Set(Some(auditing::AUDITOR_VERSION.to_string()));
    let request = serde_json::from_value::<AuditRequest>(stored.request.clone());
    let performed = match request {
        Err(err) => {
            active.status = Set(AuditStatus::Failed);
            active.error = Set(Some(format!(
                "the stored request cannot be read as an audit request: {err}"
            )));
            active.duration_ms = Set(Some(started.elapsed().as_millis() as i64));
            Performed::Failed(active.update(&*txn).await?)
        }
        Ok(request) => {
            let outcomes = auditing::run_checks(&request);
            for (position, outcome) in outcomes.iter().enumerate() {
                audit_check::ActiveModel {
                    id: Set(new_id(prefix::AUDIT_CHECK)),
                    tenant_id: Set(tenant_id.to_string()),
                    audit_id: Set(stored.id.clone()),
                    check_id: Set(outcome.check_id.to_string()),
                    name: Set(outcome.name.to_string()),
                    question: Set(outcome.question.to_string()),
                    result: Set(outcome.result),
                    reason: Set(outcome.reason.clone()),
                    evidence: Set(outcome.evidence.clone()),
                    position: Set(position as i32),
                }
                .insert(&*txn)
                .await?;
            }
            let (verdict, reason) = auditing::verdict(&outcomes);
            let (passed, failed, inconclusive) = auditing::counts(&outcomes);
            active.status = Set(AuditStatus::Completed);
            active.verdict = Set(Some(verdict));
            active.verdict_reason = Set(Some(reason));
            active.checks_passed = Set(passed);
            active.checks_failed = Set(failed);
            active.checks_inconclusive = Set(inconclusive);
            active.health_before = Set(Some(to_json(&request.health_before)?));
            active.health_after = Set(Some(to_json(&request.health_after)?));
            active.duration_ms = Set(Some(started.elapsed().as_millis() as i64));
            Performed::Completed(active.update(&*txn).await?)
        }
    };
    let audit = match &performed {
        Performed::Completed(a) | Performed::Failed(a) | Performed::AlreadyDone(a) => a,
    };
    let event = events::append(&*txn, tenant_id, completion_event(audit)).await?;
    txn.commit().await?;
    let mut committed = Committed::new(performed);
    committed.events.push(event);
    Ok(committed)
}

fn to_json<T: serde::Serialize>(value: &T) -> CoreResult<Value> {
    serde_json::to_value(value).map_err(|e| CoreError::Internal(e.into()))
}

/// Audits still `PENDING` that were requested before `before` (their job was lost between the
/// commit and the enqueue, or is stuck): the sweeper enqueues them again. Oldest first.
pub async fn pending_before<C: ConnectionTrait>(
    conn: &C,
    before: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> CoreResult<Vec<(String, String)>> {
    Ok(audit::Entity::find()
        .select_only()
        .column(audit::Column::TenantId)
        .column(audit::Column::Id)
        .filter(audit::Column::Status.eq(AuditStatus::Pending))
        .filter(audit::Column::CreatedAt.lt(before))
        .order_by_asc(audit::Column::CreatedAt)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await?)
}

/// Whether the rollout of `job_id` may proceed, from its latest completed audit, and that audit.
pub async fn rollout_gate<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    job_id: &str,
) -> CoreResult<(Gate, Option<audit::Model>)> {
    let latest = audit::Entity::find()
        .filter(audit::Column::TenantId.eq(tenant_id))
        .filter(audit::Column::JobId.eq(job_id))
        .filter(audit::Column::Status.eq(AuditStatus::Completed))
        .order_by_desc(audit::Column::AuditedAt)
        .order_by_desc(audit::Column::Id)
        .one(conn)
        .await?;
    let Some(latest) = latest else {
        return Ok((auditing::gate(None), None));
    };
    let summaries: Vec<CheckOutcomeSummary> = checks(conn, tenant_id, &latest.id)
        .await?
        .into_iter()
        .map(|c| CheckOutcomeSummary {
            check_id: c.check_id,
            result: c.result,
        })
        .collect();
    let verdict = latest.verdict.unwrap_or(AuditVerdict::Inconclusive);
    Ok((auditing::gate(Some((verdict, &summaries))), Some(latest)))
}
