//! The cross-domain graph as a frontend walks it: every link both ways, connections with filters
//! and pagination, `node(id)` for every type, batched loading (counted in SQL statements),
//! `explain(at:)`, `governanceStatus`, snapshot comparison and the incident workflow.

use std::time::Duration;

use chrono::{DateTime, Utc};
use governance_api::config::WorkersMode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse(s: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect()
}

async fn budget_policy(app: &TestApp, max: i64, action: &str, severity: &str) -> String {
    app.create_policy(json!({
        "name": format!("Budget {max} {action}"), "kind": "TOKEN_BUDGET",
        "rule": { "maxTokens": max }, "action": action, "severity": severity,
    }))
    .await
}

/// A run of `workflow` that is stopped at its second step by a budget of 100 tokens.
async fn stopped_run(app: &TestApp, workflow: &str) -> String {
    let run = app.start_run(workflow).await;
    app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 60 }))
        .await;
    let stop = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 60 }))
        .await;
    assert_eq!(stop["action"], "STOP", "{stop}");
    run
}

async fn completed_run(app: &TestApp, workflow: &str, tokens: i64) -> String {
    let run = app.start_run(workflow).await;
    app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": tokens }))
        .await;
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { status } }",
        json!({ "id": run }),
    )
    .await;
    run
}

const PAGE_WITH_LINKS: &str = "query($first: Int!) { runs(first: $first) {
    totalCount pageInfo { hasNextPage }
    edges { cursor node {
        id status
        policySnapshot { id version }
        violations { totalCount nodes { id severity policy { name } } }
        incident { id status }
        evaluation { outcome }
    } }
} }";

#[tokio::test]
async fn a_page_of_runs_with_its_links_costs_the_same_statements_for_10_and_100_runs() {
    let app = spawn_app().await;
    budget_policy(&app, 100, "BLOCK", "HIGH").await;
    budget_policy(&app, 50, "WARN", "LOW").await;
    for i in 0..100 {
        if i % 2 == 0 {
            stopped_run(&app, "wf-many").await;
        } else {
            completed_run(&app, "wf-many", 10).await;
        }
    }
    // Every run gets its evaluation record from the job queue.
    app.poll_until(
        PAGE_WITH_LINKS,
        json!({ "first": 100 }),
        Duration::from_secs(60),
        |d| {
            d["runs"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| !e["node"]["evaluation"].is_null())
        },
    )
    .await;
    // Measure on a server without background workers, so only the query's statements count.
    let app = app.restart(|c| c.workers = WorkersMode::Off).await;

    let mut costs = Vec::new();
    for first in [10, 100] {
        let before = app.metric("governance_db_statements_total").await;
        let data = app.gql_ok(PAGE_WITH_LINKS, json!({ "first": first })).await;
        let after = app.metric("governance_db_statements_total").await;
        let edges = data["runs"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), first as usize);
        assert_eq!(data["runs"]["totalCount"], 100);
        let stopped = edges
            .iter()
            .filter(|e| e["node"]["status"] == "FAILED_POLICY")
            .collect::<Vec<_>>();
        assert_eq!(
            stopped.len(),
            first as usize / 2,
            "every other run was stopped"
        );
        for e in &stopped {
            assert_eq!(e["node"]["incident"]["status"], "OPEN");
            assert_eq!(
                e["node"]["violations"]["totalCount"], 3,
                "the WARN at step 0, the WARN and the stop at step 1"
            );
            assert_eq!(e["node"]["evaluation"]["outcome"], "VIOLATION");
        }
        costs.push(after - before);
    }
    eprintln!("SQL statements for a page of 10 and of 100 runs with links: {costs:?}");
    assert_eq!(
        costs[0], costs[1],
        "10 runs and 100 runs must cost the same statements: {costs:?}"
    );
    assert!(costs[0] <= 10.0, "a handful of statements, got {costs:?}");
    assert!(costs[0] >= 6.0, "count, page and one per link: {costs:?}");
}

