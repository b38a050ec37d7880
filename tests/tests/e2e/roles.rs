//! Key roles, table-driven: every mutation called with a key of every role. A call outside the
//! key's roles is refused with `FORBIDDEN` naming the role it needs, and writes nothing; a call
//! within them succeeds. Reads work for every role.

use serde_json::{Value, json};

use crate::helpers::{TestApp, key_in, run_cli, spawn_app};

const ROLES: [&str; 4] = ["INTEGRATOR", "APPROVER", "ADMIN", "READER"];

/// A new key of the tenant with `roles`, created as an operator would (the CLI).
async fn key_with(app: &TestApp, name: &str, roles: &[&str]) -> String {
    let mut args = vec!["key", "create", "--tenant", "default", "--name", name];
    for role in roles {
        args.extend(["--role", role]);
    }
    let (ok, out, err) = run_cli(&app.env, &args).await;
    assert!(ok, "key create: {out}{err}");
    key_in(&out).unwrap_or_else(|| panic!("no key printed: {out}"))
}

/// A run stopped by a BLOCK policy, with its incident (made with the admin key).
async fn incident(app: &TestApp) -> (String, String) {
    let run = app.start_run("wf-roles").await;
    let stop = app
        .step_ok(
            &run,
            json!({ "type": "TOOL_CALL", "tokens": 1, "toolName": "forbidden-tool" }),
        )
        .await;
    assert_eq!(stop["action"], "STOP", "{stop}");
    (run, stop["incident"]["id"].as_str().unwrap().to_string())
}

/// The mutation `name` with variables for fresh objects made with the admin key; returns the
/// document and its variables.
async fn call_for(app: &TestApp, name: &str, tag: &str) -> (&'static str, Value) {
    match name {
        "startRun" => (
            "mutation($w: String!) { startRun(input: { workflowId: $w }) { id } }",
            json!({ "w": format!("wf-{tag}") }),
        ),
        "recordStep" => (
            "mutation($r: ID!) { recordStep(input: { runId: $r, type: LLM_CALL, tokens: 1 }) { action } }",
            json!({ "r": app.start_run("wf-steps").await }),
        ),
        "completeRun" => (
            "mutation($r: ID!) { completeRun(id: $r, status: SUCCEEDED) { status } }",
            json!({ "r": app.start_run("wf-end").await }),
        ),
        "cancelRun" => (
            "mutation($r: ID!) { cancelRun(id: $r, reason: \"no longer needed\") { status } }",
            json!({ "r": app.start_run("wf-end").await }),
        ),
        "acknowledgeIncident" => (
            "mutation($i: ID!) { acknowledgeIncident(id: $i) { status } }",
            json!({ "i": incident(app).await.1 }),
        ),
        "resolveIncident" => (
            "mutation($i: ID!) { resolveIncident(id: $i, note: \"handled\") { status } }",
            json!({ "i": incident(app).await.1 }),
        ),
        "requestExport" => (
            "mutation($i: ID!) { requestExport(incidentId: $i, kind: EVIDENCE, format: JSON) { status } }",
            json!({ "i": incident(app).await.1 }),
        ),
        "requestAudit" => (
            "mutation($input: AuditRequestInput!) { requestAudit(input: $input) { status } }",
            json!({ "input": crate::audits::clean(&format!("job-{tag}")) }),
        ),
        "createPolicy" => (
            "mutation($n: String!) { createPolicy(input: { name: $n, kind: TOKEN_BUDGET, \
             rule: { maxTokens: 100 }, action: WARN, severity: LOW }) { id } }",
            json!({ "n": format!("policy {tag}") }),
        ),
        "updatePolicy" => (
            "mutation($p: ID!) { updatePolicy(id: $p, input: { description: \"tightened\" }) { version } }",
            json!({ "p": policy(app, tag).await }),
        ),
        "setPolicyEnabled" => (
            "mutation($p: ID!) { setPolicyEnabled(id: $p, enabled: false) { enabled } }",
            json!({ "p": policy(app, tag).await }),
        ),
        "createWebhook" => (
            "mutation { createWebhook(url: \"http://127.0.0.1:9/governance\", \
             events: [INCIDENT_CREATED]) { webhook { id } } }",
            json!({}),
        ),
        "deleteWebhook" => (
            "mutation($h: ID!) { deleteWebhook(id: $h) }",
            json!({ "h": webhook(app).await }),
        ),
        "rotateWebhookSecret" => (
            "mutation($h: ID!) { rotateWebhookSecret(id: $h) { secret } }",
            json!({ "h": webhook(app).await }),
        ),
        "haltRuns" => (
            "mutation($w: String!) { haltRuns(scope: { workflowId: $w }, reason: \"drill\") { id } }",
            json!({ "w": format!("wf-halt-{tag}") }),
        ),
        "resumeRuns" => (
            "mutation($h: ID!) { resumeRuns(id: $h) { active } }",
            json!({ "h": halt(app, tag).await }),
        ),
        "approveStep" => (
            "mutation($a: ID!) { approveStep(id: $a) { status } }",
            json!({ "a": held(app).await }),
        ),
        "denyStep" => (
            "mutation($a: ID!) { denyStep(id: $a, note: \"no\") { status } }",
            json!({ "a": held(app).await }),
        ),
        "simulatePolicies" => (
            "mutation { simulatePolicies(input: { limit: 1 }) { id } }",
            json!({}),
        ),
        "setRequireSimulation" => (
            "mutation { setRequireSimulation(required: false) { requireSimulation } }",
            json!({}),
        ),
        other => panic!("no call for {other}"),
    }
}

