//! The kill switch, driven as an operator would: halt one workflow's 50 running runs and not
//! the others', refuse new runs there until resumed, with every stopped run's records complete.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const HALT: &str = "mutation($scope: HaltScopeInput!, $reason: String!) {
    haltRuns(scope: $scope, reason: $reason) { id workflowId agent reason runsStopped active haltedBy } }";
const RESUME: &str = "mutation($id: ID!) { resumeRuns(id: $id) { id active resumedAt resumedBy } }";
const RUN: &str = "query($id: ID!) { run(id: $id) { status terminationReason error incident { id }
    enforcements(first: 10) { nodes { actionTaken details policyId } }
    evaluation { id } } }";
const START: &str =
    "mutation($w: String!, $a: String) { startRun(input: { workflowId: $w, agent: $a }) { id } }";

async fn start(app: &TestApp, workflow: &str, agent: Option<&str>) -> String {
    let data = app
        .gql_ok(START, json!({ "w": workflow, "a": agent }))
        .await;
    data["startRun"]["id"].as_str().unwrap().to_string()
}

async fn status(app: &TestApp, run: &str) -> Value {
    app.gql_ok(RUN, json!({ "id": run })).await["run"].clone()
}

#[tokio::test]
async fn a_halt_stops_one_workflows_runs_and_refuses_new_ones_until_resumed() {
    let app = spawn_app().await;
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe(
        "1",
        "subscription { haltEvents { cursor kind halt { id active runsStopped } } }",
        json!({}),
    )
    .await;

    let mut doomed = Vec::new();
    for _ in 0..50 {
        let run = start(&app, "wf-rogue", Some("bot")).await;
        app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 2 }))
            .await;
        doomed.push(run);
    }
    let bystanders = [
        start(&app, "wf-calm", Some("bot")).await,
        start(&app, "wf-calm", None).await,
    ];
    let ended = start(&app, "wf-rogue", None).await;
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
        json!({ "id": ended }),
    )
    .await;

    // An empty scope field is a mistake, not "everything".
    let refused = app
        .gql(
            HALT,
            json!({ "scope": { "workflowId": " " }, "reason": "x" }),
        )
        .await;
    assert_eq!(refused.error_code().as_deref(), Some("BAD_USER_INPUT"));

    let halt = app
        .gql_ok(
            HALT,
            json!({ "scope": { "workflowId": "wf-rogue" }, "reason": "agent loops on refunds" }),
        )
        .await["haltRuns"]
        .clone();
    assert_eq!(halt["runsStopped"], 50, "{halt}");
    assert_eq!(halt["active"], true);
    assert_eq!(halt["workflowId"], "wf-rogue");
    assert!(halt["agent"].is_null());
    let halt_id = halt["id"].as_str().unwrap().to_string();
    assert!(halt_id.starts_with("hlt_"), "{halt_id}");

    let event = ws.next_data("1").await["haltEvents"].clone();
    assert_eq!(event["kind"], "RUNS_HALTED");
    assert_eq!(event["halt"]["id"], halt_id.as_str());

    // Every stopped run: CANCELLED by USER_ABORT, the halt on record, no incident, evaluated.
    for run in &doomed {
        let data = app
            .poll_until(
                RUN,
                json!({ "id": run }),
                std::time::Duration::from_secs(30),
                |d| !d["run"]["evaluation"].is_null(),
            )
            .await;
        let r = &data["run"];
        assert_eq!(r["status"], "CANCELLED", "{r}");
        assert_eq!(r["terminationReason"], "USER_ABORT");
        assert!(r["incident"].is_null(), "a halt opens no incident: {r}");
        assert!(
            r["error"].as_str().unwrap().contains(&halt_id),
            "the run says which halt stopped it: {r}"
        );
        let enforcements = r["enforcements"]["nodes"].as_array().unwrap();
        assert_eq!(enforcements.len(), 1, "{r}");
        assert_eq!(enforcements[0]["actionTaken"], "ABORTED");
        assert_eq!(enforcements[0]["details"]["haltId"], halt_id.as_str());
        assert_eq!(
            enforcements[0]["details"]["haltReason"],
            "agent loops on refunds"
        );
    }
    // Its steps are refused from now on.
    let late = app
        .record_step(&doomed[0], json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    assert_eq!(late.error_code().as_deref(), Some("RUN_TERMINATED"));
    // The others run on; the run that had ended is as it was.
    for run in &bystanders {
        assert_eq!(status(&app, run).await["status"], "RUNNING");
        app.step_ok(run, json!({ "type": "LLM_CALL", "tokens": 1 }))
            .await;
    }
    assert_eq!(status(&app, &ended).await["status"], "SUCCEEDED");

    // No new run in the scope, whatever its agent; elsewhere, yes.
    let blocked = app
        .gql(START, json!({ "w": "wf-rogue", "a": "other-bot" }))
        .await;
    assert_eq!(
        blocked.error_code().as_deref(),
        Some("CONFLICT"),
        "{}",
        blocked.body
    );
    assert!(
        blocked.error_message().contains(&halt_id),
        "{}",
        blocked.body
    );
    assert!(
        blocked.error_message().contains("resumeRuns"),
        "{}",
        blocked.body
    );
    start(&app, "wf-calm", None).await;

    // Shown in the status and the list while it stands.
    let overview = app
        .gql_ok(
            "{ governanceStatus { activeHalts { id reason } } halts(active: true) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        overview["governanceStatus"]["activeHalts"][0]["id"],
        halt_id.as_str()
    );
    assert_eq!(overview["halts"]["nodes"][0]["id"], halt_id.as_str());

    // Resumed: runs start again; the halt stays on record, and cannot be resumed twice.
    let resumed = app.gql_ok(RESUME, json!({ "id": halt_id })).await["resumeRuns"].clone();
    assert_eq!(resumed["active"], false);
    assert!(!resumed["resumedAt"].is_null());
    let event = ws.next_data("1").await["haltEvents"].clone();
    assert_eq!(event["kind"], "RUNS_RESUMED");
    assert_eq!(event["halt"]["active"], false);
    start(&app, "wf-rogue", Some("bot")).await;
    let again = app.gql(RESUME, json!({ "id": halt_id })).await;
    assert_eq!(again.error_code().as_deref(), Some("CONFLICT"));
    let listed = app
        .gql_ok(
            "{ active: halts(active: true) { totalCount } all: halts { nodes { id active runsStopped } } governanceStatus { activeHalts { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["active"]["totalCount"], 0, "{listed}");
    assert_eq!(listed["all"]["nodes"][0]["runsStopped"], 50);
    assert_eq!(listed["governanceStatus"]["activeHalts"], json!([]));
}

/// Scopes by agent, and the whole tenant: each stops exactly the runs it names.
#[tokio::test]
async fn an_agent_halt_and_a_tenant_halt_stop_exactly_their_runs() {
    let app = spawn_app().await;
    let by_bot = start(&app, "wf-a", Some("bot")).await;
    let by_other = start(&app, "wf-a", Some("other")).await;
    let anonymous = start(&app, "wf-b", None).await;

    let halt = app
        .gql_ok(
            HALT,
            json!({ "scope": { "agent": "bot" }, "reason": "bot misbehaves" }),
        )
        .await["haltRuns"]
        .clone();
    assert_eq!(halt["runsStopped"], 1);
    assert_eq!(status(&app, &by_bot).await["status"], "CANCELLED");
    assert_eq!(status(&app, &by_other).await["status"], "RUNNING");
    let refused = app.gql(START, json!({ "w": "wf-z", "a": "bot" })).await;
    assert_eq!(refused.error_code().as_deref(), Some("CONFLICT"));
    start(&app, "wf-z", Some("other")).await;
    start(&app, "wf-z", None).await;

    let everything = app
        .gql_ok(HALT, json!({ "scope": {}, "reason": "incident drill" }))
        .await["haltRuns"]
        .clone();
    assert_eq!(everything["runsStopped"], 4, "{everything}");
    for run in [&by_other, &anonymous] {
        assert_eq!(status(&app, run).await["status"], "CANCELLED");
    }
    let refused = app.gql(START, json!({ "w": "wf-any", "a": null })).await;
    assert_eq!(refused.error_code().as_deref(), Some("CONFLICT"));
    assert!(
        refused.error_message().contains("every run of the tenant"),
        "{}",
        refused.body
    );

    // A reader sees halts but cannot set one.
    let (ok, out, err) = crate::helpers::run_cli(
        &app.env,
        &["key", "create", "--tenant", "default", "--role", "READER"],
    )
    .await;
    assert!(ok, "{out}{err}");
    let reader = format!("Bearer {}", crate::helpers::key_in(&out).unwrap());
    let denied = app
        .gql_auth(
            Some(&reader),
            HALT,
            json!({ "scope": {}, "reason": "not mine to pull" }),
        )
        .await;
    assert_eq!(denied.error_code().as_deref(), Some("FORBIDDEN"));
    let seen = app
        .gql_auth(Some(&reader), "{ halts { totalCount } }", json!({}))
        .await;
    assert_eq!(seen.data()["halts"]["totalCount"], 2, "{}", seen.body);
}
