//! The governance spine, driven as an integrator would: policies, runs, step decisions, the stop
//! path and what it records, idempotency, concurrency, fail-closed, timeouts, and the proof.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, postgres_admin_url, spawn_app};

fn at(started: &str, plus_ms: i64) -> String {
    let t: DateTime<Utc> = started.parse().unwrap();
    (t + chrono::Duration::milliseconds(plus_ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

const RUN: &str = "query($id: ID!) { run(id: $id) {
    status terminationReason stoppedAtStep tokensUsed stepCount policySnapshotId policyVersion
    trace { headHash stepCount inflection { stepIndex policyId reason } steps { nodes { stepIndex status isInflection decision } } }
    violations { nodes { id policyId stepIndex action } }
    incident { id status severity violation { id } }
    enforcements { nodes { actionTaken policyId stepIndex } }
    evaluation { outcome policiesChecked reason draftCandidate }
} }";

/// A scenario for one policy kind: the rule, a step that passes, a step that violates it
/// (each step may carry `timestamp` offsets in ms from the run's start as `plusMs`), and the
/// termination reason DESIGN assigns.
struct Case {
    kind: &'static str,
    rule: Value,
    pass: Vec<Value>,
    violate: Value,
    termination: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            kind: "TOKEN_BUDGET",
            rule: json!({ "maxTokens": 100 }),
            pass: vec![
                json!({ "type": "LLM_CALL", "tokens": 60 }),
                json!({ "type": "LLM_CALL", "tokens": 40 }),
            ],
            violate: json!({ "type": "LLM_CALL", "tokens": 1 }),
            termination: "BUDGET_EXCEEDED",
        },
        Case {
            kind: "COST_BUDGET",
            rule: json!({ "maxCostMicros": 1000 }),
            pass: vec![json!({ "type": "LLM_CALL", "tokens": 1, "costMicros": 1000 })],
            violate: json!({ "type": "LLM_CALL", "tokens": 1, "costMicros": 1 }),
            termination: "BUDGET_EXCEEDED",
        },
        Case {
            kind: "STEP_LIMIT",
            rule: json!({ "maxSteps": 2 }),
            pass: vec![
                json!({ "type": "OTHER", "tokens": 0 }),
                json!({ "type": "OTHER", "tokens": 0 }),
            ],
            violate: json!({ "type": "OTHER", "tokens": 0 }),
            termination: "POLICY_BLOCK",
        },
        Case {
            kind: "RATE_LIMIT",
            rule: json!({ "maxSteps": 2, "windowSeconds": 10 }),
            pass: vec![
                json!({ "type": "OTHER", "tokens": 0, "plusMs": 1000 }),
                json!({ "type": "OTHER", "tokens": 0, "plusMs": 2000 }),
                // The first step has left the window by now: still 2 in the last 10 s.
                json!({ "type": "OTHER", "tokens": 0, "plusMs": 11500 }),
            ],
            violate: json!({ "type": "OTHER", "tokens": 0, "plusMs": 11600 }),
            termination: "RATE_LIMITED",
        },
        Case {
            kind: "DURATION_LIMIT",
            rule: json!({ "maxSeconds": 3600 }),
            pass: vec![json!({ "type": "OTHER", "tokens": 0, "plusMs": 3_600_000 })],
            violate: json!({ "type": "OTHER", "tokens": 0, "plusMs": 3_600_001 }),
            termination: "TIMEOUT",
        },
        Case {
            kind: "CONTENT_RULE",
            rule: json!({ "patterns": ["(?i)ignore previous instructions", "sk-[A-Za-z0-9]{20,}"] }),
            pass: vec![
                json!({ "type": "LLM_CALL", "tokens": 5, "content": "What is the weather in Paris?" }),
            ],
            violate: json!({ "type": "LLM_CALL", "tokens": 5, "content": "use key sk-ABCDEFGHIJKLMNOPQRSTUVWX now" }),
            termination: "POLICY_BLOCK",
        },
        Case {
            kind: "TOOL_ALLOWLIST",
            rule: json!({ "tools": ["search", "calculator"] }),
            pass: vec![
                json!({ "type": "TOOL_CALL", "tokens": 1, "toolName": "search" }),
                json!({ "type": "LLM_CALL", "tokens": 1 }),
            ],
            violate: json!({ "type": "TOOL_CALL", "tokens": 1, "toolName": "shell" }),
            termination: "POLICY_BLOCK",
        },
        Case {
            kind: "EXPRESSION",
            rule: json!({ "expression": "step.type == 'TOOL_CALL' && run.tokensUsed > 50" }),
            // An LLM call over 50 tokens does not match (the expression wants a tool call).
            pass: vec![json!({ "type": "LLM_CALL", "tokens": 60 })],
            violate: json!({ "type": "TOOL_CALL", "tokens": 0, "toolName": "search" }),
            termination: "POLICY_BLOCK",
        },
    ]
}

