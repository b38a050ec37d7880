//! Checks of the schema against a real database: SQLite in memory always, and PostgreSQL too when
//! `MIGRATION_TEST_DATABASE_URL` names one (its `public` schema is reset by the test).

use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend};

use super::*;

const T0: &str = "'2026-01-01T00:00:00Z'";

/// One row in every table, through plain SQL that both backends accept.
fn seed_sql() -> Vec<String> {
    [
        "INSERT INTO tenants (id, name, created_at) VALUES ('ten_a', 'a', T0)",
        "INSERT INTO api_keys (id, tenant_id, name, key_hash, key_prefix, created_at) \
         VALUES ('key_a', 'ten_a', 'initial', 'h1', 'gov_12', T0)",
        "INSERT INTO policies (id, tenant_id, name, kind, rule, action, severity, enabled, \
         version, current_version_id, created_at, updated_at) VALUES ('pol_a', 'ten_a', 'p', \
         'TOKEN_BUDGET', '{\"maxTokens\":10}', 'BLOCK', 'HIGH', TRUE, 1, 'pv_a', T0, T0)",
        "INSERT INTO policy_versions (id, tenant_id, policy_id, version, name, kind, rule, \
         action, severity, enabled, policy_set_version, created_at) VALUES ('pv_a', 'ten_a', \
         'pol_a', 1, 'p', 'TOKEN_BUDGET', '{\"maxTokens\":10}', 'BLOCK', 'HIGH', TRUE, '0.1.0', T0)",
        "INSERT INTO policy_snapshots (tenant_id, snapshot_id, content_hash, policies_json, \
         thresholds_json, policy_count, version, created_at) VALUES ('ten_a', 'SNAP-000000000001', \
         'c1', '[]', '{}', 1, '0.1.0', T0)",
        "INSERT INTO policy_snapshots (tenant_id, snapshot_id, content_hash, policies_json, \
         thresholds_json, policy_count, version, created_at) VALUES ('ten_a', 'SNAP-000000000002', \
         'c2', '[]', '{}', 0, '0.2.0', T0)",
        "INSERT INTO runs (id, tenant_id, workflow_id, status, policy_snapshot_id, \
         policy_set_version, started_at, trace_head_hash, created_at, updated_at) VALUES \
         ('run_a', 'ten_a', 'wf', 'RUNNING', 'SNAP-000000000001', '0.1.0', T0, 'g', T0, T0)",
        "INSERT INTO trace_steps (tenant_id, run_id, step_index, timestamp, step_type, \
         content_hash, status, decision, reason, decision_json, prev_hash, entry_hash, created_at) \
         VALUES ('ten_a', 'run_a', 0, T0, 'LLM_CALL', 'ch', 'VIOLATION', 'STOP', 'over', '{}', \
         'g', 'e0', T0)",
        "INSERT INTO violations (id, tenant_id, run_id, policy_id, policy_version, policy_type, \
         violated_rule, evaluated_value, threshold_condition, severity, severity_rank, action, \
         reason, step_index, snapshot_id, timestamp, created_at) VALUES ('vio_a', 'ten_a', \
         'run_a', 'pol_a', 1, 'TOKEN_BUDGET', 'maxTokens', '11', '> 10', 'HIGH', 3, 'BLOCK', \
         'over', 0, 'SNAP-000000000001', T0, T0)",
        "INSERT INTO evidence (id, tenant_id, violation_id, run_id, content, content_hash, \
         created_at) VALUES ('evi_a', 'ten_a', 'vio_a', 'run_a', '{\"tokens\":11}', 'eh', T0)",
        "INSERT INTO incidents (id, tenant_id, run_id, violation_id, evidence_id, severity, \
         severity_rank, title, status, created_at, detected_at, updated_at) VALUES ('inc_a', \
         'ten_a', 'run_a', 'vio_a', 'evi_a', 'HIGH', 3, 't', 'OPEN', T0, T0, T0)",
        "INSERT INTO policy_evaluations (id, tenant_id, run_id, outcome, reason, snapshot_id, \
         created_at) VALUES ('eval_a', 'ten_a', 'run_a', 'VIOLATION', 'stopped', \
         'SNAP-000000000001', T0)",
        "INSERT INTO policy_enforcements (id, tenant_id, policy_id, run_id, step_index, \
         action_taken, details, created_at) VALUES ('enf_a', 'ten_a', 'pol_a', 'run_a', 0, \
         'STOPPED', '{}', T0)",
        "INSERT INTO audits (id, tenant_id, job_id, contract_id, status, request, created_at, \
         updated_at) VALUES ('aud_a', 'ten_a', 'job', 'ctr', 'PENDING', '{}', T0, T0)",
        "INSERT INTO audit_checks (id, tenant_id, audit_id, check_id, name, question, result, \
         reason, evidence) VALUES ('chk_a', 'ten_a', 'aud_a', 'scope_compliance', 'Scope', \
         'q?', 'PASS', 'ok', '[]')",
        "INSERT INTO exports (id, tenant_id, incident_id, run_id, kind, format, status, \
         requested_by, created_at, updated_at) VALUES ('exp_a', 'ten_a', 'inc_a', 'run_a', \
         'EVIDENCE', 'PDF', 'PENDING', 'key_a', T0, T0)",
        "INSERT INTO events (tenant_id, seq, kind, subject_id, run_id, severity_rank, payload, \
         created_at) VALUES ('ten_a', 1, 'INCIDENT_CREATED', 'inc_a', 'run_a', 3, '{}', T0)",
        "INSERT INTO webhooks (id, tenant_id, url, events, secret, created_at, updated_at) \
         VALUES ('whk_a', 'ten_a', 'http://x', '[\"INCIDENT_CREATED\"]', 's', T0, T0)",
        "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, status, \
         delivered_at, created_at) SELECT 'dlv_a', 'ten_a', 'whk_a', id, 'SUCCEEDED', T0, T0 \
         FROM events WHERE tenant_id = 'ten_a' AND seq = 1",
    ]
    .iter()
    .map(|s| s.replace("T0", T0))
    .collect()
}

