//! Change audits and the rollout gate, driven as an integrator would: request, poll, gate.

use std::time::Duration;

use governance_api::config::WorkersMode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const REQUEST: &str = "mutation($input: AuditRequestInput!) { requestAudit(input: $input) {
    id jobId contractId status verdict checks { checkId } } }";

const AUDIT: &str = "query($id: ID!) { audit(id: $id) {
    id jobId status verdict verdictReason checksPassed checksFailed checksInconclusive
    checks { id checkId name question result reason evidence }
    healthBefore { name value status } healthAfter { name value status }
    auditedAt durationMs auditorVersion error } }";

const GATE: &str = "query($job: String!) { rolloutGate(jobId: $job) {
    jobId authorized status reason audit { id verdict } } }";

/// A job that did exactly what its contract proposed, inside its window, and left health intact.
pub(crate) fn clean(job: &str) -> Value {
    json!({
        "jobId": job,
        "contractId": "ctr-42",
        "jobStatus": "SUCCEEDED",
        "contractScope": ["svc/api", "db/users"],
        "proposedChanges": [
            { "target": "svc/api", "action": "deploy" },
            { "target": "db/users", "action": "migrate" },
        ],
        "steps": [
            { "target": "svc/api", "action": "deploy", "mutates": true, "rollbackRef": "deploy-41",
              "succeeded": true, "startedAt": "2026-11-20T10:01:00Z", "completedAt": "2026-11-20T10:02:00Z" },
            { "target": "db/users", "action": "migrate", "mutates": true, "rollbackRef": "mig-7-down",
              "succeeded": true, "startedAt": "2026-11-20T10:02:00Z", "completedAt": "2026-11-20T10:03:00Z" },
        ],
        "mutationsObserved": ["svc/api", "db/users"],
        "healthBefore": [ { "name": "error_rate", "value": 0.01, "status": "HEALTHY" },
                          { "name": "p99_ms", "value": 180.0, "status": "HEALTHY" } ],
        "healthAfter": [ { "name": "error_rate", "value": 0.012, "status": "HEALTHY" },
                         { "name": "p99_ms", "value": 190.0, "status": "HEALTHY" } ],
        "activationWindow": { "start": "2026-11-20T10:00:00Z", "end": "2026-11-20T11:00:00Z" },
        "startedAt": "2026-11-20T10:01:00Z",
        "completedAt": "2026-11-20T10:03:00Z",
    })
}

async fn request(app: &TestApp, input: Value) -> String {
    let data = app.gql_ok(REQUEST, json!({ "input": input })).await;
    let audit = &data["requestAudit"];
    assert_eq!(audit["status"], "PENDING", "{audit}");
    assert!(audit["verdict"].is_null());
    audit["id"].as_str().unwrap().to_string()
}

async fn completed(app: &TestApp, id: &str) -> Value {
    app.poll_until(AUDIT, json!({ "id": id }), Duration::from_secs(30), |d| {
        d["audit"]["status"] != "PENDING"
    })
    .await["audit"]
        .clone()
}

async fn gate(app: &TestApp, job: &str) -> Value {
    app.gql_ok(GATE, json!({ "job": job })).await["rolloutGate"].clone()
}

