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
    // A step recorded before the client subscribes is replayed in its place.
    app.step_ok(&run_id, json!({ "type": "LLM_CALL", "tokens": 5 }))
        .await;
    ws.subscribe(
        "1",
        "subscription($id: ID!) { runEvents(runId: $id) { cursor kind runId status occurredAt step { stepIndex decision entryHash } } }",
        json!({ "id": run_id }),
    )
    .await;
    // Stored events are replayed first: the run's start proves the stream is attached.
    let started = ws.next_data("1").await;
    assert_eq!(started["runEvents"]["kind"], "STARTED");
    assert_eq!(started["runEvents"]["status"], "RUNNING");
    let replayed = ws.next_data("1").await;
    assert_eq!(replayed["runEvents"]["kind"], "STEP_RECORDED");
    assert_eq!(replayed["runEvents"]["step"]["stepIndex"], 0);
    // Live: the next step, with its decision.
    let recorded = app
        .step_ok(
            &run_id,
            json!({ "type": "TOOL_CALL", "tokens": 7, "toolName": "search" }),
        )
        .await;
    let live = ws.next_data("1").await;
    assert_eq!(live["runEvents"]["kind"], "STEP_RECORDED");
    assert_eq!(live["runEvents"]["step"]["stepIndex"], 1);
    assert_eq!(live["runEvents"]["step"]["decision"], "CONTINUE");
    assert_eq!(
        live["runEvents"]["step"]["entryHash"],
        recorded["step"]["entryHash"]
    );
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

const INCIDENT_EVENTS: &str = "subscription($after: String, $min: Severity) {
    incidentEvents(after: $after, minSeverity: $min) {
        cursor kind incidentId status severity occurredAt incident { id run { id } } } }";

/// A policy that stops any run whose step carries `content` with `secret-<severity>`.
async fn secrets_policy(app: &crate::helpers::TestApp, severity: &str) {
    app.create_policy(json!({
        "name": format!("Secrets {severity}"), "kind": "CONTENT_RULE",
        "rule": { "patterns": [format!("secret-{}", severity.to_lowercase())] },
        "action": "BLOCK", "severity": severity,
    }))
    .await;
}

/// Start a run and stop it at once with a `severity` secret; returns the run id.
async fn incident(app: &crate::helpers::TestApp, severity: &str) -> String {
    let run = app.start_run("wf-incidents").await;
    let decision = app
        .step_ok(
            &run,
            json!({ "type": "LLM_CALL", "tokens": 1, "content": format!("leak secret-{}", severity.to_lowercase()) }),
        )
        .await;
    assert_eq!(decision["action"], "STOP", "{decision}");
    run
}

async fn subscribe_incidents(
    app: &crate::helpers::TestApp,
    authorization: &str,
    variables: serde_json::Value,
) -> crate::helpers::WsClient {
    let mut ws = app
        .ws_connect(json!({ "Authorization": authorization }))
        .await;
    ws.expect_ack().await;
    ws.subscribe("1", INCIDENT_EVENTS, variables).await;
    ws
}

