//! A job enqueued by the API is executed by a worker: embedded in `serve`, and in a separate
//! `governance worker` process beside a `serve --workers=off`.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, governance_bin, spawn_app_with};
use governance_api::config::WorkersMode;
use governance_workers::{
    jobs::RecordEvaluation,
    queue::{JobQueue, QueueSettings},
};

const EVALUATION: &str = "query($id: ID!) { run(id: $id) { status terminationReason evaluation { outcome policiesChecked reason snapshotId } policySnapshot { id policyCount } } }";

/// End `run_id` as `completeRun(SUCCEEDED)` does, which enqueues its evaluation job.
async fn complete(app: &TestApp, run_id: &str) {
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { status } }",
        json!({ "id": run_id }),
    )
    .await;
}

/// Poll `run_id` until its evaluation record is there, for at most `timeout`.
async fn evaluated(app: &TestApp, run_id: &str, timeout: Duration) -> serde_json::Value {
    app.poll_until(EVALUATION, json!({ "id": run_id }), timeout, |d| {
        !d["run"]["evaluation"].is_null()
    })
    .await
}

/// Evaluation jobs waiting in `queue`.
async fn pending_evaluations(queue: &JobQueue) -> u64 {
    let stats = governance_workers::queue_stats::stats(queue).await.unwrap();
    stats
        .iter()
        .find(|s| s.queue == "evaluation")
        .map(|s| s.pending)
        .unwrap()
}

async fn complete_and_wait_for_evaluation(app: &TestApp, workflow: &str) -> serde_json::Value {
    let run_id = app.start_run(workflow).await;
    let done = app
        .gql_ok(
            "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { status terminationReason completedAt durationMs } }",
            json!({ "id": run_id }),
        )
        .await;
    assert_eq!(done["completeRun"]["status"], "SUCCEEDED");
    assert_eq!(done["completeRun"]["terminationReason"], "COMPLETED");
    assert!(done["completeRun"]["durationMs"].as_i64().unwrap() >= 0);
    evaluated(app, &run_id, Duration::from_secs(30)).await
}

#[tokio::test]
async fn embedded_worker_writes_the_evaluation_record() {
    let app = spawn_app_with(|_| {}).await;
    let data = complete_and_wait_for_evaluation(&app, "wf-embedded").await;
    let run = &data["run"];
    // No policy exists, so none applied.
    assert_eq!(run["evaluation"]["outcome"], "NOT_APPLICABLE");
    assert_eq!(run["evaluation"]["policiesChecked"], 0);
    assert_eq!(run["evaluation"]["snapshotId"], run["policySnapshot"]["id"]);
}

#[tokio::test]
async fn separate_worker_process_runs_jobs_enqueued_by_a_server_without_workers() {
    let app = spawn_app_with(|c| c.workers = WorkersMode::Off).await;
    let mut args = vec!["worker".to_string()];
    args.extend(app.env.cli_args());
    args.extend(["--log-format".into(), "json".into()]);
    let mut worker = tokio::process::Command::new(governance_bin())
        .args(&args)
        .env("GOVERNANCE_NAMESPACE", &app.env.namespace)
        .kill_on_drop(true)
        .spawn()
        .expect("start governance worker");
    let data = complete_and_wait_for_evaluation(&app, "wf-separate").await;
    assert_eq!(data["run"]["evaluation"]["outcome"], "NOT_APPLICABLE");
    // Now that the worker runs (it took the first job), a job the server enqueues wakes no
    // worker in its own process. On SQLite the worker's own look for jobs is only a backstop,
    // every 10 s: two jobs one after the other, each done within 3 s, need the queue watch.
    for round in 0..2 {
        let run_id = app.start_run(&format!("wf-separate-running-{round}")).await;
        complete(&app, &run_id).await;
        let data = evaluated(&app, &run_id, Duration::from_secs(3)).await;
        assert_eq!(data["run"]["evaluation"]["outcome"], "NOT_APPLICABLE");
    }

    // SIGTERM stops the worker cleanly.
    #[cfg(unix)]
    {
        let pid = worker.id().expect("pid") as i32;
        unsafe_free_kill(pid);
        let status = tokio::time::timeout(Duration::from_secs(20), worker.wait())
            .await
            .expect("worker exits after SIGTERM")
            .expect("status");
        assert!(status.success(), "worker exit status {status:?}");
    }
    #[cfg(not(unix))]
    worker.kill().await.ok();
}

