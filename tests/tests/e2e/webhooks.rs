//! Webhooks as an integrator receives them: a local HTTP endpoint checks each Standard Webhooks
//! signature, fails on purpose, and the deliveries are retried and recorded.

use std::{collections::HashMap, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::mpsc,
};

use crate::helpers::{TestApp, spawn_app};

/// A request the endpoint received.
#[derive(Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

/// A local endpoint answering with `statuses` in turn (then 200), reporting every request.
async fn endpoint(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let status = statuses.next().unwrap_or(200);
            let (read, mut write) = socket.into_split();
            let mut reader = BufReader::new(read);
            let mut headers = HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap(); // request line
            loop {
                line.clear();
                reader.read_line(&mut line).await.unwrap();
                let trimmed = line.trim_end();
                if trimmed.is_empty() {
                    break;
                }
                if let Some((name, value)) = trimmed.split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                }
            }
            let length: usize = headers
                .get("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await.unwrap();
            let _ = tx.send(Received {
                headers,
                body: String::from_utf8(body).unwrap(),
            });
            let response =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = write.write_all(response.as_bytes()).await;
            let _ = write.shutdown().await;
        }
    });
    (url, rx)
}

/// Check a Standard Webhooks signature the way a receiver does.
fn signature_valid(secret: &str, received: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = format!(
        "{}.{}.{}",
        received.headers["webhook-id"], received.headers["webhook-timestamp"], received.body
    );
    let expected = STANDARD.encode(governance_core::webhooks::hmac_sha256(
        &key,
        signed.as_bytes(),
    ));
    received.headers["webhook-signature"]
        .split(' ')
        .any(|sig| sig == format!("v1,{expected}"))
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a delivery in time")
        .expect("endpoint running")
}

const CREATE: &str = "mutation($url: String!, $events: [WebhookEventKind!]!, $min: Severity) {
    createWebhook(url: $url, events: $events, minSeverity: $min) { secret webhook { id url events minSeverity } } }";

async fn create(app: &TestApp, url: &str, events: Value, min: Value) -> (String, String) {
    let data = app
        .gql_ok(CREATE, json!({ "url": url, "events": events, "min": min }))
        .await;
    let created = &data["createWebhook"];
    (
        created["webhook"]["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

async fn stop_a_run(app: &TestApp, content: &str) -> String {
    let run = app.start_run("wf-hooks").await;
    let d = app
        .step_ok(
            &run,
            json!({ "type": "LLM_CALL", "tokens": 1, "content": content }),
        )
        .await;
    assert_eq!(d["action"], "STOP", "{d}");
    run
}

async fn secrets(app: &TestApp) {
    for severity in ["HIGH", "CRITICAL"] {
        app.create_policy(json!({
            "name": format!("Secret {severity}"), "kind": "CONTENT_RULE",
            "rule": { "patterns": [format!("secret-{}", severity.to_lowercase())] },
            "action": "BLOCK", "severity": severity,
        }))
        .await;
    }
}

const DELIVERIES: &str = "query($id: ID!) { webhook(id: $id) { deliveries {
    totalCount nodes { messageId attempt status statusCode error deliveredAt } } } }";

#[tokio::test]
async fn deliveries_are_signed_retried_with_backoff_and_recorded_per_attempt() {
    let app = spawn_app().await;
    secrets(&app).await;
    let (url, mut rx) = endpoint(vec![500, 503, 200]).await;
    let (hook, secret) = create(&app, &url, json!(["INCIDENT_CREATED"]), Value::Null).await;
    let run = stop_a_run(&app, "leak secret-high").await;

    let attempts = [
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
    ];
    for received in &attempts {
        assert!(signature_valid(&secret, received), "{received:?}");
        assert_eq!(received.headers["content-type"], "application/json");
        assert_eq!(
            received.headers["webhook-id"], attempts[0].headers["webhook-id"],
            "one message id for every attempt"
        );
        let body: Value = serde_json::from_str(&received.body).unwrap();
        assert_eq!(body["type"], "INCIDENT_CREATED");
        assert_eq!(body["data"]["runId"], run);
        let sent_at: i64 = received.headers["webhook-timestamp"].parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 120);
    }
    let data = app
        .poll_until(
            DELIVERIES,
            json!({ "id": hook }),
            Duration::from_secs(30),
            |d| d["webhook"]["deliveries"]["totalCount"] == 3,
        )
        .await;
    let rows = data["webhook"]["deliveries"]["nodes"].as_array().unwrap();
    let summary: Vec<(i64, &str, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["attempt"].as_i64().unwrap(),
                r["status"].as_str().unwrap(),
                r["statusCode"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (3, "SUCCEEDED", 200),
            (2, "FAILED", 503),
            (1, "FAILED", 500)
        ],
        "newest first"
    );
    assert!(rows[2]["error"].as_str().unwrap().contains("500"));
    assert_eq!(
        rows[0]["messageId"],
        attempts[0].headers["webhook-id"].as_str()
    );
    let first =
        chrono::DateTime::parse_from_rfc3339(rows[2]["deliveredAt"].as_str().unwrap()).unwrap();
    let third =
        chrono::DateTime::parse_from_rfc3339(rows[0]["deliveredAt"].as_str().unwrap()).unwrap();
    assert!(
        third - first >= chrono::Duration::milliseconds(200),
        "retried with backoff"
    );
}