fn cursor_of(event: &serde_json::Value) -> i64 {
    event["incidentEvents"]["cursor"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn incident_events_replay_then_go_live_without_gap_or_duplicate() {
    let app = std::sync::Arc::new(spawn_app().await);
    secrets_policy(&app, "HIGH").await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(incident(&app, "HIGH").await);
    }
    // More incidents are created while the subscriber replays the first three.
    let creator = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut runs = Vec::new();
            for _ in 0..5 {
                runs.push(incident(&app, "HIGH").await);
            }
            runs
        })
    };
    let bearer = format!("Bearer {}", app.key);
    let mut ws = subscribe_incidents(&app, &bearer, json!({})).await;
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(ws.next_data("1").await);
    }
    runs.extend(creator.await.unwrap());
    let cursors: Vec<i64> = seen.iter().map(cursor_of).collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "in order: {cursors:?}"
    );
    let mut seen_runs: Vec<String> = seen
        .iter()
        .map(|e| {
            e["incidentEvents"]["incident"]["run"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        seen.iter()
            .all(|e| e["incidentEvents"]["kind"] == "CREATED")
    );
    seen_runs.sort();
    runs.sort();
    assert_eq!(seen_runs, runs, "every incident once");

    // Live: an acknowledgement arrives next, and nothing else is pending.
    let incident_id = seen[7]["incidentEvents"]["incidentId"].clone();
    app.gql_ok(
        "mutation($id: ID!) { acknowledgeIncident(id: $id) { status } }",
        json!({ "id": incident_id }),
    )
    .await;
    let ack = ws.next_data("1").await;
    assert_eq!(ack["incidentEvents"]["kind"], "ACKNOWLEDGED");
    assert_eq!(ack["incidentEvents"]["status"], "ACKNOWLEDGED");
    assert_eq!(ack["incidentEvents"]["incidentId"], incident_id);
    assert!(cursor_of(&ack) > cursors[7]);
}

#[tokio::test]
async fn a_client_that_reconnects_with_its_cursor_loses_nothing() {
    let app = spawn_app().await;
    secrets_policy(&app, "HIGH").await;
    incident(&app, "HIGH").await;
    incident(&app, "HIGH").await;
    let bearer = format!("Bearer {}", app.key);
    let mut ws = subscribe_incidents(&app, &bearer, json!({})).await;
    let first = ws.next_data("1").await;
    let _second = ws.next_data("1").await;
    // The client goes away after the first event it processed.
    drop(ws);
    let missed = incident(&app, "HIGH").await;
    let mut ws = subscribe_incidents(
        &app,
        &bearer,
        json!({ "after": first["incidentEvents"]["cursor"] }),
    )
    .await;
    let again = ws.next_data("1").await;
    assert_eq!(
        again["incidentEvents"]["cursor"],
        _second["incidentEvents"]["cursor"]
    );
    let next = ws.next_data("1").await;
    assert_eq!(next["incidentEvents"]["incident"]["run"]["id"], missed);

    // A cursor that is not one is refused with a code.
    let mut bad = subscribe_incidents(&app, &bearer, json!({ "after": "yesterday" })).await;
    match bad.next(Duration::from_secs(10)).await {
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

#[tokio::test]
async fn min_severity_filters_and_tenants_only_see_their_own_events() {
    let mut app = spawn_app().await;
    secrets_policy(&app, "LOW").await;
    secrets_policy(&app, "CRITICAL").await;
    let other = app.other_tenant("other").await;
    let bearer = format!("Bearer {}", app.key);
    let mut severe = subscribe_incidents(&app, &bearer, json!({ "min": "HIGH" })).await;
    let mut theirs = subscribe_incidents(&app, &other, json!({})).await;
    incident(&app, "LOW").await;
    let critical = incident(&app, "CRITICAL").await;
    let got = severe.next_data("1").await;
    assert_eq!(got["incidentEvents"]["severity"], "CRITICAL");
    assert_eq!(got["incidentEvents"]["incident"]["run"]["id"], critical);

    // The other tenant's stream carries only its own incident, though ours came first.
    let ours = std::mem::replace(
        &mut app.key,
        other.trim_start_matches("Bearer ").to_string(),
    );
    secrets_policy(&app, "LOW").await;
    let their_run = incident(&app, "LOW").await;
    let got = theirs.next_data("1").await;
    assert_eq!(got["incidentEvents"]["incident"]["run"]["id"], their_run);
    app.key = ours;
}

/// A second `governance serve` process (no workers) on the same database, Redis and namespace,
/// with `env` added to its environment (e.g. `GOVERNANCE_WEBSOCKET__…` settings).
pub(crate) async fn second_replica(
    app: &crate::helpers::TestApp,
    env: &[(&str, &str)],
) -> (tokio::process::Child, u16) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut args = vec![
        "serve".to_string(),
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--workers".into(),
        "off".into(),
    ];
    args.extend(app.env.cli_args());
    let mut child = tokio::process::Command::new(crate::helpers::governance_bin())
        .args(&args)
        .env("GOVERNANCE_NAMESPACE", &app.env.namespace)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the second replica");
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let port_re = regex::Regex::new(r"port=(\d+)").unwrap();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = err.next_line().await.expect("read stderr") {
            if let Some(c) = port_re.captures(&line) {
                return c[1].parse::<u16>().expect("port");
            }
        }
        panic!("the second replica exited before listening");
    })
    .await
    .expect("the second replica listens in time");
    tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
    (child, port)
}

