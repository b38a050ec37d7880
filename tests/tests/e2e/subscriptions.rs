//! Subscriptions over graphql-transport-ws: authentication in `connection_init`, and a live stream.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{WsEvent, spawn_app};

#[tokio::test]
async fn connection_init_without_a_valid_key_is_closed_with_4403() {
    let app = spawn_app().await;
    for payload in [
        json!({}),
        json!({ "Authorization": "Bearer gov_000000000000000000000000000000000000000000000000" }),
        json!({ "Authorization": "nonsense" }),
    ] {
        let mut ws = app.ws_connect(payload.clone()).await;
        match ws.next(Duration::from_secs(10)).await {
            WsEvent::Closed(code) => assert_eq!(code, Some(4403), "{payload}"),
            other => panic!("expected close 4403 for {payload}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn run_events_stream_live_until_the_run_ends() {
    let app = spawn_app().await;
    let run_id = app.start_run("wf-live").await;
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe(
        "1",
        "subscription($id: ID!) { runEvents(runId: $id) { cursor kind runId status occurredAt } }",
        json!({ "id": run_id }),
    )
    .await;
    // Stored events are replayed first: the run's start proves the stream is attached.
    let started = ws.next_data("1").await;
    assert_eq!(started["runEvents"]["kind"], "STARTED");
    assert_eq!(started["runEvents"]["status"], "RUNNING");
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: FAILED, error: \"tool crashed\") { id } }",
        json!({ "id": run_id }),
    )
    .await;
    let data = ws.next_data("1").await;
    let event = &data["runEvents"];
    assert_eq!(event["kind"], "COMPLETED");
    assert_eq!(event["runId"], run_id);
    assert_eq!(event["status"], "FAILED");
    let cursor = |v: &serde_json::Value| {
        v["runEvents"]["cursor"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    assert!(cursor(&data) > cursor(&started));
    // The stream ends after the run's terminal event.
    match ws.next(Duration::from_secs(10)).await {
        WsEvent::Json(v) => assert_eq!(v["type"], "complete", "{v}"),
        other => panic!("expected complete, got {other:?}"),
    }

    // Another tenant's run cannot be followed.
    ws.subscribe(
        "2",
        "subscription { runEvents(runId: \"run_01jx0000000000000000000000\") { kind } }",
        json!({}),
    )
    .await;
    match ws.next(Duration::from_secs(10)).await {
        // A resolver error is delivered as a `next` carrying `errors` (the protocol's `error`
        // message is for requests that fail before execution).
        WsEvent::Json(v) => {
            assert_eq!(v["type"], "next", "{v}");
            assert_eq!(
                v["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
                "{v}"
            );
        }
        other => panic!("expected error, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_subscriptions_get_an_error_with_a_code() {
    let app = spawn_app().await;
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe("1", "subscription { noSuchStream { x } }", json!({}))
        .await;
    match ws.next(Duration::from_secs(10)).await {
        WsEvent::Json(v) => {
            let errors = if v["type"] == "error" {
                &v["payload"]
            } else {
                &v["payload"]["errors"]
            };
            assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT", "{v}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}
