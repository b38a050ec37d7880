//! The transparency log's leaves by run, in leaf order: `(tenant_id, run_id, leaf_index)` in place
//! of `(tenant_id, run_id)`. The sequencer vets each run due for a new leaf against the run's
//! latest leaf (`MAX(leaf_index)` of the run); with the leaf index in the key that is one index
//! seek instead of a scan of every leaf the run has (one a minute while it runs). Every query the
//! old index served, the new one serves too.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const OLD: &str = "idx_log_leaves_tenant_run";
const NEW: &str = "idx_log_leaves_tenant_run_leaf";

fn index(name: &str, columns: &[&'static str]) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(name).table("log_leaves");
    for column in columns {
        index.col(*column);
    }
    index.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(index(NEW, &["tenant_id", "run_id", "leaf_index"]))
            .await?;
        manager
            .drop_index(Index::drop().name(OLD).table("log_leaves").to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(index(OLD, &["tenant_id", "run_id"]))
            .await?;
        manager
            .drop_index(Index::drop().name(NEW).table("log_leaves").to_owned())
            .await
    }
}
