//! Webhooks: endpoints that receive the tenant's events, signed as Standard Webhooks
//! (<https://www.standardwebhooks.com>): headers `webhook-id` (the same for every attempt of one
//! message, so receivers can deduplicate), `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` = `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where the
//! key is the base64 part of the endpoint's `whsec_…` secret.
//!
//! Every attempt is recorded (`webhook_deliveries`): its number, status code or error. A message
//! already delivered to an endpoint is not sent to it again. The error a tenant sees is one of
//! the fixed texts of [`DeliveryFailure`], so the log cannot be used to probe our network.
//!
//! Endpoints may only target addresses the [`EgressPolicy`] allows (checked when written and
//! when delivering), and a tenant has at most [`WebhookRules::max_per_tenant`] of them.
//!
//! Secrets are stored sealed ([`crate::sealing`], bound to the endpoint's row): `create` and
//! `rotate_secret` return the plaintext once, [`signing_secret`] opens it for a delivery.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{DeliveryStatus, Severity},
    event, tenant, webhook, webhook_delivery,
};
use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
};
use serde_json::{Value, json};

use crate::{
    egress::{self, EgressPolicy},
    error::{CoreError, CoreResult},
    ids::{new_id, prefix},
    sealing,
    store::{Store, one_for_update},
    time::now,
};

/// The event kinds an endpoint can subscribe to.
pub const EVENT_KINDS: [&str; 14] = [
    "INCIDENT_CREATED",
    "INCIDENT_ACKNOWLEDGED",
    "INCIDENT_RESOLVED",
    "RUN_STOPPED",
    "RUN_COMPLETED",
    "AUDIT_COMPLETED",
    "CHECKPOINT_SIGNED",
    "RUNS_HALTED",
    "RUNS_RESUMED",
    "APPROVAL_REQUESTED",
    "APPROVAL_GRANTED",
    "APPROVAL_DENIED",
    "APPROVAL_EXPIRED",
    "APPROVAL_CANCELLED",
];

const MAX_URL: usize = 2000;

/// What the operator decides about endpoints (`webhooks.*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRules {
    /// Which addresses endpoints may target.
    pub egress: EgressPolicy,
    /// Endpoints one tenant may have.
    pub max_per_tenant: usize,
}

impl Default for WebhookRules {
    fn default() -> Self {
        Self {
            egress: EgressPolicy::default(),
            max_per_tenant: 25,
        }
    }
}

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub min_severity: Option<Severity>,
}

/// A fresh signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

pub use crate::hashing::hmac_sha256;

/// The `webhook-signature` header of a message.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &str) -> CoreResult<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| CoreError::Internal(anyhow::anyhow!("malformed webhook secret: {e}")))?;
    let signed = format!("{message_id}.{timestamp}.{body}");
    Ok(format!(
        "v1,{}",
        STANDARD.encode(hmac_sha256(&key, signed.as_bytes()))
    ))
}

/// The id of the message carrying `event` (the same for every attempt and every endpoint).
pub fn message_id(event: &event::Model) -> String {
    format!("msg_{}", event.id)
}

/// The JSON body sent for `event`.
pub fn body(event: &event::Model) -> Value {
    json!({
        "type": event.kind,
        "timestamp": event.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "cursor": event.seq.to_string(),
        "data": event.payload,
    })
}

