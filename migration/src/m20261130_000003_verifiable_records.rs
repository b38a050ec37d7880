//! Verifiable records: record format 2, the transparency log, and the append-only guarantees
//! they rely on (`docs/verifying.md`).
//!
//! - `runs.record_format`: the version of the record format a run's chain is written in. Runs
//!   recorded before are format 1 and stay verifiable as such; new runs are format 2, whose
//!   genesis binds the run's header.
//! - The header a format-2 genesis binds (tenant, workflow, agent, triggeredBy, metadata, start
//!   time) and the format itself can no longer change on a stored run.
//! - The transparency log, per tenant: `log_leaves` (run heads, RFC 6962 leaves), `log_nodes`
//!   (every perfect subtree's hash) and `log_checkpoints` (signed tree heads), all append-only;
//!   `runs.logged_head_hash` / `logged_at` say which head of a run the log holds last.
//! - SQLite: `INSERT OR REPLACE` / `REPLACE` into an append-only table deletes the row it
//!   collides with without firing the DELETE trigger (`recursive_triggers` is off by default, and
//!   a database administrator's shell does not turn it on). A BEFORE INSERT trigger per
//!   append-only table refuses any insert colliding with a stored row on any of its unique keys,
//!   so nothing recorded can be replaced. Where the service itself inserts with
//!   `ON CONFLICT DO NOTHING` (snapshots, evaluation records), the colliding row is skipped
//!   instead, as DO NOTHING would skip it. PostgreSQL has no REPLACE, and its UPSERT's update is
//!   refused by the UPDATE trigger.

use sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What an insert that collides with a stored row gets.
#[derive(Clone, Copy)]
enum Collision {
    /// Refused: the statement fails, naming the table.
    Refuse,
    /// Skipped, as `ON CONFLICT DO NOTHING` skips it (the service's own idempotent inserts).
    Skip,
}

/// Every append-only table with each of its unique keys (the primary key first).
const APPEND_ONLY_KEYS: &[(&str, &[&[&str]], Collision)] = &[
    (
        "policy_versions",
        &[&["id"], &["policy_id", "version"]],
        Collision::Refuse,
    ),
    (
        "policy_snapshots",
        &[
            &["pk"],
            &["tenant_id", "content_hash"],
            &["tenant_id", "snapshot_id"],
        ],
        Collision::Skip,
    ),
    (
        "trace_steps",
        &[&["pk"], &["run_id", "step_index"]],
        Collision::Refuse,
    ),
    ("violations", &[&["id"]], Collision::Refuse),
    ("evidence", &[&["id"]], Collision::Refuse),
    ("policy_enforcements", &[&["id"]], Collision::Refuse),
    (
        "policy_evaluations",
        &[&["id"], &["run_id"]],
        Collision::Skip,
    ),
    (
        "events",
        &[&["id"], &["tenant_id", "seq"]],
        Collision::Refuse,
    ),
    (
        "log_leaves",
        &[&["pk"], &["tenant_id", "leaf_index"]],
        Collision::Refuse,
    ),
    (
        "log_nodes",
        &[&["pk"], &["tenant_id", "level", "node_index"]],
        Collision::Refuse,
    ),
    (
        "log_checkpoints",
        &[&["pk"], &["tenant_id", "tree_size"]],
        Collision::Refuse,
    ),
];

/// The log's tables (append-only, like the others above).
pub const LOG_TABLES: &[&str] = &["log_leaves", "log_nodes", "log_checkpoints"];

/// The run columns a format-2 genesis binds, plus the format itself.
const RUN_HEADER: &[&str] = &[
    "tenant_id",
    "workflow_id",
    "agent",
    "triggered_by",
    "metadata",
    "started_at",
    "record_format",
];

const RUN_HEADER_TRIGGER: &str = "runs_header_immutable";
const PG_RUN_HEADER_FN: &str = "governance_runs_header_immutable";
/// Created by the first migration; raises "<table> is append-only".
const PG_APPEND_ONLY_FN: &str = "governance_append_only";

fn no_replace_trigger(table: &str) -> String {
    format!("{table}_no_replace")
}

fn sqlite_no_replace_sql() -> Vec<String> {
    APPEND_ONLY_KEYS
        .iter()
        .map(|(table, keys, collision)| {
            // One EXISTS per key, so each is answered by its own index.
            let collides = keys
                .iter()
                .map(|columns| {
                    let same = columns
                        .iter()
                        .map(|c| format!("stored.{c} = NEW.{c}"))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    format!("EXISTS (SELECT 1 FROM {table} AS stored WHERE {same})")
                })
                .collect::<Vec<_>>()
                .join(" OR ");
            let action = match collision {
                Collision::Refuse => format!("RAISE(ABORT, '{table} is append-only')"),
                Collision::Skip => "RAISE(IGNORE)".to_string(),
            };
            format!(
                "CREATE TRIGGER {} BEFORE INSERT ON {table} WHEN {collides} \
                 BEGIN SELECT {action}; END;",
                no_replace_trigger(table)
            )
        })
        .collect()
}

