//! GraphQL subscriptions over WebSocket (graphql-transport-ws, and the legacy graphql-ws).
//!
//! This adapter drives `async_graphql::http::WebSocket` (the protocol engine) over `actix-ws`
//! and keeps the socket honest, with the close codes graphql-transport-ws and RFC 6455 assign:
//!
//! - `connection_init` must succeed within `websocket.init_timeout_secs`, pings or not:
//!   4408 "Connection initialisation timeout" otherwise.
//! - A refused `connection_init` closes with 4403 Forbidden (the engine would say 1002), which
//!   clients (graphql-ws, Apollo) read as "bad credentials, do not retry"; a tenant past
//!   `websocket.max_sockets_per_tenant` on this replica closes with 1008 Policy Violation.
//! - The key is re-checked against the database every `websocket.auth_recheck_secs`; a revoked
//!   key loses the socket with 4403 on every replica, since they share the database.
//! - At most `websocket.max_subscriptions_per_socket` operations at once ([`operations`]).
//! - Liveness is WebSocket Ping/Pong, not the engine's idle timeout: a quiet subscriber waiting
//!   hours for an incident stays open as long as its client answers pings.

pub mod operations;
pub mod tenants;

use std::{
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
};

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL},
    web,
};
use actix_ws::{CloseCode, CloseReason, Message};
use async_graphql::{
    Data,
    http::{WebSocket, WebSocketProtocols, WsMessage},
};
use futures::{StreamExt, channel::mpsc, future::BoxFuture, stream::FuturesUnordered};
use governance_core::{
    CoreError, CoreResult,
    tenancy::{self, Principal},
};
use sea_orm::DatabaseConnection;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use self::{
    operations::{Operations, ServerEvent, Verdict},
    tenants::{SocketSlot, TenantSockets},
};
use crate::{auth, graphql::GovernanceSchema, graphql::loaders, state::AppState};

/// graphql-transport-ws: a refused `connection_init`, and a key revoked while its socket is open.
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// graphql-transport-ws: `connection_init` did not arrive (or succeed) in time.
pub const CLOSE_INIT_TIMEOUT: u16 = 4408;

/// `GET /graphql` with `Upgrade: websocket`.
pub async fn subscriptions(
    req: HttpRequest,
    body: web::Payload,
    schema: web::Data<GovernanceSchema>,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let protocol = req
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|h| h.to_str().ok())
        .and_then(|offered| {
            offered
                .split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        })
        .ok_or_else(|| {
            actix_web::error::ErrorBadRequest(
                "offer the `graphql-transport-ws` subprotocol (Sec-WebSocket-Protocol)",
            )
        })?;
    let (mut response, session, messages) = actix_ws::handle(&req, body)?;
    response.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol.sec_websocket_protocol()),
    );
    let schema = schema.get_ref().clone();
    let state = state.get_ref().clone();
    actix_web::rt::spawn(serve_connection(schema, state, protocol, session, messages));
    Ok(response)
}

/// What the `connection_init` callback (run inside the engine) hands back to the adapter.
enum Init {
    Granted(Granted),
    /// How to close the socket, in place of the engine's 1002.
    Refused(CloseReason),
}

/// An initialised socket: who it is, the key to re-check, and its place in the tenant's count.
struct Granted {
    token: String,
    principal: Principal,
    _slot: SocketSlot,
}

type InitSlot = Arc<Mutex<Option<Init>>>;

/// A close frame's reason. RFC 6455 allows 123 bytes of description; longer is cut at a
/// character boundary rather than making the close frame invalid.
fn close(code: CloseCode, description: impl Into<String>) -> CloseReason {
    let mut description = description.into();
    if description.len() > 123 {
        let mut end = 123;
        while !description.is_char_boundary(end) {
            end -= 1;
        }
        description.truncate(end);
    }
    CloseReason {
        code,
        description: Some(description),
    }
}

