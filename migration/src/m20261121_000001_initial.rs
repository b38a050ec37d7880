//! The initial schema: every table of the data model, their indexes, and the triggers that make
//! the append-only tables (and `runs.policy_snapshot_id`) immutable in the database itself.
//!
//! Works on SQLite and PostgreSQL. Types are chosen to mean the same on both: `bigint`/`integer`
//! for i64, `jsonb` on PostgreSQL (text on SQLite) for JSON, `bytea`/`blob` for bytes,
//! `timestamp with time zone` for times. Canonical snapshot JSON is stored as TEXT so the hashed
//! bytes survive exactly.

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Tables whose rows refuse UPDATE and DELETE (triggers), in creation order.
pub const APPEND_ONLY_TABLES: &[&str] = &[
    "policy_versions",
    "policy_snapshots",
    "trace_steps",
    "violations",
    "evidence",
    "policy_enforcements",
    "policy_evaluations",
    "events",
];

/// Every table, in creation order (parents before children). `down()` drops them in reverse.
pub const TABLES: &[&str] = &[
    "tenants",
    "api_keys",
    "policies",
    "policy_versions",
    "policy_snapshots",
    "runs",
    "trace_steps",
    "violations",
    "evidence",
    "incidents",
    "policy_evaluations",
    "policy_enforcements",
    "audits",
    "audit_checks",
    "exports",
    "events",
    "webhooks",
    "webhook_deliveries",
];

const PG_APPEND_ONLY_FN: &str = "governance_append_only";
const PG_RUN_SNAPSHOT_FN: &str = "governance_runs_snapshot_immutable";
const RUN_SNAPSHOT_TRIGGER: &str = "runs_policy_snapshot_id_immutable";

// ---------------------------------------------------------------------------------------------
// Small builders, so each table reads as its column list.

/// A text primary key holding the application's prefixed id (`run_…`).
fn id_pk(name: &'static str) -> ColumnDef {
    string(name).primary_key().take()
}

/// A 64-bit auto-increment primary key (`bigint … IDENTITY` / `integer … AUTOINCREMENT`).
fn big_pk(name: &'static str) -> ColumnDef {
    big_integer(name).auto_increment().primary_key().take()
}

fn bool_default(name: &'static str, value: bool) -> ColumnDef {
    boolean(name).default(value).take()
}

fn big_zero(name: &'static str) -> ColumnDef {
    big_integer(name).default(0i64).take()
}

fn int_zero(name: &'static str) -> ColumnDef {
    integer(name).default(0i32).take()
}

/// `timestamp with time zone NOT NULL`.
fn ts(name: &'static str) -> ColumnDef {
    timestamp_with_time_zone(name)
}

fn ts_null(name: &'static str) -> ColumnDef {
    timestamp_with_time_zone_null(name)
}

/// A JSON column: `jsonb` on PostgreSQL, text on SQLite.
fn json_col(name: &'static str) -> ColumnDef {
    json_binary(name)
}

fn json_col_null(name: &'static str) -> ColumnDef {
    json_binary_null(name)
}

fn fk(
    table: &'static str,
    column: &'static str,
    ref_table: &'static str,
    ref_column: &'static str,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_{column}"))
        .from(table, column)
        .to(ref_table, ref_column)
        .take()
}

fn fk_cascade(
    table: &'static str,
    column: &'static str,
    ref_table: &'static str,
    ref_column: &'static str,
) -> ForeignKeyCreateStatement {
    fk(table, column, ref_table, ref_column)
        .on_delete(ForeignKeyAction::Cascade)
        .take()
}

/// `tenant_id → tenants.id`. Deleting a tenant is refused while it has history (runs, policies,
/// …); only the tables that say so cascade.
fn tenant_fk(table: &'static str) -> ForeignKeyCreateStatement {
    fk(table, "tenant_id", "tenants", "id")
}

fn index(table: &'static str, name: &str, columns: &[&'static str]) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for c in columns {
        stmt.col(*c);
    }
    stmt.take()
}

fn unique(table: &'static str, name: &str, columns: &[&'static str]) -> IndexCreateStatement {
    index(table, name, columns).unique().take()
}

async fn create(
    manager: &SchemaManager<'_>,
    table: TableCreateStatement,
    indexes: Vec<IndexCreateStatement>,
) -> Result<(), DbErr> {
    manager.create_table(table).await?;
    for idx in indexes {
        manager.create_index(idx).await?;
    }
    Ok(())
}

