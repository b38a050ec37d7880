//! Shadow policies: evaluated on every step and recorded with the decision (in the hash chain),
//! never enforced; what they would have done is listed and counted; moving one to ENFORCE is a
//! new version that then stops runs.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const POLICY: &str = "query($id: ID!) { policy(id: $id) { mode version
    shadowFindings(first: 10) { totalCount nodes { run { id } stepIndex wouldStop reason observedValue threshold timestamp policyVersion } }
    shadowStats30d { runsWouldStop runsWouldWarn findings }
    violations(first: 5) { totalCount } history(first: 5) { nodes { version mode } } } }";
const RUN: &str =
    "query($id: ID!) { run(id: $id) { status incident { id } violations(first: 5) { totalCount }
    trace { steps(first: 10) { nodes { stepIndex timestamp decision } } } } }";
const VERIFY: &str =
    "query($id: ID!) { verifyRun(id: $id) { intact reproduced mismatches { kind stepIndex } } }";
const EXPLAIN: &str = "query($id: ID!, $at: DateTime!) { run(id: $id) { explain(at: $at) {
    decision { action findings shadowFindings stepIndex } } } }";

async fn shadow_policy(app: &TestApp, input: Value) -> String {
    let data = app
        .gql_ok(
            "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id mode } }",
            json!({ "input": input }),
        )
        .await;
    assert_eq!(data["createPolicy"]["mode"], input["mode"]);
    data["createPolicy"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_shadow_policy_records_what_it_would_do_and_never_enforces_it() {
    let app = spawn_app().await;
    let budget = shadow_policy(
        &app,
        json!({ "name": "Tight budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 10 },
                "action": "BLOCK", "severity": "HIGH", "mode": "SHADOW" }),
    )
    .await;
    let secrets = shadow_policy(
        &app,
        json!({ "name": "No keys", "kind": "CONTENT_RULE", "rule": { "patterns": ["sk-[a-z0-9]{8}"] },
                "action": "WARN", "severity": "LOW", "mode": "SHADOW" }),
    )
    .await;
    // An enforcing policy next to them still decides as before.
    app.create_policy(json!({
        "name": "Hard budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 1000 },
        "action": "BLOCK", "severity": "CRITICAL",
    }))
    .await;

    let run = app.start_run("wf-shadow").await;
    let first = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 8 }))
        .await;
    assert_eq!(first["action"], "CONTINUE", "{first}");
    // Over the shadow budget and matching the shadow pattern: still CONTINUE.
    let second = app
        .step_ok(
            &run,
            json!({ "type": "LLM_CALL", "tokens": 20, "content": "use sk-abcdefgh please" }),
        )
        .await;
    assert_eq!(second["action"], "CONTINUE", "{second}");
    let third = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 5 }))
        .await;
    assert_eq!(third["action"], "CONTINUE", "{third}");

    let r = app.gql_ok(RUN, json!({ "id": run })).await["run"].clone();
    assert_eq!(r["status"], "RUNNING", "{r}");
    assert!(r["incident"].is_null());
    assert_eq!(
        r["violations"]["totalCount"], 0,
        "shadow findings are not violations"
    );

    // The policy lists what it would have done, step by step, and counts it.
    let p = app.gql_ok(POLICY, json!({ "id": budget })).await["policy"].clone();
    assert_eq!(p["mode"], "SHADOW");
    assert_eq!(p["violations"]["totalCount"], 0);
    let findings = p["shadowFindings"]["nodes"].as_array().unwrap();
    assert_eq!(p["shadowFindings"]["totalCount"], 2, "{p}");
    // Newest first: steps 2 and 1 exceed the budget of 10 (28 and 33 tokens).
    assert_eq!(findings[0]["stepIndex"], 2);
    assert_eq!(findings[1]["stepIndex"], 1);
    assert_eq!(findings[1]["run"]["id"], run.as_str());
    assert_eq!(findings[1]["wouldStop"], true);
    assert_eq!(findings[1]["observedValue"], "28");
    assert!(
        findings[1]["threshold"].as_str().unwrap().contains("10"),
        "{}",
        findings[1]
    );
    assert!(
        findings[1]["reason"]
            .as_str()
            .unwrap()
            .contains("Tight budget")
    );
    assert_eq!(
        p["shadowStats30d"],
        json!({ "runsWouldStop": 1, "runsWouldWarn": 0, "findings": 2 })
    );
    let s = app.gql_ok(POLICY, json!({ "id": secrets })).await["policy"].clone();
    assert_eq!(
        s["shadowStats30d"],
        json!({ "runsWouldStop": 0, "runsWouldWarn": 1, "findings": 1 })
    );
    assert_eq!(s["shadowFindings"]["nodes"][0]["wouldStop"], false);

    // explain(at:) shows them next to the decision they took no part in.
    let steps = r["trace"]["steps"]["nodes"].as_array().unwrap();
    let at = steps[1]["timestamp"].as_str().unwrap();
    let explained = app.gql_ok(EXPLAIN, json!({ "id": run, "at": at })).await;
    let decision = &explained["run"]["explain"]["decision"];
    assert_eq!(decision["action"], "CONTINUE");
    assert_eq!(decision["stepIndex"], 1);
    assert_eq!(decision["findings"], json!([]));
    let shadow: Vec<&str> = decision["shadowFindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["policyId"].as_str().unwrap())
        .collect();
    let mut expected = vec![budget.as_str(), secrets.as_str()];
    expected.sort_unstable();
    assert_eq!(shadow, expected, "{decision}");

    // Recorded in the chain and reproduced by replay (the content verdict included).
    let verified = app.gql_ok(VERIFY, json!({ "id": run })).await;
    assert_eq!(
        verified["verifyRun"],
        json!({ "intact": true, "reproduced": true, "mismatches": [] }),
        "{verified}"
    );

    // To ENFORCE: a new version, and the next run is stopped by it.
    let moved = app
        .gql_ok(
            "mutation($id: ID!) { updatePolicy(id: $id, input: { mode: ENFORCE }) { mode version } }",
            json!({ "id": budget }),
        )
        .await;
    assert_eq!(
        moved["updatePolicy"],
        json!({ "mode": "ENFORCE", "version": 2 })
    );
    let history =
        app.gql_ok(POLICY, json!({ "id": budget })).await["policy"]["history"]["nodes"].clone();
    assert_eq!(
        history,
        json!([{ "version": 2, "mode": "ENFORCE" }, { "version": 1, "mode": "SHADOW" }])
    );
    let enforced = app.start_run("wf-shadow").await;
    let stop = app
        .step_ok(&enforced, json!({ "type": "LLM_CALL", "tokens": 20 }))
        .await;
    assert_eq!(stop["action"], "STOP", "{stop}");
    // The run under the old snapshot keeps its shadow policy: its snapshot does not change.
    let still = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    assert_eq!(still["action"], "CONTINUE", "{still}");
}
