//! Subscription sockets that cannot stall, flood or outlive their key, driven the way a careless
//! or hostile client would: sockets that never initialise, too many subscriptions, too many
//! sockets, a key revoked under an open socket, and a quiet subscriber kept alive by pings.

use std::{sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, WsClient, WsEvent, key_in, run_cli, spawn_app_with, ws_open_to};

const INCIDENTS: &str = "subscription { incidentEvents { cursor kind incident { run { id } } } }";

fn bearer(key: &str) -> Value {
    json!({ "Authorization": format!("Bearer {key}") })
}

/// A policy that stops any step whose content says `leak`.
async fn leak_policy(app: &TestApp) {
    app.create_policy(json!({
        "name": "No leaks", "kind": "CONTENT_RULE", "rule": { "patterns": ["leak"] },
        "action": "BLOCK", "severity": "HIGH",
    }))
    .await;
}

/// Open an incident (a run stopped by the leak policy); returns the run id.
async fn incident(app: &TestApp) -> String {
    let run = app.start_run("wf-ws").await;
    let decision = app
        .step_ok(
            &run,
            json!({ "type": "LLM_CALL", "tokens": 1, "content": "a leak" }),
        )
        .await;
    assert_eq!(decision["action"], "STOP", "{decision}");
    run
}

/// The ids of the next `count` `next` messages (a `complete` answering the client's own
/// `complete` is passed over).
async fn next_ids(ws: &mut WsClient, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < count {
        match ws.next(Duration::from_secs(15)).await {
            WsEvent::Json(v) if v["type"] == "complete" => continue,
            WsEvent::Json(v) if v["type"] == "next" => {
                assert!(v["payload"].get("errors").is_none(), "errors: {v}");
                ids.push(v["id"].as_str().unwrap().to_string());
            }
            other => panic!("expected next, got {other:?}"),
        }
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn a_socket_that_never_initialises_is_closed_with_4408_whatever_it_pings() {
    let app = spawn_app_with(|c| c.websocket.init_timeout_secs = 1).await;
    let mut ws = ws_open_to(app.port).await;
    // Keep the socket busy with both kinds of ping, and never send connection_init.
    let mut every = tokio::time::interval(Duration::from_millis(200));
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let _ = ws.socket.send(Message::Ping(b"still here".to_vec().into())).await;
                    let _ = ws.socket.send(Message::Text(json!({ "type": "ping" }).to_string().into())).await;
                }
                frame = ws.socket.next() => match frame {
                    Some(Ok(Message::Close(frame))) => {
                        return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return None,
                },
            }
        }
    })
    .await
    .expect("the uninitialised socket is closed in time");
    let (code, reason) = closed.expect("a close frame with a code");
    assert_eq!(code, 4408);
    assert_eq!(reason, "Connection initialisation timeout");
}

#[tokio::test]
async fn the_subscription_past_the_limit_is_refused_and_the_others_keep_working() {
    let app = spawn_app_with(|c| c.websocket.max_subscriptions_per_socket = 2).await;
    leak_policy(&app).await;
    let mut ws = app.ws_connect(bearer(&app.key)).await;
    ws.expect_ack().await;
    ws.subscribe("a", INCIDENTS, json!({})).await;
    ws.subscribe("b", INCIDENTS, json!({})).await;
    ws.subscribe("c", INCIDENTS, json!({})).await;
    match ws.next(Duration::from_secs(10)).await {
        WsEvent::Json(v) => {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(v["id"], "c", "{v}");
            let error = &v["payload"][0];
            assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{v}");
            assert_eq!(
                error["extensions"]["limit"], "websocket.max_subscriptions_per_socket",
                "{v}"
            );
            let message = error["message"].as_str().unwrap();
            assert!(
                message.contains("websocket.max_subscriptions_per_socket") && message.contains('2'),
                "{message}"
            );
        }
        other => panic!("expected an error for `c`, got {other:?}"),
    }

    // The two earlier ones still stream, on the same socket.
    incident(&app).await;
    assert_eq!(next_ids(&mut ws, 2).await, ["a", "b"]);

    // Completing one frees its place.
    ws.send_json(json!({ "type": "complete", "id": "a" })).await;
    ws.subscribe("c", INCIDENTS, json!({})).await;
    // `c` replays the stored incident; then a new one reaches `b` and `c`.
    let replayed = next_ids(&mut ws, 1).await;
    assert_eq!(replayed, ["c"]);
    incident(&app).await;
    assert_eq!(next_ids(&mut ws, 2).await, ["b", "c"]);
}

#[tokio::test]
async fn a_tenant_past_its_socket_limit_is_refused_while_another_tenant_connects() {
    let app = spawn_app_with(|c| c.websocket.max_sockets_per_tenant = 2).await;
    let mut first = app.ws_connect(bearer(&app.key)).await;
    first.expect_ack().await;
    let mut second = app.ws_connect(bearer(&app.key)).await;
    second.expect_ack().await;

    let mut third = app.ws_connect(bearer(&app.key)).await;
    let (code, reason) = third.expect_close(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1008), "{reason}");
    assert!(
        reason.contains("websocket.max_sockets_per_tenant"),
        "{reason}"
    );

    let other = app.other_tenant("other").await;
    let mut theirs = app.ws_connect(json!({ "Authorization": other })).await;
    theirs.expect_ack().await;

    // A socket that ends gives its place back (once the server has seen it go).
    first.socket.close(None).await.unwrap();
    first.expect_close(Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = app.ws_connect(bearer(&app.key)).await;
        match again.next(Duration::from_secs(10)).await {
            WsEvent::Json(v) if v["type"] == "connection_ack" => break,
            WsEvent::Closed(Some(1008)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("expected the freed place, got {other:?}"),
        }
    }
    drop(second);
}

