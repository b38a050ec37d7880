//! Operation limits and rate limits as an abusive caller meets them: aliases, root fields,
//! batches, page-multiplied cost and the costly fields' quotas are refused before anything runs,
//! with the limit named; and the HTTP hygiene around them (headers, file modes).

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

fn limit_of(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["limit"].as_str()
}

const VERIFY: &str = "query($id: ID!) { verifyRun(id: $id) { intact } }";

async fn verify_ok(app: &TestApp, run_id: &str) {
    let data = app.gql_ok(VERIFY, json!({ "id": run_id })).await;
    assert_eq!(data["verifyRun"]["intact"], true, "{data}");
}

#[tokio::test]
async fn aliased_costly_fields_are_refused_before_any_runs() {
    let app = spawn_app_with(|c| c.rate_limits.verify_run_per_minute = 2).await;
    let run = app.start_run("limits").await;
    let aliased = format!(
        "{{ {} }}",
        (0..31)
            .map(|i| format!("v{i}: verifyRun(id: \"{run}\") {{ intact }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let refused = app.gql(&aliased, json!({})).await;
    assert_eq!(
        refused.error_code().as_deref(),
        Some("BAD_USER_INPUT"),
        "{}",
        refused.body
    );
    assert_eq!(limit_of(&refused.body), Some("limits.max_aliases"));
    assert!(
        refused
            .error_message()
            .contains("31 aliases, 1 more than the limit of 30"),
        "{}",
        refused.body
    );
    assert!(refused.body["data"].is_null(), "{}", refused.body);
    // Nothing ran: the tenant's whole verifyRun quota (2 a minute) is still there.
    verify_ok(&app, &run).await;
    verify_ok(&app, &run).await;
}

#[tokio::test]
async fn too_many_root_fields_are_refused() {
    let app = spawn_app_with(|c| c.limits.max_root_fields = 5).await;
    let five = format!("{{ {} }}", ["me { tenant { name } }"; 5].join(" "));
    app.gql_ok(&five, json!({})).await;
    let six = format!("{{ {} }}", ["me { tenant { name } }"; 6].join(" "));
    let refused = app.gql(&six, json!({})).await;
    assert_eq!(refused.error_code().as_deref(), Some("BAD_USER_INPUT"));
    assert_eq!(limit_of(&refused.body), Some("limits.max_root_fields"));
    assert!(
        refused.error_message().contains("6 root fields, 1 more"),
        "{}",
        refused.body
    );
}

#[tokio::test]
async fn batches_are_capped_and_can_be_turned_off() {
    let app = spawn_app_with(|c| c.limits.max_batch = 3).await;
    let post = |n: usize, app: &TestApp| {
        let body = Value::Array(vec![json!({ "query": "{ me { tenant { name } } }" }); n]);
        app.http()
            .post(app.url("/graphql"))
            .header("Authorization", format!("Bearer {}", app.key))
            .json(&body)
            .send()
    };
    let ok = post(3, &app).await.unwrap();
    assert_eq!(ok.status(), 200);
    let answers: Value = ok.json().await.unwrap();
    assert_eq!(answers.as_array().map(Vec::len), Some(3), "{answers}");

    let refused = post(4, &app).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(limit_of(&body), Some("limits.max_batch"));
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("4 operations, 1 more than the limit of 3"),
        "{body}"
    );

    let off = spawn_app_with(|c| c.limits.max_batch = 0).await;
    let refused = post(1, &off).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(limit_of(&body), Some("limits.max_batch"));
    // A single operation (not an array) is not a batch.
    off.gql_ok("{ me { tenant { name } } }", json!({})).await;
}

#[tokio::test]
async fn a_list_multiplies_its_childrens_cost_by_its_page_size() {
    let app = spawn_app_with(|c| c.limits.max_complexity = 5_000).await;
    let shape = |runs: u32| {
        format!(
            "{{ runs(first: {runs}) {{ nodes {{ id trace {{ steps(first: 100) {{ nodes {{ stepIndex entryHash }} }} }} }} }} }}"
        )
    };
    // 10 runs × 100 steps fits; the same shape over 100 runs costs ten times as much.
    app.gql_ok(&shape(10), json!({})).await;
    let refused = app.gql(&shape(100), json!({})).await;
    assert_eq!(
        refused.error_code().as_deref(),
        Some("BAD_USER_INPUT"),
        "{}",
        refused.body
    );
    assert_eq!(limit_of(&refused.body), Some("limits.max_complexity"));
    assert!(
        refused
            .error_message()
            .contains("more than the limit of 5000"),
        "{}",
        refused.body
    );
    // Page sizes given as variables count too.
    let by_variable = app
        .gql(
            "query($n: Int) { runs(first: $n) { nodes { trace { steps(first: 100) { nodes { stepIndex } } } } } }",
            json!({ "n": 100 }),
        )
        .await;
    assert_eq!(limit_of(&by_variable.body), Some("limits.max_complexity"));
}

#[tokio::test]
async fn four_nested_lists_stay_refused_with_the_defaults() {
    let app = spawn_app().await;
    let nested = "{ policySnapshots(first: 100) { nodes { runs(first: 100) { nodes { violations(first: 100) { nodes { run { enforcements(first: 100) { nodes { id } } } } } } } } } }";
    let refused = app.gql(nested, json!({})).await;
    assert_eq!(refused.error_code().as_deref(), Some("BAD_USER_INPUT"));
    assert_eq!(limit_of(&refused.body), Some("limits.max_complexity"));
}

#[tokio::test]
async fn costly_fields_are_rate_limited_per_tenant() {
    let app = spawn_app_with(|c| c.rate_limits.verify_run_per_minute = 2).await;
    let run = app.start_run("limits").await;
    verify_ok(&app, &run).await;
    verify_ok(&app, &run).await;
    let limited = app.gql(VERIFY, json!({ "id": run })).await;
    assert_eq!(
        limited.error_code().as_deref(),
        Some("RATE_LIMITED"),
        "{}",
        limited.body
    );
    let retry = limited.body["errors"][0]["extensions"]["retryAfterMs"]
        .as_u64()
        .expect("retryAfterMs");
    // One call comes back every 30 s at 2 a minute.
    assert!((1..=30_000).contains(&retry), "{retry}");
    assert!(
        limited
            .error_message()
            .contains("rate_limits.verify_run_per_minute"),
        "{}",
        limited.body
    );
    // Another tenant has its own quota.
    let other = app.other_tenant("other").await;
    let theirs = app
        .gql_auth(
            Some(&other),
            "mutation { startRun(input: { workflowId: \"w\" }) { id } }",
            json!({}),
        )
        .await;
    let their_run = theirs.data()["startRun"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = app
        .gql_auth(Some(&other), VERIFY, json!({ "id": their_run }))
        .await;
    assert_eq!(answer.data()["verifyRun"]["intact"], true);
}

#[tokio::test]
async fn graphiql_cannot_be_framed_and_nothing_is_sniffed() {
    let app = spawn_app().await;
    let page = app.http().get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let api = app
        .http()
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
}

#[cfg(unix)]
#[tokio::test]
async fn the_embedded_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    if app.env.database_url.is_some() {
        return; // PostgreSQL: no database file here.
    }
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let dir = app.env.data_dir();
    assert_eq!(mode(dir.clone()), 0o700);
    // Write something, so SQLite has its WAL file too.
    app.start_run("modes").await;
    for name in ["governance.db", "governance.db-wal"] {
        assert_eq!(mode(dir.join(name)), 0o600, "{name}");
    }
}

const CREATE_POLICY: &str =
    "mutation($input: CreatePolicyInput!) { createPolicy(input: $input) { id } }";

#[tokio::test]
async fn a_policy_whose_cost_run_data_could_make_unbounded_is_refused_when_written() {
    let app = spawn_app().await;
    // The policy that once stalled every tenant for 51 s with a 10,000-item metadata list.
    let refused = app
        .gql(
            CREATE_POLICY,
            json!({ "input": {
                "name": "quadratic", "kind": "EXPRESSION", "action": "BLOCK", "severity": "HIGH",
                "rule": { "expression": "run.metadata.l.map(a, run.metadata.l.map(b, a + b)).size() > 0" },
            } }),
        )
        .await;
    assert_eq!(refused.error_code().as_deref(), Some("BAD_USER_INPUT"));
    assert_eq!(
        refused.body["errors"][0]["extensions"]["field"],
        "input.rule.expression"
    );
    assert!(
        refused.error_message().contains("nests one comprehension"),
        "{}",
        refused.body
    );
    let listed = app.gql_ok("{ policies { totalCount } }", json!({})).await;
    assert_eq!(listed["policies"]["totalCount"], 0, "nothing was written");
}

#[tokio::test]
async fn a_step_over_the_evaluation_budget_stops_its_run_alone_and_others_carry_on() {
    let app = spawn_app_with(|c| c.limits.evaluation_budget_ms = 1).await;
    // Linear, so it is accepted; over a 30,000-item list it takes longer than 1 ms.
    app.create_policy(json!({
        "name": "big list", "kind": "EXPRESSION", "action": "BLOCK", "severity": "HIGH",
        "rule": { "expression": "run.metadata.l.map(a, a + 1).filter(b, b > 5).size() > 0" },
    }))
    .await;
    let started = app
        .gql_ok(
            "mutation($input: StartRunInput!) { startRun(input: $input) { id } }",
            json!({ "input": { "workflowId": "heavy", "metadata": { "l": vec![1; 30_000] } } }),
        )
        .await;
    let heavy = started["startRun"]["id"].as_str().unwrap().to_string();
    let answer = app
        .record_step(&heavy, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    let decision = &answer.body["data"]["recordStep"];
    assert_eq!(decision["action"], "STOP", "{}", answer.body);
    assert_eq!(decision["recorded"], false);
    assert_eq!(decision["terminationReason"], "SYSTEM_FAILURE");
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("evaluation budget (1 ms per step) was exceeded"),
        "{}",
        answer.body
    );
    // The run is stopped, so its later steps are refused.
    let later = app
        .record_step(&heavy, json!({ "type": "LLM_CALL", "tokens": 1 }))
        .await;
    assert_eq!(later.error_code().as_deref(), Some("RUN_TERMINATED"));
    // Another tenant (another snapshot) is not affected at all.
    let other = app.other_tenant("other").await;
    let theirs = app
        .gql_auth(
            Some(&other),
            "mutation { startRun(input: { workflowId: \"light\" }) { id } }",
            json!({}),
        )
        .await;
    let light = theirs.data()["startRun"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        let step = app
            .gql_auth(
                Some(&other),
                "mutation($input: RecordStepInput!) { recordStep(input: $input) { action } }",
                json!({ "input": { "runId": light, "type": "LLM_CALL", "tokens": 1 } }),
            )
            .await;
        assert_eq!(step.data()["recordStep"]["action"], "CONTINUE");
    }
}
