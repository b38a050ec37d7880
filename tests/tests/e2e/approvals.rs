//! Human approval, the way an integrator and an approver use it: a REQUIRE_APPROVAL policy holds
//! a step (HOLD, the run AWAITING_APPROVAL), re-sending the step answers HOLD until someone
//! decides, then the final decision; approve continues the run, deny stops it with an incident,
//! and the sweeper applies `onTimeout`. The decision is a chained entry that `verifyRun`
//! recomputes, exports carry, and explain shows.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, key_in, run_cli, spawn_app};

const STEP: &str = "mutation($input: RecordStepInput!) { recordStep(input: $input) {
    action reason replayed terminationReason
    approval { id status decision expiresAt onTimeout decidedBy { id } note entryHash }
    step { stepIndex decision entryHash prevHash }
    incident { id }
    run { status terminationReason stepCount }
} }";

const APPROVAL: &str = "query($id: ID!) { approval(id: $id) {
    id status decision stepIndex policy { name } run { id status }
    requestedBy { id } decidedBy { id } decidedAt note entryHash
} }";

const DECIDE: &str = "mutation($id: ID!, $note: String) { approveStep(id: $id, note: $note) {
    id status decision decidedBy { id } note entryHash } }";

const DENY: &str = "mutation($id: ID!, $note: String) { denyStep(id: $id, note: $note) {
    id status decision decidedBy { id } note entryHash } }";

/// A key of the default tenant with `roles`, made as an operator would (the CLI).
async fn key_with(app: &TestApp, name: &str, roles: &[&str]) -> String {
    let mut args = vec!["key", "create", "--tenant", "default", "--name", name];
    for role in roles {
        args.extend(["--role", role]);
    }
    let (ok, out, err) = run_cli(&app.env, &args).await;
    assert!(ok, "key create: {out}{err}");
    format!("Bearer {}", key_in(&out).unwrap())
}

/// Tools other than `search` need a person's approval in `workflow` (`approval` as given).
async fn approval_policy(app: &TestApp, workflow: &str, approval: Value) -> String {
    app.create_policy(json!({
        "name": format!("Approve tools in {workflow}"), "kind": "TOOL_ALLOWLIST",
        "rule": { "tools": ["search"], "approval": approval },
        "action": "REQUIRE_APPROVAL", "severity": "HIGH", "workflowId": workflow,
    }))
    .await
}

async fn step(
    app: &TestApp,
    auth: Option<&str>,
    run: &str,
    input: Value,
) -> crate::helpers::Response {
    let mut input = input;
    input["runId"] = json!(run);
    match auth {
        Some(auth) => {
            app.gql_auth(Some(auth), STEP, json!({ "input": input }))
                .await
        }
        None => app.gql(STEP, json!({ "input": input })).await,
    }
}

fn wire(index: i64) -> Value {
    json!({ "stepIndex": index, "type": "TOOL_CALL", "tokens": 5, "toolName": "wire_money",
            "content": "send 100 EUR to account 42" })
}

fn llm(index: i64) -> Value {
    json!({ "stepIndex": index, "type": "LLM_CALL", "tokens": 3 })
}