#[tokio::test]
async fn endpoints_get_only_the_kinds_and_severities_they_asked_for() {
    let app = spawn_app().await;
    secrets(&app).await;
    let (all_url, mut all) = endpoint(vec![]).await;
    let (critical_url, mut critical) = endpoint(vec![]).await;
    create(
        &app,
        &all_url,
        json!(["INCIDENT_CREATED", "INCIDENT_ACKNOWLEDGED"]),
        Value::Null,
    )
    .await;
    let (critical_hook, _) = create(
        &app,
        &critical_url,
        json!(["INCIDENT_CREATED"]),
        json!("CRITICAL"),
    )
    .await;

    let high = stop_a_run(&app, "secret-high").await;
    let crit = stop_a_run(&app, "secret-critical").await;
    let mut runs_seen = vec![];
    for _ in 0..2 {
        let body: Value = serde_json::from_str(&next(&mut all).await.body).unwrap();
        runs_seen.push(body["data"]["runId"].as_str().unwrap().to_string());
    }
    runs_seen.sort();
    let mut expected = vec![high.clone(), crit.clone()];
    expected.sort();
    assert_eq!(runs_seen, expected);
    let body: Value = serde_json::from_str(&next(&mut critical).await.body).unwrap();
    assert_eq!(body["data"]["runId"], crit);
    // Both incidents have been fanned out (the first endpoint got both), so the CRITICAL-only
    // endpoint's log is final: one delivery.
    let data = app
        .poll_until(
            DELIVERIES,
            json!({ "id": critical_hook }),
            Duration::from_secs(30),
            |d| d["webhook"]["deliveries"]["totalCount"] == 1,
        )
        .await;
    assert_eq!(
        data["webhook"]["deliveries"]["nodes"][0]["status"],
        "SUCCEEDED"
    );
    assert!(
        critical.try_recv().is_err(),
        "nothing else for the CRITICAL-only endpoint"
    );

    // Refused: non-http(s) URLs and an empty kind list.
    for (url, events) in [
        ("ftp://example.com/hook", json!(["INCIDENT_CREATED"])),
        ("file:///etc/passwd", json!(["INCIDENT_CREATED"])),
        ("not a url", json!(["INCIDENT_CREATED"])),
        ("https://example.com/hook", json!([])),
    ] {
        let response = app
            .gql(CREATE, json!({ "url": url, "events": events, "min": null }))
            .await;
        assert_eq!(
            response.error_code().as_deref(),
            Some("BAD_USER_INPUT"),
            "{url}: {}",
            response.body
        );
    }
    let list = app.gql_ok("{ webhooks { totalCount } }", json!({})).await;
    assert_eq!(
        list["webhooks"]["totalCount"], 2,
        "nothing stored for refused requests"
    );
}

