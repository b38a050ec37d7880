//! Test harness: the real server, in-process on port 0, with a fresh database per test, and a
//! client that speaks GraphQL over HTTP and graphql-transport-ws over WebSocket.
//!
//! Backend: SQLite in a temporary directory by default; PostgreSQL + Redis when
//! `GOV_TEST_POSTGRES_URL` (an admin URL; each test creates its own database) and
//! `GOV_TEST_REDIS_URL` (each test uses its own key namespace) are set — `scripts/test` does that.
//! On PostgreSQL every test runs with the roles split as the README describes: its database is
//! owned by the role `gov_test_owner`, which migrates (`migration_database_url`), and the server
//! logs in as `gov_test_runtime`, which owns nothing. `TestApp::db` is the owner's connection:
//! tests that tamper with records act as the database's administrator, not as the service.

use std::{path::PathBuf, time::Duration};

use futures::{SinkExt, StreamExt};
use governance_api::{
    Application, Config,
    config::{Limits, LogFormat, WebhookSettings, WorkersMode},
};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};
use tokio_util::sync::CancellationToken;

/// The PostgreSQL admin URL of the run, if the suite runs on PostgreSQL + Redis.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("GOV_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

pub fn redis_url() -> Option<String> {
    std::env::var("GOV_TEST_REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Where one test's data lives: a temporary directory, and on PostgreSQL a fresh database.
pub struct TestEnv {
    pub dir: TempDir,
    /// The service's URL (on PostgreSQL, as the runtime role).
    pub database_url: Option<String>,
    /// On PostgreSQL, the owner role's URL, which migrates.
    pub migration_database_url: Option<String>,
    pub redis_url: Option<String>,
    pub namespace: String,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let unique = ulid::Ulid::new().to_string().to_lowercase();
        let (database_url, migration_database_url) = match postgres_admin_url() {
            Some(admin) => {
                let name = format!("gov_test_{unique}");
                let conn = Database::connect(&admin)
                    .await
                    .expect("connect to PostgreSQL admin URL");
                for role in [OWNER_ROLE, RUNTIME_ROLE] {
                    // Tests start in parallel: whoever comes second finds the role there.
                    conn.execute_unprepared(&format!(
                        "DO $$ BEGIN CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; \
                         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                    ))
                    .await
                    .expect("create test role");
                }
                conn.execute_unprepared(&format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}"))
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                (
                    Some(pg_url_as(&admin, RUNTIME_ROLE, &name)),
                    Some(pg_url_as(&admin, OWNER_ROLE, &name)),
                )
            }
            None => (None, None),
        };
        TestEnv {
            dir,
            database_url,
            migration_database_url,
            redis_url: redis_url(),
            namespace: format!("gt_{unique}"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// A configuration for this environment, on a free port.
    pub fn config(&self) -> Config {
        Config {
            database_url: self.database_url.clone(),
            migration_database_url: self.migration_database_url.clone(),
            redis_url: self.redis_url.clone(),
            bind: "127.0.0.1:0".parse().expect("addr"),
            data_dir: self.data_dir(),
            workers: WorkersMode::Embedded,
            log_format: LogFormat::Human,
            log_level: "warn".into(),
            db_max_connections: 8,
            namespace: self.namespace.clone(),
            shutdown_timeout_secs: 10,
            limits: Limits::default(),
            // Webhook tests deliver to receivers on loopback; the SSRF tests clear this.
            webhooks: WebhookSettings {
                allow_cidrs: vec!["127.0.0.0/8".into(), "::1/128".into()],
                ..WebhookSettings::default()
            },
            // Settings added later keep their defaults unless a test says otherwise.
            ..Config::default()
        }
    }

    /// Command-line arguments that point the `governance` binary at this environment.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec![
            "--data-dir".to_string(),
            self.dir.path().display().to_string(),
        ];
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".to_string(), url.clone()]);
        }
        if let Some(url) = &self.migration_database_url {
            args.extend(["--migration-database-url".to_string(), url.clone()]);
        }
        if let Some(url) = &self.redis_url {
            args.extend(["--redis-url".to_string(), url.clone()]);
        }
        args
    }
}

/// The role owning each test database on PostgreSQL (it runs the migrations).
pub const OWNER_ROLE: &str = "gov_test_owner";
/// The role the server logs in as on PostgreSQL.
pub const RUNTIME_ROLE: &str = "gov_test_runtime";

/// `url` with its user and database replaced (`postgres://user@host:port/db`).
pub fn pg_url_as(url: &str, user: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let rest = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
    let host = rest.split_once('/').map(|(host, _)| host).unwrap_or(rest);
    format!("{scheme}://{user}@{host}/{database}")
}

/// A running server and a client for it.
pub struct TestApp {
    pub port: u16,
    pub key: String,
    pub env: TestEnv,
    /// The database as its administrator sees it: on PostgreSQL a connection as the owner role
    /// (the server itself logs in as the runtime role); on SQLite the server's own pool.
    pub db: DatabaseConnection,
    /// The server's store, for in-process test hooks (fault injection).
    pub store: governance_core::store::Store,
    client: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let env = TestEnv::new().await;
    let mut config = env.config();
    configure(&mut config);
    spawn_in(env, config).await
}

/// Start the application in-process for `env` with `config`.
pub async fn spawn_in(env: TestEnv, config: Config) -> TestApp {
    start(env, config, None).await
}

/// Start the application in-process on a database bootstrapped before, whose tenant key is `key`.
pub async fn spawn_existing(env: TestEnv, config: Config, key: String) -> TestApp {
    start(env, config, Some(key)).await
}

/// Start the application; `key` is the tenant key when the database was bootstrapped before.
async fn start(env: TestEnv, config: Config, key: Option<String>) -> TestApp {
    // Server logs go to the test's output (shown for failing tests); RUST_LOG sets the level.
    governance_api::telemetry::init(LogFormat::Human, "warn");
    let app = Application::build(config)
        .await
        .expect("application builds");
    let key = app
        .bootstrap_key()
        .map(|k| k.secret.clone())
        .or(key)
        .expect("a fresh database bootstraps the default tenant");
    let port = app.port();
    let db = match &env.migration_database_url {
        Some(url) => {
            let mut options = sea_orm::ConnectOptions::new(url.clone());
            options.max_connections(4).sqlx_logging(false);
            Database::connect(options)
                .await
                .expect("connect as the owner role")
        }
        None => app.state().db.clone(),
    };
    let store = app.state().store.clone();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        port,
        key,
        env,
        db,
        store,
        client: reqwest::Client::new(),
        shutdown,
        handle: Some(handle),
    }
}

/// A GraphQL response: HTTP status and body.
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    /// The `extensions.code` of the first error, if any.
    pub fn error_code(&self) -> Option<String> {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_string)
    }

    pub fn error_message(&self) -> String {
        self.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `data`, asserting there were no errors.
    pub fn data(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none_or(Value::is_null),
            "unexpected GraphQL errors: {}",
            self.body
        );
        &self.body["data"]
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// POST a GraphQL request with an explicit Authorization header value (or none).
    pub async fn gql_auth(
        &self,
        authorization: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Response {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let body = response.json().await.expect("JSON body");
        Response { status, body }
    }

    /// POST a GraphQL request with this tenant's key.
    pub async fn gql(&self, query: &str, variables: Value) -> Response {
        self.gql_auth(Some(&format!("Bearer {}", self.key)), query, variables)
            .await
    }

    /// POST and return `data`, asserting success.
    pub async fn gql_ok(&self, query: &str, variables: Value) -> Value {
        let response = self.gql(query, variables).await;
        assert_eq!(response.status, 200, "{}", response.body);
        response.data().clone()
    }

    /// Start a run and return its id.
    pub async fn start_run(&self, workflow_id: &str) -> String {
        let data = self
            .gql_ok(
                "mutation($input: StartRunInput!) { startRun(input: $input) { id status } }",
                json!({ "input": { "workflowId": workflow_id, "agent": "test-agent" } }),
            )
            .await;
        assert_eq!(data["startRun"]["status"], "RUNNING");
        data["startRun"]["id"].as_str().expect("run id").to_string()
    }

    /// Create a policy and return its id.
    pub async fn create_policy(&self, input: Value) -> String {
        let data = self
            .gql_ok(
                "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id version enabled } }",
                json!({ "input": input }),
            )
            .await;
        data["createPolicy"]["id"]
            .as_str()
            .expect("policy id")
            .to_string()
    }

    /// Start a run of `workflow` and return (id, startedAt).
    pub async fn start_run_at(&self, workflow: &str) -> (String, String) {
        let data = self
            .gql_ok(
                "mutation($input: StartRunInput!) { startRun(input: $input) { id startedAt } }",
                json!({ "input": { "workflowId": workflow } }),
            )
            .await;
        (
            data["startRun"]["id"].as_str().expect("id").to_string(),
            data["startRun"]["startedAt"]
                .as_str()
                .expect("startedAt")
                .to_string(),
        )
    }

    /// `recordStep` with `input` (runId added); returns the raw response.
    pub async fn record_step(&self, run_id: &str, mut input: Value) -> Response {
        input["runId"] = json!(run_id);
        self.gql(
            "mutation($input: RecordStepInput!) { recordStep(input: $input) {
                action reason recorded replayed terminationReason
                step { stepIndex status isInflection decision entryHash prevHash tokens decisionDetail }
                violations { id policyId policyType violatedRule evaluatedValue thresholdCondition severity reason stepIndex snapshotId evidence { content contentHash } }
                incident { id status severity title }
                run { id status terminationReason tokensUsed costMicros stepCount stoppedAtStep }
            } }",
            json!({ "input": input }),
        )
        .await
    }

    /// `recordStep` that must succeed; returns `recordStep`.
    pub async fn step_ok(&self, run_id: &str, input: Value) -> Value {
        let response = self.record_step(run_id, input).await;
        response.data()["recordStep"].clone()
    }

    /// Poll `query` until `done` holds for its data, failing after `timeout`.
    pub async fn poll_until(
        &self,
        query: &str,
        variables: Value,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let data = self.gql_ok(query, variables.clone()).await;
            if done(&data) {
                return data;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached within {timeout:?}; last data: {data}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Open a graphql-transport-ws connection and send `connection_init` with `payload`.
    pub async fn ws_connect(&self, payload: Value) -> WsClient {
        ws_connect_to(self.port, payload).await
    }
}

/// Open a graphql-transport-ws connection to the server on `port`.
pub async fn ws_connect_to(port: u16, payload: Value) -> WsClient {
    let mut ws = ws_open_to(port).await;
    ws.send_json(json!({ "type": "connection_init", "payload": payload }))
        .await;
    ws
}

/// Open a graphql-transport-ws connection to the server on `port` and send nothing yet.
pub async fn ws_open_to(port: u16) -> WsClient {
    let mut request = format!("ws://127.0.0.1:{port}/graphql")
        .into_client_request()
        .expect("ws request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connects");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("graphql-transport-ws")
    );
    WsClient { socket }
}

impl TestApp {
    /// Stop the server and start it again on the same data with a changed configuration.
    pub async fn restart(self, configure: impl FnOnce(&mut Config)) -> TestApp {
        let key = self.key.clone();
        let env = self.stop().await;
        let mut config = env.config();
        configure(&mut config);
        start(env, config, Some(key)).await
    }

    /// The tenant of the app's key.
    pub async fn tenant_id(&self) -> String {
        self.gql_ok("{ me { tenant { id } } }", json!({})).await["me"]["tenant"]["id"]
            .as_str()
            .expect("tenant id")
            .to_string()
    }

    /// A second tenant in the same service; returns its `Bearer …` header value.
    pub async fn other_tenant(&self, name: &str) -> String {
        let issued = governance_core::tenancy::create_tenant(
            &self.store,
            name,
            &[governance_core::roles::KeyRole::Admin],
        )
        .await
        .expect("tenant created");
        format!("Bearer {}", issued.secret)
    }

    /// A counter of `/metrics` (summed over its label sets), e.g. `governance_db_statements_total`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Scrape `/metrics` until `name` satisfies `done` (it follows the server's own work).
    pub async fn poll_metric_until(&self, name: &str, done: impl Fn(f64) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.metric(name).await;
            if done(value) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is still {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop the server gracefully and wait for it.
    pub async fn stop(mut self) -> TestEnv {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        self.db.clone().close().await.ok();
        let Self { env, .. } = self;
        env
    }
}

/// A graphql-transport-ws client.
pub struct WsClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server sent next.
#[derive(Debug)]
pub enum WsEvent {
    Json(Value),
    Closed(Option<u16>),
}

impl WsClient {
    /// Send one protocol message.
    pub async fn send_json(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send a protocol message");
    }

    /// Read until the server closes, within `timeout`; the close code and description.
    /// Protocol messages before the close are skipped.
    pub async fn expect_close(&mut self, timeout: Duration) -> (Option<u16>, String) {
        tokio::time::timeout(timeout, async {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Close(frame))) => {
                        return frame.map_or((None, String::new()), |f| {
                            (Some(u16::from(f.code)), f.reason.to_string())
                        });
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return (None, String::new()),
                }
            }
        })
        .await
        .expect("the server closes the socket in time")
    }

    /// Wait for `count` WebSocket Ping frames from the server (the client library answers each
    /// with a Pong), each within `timeout`; fails on any other message or a close.
    pub async fn expect_pings(&mut self, count: usize, timeout: Duration) {
        for seen in 0..count {
            loop {
                let frame = tokio::time::timeout(timeout, self.socket.next())
                    .await
                    .unwrap_or_else(|_| panic!("ping {} of {count} in time", seen + 1));
                match frame {
                    Some(Ok(Message::Ping(_))) => break,
                    Some(Ok(Message::Pong(_))) => continue,
                    other => panic!("expected a Ping, got {other:?}"),
                }
            }
        }
    }

    /// The next protocol message or the close, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> WsEvent {
        loop {
            let message = tokio::time::timeout(timeout, self.socket.next())
                .await
                .expect("a WebSocket message in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON message");
                    if value["type"] == "ping" {
                        let _ = self
                            .socket
                            .send(Message::Text(json!({"type": "pong"}).to_string().into()))
                            .await;
                        continue;
                    }
                    return WsEvent::Json(value);
                }
                Some(Ok(Message::Close(frame))) => {
                    return WsEvent::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return WsEvent::Closed(None),
            }
        }
    }

    /// Expect `connection_ack`.
    pub async fn expect_ack(&mut self) {
        match self.next(Duration::from_secs(10)).await {
            WsEvent::Json(v) if v["type"] == "connection_ack" => {}
            other => panic!("expected connection_ack, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.socket
            .send(Message::Text(
                json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } })
                    .to_string()
                    .into(),
            ))
            .await
            .expect("send subscribe");
    }

    /// The next `next` payload's `data` for subscription `id`.
    pub async fn next_data(&mut self, id: &str) -> Value {
        match self.next(Duration::from_secs(15)).await {
            WsEvent::Json(v) if v["type"] == "next" && v["id"] == id => {
                assert!(v["payload"].get("errors").is_none(), "errors: {v}");
                v["payload"]["data"].clone()
            }
            other => panic!("expected next for {id}, got {other:?}"),
        }
    }
}

/// The `governance` binary built beside this test binary.
pub fn governance_bin() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test exe path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("governance{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so the binary is built",
        bin.display()
    );
    bin
}

/// Run the `governance` binary to completion; returns (success, stdout, stderr).
pub async fn run_cli(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(env.cli_args());
    let output = tokio::process::Command::new(governance_bin())
        .args(&all)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run governance");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The first `gov_…` key printed in `text`.
pub fn key_in(text: &str) -> Option<String> {
    regex::Regex::new(r"gov_[0-9a-f]{48}")
        .expect("regex")
        .find(text)
        .map(|m| m.as_str().to_string())
}