/// A second key of the `default` tenant; (key, key id).
async fn second_key(app: &TestApp) -> (String, String) {
    let (ok, out, err) = run_cli(
        &app.env,
        &["key", "create", "--tenant", "default", "--name", "ws"],
    )
    .await;
    assert!(ok, "key create failed: {err}");
    let key = key_in(&out).expect("the new key is printed");
    let me = app
        .gql_auth(
            Some(&format!("Bearer {key}")),
            "{ me { apiKey { id } } }",
            json!({}),
        )
        .await;
    let id = me.data()["me"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (key, id)
}

#[tokio::test]
async fn a_key_revoked_while_its_socket_is_open_loses_the_socket_with_4403() {
    let app = Arc::new(spawn_app_with(|c| c.websocket.auth_recheck_secs = 1).await);
    leak_policy(&app).await;
    let (key, key_id) = second_key(&app).await;
    let mut revoked = app.ws_connect(bearer(&key)).await;
    revoked.expect_ack().await;
    revoked.subscribe("1", INCIDENTS, json!({})).await;
    let mut kept = app.ws_connect(bearer(&app.key)).await;
    kept.expect_ack().await;
    kept.subscribe("1", INCIDENTS, json!({})).await;

    let (ok, _, err) = run_cli(&app.env, &["key", "revoke", &key_id]).await;
    assert!(ok, "revoke failed: {err}");
    let (code, reason) = revoked.expect_close(Duration::from_secs(15)).await;
    assert_eq!(code, Some(4403), "{reason}");
    assert!(reason.contains("revoked"), "{reason}");

    // Revocation is per key: the tenant's other socket still streams.
    let creator = {
        let app = app.clone();
        tokio::spawn(async move { incident(&app).await })
    };
    let data = kept.next_data("1").await;
    let run = creator.await.unwrap();
    assert_eq!(data["incidentEvents"]["incident"]["run"]["id"], run);
}

#[tokio::test]
async fn a_key_revoked_through_one_replica_loses_its_socket_on_another() {
    if crate::helpers::redis_url().is_none() {
        eprintln!("skipped: several replicas need PostgreSQL + Redis (scripts/test postgres)");
        return;
    }
    let app = spawn_app_with(|c| c.websocket.auth_recheck_secs = 1).await;
    let (key, key_id) = second_key(&app).await;
    let (_replica, port) = crate::subscriptions::second_replica(
        &app,
        &[("GOVERNANCE_WEBSOCKET__AUTH_RECHECK_SECS", "1")],
    )
    .await;
    let mut on_b = crate::helpers::ws_connect_to(port, bearer(&key)).await;
    on_b.expect_ack().await;
    on_b.subscribe("1", INCIDENTS, json!({})).await;

    // Revoked through replica A's database connection; B never hears of it but from the database.
    governance_core::tenancy::revoke_key(&app.db, &key_id)
        .await
        .unwrap();
    let (code, reason) = on_b.expect_close(Duration::from_secs(15)).await;
    assert_eq!(code, Some(4403), "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
}

/// Subscribe to incidents, say nothing through `pings` server Pings (each within `per_ping`;
/// the client library answers them, and nothing else may arrive: no close), then get the
/// incident created while the subscriber keeps reading.
async fn quiet_subscriber_gets_the_incident(app: Arc<TestApp>, pings: usize, per_ping: Duration) {
    leak_policy(&app).await;
    let mut ws = app.ws_connect(bearer(&app.key)).await;
    ws.expect_ack().await;
    ws.subscribe("1", INCIDENTS, json!({})).await;
    ws.expect_pings(pings, per_ping).await;
    let creator = {
        let app = app.clone();
        tokio::spawn(async move { incident(&app).await })
    };
    let data = ws.next_data("1").await;
    let run = creator.await.unwrap();
    assert_eq!(data["incidentEvents"]["incident"]["run"]["id"], run);
}

#[tokio::test]
async fn a_quiet_subscriber_answering_pings_stays_open_and_still_gets_events() {
    let app = spawn_app_with(|c| {
        c.websocket.ping_interval_secs = 1;
        c.websocket.pong_timeout_secs = 3;
    })
    .await;
    // Several ping intervals of silence from the subscriber's side.
    quiet_subscriber_gets_the_incident(Arc::new(app), 4, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_with_1001() {
    // One Ping goes out (at 2 s) and is left unanswered; the close (at 3 s) comes before the next.
    let app = spawn_app_with(|c| {
        c.websocket.ping_interval_secs = 2;
        c.websocket.pong_timeout_secs = 1;
    })
    .await;
    let mut ws = app.ws_connect(bearer(&app.key)).await;
    ws.expect_ack().await;
    // The client stops reading, so its library answers nothing; the server's gauge of open
    // sockets says when the server has given up on it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.metric("governance_ws_connections").await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unresponsive socket was not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, reason) = ws.expect_close(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1001), "{reason}");
    assert!(reason.contains("pong"), "{reason}");
}

#[tokio::test]
async fn a_subscriber_idle_for_minutes_with_the_default_timers_stays_connected() {
    // Default settings, as an integrator meets them: a client that never sends anything of its
    // own (like graphql-ws with its defaults; its WebSocket library answers Pings) waits
    // two and a half minutes for an incident, then gets it. A Ping every 15 s: ten of them is
    // 150 s of silence from the client's side.
    let app = spawn_app_with(|_| {}).await;
    quiet_subscriber_gets_the_incident(Arc::new(app), 10, Duration::from_secs(20)).await;
}
