//! `node(id)`: any object by its global id, within the caller's tenant.

use async_graphql::{Context, ID, Interface, Object};
use governance_core::{CoreError, ids, records, runs};
use governance_entities::{policy_snapshot, tenant};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::{
    error::GqlResultExt,
    policies::Policy,
    principal,
    runs::{PolicySnapshot, Run},
    state,
    steps::{Incident, Violation},
    tenancy::Tenant,
};

/// An object with a global id. Ids are prefixed strings (`run_…`, `SNAP-…`); `node` dispatches
/// on the prefix.
// A `Node` lives for one field resolution; boxing its largest variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "The global id."))]
pub enum Node {
    Tenant(Tenant),
    Run(Run),
    PolicySnapshot(PolicySnapshot),
    Policy(Policy),
    Violation(Violation),
    Incident(Incident),
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Any object of the caller's tenant by its id. Another tenant's object is `NOT_FOUND`.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Node> {
        let principal = principal(ctx)?;
        let db = &state(ctx).db;
        let not_found = || CoreError::not_found("Node", id.to_string());
        match ids::prefix_of(&id) {
            Some(ids::prefix::TENANT) => {
                if *id != principal.tenant_id {
                    return Err(not_found()).gql();
                }
                let found = tenant::Entity::find_by_id(id.to_string())
                    .one(db)
                    .await
                    .map_err(CoreError::from)
                    .gql()?
                    .ok_or_else(not_found)
                    .gql()?;
                Ok(Node::Tenant(found.into()))
            }
            Some(ids::prefix::RUN) => {
                let run = runs::get(db, &principal.tenant_id, &id).await.gql()?;
                Ok(Node::Run(Run(run)))
            }
            Some(ids::prefix::POLICY) => {
                let found = governance_core::policies::get(db, &principal.tenant_id, &id)
                    .await
                    .gql()?;
                Ok(Node::Policy(Policy(found)))
            }
            Some(ids::prefix::VIOLATION) => {
                let found = records::violation(db, &principal.tenant_id, &id)
                    .await
                    .gql()?;
                Ok(Node::Violation(Violation(found)))
            }
            Some(ids::prefix::INCIDENT) => {
                let found = records::incident(db, &principal.tenant_id, &id)
                    .await
                    .gql()?;
                Ok(Node::Incident(Incident(found)))
            }
            Some(ids::prefix::SNAPSHOT) => {
                let snap = policy_snapshot::Entity::find()
                    .filter(policy_snapshot::Column::TenantId.eq(principal.tenant_id.as_str()))
                    .filter(policy_snapshot::Column::SnapshotId.eq(id.as_str()))
                    .one(db)
                    .await
                    .map_err(CoreError::from)
                    .gql()?
                    .ok_or_else(not_found)
                    .gql()?;
                Ok(Node::PolicySnapshot(PolicySnapshot(snap)))
            }
            _ => Err(CoreError::bad_field(
                "id",
                format!(
                    "`{}` is not an id this API issues (ids look like `run_…` or `SNAP-…`)",
                    *id
                ),
            ))
            .gql(),
        }
    }
}
