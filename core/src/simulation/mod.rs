//! Simulations: replay recorded runs against a proposed policy set before it is enabled, and a
//! gate that can require one before a BLOCK policy is enabled or tightened.
//!
//! - [`proposal`]: the proposed set (current policies plus changes, or a snapshot) and its hash.
//! - [`compare`]: one run replayed and compared with its record; totals; the result hash.
//! - [`lifecycle`]: request, the job's steps, reads.
//! - [`gate`]: the check `createPolicy`, `updatePolicy` and `setPolicyEnabled` make.

pub mod compare;
pub mod gate;
pub mod lifecycle;
pub mod proposal;

use governance_entities::tenant;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};

use crate::{
    error::{CoreError, CoreResult},
    store::Store,
};

/// Set whether the tenant requires a simulation before a BLOCK policy is enabled or tightened.
pub async fn set_required(
    store: &Store,
    tenant_id: &str,
    required: bool,
) -> CoreResult<tenant::Model> {
    let txn = store.begin().await?;
    let current = tenant::Entity::find_by_id(tenant_id.to_string())
        .one(&*txn)
        .await?
        .ok_or_else(|| CoreError::not_found("Tenant", tenant_id))?;
    let mut active: tenant::ActiveModel = current.into();
    active.require_simulation = Set(required);
    let updated = active.update(&*txn).await?;
    txn.commit().await?;
    Ok(updated)
}
