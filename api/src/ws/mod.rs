//! GraphQL subscriptions over WebSocket (graphql-transport-ws, and the legacy graphql-ws).
//!
//! async-graphql's own actix handler closes a refused `connection_init` with 1002; the
//! graphql-transport-ws protocol says a refused connection closes with 4403 Forbidden, which is
//! what clients (graphql-ws, Apollo) recognise as "bad credentials, do not retry". This adapter
//! drives `async_graphql::http::WebSocket` over `actix-ws` and maps that one case.

use std::{str::FromStr, time::Duration};

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
use futures::{StreamExt, channel::mpsc};

use crate::graphql::loaders;
use crate::{auth, graphql::GovernanceSchema, state::AppState};

/// The close code graphql-transport-ws assigns to a refused `connection_init`.
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// Marker carried from the init callback to the close mapping below.
const REFUSED: &str = "governance: connection_init refused";

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

async fn serve_connection(
    schema: GovernanceSchema,
    state: AppState,
    protocol: WebSocketProtocols,
    mut session: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
) {
    // Client frames go to the protocol engine through a channel; the engine's output comes back
    // as a stream. One task owns the socket, so a slow client only slows itself.
    state.metrics.ws_connections.inc();
    let _open = scopeguard(state.metrics.ws_connections.clone());
    let (to_engine, from_client) = mpsc::unbounded::<String>();
    let db = state.db.clone();
    let mut engine = WebSocket::new(schema, from_client, protocol)
        .on_connection_init(move |payload| async move {
            match auth::from_connection_init(&db, &payload).await {
                Ok(principal) => {
                    let mut data = Data::default();
                    data.insert(loaders::for_tenant(db.clone(), principal.tenant_id.clone()));
                    data.insert(principal);
                    Ok(data)
                }
                Err(_) => Err(async_graphql::Error::new(REFUSED)),
            }
        })
        .keepalive_timeout(Some(Duration::from_secs(30)));

    let close = loop {
        tokio::select! {
            incoming = messages.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if to_engine.unbounded_send(text.to_string()).is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    let Ok(text) = String::from_utf8(bytes.to_vec()) else {
                        break None;
                    };
                    if to_engine.unbounded_send(text).is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(reason))) => break reason,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            },
            outgoing = engine.next() => match outgoing {
                Some(WsMessage::Text(text)) => {
                    if session.text(text).await.is_err() {
                        return;
                    }
                }
                Some(WsMessage::Close(code, message)) => {
                    let reason = if message == REFUSED {
                        CloseReason {
                            code: CloseCode::Other(CLOSE_FORBIDDEN),
                            description: Some("Forbidden".to_string()),
                        }
                    } else {
                        CloseReason {
                            code: CloseCode::Other(code),
                            description: Some(message),
                        }
                    };
                    break Some(reason);
                }
                None => break None,
            },
        }
    };
    let _ = session.close(close).await;
}

/// Decrements the open-connections gauge however the connection ends.
struct ConnectionGuard(prometheus::IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn scopeguard(gauge: prometheus::IntGauge) -> ConnectionGuard {
    ConnectionGuard(gauge)
}
