//! The committed SDL is what the code serves, and request limits hold.

use serde_json::json;

use crate::helpers::{TestEnv, run_cli, spawn_app_with};

#[tokio::test]
async fn schema_graphql_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql"))
            .expect("schema.graphql is committed at the workspace root");
    let env = TestEnv::new().await;
    let (ok, printed, err) = run_cli(&env, &["schema"]).await;
    assert!(ok, "{err}");
    assert_eq!(printed, governance_api::graphql::sdl());
    assert!(
        committed == printed,
        "schema.graphql differs from `governance schema`; regenerate it with `cargo run --bin governance -- schema > schema.graphql`"
    );
}

#[tokio::test]
async fn too_deep_and_too_complex_queries_are_refused_with_a_code() {
    let app = spawn_app_with(|c| {
        c.limits.max_depth = 4;
        c.limits.max_complexity = 20;
    })
    .await;
    let deep = "{ __schema { types { fields { type { ofType { name } } } } } }";
    let response = app.gql(deep, json!({})).await;
    assert_eq!(
        response.error_code().as_deref(),
        Some("BAD_USER_INPUT"),
        "{}",
        response.body
    );
    assert!(
        response.error_message().contains("nested too deep"),
        "{}",
        response.body
    );

    let wide = format!(
        "{{ {} }}",
        (0..8)
            .map(|i| format!("a{i}: me {{ tenant {{ name }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let response = app.gql(&wide, json!({})).await;
    assert_eq!(
        response.error_code().as_deref(),
        Some("BAD_USER_INPUT"),
        "{}",
        response.body
    );
    assert!(
        response.error_message().contains("complex"),
        "{}",
        response.body
    );

    // Within the limits the same shape of request works.
    let ok = app.gql("{ me { tenant { name } } }", json!({})).await;
    assert_eq!(ok.data()["me"]["tenant"]["name"], "default");
}

#[tokio::test]
async fn oversized_bodies_and_garbage_are_refused_with_a_code() {
    let app = spawn_app_with(|c| c.limits.max_body_bytes = 2048).await;
    let big = format!("{{ me {{ tenant {{ name }} }} }} # {}", "x".repeat(4096));
    let response = app.gql(&big, json!({})).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.error_code().as_deref(), Some("BAD_USER_INPUT"));

    let syntax = app.gql("{ me { ", json!({})).await;
    assert_eq!(
        syntax.error_code().as_deref(),
        Some("BAD_USER_INPUT"),
        "{}",
        syntax.body
    );

    let unknown = app.gql("{ noSuchField }", json!({})).await;
    assert_eq!(
        unknown.error_code().as_deref(),
        Some("BAD_USER_INPUT"),
        "{}",
        unknown.body
    );

    let not_json = app
        .http()
        .post(app.url("/graphql"))
        .header("Authorization", format!("Bearer {}", app.key))
        .header("content-type", "application/json")
        .body("this is not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);
    let body: serde_json::Value = not_json.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn unknown_ids_and_missing_objects_have_codes() {
    let app = spawn_app_with(|_| {}).await;
    let missing = app
        .gql(
            "{ run(id: \"run_01jx0000000000000000000000\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(missing.error_code().as_deref(), Some("NOT_FOUND"));
    let bad = app.gql("{ node(id: \"what\") { id } }", json!({})).await;
    assert_eq!(bad.error_code().as_deref(), Some("BAD_USER_INPUT"));
    let empty = app
        .gql(
            "mutation { startRun(input: { workflowId: \"  \" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(empty.error_code().as_deref(), Some("BAD_USER_INPUT"));
    assert_eq!(
        empty.body["errors"][0]["extensions"]["field"],
        "input.workflowId"
    );
}

#[tokio::test]
async fn every_type_field_and_value_is_documented_for_graphiql() {
    let app = crate::helpers::spawn_app().await;
    let data = app
        .gql_ok(
            "{ __schema { types { name kind description
                fields { name description args { name description } }
                inputFields { name description }
                enumValues { name description } } } }",
            json!({}),
        )
        .await;
    let builtin = ["String", "Int", "Float", "Boolean", "ID"];
    let blank = |v: &serde_json::Value| v.as_str().is_none_or(|s| s.trim().is_empty());
    let mut missing = Vec::new();
    for t in data["__schema"]["types"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if name.starts_with("__") || builtin.contains(&name) {
            continue;
        }
        // async-graphql's generic `…Connection` types carry no type description (their fields
        // do); everything of ours must.
        if blank(&t["description"]) && !name.ends_with("Connection") {
            missing.push(name.to_string());
        }
        for (list, what) in [
            ("fields", "field"),
            ("inputFields", "input"),
            ("enumValues", "value"),
        ] {
            for f in t[list].as_array().into_iter().flatten() {
                if blank(&f["description"]) {
                    missing.push(format!("{what} {name}.{}", f["name"].as_str().unwrap()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} undocumented:\n{}",
        missing.len(),
        missing.join("\n")
    );
}
