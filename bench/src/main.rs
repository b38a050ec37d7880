//! `governance-bench`: the load generator. It starts the `governance` binary built beside it
//! (build with `cargo build --release --bins`) on the embedded default in a temporary
//! directory, or targets `--url` with `--key`, drives it over HTTP exactly as integrators and
//! frontends do, checks every response (a 200 carrying GraphQL errors is a failure), and prints
//! a table plus a JSON file.
//!
//! Phases so far: 1 ceiling (`{ __typename }`), 2 `recordStep` throughput (closed loop),
//! 3 `recordStep` latency at half that rate (open loop, measured from the scheduled send time),
//! 4 the frontend query (a page of 100 runs with their links and 20 trace steps each) with its
//! SQL statement count.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug)]
#[command(about = "Load generator for the governance service")]
struct Args {
    /// Short phases (about a minute in all).
    #[arg(long)]
    quick: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Target a running service instead of starting one (needs `--key`).
    #[arg(long)]
    url: Option<String>,
    /// The API key for `--url`.
    #[arg(long)]
    key: Option<String>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    /// POST a GraphQL request; any transport error, non-200 or GraphQL error is a failure.
    async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() || body.get("errors").is_some() {
            bail!("request failed ({status}): {body}");
        }
        Ok(body["data"].clone())
    }

    async fn statements(&self) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("governance_db_statements_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum())
    }
}

/// Latencies in microseconds.
#[derive(Default)]
struct Latencies(Vec<u64>);

impl Latencies {
    fn percentile(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank] as f64 / 1000.0
    }
}

