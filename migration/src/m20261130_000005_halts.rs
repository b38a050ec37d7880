//! The kill switch: `halts` records each `haltRuns` (its scope, reason, who, how many running
//! runs it stopped) and `halt_resumptions` each `resumeRuns`. Both are append-only: a halt is
//! lifted by recording its resumption, never by changing or deleting it, and a halt is resumed
//! at most once (the resumption's primary key is the halt's id).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The kill switch's tables, append-only.
pub const HALT_TABLES: &[&str] = &["halts", "halt_resumptions"];

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
        for (table, key) in [("halts", "id"), ("halt_resumptions", "halt_id")] {
            crate::append_only::guard(manager, table, key).await?;
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
