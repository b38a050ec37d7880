//! Tenancy and authentication as a client sees them.

use serde_json::json;

use crate::helpers::{key_in, run_cli, spawn_app};

const ME: &str = "{ me { tenant { id name } apiKey { id prefix } } }";

#[tokio::test]
async fn first_start_bootstraps_the_default_tenant_once() {
    let app = spawn_app().await;
    let data = app.gql_ok(ME, json!({})).await;
    assert_eq!(data["me"]["tenant"]["name"], "default");
    assert!(
        app.key
            .starts_with(data["me"]["apiKey"]["prefix"].as_str().unwrap())
    );

    // The key is written to the data directory, readable only by its owner.
    let path = app.env.data_dir().join("default-tenant.key");
    let written = std::fs::read_to_string(&path).expect("key file");
    assert_eq!(written.trim(), app.key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // A restart on the same database creates nothing and prints no key.
    let env = app.stop().await;
    let config = env.config();
    let again = governance_api::Application::build(config)
        .await
        .expect("restart");
    assert!(again.bootstrap_key().is_none());
}

#[tokio::test]
async fn requests_without_a_valid_key_are_unauthenticated() {
    let app = spawn_app().await;
    for authorization in [
        None,
        Some("Bearer gov_000000000000000000000000000000000000000000000000".to_string()),
        Some("Bearer not-a-key".to_string()),
        Some(format!("Basic {}", app.key)),
    ] {
        let response = app.gql_auth(authorization.as_deref(), ME, json!({})).await;
        assert_eq!(response.status, 401, "{authorization:?}: {}", response.body);
        assert_eq!(response.error_code().as_deref(), Some("UNAUTHENTICATED"));
        assert!(response.body["data"].is_null());
    }
}

#[tokio::test]
async fn cli_creates_tenants_and_keys_and_revoked_keys_stop_working() {
    let app = spawn_app().await;

    let (ok, out, err) = run_cli(&app.env, &["tenant", "create", "acme"]).await;
    assert!(ok, "tenant create failed: {err}");
    let acme_key = key_in(&out).expect("the new key is printed");
    let acme = app
        .gql_auth(Some(&format!("Bearer {acme_key}")), ME, json!({}))
        .await;
    assert_eq!(acme.data()["me"]["tenant"]["name"], "acme");

    // Creating the same tenant again is refused.
    let (ok, _, err) = run_cli(&app.env, &["tenant", "create", "acme"]).await;
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    let (ok, out, err) = run_cli(
        &app.env,
        &["key", "create", "--tenant", "acme", "--name", "ci"],
    )
    .await;
    assert!(ok, "key create failed: {err}");
    let second = key_in(&out).expect("key printed");
    let me = app
        .gql_auth(Some(&format!("Bearer {second}")), ME, json!({}))
        .await;
    let key_id = me.data()["me"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (ok, out, err) = run_cli(&app.env, &["key", "revoke", &key_id]).await;
    assert!(ok, "revoke failed: {err}");
    assert!(out.contains(&key_id));
    let refused = app
        .gql_auth(Some(&format!("Bearer {second}")), ME, json!({}))
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.error_code().as_deref(), Some("UNAUTHENTICATED"));

    // The tenant's other key still works: revocation is per key.
    let still = app
        .gql_auth(Some(&format!("Bearer {acme_key}")), ME, json!({}))
        .await;
    assert_eq!(still.data()["me"]["tenant"]["name"], "acme");
}

const STEP: &str = "mutation($input: RecordStepInput!) { recordStep(input: $input) { action recorded step { stepIndex } } }";

/// A key that records steps is not read on every step; its revocation must still stop the very
/// next step, which is then not recorded.
#[tokio::test]
async fn a_key_revoked_while_it_records_steps_records_nothing_more() {
    let app = spawn_app().await;
    let (ok, out, err) = run_cli(
        &app.env,
        &["key", "create", "--tenant", "default", "--name", "agent"],
    )
    .await;
    assert!(ok, "key create failed: {err}");
    let agent = format!("Bearer {}", key_in(&out).expect("key printed"));
    let key_id = app.gql_auth(Some(&agent), ME, json!({})).await.data()["me"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run_id = app.start_run("wf-revoked-agent").await;
    let step = |i: i64| json!({ "input": { "runId": run_id, "type": "LLM_CALL", "tokens": 10, "content": format!("step {i}") } });
    for i in 0..3 {
        let response = app.gql_auth(Some(&agent), STEP, step(i)).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.data()["recordStep"]["step"]["stepIndex"], i);
    }

    let (ok, _, err) = run_cli(&app.env, &["key", "revoke", &key_id]).await;
    assert!(ok, "revoke failed: {err}");
    for i in 3..5 {
        let refused = app.gql_auth(Some(&agent), STEP, step(i)).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert_eq!(refused.error_code().as_deref(), Some("UNAUTHENTICATED"));
        assert!(refused.body["data"].is_null(), "{}", refused.body);
    }

    // Nothing of the refused steps was written: the run still has 3 steps, and the tenant's
    // other key records the next one as step 3.
    let run = app
        .gql_ok(
            "query($id: ID!) { run(id: $id) { stepCount status } }",
            json!({ "id": run_id }),
        )
        .await;
    assert_eq!(run["run"]["stepCount"], 3);
    assert_eq!(run["run"]["status"], "RUNNING");
    let next = app
        .step_ok(
            &run_id,
            json!({ "type": "LLM_CALL", "tokens": 10, "content": "after" }),
        )
        .await;
    assert_eq!(next["step"]["stepIndex"], 3);
}

#[tokio::test]
async fn tenants_cannot_see_each_others_objects() {
    let app = spawn_app().await;
    let run_id = app.start_run("wf-isolation").await;
    let (ok, out, _) = run_cli(&app.env, &["tenant", "create", "other"]).await;
    assert!(ok);
    let other = format!("Bearer {}", key_in(&out).unwrap());
    for query in [
        "query($id: ID!) { run(id: $id) { id } }",
        "query($id: ID!) { node(id: $id) { id } }",
    ] {
        let response = app
            .gql_auth(Some(&other), query, json!({ "id": run_id }))
            .await;
        assert_eq!(
            response.error_code().as_deref(),
            Some("NOT_FOUND"),
            "{}",
            response.body
        );
    }
    let own = app
        .gql_ok(
            "query($id: ID!) { node(id: $id) { id ... on Run { workflowId } } }",
            json!({ "id": run_id }),
        )
        .await;
    assert_eq!(own["node"]["workflowId"], "wf-isolation");
}
