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
    app.poll_until(
        EVALUATION,
        json!({ "id": run_id }),
        Duration::from_secs(30),
        |d| !d["run"]["evaluation"].is_null(),
    )
    .await
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
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { status } }",
        json!({ "id": run_id }),
    )
    .await;
    // The evaluation job `completeRun` enqueued sits among 9,000 more, of other ended runs
    // (jobs are keyed by what they work on, so a backlog is of distinct work).
    let tenant_id = app.gql_ok("{ me { tenant { id } } }", json!({})).await["me"]["tenant"]["id"]
        .as_str()
        .expect("tenant id")
        .to_string();
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
    let queue = JobQueue::connect(QueueSettings {
        db: app.db.clone(),
        redis_url: app.env.redis_url.clone(),
        namespace: app.env.namespace.clone(),
        retention: app.env.config().jobs.retention(),
    })
    .await
    .expect("job queue");
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
    let data = app
        .poll_until(
            EVALUATION,
            json!({ "id": run_id }),
            Duration::from_secs(60),
            |d| !d["run"]["evaluation"].is_null(),
        )
        .await;
    assert_eq!(data["run"]["evaluation"]["outcome"], "NOT_APPLICABLE");
}

/// Idle past the heartbeat, twice; each time expect the evaluation record within 5 s.
async fn pickup_after_idle(app: &TestApp, label: &str) {
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(35)).await;
        let run_id = app.start_run(&format!("wf-idle-{label}-{round}")).await;
        app.gql_ok(
            "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { status } }",
            json!({ "id": run_id }),
        )
        .await;
        app.poll_until(
            EVALUATION,
            json!({ "id": run_id }),
            Duration::from_secs(5),
            |d| !d["run"]["evaluation"].is_null(),
        )
        .await;
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
    JobQueue::connect(QueueSettings {
        db: app.db.clone(),
        redis_url: app.env.redis_url.clone(),
        namespace: app.env.namespace.clone(),
        retention: app.env.config().jobs.retention(),
    })
    .await
    .expect("job queue")
}

#[tokio::test]
async fn finished_jobs_are_removed_after_retention_and_waiting_ones_kept() {
    use governance_workers::{queue_stats, retention};
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
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { status } }",
        json!({ "id": waiting }),
    )
    .await;
    let evaluation = |stats: &[queue_stats::QueueStats]| {
        stats
            .iter()
            .find(|s| s.queue == "evaluation")
            .cloned()
            .unwrap()
    };
    assert_eq!(
        evaluation(&queue_stats::stats(&queue).await.unwrap()).pending,
        1
    );

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
    assert_eq!(
        evaluation(&queue_stats::stats(&queue).await.unwrap()).pending,
        1
    );
    let app = app.restart(|c| c.workers = WorkersMode::Embedded).await;
    app.poll_until(
        EVALUATION,
        json!({ "id": waiting }),
        Duration::from_secs(30),
        |d| !d["run"]["evaluation"].is_null(),
    )
    .await;
}

#[tokio::test]
async fn work_already_queued_is_not_queued_again() {
    // As the sweeper does when it repairs a job it thinks lost while the original only waits.
    let app = spawn_app_with(|c| c.workers = WorkersMode::Off).await;
    let run_id = app.start_run("wf-queued-once").await;
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { status } }",
        json!({ "id": run_id }),
    )
    .await;
    let tenant_id = app.gql_ok("{ me { tenant { id } } }", json!({})).await["me"]["tenant"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let queue = queue_of(&app).await;
    let again = governance_core::outcome::FollowUp::RecordEvaluation {
        tenant_id,
        run_id: run_id.clone(),
    };
    for _ in 0..3 {
        queue.enqueue(&again).await.unwrap();
    }
    let stats = governance_workers::queue_stats::stats(&queue)
        .await
        .unwrap();
    let evaluation = stats.iter().find(|s| s.queue == "evaluation").unwrap();
    assert_eq!(evaluation.pending, 1, "{stats:?}");

    // On PostgreSQL the queues can also live in the database (no Redis configured): its apalis
    // insert has no ON CONFLICT, so this path is checked too, batches included.
    if app.env.database_url.is_some() && app.env.redis_url.is_some() {
        let in_database = JobQueue::connect(QueueSettings {
            db: app.db.clone(),
            redis_url: None,
            namespace: app.env.namespace.clone(),
            retention: app.env.config().jobs.retention(),
        })
        .await
        .expect("job queue in PostgreSQL");
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
        let stats = governance_workers::queue_stats::stats(&in_database)
            .await
            .unwrap();
        let evaluation = stats.iter().find(|s| s.queue == "evaluation").unwrap();
        assert_eq!(evaluation.pending, 4, "{stats:?}");
    }
}
