//! `node(id)`: any object by its global id, within the caller's tenant.

use async_graphql::{Context, ID, Interface, Object};
use governance_core::{CoreError, ids};
use governance_entities::{
    api_key, audit, audit_check, policy_enforcement, policy_evaluation, policy_version, tenant,
    trace_step, webhook, webhook_delivery,
};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use super::{
    audits::{Audit, AuditCheck},
    error::GqlResultExt,
    exports::Export,
    incidents::{Evidence, Incident, Violation},
    loaders::{self, loader},
    policies::{Policy, PolicyEnforcement, PolicyVersion},
    principal,
    runs::{PolicyEvaluation, Run},
    snapshots::PolicySnapshot,
    state,
    steps::TraceStep,
    tenancy::{ApiKey, Tenant},
    webhooks::{Webhook, WebhookDelivery},
};

/// An object with a global id. Ids are prefixed strings (`run_…`, `SNAP-…`, `stp_…`); `node`
/// dispatches on the prefix.
// A `Node` lives for one field resolution; boxing its largest variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "The global id."))]
pub enum Node {
    Tenant(Tenant),
    ApiKey(ApiKey),
    Run(Run),
    TraceStep(TraceStep),
    PolicySnapshot(PolicySnapshot),
    Policy(Policy),
    PolicyVersion(PolicyVersion),
    Violation(Violation),
    Evidence(Evidence),
    Incident(Incident),
    PolicyEvaluation(PolicyEvaluation),
    PolicyEnforcement(PolicyEnforcement),
    Export(Export),
    Audit(Audit),
    AuditCheck(AuditCheck),
    Webhook(Webhook),
    WebhookDelivery(WebhookDelivery),
}

#[derive(Default)]
pub struct NodeQuery;

/// One row of `$entity` by id within the tenant.
macro_rules! by_id {
    ($db:expr, $tenant:expr, $entity:ident, $id:expr) => {
        $entity::Entity::find_by_id($id.to_string())
            .filter($entity::Column::TenantId.eq($tenant))
            .one($db)
            .await
            .map_err(CoreError::from)
    };
}

async fn step(
    db: &DatabaseConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<trace_step::Model>, CoreError> {
    let Some((run_id, index)) = ids::parse_step_id(id) else {
        return Ok(None);
    };
    trace_step::Entity::find()
        .filter(trace_step::Column::TenantId.eq(tenant_id))
        .filter(trace_step::Column::RunId.eq(run_id))
        .filter(trace_step::Column::StepIndex.eq(index))
        .one(db)
        .await
        .map_err(CoreError::from)
}

#[Object]
impl NodeQuery {
    /// Any object of the caller's tenant by its id. Another tenant's object is `NOT_FOUND`.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Node> {
        let principal = principal(ctx)?;
        let tenant_id = principal.tenant_id.as_str();
        let db = &state(ctx).db;
        let loader = loader(ctx)?;
        let key = id.to_string();
        use ids::prefix as p;
        let found: Option<Node> = match ids::prefix_of(&id) {
            Some(p::TENANT) if key == tenant_id => tenant::Entity::find_by_id(key)
                .one(db)
                .await
                .map_err(CoreError::from)
                .gql()?
                .map(|t| Node::Tenant(t.into())),
            Some(p::TENANT) => None,
            Some(p::API_KEY) => by_id!(db, tenant_id, api_key, key)
                .gql()?
                .map(|k| Node::ApiKey(k.into())),
            Some(p::RUN) => loader
                .load_one(loaders::RunId(key))
                .await?
                .map(|r| Node::Run(Run(r))),
            Some(p::STEP) => step(db, tenant_id, &key)
                .await
                .gql()?
                .map(|s| Node::TraceStep(TraceStep(s))),
            Some(p::SNAPSHOT) => loader
                .load_one(loaders::SnapshotId(key))
                .await?
                .map(|s| Node::PolicySnapshot(PolicySnapshot(s))),
            Some(p::POLICY) => loader
                .load_one(loaders::PolicyId(key))
                .await?
                .map(|x| Node::Policy(Policy(x))),
            Some(p::POLICY_VERSION) => by_id!(db, tenant_id, policy_version, key)
                .gql()?
                .map(|v| Node::PolicyVersion(PolicyVersion(v))),
            Some(p::VIOLATION) => loader
                .load_one(loaders::ViolationId(key))
                .await?
                .map(|v| Node::Violation(Violation(v))),
            Some(p::EVIDENCE) => loader
                .load_one(loaders::EvidenceId(key))
                .await?
                .map(|e| Node::Evidence(Evidence(e))),
            Some(p::INCIDENT) => loader
                .load_one(loaders::IncidentId(key))
                .await?
                .map(|i| Node::Incident(Incident(i))),
            Some(p::EVALUATION) => by_id!(db, tenant_id, policy_evaluation, key)
                .gql()?
                .map(|e| Node::PolicyEvaluation(PolicyEvaluation(e))),
            Some(p::ENFORCEMENT) => by_id!(db, tenant_id, policy_enforcement, key)
                .gql()?
                .map(|e| Node::PolicyEnforcement(PolicyEnforcement(e))),
            Some(p::EXPORT) => loader
                .load_one(loaders::ExportId(key))
                .await?
                .map(|e| Node::Export(Export(e))),
            Some(p::AUDIT) => by_id!(db, tenant_id, audit, key)
                .gql()?
                .map(|a| Node::Audit(Audit(a))),
            Some(p::AUDIT_CHECK) => by_id!(db, tenant_id, audit_check, key)
                .gql()?
                .map(|c| Node::AuditCheck(AuditCheck(c))),
            Some(p::WEBHOOK) => by_id!(db, tenant_id, webhook, key)
                .gql()?
                .map(|w| Node::Webhook(Webhook(w))),
            Some(p::DELIVERY) => by_id!(db, tenant_id, webhook_delivery, key)
                .gql()?
                .map(|d| Node::WebhookDelivery(WebhookDelivery(d))),
            _ => {
                return Err(CoreError::bad_field(
                    "id",
                    format!(
                        "`{}` is not an id this API issues (ids look like `run_…` or `SNAP-…`)",
                        *id
                    ),
                ))
                .gql();
            }
        };
        found
            .ok_or_else(|| CoreError::not_found("Node", id.to_string()))
            .gql()
    }
}