fn header_changed(distinct: &str) -> String {
    RUN_HEADER
        .iter()
        .map(|c| format!("NEW.{c} {distinct} OLD.{c}"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

async fn exec(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

async fn create_log_tables(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table("log_leaves")
                .col(big_integer("pk").auto_increment().primary_key())
                .col(string("tenant_id"))
                .col(big_integer("leaf_index"))
                .col(string("run_id"))
                .col(string("head_hash"))
                .col(big_integer("step_count"))
                .col(string("status"))
                .col(text("leaf_data"))
                .col(string("leaf_hash"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_log_leaves_tenant_id")
                        .from("log_leaves", "tenant_id")
                        .to("tenants", "id"),
                )
                .take(),
        )
        .await?;
    for (name, columns, unique) in [
        (
            "ux_log_leaves_tenant_index",
            &["tenant_id", "leaf_index"][..],
            true,
        ),
        (
            "idx_log_leaves_tenant_run",
            &["tenant_id", "run_id"][..],
            false,
        ),
    ] {
        let mut index = Index::create();
        index.name(name).table("log_leaves");
        for c in columns {
            index.col(*c);
        }
        if unique {
            index.unique();
        }
        manager.create_index(index.take()).await?;
    }

    manager
        .create_table(
            Table::create()
                .table("log_nodes")
                .col(big_integer("pk").auto_increment().primary_key())
                .col(string("tenant_id"))
                .col(integer("level"))
                .col(big_integer("node_index"))
                .col(string("hash"))
                .take(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("ux_log_nodes_position")
                .table("log_nodes")
                .col("tenant_id")
                .col("level")
                .col("node_index")
                .unique()
                .take(),
        )
        .await?;

    manager
        .create_table(
            Table::create()
                .table("log_checkpoints")
                .col(big_integer("pk").auto_increment().primary_key())
                .col(string("tenant_id"))
                .col(big_integer("tree_size"))
                .col(string("root_hash"))
                .col(text("note"))
                .col(string("key_id"))
                .col(timestamp_with_time_zone("created_at"))
                .take(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name("ux_log_checkpoints_tenant_size")
                .table("log_checkpoints")
                .col("tenant_id")
                .col("tree_size")
                .unique()
                .take(),
        )
        .await?;

    manager
        .alter_table(
            Table::alter()
                .table("runs")
                .add_column(ColumnDef::new("logged_head_hash").string().null())
                .take(),
        )
        .await?;
    manager
        .alter_table(
            Table::alter()
                .table("runs")
                .add_column(
                    ColumnDef::new("logged_at")
                        .timestamp_with_time_zone()
                        .null(),
                )
                .take(),
        )
        .await?;
    // The runs whose head the log does not hold yet: the sequencer's work list.
    exec(
        manager,
        "CREATE INDEX idx_runs_unlogged ON runs (tenant_id, logged_at) \
         WHERE logged_head_hash IS NULL OR logged_head_hash <> trace_head_hash",
    )
    .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("runs")
                    .add_column(
                        ColumnDef::new("record_format")
                            .integer()
                            .not_null()
                            .default(1),
                    )
                    .take(),
            )
            .await?;
        create_log_tables(manager).await?;
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                exec(
                    manager,
                    &format!(
                        "CREATE OR REPLACE FUNCTION {PG_RUN_HEADER_FN}() RETURNS trigger \
                         LANGUAGE plpgsql AS $$ \
                         BEGIN \
                           IF {} THEN \
                             RAISE EXCEPTION 'the run header is immutable'; \
                           END IF; \
                           RETURN NEW; \
                         END; $$;",
                        header_changed("IS DISTINCT FROM")
                    ),
                )
                .await?;
                exec(
                    manager,
                    &format!(
                        "CREATE TRIGGER {RUN_HEADER_TRIGGER} BEFORE UPDATE ON runs \
                         FOR EACH ROW EXECUTE FUNCTION {PG_RUN_HEADER_FN}();"
                    ),
                )
                .await?;
                for t in LOG_TABLES {
                    exec(
                        manager,
                        &format!(
                            "CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} \
                             FOR EACH ROW EXECUTE FUNCTION {PG_APPEND_ONLY_FN}();"
                        ),
                    )
                    .await?;
                    exec(
                        manager,
                        &format!(
                            "CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} \
                             FOR EACH STATEMENT EXECUTE FUNCTION {PG_APPEND_ONLY_FN}();"
                        ),
                    )
                    .await?;
                }
            }
            _ => {
                exec(
                    manager,
                    &format!(
                        "CREATE TRIGGER {RUN_HEADER_TRIGGER} BEFORE UPDATE ON runs WHEN {} \
                         BEGIN SELECT RAISE(ABORT, 'the run header is immutable'); END;",
                        header_changed("IS NOT")
                    ),
                )
                .await?;
                for t in LOG_TABLES {
                    for (op, suffix) in [("UPDATE", "no_update"), ("DELETE", "no_delete")] {
                        exec(
                            manager,
                            &format!(
                                "CREATE TRIGGER {t}_{suffix} BEFORE {op} ON {t} \
                                 BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;"
                            ),
                        )
                        .await?;
                    }
                }
                for sql in sqlite_no_replace_sql() {
                    exec(manager, &sql).await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                exec(
                    manager,
                    &format!("DROP TRIGGER IF EXISTS {RUN_HEADER_TRIGGER} ON runs;"),
                )
                .await?;
                exec(
                    manager,
                    &format!("DROP FUNCTION IF EXISTS {PG_RUN_HEADER_FN}();"),
                )
                .await?;
            }
            _ => {
                exec(
                    manager,
                    &format!("DROP TRIGGER IF EXISTS {RUN_HEADER_TRIGGER};"),
                )
                .await?;
                for (table, _, _) in APPEND_ONLY_KEYS {
                    exec(
                        manager,
                        &format!("DROP TRIGGER IF EXISTS {};", no_replace_trigger(table)),
                    )
                    .await?;
                }
            }
        }
        exec(manager, "DROP INDEX IF EXISTS idx_runs_unlogged").await?;
        for column in ["logged_at", "logged_head_hash", "record_format"] {
            manager
                .alter_table(Table::alter().table("runs").drop_column(column).take())
                .await?;
        }
        // Dropping a table drops its triggers.
        for t in LOG_TABLES.iter().rev() {
            manager
                .drop_table(Table::drop().table(*t).if_exists().take())
                .await?;
        }
        Ok(())
    }
}
