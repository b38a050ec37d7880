//! Key roles: each API key holds one or more roles (`INTEGRATOR`, `APPROVER`, `ADMIN`,
//! `READER`), stored as their names, sorted and comma-separated. Keys issued before roles existed
//! could do everything, and keep doing so: they become `ADMIN`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("api_keys")
                    .add_column(ColumnDef::new("roles").string().not_null().default("ADMIN"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("api_keys")
                    .drop_column("roles")
                    .to_owned(),
            )
            .await
    }
}
