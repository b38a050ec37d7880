//! `governance demo`: a newcomer's first look. Starts the service on the embedded default in a
//! fresh directory, then drives it over HTTP exactly as an integrator and a compliance officer
//! would: policies, a run checked step by step until a policy stops it, the incident, the
//! proof, and the three PDFs written to a folder.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{Config, app::Application, config::WorkersMode};

/// A GraphQL client for the demo.
struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response: Value = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if let Some(errors) = response.get("errors") {
            bail!("the service answered with errors: {errors}");
        }
        Ok(response["data"].clone())
    }
}

fn say(step: &str, text: impl AsRef<str>) {
    println!("{step:>3}  {}", text.as_ref());
}

/// Run the demo; PDFs go to `out`.
pub async fn run(out: PathBuf) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let config = Config {
        bind: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_path_buf(),
        workers: WorkersMode::Embedded,
        log_level: "warn".into(),
        ..Config::default()
    };
    let app = Application::build(config).await?;
    let key = app
        .bootstrap_key()
        .map(|k| k.secret.clone())
        .context("a fresh database bootstraps the default tenant")?;
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{}", app.port()),
        key,
    };
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    let result = drive(&client, &out).await;
    shutdown.cancel();
    let _ = server.await;
    result
}

async fn drive(client: &Client, out: &std::path::Path) -> anyhow::Result<()> {
    println!(
        "\nGovernance demo: a service on the embedded default at {}\n",
        client.base
    );
    for (name, kind, rule, action, severity) in [
        (
            "Token budget",
            "TOKEN_BUDGET",
            json!({ "maxTokens": 4000 }),
            "BLOCK",
            "HIGH",
        ),
        (
            "No API keys in prompts",
            "CONTENT_RULE",
            json!({ "patterns": ["sk-[A-Za-z0-9]{20,}"] }),
            "BLOCK",
            "CRITICAL",
        ),
        (
            "Cost watch",
            "COST_BUDGET",
            json!({ "maxCostMicros": 50000 }),
            "WARN",
            "LOW",
        ),
    ] {
        let data = client
            .gql(
                "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id version } }",
                json!({ "input": { "name": name, "kind": kind, "rule": rule, "action": action, "severity": severity } }),
            )
            .await?;
        say(
            "1",
            format!(
                "policy \"{name}\" ({kind}, {action}) created: {}",
                data["createPolicy"]["id"].as_str().unwrap_or("?")
            ),
        );
    }
    let run = client
        .gql(
            "mutation { startRun(input: { workflowId: \"support-bot\", agent: \"assistant-v2\", triggeredBy: \"ticket-4711\" }) { id policySnapshotId policyVersion } }",
            json!({}),
        )
        .await?["startRun"]
        .clone();
    let run_id = run["id"].as_str().unwrap_or_default().to_string();
    say(
        "2",
        format!(
            "run {run_id} started against snapshot {} (policy set {})",
            run["policySnapshotId"].as_str().unwrap_or("?"),
            run["policyVersion"].as_str().unwrap_or("?")
        ),
    );
    let steps = [
        ("RETRIEVAL", 350, 2_000, None),
        ("LLM_CALL", 900, 9_000, None),
        ("TOOL_CALL", 120, 1_500, Some("crm.lookup")),
        ("LLM_CALL", 1_400, 21_000, None),
        ("LLM_CALL", 1_600, 24_000, None),
        ("LLM_CALL", 800, 12_000, None),
    ];
    let mut incident = None;
    for (index, (kind, tokens, cost, tool)) in steps.into_iter().enumerate() {
        let decision = client
            .gql(
                "mutation($input: RecordStepInput!) { recordStep(input: $input) { action reason incident { id } run { tokensUsed } } }",
                json!({ "input": { "runId": run_id, "type": kind, "tokens": tokens, "costMicros": cost, "toolName": tool, "content": format!("step {index} of the demo") } }),
            )
            .await?["recordStep"]
            .clone();
        say(
            "3",
            format!(
                "step {index} {kind:<9} {tokens:>5} tokens → {} ({} tokens so far): {}",
                decision["action"].as_str().unwrap_or("?"),
                decision["run"]["tokensUsed"],
                decision["reason"].as_str().unwrap_or("")
            ),
        );
        if decision["action"] == "STOP" {
            incident = decision["incident"]["id"].as_str().map(str::to_string);
            break;
        }
    }
    let incident = incident.context("the demo run should have been stopped by the token budget")?;
    say(
        "4",
        format!("incident {incident} opened; later steps of the run are refused"),
    );
    let verified = client
        .gql(
            "query($id: ID!) { verifyRun(id: $id) { intact reproduced headHash stepsChecked } }",
            json!({ "id": run_id }),
        )
        .await?["verifyRun"]
        .clone();
    say(
        "5",
        format!(
            "verifyRun: intact={} reproduced={} over {} steps, head {}",
            verified["intact"],
            verified["reproduced"],
            verified["stepsChecked"],
            verified["headHash"].as_str().unwrap_or("?")
        ),
    );
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for kind in ["EVIDENCE", "SOC2", "EXECUTIVE_DEBRIEF"] {
        let id = client
            .gql(
                "mutation($incident: ID!, $kind: ExportKind!) { requestExport(incidentId: $incident, kind: $kind, format: PDF, reason: \"governance demo\") { id } }",
                json!({ "incident": incident, "kind": kind }),
            )
            .await?["requestExport"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let export = wait_for(client, &id, kind).await?;
        let url = export["downloadUrl"]
            .as_str()
            .context("a READY export has a download URL")?;
        let bytes = client
            .http
            .get(format!("{}{url}", client.base))
            .send()
            .await?
            .bytes()
            .await?;
        let path = out.join(format!("{}.pdf", kind.to_lowercase().replace('_', "-")));
        std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        say(
            "6",
            format!(
                "{kind} PDF written to {} ({} bytes, sha256 {})",
                path.display(),
                bytes.len(),
                export["sha256"].as_str().unwrap_or("?")
            ),
        );
    }
    println!("\nDone. Open the PDFs in {}.", out.display());
    Ok(())
}

/// Poll an export until it is READY (printing its progress), or fail with its error.
async fn wait_for(client: &Client, id: &str, kind: &str) -> anyhow::Result<Value> {
    let mut last = String::new();
    for _ in 0..1200 {
        let export = client
            .gql(
                "query($id: ID!) { export(id: $id) { status progress sha256 downloadUrl error } }",
                json!({ "id": id }),
            )
            .await?["export"]
            .clone();
        let now = format!(
            "{} {}%",
            export["status"].as_str().unwrap_or("?"),
            export["progress"]
        );
        if now != last {
            say("…", format!("{kind}: {now}"));
            last = now;
        }
        match export["status"].as_str() {
            Some("READY") => return Ok(export),
            Some("FAILED") => bail!("the {kind} export failed: {}", export["error"]),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    bail!("the {kind} export did not finish in two minutes")
}