#[tokio::test]
async fn a_clean_job_passes_every_check_and_authorizes_its_rollout() {
    let app = spawn_app().await;
    let before = gate(&app, "job-1").await;
    assert_eq!(before["status"], "PENDING_AUDIT");
    assert_eq!(before["authorized"], false);
    assert!(before["audit"].is_null());

    let id = request(&app, clean("job-1")).await;
    let audit = completed(&app, &id).await;
    assert_eq!(audit["status"], "COMPLETED", "{audit}");
    assert_eq!(audit["verdict"], "PASS", "{audit}");
    assert_eq!(audit["checksPassed"], 7);
    assert_eq!(audit["checksFailed"], 0);
    assert_eq!(audit["checksInconclusive"], 0);
    let ids: Vec<&str> = audit["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["checkId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            "scope_compliance",
            "health_preservation",
            "execution_fidelity",
            "timing_compliance",
            "rollback_availability",
            "signal_consistency",
            "no_unauthorized_mutations",
        ]
    );
    for check in audit["checks"].as_array().unwrap() {
        assert_eq!(check["result"], "PASS", "{check}");
        assert!(!check["question"].as_str().unwrap().is_empty());
        assert!(!check["reason"].as_str().unwrap().is_empty());
        assert!(check["evidence"].is_object(), "{check}");
    }
    assert_eq!(audit["healthBefore"][1]["name"], "p99_ms");
    assert_eq!(audit["healthAfter"][0]["value"], 0.012);
    assert!(audit["auditedAt"].is_string());
    assert!(audit["durationMs"].as_i64().unwrap() >= 0);
    assert!(
        audit["auditorVersion"]
            .as_str()
            .unwrap()
            .starts_with("governance-auditor/")
    );

    let after = gate(&app, "job-1").await;
    assert_eq!(after["status"], "AUTHORIZED");
    assert_eq!(after["authorized"], true);
    assert_eq!(after["audit"]["id"], id);

    // Completion is an outbox event, and the audit is a node.
    use governance_entities::event;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let events = event::Entity::find()
        .filter(event::Column::SubjectId.eq(id.as_str()))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "AUDIT_COMPLETED");
    assert_eq!(events[0].payload["verdict"], "PASS");
    let node = app
        .gql_ok(
            "query($id: ID!) { node(id: $id) { __typename ... on Audit { jobId } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(node["node"]["__typename"], "Audit");
    assert_eq!(node["node"]["jobId"], "job-1");
}

