//! Shadow policies: `policies.mode` and `policy_versions.mode` (`ENFORCE`, the behaviour so far,
//! or `SHADOW`: evaluated on every step and recorded, never enforced), and `shadow_findings`,
//! one append-only row per finding of a shadow policy, written with its step.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Append-only tables of this migration.
pub const SHADOW_TABLES: &[&str] = &["shadow_findings"];

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
        crate::append_only::guard(manager, "shadow_findings", "id").await?;
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
