//! Health, readiness, metrics, GraphiQL, and graceful shutdown.

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    helpers::{TestEnv, governance_bin, key_in, spawn_app},
    jobs::unsafe_free_kill,
};

#[tokio::test]
async fn health_ready_metrics_and_graphiql() {
    let app = spawn_app().await;
    let health = app.http().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    let ready = app.http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["queue"], "ok");

    app.gql_ok("{ me { tenant { name } } }", json!({})).await;
    let metrics = app.http().get(app.url("/metrics")).send().await.unwrap();
    assert!(
        metrics
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("governance_http_requests_total{route=\"/graphql\",status=\"200\"}"),
        "{text}"
    );

    let graphiql = app.http().get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(graphiql.status().as_u16(), 200);
    assert!(graphiql.text().await.unwrap().contains("graphiql"));
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_unreachable() {
    let app = spawn_app().await;
    // Close the server's pool: every query now fails as if the database were gone.
    app.store.db().clone().close().await.expect("close pool");
    let ready = app.http().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert!(
        body["database"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{body}"
    );
    // Liveness is unaffected: the process is fine, its dependency is not.
    let health = app.http().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

/// Start `governance serve` as a process on a free port; returns the child, port and key.
async fn start_server(env: &TestEnv) -> (tokio::process::Child, u16, String) {
    let mut args = vec!["serve".to_string(), "--bind".into(), "127.0.0.1:0".into()];
    args.extend(env.cli_args());
    let mut child = tokio::process::Command::new(governance_bin())
        .args(&args)
        .env("GOVERNANCE_NAMESPACE", &env.namespace)
        .env("GOVERNANCE_LOG_LEVEL", "info")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start governance serve");
    // The key is printed on stdout (before listening); logs, with the port, go to stderr.
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let port_re = regex::Regex::new(r"port=(\d+)").unwrap();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = err.next_line().await.expect("read stderr") {
            if let Some(c) = port_re.captures(&line) {
                return c[1].parse::<u16>().expect("port");
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server listens in time");
    let mut key = None;
    while key.is_none() {
        let line = out
            .next_line()
            .await
            .expect("read stdout")
            .expect("key line");
        key = key_in(&line);
    }
    // Keep draining both pipes so the server never blocks on a full one.
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
    (
        child,
        port,
        key.expect("the bootstrap key is printed on first start"),
    )
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let env = TestEnv::new().await;
    let (mut child, port, key) = start_server(&env).await;

    // An in-flight request: the body arrives in two parts, SIGTERM lands in between.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = json!({ "query": "{ me { tenant { name } } }" })
        .to_string()
        .into_bytes();
    let (first, second) = body.split_at(10);
    tx.send(Ok(first.to_vec())).await.unwrap();
    let stream = tokio_stream_from(rx);
    let client = reqwest::Client::new();
    let request = tokio::spawn(
        client
            .post(format!("http://127.0.0.1:{port}/graphql"))
            .header("Authorization", format!("Bearer {key}"))
            .header("Content-Type", "application/json")
            .header("Content-Length", body.len().to_string())
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    );
    // Let the request reach the server before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe_free_kill(child.id().expect("pid") as i32);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(second.to_vec())).await.unwrap();
    drop(tx);

    let response = request
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["data"]["me"]["tenant"]["name"], "default");

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("status");
    assert!(status.success(), "exit status {status:?}");
    // Nothing listens any more.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
    );
}

/// A request body fed from a channel, so the test decides when each part is sent.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