/// A run of `workflow` whose step 1 is held; returns (run, approval id).
async fn held(app: &TestApp, workflow: &str) -> (String, String) {
    let run = app.start_run(workflow).await;
    let first = step(app, None, &run, llm(0)).await;
    assert_eq!(
        first.data()["recordStep"]["action"],
        "CONTINUE",
        "{}",
        first.body
    );
    let hold = step(app, None, &run, wire(1)).await;
    let decision = &hold.data()["recordStep"];
    assert_eq!(decision["action"], "HOLD", "{}", hold.body);
    (
        run,
        decision["approval"]["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_held_step_waits_then_continues_once_approved() {
    let app = spawn_app().await;
    approval_policy(&app, "wf-pay", json!({ "timeoutSeconds": 600 })).await;
    let approver = key_with(&app, "approver", &["APPROVER"]).await;
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe(
        "1",
        "subscription { approvalEvents { cursor kind approval { id status stepIndex } } }",
        json!({}),
    )
    .await;

    let run = app.start_run("wf-pay").await;
    step(&app, None, &run, llm(0)).await;
    let hold = step(&app, None, &run, wire(1)).await;
    let decision = &hold.data()["recordStep"];
    assert_eq!(decision["action"], "HOLD", "{}", hold.body);
    assert_eq!(decision["step"]["decision"], "HOLD");
    assert_eq!(decision["run"]["status"], "AWAITING_APPROVAL");
    assert_eq!(decision["run"]["stepCount"], 2, "the held step is recorded");
    let approval = decision["approval"].clone();
    let id = approval["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("apr_"), "{approval}");
    assert_eq!(approval["status"], "PENDING");
    assert_eq!(
        approval["onTimeout"], "DENY",
        "DENY unless the policy says otherwise"
    );
    assert!(approval["expiresAt"].is_string());
    let held_entry = decision["step"]["entryHash"].as_str().unwrap().to_string();

    let requested = ws.next_data("1").await["approvalEvents"].clone();
    assert_eq!(requested["kind"], "APPROVAL_REQUESTED");
    assert_eq!(requested["approval"]["id"], id.as_str());

    // Re-sent while pending: HOLD again, nothing recorded twice.
    let again = step(&app, None, &run, wire(1)).await;
    assert_eq!(
        again.data()["recordStep"]["action"],
        "HOLD",
        "{}",
        again.body
    );
    assert_eq!(again.data()["recordStep"]["replayed"], true);
    assert_eq!(again.data()["recordStep"]["run"]["stepCount"], 2);
    // The run takes no other step, and cannot succeed, while it waits.
    let next = step(&app, None, &run, llm(2)).await;
    assert_eq!(
        next.error_code().as_deref(),
        Some("CONFLICT"),
        "{}",
        next.body
    );
    assert!(
        next.error_message().contains("waiting for approval"),
        "{}",
        next.body
    );
    let done = app
        .gql(
            "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { status } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(
        done.error_code().as_deref(),
        Some("CONFLICT"),
        "{}",
        done.body
    );

    // The key that reported the step cannot approve it.
    let own = app.gql(DECIDE, json!({ "id": id })).await;
    assert_eq!(
        own.error_code().as_deref(),
        Some("FORBIDDEN"),
        "{}",
        own.body
    );
    assert!(own.error_message().contains("another key"), "{}", own.body);
    // An unknown approval is not found.
    let unknown = app
        .gql_auth(Some(&approver), DECIDE, json!({ "id": "apr_missing" }))
        .await;
    assert_eq!(
        unknown.error_code().as_deref(),
        Some("NOT_FOUND"),
        "{}",
        unknown.body
    );

    let granted = app
        .gql_auth(
            Some(&approver),
            DECIDE,
            json!({ "id": id, "note": "  checked the payee " }),
        )
        .await;
    let granted = granted.data()["approveStep"].clone();
    assert_eq!(granted["status"], "GRANTED", "{granted}");
    assert_eq!(granted["decision"], "CONTINUE");
    assert_eq!(granted["note"], "checked the payee");
    assert!(
        granted["decidedBy"]["id"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );
    let decision_entry = granted["entryHash"].as_str().unwrap().to_string();
    assert_ne!(decision_entry, held_entry);
    let event = ws.next_data("1").await["approvalEvents"].clone();
    assert_eq!(event["kind"], "APPROVAL_GRANTED");
    assert!(
        event["cursor"].as_str().unwrap().parse::<i64>().unwrap()
            > requested["cursor"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
    );

    // Decided once: neither a second approval nor a denial changes it.
    for document in [DECIDE, DENY] {
        let twice = app
            .gql_auth(Some(&approver), document, json!({ "id": id }))
            .await;
        assert_eq!(
            twice.error_code().as_deref(),
            Some("CONFLICT"),
            "{}",
            twice.body
        );
    }

    // The integrator resumes by sending the held step again: now CONTINUE, exactly once.
    let resumed = step(&app, None, &run, wire(1)).await;
    let resumed = &resumed.data()["recordStep"];
    assert_eq!(resumed["action"], "CONTINUE", "{resumed}");
    assert_eq!(resumed["approval"]["status"], "GRANTED");
    assert_eq!(resumed["run"]["status"], "RUNNING");
    assert_eq!(resumed["run"]["stepCount"], 2);
    let after = step(&app, None, &run, llm(2)).await;
    let after = &after.data()["recordStep"];
    assert_eq!(after["action"], "CONTINUE", "{after}");
    assert_eq!(
        after["step"]["prevHash"],
        decision_entry.as_str(),
        "the next step is chained after the approval's entry"
    );

    // Read back: the approval, the trace, explain before and after the decision, verifyRun.
    let read = app.gql_ok(APPROVAL, json!({ "id": id })).await["approval"].clone();
    assert_eq!(read["status"], "GRANTED");
    assert_eq!(read["stepIndex"], 1);
    assert_eq!(read["policy"]["name"], "Approve tools in wf-pay");
    assert_eq!(read["run"]["id"], run.as_str());
    assert!(read["requestedBy"]["id"].is_string());
    assert_ne!(read["requestedBy"]["id"], read["decidedBy"]["id"]);
    let trace = app
        .gql_ok(
            "query($id: ID!) { run(id: $id) { trace { steps(first: 5) { nodes {
                stepIndex decision approval { id status entryHash } } } } } }",
            json!({ "id": run }),
        )
        .await;
    let nodes = trace["run"]["trace"]["steps"]["nodes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(nodes[1]["decision"], "HOLD");
    assert_eq!(nodes[1]["approval"]["id"], id.as_str());
    assert!(nodes[0]["approval"].is_null() && nodes[2]["approval"].is_null());
    let explain = "query($id: ID!, $at: DateTime!) { run(id: $id) { explain(at: $at) {
        status decision { action stepIndex chainPosition approval { id status } } } } }";
    let decided_at = read["decidedAt"].as_str().unwrap();
    let at_decision = app
        .gql_ok(explain, json!({ "id": run, "at": decided_at }))
        .await["run"]["explain"]
        .clone();
    assert_eq!(at_decision["decision"]["stepIndex"], 1, "{at_decision}");
    assert_eq!(
        at_decision["decision"]["action"], "CONTINUE",
        "{at_decision}"
    );
    assert_eq!(at_decision["decision"]["approval"]["status"], "GRANTED");
    let now = app
        .gql_ok(
            explain,
            json!({ "id": run, "at": chrono::Utc::now().to_rfc3339() }),
        )
        .await["run"]["explain"]
        .clone();
    assert_eq!(now["decision"]["stepIndex"], 2);
    assert_eq!(
        now["decision"]["chainPosition"], 4,
        "genesis, step 0, step 1, the approval, then step 2: {now}"
    );
    let verified = app
        .gql_ok(
            "query($id: ID!) { verifyRun(id: $id) { intact reproduced headHash mismatches { kind stepIndex } } }",
            json!({ "id": run }),
        )
        .await["verifyRun"]
        .clone();
    assert_eq!(verified["intact"], true, "{verified}");
    assert_eq!(verified["reproduced"], true, "{verified}");
    assert_eq!(verified["mismatches"], json!([]));

    // Listed: by status and by run; the run's events show the request and the grant in order.
    let pending = app
        .gql_ok(
            "{ approvals(filter: { status: PENDING }) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(pending["approvals"]["totalCount"], 0);
    let of_run = app
        .gql_ok(
            "query($r: ID!) { approvals(filter: { runId: $r }) { nodes { id status } } }",
            json!({ "r": run }),
        )
        .await;
    assert_eq!(
        of_run["approvals"]["nodes"],
        json!([{ "id": id, "status": "GRANTED" }])
    );
}