#[tokio::test]
async fn failing_checks_block_the_rollout_and_inconclusive_ones_need_review() {
    let app = spawn_app().await;

    // A step outside the scope, an unproposed mutation and a degraded signal: FAIL.
    let mut bad = clean("job-bad");
    bad["steps"][1]["target"] = json!("db/billing");
    bad["mutationsObserved"] = json!(["svc/api", "db/billing"]);
    bad["healthAfter"][0]["status"] = json!("DEGRADED");
    let failed = completed(&app, &request(&app, bad).await).await;
    assert_eq!(failed["verdict"], "FAIL");
    let result_of = |audit: &Value, check: &str| {
        audit["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["checkId"] == check)
            .unwrap()["result"]
            .clone()
    };
    for check in [
        "scope_compliance",
        "health_preservation",
        "execution_fidelity",
        "no_unauthorized_mutations",
    ] {
        assert_eq!(result_of(&failed, check), "FAIL", "{check}: {failed}");
    }
    assert!(
        failed["verdictReason"]
            .as_str()
            .unwrap()
            .contains("scope_compliance")
    );
    let blocked = gate(&app, "job-bad").await;
    assert_eq!(blocked["status"], "BLOCKED");
    assert_eq!(blocked["authorized"], false);
    assert!(
        blocked["reason"]
            .as_str()
            .unwrap()
            .contains("scope_compliance"),
        "{blocked}"
    );

    // No activation window: timing cannot be judged, nothing fails: INCONCLUSIVE.
    let mut unsure = clean("job-unsure");
    unsure["activationWindow"] = Value::Null;
    let inconclusive = completed(&app, &request(&app, unsure).await).await;
    assert_eq!(inconclusive["verdict"], "INCONCLUSIVE");
    assert_eq!(
        result_of(&inconclusive, "timing_compliance"),
        "INCONCLUSIVE"
    );
    assert_eq!(inconclusive["checksInconclusive"], 1);
    let review = gate(&app, "job-unsure").await;
    assert_eq!(review["status"], "NEEDS_REVIEW");
    assert_eq!(review["authorized"], false);

    // The gate follows the latest completed audit: a passing re-audit authorizes.
    let again = request(&app, clean("job-bad")).await;
    completed(&app, &again).await;
    let now = gate(&app, "job-bad").await;
    assert_eq!(now["status"], "AUTHORIZED");
    assert_eq!(now["audit"]["id"], again);
    let list = app
        .gql_ok(
            "{ audits(jobId: \"job-bad\") { totalCount nodes { id verdict } } }",
            json!({}),
        )
        .await;
    assert_eq!(list["audits"]["totalCount"], 2);
    assert_eq!(list["audits"]["nodes"][0]["id"], again, "newest first");
}

#[tokio::test]
async fn invalid_requests_are_refused_and_nothing_is_stored_or_enqueued() {
    let app = spawn_app().await;
    let mut end_before_start = clean("job-x");
    end_before_start["completedAt"] = json!("2026-11-20T09:00:00Z");
    let mut empty_scope = clean("job-x");
    empty_scope["contractScope"] = json!([]);
    let mut duplicate_signal = clean("job-x");
    duplicate_signal["healthBefore"][1]["name"] = json!("error_rate");
    let mut blank_signal = clean("job-x");
    blank_signal["healthAfter"][0]["name"] = json!(" ");
    let mut window_backwards = clean("job-x");
    window_backwards["activationWindow"]["end"] = json!("2026-11-20T09:00:00Z");
    for (input, field) in [
        (end_before_start, "input.completedAt"),
        (empty_scope, "input.contractScope"),
        (duplicate_signal, "input.healthBefore[1].name"),
        (blank_signal, "input.healthAfter[0].name"),
        (window_backwards, "input.activationWindow.end"),
    ] {
        let response = app.gql(REQUEST, json!({ "input": input })).await;
        assert_eq!(
            response.error_code().as_deref(),
            Some("BAD_USER_INPUT"),
            "{}",
            response.body
        );
        assert_eq!(response.body["errors"][0]["extensions"]["field"], field);
    }
    let list = app.gql_ok("{ audits { totalCount } }", json!({})).await;
    assert_eq!(list["audits"]["totalCount"], 0, "nothing stored");
    let gate = gate(&app, "job-x").await;
    assert_eq!(gate["status"], "PENDING_AUDIT");
}

#[tokio::test]
async fn the_audit_job_run_twice_stores_one_result() {
    // Without workers the audit stays PENDING, and the gate says so.
    let app = spawn_app_with(|c| c.workers = WorkersMode::Off).await;
    let id = request(&app, clean("job-twice")).await;
    let pending = gate(&app, "job-twice").await;
    assert_eq!(pending["status"], "PENDING_AUDIT");
    assert!(
        pending["reason"]
            .as_str()
            .unwrap()
            .contains("no completed audit")
    );

    let tenant = app.gql_ok("{ me { tenant { id } } }", json!({})).await["me"]["tenant"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = governance_workers::jobs::RunAudit {
        tenant_id: tenant,
        audit_id: id.clone(),
    };
    use governance_core::audits::Performed;
    let first = governance_workers::jobs::run_audit(&job, &app.store)
        .await
        .unwrap();
    assert!(matches!(first.value, Performed::Completed(_)));
    assert_eq!(first.events.len(), 1);
    let second = governance_workers::jobs::run_audit(&job, &app.store)
        .await
        .unwrap();
    assert!(matches!(second.value, Performed::AlreadyDone(_)));
    assert!(second.events.is_empty(), "no second completion event");

    let audit = app.gql_ok(AUDIT, json!({ "id": id })).await;
    assert_eq!(audit["audit"]["verdict"], "PASS");
    assert_eq!(audit["audit"]["checks"].as_array().unwrap().len(), 7);
    use governance_entities::audit_check;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let rows = audit_check::Entity::find()
        .filter(audit_check::Column::AuditId.eq(id.as_str()))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 7, "one set of checks");
    assert_eq!(gate(&app, "job-twice").await["status"], "AUTHORIZED");
}

#[tokio::test]
async fn audit_completions_stream_to_subscribers() {
    let app = spawn_app().await;
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe(
        "1",
        "subscription($job: String) { auditEvents(jobId: $job) { cursor auditId jobId status verdict audit { checksPassed } } }",
        json!({ "job": "job-live" }),
    )
    .await;
    // Another job's audit is not this stream's.
    request(&app, clean("job-other")).await;
    let id = request(&app, clean("job-live")).await;
    let event = ws.next_data("1").await;
    let event = &event["auditEvents"];
    assert_eq!(event["auditId"], id);
    assert_eq!(event["jobId"], "job-live");
    assert_eq!(event["status"], "COMPLETED");
    assert_eq!(event["verdict"], "PASS");
    assert_eq!(event["audit"]["checksPassed"], 7);
}
