//! Shadow policies: `policies.mode` and `policy_versions.mode` (`ENFORCE`, the behaviour so far,
//! or `SHADOW`: evaluated on every step and recorded, never enforced), and `shadow_findings`,
//! one append-only row per finding of a shadow policy, written with its step.

use sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Append-only tables of this migration.
pub const SHADOW_TABLES: &[&str] = &["shadow_findings"];

/// Created by the first migration; raises "<table> is append-only".
const PG_APPEND_ONLY_FN: &str = "governance_append_only";

async fn exec(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // policy_versions is append-only: its trigger refuses UPDATE, not a new column.
        for table in ["policies", "policy_versions"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(
                            ColumnDef::new("mode")
                                .string()
                                .not_null()
                                .default("ENFORCE"),
                        )
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("shadow_findings")
                    .col(string("id").primary_key())
                    .col(string("tenant_id"))
                    .col(string("policy_id"))
                    .col(integer("policy_version"))
                    .col(string("run_id"))
                    .col(big_integer("step_index"))
                    .col(boolean("would_stop"))
                    .col(text("reason"))
                    .col(text("observed_value"))
                    .col(text("threshold"))
                    .col(timestamp_with_time_zone("timestamp"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_shadow_findings_tenant_id")
                            .from("shadow_findings", "tenant_id")
                            .to("tenants", "id"),
                    )
                    .take(),
            )
            .await?;
        for (name, columns) in [
            (
                "idx_shadow_findings_policy",
                &["tenant_id", "policy_id", "created_at"][..],
            ),
            ("idx_shadow_findings_run", &["run_id", "step_index"][..]),
        ] {
            let mut index = Index::create();
            index.name(name).table("shadow_findings");
            for column in columns {
                index.col(*column);
            }
            manager.create_index(index.take()).await?;
        }
        let t = "shadow_findings";
        match manager.get_database_backend() {
            DbBackend::Postgres => {
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
            _ => {
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
                exec(
                    manager,
                    &format!(
                        "CREATE TRIGGER {t}_no_replace BEFORE INSERT ON {t} WHEN EXISTS \
                         (SELECT 1 FROM {t} AS stored WHERE stored.id = NEW.id) \
                         BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;"
                    ),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("shadow_findings").if_exists().take())
            .await?;
        for table in ["policy_versions", "policies"] {
            manager
                .alter_table(Table::alter().table(table).drop_column("mode").take())
                .await?;
        }
        Ok(())
    }
}
