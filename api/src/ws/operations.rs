//! The subscriptions one socket has active, counted by the adapter from the frames that pass
//! through it, so one socket cannot start unbounded streams (`websocket.max_subscriptions_per_socket`).
//!
//! The protocol engine keeps its streams to itself; the adapter sees every client and server
//! message, which is enough: an operation starts with a client `subscribe` (`start` in the legacy
//! protocol) and ends with a client `complete` (`stop`) or a server `complete` / `error` for its id.

use std::collections::HashSet;

use async_graphql::ServerError;
use governance_core::CoreError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::graphql::error::to_gql;

/// The setting that caps the subscriptions of a socket.
pub const LIMIT: &str = "websocket.max_subscriptions_per_socket";

/// The two fields of a protocol message the adapter looks at; the rest (a query, a result) is
/// skipped without being built.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
}

/// What a server message means to the adapter.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// `connection_ack`: the socket is initialised.
    Ack,
    Other,
}

/// What to do with a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the engine.
    Forward,
    /// Do not; send this (an `error` message for the operation) back instead.
    Refuse(String),
}

/// The active operation ids of one socket.
pub struct Operations {
    active: HashSet<String>,
    max: usize,
    /// `true` for graphql-transport-ws, `false` for the legacy graphql-ws protocol.
    transport_ws: bool,
}

impl Operations {
    pub fn new(max: usize, transport_ws: bool) -> Self {
        Self {
            active: HashSet::new(),
            max,
            transport_ws,
        }
    }

    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Account for a client message. Anything that does not parse is forwarded: the engine
    /// closes the socket for it with the protocol's own code.
    pub fn on_client(&mut self, text: &str) -> Verdict {
        let Ok(Envelope { kind, id: Some(id) }) = serde_json::from_str::<Envelope>(text) else {
            return Verdict::Forward;
        };
        match kind.as_str() {
            "subscribe" | "start" => {
                // The same id again replaces its stream in the engine: still one operation.
                if self.active.contains(&id) || self.active.len() < self.max {
                    self.active.insert(id);
                    Verdict::Forward
                } else {
                    Verdict::Refuse(self.refusal(&id))
                }
            }
            "complete" | "stop" => {
                self.active.remove(&id);
                Verdict::Forward
            }
            _ => Verdict::Forward,
        }
    }

    /// Account for a message the engine sends.
    pub fn on_server(&mut self, text: &str) -> ServerEvent {
        let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
            return ServerEvent::Other;
        };
        match (envelope.kind.as_str(), envelope.id) {
            ("connection_ack", _) => ServerEvent::Ack,
            ("complete" | "error", Some(id)) => {
                self.active.remove(&id);
                ServerEvent::Other
            }
            _ => ServerEvent::Other,
        }
    }

    /// The `error` message refusing operation `id`, with the code and limit every other limit
    /// refusal carries (through the one error mapping).
    fn refusal(&self, id: &str) -> String {
        let refused = to_gql(CoreError::limit(
            LIMIT,
            format!(
                "this connection already has {} active subscriptions, the most `{LIMIT}` allows \
                 ({}): complete one before subscribing again",
                self.active.len(),
                self.max
            ),
        ));
        // Not `into_server_error`: that adds a location, and this error has none in any query.
        let mut error = ServerError::new(refused.message, None);
        error.extensions = refused.extensions;
        let error = serde_json::to_value(&error).unwrap_or_else(|_| json!({}));
        // graphql-transport-ws: `payload` is a list of errors; legacy graphql-ws: one error.
        let payload = if self.transport_ws {
            Value::Array(vec![error])
        } else {
            error
        };
        json!({ "type": "error", "id": id, "payload": payload }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribe(id: &str) -> String {
        json!({ "type": "subscribe", "id": id, "payload": { "query": "subscription { x }" } })
            .to_string()
    }

    #[test]
    fn the_operation_past_the_limit_is_refused_with_code_and_limit() {
        let mut ops = Operations::new(2, true);
        assert_eq!(ops.on_client(&subscribe("1")), Verdict::Forward);
        assert_eq!(ops.on_client(&subscribe("2")), Verdict::Forward);
        // Re-using an active id does not count twice.
        assert_eq!(ops.on_client(&subscribe("2")), Verdict::Forward);
        let Verdict::Refuse(text) = ops.on_client(&subscribe("3")) else {
            panic!("the third is refused");
        };
        let refusal: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(refusal["type"], "error");
        assert_eq!(refusal["id"], "3");
        let error = &refusal["payload"][0];
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
        assert_eq!(error["extensions"]["limit"], LIMIT);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(LIMIT) && message.contains('2'),
            "{message}"
        );
        assert!(error.get("locations").is_none(), "{error}");
        assert_eq!(ops.active(), 2);
    }

    #[test]
    fn operations_end_by_client_complete_or_server_complete_and_error() {
        let mut ops = Operations::new(1, true);
        ops.on_client(&subscribe("1"));
        ops.on_client(&json!({ "type": "complete", "id": "1" }).to_string());
        assert_eq!(ops.active(), 0);
        ops.on_client(&subscribe("2"));
        ops.on_server(&json!({ "type": "next", "id": "2", "payload": {} }).to_string());
        assert_eq!(ops.active(), 1);
        ops.on_server(&json!({ "type": "complete", "id": "2" }).to_string());
        assert_eq!(ops.active(), 0);
        ops.on_client(&subscribe("3"));
        ops.on_server(&json!({ "type": "error", "id": "3", "payload": [] }).to_string());
        assert_eq!(ops.active(), 0);
        assert_eq!(
            ops.on_server(&json!({ "type": "connection_ack" }).to_string()),
            ServerEvent::Ack
        );
    }

    #[test]
    fn legacy_protocol_counts_start_and_stop_and_refuses_with_one_error() {
        let mut ops = Operations::new(1, false);
        let start = |id: &str| json!({ "type": "start", "id": id, "payload": {} }).to_string();
        assert_eq!(ops.on_client(&start("a")), Verdict::Forward);
        let Verdict::Refuse(text) = ops.on_client(&start("b")) else {
            panic!("refused");
        };
        let refusal: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(refusal["payload"]["extensions"]["limit"], LIMIT);
        ops.on_client(&json!({ "type": "stop", "id": "a" }).to_string());
        assert_eq!(ops.on_client(&start("b")), Verdict::Forward);
    }

    #[test]
    fn what_does_not_parse_is_left_to_the_engine() {
        let mut ops = Operations::new(0, true);
        assert_eq!(ops.on_client("not json"), Verdict::Forward);
        assert_eq!(
            ops.on_client(&json!({ "type": "ping" }).to_string()),
            Verdict::Forward
        );
    }
}
