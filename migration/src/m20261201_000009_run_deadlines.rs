//! Run deadlines: `runs.deadline_at`, the time before which no DURATION_LIMIT can end the run,
//! indexed with the run's status so the sweeper reads only the runs whose deadline has passed
//! (it used to read the 500 oldest running runs, whole, every second, and never looked past them).
//!
//! A run starts with the deadline of its snapshot's smallest enforcing BLOCK `maxSeconds`, or none.
//! A run not yet ended when this migration runs is given its start time: its deadline is due at
//! once, and the sweeper's first pass checks it against its snapshot and stops it or stores the
//! deadline the snapshot gives. The stored deadline is never later than the snapshot's, so no run
//! is checked later than before.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEX: &str = "idx_runs_status_deadline";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("runs")
                    .add_column(
                        ColumnDef::new("deadline_at")
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE runs SET deadline_at = started_at \
                 WHERE status IN ('QUEUED', 'RUNNING', 'AWAITING_APPROVAL')",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table("runs")
                    .col("status")
                    .col("deadline_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table("runs").to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("runs")
                    .drop_column("deadline_at")
                    .to_owned(),
            )
            .await
    }
}
