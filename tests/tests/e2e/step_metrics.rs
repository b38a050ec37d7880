//! The step path's own metrics, as an operator scrapes them from `/metrics`.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn recorded_steps_show_up_by_decision_with_their_latency_and_commits() {
    let app = spawn_app().await;
    app.create_policy(json!({
        "name": "Budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 100 },
        "action": "BLOCK", "severity": "HIGH",
    }))
    .await;
    let run = app.start_run("metrics").await;
    for tokens in [30, 30] {
        app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": tokens }))
            .await;
    }
    let stop = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 50 }))
        .await;
    assert_eq!(stop["action"], "STOP");
    let refused = app
        .record_step(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    assert_eq!(refused.error_code().as_deref(), Some("RUN_TERMINATED"));

    assert_eq!(
        app.metric("governance_steps_total{decision=\"CONTINUE\"}")
            .await,
        2.0
    );
    assert_eq!(
        app.metric("governance_steps_total{decision=\"STOP\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("governance_steps_total{decision=\"REFUSED\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("governance_step_decision_seconds_count").await,
        4.0
    );
    if app.env.database_url.is_none() {
        // SQLite group-commits: three steps written (and the refusal's record), in at least one
        // commit, none bigger than all of them.
        let commits = app.metric("governance_step_batch_size_count").await;
        let written = app.metric("governance_step_batch_size_sum").await;
        assert!(commits >= 1.0, "{commits}");
        assert!((3.0..=4.0).contains(&written), "{written}");
        // The WAL checkpointer, off the write path, says what it copies and how long it took.
        app.poll_metric_until(
            "governance_wal_checkpoint_seconds_count{kind=\"copy\"}",
            |n| n >= 1.0,
        )
        .await;
    }
}

/// SQLite: while another connection holds the write lock (another process, or the job queue's
/// own writes), a step waits for it; the wait shows in
/// `governance_step_batch_lock_wait_seconds`, and the step is answered once it is committed.
#[tokio::test]
async fn a_step_batch_waiting_for_another_connections_lock_is_counted() {
    let app = spawn_app().await;
    if app.env.database_url.is_some() {
        return; // SQLite's one write lock; PostgreSQL locks rows.
    }
    let run = app.start_run("lock-wait").await;
    app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    // What waited before (the job queue's own writes may have met a step already).
    let waits_before = app
        .metric("governance_step_batch_lock_wait_seconds_count")
        .await;
    let waited_before = app
        .metric("governance_step_batch_lock_wait_seconds_sum")
        .await;

    // Another connection takes SQLite's write lock and keeps it.
    let mut holder = app
        .db
        .get_sqlite_connection_pool()
        .acquire()
        .await
        .expect("a connection");
    sea_orm::sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .expect("the write lock");
    let stepping = {
        let port = app.port;
        let key = app.key.clone();
        let run = run.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/graphql"))
                .bearer_auth(key)
                .json(&json!({
                    "query": "mutation($input: RecordStepInput!) { recordStep(input: $input) { action step { stepIndex } } }",
                    "variables": { "input": { "runId": run, "type": "TOOL_CALL", "toolName": "search", "tokens": 1 } },
                }))
                .send()
                .await
                .expect("recordStep")
                .json::<serde_json::Value>()
                .await
                .expect("a JSON answer")
        })
    };
    // The batch gives up on the fast way after its patience and says how long it waited, while
    // the lock is still held: the step is not answered yet.
    app.poll_metric_until("governance_step_batch_lock_wait_seconds_count", |n| {
        n > waits_before
    })
    .await;
    assert!(
        !stepping.is_finished(),
        "answered while another connection held the lock"
    );
    let waited = app
        .metric("governance_step_batch_lock_wait_seconds_sum")
        .await
        - waited_before;
    assert!(waited >= 0.1, "{waited}");

    sea_orm::sqlx::query("ROLLBACK")
        .execute(&mut *holder)
        .await
        .expect("release the lock");
    drop(holder);
    let answer = stepping.await.expect("the step's request");
    assert_eq!(
        answer["data"]["recordStep"]["action"], "CONTINUE",
        "{answer}"
    );
    assert_eq!(
        answer["data"]["recordStep"]["step"]["stepIndex"], 1,
        "{answer}"
    );
    assert_eq!(
        app.metric("governance_steps_total{decision=\"CONTINUE\"}")
            .await,
        2.0
    );
}