/// A step held for approval (reported with the admin key); returns the approval's id.
async fn held(app: &TestApp) -> String {
    let run = app.start_run("wf-approve").await;
    let hold = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 10 }))
        .await;
    assert_eq!(hold["action"], "HOLD", "{hold}");
    let approval = app
        .gql_ok(
            "query($r: ID!) { approvals(filter: { runId: $r }) { nodes { id } } }",
            json!({ "r": run }),
        )
        .await;
    approval["approvals"]["nodes"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn policy(app: &TestApp, tag: &str) -> String {
    app.create_policy(json!({
        "name": format!("to change {tag}"), "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 1000 },
        "action": "WARN", "severity": "LOW",
    }))
    .await
}

async fn halt(app: &TestApp, tag: &str) -> String {
    let data = app
        .gql_ok(
            "mutation($w: String!) { haltRuns(scope: { workflowId: $w }, reason: \"drill\") { id } }",
            json!({ "w": format!("wf-resume-{tag}") }),
        )
        .await;
    data["haltRuns"]["id"].as_str().unwrap().to_string()
}

async fn webhook(app: &TestApp) -> String {
    let data = app
        .gql_ok(
            "mutation { createWebhook(url: \"http://127.0.0.1:9/governance\", \
             events: [INCIDENT_CREATED]) { webhook { id } } }",
            json!({}),
        )
        .await;
    data["createWebhook"]["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every mutation of the schema with the role it needs.
const MUTATIONS: &[(&str, &str)] = &[
    ("startRun", "INTEGRATOR"),
    ("recordStep", "INTEGRATOR"),
    ("completeRun", "INTEGRATOR"),
    ("cancelRun", "INTEGRATOR"),
    ("acknowledgeIncident", "APPROVER"),
    ("resolveIncident", "APPROVER"),
    ("requestExport", "READER"),
    ("requestAudit", "READER"),
    ("createPolicy", "ADMIN"),
    ("updatePolicy", "ADMIN"),
    ("setPolicyEnabled", "ADMIN"),
    ("createWebhook", "ADMIN"),
    ("deleteWebhook", "ADMIN"),
    ("rotateWebhookSecret", "ADMIN"),
    ("haltRuns", "ADMIN"),
    ("resumeRuns", "ADMIN"),
    ("approveStep", "APPROVER"),
    ("denyStep", "APPROVER"),
    ("simulatePolicies", "ADMIN"),
    ("setRequireSimulation", "ADMIN"),
];

fn grants(role: &str, needed: &str) -> bool {
    role == "ADMIN" || needed == "READER" || role == needed
}

#[tokio::test]
async fn every_role_against_every_mutation() {
    let app = spawn_app().await;
    // A tool allowlist, so a step can be stopped on demand (made with the bootstrap key).
    app.create_policy(json!({
        "name": "Tools", "kind": "TOOL_ALLOWLIST", "rule": { "tools": ["search"] },
        "action": "BLOCK", "severity": "HIGH",
    }))
    .await;
    // Steps of `wf-approve` over 5 tokens wait for a person.
    app.create_policy(json!({
        "name": "Approve big steps", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 5 },
        "action": "REQUIRE_APPROVAL", "severity": "MEDIUM", "workflowId": "wf-approve",
    }))
    .await;

    // The schema's mutations are exactly those the table covers.
    let schema = app
        .gql_ok(
            "{ __schema { mutationType { fields { name } } } }",
            json!({}),
        )
        .await;
    let mut listed: Vec<&str> = schema["__schema"]["mutationType"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut covered: Vec<&str> = MUTATIONS.iter().map(|(m, _)| *m).collect();
    covered.sort_unstable();
    assert_eq!(listed, covered, "every mutation has a row");

    for role in ROLES {
        let key = key_with(&app, &role.to_lowercase(), &[role]).await;
        let auth = format!("Bearer {key}");
        // Every role reads, and sees its own roles.
        let me = app
            .gql_auth(Some(&auth), "{ me { apiKey { roles } } }", json!({}))
            .await;
        assert_eq!(
            me.data()["me"]["apiKey"]["roles"],
            json!([role]),
            "{}",
            me.body
        );

        for (i, (mutation, needed)) in MUTATIONS.iter().enumerate() {
            let (document, variables) = call_for(&app, mutation, &format!("{role}-{i}")).await;
            let response = app.gql_auth(Some(&auth), document, variables).await;
            if grants(role, needed) {
                assert!(
                    response.body.get("errors").is_none(),
                    "{role} may call {mutation}: {}",
                    response.body
                );
            } else {
                assert_eq!(
                    response.error_code().as_deref(),
                    Some("FORBIDDEN"),
                    "{role} may not call {mutation}: {}",
                    response.body
                );
                assert_eq!(
                    response.body["errors"][0]["extensions"]["requiredRole"], *needed,
                    "{}",
                    response.body
                );
                assert!(response.body["data"].is_null(), "{}", response.body);
            }
        }
    }
}

/// A refused call writes nothing: an INTEGRATOR cannot loosen the policy that governs it, and
/// the policy is unchanged afterwards. A key with two roles can do what either grants.
#[tokio::test]
async fn a_refused_call_changes_nothing_and_roles_combine() {
    let app = spawn_app().await;
    let policy = policy(&app, "guarded").await;
    let integrator = format!(
        "Bearer {}",
        key_with(&app, "runtime", &["INTEGRATOR"]).await
    );
    let refused = app
        .gql_auth(
            Some(&integrator),
            "mutation($p: ID!) { setPolicyEnabled(id: $p, enabled: false) { enabled } }",
            json!({ "p": policy }),
        )
        .await;
    assert_eq!(refused.error_code().as_deref(), Some("FORBIDDEN"));
    assert!(
        refused.error_message().contains("ADMIN"),
        "{}",
        refused.body
    );
    let read = app
        .gql_auth(
            Some(&integrator),
            "query($p: ID!) { policy(id: $p) { enabled version } }",
            json!({ "p": policy }),
        )
        .await;
    assert_eq!(
        read.data()["policy"],
        json!({ "enabled": true, "version": 1 })
    );

    let both = format!(
        "Bearer {}",
        key_with(&app, "ops", &["INTEGRATOR", "APPROVER"]).await
    );
    let (_run, incident) = {
        app.create_policy(json!({
            "name": "Tools", "kind": "TOOL_ALLOWLIST", "rule": { "tools": ["search"] },
            "action": "BLOCK", "severity": "HIGH",
        }))
        .await;
        incident(&app).await
    };
    let run = app
        .gql_auth(
            Some(&both),
            "mutation { startRun(input: { workflowId: \"wf-ops\" }) { id } }",
            json!({}),
        )
        .await;
    assert!(run.body.get("errors").is_none(), "{}", run.body);
    let ack = app
        .gql_auth(
            Some(&both),
            "mutation($i: ID!) { acknowledgeIncident(id: $i) { status } }",
            json!({ "i": incident }),
        )
        .await;
    assert_eq!(ack.data()["acknowledgeIncident"]["status"], "ACKNOWLEDGED");

    // An unknown role is refused by the CLI, naming the roles there are.
    let (ok, out, err) = run_cli(
        &app.env,
        &["key", "create", "--tenant", "default", "--role", "ROOT"],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        err.contains("INTEGRATOR, APPROVER, ADMIN or READER"),
        "{err}"
    );
}
