//! Tenant-scoped lookups of the records a stop writes. Another tenant's record is `NOT_FOUND`,
//! indistinguishable from a missing one.

use governance_entities::{incident, violation};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::error::{CoreError, CoreResult};

/// One violation of the tenant.
pub async fn violation<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    id: &str,
) -> CoreResult<violation::Model> {
    violation::Entity::find_by_id(id.to_string())
        .filter(violation::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Violation", id))
}

/// One incident of the tenant.
pub async fn incident<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    id: &str,
) -> CoreResult<incident::Model> {
    incident::Entity::find_by_id(id.to_string())
        .filter(incident::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Incident", id))
}

/// The recorded steps of a run after step `after` (-1 for all), in order.
pub async fn steps_after<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
    after: i64,
) -> CoreResult<Vec<governance_entities::trace_step::Model>> {
    use governance_entities::trace_step;
    use sea_orm::QueryOrder;
    Ok(trace_step::Entity::find()
        .filter(trace_step::Column::TenantId.eq(tenant_id))
        .filter(trace_step::Column::RunId.eq(run_id))
        .filter(trace_step::Column::StepIndex.gt(after))
        .order_by_asc(trace_step::Column::StepIndex)
        .all(conn)
        .await?)
}
