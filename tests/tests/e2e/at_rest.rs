//! What the database holds cannot undo the service's guarantees: on PostgreSQL the server logs
//! in as a runtime role that owns nothing (it cannot drop or disable a trigger), and webhook
//! secrets and the download-link key are stored sealed under a key kept outside the database.

use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement};
use serde_json::json;

use crate::helpers::{RUNTIME_ROLE, TestApp, spawn_app};

const CREATE: &str = "mutation($url: String!) {
    createWebhook(url: $url, events: [INCIDENT_CREATED]) { secret webhook { id } } }";

async fn create_webhook(app: &TestApp, url: &str) -> (String, String) {
    let data = app.gql_ok(CREATE, json!({ "url": url })).await;
    (
        data["createWebhook"]["webhook"]["id"]
            .as_str()
            .unwrap()
            .to_string(),
        data["createWebhook"]["secret"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// The row as stored, read as the database's administrator.
async fn stored_hook(app: &TestApp, id: &str) -> governance_entities::webhook::Model {
    governance_entities::webhook::Entity::find_by_id(id.to_string())
        .one(&app.db)
        .await
        .unwrap()
        .expect("the endpoint's row")
}

async fn stored_download_key(app: &TestApp) -> String {
    governance_entities::service_key::Entity::find_by_id("export_download".to_string())
        .one(&app.db)
        .await
        .unwrap()
        .expect("the download key's row")
        .key
}

/// `sql` run as the database's administrator (`$1`, `$2`… in order, also on SQLite).
async fn as_admin(app: &TestApp, sql: &str, values: Vec<sea_orm::Value>) {
    let backend = app.db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => sql.replace("$1", "?").replace("$2", "?"),
        _ => sql.to_string(),
    };
    app.db
        .execute_raw(Statement::from_sql_and_values(backend, &sql, values))
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
}

#[tokio::test]
async fn the_service_logs_in_as_a_role_that_cannot_undo_the_triggers() {
    let app = spawn_app().await;
    if app.env.migration_database_url.is_none() {
        eprintln!("SQLite has no roles: runtime role check skipped");
        return;
    }
    // The server's own pool.
    let server = app.store.db();
    let role = server
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_user::text",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    assert_eq!(role, RUNTIME_ROLE);

    // It records steps (the whole suite runs so on PostgreSQL) …
    let run = app.start_run("wf-roles").await;
    let step = app
        .step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 5 }))
        .await;
    assert_eq!(step["action"], "CONTINUE", "{step}");

    // … and cannot take the guard off what it recorded, nor rewrite it without the guard.
    for (sql, words) in [
        (
            "DROP TRIGGER trace_steps_append_only ON trace_steps",
            "must be owner",
        ),
        (
            "ALTER TABLE trace_steps DISABLE TRIGGER trace_steps_append_only",
            "must be owner",
        ),
        (
            "ALTER TABLE trace_steps DISABLE TRIGGER USER",
            "must be owner",
        ),
        (
            "SET session_replication_role = replica",
            "permission denied",
        ),
        ("UPDATE trace_steps SET tokens = 1", "permission denied"),
        ("DELETE FROM trace_steps", "permission denied"),
        ("TRUNCATE trace_steps", "permission denied"),
        ("DELETE FROM log_leaves", "permission denied"),
    ] {
        let err = server
            .execute_unprepared(sql)
            .await
            .map(|_| ())
            .expect_err(sql)
            .to_string();
        assert!(
            err.contains(words),
            "`{sql}` failed without `{words}`: {err}"
        );
    }
    let verified = app
        .gql_ok(
            "query($id: ID!) { verifyRun(id: $id) { intact } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(verified["verifyRun"]["intact"], true, "{verified}");
}

#[tokio::test]
async fn webhook_secrets_and_the_download_key_are_stored_sealed() {
    let app = spawn_app().await;
    let (a, secret_a) = create_webhook(&app, "http://127.0.0.1:9/a").await;
    let (b, _) = create_webhook(&app, "http://127.0.0.1:9/b").await;

    let row = stored_hook(&app, &a).await;
    let key_part = secret_a.strip_prefix("whsec_").unwrap();
    assert!(row.secret.starts_with("enc:v1:"), "{}", row.secret);
    assert!(
        !row.secret.contains(key_part),
        "the stored column holds no part of the secret"
    );
    assert_eq!(
        governance_core::webhooks::signing_secret(&app.store, &row).unwrap(),
        secret_a
    );
    let download = stored_download_key(&app).await;
    assert!(download.starts_with("enc:v1:"), "{download}");
    let in_use = hex::encode(
        governance_core::exports::download_key(&app.store)
            .await
            .unwrap(),
    );
    assert!(!download.contains(&in_use));

    // A ciphertext copied to another row does not open there: B is not signed with A's secret.
    as_admin(
        &app,
        "UPDATE webhooks SET secret = (SELECT secret FROM webhooks WHERE id = $1) WHERE id = $2",
        vec![a.clone().into(), b.clone().into()],
    )
    .await;
    let moved = stored_hook(&app, &b).await;
    assert_eq!(moved.secret, row.secret);
    let err = governance_core::webhooks::signing_secret(&app.store, &moved)
        .unwrap_err()
        .to_string();
    assert!(err.contains("copied from another row"), "{err}");

    // Rotation seals the new secret too.
    let rotated = app
        .gql_ok(
            "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }",
            json!({ "id": a }),
        )
        .await["rotateWebhookSecret"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let row = stored_hook(&app, &a).await;
    assert!(row.secret.starts_with("enc:v1:"));
    assert_eq!(
        governance_core::webhooks::signing_secret(&app.store, &row).unwrap(),
        rotated
    );
}

#[tokio::test]
async fn secrets_stored_in_plaintext_are_sealed_at_start_and_a_wrong_key_fails_the_start() {
    let app = spawn_app().await;
    let (hook, _) = create_webhook(&app, "http://127.0.0.1:9/a").await;
    // As an earlier version stored them.
    let legacy_secret = "whsec_c2VjcmV0LXdyaXR0ZW4tYmVmb3JlLXNlYWxpbmctZXhpc3RlZA==";
    let legacy_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    as_admin(
        &app,
        "UPDATE webhooks SET secret = $1 WHERE id = $2",
        vec![legacy_secret.into(), hook.clone().into()],
    )
    .await;
    as_admin(
        &app,
        "UPDATE service_keys SET key = $1 WHERE name = 'export_download'",
        vec![legacy_key.into()],
    )
    .await;

    let app = app.restart(|_| {}).await;
    let row = stored_hook(&app, &hook).await;
    assert!(row.secret.starts_with("enc:v1:"), "{}", row.secret);
    assert_eq!(
        governance_core::webhooks::signing_secret(&app.store, &row).unwrap(),
        legacy_secret
    );
    assert!(stored_download_key(&app).await.starts_with("enc:v1:"));
    assert_eq!(
        hex::encode(
            governance_core::exports::download_key(&app.store)
                .await
                .unwrap()
        ),
        legacy_key
    );
    assert_eq!(
        governance_core::webhooks::seal_plaintext_secrets(&app.store)
            .await
            .unwrap(),
        0,
        "nothing left to seal"
    );

    // Another key file: the start fails, naming the problem, instead of serving garbage.
    let env = app.stop().await;
    let mut config = env.config();
    config.secrets.key_path = Some(env.data_dir().join("another-secrets.key"));
    let err = governance_api::Application::build(config)
        .await
        .err()
        .expect("the start fails")
        .to_string();
    assert!(err.contains("was sealed with the secrets key"), "{err}");
}