#[tokio::test]
async fn secrets_rotate_and_endpoints_can_be_removed() {
    let app = spawn_app().await;
    secrets(&app).await;
    let (url, mut rx) = endpoint(vec![]).await;
    let (hook, old) = create(&app, &url, json!(["INCIDENT_CREATED"]), Value::Null).await;
    let rotated = app
        .gql_ok(
            "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret webhook { id } } }",
            json!({ "id": hook }),
        )
        .await;
    let new = rotated["rotateWebhookSecret"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    stop_a_run(&app, "secret-high").await;
    let received = next(&mut rx).await;
    assert!(signature_valid(&new, &received));
    assert!(
        !signature_valid(&old, &received),
        "the old secret no longer signs"
    );

    let other = app.other_tenant("other").await;
    let theirs = app
        .gql_auth(
            Some(&other),
            "mutation($id: ID!) { deleteWebhook(id: $id) }",
            json!({ "id": hook }),
        )
        .await;
    assert_eq!(theirs.error_code().as_deref(), Some("NOT_FOUND"));
    let deleted = app
        .gql_ok(
            "mutation($id: ID!) { deleteWebhook(id: $id) }",
            json!({ "id": hook }),
        )
        .await;
    assert_eq!(deleted["deleteWebhook"], hook);
    let list = app.gql_ok("{ webhooks { totalCount } }", json!({})).await;
    assert_eq!(list["webhooks"]["totalCount"], 0);
    let gone = app
        .gql(
            "query($id: ID!) { webhook(id: $id) { id } }",
            json!({ "id": hook }),
        )
        .await;
    assert_eq!(gone.error_code().as_deref(), Some("NOT_FOUND"));
}

#[tokio::test]
async fn a_lost_fan_out_is_found_by_the_sweeper_query() {
    use governance_api::config::WorkersMode;
    // No workers: the fan-out job waits in the queue, as if the process had died after the
    // commit. The repair query names the delivery that should exist.
    let app = crate::helpers::spawn_app_with(|c| c.workers = WorkersMode::Off).await;
    secrets(&app).await;
    let (url, _rx) = endpoint(vec![]).await;
    let (hook, _) = create(&app, &url, json!(["INCIDENT_CREATED"]), Value::Null).await;
    let (other_url, _other_rx) = endpoint(vec![]).await;
    create(&app, &other_url, json!(["INCIDENT_RESOLVED"]), Value::Null).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    stop_a_run(&app, "secret-high").await;
    let after = chrono::Utc::now() + chrono::Duration::seconds(5);
    let missing = governance_core::webhooks::undelivered(&app.db, before, after, 100)
        .await
        .unwrap();
    assert_eq!(
        missing.len(),
        1,
        "only the endpoint that wants INCIDENT_CREATED: {missing:?}"
    );
    assert_eq!(missing[0].1, hook);
    // A later endpoint is not owed events committed before it existed.
    create(&app, &url, json!(["INCIDENT_CREATED"]), Value::Null).await;
    let again = governance_core::webhooks::undelivered(&app.db, before, after, 100)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
}

/// A TCP listener on loopback that no test request should reach; its port makes the attacker's
/// URLs point at something real. Never accepted from, so every connection made to it waits in
/// the kernel's queue.
fn bait() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// Has anyone connected to `listener`? Asked of the kernel without waiting: a connection made
/// earlier is already in the accept queue.
fn contacted(listener: &std::net::TcpListener) -> bool {
    listener.accept().is_ok()
}

fn no_egress_exceptions(config: &mut governance_api::Config) {
    config.webhooks.allow_cidrs.clear();
}

#[tokio::test]
async fn webhooks_cannot_target_loopback_private_or_link_local_addresses() {
    let app = crate::helpers::spawn_app_with(no_egress_exceptions).await;
    let listener = bait();
    let port = listener.local_addr().unwrap().port();
    for (url, class) in [
        (format!("http://127.0.0.1:{port}/"), "a loopback address"),
        (format!("http://localhost:{port}/"), "a loopback address"),
        (format!("http://[::1]:{port}/"), "a loopback address"),
        (
            "http://[::ffff:127.0.0.1]/".to_string(),
            "a loopback address",
        ),
        (format!("http://2130706433:{port}/"), "a loopback address"),
        ("http://10.0.0.1/".to_string(), "a private address"),
        (
            "http://169.254.169.254/latest".to_string(),
            "a link-local address",
        ),
        (
            "http://100.64.0.1/".to_string(),
            "a carrier-grade NAT address",
        ),
        ("http://0.0.0.0/".to_string(), "an unspecified address"),
    ] {
        let response = app
            .gql(
                CREATE,
                json!({ "url": url, "events": ["INCIDENT_CREATED"], "min": null }),
            )
            .await;
        assert_eq!(
            response.error_code().as_deref(),
            Some("BAD_USER_INPUT"),
            "{url}: {}",
            response.body
        );
        assert_eq!(
            response.body["errors"][0]["extensions"]["field"], "url",
            "{url}"
        );
        let message = response.error_message();
        assert!(message.contains(class), "{url}: {message}");
        assert!(
            message.contains("webhooks.allow_cidrs"),
            "the message says how to allow it: {message}"
        );
    }
    let list = app.gql_ok("{ webhooks { totalCount } }", json!({})).await;
    assert_eq!(list["webhooks"]["totalCount"], 0, "nothing written");
    assert!(!contacted(&listener), "no connection was made");
}

#[tokio::test]
async fn webhooks_are_refused_at_delivery_when_the_target_is_no_longer_allowed() {
    // Created while loopback is allowed; delivered after a restart that allows nothing.
    let app = spawn_app().await;
    secrets(&app).await;
    let listener = bait();
    let url = format!(
        "http://localhost:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let (hook, _) = create(&app, &url, json!(["INCIDENT_CREATED"]), Value::Null).await;
    let app = app.restart(no_egress_exceptions).await;

    stop_a_run(&app, "leak secret-high").await;
    let data = app
        .poll_until(
            DELIVERIES,
            json!({ "id": hook }),
            Duration::from_secs(30),
            |d| d["webhook"]["deliveries"]["totalCount"] == 1,
        )
        .await;
    let row = &data["webhook"]["deliveries"]["nodes"][0];
    assert_eq!(row["status"], "FAILED", "{row}");
    assert_eq!(row["statusCode"], Value::Null);
    assert_eq!(row["error"], "refused: the target address is not allowed");
    assert!(!contacted(&listener), "nothing was sent to the receiver");

    // The handler itself: a refusal is permanent (not retried), and recorded again if run.
    let event_id: i64 = row["messageId"]
        .as_str()
        .and_then(|m| m.strip_prefix("msg_"))
        .and_then(|id| id.parse().ok())
        .expect("msg_<event id>");
    let client =
        governance_workers::webhook_client::WebhookClient::new(Default::default()).expect("client");
    use sea_orm::EntityTrait;
    let stored = governance_entities::webhook::Entity::find_by_id(hook.clone())
        .one(&app.db)
        .await
        .unwrap()
        .expect("the endpoint");
    let job = governance_workers::jobs::DeliverWebhook {
        tenant_id: stored.tenant_id,
        webhook_id: hook.clone(),
        event_id,
    };
    let outcome = governance_workers::jobs::deliver_webhook(&job, &app.store, &client).await;
    assert!(
        matches!(
            outcome,
            Err(governance_workers::jobs::JobError::Permanent(_))
        ),
        "{outcome:?}"
    );
    assert!(!contacted(&listener), "nothing was sent to the receiver");
}

#[tokio::test]
async fn webhooks_per_tenant_are_capped() {
    let app = crate::helpers::spawn_app_with(|c| c.webhooks.max_per_tenant = 2).await;
    let listener = bait();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let (first, _) = create(&app, &url, json!(["INCIDENT_CREATED"]), Value::Null).await;
    create(&app, &url, json!(["RUN_STOPPED"]), Value::Null).await;
    let third = app
        .gql(
            CREATE,
            json!({ "url": url, "events": ["RUN_COMPLETED"], "min": null }),
        )
        .await;
    assert_eq!(
        third.error_code().as_deref(),
        Some("BAD_USER_INPUT"),
        "{}",
        third.body
    );
    assert_eq!(
        third.body["errors"][0]["extensions"]["limit"],
        "webhooks.max_per_tenant"
    );
    let list = app.gql_ok("{ webhooks { totalCount } }", json!({})).await;
    assert_eq!(list["webhooks"]["totalCount"], 2, "nothing written");

    // The cap is per tenant, and a deleted endpoint frees its place.
    let other = app.other_tenant("other").await;
    let theirs = app
        .gql_auth(
            Some(&other),
            CREATE,
            json!({ "url": url, "events": ["RUN_COMPLETED"], "min": null }),
        )
        .await;
    theirs.data();
    app.gql_ok(
        "mutation($id: ID!) { deleteWebhook(id: $id) }",
        json!({ "id": first }),
    )
    .await;
    create(&app, &url, json!(["RUN_COMPLETED"]), Value::Null).await;
}

#[tokio::test]
async fn endpoints_are_matched_as_of_the_event_not_the_fan_out() {
    use governance_api::config::WorkersMode;
    // No workers: the fan-out of the incident waits in the queue.
    let app = crate::helpers::spawn_app_with(|c| c.workers = WorkersMode::Off).await;
    secrets(&app).await;
    let (early_url, mut early_rx) = endpoint(vec![]).await;
    create(&app, &early_url, json!(["INCIDENT_CREATED"]), Value::Null).await;
    let first_run = stop_a_run(&app, "secret-high").await;
    // An endpoint created after the event, before its fan-out runs.
    let (late_url, mut late_rx) = endpoint(vec![]).await;
    create(&app, &late_url, json!(["INCIDENT_CREATED"]), Value::Null).await;
    let app = app.restart(|c| c.workers = WorkersMode::Embedded).await;

    let delivered: Value = serde_json::from_str(&next(&mut early_rx).await.body).unwrap();
    assert_eq!(delivered["data"]["runId"], first_run, "{delivered}");
    // The late endpoint's first delivery is of the next event, not of the one before it.
    let second_run = stop_a_run(&app, "secret-high").await;
    let late: Value = serde_json::from_str(&next(&mut late_rx).await.body).unwrap();
    assert_eq!(late["data"]["runId"], second_run, "{late}");
    let early: Value = serde_json::from_str(&next(&mut early_rx).await.body).unwrap();
    assert_eq!(early["data"]["runId"], second_run, "{early}");
    // Counted per process (tests share one): at least these three.
    app.poll_metric_until(
        "governance_webhook_deliveries_total{outcome=\"delivered\"}",
        |v| v >= 3.0,
    )
    .await;
}

/// A chat integration subscribes to approval requests and decisions: it gets the request (with
/// what to post: the approval, the run, the step, when it expires), then the decision.
#[tokio::test]
async fn approval_requests_and_decisions_reach_a_subscribed_endpoint() {
    let app = spawn_app().await;
    app.create_policy(json!({
        "name": "Approve payments", "kind": "TOOL_ALLOWLIST",
        "rule": { "tools": ["search"] }, "action": "REQUIRE_APPROVAL", "severity": "HIGH",
    }))
    .await;
    let (url, mut rx) = endpoint(vec![]).await;
    let (_, secret) = create(
        &app,
        &url,
        json!(["APPROVAL_REQUESTED", "APPROVAL_GRANTED"]),
        Value::Null,
    )
    .await;
    let run = app.start_run("wf-chat").await;
    let hold = app
        .step_ok(
            &run,
            json!({ "type": "TOOL_CALL", "tokens": 1, "toolName": "pay" }),
        )
        .await;
    assert_eq!(hold["action"], "HOLD", "{hold}");

    let requested = next(&mut rx).await;
    assert!(signature_valid(&secret, &requested), "{requested:?}");
    let body: Value = serde_json::from_str(&requested.body).unwrap();
    assert_eq!(body["type"], "APPROVAL_REQUESTED", "{body}");
    assert_eq!(body["data"]["runId"], run.as_str());
    assert_eq!(body["data"]["stepIndex"], 0);
    assert_eq!(body["data"]["status"], "PENDING");
    assert!(body["data"]["expiresAt"].is_string(), "{body}");
    let approval = body["data"]["approvalId"].as_str().unwrap().to_string();

    let (ok, out, err) = crate::helpers::run_cli(
        &app.env,
        &[
            "key", "create", "--tenant", "default", "--name", "chat", "--role", "APPROVER",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let approver = format!("Bearer {}", crate::helpers::key_in(&out).unwrap());
    let granted = app
        .gql_auth(
            Some(&approver),
            "mutation($id: ID!) { approveStep(id: $id, note: \"ok from chat\") { status } }",
            json!({ "id": approval }),
        )
        .await;
    assert_eq!(
        granted.data()["approveStep"]["status"],
        "GRANTED",
        "{}",
        granted.body
    );
    let decided: Value = serde_json::from_str(&next(&mut rx).await.body).unwrap();
    assert_eq!(decided["type"], "APPROVAL_GRANTED", "{decided}");
    assert_eq!(decided["data"]["approvalId"], approval.as_str());
    assert_eq!(decided["data"]["note"], "ok from chat");
}