#[tokio::test]
async fn an_incident_on_one_replica_reaches_a_subscriber_on_another() {
    if crate::helpers::redis_url().is_none() {
        eprintln!(
            "skipped: fan-out across replicas needs PostgreSQL + Redis (scripts/test postgres)"
        );
        return;
    }
    let app = spawn_app().await;
    secrets_policy(&app, "HIGH").await;
    let (_replica, port) = second_replica(&app, &[]).await;
    let bearer = format!("Bearer {}", app.key);
    let mut on_b = crate::helpers::ws_connect_to(port, json!({ "Authorization": bearer })).await;
    on_b.expect_ack().await;
    on_b.subscribe("1", INCIDENT_EVENTS, json!({})).await;
    let mut on_a = subscribe_incidents(&app, &bearer, json!({})).await;

    // Created through replica A: B's subscriber sees it live.
    let run = incident(&app, "HIGH").await;
    let seen = on_b.next_data("1").await;
    assert_eq!(seen["incidentEvents"]["kind"], "CREATED");
    assert_eq!(seen["incidentEvents"]["incident"]["run"]["id"], run);
    let created = on_a.next_data("1").await;
    assert_eq!(
        created["incidentEvents"]["cursor"],
        seen["incidentEvents"]["cursor"]
    );

    // Acknowledged through replica B: A's subscriber sees it, once.
    let client = reqwest::Client::new();
    let ack: serde_json::Value = client
        .post(format!("http://127.0.0.1:{port}/graphql"))
        .header("Authorization", &bearer)
        .json(&json!({
            "query": "mutation($id: ID!) { acknowledgeIncident(id: $id) { status } }",
            "variables": { "id": seen["incidentEvents"]["incidentId"] },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ack["data"]["acknowledgeIncident"]["status"], "ACKNOWLEDGED",
        "{ack}"
    );
    let acked = on_a.next_data("1").await;
    assert_eq!(acked["incidentEvents"]["kind"], "ACKNOWLEDGED");
    let acked_b = on_b.next_data("1").await;
    assert_eq!(
        acked_b["incidentEvents"]["cursor"],
        acked["incidentEvents"]["cursor"]
    );
}

#[tokio::test]
async fn run_events_show_the_stopping_step_before_the_stop() {
    let app = spawn_app().await;
    app.create_policy(json!({
        "name": "Budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 10 },
        "action": "BLOCK", "severity": "HIGH",
    }))
    .await;
    let run_id = app.start_run("wf-live-stop").await;
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe(
        "1",
        "subscription($id: ID!) { runEvents(runId: $id) { kind status step { stepIndex decision isInflection } } }",
        json!({ "id": run_id }),
    )
    .await;
    assert_eq!(ws.next_data("1").await["runEvents"]["kind"], "STARTED");
    app.step_ok(&run_id, json!({ "type": "LLM_CALL", "tokens": 50 }))
        .await;
    let step = ws.next_data("1").await;
    assert_eq!(step["runEvents"]["kind"], "STEP_RECORDED");
    assert_eq!(step["runEvents"]["step"]["decision"], "STOP");
    assert_eq!(step["runEvents"]["step"]["isInflection"], true);
    let stop = ws.next_data("1").await;
    assert_eq!(stop["runEvents"]["kind"], "STOPPED");
    assert_eq!(stop["runEvents"]["status"], "FAILED_POLICY");
    match ws.next(Duration::from_secs(10)).await {
        WsEvent::Json(v) => assert_eq!(v["type"], "complete", "{v}"),
        other => panic!("expected complete, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_catches_up_from_the_outbox() {
    use futures::StreamExt;
    use governance_entities::event;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    let app = spawn_app().await;
    secrets_policy(&app, "HIGH").await;
    incident(&app, "HIGH").await;
    let stored_after = |seq: i64| {
        let db = app.db.clone();
        async move {
            event::Entity::find()
                .filter(event::Column::Seq.gt(seq))
                .order_by_asc(event::Column::Seq)
                .all(&db)
                .await
                .unwrap()
        }
    };
    let first = stored_after(0).await;
    let tenant = first[0].tenant_id.clone();
    // A bus that holds two messages.
    let bus = governance_workers::events::EventBus::with_capacity(2);
    let mut stream = Box::pin(governance_workers::events::tenant_stream(
        app.db.clone(),
        &bus,
        tenant,
        0,
    ));
    for expected in &first {
        assert_eq!(stream.next().await.unwrap().seq, expected.seq);
    }
    // Five more incidents reach the bus while the subscriber reads nothing: it lags.
    for _ in 0..5 {
        incident(&app, "HIGH").await;
    }
    let later = stored_after(first.last().unwrap().seq).await;
    assert!(later.len() >= 10);
    for row in later.iter().cloned() {
        bus.publish(row);
    }
    for expected in &later {
        assert_eq!(
            stream.next().await.unwrap().seq,
            expected.seq,
            "every event once, in order, despite the lag"
        );
    }
}
