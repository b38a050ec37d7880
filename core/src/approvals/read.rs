//! Reading approvals: one by id, the one of a held step, the tenant's (filtered), and the
//! decisions of a run (its chained approval entries).

use governance_entities::{approval, approval_decision, enums::ApprovalStatus};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::ApprovalState;
use crate::error::{CoreError, CoreResult};

/// Which approvals to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalFilter {
    pub status: Option<ApprovalStatus>,
    pub run_id: Option<String>,
}

/// One approval of the tenant.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    id: &str,
) -> CoreResult<ApprovalState> {
    let approval = approval::Entity::find_by_id(id.to_string())
        .filter(approval::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Approval", id))?;
    with_decision(conn, approval).await
}

/// The approval of step `index` of a run, if the step was held.
pub async fn of_step<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
    index: i64,
) -> CoreResult<Option<ApprovalState>> {
    let found = approval::Entity::find()
        .filter(approval::Column::TenantId.eq(tenant_id))
        .filter(approval::Column::RunId.eq(run_id))
        .filter(approval::Column::StepIndex.eq(index))
        .one(conn)
        .await?;
    match found {
        Some(approval) => Ok(Some(with_decision(conn, approval).await?)),
        None => Ok(None),
    }
}

/// The decisions of a run's approvals (its chained approval entries), by step.
pub async fn decisions_of_run<C: ConnectionTrait>(
    conn: &C,
    run_id: &str,
) -> CoreResult<Vec<approval_decision::Model>> {
    Ok(approval_decision::Entity::find()
        .filter(approval_decision::Column::RunId.eq(run_id))
        .order_by_asc(approval_decision::Column::StepIndex)
        .all(conn)
        .await?)
}

async fn with_decision<C: ConnectionTrait>(
    conn: &C,
    approval: approval::Model,
) -> CoreResult<ApprovalState> {
    let decision = approval_decision::Entity::find_by_id(approval.id.clone())
        .one(conn)
        .await?;
    Ok(ApprovalState { approval, decision })
}

/// The tenant's approvals that pass `filter`, newest first; at most `limit`.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    filter: &ApprovalFilter,
    limit: u64,
) -> CoreResult<Vec<ApprovalState>> {
    let mut query = approval::Entity::find().filter(approval::Column::TenantId.eq(tenant_id));
    if let Some(run_id) = &filter.run_id {
        query = query.filter(approval::Column::RunId.eq(run_id.as_str()));
    }
    let mut out = Vec::new();
    let mut offset = 0;
    // Read in pages until `limit` approvals pass the status filter.
    loop {
        let page = query
            .clone()
            .order_by_desc(approval::Column::RequestedAt)
            .order_by_desc(approval::Column::Id)
            .offset(offset)
            .limit(200)
            .all(conn)
            .await?;
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        let ids: Vec<String> = page.iter().map(|a| a.id.clone()).collect();
        let decisions = approval_decision::Entity::find()
            .filter(approval_decision::Column::ApprovalId.is_in(ids))
            .all(conn)
            .await?;
        for approval in page {
            let decision = decisions
                .iter()
                .find(|d| d.approval_id == approval.id)
                .cloned();
            let state = ApprovalState { approval, decision };
            if filter.status.is_some_and(|s| s != state.status()) {
                continue;
            }
            out.push(state);
            if out.len() as u64 >= limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}