async fn exec(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Triggers.

fn sqlite_trigger_sql() -> Vec<String> {
    let mut out = Vec::new();
    for t in APPEND_ONLY_TABLES {
        for (op, suffix) in [("UPDATE", "no_update"), ("DELETE", "no_delete")] {
            out.push(format!(
                "CREATE TRIGGER {t}_{suffix} BEFORE {op} ON {t} \
                 BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;"
            ));
        }
    }
    out.push(format!(
        "CREATE TRIGGER {RUN_SNAPSHOT_TRIGGER} BEFORE UPDATE OF policy_snapshot_id ON runs \
         WHEN NEW.policy_snapshot_id IS NOT OLD.policy_snapshot_id \
         BEGIN SELECT RAISE(ABORT, 'runs.policy_snapshot_id is immutable'); END;"
    ));
    out
}

fn sqlite_drop_trigger_sql() -> Vec<String> {
    let mut out = vec![format!("DROP TRIGGER IF EXISTS {RUN_SNAPSHOT_TRIGGER};")];
    for t in APPEND_ONLY_TABLES.iter().rev() {
        out.push(format!("DROP TRIGGER IF EXISTS {t}_no_delete;"));
        out.push(format!("DROP TRIGGER IF EXISTS {t}_no_update;"));
    }
    out
}

fn postgres_trigger_sql() -> Vec<String> {
    let mut out = vec![
        format!(
            "CREATE OR REPLACE FUNCTION {PG_APPEND_ONLY_FN}() RETURNS trigger \
             LANGUAGE plpgsql AS $$ \
             BEGIN \
               RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; \
               RETURN NULL; \
             END; $$;"
        ),
        format!(
            "CREATE OR REPLACE FUNCTION {PG_RUN_SNAPSHOT_FN}() RETURNS trigger \
             LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF NEW.policy_snapshot_id IS DISTINCT FROM OLD.policy_snapshot_id THEN \
                 RAISE EXCEPTION 'runs.policy_snapshot_id is immutable'; \
               END IF; \
               RETURN NEW; \
             END; $$;"
        ),
    ];
    for t in APPEND_ONLY_TABLES {
        out.push(format!(
            "CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} \
             FOR EACH ROW EXECUTE FUNCTION {PG_APPEND_ONLY_FN}();"
        ));
        // TRUNCATE bypasses row triggers: refuse it too.
        out.push(format!(
            "CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} \
             FOR EACH STATEMENT EXECUTE FUNCTION {PG_APPEND_ONLY_FN}();"
        ));
    }
    out.push(format!(
        "CREATE TRIGGER {RUN_SNAPSHOT_TRIGGER} BEFORE UPDATE OF policy_snapshot_id ON runs \
         FOR EACH ROW EXECUTE FUNCTION {PG_RUN_SNAPSHOT_FN}();"
    ));
    out
}

fn postgres_drop_trigger_sql() -> Vec<String> {
    let mut out = vec![format!(
        "DROP TRIGGER IF EXISTS {RUN_SNAPSHOT_TRIGGER} ON runs;"
    )];
    for t in APPEND_ONLY_TABLES.iter().rev() {
        out.push(format!("DROP TRIGGER IF EXISTS {t}_no_truncate ON {t};"));
        out.push(format!("DROP TRIGGER IF EXISTS {t}_append_only ON {t};"));
    }
    out
}

fn postgres_drop_function_sql() -> Vec<String> {
    vec![
        format!("DROP FUNCTION IF EXISTS {PG_RUN_SNAPSHOT_FN}();"),
        format!("DROP FUNCTION IF EXISTS {PG_APPEND_ONLY_FN}();"),
    ]
}

// ---------------------------------------------------------------------------------------------

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All or nothing, on SQLite too (its DDL is transactional).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // tenants
        create(
            manager,
            Table::create()
                .table("tenants")
                .col(id_pk("id"))
                .col(string("name"))
                .col(ts("created_at"))
                .take(),
            vec![unique("tenants", "ux_tenants_name", &["name"])],
        )
        .await?;

        // api_keys
        create(
            manager,
            Table::create()
                .table("api_keys")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("name"))
                .col(string("key_hash"))
                .col(string("key_prefix"))
                .col(ts("created_at"))
                .col(ts_null("revoked_at"))
                .col(ts_null("last_used_at"))
                .foreign_key(&mut fk_cascade("api_keys", "tenant_id", "tenants", "id"))
                .take(),
            vec![
                unique("api_keys", "ux_api_keys_key_hash", &["key_hash"]),
                index("api_keys", "idx_api_keys_tenant", &["tenant_id"]),
            ],
        )
        .await?;

        // policies (current head)
        create(
            manager,
            Table::create()
                .table("policies")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("name"))
                .col(text_null("description"))
                .col(string("kind"))
                .col(json_col("rule"))
                .col(string("action"))
                .col(string("severity"))
                .col(string_null("workflow_id"))
                .col(bool_default("enabled", true))
                .col(integer("version").default(1i32).take())
                .col(string("current_version_id"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .foreign_key(&mut tenant_fk("policies"))
                .take(),
            vec![
                index(
                    "policies",
                    "idx_policies_tenant_enabled",
                    &["tenant_id", "enabled"],
                ),
                index(
                    "policies",
                    "idx_policies_tenant_created",
                    &["tenant_id", "created_at"],
                ),
            ],
        )
        .await?;

        // policy_versions (append-only)
        create(
            manager,
            Table::create()
                .table("policy_versions")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("policy_id"))
                .col(integer("version"))
                .col(string("name"))
                .col(text_null("description"))
                .col(string("kind"))
                .col(json_col("rule"))
                .col(string("action"))
                .col(string("severity"))
                .col(string_null("workflow_id"))
                .col(boolean("enabled"))
                .col(string("policy_set_version"))
                .col(ts("created_at"))
                .foreign_key(&mut tenant_fk("policy_versions"))
                .foreign_key(&mut fk("policy_versions", "policy_id", "policies", "id"))
                .take(),
            vec![
                unique(
                    "policy_versions",
                    "ux_policy_versions_policy_version",
                    &["policy_id", "version"],
                ),
                index(
                    "policy_versions",
                    "idx_policy_versions_tenant_created",
                    &["tenant_id", "created_at"],
                ),
            ],
        )
        .await?;

        // policy_snapshots (append-only). The unique (tenant_id, snapshot_id) index must exist
        // before `runs` references it.
        create(
            manager,
            Table::create()
                .table("policy_snapshots")
                .col(big_pk("pk"))
                .col(string("tenant_id"))
                .col(string("snapshot_id"))
                .col(string("content_hash"))
                .col(text("policies_json"))
                .col(text("thresholds_json"))
                .col(integer("policy_count"))
                .col(string("version"))
                .col(ts("created_at"))
                .foreign_key(&mut tenant_fk("policy_snapshots"))
                .take(),
            vec![
                unique(
                    "policy_snapshots",
                    "ux_policy_snapshots_tenant_hash",
                    &["tenant_id", "content_hash"],
                ),
                unique(
                    "policy_snapshots",
                    "ux_policy_snapshots_tenant_snapshot",
                    &["tenant_id", "snapshot_id"],
                ),
            ],
        )
        .await?;

        // runs
        create(
            manager,
            Table::create()
                .table("runs")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("workflow_id"))
                .col(string_null("agent"))
                .col(string_null("triggered_by"))
                .col(string("status"))
                .col(string_null("termination_reason"))
                .col(text_null("error"))
                .col(string("policy_snapshot_id"))
                .col(string("policy_set_version"))
                .col(big_integer_null("stopped_at_step"))
                .col(string_null("violation_policy_id"))
                .col(big_zero("tokens_used"))
                .col(big_zero("cost_micros"))
                .col(big_zero("step_count"))
                .col(bool_default("is_synthetic", false))
                .col(string_null("synthetic_scenario_id"))
                .col(json_col_null("metadata"))
                .col(ts("started_at"))
                .col(ts_null("completed_at"))
                .col(string("trace_head_hash"))
                .col(big_integer_null("violation_step_index"))
                .col(ts_null("violation_timestamp"))
                .col(text_null("violation_reason"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .foreign_key(&mut tenant_fk("runs"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_runs_policy_snapshot")
                        .from("runs", ("tenant_id", "policy_snapshot_id"))
                        .to("policy_snapshots", ("tenant_id", "snapshot_id")),
                )
                .foreign_key(&mut fk("runs", "violation_policy_id", "policies", "id"))
                .take(),
            vec![
                index(
                    "runs",
                    "idx_runs_tenant_started",
                    &["tenant_id", "started_at"],
                ),
                index("runs", "idx_runs_tenant_status", &["tenant_id", "status"]),
                index(
                    "runs",
                    "idx_runs_tenant_workflow",
                    &["tenant_id", "workflow_id"],
                ),
                index(
                    "runs",
                    "idx_runs_tenant_snapshot",
                    &["tenant_id", "policy_snapshot_id"],
                ),
            ],
        )
        .await?;

        // trace_steps (append-only)
        create(
            manager,
            Table::create()
                .table("trace_steps")
                .col(big_pk("pk"))
                .col(string("tenant_id"))
                .col(string("run_id"))
                .col(big_integer("step_index"))
                .col(ts("timestamp"))
                .col(string("step_type"))
                .col(big_zero("tokens"))
                .col(big_zero("cost_micros"))
                .col(string_null("tool_name"))
                .col(string("content_hash"))
                .col(string("status"))
                .col(bool_default("is_inflection", false))
                .col(string("decision"))
                .col(int_zero("policies_checked"))
                .col(text("reason"))
                .col(json_col("decision_json"))
                .col(string("prev_hash"))
                .col(string("entry_hash"))
                .col(ts("created_at"))
                .foreign_key(&mut tenant_fk("trace_steps"))
                .foreign_key(&mut fk("trace_steps", "run_id", "runs", "id"))
                .take(),
            vec![
                unique(
                    "trace_steps",
                    "ux_trace_steps_run_step",
                    &["run_id", "step_index"],
                ),
                index(
                    "trace_steps",
                    "idx_trace_steps_tenant_run",
                    &["tenant_id", "run_id"],
                ),
            ],
        )
        .await?;

        // violations (append-only)
        create(
            manager,
            Table::create()
                .table("violations")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("run_id"))
                .col(string("policy_id"))
                .col(integer("policy_version"))
                .col(string("policy_type"))
                .col(text("violated_rule"))
                .col(text("evaluated_value"))
                .col(text("threshold_condition"))
                .col(string("severity"))
                .col(integer("severity_rank"))
                .col(string("action"))
                .col(text("reason"))
                .col(big_integer("step_index"))
                .col(string("snapshot_id"))
                .col(ts("timestamp"))
                .col(ts("created_at"))
                .foreign_key(&mut tenant_fk("violations"))
                .foreign_key(&mut fk("violations", "run_id", "runs", "id"))
                .foreign_key(&mut fk("violations", "policy_id", "policies", "id"))
                .take(),
            vec![
                index(
                    "violations",
                    "idx_violations_tenant_policy",
                    &["tenant_id", "policy_id"],
                ),
                index(
                    "violations",
                    "idx_violations_tenant_run",
                    &["tenant_id", "run_id"],
                ),
                index(
                    "violations",
                    "idx_violations_tenant_created",
                    &["tenant_id", "created_at"],
                ),
            ],
        )
        .await?;

        // evidence (append-only)
        create(
            manager,
            Table::create()
                .table("evidence")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("violation_id"))
                .col(string("run_id"))
                .col(json_col("content"))
                .col(string("content_hash"))
                .col(ts("created_at"))
                .foreign_key(&mut tenant_fk("evidence"))
                .foreign_key(&mut fk("evidence", "violation_id", "violations", "id"))
                .foreign_key(&mut fk("evidence", "run_id", "runs", "id"))
                .take(),
            vec![
                index(
                    "evidence",
                    "idx_evidence_tenant_violation",
                    &["tenant_id", "violation_id"],
                ),
                index(
                    "evidence",
                    "idx_evidence_tenant_run",
                    &["tenant_id", "run_id"],
                ),
            ],
        )
        .await?;

        // incidents
        create(
            manager,
            Table::create()
                .table("incidents")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("run_id"))
                .col(string("violation_id"))
                .col(string_null("evidence_id"))
                .col(string("severity"))
                .col(integer("severity_rank"))
                .col(string("title"))
                .col(string("status"))
                .col(text_null("note"))
                .col(ts("created_at"))
                .col(ts("detected_at"))
                .col(ts_null("acknowledged_at"))
                .col(ts_null("resolved_at"))
                .col(ts("updated_at"))
                .foreign_key(&mut tenant_fk("incidents"))
                .foreign_key(&mut fk("incidents", "run_id", "runs", "id"))
                .foreign_key(&mut fk("incidents", "violation_id", "violations", "id"))
                .foreign_key(&mut fk("incidents", "evidence_id", "evidence", "id"))
                .take(),
            vec![
                unique("incidents", "ux_incidents_violation", &["violation_id"]),
                index(
                    "incidents",
                    "idx_incidents_tenant_status",
                    &["tenant_id", "status"],
                ),
                index(
                    "incidents",
                    "idx_incidents_tenant_created",
                    &["tenant_id", "created_at"],
                ),
                index(
                    "incidents",
                    "idx_incidents_tenant_run",
                    &["tenant_id", "run_id"],
                ),
            ],
        )
        .await?;

        // policy_evaluations (append-only; one per run)
        create(
            manager,
            Table::create()
                .table("policy_evaluations")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("run_id"))
                .col(string("outcome"))
                .col(int_zero("policies_checked"))
                .col(text("reason"))
                .col(bool_default("draft_candidate", false))
                .col(bool_default("is_synthetic", false))
                .col(string_null("synthetic_scenario_id"))
                .col(string("snapshot_id"))
                .col(ts("created_at"))
                .foreign_key(&mut tenant_fk("policy_evaluations"))
                .foreign_key(&mut fk("policy_evaluations", "run_id", "runs", "id"))
                .take(),
            vec![
                unique(
                    "policy_evaluations",
                    "ux_policy_evaluations_run",
                    &["run_id"],
                ),
                index(
                    "policy_evaluations",
                    "idx_policy_evaluations_tenant_created",
                    &["tenant_id", "created_at"],
                ),
            ],
        )
        .await?;

        // policy_enforcements (append-only)
        create(
            manager,
            Table::create()
                .table("policy_enforcements")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string_null("policy_id"))
                .col(string("run_id"))
                .col(big_integer_null("step_index"))
                .col(string("action_taken"))
                .col(json_col("details"))
                .col(ts("created_at"))
                .foreign_key(&mut tenant_fk("policy_enforcements"))
                .foreign_key(&mut fk(
                    "policy_enforcements",
                    "policy_id",
                    "policies",
                    "id",
                ))
                .foreign_key(&mut fk("policy_enforcements", "run_id", "runs", "id"))
                .take(),
            vec![
                index(
                    "policy_enforcements",
                    "idx_policy_enforcements_tenant_policy_created",
                    &["tenant_id", "policy_id", "created_at"],
                ),
                index(
                    "policy_enforcements",
                    "idx_policy_enforcements_tenant_run",
                    &["tenant_id", "run_id"],
                ),
            ],
        )
        .await?;

        // audits
        create(
            manager,
            Table::create()
                .table("audits")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("job_id"))
                .col(string("contract_id"))
                .col(string("status"))
                .col(string_null("verdict"))
                .col(text_null("verdict_reason"))
                .col(json_col("request"))
                .col(int_zero("checks_passed"))
                .col(int_zero("checks_failed"))
                .col(int_zero("checks_inconclusive"))
                .col(json_col_null("health_before"))
                .col(json_col_null("health_after"))
                .col(ts_null("audited_at"))
                .col(big_integer_null("duration_ms"))
                .col(string_null("auditor_version"))
                .col(text_null("error"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .foreign_key(&mut tenant_fk("audits"))
                .take(),
            vec![index(
                "audits",
                "idx_audits_tenant_job_created",
                &["tenant_id", "job_id", "created_at"],
            )],
        )
        .await?;

        // audit_checks
        create(
            manager,
            Table::create()
                .table("audit_checks")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("audit_id"))
                .col(string("check_id"))
                .col(string("name"))
                .col(text("question"))
                .col(string("result"))
                .col(text("reason"))
                .col(json_col("evidence"))
                .col(int_zero("position"))
                .foreign_key(&mut tenant_fk("audit_checks"))
                .foreign_key(&mut fk_cascade("audit_checks", "audit_id", "audits", "id"))
                .take(),
            vec![unique(
                "audit_checks",
                "ux_audit_checks_audit_check",
                &["audit_id", "check_id"],
            )],
        )
        .await?;

        // exports
        create(
            manager,
            Table::create()
                .table("exports")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("incident_id"))
                .col(string("run_id"))
                .col(string("kind"))
                .col(string("format"))
                .col(string("status"))
                .col(int_zero("progress"))
                .col(text_null("reason"))
                .col(string("requested_by"))
                .col(string_null("sha256"))
                .col(big_integer_null("size_bytes"))
                .col(blob_null("content"))
                .col(string_null("content_type"))
                .col(text_null("error"))
                .col(int_zero("attempts"))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .col(ts_null("completed_at"))
                .foreign_key(&mut tenant_fk("exports"))
                .foreign_key(&mut fk("exports", "incident_id", "incidents", "id"))
                .foreign_key(&mut fk("exports", "run_id", "runs", "id"))
                .take(),
            vec![
                index(
                    "exports",
                    "idx_exports_tenant_incident",
                    &["tenant_id", "incident_id"],
                ),
                index(
                    "exports",
                    "idx_exports_tenant_run",
                    &["tenant_id", "run_id"],
                ),
            ],
        )
        .await?;

        // events (append-only outbox)
        create(
            manager,
            Table::create()
                .table("events")
                .col(big_pk("id"))
                .col(string("tenant_id"))
                .col(big_integer("seq"))
                .col(string("kind"))
                .col(string("subject_id"))
                .col(string_null("run_id"))
                .col(integer_null("severity_rank"))
                .col(json_col("payload"))
                .col(ts("created_at"))
                .foreign_key(&mut tenant_fk("events"))
                .take(),
            vec![
                unique("events", "ux_events_tenant_seq", &["tenant_id", "seq"]),
                index("events", "idx_events_tenant_run", &["tenant_id", "run_id"]),
            ],
        )
        .await?;

        // webhooks
        create(
            manager,
            Table::create()
                .table("webhooks")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(text("url"))
                .col(json_col("events"))
                .col(string_null("min_severity"))
                .col(string("secret"))
                .col(bool_default("enabled", true))
                .col(ts("created_at"))
                .col(ts("updated_at"))
                .foreign_key(&mut fk_cascade("webhooks", "tenant_id", "tenants", "id"))
                .take(),
            vec![index("webhooks", "idx_webhooks_tenant", &["tenant_id"])],
        )
        .await?;

        // webhook_deliveries
        create(
            manager,
            Table::create()
                .table("webhook_deliveries")
                .col(id_pk("id"))
                .col(string("tenant_id"))
                .col(string("webhook_id"))
                .col(big_integer("event_id"))
                .col(integer("attempt").default(1i32).take())
                .col(string("status"))
                .col(integer_null("status_code"))
                .col(text_null("error"))
                .col(ts("delivered_at"))
                .col(ts("created_at"))
                .foreign_key(&mut fk_cascade(
                    "webhook_deliveries",
                    "tenant_id",
                    "tenants",
                    "id",
                ))
                .foreign_key(&mut fk_cascade(
                    "webhook_deliveries",
                    "webhook_id",
                    "webhooks",
                    "id",
                ))
                .foreign_key(&mut fk("webhook_deliveries", "event_id", "events", "id"))
                .take(),
            vec![index(
                "webhook_deliveries",
                "idx_webhook_deliveries_webhook_event",
                &["webhook_id", "event_id"],
            )],
        )
        .await?;

        // Immutability, enforced by the database.
        let triggers = match manager.get_database_backend() {
            DbBackend::Sqlite => sqlite_trigger_sql(),
            DbBackend::Postgres => postgres_trigger_sql(),
            other => {
                return Err(DbErr::Migration(format!(
                    "unsupported database backend {other:?}: use SQLite or PostgreSQL"
                )));
            }
        };
        for sql in triggers {
            exec(manager, &sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let drop_triggers = match backend {
            DbBackend::Sqlite => sqlite_drop_trigger_sql(),
            DbBackend::Postgres => postgres_drop_trigger_sql(),
            _ => Vec::new(),
        };
        for sql in drop_triggers {
            exec(manager, &sql).await?;
        }
        for table in TABLES.iter().rev() {
            manager
                .drop_table(Table::drop().table(*table).if_exists().take())
                .await?;
        }
        if backend == DbBackend::Postgres {
            for sql in postgres_drop_function_sql() {
                exec(manager, &sql).await?;
            }
        }
        Ok(())
    }
}
