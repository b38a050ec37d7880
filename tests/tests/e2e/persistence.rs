//! The database itself refuses to rewrite history: append-only tables reject UPDATE and DELETE,
//! and a run's snapshot can never change.

use std::time::Duration;

use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::helpers::{postgres_admin_url, redis_url, spawn_app};

/// The suite runs on the backend it says it runs on (guards against a silently ignored setting).
#[tokio::test]
async fn the_suite_runs_on_the_configured_backend() {
    let app = spawn_app().await;
    let expected = if postgres_admin_url().is_some() {
        sea_orm::DbBackend::Postgres
    } else {
        sea_orm::DbBackend::Sqlite
    };
    assert_eq!(app.db.get_database_backend(), expected);
    let ready: serde_json::Value = app
        .http()
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["queue"], "ok");
    if let Some(url) = redis_url() {
        // The queue lives in Redis under this test's namespace.
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let run_id = app.start_run("wf-backend").await;
        app.gql_ok(
            "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
            json!({ "id": run_id }),
        )
        .await;
        app.poll_until(
            "query($id: ID!) { run(id: $id) { evaluation { id } } }",
            json!({ "id": run_id }),
            Duration::from_secs(30),
            |d| !d["run"]["evaluation"].is_null(),
        )
        .await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}.*", app.env.namespace))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            !keys.is_empty(),
            "no Redis keys under namespace {}",
            app.env.namespace
        );
    }
}

#[tokio::test]
async fn append_only_tables_refuse_update_and_delete_in_the_database() {
    let app = spawn_app().await;
    let run_id = app.start_run("wf-triggers").await;
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
        json!({ "id": run_id }),
    )
    .await;
    app.poll_until(
        "query($id: ID!) { run(id: $id) { evaluation { id } } }",
        json!({ "id": run_id }),
        Duration::from_secs(30),
        |d| !d["run"]["evaluation"].is_null(),
    )
    .await;

    // Rows written by the service in each of these tables; none may be changed or removed.
    for (table, set) in [
        ("policy_snapshots", "policy_count = policy_count + 1"),
        ("events", "kind = 'FORGED'"),
        ("policy_evaluations", "reason = 'rewritten'"),
    ] {
        let update = app
            .db
            .execute_unprepared(&format!("UPDATE {table} SET {set}"))
            .await;
        let err = update
            .expect_err(&format!("UPDATE on {table} must fail"))
            .to_string();
        assert!(err.contains("append-only"), "{table}: {err}");
        let delete = app
            .db
            .execute_unprepared(&format!("DELETE FROM {table}"))
            .await;
        let err = delete
            .expect_err(&format!("DELETE on {table} must fail"))
            .to_string();
        assert!(err.contains("append-only"), "{table}: {err}");
    }

    // A run's snapshot id can never change; other columns of a run can.
    let err = app
        .db
        .execute_unprepared(&format!(
            "UPDATE runs SET policy_snapshot_id = 'SNAP-000000000000' WHERE id = '{run_id}'"
        ))
        .await
        .expect_err("changing a run's snapshot must fail")
        .to_string();
    assert!(err.contains("immutable"), "{err}");
}

#[tokio::test]
async fn the_same_policy_set_gives_the_same_snapshot() {
    let app = spawn_app().await;
    let a = app.start_run("wf-a").await;
    let b = app.start_run("wf-b").await;
    let query = "query($id: ID!) { run(id: $id) { policySnapshotId policySnapshot { id contentHash policiesJson thresholdsJson policyCount } } }";
    let sa = app.gql_ok(query, json!({ "id": a })).await;
    let sb = app.gql_ok(query, json!({ "id": b })).await;
    assert_eq!(sa["run"]["policySnapshot"], sb["run"]["policySnapshot"]);
    let snap = &sa["run"]["policySnapshot"];
    let hash = snap["contentHash"].as_str().unwrap();
    assert_eq!(
        snap["id"].as_str().unwrap(),
        format!("SNAP-{}", &hash[..12])
    );
    assert_eq!(sa["run"]["policySnapshotId"], snap["id"]);
    // Anyone can recompute the hash from the two canonical texts.
    let recomputed = governance_core::hashing::sha256_hex(format!(
        "{}{}",
        snap["policiesJson"].as_str().unwrap(),
        snap["thresholdsJson"].as_str().unwrap()
    ));
    assert_eq!(recomputed, hash);
}