/// Authenticate `connection_init` and take a place in the tenant's socket count.
async fn initialise(
    db: &DatabaseConnection,
    sockets: &TenantSockets,
    max_sockets: usize,
    payload: &serde_json::Value,
) -> Result<Granted, CloseReason> {
    let forbidden = || close(CloseCode::Other(CLOSE_FORBIDDEN), "Forbidden");
    let token = auth::connection_init_token(payload).map_err(|_| forbidden())?;
    let principal = match tenancy::authenticate(db, &token).await {
        Ok(principal) => principal,
        Err(CoreError::Unauthenticated(_)) => return Err(forbidden()),
        // Not the key's fault: 1011 lets the client retry, where 4403 would tell it to stop.
        Err(err) => {
            tracing::warn!(error = %err, "connection_init: the API key could not be checked");
            return Err(close(
                CloseCode::Error,
                "the API key could not be checked; try again",
            ));
        }
    };
    let slot = sockets
        .try_open(&principal.tenant_id, max_sockets)
        .map_err(|held| {
            close(
                CloseCode::Policy,
                format!(
                    "the tenant has {held} sockets open, the most `{}` allows per replica",
                    tenants::LIMIT
                ),
            )
        })?;
    Ok(Granted {
        token,
        principal,
        _slot: slot,
    })
}

