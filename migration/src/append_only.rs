//! The guards of an append-only table, on either backend: no UPDATE and no DELETE (and on
//! PostgreSQL no TRUNCATE), each refused with "<table> is append-only"; on SQLite also no
//! `INSERT OR REPLACE` over a stored row (it would delete it without firing the DELETE trigger).
//! Tables created after the first migrations are guarded through here.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

/// Created by the first migration; raises "<table> is append-only".
const PG_APPEND_ONLY_FN: &str = "governance_append_only";

async fn exec(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    manager.get_connection().execute_unprepared(sql).await?;
    Ok(())
}

/// Guard `table`, whose primary key is the column `key`.
pub async fn guard(manager: &SchemaManager<'_>, table: &str, key: &str) -> Result<(), DbErr> {
    let t = table;
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
            .await
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
                     (SELECT 1 FROM {t} AS stored WHERE stored.{key} = NEW.{key}) \
                     BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;"
                ),
            )
            .await
        }
    }
}
