//! `governance-bench`: the load generator. It starts the `governance` binary built beside it
//! (build with `cargo build --release --bins`) on the embedded default in a temporary
//! directory, or targets `--url` with `--key`, drives it over HTTP exactly as integrators and
//! frontends do, checks every response (a 200 carrying GraphQL errors is a failure), and prints
//! a table plus a JSON file.
//!
//! Phases: 1 ceiling (`{ __typename }`), 2 `recordStep` throughput (closed loop),
//! 3 `recordStep` latency at half that rate (open loop, measured from the scheduled send time),
//! 4 the frontend query (a page of 100 runs with their links and 20 trace steps each) with its
//! SQL statement count, 5 phase 3 again after loading 1,000,000 steps, 6 evaluation-record
//! jobs/s on SQLite and on Redis, 7 the SOC2 PDF of a 1,000-step incident by Typst and by
//! reportlab, 8 `recordStep` latency at 100 steps/s, 9 the soak: phase 3's rate for 10 minutes
//! (1 with `--quick`), with errors counted, the server's memory sampled and p99 per minute,
//! 10 job pickup after idle: a run is completed after the queue has been idle for 0.5 s up
//! to a minute, and the time until its evaluation record can be read is measured, on SQLite,
//! Redis, and PostgreSQL when `BENCH_POSTGRES_URL` names a database.
//!
//! Phases 3 and 8 also report `{ __typename }` at the same arrival rate (the framework's own
//! latency there; the targets compare the p99s) and the server's own `recordStep` latency, from
//! its histogram.

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
    /// The phases to run (phases 3, 5 and 9 need phase 2, or `--rate`).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7,8,9,10")]
    phases: Vec<u8>,
    /// Steps/s for phases 3, 5 and 9 instead of half of phase 2's rate: to find where a layout
    /// stops keeping up.
    #[arg(long)]
    rate: Option<f64>,
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

/// An HTTP client that drops a pooled connection before the server would (actix-web closes a
/// keep-alive connection after 5 s idle): reusing one the server is closing at that moment fails
/// the request, a race of the client's making.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
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

    /// The tail as the targets state it: p99, p99.9 and max, in milliseconds, as text.
    fn tail(&mut self) -> String {
        format!(
            "p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            self.percentile(99.0),
            self.percentile(99.9),
            self.percentile(100.0)
        )
    }

    /// The same tail, for the JSON figures.
    fn tail_json(&mut self) -> serde_json::Value {
        json!({
            "p99Ms": self.percentile(99.0),
            "p999Ms": self.percentile(99.9),
            "maxMs": self.percentile(100.0),
        })
    }
}