#[tokio::test]
async fn a_denied_step_stops_the_run_with_an_incident() {
    let app = spawn_app().await;
    approval_policy(&app, "wf-deny", json!({})).await;
    let approver = key_with(&app, "approver", &["APPROVER"]).await;
    let (run, id) = held(&app, "wf-deny").await;

    let denied = app
        .gql_auth(
            Some(&approver),
            DENY,
            json!({ "id": id, "note": "unknown payee" }),
        )
        .await;
    let denied = denied.data()["denyStep"].clone();
    assert_eq!(denied["status"], "DENIED", "{denied}");
    assert_eq!(denied["decision"], "STOP");

    // The re-sent step gets the final answer: STOP, with the incident; later steps are refused.
    let answer = step(&app, None, &run, wire(1)).await;
    let answer = &answer.data()["recordStep"];
    assert_eq!(answer["action"], "STOP", "{answer}");
    assert_eq!(answer["terminationReason"], "POLICY_BLOCK");
    assert!(
        answer["reason"].as_str().unwrap().contains("unknown payee"),
        "{answer}"
    );
    assert!(answer["incident"]["id"].is_string(), "{answer}");
    let later = step(&app, None, &run, llm(2)).await;
    assert_eq!(
        later.error_code().as_deref(),
        Some("RUN_TERMINATED"),
        "{}",
        later.body
    );

    let data = app
        .poll_until(
            "query($id: ID!) { run(id: $id) { status terminationReason stoppedAtStep
                incident { id title } evaluation { outcome }
                enforcements { nodes { actionTaken stepIndex } } } }",
            json!({ "id": run }),
            Duration::from_secs(30),
            |d| !d["run"]["evaluation"].is_null(),
        )
        .await;
    let r = &data["run"];
    assert_eq!(r["status"], "FAILED_POLICY", "{r}");
    assert_eq!(r["terminationReason"], "POLICY_BLOCK");
    assert_eq!(r["stoppedAtStep"], 1);
    assert!(
        r["incident"]["title"]
            .as_str()
            .unwrap()
            .contains("denied step 1"),
        "{r}"
    );
    assert_eq!(r["evaluation"]["outcome"], "VIOLATION");
    let stops: Vec<&Value> = r["enforcements"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actionTaken"] == "STOPPED")
        .collect();
    assert_eq!(stops.len(), 1, "{r}");
    assert_eq!(stops[0]["stepIndex"], 1);

    let verified = app
        .gql_ok(
            "query($id: ID!) { verifyRun(id: $id) { intact reproduced mismatches { kind } } }",
            json!({ "id": run }),
        )
        .await["verifyRun"]
        .clone();
    assert_eq!(verified["intact"], true, "{verified}");
    assert_eq!(verified["reproduced"], true, "{verified}");

    // The run's events: requested, denied, then the stop, in that order.
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe(
        "1",
        "subscription($r: ID!) { runEvents(runId: $r) { kind status approvalId } }",
        json!({ "r": run }),
    )
    .await;
    let mut kinds = Vec::new();
    loop {
        let event = ws.next_data("1").await["runEvents"].clone();
        kinds.push(event["kind"].as_str().unwrap().to_string());
        if event["kind"] == "APPROVAL_REQUESTED" {
            assert_eq!(event["status"], "AWAITING_APPROVAL");
            assert_eq!(event["approvalId"], id.as_str());
        }
        if event["kind"] == "STOPPED" {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            "STARTED",
            "STEP_RECORDED",
            "STEP_RECORDED",
            "APPROVAL_REQUESTED",
            "APPROVAL_DENIED",
            "STOPPED"
        ]
    );

    // The evidence export of the incident carries the decision as a chained entry, and checks
    // out offline.
    let incident = r["incident"]["id"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bundle, bundle_file, keys_file) =
        crate::verifying::exported_bundle(&app, incident, dir.path()).await;
    assert_eq!(
        bundle["approvals"][0]["approvalId"],
        id.as_str(),
        "{}",
        bundle["approvals"]
    );
    assert_eq!(bundle["approvals"][0]["status"], "DENIED");
    assert_eq!(bundle["approvals"][0]["note"], "unknown payee");
    let entries = bundle["verification"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "two steps and the approval's decision");
    assert!(
        entries[2]["document"]
            .as_str()
            .unwrap()
            .contains("\"type\":\"approval\"")
    );
    let (code, out) =
        crate::verifying::verify_cli(&bundle_file, &[keys_file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    // The decision shown cannot be changed without the check naming it.
    let mut altered = bundle.clone();
    altered["approvals"][0]["status"] = json!("GRANTED");
    let altered_file = dir.path().join("altered.json");
    std::fs::write(
        &altered_file,
        governance_core::canonical::to_string(&altered),
    )
    .unwrap();
    let (code, out) =
        crate::verifying::verify_cli(&altered_file, &[keys_file.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("approvals[0].status"), "{out}");

    // The PDF shows the decision beside the trace.
    use crate::exports::{download, pdf_text, ready, request_pdf};
    let pdf = ready(&app, &request_pdf(&app, incident, "EVIDENCE").await).await;
    let bytes = download(&app, pdf["downloadUrl"].as_str().unwrap(), None)
        .await
        .bytes()
        .await
        .unwrap();
    let text = pdf_text(&bytes).await;
    assert!(text.contains("Approvals"), "{text}");
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("unknown payee"), "{text}");
}

#[tokio::test]
async fn nobody_deciding_applies_on_timeout() {
    let app = spawn_app().await;
    approval_policy(
        &app,
        "wf-allow",
        json!({ "timeoutSeconds": 1, "onTimeout": "ALLOW" }),
    )
    .await;
    approval_policy(&app, "wf-expire", json!({ "timeoutSeconds": 1 })).await;
    let (allowed, allow_id) = held(&app, "wf-allow").await;
    let (denied, deny_id) = held(&app, "wf-expire").await;
    let expired = |d: &Value| d["approval"]["status"] == "EXPIRED";
    let allow = app
        .poll_until(
            APPROVAL,
            json!({ "id": allow_id }),
            Duration::from_secs(30),
            expired,
        )
        .await["approval"]
        .clone();
    assert_eq!(allow["decision"], "CONTINUE", "{allow}");
    assert!(allow["decidedBy"].is_null(), "nobody decided it: {allow}");
    assert_eq!(allow["run"]["status"], "RUNNING");
    let resumed = step(&app, None, &allowed, wire(1)).await;
    assert_eq!(
        resumed.data()["recordStep"]["action"],
        "CONTINUE",
        "{}",
        resumed.body
    );

    let deny = app
        .poll_until(
            APPROVAL,
            json!({ "id": deny_id }),
            Duration::from_secs(30),
            expired,
        )
        .await["approval"]
        .clone();
    assert_eq!(deny["decision"], "STOP", "{deny}");
    let answer = step(&app, None, &denied, wire(1)).await;
    let answer = &answer.data()["recordStep"];
    assert_eq!(answer["action"], "STOP", "{answer}");
    assert_eq!(answer["terminationReason"], "TIMEOUT");
    assert!(answer["incident"]["id"].is_string(), "{answer}");
    for run in [&allowed, &denied] {
        let verified = app
            .gql_ok(
                "query($id: ID!) { verifyRun(id: $id) { intact reproduced } }",
                json!({ "id": run }),
            )
            .await;
        assert_eq!(
            verified["verifyRun"],
            json!({ "intact": true, "reproduced": true })
        );
    }
}

#[tokio::test]
async fn approval_terms_are_checked_when_a_policy_is_written() {
    let app = spawn_app().await;
    let create = "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id rule } }";
    let base = json!({ "name": "p", "kind": "TOKEN_BUDGET", "severity": "LOW" });
    for (action, rule, field) in [
        (
            "BLOCK",
            json!({ "maxTokens": 5, "approval": {} }),
            "input.rule.approval",
        ),
        (
            "REQUIRE_APPROVAL",
            json!({ "maxTokens": 5, "approval": { "timeoutSeconds": 0 } }),
            "input.rule.approval.timeoutSeconds",
        ),
        (
            "REQUIRE_APPROVAL",
            json!({ "maxTokens": 5, "approval": { "onTimeout": "MAYBE" } }),
            "input.rule.approval.onTimeout",
        ),
    ] {
        let mut input = base.clone();
        input["action"] = json!(action);
        input["rule"] = rule;
        let refused = app.gql(create, json!({ "input": input })).await;
        assert_eq!(
            refused.error_code().as_deref(),
            Some("BAD_USER_INPUT"),
            "{}",
            refused.body
        );
        assert_eq!(
            refused.body["errors"][0]["extensions"]["field"], field,
            "{}",
            refused.body
        );
    }
    // Defaults are written out; turning the policy into a BLOCK one drops them.
    let mut input = base.clone();
    input["action"] = json!("REQUIRE_APPROVAL");
    input["rule"] = json!({ "maxTokens": 5 });
    let created = app.gql_ok(create, json!({ "input": input })).await["createPolicy"].clone();
    assert_eq!(
        created["rule"],
        json!({ "maxTokens": 5, "approval": { "timeoutSeconds": 3600, "onTimeout": "DENY" } })
    );
    let updated = app
        .gql_ok(
            "mutation($id: ID!) { updatePolicy(id: $id, input: { action: BLOCK }) { rule action } }",
            json!({ "id": created["id"] }),
        )
        .await;
    assert_eq!(updated["updatePolicy"]["rule"], json!({ "maxTokens": 5 }));
}

#[tokio::test]
async fn a_pending_approval_survives_a_restart_and_any_replica_decides_it() {
    let app = spawn_app().await;
    approval_policy(&app, "wf-restart", json!({ "timeoutSeconds": 600 })).await;
    let approver = key_with(&app, "approver", &["APPROVER"]).await;
    let (run, id) = held(&app, "wf-restart").await;

    let app = if crate::helpers::redis_url().is_some() {
        // PostgreSQL + Redis: decided through another replica, seen by this one.
        let (_replica, port) = crate::subscriptions::second_replica(&app, &[]).await;
        let decided: Value = app
            .http()
            .post(format!("http://127.0.0.1:{port}/graphql"))
            .header("Authorization", &approver)
            .json(&json!({ "query": DECIDE, "variables": { "id": id } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            decided["data"]["approveStep"]["status"], "GRANTED",
            "{decided}"
        );
        app
    } else {
        // SQLite: the pending approval is still there after a restart, and decided then.
        let app = app.restart(|_| {}).await;
        let read = app.gql_ok(APPROVAL, json!({ "id": id })).await;
        assert_eq!(read["approval"]["status"], "PENDING", "{read}");
        let again = step(&app, None, &run, wire(1)).await;
        assert_eq!(
            again.data()["recordStep"]["action"],
            "HOLD",
            "{}",
            again.body
        );
        let decided = app
            .gql_auth(Some(&approver), DECIDE, json!({ "id": id }))
            .await;
        assert_eq!(
            decided.data()["approveStep"]["status"],
            "GRANTED",
            "{}",
            decided.body
        );
        app
    };
    let resumed = step(&app, None, &run, wire(1)).await;
    assert_eq!(
        resumed.data()["recordStep"]["action"],
        "CONTINUE",
        "{}",
        resumed.body
    );
}

#[tokio::test]
async fn an_approval_whose_run_ends_first_is_closed_on_the_record() {
    let app = spawn_app().await;
    approval_policy(&app, "wf-halted", json!({ "timeoutSeconds": 600 })).await;
    let approver = key_with(&app, "approver", &["APPROVER"]).await;
    let (halted, halted_approval) = held(&app, "wf-halted").await;
    let (cancelled, cancelled_approval) = held(&app, "wf-halted").await;
    let cancel = app
        .gql_ok(
            "mutation($id: ID!) { cancelRun(id: $id, reason: \"operator\") { status } }",
            json!({ "id": cancelled }),
        )
        .await;
    assert_eq!(cancel["cancelRun"]["status"], "CANCELLED");
    // The kill switch stops runs that wait for an approval too.
    let halt = app
        .gql_ok(
            "mutation { haltRuns(scope: { workflowId: \"wf-halted\" }, reason: \"incident\") { runsStopped } }",
            json!({}),
        )
        .await;
    assert_eq!(halt["haltRuns"]["runsStopped"], 1, "{halt}");
    for (run, id) in [
        (&halted, &halted_approval),
        (&cancelled, &cancelled_approval),
    ] {
        let read = app.gql_ok(APPROVAL, json!({ "id": id })).await["approval"].clone();
        assert_eq!(read["status"], "CANCELLED", "{read}");
        assert_eq!(read["decision"], "STOP");
        assert!(read["decidedBy"].is_null());
        assert!(
            read["note"].as_str().unwrap().contains("USER_ABORT"),
            "{read}"
        );
        assert_eq!(read["run"]["status"], "CANCELLED");
        let late = app
            .gql_auth(Some(&approver), DECIDE, json!({ "id": id }))
            .await;
        assert_eq!(
            late.error_code().as_deref(),
            Some("CONFLICT"),
            "{}",
            late.body
        );
        let verified = app
            .gql_ok(
                "query($id: ID!) { verifyRun(id: $id) { intact reproduced headHash } }",
                json!({ "id": run }),
            )
            .await["verifyRun"]
            .clone();
        assert_eq!(verified["intact"], true, "{verified}");
        assert_eq!(verified["reproduced"], true, "{verified}");
        assert_eq!(
            verified["headHash"], read["entryHash"],
            "the closing is the last entry"
        );
    }
    let pending = app
        .gql_ok(
            "{ approvals(filter: { status: PENDING }) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        pending["approvals"]["totalCount"], 0,
        "nothing left waiting for a person"
    );
}

/// A decision forged behind the service's back, as whoever administers the database could:
/// a GRANTED approval that names no approver, chained consistently and the run set going again.
/// `verifyRun` names it.
#[tokio::test]
async fn a_forged_approval_decision_is_caught_by_verify_run() {
    use governance_core::chain;
    use governance_entities::{approval_decision, enums, run as run_entity};
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
    let app = spawn_app().await;
    approval_policy(&app, "wf-forged", json!({})).await;
    let (run, id) = held(&app, "wf-forged").await;
    let stored = run_entity::Entity::find_by_id(run.clone())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut forged = approval_decision::Model {
        approval_id: id.clone(),
        tenant_id: stored.tenant_id.clone(),
        run_id: run.clone(),
        step_index: 1,
        status: enums::ApprovalStatus::Granted,
        decision: enums::DecisionAction::Continue,
        decided_by_key: None,
        note: None,
        decided_at: chrono::Utc::now(),
        prev_hash: stored.trace_head_hash.clone(),
        entry_hash: String::new(),
    };
    forged.entry_hash = chain::entry_hash(
        &forged.prev_hash,
        &chain::approval_document(&stored, &forged),
    );
    forged
        .clone()
        .into_active_model()
        .reset_all()
        .insert(&app.db)
        .await
        .unwrap();
    let mut going: run_entity::ActiveModel = stored.into();
    going.status = Set(enums::RunStatus::Running);
    going.trace_head_hash = Set(forged.entry_hash.clone());
    going.update(&app.db).await.unwrap();

    let verified = app
        .gql_ok(
            "query($id: ID!) { verifyRun(id: $id) { intact mismatches { kind stepIndex found } } }",
            json!({ "id": run }),
        )
        .await["verifyRun"]
        .clone();
    assert_eq!(verified["intact"], false, "{verified}");
    let named = verified["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["kind"] == "APPROVAL_ENTRY" && m["stepIndex"] == 1);
    assert!(named, "{verified}");
}