#[tokio::test]
async fn every_link_resolves_in_both_directions() {
    let app = spawn_app().await;
    let block = budget_policy(&app, 100, "BLOCK", "CRITICAL").await;
    let warn = budget_policy(&app, 50, "WARN", "LOW").await;
    let run = stopped_run(&app, "wf-links").await;
    let data = app
        .poll_until(
            "query($id: ID!) { run(id: $id) {
                id evaluation { id outcome snapshotId run { id } snapshot { id } }
                policySnapshot { id policyCount
                    runs { totalCount nodes { id } }
                    policies { totalCount nodes { id name rule policy { id } } } }
                trace { headHash inflection { stepIndex policy { id } }
                    steps { totalCount nodes { id stepIndex entryHash run { id } } } }
                violations { nodes { id policyId action
                    policy { id } run { id } snapshot { id } incident { id }
                    evidence { id contentHash violation { id } } } }
                incident { id run { id } violation { id policyId } evidence { id } exports { totalCount } }
                enforcements { nodes { id actionTaken policy { id } run { id } } }
                exports { totalCount }
            } }",
            json!({ "id": run }),
            Duration::from_secs(30),
            |d| !d["run"]["evaluation"].is_null(),
        )
        .await;
    let r = &data["run"];
    let snapshot = r["policySnapshot"]["id"].as_str().unwrap();
    assert_eq!(r["evaluation"]["run"]["id"], run);
    assert_eq!(r["evaluation"]["snapshot"]["id"], snapshot);
    assert_eq!(r["policySnapshot"]["runs"]["nodes"][0]["id"], run);
    assert_eq!(r["policySnapshot"]["policies"]["totalCount"], 2);
    assert_eq!(r["trace"]["inflection"]["policy"]["id"], block);
    let steps = r["trace"]["steps"]["nodes"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1]["entryHash"], r["trace"]["headHash"]);
    assert_eq!(steps[0]["run"]["id"], run);
    let violations = r["violations"]["nodes"].as_array().unwrap();
    assert_eq!(violations.len(), 3, "WARN at steps 0 and 1, and the stop");
    for v in violations {
        assert_eq!(v["run"]["id"], run);
        assert_eq!(v["snapshot"]["id"], snapshot);
        assert_eq!(v["policy"]["id"], v["policyId"]);
        assert_eq!(v["evidence"]["violation"]["id"], v["id"]);
    }
    let stop = violations.iter().find(|v| v["action"] == "BLOCK").unwrap();
    let warned = violations.iter().find(|v| v["action"] == "WARN").unwrap();
    assert_eq!(warned["policyId"], warn);
    assert!(warned["incident"].is_null(), "a WARN opens no incident");
    assert_eq!(stop["incident"]["id"], r["incident"]["id"]);
    assert_eq!(r["incident"]["run"]["id"], run);
    assert_eq!(r["incident"]["violation"]["id"], stop["id"]);
    assert_eq!(r["incident"]["evidence"]["id"], stop["evidence"]["id"]);
    let enforcements = r["enforcements"]["nodes"].as_array().unwrap();
    assert!(
        enforcements
            .iter()
            .any(|e| e["actionTaken"] == "STOPPED" && e["policy"]["id"] == block)
    );
    assert!(enforcements.iter().all(|e| e["run"]["id"] == run));

    // From the policy's side.
    let p = app
        .gql_ok(
            "query($id: ID!) { policy(id: $id) {
                violations { totalCount nodes { id run { id } } }
                enforcements { totalCount nodes { actionTaken run { id } } }
                history { totalCount nodes { id version policy { id } } }
            } }",
            json!({ "id": block }),
        )
        .await;
    assert_eq!(p["policy"]["violations"]["totalCount"], 1);
    assert_eq!(p["policy"]["violations"]["nodes"][0]["id"], stop["id"]);
    assert_eq!(p["policy"]["enforcements"]["nodes"][0]["run"]["id"], run);
    assert_eq!(p["policy"]["history"]["nodes"][0]["policy"]["id"], block);

    // An export of the incident (written as the export job will write it) shows on both sides.
    let export_id = seed_export(&app, r["incident"]["id"].as_str().unwrap(), &run).await;
    let e = app
        .gql_ok(
            "query($id: ID!, $run: ID!) {
                export(id: $id) { id kind format status progress incident { id } run { id } }
                run(id: $run) { exports { totalCount nodes { id } } incident { exports { nodes { id } } } }
            }",
            json!({ "id": export_id, "run": run }),
        )
        .await;
    assert_eq!(e["export"]["kind"], "SOC2");
    assert_eq!(e["export"]["status"], "PENDING");
    assert_eq!(e["export"]["incident"]["id"], r["incident"]["id"]);
    assert_eq!(e["export"]["run"]["id"], run);
    assert_eq!(e["run"]["exports"]["nodes"][0]["id"], export_id);
    assert_eq!(e["run"]["incident"]["exports"]["nodes"][0]["id"], export_id);

    // node(id) resolves every type, and every id it hands out resolves back to itself.
    let mut every_id = vec![
        (run.clone(), "Run"),
        (snapshot.to_string(), "PolicySnapshot"),
        (block.clone(), "Policy"),
        (stop["id"].as_str().unwrap().to_string(), "Violation"),
        (
            stop["evidence"]["id"].as_str().unwrap().to_string(),
            "Evidence",
        ),
        (
            r["incident"]["id"].as_str().unwrap().to_string(),
            "Incident",
        ),
        (
            r["evaluation"]["id"].as_str().unwrap().to_string(),
            "PolicyEvaluation",
        ),
        (
            enforcements[0]["id"].as_str().unwrap().to_string(),
            "PolicyEnforcement",
        ),
        (steps[1]["id"].as_str().unwrap().to_string(), "TraceStep"),
        (
            p["policy"]["history"]["nodes"][0]["id"]
                .as_str()
                .unwrap()
                .to_string(),
            "PolicyVersion",
        ),
        (export_id.clone(), "Export"),
    ];
    let me = app
        .gql_ok("{ me { tenant { id } apiKey { id } } }", json!({}))
        .await;
    every_id.push((
        me["me"]["tenant"]["id"].as_str().unwrap().to_string(),
        "Tenant",
    ));
    every_id.push((
        me["me"]["apiKey"]["id"].as_str().unwrap().to_string(),
        "ApiKey",
    ));
    let other = app.other_tenant("other").await;
    for (id, typename) in &every_id {
        let found = app
            .gql_ok(
                "query($id: ID!) { node(id: $id) { __typename id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(found["node"]["__typename"], *typename, "{id}");
        assert_eq!(found["node"]["id"], *id);
        let theirs = app
            .gql_auth(
                Some(&other),
                "query($id: ID!) { node(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            theirs.error_code().as_deref(),
            Some("NOT_FOUND"),
            "{id}: {}",
            theirs.body
        );
    }
    let bad = app
        .gql("query { node(id: \"nonsense\") { id } }", json!({}))
        .await;
    assert_eq!(bad.error_code().as_deref(), Some("BAD_USER_INPUT"));
    let step_of_nothing = app
        .gql("query { node(id: \"stp_01abc_3\") { id } }", json!({}))
        .await;
    assert_eq!(step_of_nothing.error_code().as_deref(), Some("NOT_FOUND"));
}