/// The service under test, when we started it.
struct Service {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

fn governance_binary() -> anyhow::Result<PathBuf> {
    let mut bin = std::env::current_exe()?;
    bin.pop();
    let bin = bin.join("governance");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release --bins`",
            bin.display()
        );
    }
    Ok(bin)
}

/// Start `governance serve` on `dir` with `extra` arguments; returns the child and its port.
async fn serve(
    dir: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<(tokio::process::Child, u16)> {
    let mut child = tokio::process::Command::new(governance_binary()?)
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
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
    // The server's log goes nowhere, or to the file `BENCH_SERVER_LOG` names (warnings and
    // errors only), to find what a stall or an error was.
    let mut log = match std::env::var_os("BENCH_SERVER_LOG") {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.to_string_lossy()))?,
        ),
        None => None,
    };
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(file) = log.as_mut()
                && (line.contains("WARN") || line.contains("ERROR"))
            {
                use std::io::Write;
                let _ = writeln!(file, "{line}");
            }
        }
    });
    Ok((child, port))
}

/// A client of the service on `port`, with the bootstrap key it wrote to `dir`.
fn client_of(dir: &std::path::Path, port: u16) -> anyhow::Result<Client> {
    let key = std::fs::read_to_string(dir.join("default-tenant.key"))?
        .trim()
        .to_string();
    Ok(Client {
        http: http_client(),
        base: format!("http://127.0.0.1:{port}"),
        key,
    })
}

async fn start_service() -> anyhow::Result<(Service, Client)> {
    let dir = tempfile::tempdir()?;
    let (child, port) = serve(dir.path(), &[]).await?;
    let client = client_of(dir.path(), port)?;
    Ok((Service { child, dir }, client))
}

/// A second API process on the service's database, without background workers.
async fn start_reader(
    service: &Service,
    client: &Client,
) -> anyhow::Result<(tokio::process::Child, Client)> {
    let (child, port) = serve(service.dir.path(), &["--workers", "off"]).await?;
    Ok((
        child,
        Client {
            http: http_client(),
            base: format!("http://127.0.0.1:{port}"),
            key: client.key.clone(),
        },
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

/// Report step `i` of `tokens` tokens; fails unless it is recorded with decision `expected`.
async fn step_expecting(
    client: &Client,
    run: &str,
    i: u64,
    tokens: i64,
    expected: &str,
) -> anyhow::Result<()> {
    let data = client
        .gql(
            STEP,
            json!({ "input": { "runId": run, "type": "LLM_CALL", "tokens": tokens, "costMicros": 10, "content": format!("benchmark step {i}") } }),
        )
        .await?;
    if data["recordStep"]["action"] != expected || data["recordStep"]["recorded"] != true {
        bail!("step {i}: expected {expected}: {data}");
    }
    Ok(())
}

/// A clean 100-token step, which must CONTINUE.
async fn step(client: &Client, run: &str, i: u64) -> anyhow::Result<()> {
    step_expecting(client, run, i, 100, "CONTINUE").await
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
/// (so a stall is charged to every request it delays). Any failure ends the benchmark.
async fn open_loop(client: &Client, rate: f64, duration: Duration) -> anyhow::Result<Latencies> {
    let steps = step_loop(client, rate, duration).await?;
    steps.fatal()?;
    Ok(steps.latencies())
}

/// `recordStep` at `rate` steps/s over 64 runs, failures counted.
async fn step_loop(client: &Client, rate: f64, duration: Duration) -> anyhow::Result<OpenLoop> {
    let mut runs = Vec::new();
    for _ in 0..64 {
        runs.push(start_run(client).await?);
    }
    let client = client.clone();
    Ok(open_loop_of(rate, duration, move |n| {
        let client = client.clone();
        let run = runs[(n % runs.len() as u64) as usize].clone();
        async move { step(&client, &run, n).await }
    })
    .await)
}

/// `{ __typename }` at `rate` requests/s: the framework's own latency at that arrival rate.
async fn typename_loop(
    client: &Client,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Latencies> {
    let client = client.clone();
    let requests = open_loop_of(rate, duration, move |_| {
        let client = client.clone();
        async move { client.gql("{ __typename }", json!({})).await.map(|_| ()) }
    })
    .await;
    requests.fatal()?;
    Ok(requests.latencies())
}

/// What an open loop measured: for each request, when it was scheduled (seconds from the start)
/// and its latency from that time (µs), and the failures.
struct OpenLoop {
    samples: Vec<(f64, u64)>,
    errors: u64,
    first_error: Option<String>,
}

impl OpenLoop {
    fn latencies(&self) -> Latencies {
        Latencies(self.samples.iter().map(|(_, micros)| *micros).collect())
    }

    fn fatal(&self) -> anyhow::Result<()> {
        match &self.first_error {
            Some(error) => bail!("{} requests failed; the first: {error}", self.errors),
            None => Ok(()),
        }
    }
}

/// Call `op(n)` at `rate` calls/s for `duration`, each at its scheduled time (a bounded number in
/// flight, like a real client's connection pool: past it, a call waits for a slot, and the wait
/// counts in its latency).
///
/// The calls are dispatched from a thread of their own that sleeps with the kernel's
/// high-resolution timer (`nanosleep`, about 50 µs of slack), not with tokio's timer wheel: that
/// one fires on whole milliseconds, so every call would start up to 1 ms after its scheduled time
/// and that lateness, the generator's own, would be counted as the server's latency (at 100
/// requests/s it was most of an empty `{ __typename }`'s measured 1.7 ms).
async fn open_loop_of<F, Fut>(rate: f64, duration: Duration, op: F) -> OpenLoop
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (duration.as_secs_f64() * rate) as u64;
    let slots = Arc::new(tokio::sync::Semaphore::new(OPEN_LOOP_IN_FLIGHT));
    let runtime = tokio::runtime::Handle::current();
    let dispatch = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for n in 0..total {
            let offset = interval.mul_f64(n as f64);
            let scheduled = start + offset;
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            let Ok(slot) = runtime.block_on(slots.clone().acquire_owned()) else {
                break;
            };
            let call = op(n);
            tasks.push(runtime.spawn(async move {
                let result = call.await;
                drop(slot);
                (
                    offset.as_secs_f64(),
                    scheduled.elapsed().as_micros() as u64,
                    result,
                )
            }));
        }
        tasks
    });
    let tasks = dispatch.await.unwrap_or_default();
    let mut measured = OpenLoop {
        samples: Vec::with_capacity(tasks.len()),
        errors: 0,
        first_error: None,
    };
    for task in tasks {
        match task.await {
            Ok((offset, micros, Ok(()))) => measured.samples.push((offset, micros)),
            Ok((_, _, Err(err))) => {
                measured.errors += 1;
                measured.first_error.get_or_insert_with(|| err.to_string());
            }
            Err(err) => {
                measured.errors += 1;
                measured.first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    measured
}

/// The server's own `recordStep` latency histogram (`governance_step_decision_seconds`):
/// cumulative counts by upper bound, in seconds.
async fn decision_histogram(client: &Client) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = client
        .http
        .get(format!("{}/metrics", client.base))
        .send()
        .await?
        .text()
        .await?;
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("governance_step_decision_seconds_bucket{le=\"") else {
            continue;
        };
        let Some((bound, count)) = rest.split_once("\"} ") else {
            continue;
        };
        let bound = if bound == "+Inf" {
            f64::INFINITY
        } else {
            bound.parse()?
        };
        buckets.push((bound, count.trim().parse()?));
    }
    Ok(buckets)
}

/// The `p`th percentile (ms) of what the histogram counted between `before` and `after`,
/// interpolated within its bucket (the histogram's resolution is its buckets).
fn histogram_percentile(before: &[(f64, f64)], after: &[(f64, f64)], p: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, c)| *c);
            (*bound, count - earlier)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = total * p / 100.0;
    let mut lower = (0.0, 0.0);
    for (bound, cumulative) in counts {
        if cumulative >= rank {
            if bound.is_infinite() {
                return Some(lower.0 * 1000.0);
            }
            let within = (rank - lower.1) / (cumulative - lower.1).max(1.0);
            return Some((lower.0 + (bound - lower.0) * within) * 1000.0);
        }
        lower = (bound, cumulative);
    }
    None
}

/// Resident memory of process `pid`, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    Some(memory_kib(pid)?.total)
}

/// The server's resident memory (KiB), whole and by kind: anonymous (the heaps: ours and
/// SQLite's page caches), file-backed (the binary, libraries, and SQLite's `-shm` WAL index,
/// which is a mapped file) and shared memory proper (`RssShmem`; none expected).
#[derive(Debug, Clone, Copy)]
struct Resident {
    total: u64,
    anon: u64,
    file: u64,
    shmem: u64,
}

fn memory_kib(pid: u32) -> Option<Resident> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Resident {
        total: field("VmRSS:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
        shmem: field("RssShmem:").unwrap_or(0),
    })
}

/// Phase 9: the soak. `recordStep` at `rate` for `duration` with the failures counted, the
/// server's resident memory sampled every 10 s, and p99 per minute.
async fn soak(
    client: &Client,
    pid: Option<u32>,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<serde_json::Value> {
    // The server's memory every 10 s: growth is counted from the end of the first minute (when
    // its caches are warm) to the end, and the peak is reported.
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(Duration, Resident)>::new()));
    let started = Instant::now();
    let sampling = pid.map(|pid| {
        let samples = samples.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                if let Some(kib) = memory_kib(pid) {
                    samples
                        .lock()
                        .expect("samples")
                        .push((started.elapsed(), kib));
                }
            }
        })
    });
    let rss_start = pid.and_then(rss_kib);
    let measured = step_loop(client, rate, duration).await?;
    let rss_end = pid.and_then(rss_kib);
    if let Some(sampling) = sampling {
        sampling.abort();
    }
    let minutes = (duration.as_secs_f64() / 60.0).ceil().max(1.0) as usize;
    let mut per_minute: Vec<Latencies> = (0..minutes).map(|_| Latencies::default()).collect();
    for (offset, micros) in &measured.samples {
        let minute = ((offset / 60.0) as usize).min(minutes - 1);
        per_minute[minute].0.push(*micros);
    }
    let p99s: Vec<f64> = per_minute.iter_mut().map(|l| l.percentile(99.0)).collect();
    let mut all = measured.latencies();
    let samples = samples.lock().expect("samples").clone();
    let rss_peak = samples.iter().map(|(_, kib)| kib.total).max();
    let warm = Duration::from_secs(60).min(duration / 2);
    let warm_sample = samples
        .iter()
        .find(|(at, _)| *at >= warm)
        .map(|(_, kib)| *kib);
    let rss_start = warm_sample.map(|kib| kib.total).or(rss_start);
    // Where the growth is: anonymous (heaps), file-backed (mapped files), shared, in MiB from
    // the warm sample to the last; and the whole at the end of each minute.
    let last_sample = samples.last().map(|(_, kib)| *kib);
    let by_kind = match (warm_sample, last_sample) {
        (Some(a), Some(b)) => Some([
            (b.anon as f64 - a.anon as f64) / 1024.0,
            (b.file as f64 - a.file as f64) / 1024.0,
            (b.shmem as f64 - a.shmem as f64) / 1024.0,
        ]),
        _ => None,
    };
    let by_minute: Vec<f64> = samples
        .iter()
        .filter(|(at, _)| at.as_secs() % 60 < 10 && at.as_secs() >= 60)
        .map(|(_, kib)| (kib.total as f64 / 1024.0 * 10.0).round() / 10.0)
        .collect();
    let growth = match (rss_start, rss_end) {
        (Some(start), Some(end)) if start > 0 => {
            Some((end as f64 - start as f64) / start as f64 * 100.0)
        }
        _ => None,
    };
    println!(
        "9 soak              {:.0} s at {rate:.0}/s     {} steps, {} errors  p50 {:.2} ms  {}  p99 by minute {:?} ms  RSS after warm-up {} -> end {} MiB ({}, peak {} MiB)",
        duration.as_secs_f64(),
        measured.samples.len(),
        measured.errors,
        all.percentile(50.0),
        all.tail(),
        p99s.iter()
            .map(|p| (p * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        rss_start.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
        rss_end.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
        growth.map_or("growth not measured (--url)".to_string(), |g| format!(
            "{g:+.1} %"
        )),
        rss_peak.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
    );
    if let Some([anon, file, shmem]) = by_kind {
        println!(
            "  RSS growth after warm-up by kind: anonymous {anon:+.1} MiB, file {file:+.1}, shared {shmem:+.1}; RSS at each minute {by_minute:?} MiB"
        );
    }
    if let Some(error) = &measured.first_error {
        println!("  first soak error: {error}");
    }
    Ok(json!({
        "seconds": duration.as_secs(),
        "rate": rate,
        "steps": measured.samples.len(),
        "errors": measured.errors,
        "p50Ms": all.percentile(50.0),
        "tail": all.tail_json(),
        "p99ByMinuteMs": p99s,
        "rssStartKiB": rss_start,
        "rssEndKiB": rss_end,
        "rssPeakKiB": rss_peak,
        "rssGrowthPercent": growth,
        "rssGrowthByKindMiB": by_kind.map(|[anon, file, shmem]| json!({ "anonymous": anon, "file": file, "shared": shmem })),
        "rssByMinuteMiB": by_minute,
    }))
}

/// Phase 10 on one storage: a fresh server (`extra` picks the storage); for each pause, stay
/// idle that long, complete a run, and time from `completeRun`'s answer (its job is enqueued
/// after the commit, before the answer) until the run's evaluation record can be read, polling
/// every 2 ms. That is enqueue → start → the job's own few milliseconds → visible.
async fn pickup_after_idle(extra: &[&str], pauses: &[f64]) -> anyhow::Result<Latencies> {
    let dir = tempfile::tempdir()?;
    let (_server, port) = serve(dir.path(), extra).await?;
    let client = client_of(dir.path(), port)?;
    let mut latencies = Latencies::default();
    for (n, pause) in pauses.iter().enumerate() {
        tokio::time::sleep(Duration::from_secs_f64(*pause)).await;
        let run = client
            .gql(
                "mutation($w: String!) { startRun(input: { workflowId: $w }) { id } }",
                json!({ "w": format!("bench-idle-{n}") }),
            )
            .await?["startRun"]["id"]
            .as_str()
            .context("startRun id")?
            .to_string();
        client
            .gql(
                "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { status } }",
                json!({ "id": run }),
            )
            .await?;
        let completed = Instant::now();
        loop {
            let data = client
                .gql(
                    "query($id: ID!) { run(id: $id) { evaluation { outcome } } }",
                    json!({ "id": run }),
                )
                .await?;
            if !data["run"]["evaluation"].is_null() {
                break;
            }
            if completed.elapsed() > Duration::from_secs(120) {
                bail!("no evaluation record 120 s after completeRun");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies
            .0
            .push(u64::try_from(completed.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    Ok(latencies)
}

/// Requests the open loop keeps in flight at most.
const OPEN_LOOP_IN_FLIGHT: usize = 256;

/// A Redis server of our own on a free port, for phase 6; `None` without `redis-server`.
struct Redis {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    url: String,
}

async fn start_redis() -> anyhow::Result<Option<Redis>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    // Appended and fsynced every second: how a job queue is usually run.
    let child = match tokio::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            eprintln!("phase 6 on Redis skipped: cannot start redis-server: {err}");
            return Ok(None);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("redis-server did not listen on {port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Some(Redis {
        _child: child,
        _dir: dir,
        url: format!("redis://127.0.0.1:{port}"),
    }))
}

/// Phase 6: `count` evaluation-record jobs, drained by one `governance worker`. In a fresh data
/// directory (so no other worker takes them): the bench's ten policies, `count` one-step runs
/// loaded and ended by `governance seed --ended`, which enqueues each run's job on the queue
/// (SQLite, or Redis with `redis_url`). Then the worker starts, and the evaluation records are
/// counted over GraphQL (`governanceStatus.kpis.evaluations`, on an API process without workers)
/// until all are written. Returns jobs/s from the worker's start.
async fn jobs(count: u64, redis_url: Option<&str>) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let (_api, port) = serve(dir.path(), &["--workers", "off"]).await?;
    let client = client_of(dir.path(), port)?;
    policies(&client).await?;
    let redis: Vec<&str> = match redis_url {
        Some(url) => vec!["--redis-url", url],
        None => vec![],
    };
    let out = tokio::process::Command::new(governance_binary()?)
        .arg("--data-dir")
        .arg(dir.path())
        .args(&redis)
        .args([
            "seed",
            "--steps",
            "1",
            "--ended",
            "--runs",
            &count.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "governance seed --ended failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Counted over a window that starts now, so each poll is cheap (no run started in it).
    const EVALUATIONS: &str = "query($from: DateTime!, $to: DateTime!) { governanceStatus(from: $from, to: $to, recentRuns: 0) { kpis { evaluations } } }";
    let window = json!({
        "from": (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339(),
        "to": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
    });
    let evaluations = |data: Value| data["governanceStatus"]["kpis"]["evaluations"].as_u64();
    if evaluations(client.gql(EVALUATIONS, window.clone()).await?) != Some(0) {
        bail!("evaluation records exist before the worker started");
    }
    let started = Instant::now();
    let _worker = tokio::process::Command::new(governance_binary()?)
        .arg("--data-dir")
        .arg(dir.path())
        .args(&redis)
        .arg("worker")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start governance worker")?;
    let deadline = started + Duration::from_secs(600);
    loop {
        let written = evaluations(client.gql(EVALUATIONS, window.clone()).await?).unwrap_or(0);
        if written >= count {
            if written > count {
                bail!("{written} evaluation records for {count} runs");
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("{written} of {count} evaluation records after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Phase 5: load `steps` synthetic steps (in runs of 1,000) through `governance seed` on the
/// service's database, while it runs; returns how many steps the store then holds and the
/// load's wall time.
async fn grow(service: &Service, steps: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = tokio::process::Command::new(governance_binary()?)
        .arg("--data-dir")
        .arg(service.dir.path())
        .args([
            "seed",
            "--runs",
            &(steps / 1000).to_string(),
            "--steps",
            "1000",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "governance seed failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Phase 4: the frontend query; returns (median ms, statements for 10 runs, for 100 runs).
///
/// The page's 100 runs each have 20+ steps, a WARN violation, an evaluation record, and every
/// other one was stopped by a policy (a second violation and an incident).
async fn frontend(
    client: &Client,
    reader: Option<&Client>,
    concurrency: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    const PAGE: &str = "query($first: Int!) { runs(first: $first) { totalCount edges { node {
        id status policySnapshot { id version }
        violations { totalCount nodes { id policy { name } } }
        incident { id status } evaluation { outcome }
        trace { headHash steps(first: 20) { nodes { stepIndex decision entryHash } } }
    } } } }";
    for (name, expression, action) in [
        ("bench large step", "step.tokens > 150", "WARN"),
        ("bench huge step", "step.tokens > 5000", "BLOCK"),
    ] {
        client
            .gql(
                "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id } }",
                json!({ "input": { "name": name, "kind": "EXPRESSION", "rule": { "expression": expression }, "action": action, "severity": "MEDIUM" } }),
            )
            .await?;
    }
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= 100 {
                        break;
                    }
                    let run = start_run(&client).await?;
                    for i in 0..20u64 {
                        if i == 5 {
                            step_expecting(&client, &run, i, 200, "WARN").await?;
                        } else {
                            step(&client, &run, i).await?;
                        }
                    }
                    if n.is_multiple_of(2) {
                        step_expecting(&client, &run, 20, 6000, "STOP").await?;
                    } else {
                        client
                            .gql(
                                "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
                                json!({ "id": run }),
                            )
                            .await?;
                    }
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    // Evaluation records are written by a job when a run ends: wait for all 100.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let data = client.gql(PAGE, json!({ "first": 100 })).await?;
        let edges = data["runs"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if edges.iter().all(|e| !e["node"]["evaluation"].is_null()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("evaluation records missing after 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut times = Latencies::default();
    for _ in 0..20 {
        let started = Instant::now();
        client.gql(PAGE, json!({ "first": 100 })).await?;
        times.0.push(started.elapsed().as_micros() as u64);
    }
    // Statements are counted on a replica without background workers (on the same database
    // when this bench started the service), so only the query's own statements count.
    let counted = match reader {
        Some(reader) => reader,
        None => client,
    };
    let mut cost = Vec::new();
    for first in [10, 100] {
        let before = counted.statements().await?;
        counted.gql(PAGE, json!({ "first": first })).await?;
        cost.push(counted.statements().await? - before);
    }
    Ok((times.percentile(50.0), cost[0], cost[1]))
}

/// Phase 7: the SOC2 PDF of a 1,000-step incident, rendered by Typst (in this process, with the
/// service's templates) and by reportlab (`bench/reportlab_soc2.py`) from the same bundle, the
/// JSON export the service produced. Returns (Typst cold ms, Typst median ms, reportlab median
/// ms); reportlab's figure is `None` when python3 or reportlab is missing.
async fn exports(client: &Client) -> anyhow::Result<(f64, f64, Option<f64>)> {
    const STEPS: u64 = 1000;
    // A budget that the 1,000th step (100 tokens each) crosses.
    client
        .gql(
            "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id } }",
            json!({ "input": { "name": "bench 1000-step budget", "kind": "TOKEN_BUDGET",
                "rule": { "maxTokens": (STEPS - 1) * 100 + 50 }, "action": "BLOCK", "severity": "HIGH" } }),
        )
        .await?;
    let run = start_run(client).await?;
    for i in 0..STEPS {
        let expected = if i + 1 == STEPS { "STOP" } else { "CONTINUE" };
        step_expecting(client, &run, i, 100, expected).await?;
    }
    let incident = client
        .gql(
            "query($id: ID!) { run(id: $id) { incident { id } } }",
            json!({ "id": run }),
        )
        .await?["run"]["incident"]["id"]
        .as_str()
        .context("the stopped run has an incident")?
        .to_string();
    let export = client
        .gql(
            "mutation($incident: ID!) { requestExport(incidentId: $incident, kind: SOC2, format: JSON, reason: \"bench\") { id } }",
            json!({ "incident": incident }),
        )
        .await?["requestExport"]["id"]
        .as_str()
        .context("export id")?
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let data = client
            .gql(
                "query($id: ID!) { export(id: $id) { status error } }",
                json!({ "id": export }),
            )
            .await?;
        match data["export"]["status"].as_str() {
            Some("READY") => break,
            Some("FAILED") => bail!("the JSON export failed: {data}"),
            _ if Instant::now() > deadline => bail!("the JSON export is not ready after 2 minutes"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let bundle: Value = client
        .http
        .get(format!("{}/exports/{export}/download", client.base))
        .bearer_auth(&client.key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if bundle["steps"].as_array().map(Vec::len) != Some(STEPS as usize) {
        bail!("the bundle does not hold {STEPS} steps");
    }

    let renderer =
        governance_workers::render::Renderer::new(governance_workers::render::Templates::Embedded);
    let today = chrono::Utc::now().date_naive();
    let mut typst = Latencies::default();
    for _ in 0..6 {
        let started = Instant::now();
        let pdf = renderer
            .render("soc2.typ", &bundle, today)
            .map_err(|e| anyhow::anyhow!("Typst: {e}"))?;
        typst.0.push(started.elapsed().as_micros() as u64);
        if !pdf.starts_with(b"%PDF-") {
            bail!("Typst did not produce a PDF");
        }
    }
    let cold = typst.0.remove(0) as f64 / 1000.0;
    let typst_median = typst.percentile(50.0);

    let dir = tempfile::tempdir()?;
    let bundle_path = dir.path().join("soc2-bundle.json");
    std::fs::write(&bundle_path, serde_json::to_vec(&bundle)?)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/reportlab_soc2.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&bundle_path)
        .arg(dir.path().join("soc2-reportlab.pdf"))
        .arg("5")
        .output()
        .await;
    let reportlab = match output {
        Ok(out) if out.status.success() => {
            let figures: Value = serde_json::from_slice(&out.stdout)?;
            figures["medianMs"].as_f64()
        }
        Ok(out) => {
            eprintln!(
                "reportlab comparison skipped (`pip install reportlab`): {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            );
            None
        }
        Err(err) => {
            eprintln!("reportlab comparison skipped: cannot run python3: {err}");
            None
        }
    };
    Ok((cold, typst_median, reportlab))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wants = |n: u8| args.phases.contains(&n);
    if (wants(3) || wants(5) || wants(9)) && !wants(2) && args.rate.is_none() {
        bail!("phases 3, 5 and 9 run at half of phase 2's rate: include phase 2, or give `--rate`");
    }
    let (service, client) = match (&args.url, &args.key) {
        (Some(url), Some(key)) => (
            None,
            Client {
                http: http_client(),
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
    let mut results = serde_json::Map::new();
    results.insert("concurrency".into(), json!(c));
    results.insert("phaseSeconds".into(), json!(phase.as_secs()));

    let mut ceiling_rps = None;
    if wants(1) {
        let ceiling = ceiling(&client, c, phase).await?;
        println!("1 ceiling           {{ __typename }}        {ceiling:>10.0} req/s");
        results.insert("ceilingRps".into(), json!(ceiling));
        ceiling_rps = Some(ceiling);
    }
    let mut half = args.rate;
    if wants(2) {
        let (steps, mut closed) = throughput(&client, c, phase).await?;
        let ratio = ceiling_rps.map(|ceiling| steps / ceiling);
        println!(
            "2 recordStep        closed loop           {steps:>10.0} steps/s  p50 {:.2} ms  p95 {:.2} ms  {}  ratio to ceiling {}",
            closed.percentile(50.0),
            closed.percentile(95.0),
            closed.tail(),
            ratio.map_or("-".to_string(), |r| format!("{r:.2}"))
        );
        results.insert(
            "recordStep".into(),
            json!({
                "stepsPerSecond": steps,
                "ratioToCeiling": ratio,
                "p50Ms": closed.percentile(50.0),
                "p95Ms": closed.percentile(95.0),
                "p99Ms": closed.percentile(99.0),
                "tail": closed.tail_json(),
            }),
        );
        half.get_or_insert(steps / 2.0);
    }
    let mut open_p50 = None;
    if let (true, Some(half)) = (wants(3), half) {
        let before = decision_histogram(&client).await?;
        let mut open = open_loop(&client, half, phase).await?;
        let after = decision_histogram(&client).await?;
        let server_p99 = histogram_percentile(&before, &after, 99.0);
        let mut framework = typename_loop(&client, half, phase).await?;
        let p99_ratio = open.percentile(99.0) / framework.percentile(99.0);
        println!(
            "3 recordStep        open loop {half:>7.0}/s  p50 {:.2} ms  {}  server p99 {}",
            open.percentile(50.0),
            open.tail(),
            server_p99.map_or("-".to_string(), |p| format!("{p:.2} ms")),
        );
        println!(
            "  {{ __typename }}    open loop {half:>7.0}/s  p50 {:.2} ms  {}  recordStep p99 / this p99 {p99_ratio:.2}",
            framework.percentile(50.0),
            framework.tail(),
        );
        results.insert(
            "openLoop".into(),
            json!({
                "rate": half,
                "p50Ms": open.percentile(50.0),
                "p99Ms": open.percentile(99.0),
                "tail": open.tail_json(),
                "serverP99Ms": server_p99,
                "typenameP50Ms": framework.percentile(50.0),
                "typenameTail": framework.tail_json(),
                "p99RatioToTypename": p99_ratio,
            }),
        );
        open_p50 = Some(open.percentile(50.0));
    }
    if wants(8) {
        let before = decision_histogram(&client).await?;
        let mut slow = open_loop(&client, 100.0, phase).await?;
        let after = decision_histogram(&client).await?;
        let server_p50 = histogram_percentile(&before, &after, 50.0);
        let mut framework = typename_loop(&client, 100.0, phase).await?;
        println!(
            "8 recordStep        open loop     100/s  p50 {:.2} ms  {}  server p50 {}",
            slow.percentile(50.0),
            slow.tail(),
            server_p50.map_or("-".to_string(), |p| format!("{p:.2} ms")),
        );
        println!(
            "  {{ __typename }}    open loop     100/s  p50 {:.2} ms  {}",
            framework.percentile(50.0),
            framework.tail(),
        );
        results.insert(
            "openLoop100".into(),
            json!({
                "p50Ms": slow.percentile(50.0),
                "tail": slow.tail_json(),
                "serverP50Ms": server_p50,
                "typenameP50Ms": framework.percentile(50.0),
                "typenameTail": framework.tail_json(),
            }),
        );
    }
    if let (true, Some(half)) = (wants(9), half) {
        let length = if args.quick {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(600)
        };
        let pid = service.as_ref().and_then(|s| s.child.id());
        results.insert("soak".into(), soak(&client, pid, half, length).await?);
    }
    if let (true, Some(half)) = (wants(5), half) {
        match &service {
            Some(service) => {
                let steps = if args.quick { 200_000 } else { 1_000_000 };
                let load_secs = grow(service, steps).await?;
                let mut after = open_loop(&client, half, phase).await?;
                let p50 = after.percentile(50.0);
                let ratio = open_p50.map(|before| p50 / before);
                println!(
                    "5 growth            +{steps} stored steps (loaded in {load_secs:.0} s)  open loop {half:.0}/s  p50 {p50:.2} ms  {}  ratio to phase 3 p50 {}",
                    after.tail(),
                    ratio.map_or("-".to_string(), |r| format!("{r:.2}"))
                );
                results.insert(
                    "growth".into(),
                    json!({ "storedSteps": steps, "loadSeconds": load_secs, "p50Ms": p50, "p99Ms": after.percentile(99.0), "ratioToPhase3": ratio }),
                );
            }
            None => {
                println!("5 growth            skipped (needs the database: run without --url)")
            }
        }
    }
    if wants(4) {
        let reader = match &service {
            Some(service) => Some(start_reader(service, &client).await?),
            None => None,
        };
        let (page_ms, cost10, cost100) =
            frontend(&client, reader.as_ref().map(|(_, r)| r), c).await?;
        drop(reader);
        println!(
            "4 frontend query    100 runs + links      p50 {page_ms:.1} ms  SQL statements: {cost10} for 10 runs, {cost100} for 100"
        );
        results.insert(
            "frontendQuery".into(),
            json!({ "p50Ms": page_ms, "statements10": cost10, "statements100": cost100 }),
        );
    }
    if wants(6) {
        let job_count = if args.quick { 2_000 } else { 10_000 };
        let sqlite_jobs = jobs(job_count, None).await?;
        let redis = start_redis().await?;
        let redis_jobs = match &redis {
            Some(redis) => Some(jobs(job_count, Some(&redis.url)).await?),
            None => None,
        };
        drop(redis);
        println!(
            "6 evaluation jobs   {job_count} enqueued       SQLite {sqlite_jobs:.0} jobs/s  Redis {}",
            redis_jobs.map_or("skipped".to_string(), |r| format!("{r:.0} jobs/s"))
        );
        results.insert(
            "evaluationJobs".into(),
            json!({ "jobs": job_count, "sqlitePerSecond": sqlite_jobs, "redisPerSecond": redis_jobs }),
        );
    }
    if wants(7) {
        let (typst_cold, typst_ms, reportlab_ms) = exports(&client).await?;
        let render_ratio = reportlab_ms.map(|r| typst_ms / r);
        println!(
            "7 SOC2 PDF, 1000 steps  Typst {typst_ms:.1} ms (cold {typst_cold:.0} ms)  reportlab {}  ratio {}",
            reportlab_ms.map_or("skipped".to_string(), |r| format!("{r:.1} ms")),
            render_ratio.map_or("-".to_string(), |r| format!("{r:.2}"))
        );
        results.insert(
            "soc2Render".into(),
            json!({ "typstColdMs": typst_cold, "typstMs": typst_ms, "reportlabMs": reportlab_ms, "ratio": render_ratio }),
        );
    }
    if wants(10) {
        // Idle past the workers' 30 s heartbeat too: that is where wake-ups used to be lost.
        let pauses: Vec<f64> = if args.quick {
            vec![0.5, 2.0, 5.0, 35.0]
        } else {
            vec![0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 35.0, 35.0, 60.0]
        };
        let mut storages: Vec<(&str, Vec<String>, Option<Redis>)> =
            vec![("SQLite", Vec::new(), None)];
        if let Some(redis) = start_redis().await? {
            let url = redis.url.clone();
            storages.push(("Redis", vec!["--redis-url".into(), url], Some(redis)));
        }
        if let Ok(url) = std::env::var("BENCH_POSTGRES_URL") {
            storages.push(("PostgreSQL", vec!["--database-url".into(), url], None));
        }
        let mut figures = serde_json::Map::new();
        for (name, extra, _redis) in &storages {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let mut latencies = pickup_after_idle(&extra, &pauses).await?;
            println!(
                "10 job pickup after idle, {name:<10} {} samples (idle {:.1}-{:.0} s)  p50 {:.1} ms  {}",
                pauses.len(),
                pauses[0],
                pauses[pauses.len() - 1],
                latencies.percentile(50.0),
                latencies.tail()
            );
            let mut figure = latencies.tail_json();
            figure["p50Ms"] = json!(latencies.percentile(50.0));
            figure["samples"] = json!(pauses.len());
            figures.insert((*name).to_string(), figure);
        }
        results.insert("jobPickupAfterIdle".into(), Value::Object(figures));
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)?;
    println!("figures written to {}", args.out.display());
    Ok(())
}
