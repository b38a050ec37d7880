//! The kill switch: `halts` records each `haltRuns` (its scope, reason, who, how many running
//! runs it stopped) and `halt_resumptions` each `resumeRuns`. Both are append-only: a halt is
//! lifted by recording its resumption, never by changing or deleting it, and a halt is resumed
//! at most once (the resumption's primary key is the halt's id).

use sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The kill switch's tables, append-only.
pub const HALT_TABLES: &[&str] = &["halts", "halt_resumptions"];

/// Created by the first migration; raises "<table> is append-only".
const PG_APPEND_ONLY_FN: &str = "governance_append_only";

async fn exec(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("halts")
                    .col(string("id").primary_key())
                    .col(string("tenant_id"))
                    .col(string_null("workflow_id"))
                    .col(string_null("agent"))
                    .col(text("reason"))
                    .col(string("halted_by"))
                    .col(big_integer("runs_stopped"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_halts_tenant_id")
                            .from("halts", "tenant_id")
                            .to("tenants", "id"),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_halts_tenant_created")
                    .table("halts")
                    .col("tenant_id")
                    .col("created_at")
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("halt_resumptions")
                    .col(string("halt_id").primary_key())
                    .col(string("tenant_id"))
                    .col(string("resumed_by"))
                    .col(timestamp_with_time_zone("resumed_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_halt_resumptions_halt_id")
                            .from("halt_resumptions", "halt_id")
                            .to("halts", "id"),
                    )
                    .take(),
            )
            .await?;
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                for t in HALT_TABLES {
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
                for (t, key) in [("halts", "id"), ("halt_resumptions", "halt_id")] {
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
                    // `INSERT OR REPLACE` would delete the stored row without the DELETE trigger.
                    exec(
                        manager,
                        &format!(
                            "CREATE TRIGGER {t}_no_replace BEFORE INSERT ON {t} WHEN EXISTS \
                             (SELECT 1 FROM {t} AS stored WHERE stored.{key} = NEW.{key}) \
                             BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;"
                        ),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping a table drops its triggers.
        for t in HALT_TABLES.iter().rev() {
            manager
                .drop_table(Table::drop().table(*t).if_exists().take())
                .await?;
        }
        Ok(())
    }
}