fn validate(new: &NewWebhook) -> CoreResult<()> {
    let parsed = url::Url::parse(&new.url)
        .map_err(|e| CoreError::bad_field("url", format!("`{}` is not a URL: {e}", new.url)))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(CoreError::bad_field(
            "url",
            "only http:// and https:// URLs with a host can receive webhooks",
        ));
    }
    if new.url.len() > MAX_URL {
        return Err(CoreError::bad_field(
            "url",
            format!("the URL is longer than {MAX_URL} characters"),
        ));
    }
    if new.events.is_empty() {
        return Err(CoreError::bad_field(
            "events",
            "name at least one event kind to deliver",
        ));
    }
    if let Some(unknown) = new
        .events
        .iter()
        .find(|e| !EVENT_KINDS.contains(&e.as_str()))
    {
        return Err(CoreError::bad_field(
            "events",
            format!(
                "`{unknown}` is not an event kind ({})",
                EVENT_KINDS.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Register an endpoint. Returns it with its secret in plaintext (shown this once; the row
/// holds it sealed). The URL must only
/// resolve to addresses `rules.egress` allows, and the tenant must be below its cap; the count
/// and the insert are one transaction, serialised per tenant by a lock on the tenant's row.
pub async fn create(
    store: &Store,
    rules: &WebhookRules,
    tenant_id: &str,
    new: NewWebhook,
) -> CoreResult<webhook::Model> {
    validate(&new)?;
    // Resolved before the transaction: a slow lookup must not hold the writer lock.
    egress::check_endpoint(&rules.egress, "url", &new.url).await?;
    let mut events = new.events;
    events.sort();
    events.dedup();
    let at = now();
    let txn = store.begin().await?;
    one_for_update(
        &*txn,
        tenant::Entity::find_by_id(tenant_id.to_string()),
        || CoreError::not_found("Tenant", tenant_id),
    )
    .await?;
    let existing = webhook::Entity::find()
        .filter(webhook::Column::TenantId.eq(tenant_id))
        .count(&*txn)
        .await?;
    if existing >= u64::try_from(rules.max_per_tenant).unwrap_or(u64::MAX) {
        return Err(CoreError::limit(
            "webhooks.max_per_tenant",
            format!(
                "a tenant can have at most {} webhook endpoints; delete one before creating another",
                rules.max_per_tenant
            ),
        ));
    }
    let id = new_id(prefix::WEBHOOK);
    let secret = new_secret();
    let mut model = webhook::ActiveModel {
        id: Set(id.clone()),
        tenant_id: Set(tenant_id.to_string()),
        url: Set(new.url),
        events: Set(json!(events)),
        min_severity: Set(new.min_severity),
        secret: Set(store.secrets()?.seal(&secret, secret_row(&id))?),
        enabled: Set(true),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(&*txn)
    .await?;
    txn.commit().await?;
    model.secret = secret;
    Ok(model)
}

/// Where an endpoint's sealed secret lives (its associated data).
fn secret_row(id: &str) -> sealing::Row<'_> {
    sealing::Row {
        table: "webhooks",
        column: "secret",
        id,
    }
}

/// The secret a delivery to `hook` is signed with, opened from its sealed form.
pub fn signing_secret(store: &Store, hook: &webhook::Model) -> CoreResult<String> {
    store.secrets()?.open(&hook.secret, secret_row(&hook.id))
}

/// Seal every endpoint secret still stored in plaintext (written before secrets were sealed),
/// in one transaction; each is replaced only if it is still the value read, so a concurrent
/// rotation is never overwritten. Returns how many were sealed. Run at start-up; running it
/// again finds nothing to do.
pub async fn seal_plaintext_secrets(store: &Store) -> CoreResult<usize> {
    let key = store.secrets()?;
    let plain: Vec<(String, String)> = webhook::Entity::find()
        .filter(webhook::Column::Secret.not_like("enc:%"))
        .all(store.db())
        .await?
        .into_iter()
        .map(|hook| (hook.id, hook.secret))
        .collect();
    if plain.is_empty() {
        return Ok(0);
    }
    let txn = store.begin().await?;
    for (id, secret) in &plain {
        webhook::Entity::update_many()
            .col_expr(
                webhook::Column::Secret,
                sea_orm::sea_query::Expr::value(key.seal(secret, secret_row(id))?),
            )
            .filter(webhook::Column::Id.eq(id.as_str()))
            .filter(webhook::Column::Secret.eq(secret.as_str()))
            .exec(&*txn)
            .await?;
    }
    txn.commit().await?;
    Ok(plain.len())
}

/// One endpoint of the tenant.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    id: &str,
) -> CoreResult<webhook::Model> {
    webhook::Entity::find_by_id(id.to_string())
        .filter(webhook::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Webhook", id))
}

/// Remove an endpoint (and its delivery log). Returns what was removed.
pub async fn delete(store: &Store, tenant_id: &str, id: &str) -> CoreResult<webhook::Model> {
    let txn = store.begin().await?;
    let found = get(&*txn, tenant_id, id).await?;
    webhook::Entity::delete_by_id(found.id.clone())
        .exec(&*txn)
        .await?;
    txn.commit().await?;
    Ok(found)
}

/// Replace an endpoint's secret; messages sent from now on are signed with the new one. Returns
/// the endpoint with the new secret in plaintext (shown this once).
pub async fn rotate_secret(store: &Store, tenant_id: &str, id: &str) -> CoreResult<webhook::Model> {
    let txn = store.begin().await?;
    let found = get(&*txn, tenant_id, id).await?;
    let secret = new_secret();
    let sealed = store.secrets()?.seal(&secret, secret_row(&found.id))?;
    let mut active: webhook::ActiveModel = found.into();
    active.secret = Set(sealed);
    active.updated_at = Set(now());
    let mut updated = active.update(&*txn).await?;
    txn.commit().await?;
    updated.secret = secret;
    Ok(updated)
}

/// The event kinds an endpoint receives.
pub fn kinds(hook: &webhook::Model) -> Vec<String> {
    hook.events
        .as_array()
        .map(|kinds| {
            kinds
                .iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Does `hook` want `event`? Its kind must be subscribed and, when the endpoint has a minimum
/// severity, the event must carry one at least that high.
pub fn wants(hook: &webhook::Model, event: &event::Model) -> bool {
    let kind_ok = kinds(hook).contains(&event.kind);
    let severity_ok = match hook.min_severity {
        None => true,
        Some(min) => event.severity_rank.is_some_and(|rank| rank >= min.rank()),
    };
    hook.enabled && kind_ok && severity_ok
}

/// Is `kind` ever delivered to endpoints?
pub fn deliverable(kind: &str) -> bool {
    EVENT_KINDS.contains(&kind)
}

/// The tenant's endpoints that want `event`: matched as of the event, so an endpoint created
/// after it is not sent it (however late the fan-out runs), like [`undelivered`].
pub async fn matching<C: ConnectionTrait>(
    conn: &C,
    event: &event::Model,
) -> CoreResult<Vec<webhook::Model>> {
    Ok(webhook::Entity::find()
        .filter(webhook::Column::TenantId.eq(event.tenant_id.as_str()))
        .filter(webhook::Column::Enabled.eq(true))
        .filter(webhook::Column::CreatedAt.lte(event.created_at))
        .all(conn)
        .await?
        .into_iter()
        .filter(|hook| wants(hook, event))
        .collect())
}

/// One stored event by its global id, within the tenant.
pub async fn event<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    event_id: i64,
) -> CoreResult<event::Model> {
    event::Entity::find_by_id(event_id)
        .filter(event::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Event", event_id.to_string()))
}

/// How many attempts were made to deliver `event_id` to `webhook_id`, and whether one succeeded.
pub async fn attempts<C: ConnectionTrait>(
    conn: &C,
    webhook_id: &str,
    event_id: i64,
) -> CoreResult<(u64, bool)> {
    let of = || {
        webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::WebhookId.eq(webhook_id))
            .filter(webhook_delivery::Column::EventId.eq(event_id))
    };
    let total = of().count(conn).await?;
    let delivered = of()
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Succeeded))
        .count(conn)
        .await?
        > 0;
    Ok((total, delivered))
}

/// Why an attempt failed, as the tenant sees it: fixed texts only, so the delivery log reveals
/// nothing about our network (no resolved addresses, no error chains). Details are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFailure {
    /// The target address is not allowed by the egress policy; nothing was sent. Permanent.
    Refused,
    /// No answer within the attempt's time.
    TimedOut,
    /// Any other failure to get an answer (name, connection, TLS, protocol).
    CouldNotConnect,
    /// The endpoint answered with a non-2xx status.
    Status(u16),
}

impl DeliveryFailure {
    /// The text recorded in the delivery log.
    pub fn message(&self) -> String {
        match self {
            Self::Refused => "refused: the target address is not allowed".to_string(),
            Self::TimedOut => "timed out".to_string(),
            Self::CouldNotConnect => "could not connect".to_string(),
            Self::Status(code) => format!("HTTP {code}"),
        }
    }

    /// Is trying again pointless?
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Refused)
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: i32,
    pub succeeded: bool,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// Record one attempt.
pub async fn record_attempt(
    store: &Store,
    hook: &webhook::Model,
    event_id: i64,
    attempt: Attempt,
) -> CoreResult<webhook_delivery::Model> {
    let txn = store.begin().await?;
    let row = webhook_delivery::ActiveModel {
        id: Set(new_id(prefix::DELIVERY)),
        tenant_id: Set(hook.tenant_id.clone()),
        webhook_id: Set(hook.id.clone()),
        event_id: Set(event_id),
        attempt: Set(attempt.attempt),
        status: Set(if attempt.succeeded {
            DeliveryStatus::Succeeded
        } else {
            DeliveryStatus::Failed
        }),
        status_code: Set(attempt.status_code),
        error: Set(attempt.error),
        delivered_at: Set(attempt.at),
        created_at: Set(now()),
    }
    .insert(&*txn)
    .await?;
    txn.commit().await?;
    Ok(row)
}

/// Deliveries that should exist and do not: for events of a deliverable kind committed in
/// `[since, until)`, each endpoint that wants the event (and existed when it was committed)
/// but has no attempt recorded for it. The sweeper enqueues these, so a crash between a commit
/// and its fan-out loses no webhook. At most `limit` events are looked at, oldest first.
pub async fn undelivered<C: ConnectionTrait>(
    conn: &C,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: u64,
) -> CoreResult<Vec<(String, String, i64)>> {
    use sea_orm::{QueryOrder, QuerySelect};
    let hooks = webhook::Entity::find()
        .filter(webhook::Column::Enabled.eq(true))
        .all(conn)
        .await?;
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    let tenants: Vec<String> = hooks.iter().map(|h| h.tenant_id.clone()).collect();
    let events = event::Entity::find()
        .filter(event::Column::TenantId.is_in(tenants))
        .filter(event::Column::Kind.is_in(EVENT_KINDS))
        .filter(event::Column::CreatedAt.gte(since))
        .filter(event::Column::CreatedAt.lt(until))
        .order_by_asc(event::Column::Id)
        .limit(limit)
        .all(conn)
        .await?;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let attempted: std::collections::HashSet<(String, i64)> = webhook_delivery::Entity::find()
        .select_only()
        .column(webhook_delivery::Column::WebhookId)
        .column(webhook_delivery::Column::EventId)
        .filter(webhook_delivery::Column::EventId.is_in(events.iter().map(|e| e.id)))
        .into_tuple::<(String, i64)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    Ok(events
        .iter()
        .flat_map(|event| {
            hooks
                .iter()
                .filter(|hook| {
                    hook.tenant_id == event.tenant_id
                        && hook.created_at <= event.created_at
                        && wants(hook, event)
                        && !attempted.contains(&(hook.id.clone(), event.id))
                })
                .map(|hook| (hook.tenant_id.clone(), hook.id.clone(), event.id))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn signature_matches_the_standard_webhooks_reference() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn only_http_urls_and_known_kinds_are_accepted() {
        let hook = |url: &str, events: &[&str]| NewWebhook {
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            min_severity: None,
        };
        assert!(validate(&hook("https://example.com/hook", &["INCIDENT_CREATED"])).is_ok());
        assert!(validate(&hook("http://127.0.0.1:9/x", &["RUN_STOPPED"])).is_ok()); // syntax only
        for url in [
            "ftp://example.com",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "nope",
        ] {
            let err = validate(&hook(url, &["INCIDENT_CREATED"])).unwrap_err();
            assert_eq!(err.code(), "BAD_USER_INPUT", "{url}");
        }
        assert!(validate(&hook("https://example.com", &[])).is_err());
        assert!(validate(&hook("https://example.com", &["EVERYTHING"])).is_err());
    }

    #[test]
    fn delivery_failures_show_fixed_texts_only() {
        assert_eq!(
            DeliveryFailure::Refused.message(),
            "refused: the target address is not allowed"
        );
        assert_eq!(DeliveryFailure::TimedOut.message(), "timed out");
        assert_eq!(
            DeliveryFailure::CouldNotConnect.message(),
            "could not connect"
        );
        assert_eq!(DeliveryFailure::Status(503).message(), "HTTP 503");
        assert!(DeliveryFailure::Refused.is_permanent());
        assert!(!DeliveryFailure::Status(500).is_permanent());
    }

    #[test]
    fn secrets_are_random_and_usable() {
        let a = new_secret();
        assert!(a.starts_with("whsec_"));
        assert_ne!(a, new_secret());
        assert!(sign(&a, "msg_1", 1, "{}").unwrap().starts_with("v1,"));
    }
}