/// An export row as `requestExport` will create it (the request itself comes with the exports
/// issue); enough to walk the links.
async fn seed_export(app: &TestApp, incident_id: &str, run_id: &str) -> String {
    use governance_entities::{enums, export};
    use sea_orm::{ActiveModelTrait, Set};
    let tenant: String = {
        let me = app.gql_ok("{ me { tenant { id } } }", json!({})).await;
        me["me"]["tenant"]["id"].as_str().unwrap().to_string()
    };
    let id = governance_core::ids::new_id(governance_core::ids::prefix::EXPORT);
    let now = Utc::now();
    export::ActiveModel {
        id: Set(id.clone()),
        tenant_id: Set(tenant),
        incident_id: Set(incident_id.to_string()),
        run_id: Set(run_id.to_string()),
        kind: Set(enums::ExportKind::Soc2),
        format: Set(enums::ExportFormat::Pdf),
        status: Set(enums::ExportStatus::Pending),
        progress: Set(0),
        reason: Set(Some("audit".into())),
        requested_by: Set("key_test".into()),
        sha256: Set(None),
        size_bytes: Set(None),
        content: Set(None),
        content_type: Set(None),
        error: Set(None),
        attempts: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        completed_at: Set(None),
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn runs_filter_by_everything_a_console_needs() {
    let app = spawn_app().await;
    budget_policy(&app, 100, "BLOCK", "HIGH").await;
    let t0 = Utc::now();
    let stopped = stopped_run(&app, "wf-a").await;
    let done = completed_run(&app, "wf-b", 10).await;
    let cancelled = app.start_run("wf-b").await;
    app.gql_ok(
        "mutation($id: ID!) { cancelRun(id: $id, reason: \"operator\") { status } }",
        json!({ "id": cancelled }),
    )
    .await;
    let synthetic = app
        .gql_ok(
            "mutation { startRun(input: { workflowId: \"wf-a\", isSynthetic: true, syntheticScenarioId: \"scn-1\" }) { id policySnapshotId } }",
            json!({}),
        )
        .await;
    let synthetic_id = synthetic["startRun"]["id"].as_str().unwrap().to_string();
    // A new policy changes the snapshot of later runs.
    app.create_policy(json!({
        "name": "Tools", "kind": "TOOL_ALLOWLIST", "rule": { "tools": ["search"] },
        "action": "BLOCK", "severity": "MEDIUM",
    }))
    .await;
    let later = app.start_run("wf-a").await;
    let t1 = Utc::now() + chrono::Duration::milliseconds(1);

    let q = "query($f: RunFilter) { runs(filter: $f) { totalCount edges { node { id } } } }";
    let cases = [
        (
            json!({}),
            vec![&later, &synthetic_id, &cancelled, &done, &stopped],
        ),
        (json!({ "status": "RUNNING" }), vec![&later, &synthetic_id]),
        (
            json!({ "status": ["SUCCEEDED", "CANCELLED"] }),
            vec![&cancelled, &done],
        ),
        (
            json!({ "terminationReason": ["POLICY_BLOCK", "BUDGET_EXCEEDED"] }),
            vec![&stopped],
        ),
        (
            json!({ "terminationReason": "USER_ABORT" }),
            vec![&cancelled],
        ),
        (json!({ "workflowId": "wf-b" }), vec![&cancelled, &done]),
        (json!({ "hasIncident": true }), vec![&stopped]),
        (
            json!({ "hasIncident": false, "workflowId": "wf-a" }),
            vec![&later, &synthetic_id],
        ),
        (json!({ "isSynthetic": true }), vec![&synthetic_id]),
        (
            json!({ "isSynthetic": false, "status": "RUNNING" }),
            vec![&later],
        ),
        (
            json!({ "policySnapshotId": synthetic["startRun"]["policySnapshotId"] }),
            vec![&synthetic_id, &cancelled, &done, &stopped],
        ),
        (
            json!({ "from": ts(t0), "to": ts(t1) }),
            vec![&later, &synthetic_id, &cancelled, &done, &stopped],
        ),
        (json!({ "to": ts(t0) }), vec![]),
        (json!({ "from": ts(t1) }), vec![]),
    ];
    for (filter, expected) in cases {
        let data = app.gql_ok(q, json!({ "f": filter })).await;
        let got = ids(&data["runs"]);
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(got, expected, "filter {filter}");
        assert_eq!(
            data["runs"]["totalCount"],
            expected.len(),
            "filter {filter}"
        );
    }
}

#[tokio::test]
async fn pagination_walks_forwards_and_backwards_and_refuses_bad_cursors() {
    let app = spawn_app().await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(app.start_run("wf-pages").await);
    }
    runs.reverse(); // newest first, as listed
    let q = "query($first: Int, $after: String, $last: Int, $before: String) {
        runs(first: $first, after: $after, last: $last, before: $before) {
            totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
            edges { cursor node { id } }
        } }";
    // Forwards, two at a time, to the last page.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app.gql_ok(q, json!({ "first": 2, "after": after })).await;
        let page = &data["runs"];
        assert_eq!(page["totalCount"], 5);
        seen.extend(ids(page));
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, runs);
    // Backwards from the end.
    let data = app.gql_ok(q, json!({ "last": 2 })).await;
    assert_eq!(ids(&data["runs"]), runs[3..].to_vec());
    assert_eq!(data["runs"]["pageInfo"]["hasPreviousPage"], true);
    let before = data["runs"]["pageInfo"]["startCursor"].clone();
    let data = app.gql_ok(q, json!({ "last": 2, "before": before })).await;
    assert_eq!(ids(&data["runs"]), runs[1..3].to_vec());
    let before = data["runs"]["pageInfo"]["startCursor"].clone();
    let data = app.gql_ok(q, json!({ "last": 2, "before": before })).await;
    assert_eq!(ids(&data["runs"]), runs[..1].to_vec());
    assert_eq!(data["runs"]["pageInfo"]["hasPreviousPage"], false);
    // An empty list.
    let empty = app
        .gql_ok(
            "{ runs(filter: { workflowId: \"none\" }) { totalCount edges { cursor } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(empty["runs"]["totalCount"], 0);
    assert_eq!(empty["runs"]["edges"], json!([]));
    assert_eq!(empty["runs"]["pageInfo"]["hasNextPage"], false);
    assert!(empty["runs"]["pageInfo"]["endCursor"].is_null());
    // Bad requests, each a BAD_USER_INPUT that names the argument.
    for (vars, field) in [
        (json!({ "first": 2, "after": "not-a-cursor" }), "after"),
        (json!({ "last": 2, "before": "00ff" }), "before"),
        (json!({ "first": 1000 }), "first"),
        (json!({ "first": -1 }), "first"),
        (json!({ "first": 1, "last": 1 }), "last"),
    ] {
        let response = app.gql(q, vars.clone()).await;
        assert_eq!(
            response.error_code().as_deref(),
            Some("BAD_USER_INPUT"),
            "{vars}: {}",
            response.body
        );
        assert_eq!(
            response.body["errors"][0]["extensions"]["field"], field,
            "{vars}"
        );
    }
    // A nested list pages the same way; a cursor of another list is refused.
    let run = &runs[0];
    for i in 0..3 {
        app.step_ok(run, json!({ "stepIndex": i, "type": "OTHER", "tokens": 1 }))
            .await;
    }
    let steps =
        "query($id: ID!, $after: String) { run(id: $id) { trace { steps(first: 2, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } nodes { stepIndex } } } } }";
    let first = app.gql_ok(steps, json!({ "id": run })).await;
    let page = &first["run"]["trace"]["steps"];
    assert_eq!(page["totalCount"], 3);
    assert_eq!(
        page["nodes"],
        json!([{ "stepIndex": 0 }, { "stepIndex": 1 }])
    );
    let next = app
        .gql_ok(
            steps,
            json!({ "id": run, "after": page["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(
        next["run"]["trace"]["steps"]["nodes"],
        json!([{ "stepIndex": 2 }])
    );
    assert_eq!(
        next["run"]["trace"]["steps"]["pageInfo"]["hasNextPage"],
        false
    );
    let run_cursor =
        app.gql_ok(q, json!({ "first": 1 })).await["runs"]["pageInfo"]["endCursor"].clone();
    let wrong = app
        .gql(
            "query($id: ID!, $after: String) { run(id: $id) { violations(after: $after) { totalCount } } }",
            json!({ "id": run, "after": run_cursor }),
        )
        .await;
    assert_eq!(
        wrong.error_code().as_deref(),
        Some("BAD_USER_INPUT"),
        "{}",
        wrong.body
    );
    // So is a cursor of another top-level list, though its key would compare against this
    // one's: an incident's cursor given to `runs`, and a run's given to `incidents`.
    budget_policy(&app, 100, "BLOCK", "HIGH").await;
    stopped_run(&app, "wf-pages-incident").await;
    let incident_cursor = app
        .gql_ok(
            "{ incidents(first: 1) { pageInfo { endCursor } } }",
            json!({}),
        )
        .await["incidents"]["pageInfo"]["endCursor"]
        .clone();
    assert!(incident_cursor.is_string(), "an incident was opened");
    for (query, cursor) in [
        (q, incident_cursor),
        (
            "query($first: Int, $after: String) { incidents(first: $first, after: $after) { totalCount } }",
            run_cursor,
        ),
    ] {
        let response = app.gql(query, json!({ "first": 2, "after": cursor })).await;
        assert_eq!(
            response.error_code().as_deref(),
            Some("BAD_USER_INPUT"),
            "{}",
            response.body
        );
        assert_eq!(response.body["errors"][0]["extensions"]["field"], "after");
        assert!(response.body["data"].is_null(), "{}", response.body);
    }
}

#[tokio::test]
async fn incidents_and_violations_filter_by_status_severity_policy_run_and_time() {
    let app = spawn_app().await;
    let critical = app
        .create_policy(json!({
            "name": "Secrets", "kind": "CONTENT_RULE", "rule": { "patterns": ["sk-[a-z]{8}"] },
            "action": "BLOCK", "severity": "CRITICAL",
        }))
        .await;
    let medium = budget_policy(&app, 100, "BLOCK", "MEDIUM").await;
    let t0 = Utc::now();
    let leak = app.start_run("wf-i").await;
    app.step_ok(
        &leak,
        json!({ "type": "LLM_CALL", "tokens": 1, "content": "key sk-abcdefgh" }),
    )
    .await;
    let budget = stopped_run(&app, "wf-i").await;
    let t1 = Utc::now() + chrono::Duration::milliseconds(1);
    let incidents = app
        .gql_ok(
            "{ incidents { totalCount nodes { id severity run { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(incidents["incidents"]["totalCount"], 2);
    let leak_incident = incidents["incidents"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["run"]["id"] == leak)
        .unwrap()["id"]
        .clone();
    app.gql_ok(
        "mutation($id: ID!) { acknowledgeIncident(id: $id) { status } }",
        json!({ "id": leak_incident }),
    )
    .await;

    let q =
        "query($f: IncidentFilter) { incidents(filter: $f) { totalCount nodes { run { id } } } }";
    let runs_of = |data: &Value| -> Vec<String> {
        data["incidents"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["run"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    for (filter, expected) in [
        (json!({ "status": "OPEN" }), vec![&budget]),
        (
            json!({ "status": ["OPEN", "ACKNOWLEDGED"] }),
            vec![&budget, &leak],
        ),
        (json!({ "severity": "CRITICAL" }), vec![&leak]),
        (json!({ "minSeverity": "HIGH" }), vec![&leak]),
        (json!({ "minSeverity": "MEDIUM" }), vec![&budget, &leak]),
        (json!({ "runId": budget }), vec![&budget]),
        (
            json!({ "from": ts(t0), "to": ts(t1) }),
            vec![&budget, &leak],
        ),
        (json!({ "from": ts(t1) }), vec![]),
    ] {
        let data = app.gql_ok(q, json!({ "f": filter })).await;
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(runs_of(&data), expected, "incident filter {filter}");
    }

    let v = "query($f: ViolationFilter) { violations(filter: $f) { totalCount nodes { policyId run { id } } } }";
    for (filter, expected) in [
        (json!({}), 2),
        (json!({ "policyId": critical }), 1),
        (json!({ "policyId": medium, "runId": budget }), 1),
        (json!({ "policyId": medium, "runId": leak }), 0),
        (json!({ "severity": ["MEDIUM", "LOW"] }), 1),
        (json!({ "minSeverity": "CRITICAL" }), 1),
        (json!({ "action": "WARN" }), 0),
        (json!({ "to": ts(t0) }), 0),
    ] {
        let data = app.gql_ok(v, json!({ "f": filter })).await;
        assert_eq!(
            data["violations"]["totalCount"], expected,
            "violation filter {filter}"
        );
        assert_eq!(
            data["violations"]["nodes"].as_array().unwrap().len(),
            expected
        );
    }
}

#[tokio::test]
async fn explain_answers_for_every_instant_of_a_run() {
    let app = spawn_app().await;
    let block = budget_policy(&app, 100, "BLOCK", "HIGH").await;
    let warn = budget_policy(&app, 50, "WARN", "LOW").await;
    let (run, started) = app.start_run_at("wf-explain").await;
    let t0 = parse(&json!(started));
    let at = |s: i64| ts(t0 + chrono::Duration::seconds(s));
    let s0 = app
        .step_ok(
            &run,
            json!({ "type": "LLM_CALL", "tokens": 40, "timestamp": at(1) }),
        )
        .await;
    let s1 = app
        .step_ok(
            &run,
            json!({ "type": "LLM_CALL", "tokens": 20, "timestamp": at(2) }),
        )
        .await;
    let s2 = app
        .step_ok(
            &run,
            json!({ "type": "LLM_CALL", "tokens": 50, "timestamp": at(3) }),
        )
        .await;
    assert_eq!(
        (
            s0["action"].as_str(),
            s1["action"].as_str(),
            s2["action"].as_str()
        ),
        (Some("CONTINUE"), Some("WARN"), Some("STOP"))
    );
    let q = "query($id: ID!, $at: DateTime!) { run(id: $id) { policySnapshot { id } explain(at: $at) {
        at phase status note thresholds snapshot { id }
        decision { action reason policyId policyName policyVersion policy { id } threshold observedValue
                   stepIndex stepTimestamp entryHash chainPosition findings }
    } } }";
    let explain = |s: i64| {
        let app = &app;
        let run = run.clone();
        let when = t0 + chrono::Duration::milliseconds(s);
        async move {
            let data = app.gql_ok(q, json!({ "id": run, "at": ts(when) })).await;
            data["run"].clone()
        }
    };

    let before = explain(-1000).await;
    let e = &before["explain"];
    assert_eq!(e["phase"], "BEFORE_START");
    assert!(e["status"].is_null());
    assert!(e["decision"].is_null());
    assert!(e["note"].as_str().unwrap().contains("not started"), "{e}");
    assert_eq!(e["snapshot"]["id"], before["policySnapshot"]["id"]);
    assert_eq!(e["thresholds"][&block]["maxTokens"], 100);

    let e = explain(500).await["explain"].clone();
    assert_eq!(e["phase"], "BEFORE_FIRST_STEP");
    assert_eq!(e["status"], "RUNNING");
    assert!(e["decision"].is_null());
    assert!(e["note"].as_str().unwrap().contains("no step"), "{e}");

    let e = explain(1500).await["explain"].clone();
    assert_eq!(e["phase"], "RUNNING");
    assert_eq!(e["status"], "RUNNING");
    assert_eq!(e["decision"]["action"], "CONTINUE");
    assert_eq!(e["decision"]["stepIndex"], 0);
    assert_eq!(e["decision"]["chainPosition"], 1);
    assert_eq!(e["decision"]["entryHash"], s0["step"]["entryHash"]);
    assert!(e["decision"]["policyId"].is_null());

    let e = explain(2000).await["explain"].clone();
    assert_eq!(e["phase"], "RUNNING", "a step counts from its own instant");
    assert_eq!(e["decision"]["action"], "WARN");
    assert_eq!(e["decision"]["policyId"], warn);
    assert_eq!(e["decision"]["policy"]["id"], warn);
    assert_eq!(e["decision"]["threshold"]["maxTokens"], 50);
    assert_eq!(e["decision"]["observedValue"], "60");
    assert_eq!(e["decision"]["entryHash"], s1["step"]["entryHash"]);

    for instant in [3000, 60_000] {
        let e = explain(instant).await["explain"].clone();
        assert_eq!(e["phase"], "ENDED", "at +{instant} ms");
        assert_eq!(e["status"], "FAILED_POLICY");
        assert_eq!(e["decision"]["action"], "STOP");
        assert_eq!(e["decision"]["policyId"], block);
        assert_eq!(e["decision"]["policyName"], "Budget 100 BLOCK");
        assert_eq!(e["decision"]["threshold"]["maxTokens"], 100);
        assert_eq!(e["decision"]["observedValue"], "110");
        assert_eq!(e["decision"]["stepIndex"], 2);
        assert_eq!(e["decision"]["chainPosition"], 3);
        assert_eq!(e["decision"]["entryHash"], s2["step"]["entryHash"]);
        assert_eq!(
            parse(&e["decision"]["stepTimestamp"]),
            t0 + chrono::Duration::seconds(3)
        );
        assert!(e["note"].as_str().unwrap().contains("ended"), "{e}");
    }

    // The hash named by explain is the one verifyRun checks.
    let v = app
        .gql_ok(
            "query($id: ID!) { verifyRun(id: $id) { intact headHash } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(v["verifyRun"]["intact"], true);
    assert_eq!(v["verifyRun"]["headHash"], s2["step"]["entryHash"]);
}

#[tokio::test]
async fn governance_status_reports_kpis_on_a_known_data_set() {
    let app = spawn_app().await;
    budget_policy(&app, 100, "BLOCK", "HIGH").await;
    budget_policy(&app, 50, "WARN", "LOW").await;
    let t0 = Utc::now();
    // A run stopped by its step 1 whose violating step happened a known time before detection.
    let (slow, started) = app.start_run_at("wf-kpi").await;
    let started = parse(&json!(started));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.step_ok(
        &slow,
        json!({ "type": "LLM_CALL", "tokens": 150, "timestamp": ts(started) }),
    )
    .await;
    let warned = completed_run(&app, "wf-kpi", 60).await;
    let clean = completed_run(&app, "wf-kpi", 10).await;
    let running = app.start_run("wf-kpi").await;

    let q = "query($from: DateTime, $to: DateTime) { governanceStatus(from: $from, to: $to, recentRuns: 3) {
        recentRuns { id policySnapshotId policyVersion }
        kpis { from to runs runsWithSnapshot snapshotCoverage stoppedRuns violations evaluations
               linkedViolations linkedEvaluations verdictLinkage openIncidents acknowledgedIncidents
               incidentsDetected meanTimeToDetectMs }
    } }";
    let window = json!({ "from": ts(t0), "to": ts(Utc::now() + chrono::Duration::hours(1)) });
    let data = app
        .poll_until(q, window.clone(), Duration::from_secs(30), |d| {
            d["governanceStatus"]["kpis"]["evaluations"] == 3
        })
        .await;
    let status = &data["governanceStatus"];
    let recent: Vec<&str> = status["recentRuns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        recent,
        vec![running.as_str(), clean.as_str(), warned.as_str()]
    );
    for r in status["recentRuns"].as_array().unwrap() {
        assert!(r["policySnapshotId"].as_str().unwrap().starts_with("SNAP-"));
        assert_eq!(r["policyVersion"], "0.2.0");
    }
    let k = &status["kpis"];
    assert_eq!(k["runs"], 4);
    assert_eq!(k["runsWithSnapshot"], 4);
    assert_eq!(k["snapshotCoverage"], 1.0);
    assert_eq!(k["stoppedRuns"], 1);
    assert_eq!(
        k["violations"], 3,
        "the stop and its WARN at step 0, the WARN of the 60-token run"
    );
    assert_eq!(k["evaluations"], 3, "one per ended run");
    assert_eq!(k["linkedViolations"], 3);
    assert_eq!(k["linkedEvaluations"], 3);
    assert_eq!(k["verdictLinkage"], 1.0);
    assert_eq!(k["openIncidents"], 1);
    assert_eq!(k["acknowledgedIncidents"], 0);
    assert_eq!(k["incidentsDetected"], 1);
    let mttd = k["meanTimeToDetectMs"].as_f64().unwrap();
    assert!(
        (1200.0..60_000.0).contains(&mttd),
        "detected ≥ 1.2 s after the step: {mttd}"
    );

    // A window before anything happened measures nothing.
    let empty = app
        .gql_ok(q, json!({ "from": ts(t0 - chrono::Duration::hours(2)), "to": ts(t0 - chrono::Duration::hours(1)) }))
        .await;
    let k = &empty["governanceStatus"]["kpis"];
    assert_eq!(k["runs"], 0);
    assert!(k["snapshotCoverage"].is_null());
    assert!(k["verdictLinkage"].is_null());
    assert!(k["meanTimeToDetectMs"].is_null());
    assert_eq!(
        k["openIncidents"], 1,
        "open incidents are counted now, whatever the window"
    );
    let bad = app
        .gql(
            q,
            json!({ "from": ts(t0), "to": ts(t0 - chrono::Duration::hours(1)) }),
        )
        .await;
    assert_eq!(bad.error_code().as_deref(), Some("BAD_USER_INPUT"));
}

#[tokio::test]
async fn comparing_snapshots_names_added_removed_and_changed_policies() {
    let app = spawn_app().await;
    let budget = budget_policy(&app, 100, "BLOCK", "HIGH").await;
    let tools = app
        .create_policy(json!({
            "name": "Tools", "kind": "TOOL_ALLOWLIST", "rule": { "tools": ["search"] },
            "action": "BLOCK", "severity": "MEDIUM",
        }))
        .await;
    let steady = budget_policy(&app, 5000, "WARN", "LOW").await;
    let q = "mutation { startRun(input: { workflowId: \"wf-cmp\" }) { policySnapshotId } }";
    let from = app.gql_ok(q, json!({})).await["startRun"]["policySnapshotId"].clone();
    app.gql_ok(
        "mutation($id: ID!) { updatePolicy(id: $id, input: { rule: { maxTokens: 200 }, severity: CRITICAL }) { version } }",
        json!({ "id": budget }),
    )
    .await;
    app.gql_ok(
        "mutation($id: ID!) { setPolicyEnabled(id: $id, enabled: false) { enabled } }",
        json!({ "id": tools }),
    )
    .await;
    let added = budget_policy(&app, 300, "WARN", "MEDIUM").await;
    let to = app.gql_ok(q, json!({})).await["startRun"]["policySnapshotId"].clone();
    assert_ne!(from, to);

    let cmp = "query($from: ID!, $to: ID!) { comparePolicySnapshots(from: $from, to: $to) {
        identical from { id } to { id }
        added { id name rule } removed { id name } unchanged { id }
        changed { policyId name changedFields oldThreshold newThreshold old { severity version } new { severity version } }
    } }";
    let data = app.gql_ok(cmp, json!({ "from": from, "to": to })).await;
    let c = &data["comparePolicySnapshots"];
    assert_eq!(c["identical"], false);
    assert_eq!(c["from"]["id"], from);
    assert_eq!(c["added"][0]["id"], added);
    assert_eq!(c["added"].as_array().unwrap().len(), 1);
    assert_eq!(c["removed"][0]["id"], tools);
    assert_eq!(c["removed"].as_array().unwrap().len(), 1);
    assert_eq!(c["unchanged"][0]["id"], steady);
    let changed = &c["changed"][0];
    assert_eq!(c["changed"].as_array().unwrap().len(), 1);
    assert_eq!(changed["policyId"], budget);
    assert_eq!(changed["oldThreshold"], json!({ "maxTokens": 100 }));
    assert_eq!(changed["newThreshold"], json!({ "maxTokens": 200 }));
    assert_eq!(changed["old"]["severity"], "HIGH");
    assert_eq!(changed["new"]["severity"], "CRITICAL");
    let fields: Vec<&str> = changed["changedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for field in ["rule", "severity", "version"] {
        assert!(fields.contains(&field), "{fields:?}");
    }

    let same = app.gql_ok(cmp, json!({ "from": from, "to": from })).await;
    assert_eq!(same["comparePolicySnapshots"]["identical"], true);
    assert_eq!(same["comparePolicySnapshots"]["changed"], json!([]));
    let missing = app
        .gql(cmp, json!({ "from": from, "to": "SNAP-000000000000" }))
        .await;
    assert_eq!(missing.error_code().as_deref(), Some("NOT_FOUND"));
    let other = app.other_tenant("other").await;
    let theirs = app
        .gql_auth(Some(&other), cmp, json!({ "from": from, "to": to }))
        .await;
    assert_eq!(theirs.error_code().as_deref(), Some("NOT_FOUND"));
}

#[tokio::test]
async fn incidents_are_acknowledged_then_resolved_with_timestamps_and_events() {
    let app = spawn_app().await;
    budget_policy(&app, 100, "BLOCK", "HIGH").await;
    let run = stopped_run(&app, "wf-ack").await;
    let incident = app
        .gql_ok(
            "query($id: ID!) { run(id: $id) { incident { id status acknowledgedAt resolvedAt } } }",
            json!({ "id": run }),
        )
        .await["run"]["incident"]
        .clone();
    assert_eq!(incident["status"], "OPEN");
    assert!(incident["acknowledgedAt"].is_null());
    let id = incident["id"].clone();
    let ack = "mutation($id: ID!) { acknowledgeIncident(id: $id) { status acknowledgedAt resolvedAt updatedAt } }";
    let resolve = "mutation($id: ID!, $note: String!) { resolveIncident(id: $id, note: $note) { status note acknowledgedAt resolvedAt } }";

    let other = app.other_tenant("other").await;
    let theirs = app.gql_auth(Some(&other), ack, json!({ "id": id })).await;
    assert_eq!(theirs.error_code().as_deref(), Some("NOT_FOUND"));

    let first = app.gql_ok(ack, json!({ "id": id })).await["acknowledgeIncident"].clone();
    assert_eq!(first["status"], "ACKNOWLEDGED");
    assert!(first["acknowledgedAt"].is_string());
    let again = app.gql_ok(ack, json!({ "id": id })).await["acknowledgeIncident"].clone();
    assert_eq!(again, first, "acknowledging twice changes nothing");

    let blank = app.gql(resolve, json!({ "id": id, "note": "   " })).await;
    assert_eq!(blank.error_code().as_deref(), Some("BAD_USER_INPUT"));
    let unchanged = app
        .gql_ok(
            "query($id: ID!) { incident(id: $id) { status note } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        unchanged["incident"]["status"], "ACKNOWLEDGED",
        "nothing half-written"
    );

    let resolved = app
        .gql_ok(
            resolve,
            json!({ "id": id, "note": "budget raised after review" }),
        )
        .await["resolveIncident"]
        .clone();
    assert_eq!(resolved["status"], "RESOLVED");
    assert_eq!(resolved["note"], "budget raised after review");
    assert_eq!(resolved["acknowledgedAt"], first["acknowledgedAt"]);
    assert!(parse(&resolved["resolvedAt"]) >= parse(&first["acknowledgedAt"]));
    let same = app
        .gql_ok(
            resolve,
            json!({ "id": id, "note": "budget raised after review" }),
        )
        .await["resolveIncident"]
        .clone();
    assert_eq!(
        same, resolved,
        "resolving again with the same note changes nothing"
    );
    for (query, vars) in [
        (ack, json!({ "id": id })),
        (resolve, json!({ "id": id, "note": "something else" })),
    ] {
        let refused = app.gql(query, vars).await;
        assert_eq!(
            refused.error_code().as_deref(),
            Some("CONFLICT"),
            "{}",
            refused.body
        );
    }

    // One outbox event per change, in sequence after the stop's.
    use governance_entities::event;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    let events = event::Entity::find()
        .filter(event::Column::SubjectId.eq(id.as_str().unwrap()))
        .order_by_asc(event::Column::Seq)
        .all(&app.db)
        .await
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "INCIDENT_CREATED",
            "INCIDENT_ACKNOWLEDGED",
            "INCIDENT_RESOLVED"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(events[2].payload["status"], "RESOLVED");
}