/// Wait until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn serve_connection(
    schema: GovernanceSchema,
    state: AppState,
    protocol: WebSocketProtocols,
    mut session: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
) {
    let mut open = Counted::new(state.metrics.ws_connections.clone());
    open.set(1);
    let settings = state.config.websocket.clone();
    let transport_ws = protocol == WebSocketProtocols::GraphQLWS;

    // Client frames go to the protocol engine through a channel; the engine's output comes back
    // as a stream. One task owns the socket, so a slow client only slows itself. No engine
    // keepalive: it closes (3008) a subscriber that sends nothing, though subscribers wait
    // quietly for hours; liveness is the Ping/Pong below.
    let init: InitSlot = Arc::default();
    let (to_engine, from_client) = mpsc::unbounded::<String>();
    let mut engine = WebSocket::new(schema, from_client, protocol).on_connection_init({
        let (init, db, sockets) = (init.clone(), state.db.clone(), state.ws_sockets.clone());
        let max_sockets = settings.max_sockets_per_tenant;
        move |payload| async move {
            let outcome = initialise(&db, &sockets, max_sockets, &payload).await;
            let answer = match &outcome {
                Ok(granted) => {
                    let mut data = Data::default();
                    let tenant_id = granted.principal.tenant_id.clone();
                    data.insert(loaders::for_tenant(db.clone(), tenant_id));
                    data.insert(granted.principal.clone());
                    Ok(data)
                }
                Err(reason) => Err(async_graphql::Error::new(
                    reason.description.clone().unwrap_or_default(),
                )),
            };
            *init.lock().unwrap_or_else(PoisonError::into_inner) = Some(match outcome {
                Ok(granted) => Init::Granted(granted),
                Err(reason) => Init::Refused(reason),
            });
            answer
        }
    });

    let started = Instant::now();
    let mut init_deadline = Some(started + settings.init_timeout());
    let mut granted: Option<Granted> = None;
    let mut operations = Operations::new(settings.max_subscriptions_per_socket, transport_ws);
    let mut subscriptions = Counted::new(state.metrics.subscriptions.clone());
    let mut ping = interval_at(started + settings.ping_interval(), settings.ping_interval());
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // When the first Ping that nothing has answered since went out.
    let mut unanswered_since: Option<Instant> = None;
    let mut recheck = interval_at(started + settings.auth_recheck(), settings.auth_recheck());
    recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut checks: FuturesUnordered<BoxFuture<'static, CoreResult<Principal>>> =
        FuturesUnordered::new();

    let close_with = loop {
        tokio::select! {
            incoming = messages.next() => {
                if let Some(Ok(_)) = &incoming {
                    // Any frame proves the peer is there, not only a Pong.
                    unanswered_since = None;
                }
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
                        Ok(text) => text,
                        Err(_) => break Some(close(CloseCode::Invalid, "frames must be UTF-8 JSON")),
                    },
                    Some(Ok(Message::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(reason))) => break reason,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break None,
                };
                let verdict = operations.on_client(&text);
                subscriptions.set(operations.active());
                match verdict {
                    Verdict::Forward => {
                        if to_engine.unbounded_send(text).is_err() {
                            break None;
                        }
                    }
                    Verdict::Refuse(refusal) => {
                        if session.text(refusal).await.is_err() {
                            return;
                        }
                    }
                }
            },
            outgoing = engine.next() => match outgoing {
                Some(WsMessage::Text(text)) => {
                    let event = operations.on_server(&text);
                    subscriptions.set(operations.active());
                    if event == ServerEvent::Ack {
                        init_deadline = None;
                        let taken = init.lock().unwrap_or_else(PoisonError::into_inner).take();
                        if let Some(Init::Granted(ok)) = taken {
                            granted = Some(ok);
                        }
                    }
                    if session.text(text).await.is_err() {
                        return;
                    }
                }
                Some(WsMessage::Close(code, message)) => {
                    let taken = init.lock().unwrap_or_else(PoisonError::into_inner).take();
                    break Some(match taken {
                        Some(Init::Refused(reason)) => reason,
                        _ => close(CloseCode::Other(code), message),
                    });
                }
                None => break None,
            },
            _ = until(init_deadline) => {
                break Some(close(
                    CloseCode::Other(CLOSE_INIT_TIMEOUT),
                    "Connection initialisation timeout",
                ));
            }
            _ = ping.tick() => {
                unanswered_since.get_or_insert_with(Instant::now);
                if session.ping(b"").await.is_err() {
                    return;
                }
            }
            _ = until(unanswered_since.map(|since| since + settings.pong_timeout())) => {
                // RFC 6455 has no code for "peer unresponsive" (1006 may not be sent). 1001
                // Going Away says this end is leaving the connection, not that it failed (1011)
                // or that the peer broke the protocol (1002); clients reconnect after it.
                break Some(close(
                    CloseCode::Away,
                    format!("no pong within {} s", settings.pong_timeout().as_secs()),
                ));
            }
            _ = recheck.tick(), if granted.is_some() && checks.is_empty() => {
                if let Some(granted) = &granted {
                    let (db, token) = (state.db.clone(), granted.token.clone());
                    checks.push(Box::pin(async move { tenancy::authenticate(&db, &token).await }));
                }
            }
            Some(checked) = checks.next(), if !checks.is_empty() => match checked {
                Ok(_) => {}
                Err(CoreError::Unauthenticated(_)) => {
                    break Some(close(
                        CloseCode::Other(CLOSE_FORBIDDEN),
                        "Forbidden: the API key was revoked",
                    ));
                }
                // The database is shared and may blip; a socket is not a reason to fail closed
                // on it. The next check decides.
                Err(err) => {
                    tracing::warn!(error = %err, "WebSocket: the API key could not be re-checked");
                }
            },
        }
    };
    if let Some(reason) = &close_with {
        tracing::debug!(code = ?reason.code, description = ?reason.description, "WebSocket closed");
    }
    let _ = session.close(close_with).await;
}

/// This socket's share of a gauge (itself among open connections, its subscriptions): set as
/// it changes, taken back however the socket ends.
struct Counted {
    gauge: prometheus::IntGauge,
    counted: i64,
}

impl Counted {
    fn new(gauge: prometheus::IntGauge) -> Self {
        Self { gauge, counted: 0 }
    }

    fn set(&mut self, now: usize) {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        self.gauge.add(now - self.counted);
        self.counted = now;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.sub(self.counted);
    }
}