/// Send SIGTERM with the `kill` command (no unsafe code in this workspace).
pub fn unsafe_free_kill(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Jobs that pile up while no worker runs are all picked up once one starts, however many. On
/// Redis this needs care: apalis-redis parks every pushed job in a "scheduled" set and its fetch
/// promotes all due jobs with one Lua `unpack`, which Redis refuses past about 8,000 values, so
/// without our chunked promotion a backlog this size would make every fetch fail for good.
#[tokio::test]
async fn a_backlog_larger_than_one_redis_promotion_is_drained_when_workers_start() {
    let app = spawn_app_with(|c| c.workers = WorkersMode::Off).await;
    let run_id = app.start_run("wf-backlog").await;
    complete(&app, &run_id).await;
    // The evaluation job `completeRun` enqueued sits among 9,000 more, of other ended runs
    // (jobs are keyed by what they work on, so a backlog is of distinct work).
    let tenant_id = app.tenant_id().await;
    let ended = governance_core::steps::load_synthetic(
        &app.store,
        &governance_core::policy::SnapshotCache::new(),
        &tenant_id,
        9_000,
        1,
        true,
    )
    .await
    .expect("synthetic ended runs");
    let queue = queue_of(&app).await;
    let jobs = ended
        .iter()
        .map(|run| RecordEvaluation {
            tenant_id: tenant_id.clone(),
            run_id: run.id.clone(),
        })
        .collect();
    queue
        .enqueue_evaluations(jobs)
        .await
        .expect("enqueue the backlog");
    let data = app.gql_ok(EVALUATION, json!({ "id": run_id })).await;
    assert!(data["run"]["evaluation"].is_null(), "no worker has run yet");

    let app = app.restart(|c| c.workers = WorkersMode::Embedded).await;
    let data = evaluated(&app, &run_id, Duration::from_secs(60)).await;
    assert_eq!(data["run"]["evaluation"]["outcome"], "NOT_APPLICABLE");
}

/// Idle past the heartbeat, twice; each time expect the evaluation record within 5 s.
async fn pickup_after_idle(app: &TestApp, label: &str) {
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(35)).await;
        let run_id = app.start_run(&format!("wf-idle-{label}-{round}")).await;
        complete(app, &run_id).await;
        evaluated(app, &run_id, Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn jobs_start_promptly_after_the_queue_has_been_idle() {
    // Workers that found nothing to do for longer than their heartbeat (30 s) used to sleep
    // until the next one: a job enqueued then waited up to 30 s. It takes milliseconds when the
    // wake-up works. On the configured storage (SQLite, or Redis), and on PostgreSQL also with
    // the queues in the database (no Redis), at the same time.
    let app = spawn_app_with(|_| {}).await;
    if app.env.database_url.is_some() && app.env.redis_url.is_some() {
        let in_database = spawn_app_with(|c| c.redis_url = None).await;
        tokio::join!(
            pickup_after_idle(&app, "redis"),
            pickup_after_idle(&in_database, "postgres")
        );
    } else {
        pickup_after_idle(&app, "default").await;
    }
}

/// The queues of `app`'s deployment, as its workers see them.
async fn queue_of(app: &TestApp) -> JobQueue {
    queue_on(app, app.env.redis_url.clone()).await
}

/// `app`'s queues on Redis at `redis_url`, or in its database without one.
async fn queue_on(app: &TestApp, redis_url: Option<String>) -> JobQueue {
    JobQueue::connect(QueueSettings {
        db: app.db.clone(),
        redis_url,
        namespace: app.env.namespace.clone(),
        retention: app.env.config().jobs.retention(),
    })
    .await
    .expect("job queue")
}

#[tokio::test]
async fn finished_jobs_are_removed_after_retention_and_waiting_ones_kept() {
    use governance_workers::retention;
    let app = spawn_app_with(|_| {}).await;
    let queue = queue_of(&app).await;
    for n in 0..3 {
        complete_and_wait_for_evaluation(&app, &format!("wf-retained-{n}")).await;
    }
    // Within retention nothing goes.
    let kept = retention::remove_finished_before(
        &queue,
        chrono::Utc::now() - chrono::Duration::hours(1),
        500,
    )
    .await
    .unwrap();
    assert_eq!(kept, 0);

    // One job waits: no worker runs while its run ends.
    let app = app.restart(|c| c.workers = WorkersMode::Off).await;
    let queue = queue_of(&app).await;
    let waiting = app.start_run("wf-waiting").await;
    complete(&app, &waiting).await;
    assert_eq!(pending_evaluations(&queue).await, 1);

    // Past retention, in batches of 2: the three finished evaluation jobs go, the waiting one stays.
    let removed = retention::remove_finished_before(
        &queue,
        chrono::Utc::now() + chrono::Duration::seconds(2),
        2,
    )
    .await
    .unwrap();
    assert!(removed >= 3, "removed {removed}");
    let again = retention::remove_finished_before(
        &queue,
        chrono::Utc::now() + chrono::Duration::seconds(2),
        2,
    )
    .await
    .unwrap();
    assert_eq!(again, 0, "everything finished went the first time");
    assert_eq!(pending_evaluations(&queue).await, 1);
    let app = app.restart(|c| c.workers = WorkersMode::Embedded).await;
    evaluated(&app, &waiting, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn work_already_queued_is_not_queued_again() {
    // As the sweeper does when it repairs a job it thinks lost while the original only waits.
    let app = spawn_app_with(|c| c.workers = WorkersMode::Off).await;
    let run_id = app.start_run("wf-queued-once").await;
    complete(&app, &run_id).await;
    let tenant_id = app.tenant_id().await;
    let queue = queue_of(&app).await;
    let again = governance_core::outcome::FollowUp::RecordEvaluation {
        tenant_id,
        run_id: run_id.clone(),
    };
    for _ in 0..3 {
        queue.enqueue(&again).await.unwrap();
    }
    assert_eq!(pending_evaluations(&queue).await, 1);

    // On PostgreSQL the queues can also live in the database (no Redis configured): its apalis
    // insert has no ON CONFLICT, so this path is checked too, batches included.
    if app.env.database_url.is_some() && app.env.redis_url.is_some() {
        let in_database = queue_on(&app, None).await;
        for _ in 0..3 {
            in_database.enqueue(&again).await.unwrap();
        }
        let other = |n: u32| RecordEvaluation {
            tenant_id: "tenant_other".into(),
            run_id: format!("run_other_{n}"),
        };
        // A batch holding work already queued still queues the rest.
        in_database
            .enqueue_evaluations(vec![other(1), other(2)])
            .await
            .unwrap();
        in_database
            .enqueue_evaluations(vec![other(2), other(3), other(1)])
            .await
            .unwrap();
        assert_eq!(pending_evaluations(&in_database).await, 4);
    }
}
