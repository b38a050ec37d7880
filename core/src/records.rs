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
