//! Simulations: recorded runs replayed against a proposed policy set, on a known data set (a
//! run newly stopped, one no longer stopped, one stopped at another step, a new content rule
//! that cannot be judged on past steps), identical when run twice; and the gate that makes
//! enabling or tightening a BLOCK policy cite a completed simulation of exactly that change.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, WsEvent, spawn_app};

const SIMULATE: &str = "mutation($input: SimulationInput!) { simulatePolicies(input: $input) {
    id status proposedSnapshotHash } }";
const SIMULATION: &str = "query($id: ID!) { simulation(id: $id) { id status progress error
    proposedSnapshotHash runsSelected runsReplayed newlyStopped noLongerStopped stopMoved loosens resultHash
    policies { key proposed enabled }
    runs(first: 50) { totalCount nodes { run { id workflowId } effect recordedOutcome simulatedOutcome
        divergesAtStep recordedStopStep simulatedStopStep recordedTerminationReason
        simulatedTerminationReason recordedDecidingPolicyId stepsReplayed
        decidingPolicy { key proposed name policy { id } }
        notReplayable { key proposed kind } } } } }";

/// Request a simulation and wait for it to finish; returns `simulation`.
async fn simulate(app: &TestApp, input: Value) -> Value {
    let requested = app.gql_ok(SIMULATE, json!({ "input": input })).await;
    let id = requested["simulatePolicies"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("sim_"), "{requested}");
    finished(app, &id).await
}

async fn finished(app: &TestApp, id: &str) -> Value {
    let data = app
        .poll_until(
            SIMULATION,
            json!({ "id": id }),
            Duration::from_secs(60),
            |d| {
                matches!(
                    d["simulation"]["status"].as_str(),
                    Some("COMPLETED" | "FAILED")
                )
            },
        )
        .await;
    data["simulation"].clone()
}

async fn create(app: &TestApp, input: Value) -> String {
    app.create_policy(input).await
}

/// Steps of `tokens` each on a new run of `workflow`; `extra` is merged into every step.
async fn run_with(app: &TestApp, workflow: &str, steps: &[(i64, Value)]) -> (String, Vec<String>) {
    let run = app.start_run(workflow).await;
    let mut actions = Vec::new();
    for (tokens, extra) in steps {
        let mut input = json!({ "type": "LLM_CALL", "tokens": tokens });
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                input[k] = v.clone();
            }
        }
        let decision = app.step_ok(&run, input).await;
        actions.push(decision["action"].as_str().unwrap().to_string());
    }
    (run, actions)
}

fn by_run<'a>(sim: &'a Value, run: &str) -> &'a Value {
    sim["runs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["run"]["id"] == run)
        .unwrap_or_else(|| panic!("run {run} not in {sim}"))
}

