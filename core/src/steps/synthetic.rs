//! Synthetic runs for benchmarks of a large store (`governance seed`): started as `startRun`
//! starts them, every step decided by the same pure decision and written as the same row,
//! chained the same way, as a report would be; only the transactions are large.

use chrono::{DateTime, Utc};
use governance_entities::{enums::StepType, run};
use sea_orm::ConnectionTrait;

use super::{
    RecordStep, compiled_snapshot,
    decision::{check, continues_cleanly, count_clean_step, step_row},
    write::write_clean_steps,
};
use crate::{
    error::{CoreError, CoreResult},
    policy::SnapshotCache,
    runs,
    store::Store,
    time::now,
};

/// Steps written per transaction by [`load_synthetic`] (whole runs; a run larger than this is
/// written alone): about a quarter of a second of holding SQLite's write lock.
const SYNTHETIC_STEPS_PER_COMMIT: u64 = 10_000;

/// The pause after each of [`load_synthetic`]'s commits, so that a live server on the same
/// SQLite file gets the write lock in between. SQLite's busy handler polls a held lock at
/// intervals growing to 100 ms; a loader that began its next transaction at once would win the
/// lock again and again, and starve the server's writers past their busy timeout (its job
/// workers then failed their polls and heartbeats).
const PAUSE_BETWEEN_COMMITS: std::time::Duration = std::time::Duration::from_millis(120);

/// Load `runs_count` synthetic runs of `steps_per_run` clean steps each into `tenant_id`, for
/// benchmarks of a large store: each run is started as `startRun` starts it (against the
/// tenant's current snapshot), and each step is decided by the same check and written as the
/// same row, chained the same way, as a report would be. With `ended`, each run then ends as
/// `completeRun(SUCCEEDED)` ends it, event included; its evaluation-record job is the caller's
/// to enqueue (the runs are returned). Only the transactions are large: whole runs, up to
/// about 10,000 steps per commit, with a pause after each for a live server's writers. Runs are
/// marked synthetic.
/// Refuses a snapshot that would not continue every step (the rows would then differ from
/// what the service writes). Returns the runs, in the order they were written.
pub async fn load_synthetic(
    store: &Store,
    cache: &SnapshotCache,
    tenant_id: &str,
    runs_count: u64,
    steps_per_run: u64,
    ended: bool,
) -> CoreResult<Vec<run::Model>> {
    let runs_per_commit = (SYNTHETIC_STEPS_PER_COMMIT / steps_per_run.max(1)).clamp(1, 1000);
    let mut loaded = Vec::with_capacity(runs_count as usize);
    while (loaded.len() as u64) < runs_count {
        let batch = runs_per_commit.min(runs_count - loaded.len() as u64);
        let txn = store.begin().await?;
        for _ in 0..batch {
            let run = synthetic_run(&*txn, cache, tenant_id, steps_per_run).await?;
            let run = if ended {
                runs::complete_in(&*txn, run, runs::Completion::Succeeded, None)
                    .await?
                    .value
            } else {
                run
            };
            loaded.push(run);
        }
        txn.commit().await?;
        if (loaded.len() as u64) < runs_count {
            tokio::time::sleep(PAUSE_BETWEEN_COMMITS).await;
        }
    }
    Ok(loaded)
}

/// One synthetic run of [`load_synthetic`], in the caller's transaction.
async fn synthetic_run<C: ConnectionTrait>(
    conn: &C,
    cache: &SnapshotCache,
    tenant_id: &str,
    steps_per_run: u64,
) -> CoreResult<run::Model> {
    let mut run = runs::start_in(
        conn,
        tenant_id,
        runs::StartRun {
            workflow_id: "synthetic-load".to_string(),
            agent: Some("governance seed".to_string()),
            triggered_by: None,
            is_synthetic: true,
            synthetic_scenario_id: Some("bench-growth".to_string()),
            metadata: None,
        },
    )
    .await?
    .value;
    let snapshot = compiled_snapshot(conn, cache, &run).await?;
    let started = run.started_at;
    let window = snapshot
        .max_rate_window_seconds()
        .map(chrono::Duration::seconds);
    let mut times: Vec<DateTime<Utc>> = Vec::with_capacity(steps_per_run as usize);
    // The first step still inside the rate window (timestamps only grow).
    let mut in_window = 0;
    let mut rows = Vec::with_capacity(steps_per_run as usize);
    for i in 0..steps_per_run as i64 {
        // One step per millisecond from the run's start.
        let at = started + chrono::Duration::milliseconds(i);
        let input = RecordStep {
            run_id: run.id.clone(),
            step_index: Some(i),
            step_type: StepType::LlmCall,
            tokens: 100,
            cost_micros: 10,
            content: Some(format!("synthetic step {i}")),
            tool_name: None,
            timestamp: Some(at),
        };
        let recent: &[DateTime<Utc>] = match window {
            Some(window) => {
                while in_window < times.len() && times[in_window] <= at - window {
                    in_window += 1;
                }
                &times[in_window..]
            }
            None => &[],
        };
        let evaluation = check(&snapshot, &run, i, &input, at, recent);
        if !continues_cleanly(&evaluation) {
            return Err(CoreError::bad_field(
                "steps",
                format!(
                    "the tenant's policies do not let a synthetic step {i} continue ({}); load fewer steps or change the policies",
                    evaluation.reason
                ),
            ));
        }
        let step = step_row(&run, i, &input, at, &evaluation);
        times.push(at);
        count_clean_step(&mut run, &input, &step);
        rows.push(step);
    }
    if !rows.is_empty() {
        run.updated_at = now();
        write_clean_steps(conn, &rows, &[&run]).await?;
    }
    Ok(run)
}
