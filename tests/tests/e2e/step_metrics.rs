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
    }
}
