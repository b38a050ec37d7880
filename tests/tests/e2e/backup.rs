//! `governance backup`: an online copy of the embedded database that restores into a fresh data
//! directory and serves the same records.

use serde_json::json;

use crate::helpers::{TestEnv, postgres_admin_url, run_cli, spawn_app, spawn_existing};

const RUN: &str = "query($id: ID!) { run(id: $id) { stepCount status trace { headHash steps(first: 10) { totalCount } } } verifyRun(id: $id) { intact headHash } }";

#[tokio::test]
async fn a_backup_taken_while_serving_restores_into_a_fresh_data_directory() {
    let app = spawn_app().await;
    let copies = tempfile::tempdir().expect("temp dir");
    let target = copies.path().join("governance-backup.db");
    let target_arg = target.display().to_string();

    if postgres_admin_url().is_some() {
        // PostgreSQL has its own tools: the command says so and writes nothing.
        let (ok, _, err) = run_cli(&app.env, &["backup", &target_arg]).await;
        assert!(!ok);
        assert!(err.contains("pg_dump"), "{err}");
        assert!(!target.exists());
        return;
    }

    let run_id = app.start_run("wf-backup").await;
    for i in 0..5 {
        app.step_ok(
            &run_id,
            json!({ "type": "LLM_CALL", "tokens": 10, "content": format!("step {i}") }),
        )
        .await;
    }
    let before = app.gql_ok(RUN, json!({ "id": run_id })).await;
    assert_eq!(before["verifyRun"]["intact"], true);

    // Taken from another process while the server runs.
    let (ok, out, err) = run_cli(&app.env, &["backup", &target_arg]).await;
    assert!(ok, "backup failed: {err}");
    assert!(out.contains(&target_arg), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // A backup never overwrites.
    let (ok, _, err) = run_cli(&app.env, &["backup", &target_arg]).await;
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    // Restore: the copy as the database of a fresh data directory, served. The secrets key
    // goes with it (it is kept outside the database, and the stored secrets open only with it).
    let env = TestEnv::new().await;
    std::fs::copy(&target, env.data_dir().join("governance.db")).expect("restore the copy");
    std::fs::copy(
        app.env.data_dir().join("secrets.key"),
        env.data_dir().join("secrets.key"),
    )
    .expect("restore the secrets key");
    let config = env.config();
    let restored = spawn_existing(env, config, app.key.clone()).await;
    let after = restored.gql_ok(RUN, json!({ "id": run_id })).await;
    assert_eq!(after["run"]["stepCount"], 5);
    assert_eq!(after["run"]["trace"]["steps"]["totalCount"], 5);
    assert_eq!(
        after["run"]["trace"]["headHash"],
        before["run"]["trace"]["headHash"]
    );
    assert_eq!(after["verifyRun"]["intact"], true);
    assert_eq!(
        after["verifyRun"]["headHash"],
        before["verifyRun"]["headHash"]
    );
    // And it keeps recording where the original left off.
    let next = restored
        .step_ok(
            &run_id,
            json!({ "type": "LLM_CALL", "tokens": 10, "content": "after restore" }),
        )
        .await;
    assert_eq!(next["step"]["stepIndex"], 5);
}
