//! Human approval: `approvals`, one row per step held by a REQUIRE_APPROVAL policy (written
//! with the held step), and `approval_decisions`, at most one per approval (its primary key is
//! the approval's id, so an approval is decided once, whoever races to decide it). A decision is
//! a chained entry of its run's record (`prev_hash`, `entry_hash`). Both are append-only.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Append-only tables of this migration.
pub const APPROVAL_TABLES: &[&str] = &["approvals", "approval_decisions"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("approvals")
                    .col(string("id").primary_key())
                    .col(string("tenant_id"))
                    .col(string("run_id"))
                    .col(big_integer("step_index"))
                    .col(string("policy_id"))
                    .col(integer("policy_version"))
                    .col(string_null("requested_by_key"))
                    .col(big_integer("timeout_seconds"))
                    .col(string("on_timeout"))
                    .col(timestamp_with_time_zone("requested_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_approvals_tenant_id")
                            .from("approvals", "tenant_id")
                            .to("tenants", "id"),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_approvals_run_id")
                            .from("approvals", "run_id")
                            .to("runs", "id"),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("approval_decisions")
                    .col(string("approval_id").primary_key())
                    .col(string("tenant_id"))
                    .col(string("run_id"))
                    .col(big_integer("step_index"))
                    .col(string("status"))
                    .col(string("decision"))
                    .col(string_null("decided_by_key"))
                    .col(text_null("note"))
                    .col(timestamp_with_time_zone("decided_at"))
                    .col(string("prev_hash"))
                    .col(string("entry_hash"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_approval_decisions_approval_id")
                            .from("approval_decisions", "approval_id")
                            .to("approvals", "id"),
                    )
                    .take(),
            )
            .await?;
        for (name, table, unique, columns) in [
            (
                "idx_approvals_run_step",
                "approvals",
                true,
                &["run_id", "step_index"][..],
            ),
            (
                "idx_approvals_tenant",
                "approvals",
                false,
                &["tenant_id", "requested_at"][..],
            ),
            (
                "idx_approvals_expiry",
                "approvals",
                false,
                &["expires_at"][..],
            ),
            (
                "idx_approval_decisions_run",
                "approval_decisions",
                false,
                &["run_id", "step_index"][..],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(table);
            if unique {
                index.unique();
            }
            for column in columns {
                index.col(*column);
            }
            manager.create_index(index.take()).await?;
        }
        // The runs waiting for a person: few at any time, found by the sweeper every second.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_runs_awaiting_approval ON runs (id) \
                 WHERE status = 'AWAITING_APPROVAL'",
            )
            .await?;
        crate::append_only::guard(manager, "approvals", "id").await?;
        crate::append_only::guard(manager, "approval_decisions", "approval_id").await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS idx_runs_awaiting_approval")
            .await?;
        for table in ["approval_decisions", "approvals"] {
            manager
                .drop_table(Table::drop().table(table).if_exists().take())
                .await?;
        }
        Ok(())
    }
}