/// A run stepped by another process between this server's decision and its commit: the server
/// decided on the run as it last wrote it, its batch's guard refuses the write, and the step is
/// decided again on the run as it now stands and recorded after the other process's step. On
/// SQLite the refusal shows in `governance_step_batch_guard_refusals_total` and as `refused`
/// statements, not as failed ones.
#[tokio::test]
async fn a_run_stepped_by_another_process_is_decided_again_and_its_refusal_counted() {
    let app = spawn_app().await;
    let run = app.start_run("two-writers").await;
    let first = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    assert_eq!(first["step"]["stepIndex"], 0, "{first}");

    // Another process (a recorder of its own, over the same database) records the next step.
    let other = governance_core::steps::Recorder::new(
        app.store.clone(),
        governance_core::policy::SnapshotCache::new(),
        governance_core::steps::EVALUATION_BUDGET,
    );
    let tenant_id = app.tenant_id().await;
    let theirs = other
        .record(
            &tenant_id,
            governance_core::steps::RecordStep {
                run_id: run.clone(),
                step_index: None,
                step_type: governance_entities::enums::StepType::ToolCall,
                tokens: 2,
                cost_micros: 0,
                content: None,
                tool_name: Some("search".to_string()),
                timestamp: None,
            },
        )
        .await
        .expect("the other process's step");
    let governance_core::steps::StepOutcome::Recorded(theirs) = theirs.value else {
        panic!("the other process's step is recorded");
    };
    assert_eq!(theirs.step.step_index, 1);

    let refusals_before = app
        .metric("governance_step_batch_guard_refusals_total")
        .await;
    let failed_before = app
        .metric("governance_db_statements_total{outcome=\"failed\"}")
        .await;
    let busy_before = app
        .metric("governance_db_statements_total{outcome=\"busy\"}")
        .await;
    let ours = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 4 }))
        .await;
    assert_eq!(ours["action"], "CONTINUE", "{ours}");
    assert_eq!(ours["step"]["stepIndex"], 2, "{ours}");
    assert_eq!(ours["run"]["stepCount"], 3, "{ours}");
    assert_eq!(ours["run"]["tokensUsed"], 7, "{ours}");
    if app.env.database_url.is_none() {
        // The write as decided was refused by its guard (a lock another connection held, the
        // job queue's, is waited out first, so the guard always runs), and the batch was read
        // afresh.
        let busy = app
            .metric("governance_db_statements_total{outcome=\"busy\"}")
            .await
            - busy_before;
        assert_eq!(
            app.metric("governance_step_batch_guard_refusals_total")
                .await
                - refusals_before,
            1.0,
            "one guard refusal ({busy} statements refused for the lock meanwhile)"
        );
        assert!(
            app.metric("governance_db_statements_total{outcome=\"refused\"}")
                .await
                > 0.0
        );
        assert_eq!(
            app.metric("governance_db_statements_total{outcome=\"failed\"}")
                .await,
            failed_before,
            "a guard's refusal is not a failure"
        );
    }

    // The chain holds all three steps, in order, and each decision reproduces.
    let verified = app
        .gql_ok(
            "query($id: ID!) { verifyRun(id: $id) { intact reproduced stepsChecked } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(verified["verifyRun"]["intact"], true, "{verified}");
    assert_eq!(verified["verifyRun"]["reproduced"], true, "{verified}");
    assert_eq!(verified["verifyRun"]["stepsChecked"], 3, "{verified}");
}