async fn exec(db: &DatabaseConnection, sql: &str) -> Result<(), String> {
    db.execute_unprepared(sql)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn count(db: &DatabaseConnection, table: &str) -> i64 {
    let row = db
        .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .expect("count query")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("n")
}

async fn expect_refused(db: &DatabaseConnection, sql: &str, words: &str) {
    match exec(db, sql).await {
        Ok(()) => panic!("`{sql}` was accepted"),
        Err(e) => assert!(e.contains(words), "`{sql}` failed without `{words}`: {e}"),
    }
}

async fn seed(db: &DatabaseConnection) {
    for sql in seed_sql() {
        exec(db, &sql)
            .await
            .unwrap_or_else(|e| panic!("seed `{sql}`: {e}"));
    }
    for table in TABLES {
        let expected = if *table == "policy_snapshots" { 2 } else { 1 };
        assert_eq!(count(db, table).await, expected, "{table}");
    }
}

async fn check_immutability(db: &DatabaseConnection) {
    for table in APPEND_ONLY_TABLES {
        expect_refused(
            db,
            &format!("UPDATE {table} SET tenant_id = tenant_id"),
            &format!("{table} is append-only"),
        )
        .await;
        expect_refused(
            db,
            &format!("DELETE FROM {table}"),
            &format!("{table} is append-only"),
        )
        .await;
        assert!(count(db, table).await > 0, "{table} lost rows");
    }
    expect_refused(
        db,
        "UPDATE trace_steps SET reason = 'rewritten' WHERE run_id = 'run_a' AND step_index = 0",
        "append-only",
    )
    .await;
    // The kill switch's records: a halt and its resumption, never changed or removed.
    for sql in [
        "INSERT INTO halts (id, tenant_id, workflow_id, agent, reason, halted_by, runs_stopped, \
         created_at) VALUES ('hlt_a', 'ten_a', 'wf', NULL, 'drill', 'key_a', 1, T0)",
        "INSERT INTO halt_resumptions (halt_id, tenant_id, resumed_by, resumed_at) VALUES \
         ('hlt_a', 'ten_a', 'key_a', T0)",
    ] {
        exec(db, &sql.replace("T0", T0)).await.expect("a halt");
    }
    for table in HALT_TABLES {
        for sql in [
            format!("UPDATE {table} SET tenant_id = tenant_id"),
            format!("DELETE FROM {table}"),
        ] {
            expect_refused(db, &sql, &format!("{table} is append-only")).await;
        }
        assert_eq!(count(db, table).await, 1, "{table} lost rows");
    }
    expect_refused(
        db,
        "INSERT INTO halt_resumptions (halt_id, tenant_id, resumed_by, resumed_at) VALUES \
         ('hlt_a', 'ten_a', 'key_b', '2026-01-02T00:00:00Z')",
        "",
    )
    .await;
    if db.get_database_backend() == DbBackend::Sqlite {
        expect_refused(
            db,
            "INSERT OR REPLACE INTO halt_resumptions (halt_id, tenant_id, resumed_by, resumed_at) \
             VALUES ('hlt_a', 'ten_a', 'key_b', '2026-01-02T00:00:00Z')",
            "halt_resumptions is append-only",
        )
        .await;
    }
    if db.get_database_backend() == DbBackend::Postgres {
        expect_refused(db, "TRUNCATE trace_steps", "trace_steps is append-only").await;
    }
    // An approval and its decision: never changed or removed, and decided once.
    for sql in [
        "INSERT INTO approvals (id, tenant_id, run_id, step_index, policy_id, policy_version, \
         requested_by_key, timeout_seconds, on_timeout, requested_at, expires_at) VALUES \
         ('apr_a', 'ten_a', 'run_a', 0, 'pol_a', 1, 'key_a', 60, 'DENY', T0, T0)",
        "INSERT INTO approval_decisions (approval_id, tenant_id, run_id, step_index, status, \
         decision, decided_by_key, note, decided_at, prev_hash, entry_hash) VALUES \
         ('apr_a', 'ten_a', 'run_a', 0, 'GRANTED', 'CONTINUE', 'key_b', NULL, T0, 'p', 'e')",
    ] {
        exec(db, &sql.replace("T0", T0)).await.expect("an approval");
    }
    for table in APPROVAL_TABLES {
        for sql in [
            format!("UPDATE {table} SET tenant_id = tenant_id"),
            format!("DELETE FROM {table}"),
        ] {
            expect_refused(db, &sql, &format!("{table} is append-only")).await;
        }
        assert_eq!(count(db, table).await, 1, "{table} lost rows");
    }
    expect_refused(
        db,
        "INSERT INTO approval_decisions (approval_id, tenant_id, run_id, step_index, status, \
         decision, decided_by_key, note, decided_at, prev_hash, entry_hash) VALUES \
         ('apr_a', 'ten_a', 'run_a', 0, 'DENIED', 'STOP', 'key_c', NULL, '2026-01-02T00:00:00Z', 'p', 'f')",
        "",
    )
    .await;

    // runs: the snapshot can never change, everything else can.
    expect_refused(
        db,
        "UPDATE runs SET policy_snapshot_id = 'SNAP-000000000002' WHERE id = 'run_a'",
        "immutable",
    )
    .await;
    expect_refused(
        db,
        "UPDATE runs SET policy_snapshot_id = NULL WHERE id = 'run_a'",
        "",
    )
    .await;
    exec(
        db,
        "UPDATE runs SET status = 'FAILED_POLICY', policy_snapshot_id = policy_snapshot_id, \
         stopped_at_step = 0 WHERE id = 'run_a'",
    )
    .await
    .expect("a run's other columns can change");

    // Mutable tables stay mutable.
    exec(
        db,
        "UPDATE incidents SET status = 'ACKNOWLEDGED' WHERE id = 'inc_a'",
    )
    .await
    .expect("incident update");
    exec(db, "UPDATE exports SET progress = 50 WHERE id = 'exp_a'")
        .await
        .expect("export update");

    // Uniqueness the application relies on.
    expect_refused(db, &seed_sql()[7].replace("'e0'", "'e0bis'"), "").await;
    expect_refused(
        db,
        &format!(
            "INSERT INTO incidents (id, tenant_id, run_id, violation_id, severity, severity_rank, \
             title, status, created_at, detected_at, updated_at) VALUES ('inc_b', 'ten_a', \
             'run_a', 'vio_a', 'HIGH', 3, 't', 'OPEN', {T0}, {T0}, {T0})"
        ),
        "",
    )
    .await;
    expect_refused(
        db,
        &format!(
            "INSERT INTO events (tenant_id, seq, kind, subject_id, payload, created_at) \
             VALUES ('ten_a', 1, 'X', 'inc_a', '{{}}', {T0})"
        ),
        "",
    )
    .await;
    // The run header a format-2 genesis binds, and the format itself, never change.
    for set in [
        "agent = 'other'",
        "triggered_by = 'someone'",
        "workflow_id = 'wf2'",
        "metadata = '{\"a\":1}'",
        "started_at = '2026-01-02T00:00:00Z'",
        "record_format = 2",
    ] {
        expect_refused(
            db,
            &format!("UPDATE runs SET {set} WHERE id = 'run_a'"),
            "header is immutable",
        )
        .await;
    }
    // Nothing recorded can be replaced. SQLite's REPLACE deletes the row it collides with
    // without firing the DELETE trigger; PostgreSQL's UPSERT would update it.
    let rewritten_step = seed_sql()[7].replace("'over'", "'rewritten'");
    if db.get_database_backend() == DbBackend::Sqlite {
        for verb in ["INSERT OR REPLACE INTO", "REPLACE INTO"] {
            expect_refused(
                db,
                &rewritten_step.replacen("INSERT INTO", verb, 1),
                "trace_steps is append-only",
            )
            .await;
            expect_refused(
                db,
                &seed_sql()[16].replacen("INSERT INTO", verb, 1),
                "events is append-only",
            )
            .await;
            // The service's own idempotent inserts (ON CONFLICT DO NOTHING) are skipped, and so
            // is a REPLACE of what they wrote.
            exec(
                db,
                &seed_sql()[4]
                    .replacen("INSERT INTO", verb, 1)
                    .replace("'[]'", "'[\"rewritten\"]'"),
            )
            .await
            .expect("a colliding snapshot insert is skipped");
        }
        assert_eq!(
            count(db, "policy_snapshots WHERE policies_json = '[]'").await,
            2,
            "the stored snapshots are untouched"
        );
        exec(db, &format!("{} ON CONFLICT DO NOTHING", seed_sql()[11]))
            .await
            .expect("an evaluation record inserted twice with DO NOTHING is skipped");
    } else {
        expect_refused(
            db,
            &format!(
                "{rewritten_step} ON CONFLICT (run_id, step_index) DO UPDATE SET reason = EXCLUDED.reason"
            ),
            "trace_steps is append-only",
        )
        .await;
    }
    assert_eq!(
        count(db, "trace_steps WHERE reason = 'over'").await,
        1,
        "the recorded step is untouched"
    );
    assert_eq!(count(db, "events").await, 1);

    // A run must reference a snapshot of its own tenant.
    exec(
        db,
        &format!("INSERT INTO tenants (id, name, created_at) VALUES ('ten_b', 'b', {T0})"),
    )
    .await
    .expect("second tenant");
    expect_refused(
        db,
        &format!(
            "INSERT INTO runs (id, tenant_id, workflow_id, status, policy_snapshot_id, \
             policy_set_version, started_at, trace_head_hash, created_at, updated_at) VALUES \
             ('run_b', 'ten_b', 'wf', 'RUNNING', 'SNAP-000000000001', '0.1.0', {T0}, 'g', {T0}, {T0})"
        ),
        "",
    )
    .await;
}

/// Runs stored before deadlines existed: one not yet ended is due at once (its deadline is its
/// start, for the sweeper to check against its snapshot), an ended one has none.
async fn check_deadline_backfill(db: &DatabaseConnection) {
    let deadlines = m20261201_000009_run_deadlines::Migration.name();
    let before = Migrator::migrations()
        .iter()
        .position(|m| m.name() == deadlines)
        .expect("the deadlines migration is listed");
    Migrator::up(db, Some(before as u32))
        .await
        .expect("up to deadlines");
    seed(db).await;
    exec(
        db,
        &"INSERT INTO runs (id, tenant_id, workflow_id, status, policy_snapshot_id, \
          policy_set_version, started_at, trace_head_hash, created_at, updated_at) VALUES \
          ('run_b', 'ten_a', 'wf', 'SUCCEEDED', 'SNAP-000000000001', '0.1.0', T0, 'g', T0, T0)"
            .replace("T0", T0),
    )
    .await
    .expect("an ended run");
    Migrator::up(db, None).await.expect("up");
    let deadline = |id: &str| {
        format!(
            "SELECT CASE WHEN deadline_at IS NULL THEN 'none' \
             WHEN deadline_at = started_at THEN 'its start' ELSE 'other' END FROM runs \
             WHERE id = '{id}'"
        )
    };
    assert_eq!(text_of(db, &deadline("run_a")).await, "its start");
    assert_eq!(text_of(db, &deadline("run_b")).await, "none");
    exec(db, "DELETE FROM runs WHERE id = 'run_b'")
        .await
        .expect("the ended run removed");
}

async fn exercise(db: &DatabaseConnection) {
    // Start from nothing (a previous run may have left the schema on PostgreSQL).
    Migrator::reset(db).await.expect("reset");
    check_deadline_backfill(db).await;
    check_immutability(db).await;

    // down() works with data in place, and up() again gives a clean, guarded schema.
    Migrator::down(db, None).await.expect("down");
    for table in TABLES {
        let exists = db
            .execute_unprepared(&format!("SELECT 1 FROM {table}"))
            .await
            .is_ok();
        assert!(!exists, "{table} survived down()");
    }
    Migrator::up(db, None).await.expect("up again");
    seed(db).await;
    check_immutability(db).await;
}

#[tokio::test]
async fn sqlite_schema_is_guarded_and_reversible() {
    let db = Database::connect("sqlite::memory:").await.expect("sqlite");
    exec(&db, "PRAGMA foreign_keys = ON").await.expect("pragma");
    exercise(&db).await;
}

#[tokio::test]
async fn postgres_schema_is_guarded_and_reversible() {
    let Ok(url) = std::env::var("MIGRATION_TEST_DATABASE_URL") else {
        eprintln!("MIGRATION_TEST_DATABASE_URL not set: PostgreSQL check skipped");
        return;
    };
    let db = Database::connect(url.as_str()).await.expect("postgres");
    exercise(&db).await;
}

/// One column of the row a query selects, as text.
async fn text_of(db: &DatabaseConnection, sql: &str) -> String {
    let row = db
        .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .expect("query")
        .unwrap_or_else(|| panic!("`{sql}` returned no row"));
    row.try_get_by_index::<String>(0).expect("a text column")
}

#[tokio::test]
async fn sqlite_insert_or_replace_cannot_remove_a_recorded_step() {
    let db = Database::connect("sqlite::memory:").await.expect("sqlite");
    exec(&db, "PRAGMA foreign_keys = ON").await.expect("pragma");
    Migrator::up(&db, None).await.expect("up");
    seed(&db).await;
    let step = "SELECT pk || '|' || run_id || '|' || step_index || '|' || reason || '|' || \
                entry_hash FROM trace_steps";
    let violation = "SELECT id || '|' || reason || '|' || step_index FROM violations";
    let stored_step = text_of(&db, step).await;
    let stored_violation = text_of(&db, violation).await;
    let pk = stored_step.split('|').next().expect("pk").to_string();
    for verb in ["INSERT OR REPLACE INTO", "REPLACE INTO"] {
        // The same primary key under another step index: REPLACE would delete the stored step.
        let same_pk = format!(
            "{verb} trace_steps (pk, tenant_id, run_id, step_index, timestamp, step_type, \
             content_hash, status, decision, reason, decision_json, prev_hash, entry_hash, \
             created_at) VALUES ({pk}, 'ten_a', 'run_a', 7, {T0}, 'LLM_CALL', 'ch', 'OK', \
             'CONTINUE', 'rewritten', '{{}}', 'g', 'forged', {T0})"
        );
        expect_refused(&db, &same_pk, "trace_steps is append-only").await;
        // The same (run, step index) under a new primary key.
        let same_step = seed_sql()[7]
            .replacen("INSERT INTO", verb, 1)
            .replace("'over'", "'rewritten'")
            .replace("'e0'", "'forged'");
        expect_refused(&db, &same_step, "trace_steps is append-only").await;
        // Another append-only table, keyed by its text id.
        let same_violation = seed_sql()[8]
            .replacen("INSERT INTO", verb, 1)
            .replace("'over'", "'rewritten'");
        expect_refused(&db, &same_violation, "violations is append-only").await;
    }
    assert_eq!(
        text_of(&db, step).await,
        stored_step,
        "the step is unchanged"
    );
    assert_eq!(count(&db, "trace_steps").await, 1);
    assert_eq!(
        text_of(&db, violation).await,
        stored_violation,
        "the violation is unchanged"
    );
    assert_eq!(count(&db, "violations").await, 1);
}

/// `url` with its user and database replaced (`postgres://user@host:port/db`).
fn pg_url_as(url: &str, user: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let rest = rest.rsplit_once('@').map(|(_, host)| host).unwrap_or(rest);
    let (host, query) = match rest.split_once('/') {
        Some((host, path)) => (host, path.split_once('?').map(|(_, q)| q)),
        None => (rest, None),
    };
    match query {
        Some(q) => format!("{scheme}://{user}@{host}/{database}?{q}"),
        None => format!("{scheme}://{user}@{host}/{database}"),
    }
}

/// Create a login role unless it exists (several test runs may share a cluster).
async fn ensure_login_role(admin: &DatabaseConnection, role: &str) {
    exec(
        admin,
        &format!(
            "DO $$ BEGIN CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("create role {role}: {e}"));
}

#[tokio::test]
async fn postgres_runtime_role_cannot_undo_the_guarantees() {
    let Ok(admin_url) = std::env::var("MIGRATION_TEST_DATABASE_URL") else {
        eprintln!("MIGRATION_TEST_DATABASE_URL not set: PostgreSQL role check skipped");
        return;
    };
    const OWNER: &str = "migration_test_owner";
    const RUNTIME: &str = "migration_test_runtime";
    const DB: &str = "migration_roles_test";
    let admin = Database::connect(admin_url.as_str()).await.expect("admin");
    ensure_login_role(&admin, OWNER).await;
    ensure_login_role(&admin, RUNTIME).await;
    exec(
        &admin,
        &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
    )
    .await
    .expect("drop the previous run's database");
    exec(&admin, &format!("CREATE DATABASE {DB} OWNER {OWNER}"))
        .await
        .expect("create database");

    let owner = Database::connect(pg_url_as(&admin_url, OWNER, DB).as_str())
        .await
        .expect("owner");
    Migrator::up(&owner, None)
        .await
        .expect("migrations as owner");
    roles::grant_runtime(&owner, RUNTIME)
        .await
        .expect("grant the runtime role");
    // Idempotent, and it takes back a privilege granted by hand.
    exec(
        &owner,
        &format!("GRANT UPDATE, DELETE ON trace_steps TO {RUNTIME}"),
    )
    .await
    .expect("a stray grant");
    roles::grant_runtime(&owner, RUNTIME)
        .await
        .expect("grant again");
    let same = roles::grant_runtime(&owner, OWNER).await.unwrap_err();
    assert!(same.to_string().contains("both log in as"), "{same}");
    let superuser = roles::current_role(&admin).await.expect("admin role");
    let refused = roles::grant_runtime(&owner, &superuser).await.unwrap_err();
    assert!(refused.to_string().contains("superuser"), "{refused}");

    let runtime = Database::connect(pg_url_as(&admin_url, RUNTIME, DB).as_str())
        .await
        .expect("runtime");
    // The service's own work: it inserts everywhere, and updates and deletes where it does.
    seed(&runtime).await;
    exec(
        &runtime,
        "UPDATE incidents SET status = 'ACKNOWLEDGED' WHERE id = 'inc_a'",
    )
    .await
    .expect("the runtime role updates incidents");
    exec(
        &runtime,
        "SELECT id FROM runs WHERE id = 'run_a' FOR UPDATE",
    )
    .await
    .expect("the runtime role locks a run");

    // What it cannot do: undo the triggers, or touch a recorded row without them.
    for sql in [
        "DROP TRIGGER trace_steps_append_only ON trace_steps",
        "ALTER TABLE trace_steps DISABLE TRIGGER trace_steps_append_only",
        "ALTER TABLE trace_steps DISABLE TRIGGER USER",
        "ALTER TABLE trace_steps DISABLE TRIGGER ALL",
        "DROP TABLE trace_steps",
        "DROP FUNCTION governance_append_only() CASCADE",
    ] {
        expect_refused(&runtime, sql, "must be owner").await;
    }
    expect_refused(
        &runtime,
        "CREATE OR REPLACE FUNCTION governance_append_only() RETURNS trigger \
         LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "permission denied",
    )
    .await;
    expect_refused(
        &runtime,
        "SET session_replication_role = replica",
        "permission denied",
    )
    .await;
    expect_refused(
        &runtime,
        "CREATE TABLE scratch (a int)",
        "permission denied",
    )
    .await;
    for table in APPEND_ONLY_TABLES
        .iter()
        .chain(LOG_TABLES)
        .chain(HALT_TABLES)
        .chain(APPROVAL_TABLES)
    {
        for sql in [
            format!("UPDATE {table} SET tenant_id = tenant_id"),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
        ] {
            expect_refused(&runtime, &sql, "permission denied").await;
        }
    }
    expect_refused(
        &runtime,
        "INSERT INTO seaql_migrations (version, applied_at) VALUES ('m_forged', 0)",
        "permission denied",
    )
    .await;
    // The triggers are still there, and still fire for the owner.
    expect_refused(
        &owner,
        "UPDATE trace_steps SET reason = 'rewritten'",
        "trace_steps is append-only",
    )
    .await;
    assert_eq!(
        count(&runtime, "trace_steps WHERE reason = 'over'").await,
        1
    );
    exec(&runtime, "DELETE FROM webhooks WHERE id = 'whk_a'")
        .await
        .expect("the runtime role deletes a webhook (its deliveries go with it)");
    assert_eq!(count(&runtime, "webhook_deliveries").await, 0);

    runtime.close().await.ok();
    owner.close().await.ok();
    exec(
        &admin,
        &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
    )
    .await
    .ok();
}

#[test]
fn pg_urls_are_rewritten_for_another_role() {
    assert_eq!(
        pg_url_as("postgres://postgres@127.0.0.1:5432/x", "r", "d"),
        "postgres://r@127.0.0.1:5432/d"
    );
    assert_eq!(
        pg_url_as("postgres://u:p@h/x?sslmode=disable", "r", "d"),
        "postgres://r@h/d?sslmode=disable"
    );
}
