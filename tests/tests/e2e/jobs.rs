//! A job enqueued by the API is executed by a worker: embedded in `serve`, and in a separate
//! `governance worker` process beside a `serve --workers=off`.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, governance_bin, spawn_app_with};
use governance_api::config::WorkersMode;

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