#[tokio::test]
async fn a_simulation_reports_each_run_and_is_the_same_when_run_twice() {
    let app = spawn_app().await;
    let budget = create(
        &app,
        json!({ "name": "Budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 100 },
                "action": "BLOCK", "severity": "HIGH" }),
    )
    .await;
    let tools = create(
        &app,
        json!({ "name": "Tools", "kind": "TOOL_ALLOWLIST", "rule": { "tools": ["search"] },
                "action": "BLOCK", "severity": "HIGH" }),
    )
    .await;
    let secrets = create(
        &app,
        json!({ "name": "Secrets", "kind": "CONTENT_RULE", "rule": { "patterns": ["secret-[0-9]+"] },
                "action": "WARN", "severity": "LOW" }),
    )
    .await;

    let none = json!({});
    // Under budget throughout: the tighter budget would stop it at step 1.
    let (newly, actions) = run_with(
        &app,
        "wf-sim",
        &[(30, none.clone()), (30, none.clone()), (30, none.clone())],
    )
    .await;
    assert_eq!(actions, ["CONTINUE", "CONTINUE", "CONTINUE"]);
    // Stopped at step 2 by the budget: the tighter one stops it at step 1.
    let (moved, actions) = run_with(
        &app,
        "wf-sim",
        &[(40, none.clone()), (40, none.clone()), (40, none.clone())],
    )
    .await;
    assert_eq!(actions, ["CONTINUE", "CONTINUE", "STOP"]);
    // Stopped by the tool allowlist, which the proposal removes.
    let (loosened, actions) = run_with(
        &app,
        "wf-sim",
        &[(10, json!({ "type": "TOOL_CALL", "toolName": "shell" }))],
    )
    .await;
    assert_eq!(actions, ["STOP"]);
    // Warned by the unchanged content rule: replayed from what it matched when recorded.
    let (warned, actions) = run_with(
        &app,
        "wf-sim",
        &[(10, json!({ "content": "key secret-123" }))],
    )
    .await;
    assert_eq!(actions, ["WARN"]);
    // Another workflow: left out by the run filter.
    let (other, _) = run_with(&app, "wf-other", &[(30, none.clone()), (30, none.clone())]).await;
    for run in [&newly, &warned, &other] {
        app.gql_ok(
            "mutation($r: ID!) { completeRun(id: $r, status: SUCCEEDED) { status } }",
            json!({ "r": run }),
        )
        .await;
    }

    let input = json!({
        "changes": [
            { "update": { "id": budget, "input": { "rule": { "maxTokens": 50 } } } },
            { "remove": tools },
            { "create": { "name": "Passwords", "kind": "CONTENT_RULE",
                          "rule": { "patterns": ["password"] }, "action": "BLOCK", "severity": "CRITICAL" } },
        ],
        "runs": { "workflowId": "wf-sim" },
        "limit": 10,
    });
    let first = simulate(&app, input.clone()).await;
    assert_eq!(first["status"], "COMPLETED", "{first}");
    assert_eq!(first["progress"], 100);
    assert_eq!(first["runsSelected"], 4);
    assert_eq!(first["runsReplayed"], 4);
    assert_eq!(first["newlyStopped"], 1, "{first}");
    assert_eq!(first["noLongerStopped"], 1, "{first}");
    assert_eq!(first["stopMoved"], 1, "{first}");
    assert_eq!(first["loosens"], true);
    assert_eq!(first["runs"]["totalCount"], 4);
    let proposed: Vec<(&str, &str)> = first["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap(), p["proposed"].as_str().unwrap()))
        .collect();
    assert!(
        proposed.contains(&(budget.as_str(), "UPDATED")),
        "{proposed:?}"
    );
    assert!(
        proposed.contains(&(tools.as_str(), "REMOVED")),
        "{proposed:?}"
    );
    assert!(
        proposed.contains(&(secrets.as_str(), "UNCHANGED")),
        "{proposed:?}"
    );
    assert!(proposed.contains(&("new:2", "CREATED")), "{proposed:?}");

    let run = by_run(&first, &newly);
    assert_eq!(run["effect"], "NEWLY_STOPPED", "{run}");
    assert_eq!(run["recordedOutcome"], "CONTINUE");
    assert_eq!(run["simulatedOutcome"], "STOP");
    assert_eq!(run["divergesAtStep"], 1);
    assert_eq!(run["recordedStopStep"], Value::Null);
    assert_eq!(run["simulatedStopStep"], 1);
    assert_eq!(run["simulatedTerminationReason"], "BUDGET_EXCEEDED");
    assert_eq!(run["decidingPolicy"]["key"], budget.as_str());
    assert_eq!(run["decidingPolicy"]["proposed"], "UPDATED");
    assert_eq!(run["decidingPolicy"]["policy"]["id"], budget.as_str());
    assert_eq!(
        run["stepsReplayed"], 2,
        "the replay ends at the simulated stop"
    );

    let run = by_run(&first, &moved);
    assert_eq!(run["effect"], "STOP_MOVED", "{run}");
    assert_eq!(run["recordedStopStep"], 2);
    assert_eq!(run["simulatedStopStep"], 1);
    assert_eq!(run["divergesAtStep"], 1);
    assert_eq!(run["recordedTerminationReason"], "BUDGET_EXCEEDED");
    assert_eq!(run["recordedDecidingPolicyId"], budget.as_str());

    let run = by_run(&first, &loosened);
    assert_eq!(run["effect"], "NO_LONGER_STOPPED", "{run}");
    assert_eq!(run["recordedOutcome"], "STOP");
    assert_eq!(run["recordedStopStep"], 0);
    assert_eq!(run["recordedTerminationReason"], "POLICY_BLOCK");
    assert_eq!(run["recordedDecidingPolicyId"], tools.as_str());
    assert_eq!(run["simulatedOutcome"], "CONTINUE");
    assert_eq!(run["simulatedStopStep"], Value::Null);
    assert_eq!(run["divergesAtStep"], 0);

    let run = by_run(&first, &warned);
    assert_eq!(run["effect"], "UNCHANGED", "{run}");
    assert_eq!(run["recordedOutcome"], "WARN");
    assert_eq!(run["simulatedOutcome"], "WARN");
    assert_eq!(run["decidingPolicy"]["key"], secrets.as_str());
    assert_eq!(run["divergesAtStep"], Value::Null);

    // The new content rule cannot be judged on any past step: said so on every run, never
    // guessed; the unchanged one is replayed from its recorded matches.
    for node in first["runs"]["nodes"].as_array().unwrap() {
        assert_eq!(
            node["notReplayable"],
            json!([{ "key": "new:2", "proposed": "CREATED", "kind": "CONTENT_RULE" }]),
            "{node}"
        );
    }

    // The same inputs, the same result; followed this time by subscription.
    let requested = app.gql_ok(SIMULATE, json!({ "input": input })).await;
    let id = requested["simulatePolicies"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        requested["simulatePolicies"]["proposedSnapshotHash"],
        first["proposedSnapshotHash"]
    );
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe(
        "1",
        "subscription($id: ID!) { simulationUpdates(id: $id) { status progress resultHash simulation { id } } }",
        json!({ "id": id }),
    )
    .await;
    let mut seen = Vec::new();
    loop {
        match ws.next(Duration::from_secs(60)).await {
            WsEvent::Json(v) if v["type"] == "next" => {
                seen.push(v["payload"]["data"]["simulationUpdates"].clone())
            }
            WsEvent::Json(v) if v["type"] == "complete" => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let last = seen.last().unwrap();
    assert_eq!(last["status"], "COMPLETED", "{seen:?}");
    assert_eq!(last["progress"], 100);
    assert_eq!(last["simulation"]["id"], id.as_str());
    let second = finished(&app, &id).await;
    assert_ne!(second["id"], first["id"]);
    assert_eq!(second["resultHash"], first["resultHash"]);
    assert!(first["resultHash"].as_str().is_some_and(|h| h.len() == 64));
    assert_eq!(second["runs"], first["runs"]);
    assert_eq!(last["resultHash"], first["resultHash"]);

    // A completed result is immutable, even to the database's administrator.
    use sea_orm::ConnectionTrait;
    for sql in [
        format!("UPDATE simulations SET newly_stopped = 0 WHERE id = '{id}'"),
        format!("DELETE FROM simulations WHERE id = '{id}'"),
    ] {
        let refused = app.db.execute_unprepared(&sql).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("immutable once completed")),
            "{sql}: {refused:?}"
        );
    }

    // Listed, newest first.
    let listed = app
        .gql_ok(
            "{ simulations(first: 5) { totalCount nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["simulations"]["totalCount"], 2);
    assert_eq!(listed["simulations"]["nodes"][0]["id"], id.as_str());
}

#[tokio::test]
async fn a_simulation_refuses_bad_input_and_writes_nothing() {
    let app = spawn_app().await;
    let bad = app
        .gql(
            SIMULATE,
            json!({ "input": { "changes": [{ "create": { "name": "x", "kind": "TOKEN_BUDGET",
                "rule": { "maxTokens": -1 }, "action": "BLOCK", "severity": "LOW" } }] } }),
        )
        .await;
    assert_eq!(
        bad.error_code().as_deref(),
        Some("BAD_USER_INPUT"),
        "{}",
        bad.body
    );
    assert_eq!(
        bad.body["errors"][0]["extensions"]["field"], "input.changes[0].create.rule.maxTokens",
        "{}",
        bad.body
    );
    let too_many = app
        .gql(SIMULATE, json!({ "input": { "limit": 100000 } }))
        .await;
    assert_eq!(too_many.error_code().as_deref(), Some("BAD_USER_INPUT"));
    let both = app
        .gql(
            SIMULATE,
            json!({ "input": { "snapshotId": "SNAP-000000000000", "changes": [] } }),
        )
        .await;
    assert_eq!(both.error_code().as_deref(), Some("BAD_USER_INPUT"));
    let unknown = app
        .gql(
            SIMULATE,
            json!({ "input": { "snapshotId": "SNAP-000000000000" } }),
        )
        .await;
    assert_eq!(unknown.error_code().as_deref(), Some("NOT_FOUND"));
    let listed = app
        .gql_ok("{ simulations(first: 5) { totalCount } }", json!({}))
        .await;
    assert_eq!(listed["simulations"]["totalCount"], 0);
}

/// A run's own snapshot, simulated, reproduces every recorded decision.
#[tokio::test]
async fn a_runs_own_snapshot_changes_nothing() {
    let app = spawn_app().await;
    create(
        &app,
        json!({ "name": "Budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 50 },
                "action": "BLOCK", "severity": "HIGH" }),
    )
    .await;
    let (run, actions) = run_with(&app, "wf-own", &[(30, json!({})), (30, json!({}))]).await;
    assert_eq!(actions, ["CONTINUE", "STOP"]);
    let snapshot = app
        .gql_ok(
            "query($r: ID!) { run(id: $r) { policySnapshot { id } } }",
            json!({ "r": run }),
        )
        .await["run"]["policySnapshot"]["id"]
        .clone();
    let sim = simulate(&app, json!({ "snapshotId": snapshot })).await;
    assert_eq!(sim["status"], "COMPLETED", "{sim}");
    assert_eq!(sim["runsReplayed"], 1);
    let node = by_run(&sim, &run);
    assert_eq!(node["effect"], "UNCHANGED", "{node}");
    assert_eq!(node["simulatedStopStep"], 1);
    assert_eq!(node["notReplayable"], json!([]));
}

const GATED: &str =
    "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id version } }";

#[tokio::test]
async fn the_gate_refuses_an_unsimulated_block_policy_and_accepts_a_simulated_one() {
    let app = spawn_app().await;
    let set = app
        .gql_ok(
            "mutation { setRequireSimulation(required: true) { requireSimulation } }",
            json!({}),
        )
        .await;
    assert_eq!(set["setRequireSimulation"]["requireSimulation"], true);
    let me = app
        .gql_ok("{ me { tenant { requireSimulation } } }", json!({}))
        .await;
    assert_eq!(me["me"]["tenant"]["requireSimulation"], true);

    let budget = json!({ "name": "Budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 100 },
                         "action": "BLOCK", "severity": "HIGH" });
    // Not simulated: refused, saying what to run; nothing written.
    let refused = app.gql(GATED, json!({ "input": budget })).await;
    assert_eq!(
        refused.error_code().as_deref(),
        Some("CONFLICT"),
        "{}",
        refused.body
    );
    assert!(
        refused.error_message().contains("simulatePolicies")
            && refused.error_message().contains("simulationId"),
        "{}",
        refused.body
    );
    let count = "{ policies(first: 10) { totalCount } }";
    assert_eq!(
        app.gql_ok(count, json!({})).await["policies"]["totalCount"],
        0
    );
    // A WARN policy does not stop runs: not gated.
    app.create_policy(json!({ "name": "Heads-up", "kind": "TOKEN_BUDGET",
        "rule": { "maxTokens": 10 }, "action": "WARN", "severity": "LOW" }))
        .await;

    // A simulation of another set does not count.
    let other = simulate(
        &app,
        json!({ "changes": [{ "create": { "name": "Budget", "kind": "TOKEN_BUDGET",
            "rule": { "maxTokens": 99 }, "action": "BLOCK", "severity": "HIGH" } }] }),
    )
    .await;
    let mut citing = budget.clone();
    citing["simulationId"] = other["id"].clone();
    let refused = app.gql(GATED, json!({ "input": citing })).await;
    assert_eq!(
        refused.error_code().as_deref(),
        Some("CONFLICT"),
        "{}",
        refused.body
    );

    // The simulation of exactly this creation: accepted.
    let sim = simulate(&app, json!({ "changes": [{ "create": budget }] })).await;
    assert_eq!(sim["status"], "COMPLETED", "{sim}");
    citing["simulationId"] = sim["id"].clone();
    let created = app.gql_ok(GATED, json!({ "input": citing })).await;
    let id = created["createPolicy"]["id"].as_str().unwrap().to_string();

    // Loosening passes; tightening needs its own simulation.
    let update = "mutation($id: ID!, $input: UpdatePolicyInput!) { updatePolicy(id: $id, input: $input) { version } }";
    app.gql_ok(
        update,
        json!({ "id": id, "input": { "rule": { "maxTokens": 200 } } }),
    )
    .await;
    let tighter = json!({ "rule": { "maxTokens": 150 } });
    let refused = app
        .gql(update, json!({ "id": id, "input": tighter.clone() }))
        .await;
    assert_eq!(
        refused.error_code().as_deref(),
        Some("CONFLICT"),
        "{}",
        refused.body
    );
    let stale = app
        .gql(
            update,
            json!({ "id": id, "input": { "rule": { "maxTokens": 150 }, "simulationId": sim["id"] } }),
        )
        .await;
    assert_eq!(
        stale.error_code().as_deref(),
        Some("CONFLICT"),
        "{}",
        stale.body
    );
    let sim = simulate(
        &app,
        json!({ "changes": [{ "update": { "id": id, "input": tighter } }] }),
    )
    .await;
    let updated = app
        .gql_ok(
            update,
            json!({ "id": id, "input": { "rule": { "maxTokens": 150 }, "simulationId": sim["id"] } }),
        )
        .await;
    assert_eq!(updated["updatePolicy"]["version"], 3);

    // Disabling passes; enabling again is gated like a creation.
    let enable = "mutation($id: ID!, $on: Boolean!, $sim: ID) { setPolicyEnabled(id: $id, enabled: $on, simulationId: $sim) { enabled } }";
    app.gql_ok(enable, json!({ "id": id, "on": false })).await;
    let refused = app.gql(enable, json!({ "id": id, "on": true })).await;
    assert_eq!(
        refused.error_code().as_deref(),
        Some("CONFLICT"),
        "{}",
        refused.body
    );
    let sim = simulate(
        &app,
        json!({ "changes": [{ "update": { "id": id, "input": { "enabled": true } } }] }),
    )
    .await;
    let enabled = app
        .gql_ok(enable, json!({ "id": id, "on": true, "sim": sim["id"] }))
        .await;
    assert_eq!(enabled["setPolicyEnabled"]["enabled"], true);

    // Without the setting, nothing is gated.
    app.gql_ok(
        "mutation { setRequireSimulation(required: false) { requireSimulation } }",
        json!({}),
    )
    .await;
    app.gql_ok(
        update,
        json!({ "id": id, "input": { "rule": { "maxTokens": 10 } } }),
    )
    .await;
}
