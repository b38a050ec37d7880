//! Simulations: `simulations` holds each `simulatePolicies` (the proposed policy set and the runs
//! it replays, fixed when requested; then progress; then the per-run results, totals and result
//! hash). The job updates a row while it runs; once COMPLETED or FAILED a trigger refuses any
//! change, and no row is ever deleted, so a result a policy change cites stays what it was.
//! `tenants.require_simulation` is the tenant setting of the policy gate.

use sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Tables of this migration.
pub const SIMULATION_TABLES: &[&str] = &["simulations"];

const PG_FINAL_FN: &str = "governance_simulation_final";

async fn exec(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("tenants")
                    .add_column(
                        ColumnDef::new("require_simulation")
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("simulations")
                    .col(string("id").primary_key())
                    .col(string("tenant_id"))
                    .col(string("status"))
                    .col(integer("progress"))
                    .col(json_binary("proposal"))
                    .col(string("proposed_snapshot_hash"))
                    .col(json_binary("run_filter"))
                    .col(json_binary("run_ids"))
                    .col(big_integer("runs_replayed"))
                    .col(big_integer("newly_stopped"))
                    .col(big_integer("no_longer_stopped"))
                    .col(big_integer("stop_moved"))
                    .col(json_binary_null("results"))
                    .col(string_null("result_hash"))
                    .col(text_null("error"))
                    .col(string("requested_by"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("completed_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_simulations_tenant_id")
                            .from("simulations", "tenant_id")
                            .to("tenants", "id"),
                    )
                    .take(),
            )
            .await?;
        for (name, columns) in [
            ("idx_simulations_tenant", &["tenant_id", "id"][..]),
            ("idx_simulations_status", &["status", "created_at"][..]),
        ] {
            let mut index = Index::create();
            index.name(name).table("simulations");
            for column in columns {
                index.col(*column);
            }
            manager.create_index(index.take()).await?;
        }
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                exec(
                    manager,
                    &format!(
                        "CREATE FUNCTION {PG_FINAL_FN}() RETURNS trigger LANGUAGE plpgsql AS $$ \
                         BEGIN \
                           IF TG_OP <> 'UPDATE' OR OLD.status IN ('COMPLETED', 'FAILED') THEN \
                             RAISE EXCEPTION 'simulations are immutable once completed'; \
                           END IF; \
                           RETURN NEW; \
                         END $$;"
                    ),
                )
                .await?;
                exec(
                    manager,
                    &format!(
                        "CREATE TRIGGER simulations_final BEFORE UPDATE OR DELETE ON simulations \
                         FOR EACH ROW EXECUTE FUNCTION {PG_FINAL_FN}();"
                    ),
                )
                .await?;
                exec(
                    manager,
                    &format!(
                        "CREATE TRIGGER simulations_no_truncate BEFORE TRUNCATE ON simulations \
                         FOR EACH STATEMENT EXECUTE FUNCTION {PG_FINAL_FN}();"
                    ),
                )
                .await?;
            }
            _ => {
                for sql in [
                    "CREATE TRIGGER simulations_final BEFORE UPDATE ON simulations \
                     WHEN OLD.status IN ('COMPLETED', 'FAILED') \
                     BEGIN SELECT RAISE(ABORT, 'simulations are immutable once completed'); END;",
                    "CREATE TRIGGER simulations_no_delete BEFORE DELETE ON simulations \
                     BEGIN SELECT RAISE(ABORT, 'simulations are immutable once completed'); END;",
                    "CREATE TRIGGER simulations_no_replace BEFORE INSERT ON simulations WHEN EXISTS \
                     (SELECT 1 FROM simulations AS stored WHERE stored.id = NEW.id) \
                     BEGIN SELECT RAISE(ABORT, 'simulations are immutable once completed'); END;",
                ] {
                    exec(manager, sql).await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping the table drops its triggers.
        manager
            .drop_table(Table::drop().table("simulations").if_exists().take())
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            exec(
                manager,
                &format!("DROP FUNCTION IF EXISTS {PG_FINAL_FN}();"),
            )
            .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table("tenants")
                    .drop_column("require_simulation")
                    .take(),
            )
            .await?;
        Ok(())
    }
}