fn with_time(mut step: Value, started: &str) -> Value {
    if let Some(plus) = step.get("plusMs").and_then(Value::as_i64) {
        step["timestamp"] = json!(at(started, plus));
    }
    if let Some(o) = step.as_object_mut() {
        o.remove("plusMs");
    }
    step
}

#[tokio::test]
async fn every_policy_kind_continues_warns_and_stops() {
    let app = spawn_app().await;
    for case in cases() {
        // BLOCK: passes, then stops at the violating step with the kind's termination reason.
        let workflow = format!("wf-block-{}", case.kind);
        let policy_id = app
            .create_policy(json!({
                "name": format!("{} block", case.kind), "kind": case.kind, "rule": case.rule,
                "action": "BLOCK", "severity": "HIGH", "workflowId": workflow,
            }))
            .await;
        let (run, started) = app.start_run_at(&workflow).await;
        for step in &case.pass {
            let d = app.step_ok(&run, with_time(step.clone(), &started)).await;
            assert_eq!(d["action"], "CONTINUE", "{}: {d}", case.kind);
            assert_eq!(d["step"]["status"], "OK");
        }
        let d = app
            .step_ok(&run, with_time(case.violate.clone(), &started))
            .await;
        assert_eq!(d["action"], "STOP", "{}: {d}", case.kind);
        assert_eq!(d["terminationReason"], case.termination, "{}", case.kind);
        assert_eq!(d["recorded"], true);
        assert_eq!(d["step"]["status"], "VIOLATION");
        assert_eq!(d["step"]["isInflection"], true);
        assert_eq!(d["violations"][0]["policyId"], policy_id);
        assert_eq!(d["violations"][0]["policyType"], case.kind);
        assert_eq!(d["incident"]["status"], "OPEN");
        assert_eq!(d["run"]["status"], "FAILED_POLICY");
        assert_eq!(d["run"]["stoppedAtStep"], case.pass.len());

        // WARN: the same rule as a WARN policy lets the run go on, warned, without an incident.
        let workflow = format!("wf-warn-{}", case.kind);
        app.create_policy(json!({
            "name": format!("{} warn", case.kind), "kind": case.kind, "rule": case.rule,
            "action": "WARN", "severity": "LOW", "workflowId": workflow,
        }))
        .await;
        let (run, started) = app.start_run_at(&workflow).await;
        for step in &case.pass {
            assert_eq!(
                app.step_ok(&run, with_time(step.clone(), &started)).await["action"],
                "CONTINUE"
            );
        }
        let d = app
            .step_ok(&run, with_time(case.violate.clone(), &started))
            .await;
        assert_eq!(d["action"], "WARN", "{}: {d}", case.kind);
        assert_eq!(d["step"]["status"], "WARNING");
        assert!(d["incident"].is_null());
        assert_eq!(d["run"]["status"], "RUNNING");
        assert_eq!(d["violations"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn the_stop_path_records_everything_and_later_steps_are_refused() {
    let app = spawn_app().await;
    let policy_id = app
        .create_policy(json!({
            "name": "Secrets", "kind": "CONTENT_RULE", "rule": { "patterns": ["sk-[A-Za-z0-9]{20,}"] },
            "action": "BLOCK", "severity": "CRITICAL",
        }))
        .await;
    app.create_policy(json!({
        "name": "Soft budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 10 },
        "action": "WARN", "severity": "LOW",
    }))
    .await;
    let run = app.start_run("wf-stop").await;
    let secret = "sk-ZYXWVUTSRQPONMLKJIHGFEDCBA";
    assert_eq!(
        app.step_ok(
            &run,
            json!({ "type": "LLM_CALL", "tokens": 5, "content": "hello" })
        )
        .await["action"],
        "CONTINUE"
    );
    let response = app
        .record_step(
            &run,
            json!({ "type": "LLM_CALL", "tokens": 20, "content": format!("the key is {secret}") }),
        )
        .await;
    // The matched secret never comes back, in any field.
    assert!(
        !response.body.to_string().contains(secret),
        "{}",
        response.body
    );
    let d = response.data()["recordStep"].clone();
    assert_eq!(d["action"], "STOP");
    // Both policies were violated; the BLOCK one is the inflection.
    assert_eq!(d["violations"].as_array().unwrap().len(), 2);
    assert_eq!(d["incident"]["severity"], "CRITICAL");

    let data = app.gql_ok(RUN, json!({ "id": run })).await;
    let r = &data["run"];
    assert_eq!(r["status"], "FAILED_POLICY");
    assert_eq!(r["terminationReason"], "POLICY_BLOCK");
    assert_eq!(r["stoppedAtStep"], 1);
    assert_eq!(r["trace"]["inflection"]["stepIndex"], 1);
    assert_eq!(r["trace"]["inflection"]["policyId"], policy_id);
    assert_eq!(r["trace"]["steps"]["nodes"][1]["isInflection"], true);
    assert_eq!(r["trace"]["headHash"], d["step"]["entryHash"]);
    assert_eq!(r["incident"]["status"], "OPEN");
    let actions: Vec<&str> = r["enforcements"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actionTaken"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"STOPPED") && actions.contains(&"WARNED"),
        "{actions:?}"
    );

    // A step after the end: refused, not traced, and the attempt is on the record.
    let late = app
        .record_step(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    assert_eq!(
        late.error_code().as_deref(),
        Some("RUN_TERMINATED"),
        "{}",
        late.body
    );
    let data = app.gql_ok(RUN, json!({ "id": run })).await;
    assert_eq!(data["run"]["stepCount"], 2);
    let last = data["run"]["enforcements"]["nodes"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["actionTaken"], "BLOCKED");
    assert_eq!(last["policyId"], policy_id);

    // The evaluation record follows.
    let data = app
        .poll_until(RUN, json!({ "id": run }), Duration::from_secs(30), |d| {
            !d["run"]["evaluation"].is_null()
        })
        .await;
    assert_eq!(data["run"]["evaluation"]["outcome"], "VIOLATION");
    assert_eq!(data["run"]["evaluation"]["policiesChecked"], 2);

    // The policy knows it fired.
    let p = app
        .gql_ok(
            "query($id: ID!) { policy(id: $id) { triggerCount30d lastTriggeredAt enforcements { nodes { actionTaken } } } }",
            json!({ "id": policy_id }),
        )
        .await;
    assert_eq!(p["policy"]["triggerCount30d"], 1);
    assert!(p["policy"]["lastTriggeredAt"].is_string());
}

#[tokio::test]
async fn resending_a_step_is_idempotent_and_different_content_conflicts() {
    let app = spawn_app().await;
    app.create_policy(json!({
        "name": "Budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 100 }, "action": "BLOCK", "severity": "HIGH",
    }))
    .await;
    let run = app.start_run("wf-idem").await;
    let step = json!({ "stepIndex": 0, "type": "LLM_CALL", "tokens": 70, "content": "a" });
    let first = app.step_ok(&run, step.clone()).await;
    let again = app.step_ok(&run, step.clone()).await;
    assert_eq!(again["replayed"], true);
    assert_eq!(again["action"], first["action"]);
    assert_eq!(again["step"]["entryHash"], first["step"]["entryHash"]);
    assert_eq!(again["run"]["tokensUsed"], 70, "counted once");

    let conflict = app
        .record_step(
            &run,
            json!({ "stepIndex": 0, "type": "LLM_CALL", "tokens": 70, "content": "b" }),
        )
        .await;
    assert_eq!(conflict.error_code().as_deref(), Some("CONFLICT"));
    let gap = app
        .record_step(
            &run,
            json!({ "stepIndex": 5, "type": "LLM_CALL", "tokens": 1 }),
        )
        .await;
    assert_eq!(gap.error_code().as_deref(), Some("BAD_USER_INPUT"));

    // The stopping step re-sent after the stop returns the recorded STOP, not RUN_TERMINATED.
    let stop = json!({ "stepIndex": 1, "type": "LLM_CALL", "tokens": 50 });
    let stopped = app.step_ok(&run, stop.clone()).await;
    assert_eq!(stopped["action"], "STOP");
    let again = app.step_ok(&run, stop).await;
    assert_eq!(again["action"], "STOP");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["incident"]["id"], stopped["incident"]["id"]);
    assert_eq!(again["run"]["tokensUsed"], 120);
}

#[tokio::test]
async fn fifty_concurrent_steps_never_overrun_the_budget_and_open_one_incident() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.create_policy(json!({
        "name": "Budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 200 }, "action": "BLOCK", "severity": "HIGH",
    }))
    .await;
    let run = app.start_run("wf-race").await;
    let mut handles = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        let run = run.clone();
        handles.push(tokio::spawn(async move {
            let r = app
                .record_step(&run, json!({ "type": "LLM_CALL", "tokens": 10 }))
                .await;
            (
                r.body["data"]["recordStep"]["action"]
                    .as_str()
                    .map(str::to_string),
                r.error_code(),
            )
        }));
    }
    let mut stops = 0;
    let mut continues = 0;
    let mut terminated = 0;
    for handle in handles {
        match handle.await.unwrap() {
            (Some(action), None) if action == "STOP" => stops += 1,
            (Some(action), None) if action == "CONTINUE" => continues += 1,
            (None, Some(code)) if code == "RUN_TERMINATED" => terminated += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((continues, stops, terminated), (20, 1, 29));
    let data = app.gql_ok(RUN, json!({ "id": run })).await;
    // 20 steps fit the budget; the 21st is the one stopping step.
    assert_eq!(data["run"]["tokensUsed"], 210);
    assert_eq!(data["run"]["stepCount"], 21);
    let incidents = app
        .gql_ok(
            "query($id: ID!) { run(id: $id) { violations { nodes { id } } incident { id } } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(
        incidents["run"]["violations"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(incidents["run"]["incident"]["id"].is_string());
    let blocked = data["run"]["enforcements"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actionTaken"] == "BLOCKED")
        .count();
    assert_eq!(blocked, 29);
}

/// Many runs reporting at once: on SQLite their steps share commits (group commit), with clean
/// steps decided in memory beside steps that warn or stop. Every answer must be the one a lone
/// report would get, and every trace must reproduce and verify.
#[tokio::test]
async fn concurrent_runs_get_the_same_decisions_as_lone_reports_and_every_chain_verifies() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.create_policy(json!({
        "name": "Rate", "kind": "RATE_LIMIT", "rule": { "maxSteps": 8, "windowSeconds": 3600 },
        "action": "BLOCK", "severity": "HIGH",
    }))
    .await;
    app.create_policy(json!({
        "name": "Big step", "kind": "EXPRESSION", "rule": { "expression": "step.tokens > 50" },
        "action": "WARN", "severity": "LOW",
    }))
    .await;
    let mut runs = Vec::new();
    for _ in 0..16 {
        runs.push(app.start_run("wf-group").await);
    }
    let mut handles = Vec::new();
    for run in runs.clone() {
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..12 {
                let tokens = if i == 3 { 60 } else { 10 };
                let r = app
                    .record_step(&run, json!({ "type": "LLM_CALL", "tokens": tokens }))
                    .await;
                answers.push(
                    r.body["data"]["recordStep"]["action"]
                        .as_str()
                        .map(str::to_string)
                        .or(r.error_code())
                        .unwrap(),
                );
            }
            answers
        }));
    }
    let mut expected = vec!["CONTINUE"; 12];
    expected[3] = "WARN";
    expected[8] = "STOP";
    for slot in expected.iter_mut().skip(9) {
        *slot = "RUN_TERMINATED";
    }
    for handle in handles {
        assert_eq!(handle.await.unwrap(), expected);
    }
    for run in &runs {
        let data = app.gql_ok(RUN, json!({ "id": run })).await;
        let r = &data["run"];
        assert_eq!(r["status"], "FAILED_POLICY", "{data}");
        assert_eq!(r["terminationReason"], "RATE_LIMITED");
        assert_eq!(r["stoppedAtStep"], 8);
        assert_eq!(r["stepCount"], 9);
        assert_eq!(r["tokensUsed"], 8 * 10 + 60);
        let steps: Vec<i64> = r["trace"]["steps"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stepIndex"].as_i64().unwrap())
            .collect();
        assert_eq!(steps, (0..9).collect::<Vec<_>>());
        let violations: Vec<(i64, String)> = r["violations"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["stepIndex"].as_i64().unwrap(),
                    v["action"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            violations,
            vec![(3, "WARN".to_string()), (8, "BLOCK".to_string())]
        );
        let verified = app
            .gql_ok(
                "query($id: ID!) { verifyRun(id: $id) { intact reproduced stepsChecked headHash } }",
                json!({ "id": run }),
            )
            .await;
        assert_eq!(verified["verifyRun"]["intact"], true, "{verified}");
        assert_eq!(verified["verifyRun"]["reproduced"], true, "{verified}");
        assert_eq!(verified["verifyRun"]["stepsChecked"], 9);
        assert_eq!(verified["verifyRun"]["headHash"], r["trace"]["headHash"]);
    }
}

#[tokio::test]
async fn a_failure_to_record_answers_stop_never_continue() {
    let app = spawn_app().await;
    let run = app.start_run("wf-fail-closed").await;
    assert_eq!(
        app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
            .await["action"],
        "CONTINUE"
    );
    // The next commit fails, as a full disk or a dropped connection would make it.
    app.store.fail_next_commits(1);
    let d = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    assert_eq!(d["action"], "STOP");
    assert_eq!(d["recorded"], false);
    assert_eq!(d["terminationReason"], "SYSTEM_FAILURE");
    // The halt itself was recorded: the run is stopped and refuses further steps.
    assert_eq!(d["run"]["status"], "FAILED");
    assert_eq!(d["run"]["terminationReason"], "SYSTEM_FAILURE");
    assert_eq!(
        d["run"]["stepCount"], 1,
        "the unrecorded step is not in the trace"
    );
    let late = app
        .record_step(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    assert_eq!(late.error_code().as_deref(), Some("RUN_TERMINATED"));
}

#[tokio::test]
async fn silent_runs_past_their_duration_limit_are_stopped() {
    let app = spawn_app().await;
    app.create_policy(json!({
        "name": "One second", "kind": "DURATION_LIMIT", "rule": { "maxSeconds": 1 },
        "action": "BLOCK", "severity": "MEDIUM", "workflowId": "wf-silent",
    }))
    .await;
    let run = app.start_run("wf-silent").await;
    let data = app
        .poll_until(RUN, json!({ "id": run }), Duration::from_secs(30), |d| {
            d["run"]["status"] == "FAILED_POLICY"
        })
        .await;
    let r = &data["run"];
    assert_eq!(r["terminationReason"], "TIMEOUT");
    assert_eq!(r["trace"]["inflection"]["stepIndex"], 0);
    assert_eq!(r["trace"]["steps"]["nodes"][0]["decision"], "STOP");
    assert_eq!(r["incident"]["status"], "OPEN");
    let v = app
        .gql_ok(
            "query($id: ID!) { verifyRun(id: $id) { intact reproduced mismatches { kind } } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(v["verifyRun"]["intact"], true, "{v}");
    assert_eq!(v["verifyRun"]["reproduced"], true, "{v}");
}

/// Another tenant's 500 older runs, running and quiet under a one-hour limit, do not keep the
/// sweeper from a later run whose one-second limit has passed (the sweep used to read only the
/// 500 oldest running runs, whichever tenant's, and never looked past them).
#[tokio::test]
async fn a_silent_run_is_stopped_however_many_older_runs_of_another_tenant_are_running() {
    use futures::StreamExt;
    let app = spawn_app().await;
    let other = app.other_tenant("busy").await;
    let as_other = |query: &'static str, variables: Value| {
        let other = other.clone();
        let app = &app;
        async move {
            let r = app.gql_auth(Some(&other), query, variables).await;
            assert!(r.body["errors"].is_null(), "{}", r.body);
            r.body["data"].clone()
        }
    };
    as_other(
        "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id } }",
        json!({ "input": {
            "name": "One hour", "kind": "DURATION_LIMIT", "rule": { "maxSeconds": 3600 },
            "action": "BLOCK", "severity": "LOW",
        } }),
    )
    .await;
    let started: Vec<Value> = futures::stream::iter(0..500)
        .map(|_| {
            as_other(
                "mutation { startRun(input: { workflowId: \"wf-busy\" }) { status } }",
                json!({}),
            )
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(started.iter().all(|d| d["startRun"]["status"] == "RUNNING"));

    app.create_policy(json!({
        "name": "One second", "kind": "DURATION_LIMIT", "rule": { "maxSeconds": 1 },
        "action": "BLOCK", "severity": "MEDIUM", "workflowId": "wf-quiet",
    }))
    .await;
    let run = app.start_run("wf-quiet").await;
    let data = app
        .poll_until(RUN, json!({ "id": run }), Duration::from_secs(30), |d| {
            d["run"]["status"] == "FAILED_POLICY"
        })
        .await;
    assert_eq!(data["run"]["terminationReason"], "TIMEOUT");
    assert_eq!(data["run"]["trace"]["inflection"]["stepIndex"], 0);

    // The other tenant's runs were not stopped, and no step was recorded for them.
    let theirs = as_other(
        "{ runs(filter: { status: RUNNING }, first: 1) { totalCount } \
           failed: runs(filter: { status: FAILED_POLICY }, first: 1) { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(theirs["runs"]["totalCount"], 500, "{theirs}");
    assert_eq!(theirs["failed"]["totalCount"], 0, "{theirs}");
}

/// Only an enforcing BLOCK duration limit ends a silent run. A SHADOW one is for the run's next
/// step: the sweeper records nothing for the run (it used to record a step for it on every sweep
/// once its time was up, each answered CONTINUE).
#[tokio::test]
async fn a_shadow_duration_limit_leaves_a_silent_run_alone() {
    let app = spawn_app().await;
    app.create_policy(json!({
        "name": "Shadow second", "kind": "DURATION_LIMIT", "rule": { "maxSeconds": 1 },
        "action": "BLOCK", "severity": "MEDIUM", "workflowId": "wf-shadow", "mode": "SHADOW",
    }))
    .await;
    let shadowed = app.start_run("wf-shadow").await;
    // A run started after it, with an enforcing limit, is stopped by a sweep that also saw the
    // shadowed run past its second.
    app.create_policy(json!({
        "name": "Enforced second", "kind": "DURATION_LIMIT", "rule": { "maxSeconds": 1 },
        "action": "BLOCK", "severity": "MEDIUM", "workflowId": "wf-enforced",
    }))
    .await;
    let enforced = app.start_run("wf-enforced").await;
    app.poll_until(
        RUN,
        json!({ "id": enforced }),
        Duration::from_secs(30),
        |d| d["run"]["status"] == "FAILED_POLICY",
    )
    .await;
    let data = app.gql_ok(RUN, json!({ "id": shadowed })).await;
    assert_eq!(data["run"]["status"], "RUNNING", "{data}");
    assert_eq!(data["run"]["stepCount"], 0, "{data}");
}

#[tokio::test]
async fn bad_rules_are_refused_with_the_field_and_nothing_is_written() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({ "kind": "TOKEN_BUDGET", "rule": { "maxTokens": -1 } }),
            "input.rule.maxTokens",
        ),
        (
            json!({ "kind": "TOKEN_BUDGET", "rule": {} }),
            "input.rule.maxTokens",
        ),
        (
            json!({ "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 5, "extra": 1 } }),
            "input.rule.extra",
        ),
        (
            json!({ "kind": "CONTENT_RULE", "rule": { "patterns": ["ok", "(unclosed"] } }),
            "input.rule.patterns[1]",
        ),
        (
            json!({ "kind": "TOOL_ALLOWLIST", "rule": { "tools": [] } }),
            "input.rule.tools",
        ),
        (
            json!({ "kind": "EXPRESSION", "rule": { "expression": "step.tokens >" } }),
            "input.rule.expression",
        ),
        (
            json!({ "kind": "EXPRESSION", "rule": { "expression": "secrets.count > 1" } }),
            "input.rule.expression",
        ),
        (
            json!({ "kind": "RATE_LIMIT", "rule": { "maxSteps": 5 } }),
            "input.rule.windowSeconds",
        ),
    ];
    for (partial, field) in cases {
        let mut input = partial.clone();
        input["name"] = json!("bad");
        input["action"] = json!("BLOCK");
        input["severity"] = json!("LOW");
        let r = app
            .gql(
                "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id } }",
                json!({ "input": input }),
            )
            .await;
        assert_eq!(
            r.error_code().as_deref(),
            Some("BAD_USER_INPUT"),
            "{partial}: {}",
            r.body
        );
        assert_eq!(
            r.body["errors"][0]["extensions"]["field"], field,
            "{partial}: {}",
            r.body
        );
    }
    let count = app.gql_ok("{ policies { totalCount } }", json!({})).await;
    assert_eq!(count["policies"]["totalCount"], 0);
}

#[tokio::test]
async fn runs_keep_their_snapshot_while_policies_change_and_versions_are_counted() {
    let app = spawn_app().await;
    let id = app
        .create_policy(json!({
            "name": "Budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 100 }, "action": "BLOCK", "severity": "HIGH",
        }))
        .await;
    let old_run = app.start_run("wf-snap").await;
    let first = app.gql_ok(RUN, json!({ "id": old_run })).await;
    assert_eq!(first["run"]["policyVersion"], "0.1.0");

    // A threshold change: PATCH; the running run keeps the old threshold.
    app.gql_ok(
        "mutation($id: ID!) { updatePolicy(id: $id, input: { rule: { maxTokens: 1000 } }) { version } }",
        json!({ "id": id }),
    )
    .await;
    let d = app
        .step_ok(&old_run, json!({ "type": "LLM_CALL", "tokens": 150 }))
        .await;
    assert_eq!(
        d["action"], "STOP",
        "checked against its own snapshot, not the live policy"
    );
    let new_run = app.start_run("wf-snap").await;
    let second = app.gql_ok(RUN, json!({ "id": new_run })).await;
    assert_eq!(second["run"]["policyVersion"], "0.1.1");
    assert_ne!(
        second["run"]["policySnapshotId"],
        first["run"]["policySnapshotId"]
    );
    assert_eq!(
        app.step_ok(&new_run, json!({ "type": "LLM_CALL", "tokens": 150 }))
            .await["action"],
        "CONTINUE"
    );

    // A kind change: MAJOR. Disabling: MINOR. History keeps every version.
    app.gql_ok(
        "mutation($id: ID!) { updatePolicy(id: $id, input: { kind: STEP_LIMIT, rule: { maxSteps: 3 } }) { version } }",
        json!({ "id": id }),
    )
    .await;
    let p = app
        .gql_ok(
            "mutation($id: ID!) { setPolicyEnabled(id: $id, enabled: false) { version enabled history { nodes { version policySetVersion rule enabled } } } }",
            json!({ "id": id }),
        )
        .await;
    let history = p["setPolicyEnabled"]["history"]["nodes"]
        .as_array()
        .unwrap();
    let versions: Vec<&str> = history
        .iter()
        .map(|h| h["policySetVersion"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.1.0", "1.0.0", "0.1.1", "0.1.0"]);
    assert_eq!(history[3]["rule"]["maxTokens"], 100);
    assert_eq!(p["setPolicyEnabled"]["version"], 4);
}

#[tokio::test]
async fn verify_run_detects_a_row_altered_behind_the_services_back() {
    let app = spawn_app().await;
    app.create_policy(json!({
        "name": "Budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 1000 }, "action": "BLOCK", "severity": "HIGH",
    }))
    .await;
    let run = app.start_run("wf-verify").await;
    for tokens in [100, 200, 300] {
        app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": tokens }))
            .await;
    }
    let query = "query($id: ID!) { verifyRun(id: $id) { intact reproduced headHash stepsChecked mismatches { stepIndex kind expected found } } }";
    let clean = app.gql_ok(query, json!({ "id": run })).await;
    assert_eq!(clean["verifyRun"]["intact"], true, "{clean}");
    assert_eq!(clean["verifyRun"]["reproduced"], true, "{clean}");
    assert_eq!(clean["verifyRun"]["stepsChecked"], 3);

    // Someone with database access lowers step 1's tokens (after removing the guard).
    let drop = if postgres_admin_url().is_some() {
        "DROP TRIGGER trace_steps_append_only ON trace_steps"
    } else {
        "DROP TRIGGER trace_steps_no_update"
    };
    use sea_orm::ConnectionTrait;
    app.db.execute_unprepared(drop).await.unwrap();
    app.db
        .execute_unprepared(&format!(
            "UPDATE trace_steps SET tokens = 1 WHERE run_id = '{run}' AND step_index = 1"
        ))
        .await
        .unwrap();
    let tampered = app.gql_ok(query, json!({ "id": run })).await;
    let v = &tampered["verifyRun"];
    assert_eq!(v["intact"], false, "{tampered}");
    let mismatches = v["mismatches"].as_array().unwrap();
    assert!(
        mismatches
            .iter()
            .any(|m| m["stepIndex"] == 1 && m["kind"] == "ENTRY_HASH"),
        "step 1 is named: {tampered}"
    );
    assert!(
        mismatches
            .iter()
            .all(|m| m["stepIndex"] != 0 && m["stepIndex"] != 2 || m["kind"] == "RUN_TOTALS")
    );
}

#[tokio::test]
async fn evaluation_records_say_advisory_and_no_violation() {
    let app: TestApp = spawn_app().await;
    app.create_policy(json!({
        "name": "Soft", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 10 }, "action": "WARN", "severity": "LOW", "workflowId": "wf-adv",
    }))
    .await;
    app.create_policy(json!({
        "name": "Hard", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 10000 }, "action": "BLOCK", "severity": "LOW", "workflowId": "wf-clean",
    }))
    .await;
    for (workflow, outcome, draft) in [
        ("wf-adv", "ADVISORY", true),
        ("wf-clean", "NO_VIOLATION", false),
    ] {
        let run = app.start_run(workflow).await;
        app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 50 }))
            .await;
        app.gql_ok(
            "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
            json!({ "id": run }),
        )
        .await;
        let data = app
            .poll_until(RUN, json!({ "id": run }), Duration::from_secs(30), |d| {
                !d["run"]["evaluation"].is_null()
            })
            .await;
        assert_eq!(data["run"]["evaluation"]["outcome"], outcome);
        assert_eq!(data["run"]["evaluation"]["draftCandidate"], draft);
        assert_eq!(data["run"]["evaluation"]["policiesChecked"], 1);
    }
}

#[tokio::test]
async fn cancelled_runs_end_with_user_abort_and_the_evaluation_job_writes_once() {
    let app = spawn_app().await;
    let run = app.start_run("wf-cancel").await;
    app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 3 }))
        .await;
    let data = app
        .gql_ok(
            "mutation($id: ID!) { cancelRun(id: $id, reason: \"operator stopped it\") { status terminationReason error completedAt } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(data["cancelRun"]["status"], "CANCELLED");
    assert_eq!(data["cancelRun"]["terminationReason"], "USER_ABORT");
    assert_eq!(data["cancelRun"]["error"], "operator stopped it");
    // Completing a cancelled run is refused; cancelling again is harmless.
    let again = app
        .gql(
            "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(again.error_code().as_deref(), Some("RUN_TERMINATED"));
    let late = app
        .record_step(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    assert_eq!(late.error_code().as_deref(), Some("RUN_TERMINATED"));

    let data = app
        .poll_until(RUN, json!({ "id": run }), Duration::from_secs(30), |d| {
            !d["run"]["evaluation"].is_null()
        })
        .await;
    assert_eq!(data["run"]["evaluation"]["outcome"], "NOT_APPLICABLE");

    // The job's handler run again (a retry, a duplicate delivery) writes nothing more.
    let job = governance_workers::jobs::RecordEvaluation {
        tenant_id: governance_core::runs::get(&app.db, &tenant_of(&app).await, &run)
            .await
            .unwrap()
            .tenant_id,
        run_id: run.clone(),
    };
    for _ in 0..2 {
        let outcome = governance_workers::jobs::record_evaluation(&job, &app.store)
            .await
            .unwrap();
        assert_eq!(outcome, governance_workers::jobs::Outcome::AlreadyDone);
    }
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let rows = governance_entities::policy_evaluation::Entity::find()
        .filter(governance_entities::policy_evaluation::Column::RunId.eq(run.as_str()))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

async fn tenant_of(app: &TestApp) -> String {
    let me = app.gql_ok("{ me { tenant { id } } }", json!({})).await;
    me["me"]["tenant"]["id"].as_str().unwrap().to_string()
}

/// Runs started at the same moment after a policy change all get the one new snapshot: on
/// PostgreSQL their transactions race to store it, and the ones that lose must still start.
/// (Three policy changes, 32 runs started at once after each, to give the race its chances.)
#[tokio::test]
async fn runs_started_at_once_after_a_policy_change_share_one_snapshot() {
    let app = spawn_app().await;
    for round in 1..=3 {
        app.create_policy(json!({
            "name": format!("Race budget {round}"), "kind": "TOKEN_BUDGET",
            "rule": { "maxTokens": 1000 * round }, "action": "BLOCK", "severity": "HIGH",
        }))
        .await;
        let starts = (0..32).map(|_| {
            app.gql(
                "mutation($input: StartRunInput!) { startRun(input: $input) { id status policySnapshot { id policyCount } } }",
                json!({ "input": { "workflowId": "wf-race" } }),
            )
        });
        let responses = futures::future::join_all(starts).await;
        let mut snapshots = std::collections::HashSet::new();
        for response in &responses {
            assert!(
                response.body["errors"].is_null(),
                "a concurrent startRun failed: {}",
                response.body
            );
            let run = &response.data()["startRun"];
            assert_eq!(run["status"], "RUNNING");
            assert_eq!(run["policySnapshot"]["policyCount"], round);
            snapshots.insert(run["policySnapshot"]["id"].as_str().unwrap().to_string());
        }
        assert_eq!(snapshots.len(), 1, "one snapshot for one policy set");
    }
}
