//! The schema, as sea-orm-migration migrations, including the triggers that make the append-only
//! tables immutable on SQLite and PostgreSQL.
//!
//! Run with `Migrator::up(&db, None)`. History is kept in `seaql_migrations`.

pub use sea_orm_migration::prelude::*;

mod append_only;
pub mod m20261121_000001_initial;
pub mod m20261121_000002_service_keys;
pub mod m20261130_000003_verifiable_records;
pub mod m20261130_000004_key_roles;
pub mod m20261130_000005_halts;
pub mod m20261130_000006_shadow_policies;
pub mod m20261130_000007_simulations;
pub mod m20261130_000008_approvals;
pub mod m20261201_000009_run_deadlines;
pub mod m20261201_000010_log_leaf_by_run;
pub mod roles;

pub use m20261121_000001_initial::{APPEND_ONLY_TABLES, TABLES};
pub use m20261130_000003_verifiable_records::LOG_TABLES;
pub use m20261130_000005_halts::HALT_TABLES;
pub use m20261130_000006_shadow_policies::SHADOW_TABLES;
pub use m20261130_000007_simulations::SIMULATION_TABLES;
pub use m20261130_000008_approvals::APPROVAL_TABLES;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_initial::Migration),
            Box::new(m20261121_000002_service_keys::Migration),
            Box::new(m20261130_000003_verifiable_records::Migration),
            Box::new(m20261130_000004_key_roles::Migration),
            Box::new(m20261130_000005_halts::Migration),
            Box::new(m20261130_000006_shadow_policies::Migration),
            Box::new(m20261130_000007_simulations::Migration),
            Box::new(m20261130_000008_approvals::Migration),
            Box::new(m20261201_000009_run_deadlines::Migration),
            Box::new(m20261201_000010_log_leaf_by_run::Migration),
        ]
    }
}

#[cfg(test)]
mod tests;
