//! Webhooks: endpoints that receive the tenant's events, signed as Standard Webhooks, with a
//! record of every delivery attempt.

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use governance_core::roles::Capability;
use governance_core::webhooks::{self, NewWebhook};
use governance_entities::{webhook, webhook_delivery};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::{
    enums::{DeliveryStatus, Severity},
    error::GqlResultExt,
    pagination::{self, Conn, KeyKind, Order, PageArgs},
    principal,
    scalars::DateTime,
    state,
};

/// An event kind an endpoint can receive.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum WebhookEventKind {
    /// An incident was opened (a run was stopped).
    IncidentCreated,
    /// An incident was acknowledged.
    IncidentAcknowledged,
    /// An incident was resolved.
    IncidentResolved,
    /// Governance stopped a run.
    RunStopped,
    /// A run ended without a stop.
    RunCompleted,
    /// An audit finished.
    AuditCompleted,
    /// The tenant's transparency log has a new signed checkpoint (keep it: a later log must be
    /// consistent with it).
    CheckpointSigned,
    /// The kill switch stopped the running runs of a scope and refuses new ones there.
    RunsHalted,
    /// A halt was lifted.
    RunsResumed,
    /// A step was held for approval (post it where approvers will see it).
    ApprovalRequested,
    /// A held step was approved.
    ApprovalGranted,
    /// A held step was denied (its run stopped).
    ApprovalDenied,
    /// Nobody decided a held step in time.
    ApprovalExpired,
    /// A held step's run ended (cancelled, halted, failed) before anyone decided it.
    ApprovalCancelled,
}

impl WebhookEventKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::IncidentCreated => "INCIDENT_CREATED",
            Self::IncidentAcknowledged => "INCIDENT_ACKNOWLEDGED",
            Self::IncidentResolved => "INCIDENT_RESOLVED",
            Self::RunStopped => "RUN_STOPPED",
            Self::RunCompleted => "RUN_COMPLETED",
            Self::AuditCompleted => "AUDIT_COMPLETED",
            Self::CheckpointSigned => "CHECKPOINT_SIGNED",
            Self::RunsHalted => "RUNS_HALTED",
            Self::RunsResumed => "RUNS_RESUMED",
            Self::ApprovalRequested => "APPROVAL_REQUESTED",
            Self::ApprovalGranted => "APPROVAL_GRANTED",
            Self::ApprovalDenied => "APPROVAL_DENIED",
            Self::ApprovalExpired => "APPROVAL_EXPIRED",
            Self::ApprovalCancelled => "APPROVAL_CANCELLED",
        }
    }

    fn parse(kind: &str) -> Option<Self> {
        [
            Self::IncidentCreated,
            Self::IncidentAcknowledged,
            Self::IncidentResolved,
            Self::RunStopped,
            Self::RunCompleted,
            Self::AuditCompleted,
            Self::CheckpointSigned,
            Self::RunsHalted,
            Self::RunsResumed,
            Self::ApprovalRequested,
            Self::ApprovalGranted,
            Self::ApprovalDenied,
            Self::ApprovalExpired,
            Self::ApprovalCancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }
}

pub struct Webhook(pub webhook::Model);

/// An endpoint that receives the tenant's events.
#[Object]
impl Webhook {
    /// `whk_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Where events are POSTed.
    async fn url(&self) -> &str {
        &self.0.url
    }
    /// The event kinds delivered.
    async fn events(&self) -> Vec<WebhookEventKind> {
        webhooks::kinds(&self.0)
            .iter()
            .filter_map(|k| WebhookEventKind::parse(k))
            .collect()
    }
    /// Only events of incidents at least this severe (events without a severity are then
    /// skipped).
    async fn min_severity(&self) -> Option<Severity> {
        self.0.min_severity.map(Into::into)
    }
    /// Whether deliveries are made.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// When the endpoint was registered.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    /// When it last changed (e.g. its secret was rotated).
    async fn updated_at(&self) -> DateTime {
        self.0.updated_at.into()
    }
    /// Every delivery attempt, newest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<WebhookDelivery>> {
        let query = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::TenantId.eq(self.0.tenant_id.as_str()))
            .filter(webhook_delivery::Column::WebhookId.eq(self.0.id.as_str()));
        pagination::keyset(
            ctx,
            query,
            webhook_delivery::Column::Id,
            KeyKind::Text,
            Order::Desc,
            PageArgs::new(first, after, last, before),
            |d| d.id.clone(),
            WebhookDelivery,
        )
        .await
    }
}

