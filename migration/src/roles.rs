//! PostgreSQL: what the service's runtime role may do, when migrations run as another role.
//!
//! The owner role (the migration URL) creates and owns every table, trigger and function. The
//! runtime role (the service's URL) gets exactly what the service does at run time: it reads
//! and inserts everywhere, updates and deletes only where the service updates and deletes, and
//! owns nothing, so it can neither drop nor disable a trigger, nor alter, truncate or drop a
//! table. The append-only tables are then guarded twice: by their triggers, and by the runtime
//! role's lack of UPDATE and DELETE on them.
//!
//! [`grant_runtime`] is idempotent: it first takes back everything the role holds in the
//! schemas, then grants the list below, in one transaction. Run it after every migration.

use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait,
};

/// Tables whose rows the service updates, or locks with `SELECT … FOR UPDATE` (which needs the
/// UPDATE privilege on PostgreSQL). Every other table of ours is read and appended to only.
pub const RUNTIME_UPDATES: &[&str] = &[
    "tenants",
    "api_keys",
    "policies",
    "runs",
    "incidents",
    "audits",
    "exports",
    "webhooks",
    "service_keys",
    "simulations",
];

/// Tables the service deletes rows from (an endpoint's deliveries go with it, by the foreign
/// key's cascade, which PostgreSQL runs with the table owner's rights).
pub const RUNTIME_DELETES: &[&str] = &["webhooks"];

/// The job queue's schema (apalis-postgres): every table there is the queue's bookkeeping,
/// which the workers update and clean up.
pub const JOB_SCHEMA: &str = "apalis";

/// Migration histories: readable by the runtime role, never written by it.
const HISTORY_TABLES: &[&str] = &["seaql_migrations", "_sqlx_migrations"];

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn one_string<C: ConnectionTrait>(conn: &C, sql: &str) -> Result<String, DbErr> {
    let row = conn
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_string()))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("`{sql}` returned no row")))?;
    row.try_get_by_index::<String>(0)
}

/// The role a connection acts as.
pub async fn current_role<C: ConnectionTrait>(conn: &C) -> Result<String, DbErr> {
    one_string(conn, "SELECT current_user::text").await
}

/// Give `runtime_role` what the service needs in the owner connection's schema (and in the job
/// queue's schema, when it exists), and nothing else. `owner` is a connection as the role that
/// ran the migrations. Refused when the runtime role is the owner itself or a superuser: then
/// there would be nothing it could not undo.
pub async fn grant_runtime(owner: &DatabaseConnection, runtime_role: &str) -> Result<(), DbErr> {
    if owner.get_database_backend() != DbBackend::Postgres {
        return Err(DbErr::Custom(
            "a separate runtime role exists on PostgreSQL only".to_string(),
        ));
    }
    let owner_role = current_role(owner).await?;
    if owner_role == runtime_role {
        return Err(DbErr::Custom(format!(
            "the migration URL and the database URL both log in as `{runtime_role}`: the service \
             must log in as a role that does not own the schema"
        )));
    }
    let runtime_is_super = owner
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            [runtime_role.into()],
        ))
        .await?
        .map(|row| row.try_get_by_index::<bool>(0))
        .transpose()?
        .ok_or_else(|| DbErr::Custom(format!("no role `{runtime_role}` in the database")))?;
    if runtime_is_super {
        return Err(DbErr::Custom(format!(
            "the runtime role `{runtime_role}` is a superuser, which could drop the append-only \
             triggers: log the service in as a role without SUPERUSER"
        )));
    }
    let txn = owner.begin().await?;
    let schema = quote_ident(&one_string(&txn, "SELECT current_schema()::text").await?);
    let role = quote_ident(runtime_role);
    let mut sql = vec![
        // Take back whatever the role held, so a table that became append-only, or a grant
        // made by hand, does not linger.
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}"),
        format!("REVOKE ALL ON SCHEMA {schema} FROM {role}"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        // Identity columns draw from sequences.
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
    ];
    for table in RUNTIME_UPDATES {
        sql.push(format!("GRANT UPDATE ON {schema}.{table} TO {role}"));
    }
    for table in RUNTIME_DELETES {
        sql.push(format!("GRANT DELETE ON {schema}.{table} TO {role}"));
    }
    for table in HISTORY_TABLES {
        if table_exists(&txn, table).await? {
            sql.push(format!("REVOKE INSERT ON {schema}.{table} FROM {role}"));
        }
    }
    if schema_exists(&txn, JOB_SCHEMA).await? {
        let jobs = quote_ident(JOB_SCHEMA);
        sql.extend([
            format!("GRANT USAGE ON SCHEMA {jobs} TO {role}"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {jobs} TO {role}"
            ),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {jobs} TO {role}"),
            format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {jobs} TO {role}"),
        ]);
    }
    for statement in sql {
        txn.execute_unprepared(&statement).await?;
    }
    txn.commit().await
}

async fn table_exists<C: ConnectionTrait>(conn: &C, table: &str) -> Result<bool, DbErr> {
    Ok(conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1",
            [table.into()],
        ))
        .await?
        .is_some())
}

async fn schema_exists<C: ConnectionTrait>(conn: &C, schema: &str) -> Result<bool, DbErr> {
    Ok(conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            [schema.into()],
        ))
        .await?
        .is_some())
}