/// The service under test, when we started it.
struct Service {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

async fn start_service() -> anyhow::Result<(Service, Client)> {
    let mut bin = std::env::current_exe()?;
    bin.pop();
    let bin = bin.join("governance");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release --bins`",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(&bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start governance")?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let port_re = regex::Regex::new(r"port=(\d+)")?;
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(c) = port_re.captures(&line) {
                return Ok::<u16, anyhow::Error>(c[1].parse()?);
            }
        }
        bail!("governance exited before listening")
    })
    .await
    .context("governance did not start in time")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let key = std::fs::read_to_string(dir.path().join("default-tenant.key"))?
        .trim()
        .to_string();
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
        key,
    };
    Ok((
        Service {
            _child: child,
            _dir: dir,
        },
        client,
    ))
}

/// Ten policies that check every step and stop none of the benchmark's runs.
async fn policies(client: &Client) -> anyhow::Result<()> {
    let rules = [
        ("TOKEN_BUDGET", json!({ "maxTokens": 1_000_000_000_000i64 })),
        (
            "COST_BUDGET",
            json!({ "maxCostMicros": 1_000_000_000_000i64 }),
        ),
        ("STEP_LIMIT", json!({ "maxSteps": 1_000_000 })),
        (
            "RATE_LIMIT",
            json!({ "maxSteps": 1_000_000, "windowSeconds": 60 }),
        ),
        ("DURATION_LIMIT", json!({ "maxSeconds": 86_400 })),
        (
            "CONTENT_RULE",
            json!({ "patterns": ["sk-[A-Za-z0-9]{40}", "BEGIN PRIVATE KEY"] }),
        ),
        (
            "TOOL_ALLOWLIST",
            json!({ "tools": ["search", "crm.lookup"] }),
        ),
        (
            "EXPRESSION",
            json!({ "expression": "step.tokens > 1000000" }),
        ),
        (
            "EXPRESSION",
            json!({ "expression": "run.tokensUsed > 1000000000" }),
        ),
        ("CONTENT_RULE", json!({ "patterns": ["password=\\S+"] })),
    ];
    for (i, (kind, rule)) in rules.into_iter().enumerate() {
        client
            .gql(
                "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id } }",
                json!({ "input": { "name": format!("bench {i}"), "kind": kind, "rule": rule, "action": "BLOCK", "severity": "HIGH" } }),
            )
            .await?;
    }
    Ok(())
}

async fn start_run(client: &Client) -> anyhow::Result<String> {
    let data = client
        .gql(
            "mutation { startRun(input: { workflowId: \"bench\", agent: \"bench\" }) { id } }",
            json!({}),
        )
        .await?;
    Ok(data["startRun"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

const STEP: &str =
    "mutation($input: RecordStepInput!) { recordStep(input: $input) { action recorded } }";

async fn step(client: &Client, run: &str, i: u64) -> anyhow::Result<()> {
    let data = client
        .gql(
            STEP,
            json!({ "input": { "runId": run, "type": "LLM_CALL", "tokens": 100, "costMicros": 10, "content": format!("benchmark step {i}") } }),
        )
        .await?;
    if data["recordStep"]["action"] != "CONTINUE" || data["recordStep"]["recorded"] != true {
        bail!("unexpected decision: {data}");
    }
    Ok(())
}

/// Phase 1: requests/s of `{ __typename }`.
async fn ceiling(client: &Client, concurrency: usize, duration: Duration) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    client.gql("{ __typename }", json!({})).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64())
}

/// Phase 2: closed-loop steps/s and latency; each client runs 50-step runs back to back.
async fn throughput(
    client: &Client,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(f64, Latencies)> {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let run = start_run(&client).await?;
                    for i in 0..50 {
                        let started = Instant::now();
                        step(&client, &run, i).await?;
                        latencies.push(started.elapsed().as_micros() as u64);
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                }
                Ok::<Vec<u64>, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut all = Latencies::default();
    for t in tasks {
        all.0.extend(t.await??);
    }
    let rate = all.0.len() as f64 / duration.as_secs_f64();
    Ok((rate, all))
}

/// Phase 3: open loop at `rate` steps/s over many runs; latency from the scheduled send time
/// (so a stall is charged to every request it delays).
async fn open_loop(client: &Client, rate: f64, duration: Duration) -> anyhow::Result<Latencies> {
    let mut runs = Vec::new();
    for _ in 0..64 {
        runs.push(start_run(client).await?);
    }
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (duration.as_secs_f64() * rate) as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..total {
        let scheduled = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let client = client.clone();
        let run = runs[(n % runs.len() as u64) as usize].clone();
        tasks.push(tokio::spawn(async move {
            step(&client, &run, n).await?;
            Ok::<u64, anyhow::Error>(scheduled.elapsed().as_micros() as u64)
        }));
    }
    let mut all = Latencies::default();
    for t in tasks {
        all.0.push(t.await??);
    }
    Ok(all)
}

/// Phase 4: the frontend query; returns (median ms, statements for 10 runs, for 100 runs).
async fn frontend(client: &Client) -> anyhow::Result<(f64, f64, f64)> {
    const PAGE: &str = "query($first: Int!) { runs(first: $first) { totalCount edges { node {
        id status policySnapshot { id version }
        violations { totalCount nodes { id policy { name } } }
        incident { id status } evaluation { outcome }
        trace { headHash steps(first: 20) { nodes { stepIndex decision entryHash } } }
    } } } }";
    // 100 runs of 20+ steps exist from phase 2; make sure of it.
    for _ in 0..10 {
        let run = start_run(client).await?;
        for i in 0..20 {
            step(client, &run, i).await?;
        }
    }
    let mut times = Latencies::default();
    for _ in 0..20 {
        let started = Instant::now();
        client.gql(PAGE, json!({ "first": 100 })).await?;
        times.0.push(started.elapsed().as_micros() as u64);
    }
    let mut cost = Vec::new();
    for first in [10, 100] {
        let before = client.statements().await?;
        client.gql(PAGE, json!({ "first": first })).await?;
        cost.push(client.statements().await? - before);
    }
    Ok((times.percentile(50.0), cost[0], cost[1]))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_service, client) = match (&args.url, &args.key) {
        (Some(url), Some(key)) => (
            None,
            Client {
                http: reqwest::Client::new(),
                base: url.trim_end_matches('/').to_string(),
                key: key.clone(),
            },
        ),
        (Some(_), None) => bail!("--url needs --key"),
        _ => {
            let (service, client) = start_service().await?;
            (Some(service), client)
        }
    };
    let phase = if args.quick {
        Duration::from_secs(8)
    } else {
        Duration::from_secs(60)
    };
    let c = args.concurrency;
    println!(
        "governance-bench against {} (concurrency {c}, {phase:?} per phase)",
        client.base
    );
    policies(&client).await?;

    let ceiling = ceiling(&client, c, phase).await?;
    println!("1 ceiling           {{ __typename }}        {ceiling:>10.0} req/s");
    let (steps, mut closed) = throughput(&client, c, phase).await?;
    println!(
        "2 recordStep        closed loop           {steps:>10.0} steps/s  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  ratio to ceiling {:.2}",
        closed.percentile(50.0),
        closed.percentile(95.0),
        closed.percentile(99.0),
        steps / ceiling
    );
    let half = steps / 2.0;
    let mut open = open_loop(&client, half, phase).await?;
    println!(
        "3 recordStep        open loop {half:>7.0}/s  p50 {:.2} ms  p99 {:.2} ms",
        open.percentile(50.0),
        open.percentile(99.0)
    );
    let (page_ms, cost10, cost100) = frontend(&client).await?;
    println!(
        "4 frontend query    100 runs + links      p50 {page_ms:.1} ms  SQL statements: {cost10} for 10 runs, {cost100} for 100"
    );
    let results = json!({
        "concurrency": c,
        "phaseSeconds": phase.as_secs(),
        "ceilingRps": ceiling,
        "recordStep": {
            "stepsPerSecond": steps,
            "ratioToCeiling": steps / ceiling,
            "p50Ms": closed.percentile(50.0),
            "p95Ms": closed.percentile(95.0),
            "p99Ms": closed.percentile(99.0),
        },
        "openLoop": { "rate": half, "p50Ms": open.percentile(50.0), "p99Ms": open.percentile(99.0) },
        "frontendQuery": { "p50Ms": page_ms, "statements10": cost10, "statements100": cost100 },
        "notYetMeasured": ["growth with 1M stored steps", "jobs/s", "Typst vs reportlab"],
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    println!("figures written to {}", args.out.display());
    Ok(())
}