pub struct WebhookDelivery(pub webhook_delivery::Model);

/// One attempt to deliver one event to an endpoint.
#[Object]
impl WebhookDelivery {
    /// `dlv_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The `webhook-id` header: the same for every attempt of one message.
    async fn message_id(&self) -> String {
        format!("msg_{}", self.0.event_id)
    }
    /// 1 for the first attempt, then 2, 3, …
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }
    /// SUCCEEDED (2xx) or FAILED.
    async fn status(&self) -> DeliveryStatus {
        self.0.status.into()
    }
    /// The HTTP status the endpoint answered, if it answered.
    async fn status_code(&self) -> Option<i32> {
        self.0.status_code
    }
    /// Why the attempt failed: `HTTP <status>`, `timed out`, `could not connect`, or
    /// `refused: the target address is not allowed` (not retried).
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// When the attempt was made.
    async fn delivered_at(&self) -> DateTime {
        self.0.delivered_at.into()
    }
}

/// An endpoint with its signing secret, shown only when created or rotated.
#[derive(SimpleObject)]
pub struct WebhookWithSecret {
    /// The endpoint.
    pub webhook: Webhook,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks). Store it now; it is
    /// not shown again.
    pub secret: String,
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The tenant's endpoints, oldest first.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn webhooks(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Webhook>> {
        let principal = principal(ctx)?;
        let query = webhook::Entity::find()
            .filter(webhook::Column::TenantId.eq(principal.tenant_id.as_str()));
        pagination::keyset(
            ctx,
            query,
            webhook::Column::Id,
            KeyKind::Text,
            Order::Asc,
            PageArgs::new(first, after, last, before),
            |w| w.id.clone(),
            Webhook,
        )
        .await
    }

    /// One endpoint of the tenant.
    async fn webhook(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Webhook> {
        let principal = principal(ctx)?;
        let found = webhooks::get(&state(ctx).db, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Webhook(found))
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Register an endpoint for some event kinds. Only http(s) URLs whose host resolves to
    /// public addresses only (or ones in `webhooks.allow_cidrs`) are accepted, up to
    /// `webhooks.max_per_tenant` endpoints per tenant. The answer carries the signing secret,
    /// once.
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        url: String,
        events: Vec<WebhookEventKind>,
        min_severity: Option<Severity>,
    ) -> async_graphql::Result<WebhookWithSecret> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let state = state(ctx);
        let created = webhooks::create(
            &state.store,
            &state.webhook_rules,
            &principal.tenant_id,
            NewWebhook {
                url,
                events: events.iter().map(|k| k.as_str().to_string()).collect(),
                min_severity: min_severity.map(Into::into),
            },
        )
        .await
        .gql()?;
        Ok(WebhookWithSecret {
            secret: created.secret.clone(),
            webhook: Webhook(created),
        })
    }

    /// Remove an endpoint and its delivery log; returns its id.
    async fn delete_webhook(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let deleted = webhooks::delete(&state(ctx).store, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(ID(deleted.id))
    }

    /// Replace an endpoint's signing secret; messages from now on are signed with the new one.
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<WebhookWithSecret> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let rotated = webhooks::rotate_secret(&state(ctx).store, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(WebhookWithSecret {
            secret: rotated.secret.clone(),
            webhook: Webhook(rotated),
        })
    }
}
