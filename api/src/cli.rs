//! The `governance` command line.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{CliOverrides, LogFormat, WorkersMode};

#[derive(Debug, Parser)]
#[command(
    name = "governance",
    version,
    about = "Runtime governance for AI-agent and workflow runs: policy snapshots, step checks, incidents, proof."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Settings every subcommand understands; they override the file and the environment.
#[derive(Debug, Args, Default)]
pub struct GlobalArgs {
    /// TOML configuration file (also `GOVERNANCE_CONFIG`).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Database URL (`sqlite://…` or `postgres://…`).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// PostgreSQL: the URL of the role owning the schema; migrations run as it, and the
    /// database URL's role is granted only what the service needs.
    #[arg(long, global = true)]
    pub migration_database_url: Option<String>,
    /// Redis URL (`redis://…`): Redis job storage and cross-replica event fan-out.
    #[arg(long, global = true)]
    pub redis_url: Option<String>,
    /// Directory for the SQLite file, the bootstrap key and exports.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP/GraphQL server (the default command).
    Serve(ServeArgs),
    /// Run background workers only (for the scale-out layout).
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Load synthetic runs of clean steps into a tenant (for benchmarks of a large store): the
    /// same rows the service writes, in large transactions. The runs are marked synthetic.
    Seed {
        /// The tenant's name.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// How many runs.
        #[arg(long, default_value_t = 1000)]
        runs: u64,
        /// Steps per run.
        #[arg(long, default_value_t = 1000)]
        steps: u64,
        /// End every run as `completeRun(SUCCEEDED)` does and enqueue its evaluation-record
        /// job on the configured queue, for workers to drain.
        #[arg(long)]
        ended: bool,
    },
    /// Copy the embedded database to PATH, consistently, while the service runs (SQLite
    /// `VACUUM INTO`; on PostgreSQL use `pg_dump`). PATH must not exist.
    Backup { path: std::path::PathBuf },
    /// The key that signs this deployment's records (kept outside the database).
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// Verify an exported bundle (a JSON export) offline: no database, no network. Checks the
    /// export signature, the run's hash chain against every step, total and hash the bundle
    /// shows, and the run's head in the signed transparency-log checkpoint. Exit status 0 when
    /// it verifies, 1 when it does not (each failure is named), 2 when the file or a key
    /// cannot be read, 3 when no --key was given (the bundle is only checked against the key
    /// it carries itself, which proves nothing about who signed it).
    Verify {
        /// The bundle: a JSON export as downloaded.
        file: PathBuf,
        /// A key to trust: a verifier key (`<name>+<key id>+<base64>`), or a file holding
        /// verifier keys one per line or the JSON of `GET /.well-known/governance-keys`.
        /// Repeatable. Without it the bundle's own key is used, which shows the bundle is
        /// intact but not who signed it (exit status 3).
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drive a full scenario through the API (policies, a run stopped by a policy, the
    /// incident, its proof) and write the three export PDFs to a folder.
    Demo {
        /// Where to write the PDFs.
        #[arg(long, default_value = "governance-demo")]
        out: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Print the verifier keys (the active one first), creating the key if there is none.
    Show,
    /// Retire the active key (its verifier key stays published, so what it signed still
    /// verifies) and put a new one in its place. Restart every replica afterwards.
    Rotate,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Run workers in this process (`embedded`) or not (`off`).
    #[arg(long, value_enum)]
    pub workers: Option<WorkersMode>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its first API key (shown once).
    Create {
        name: String,
        /// The first key's roles: INTEGRATOR, APPROVER, ADMIN or READER (repeatable).
        #[arg(long = "role", value_name = "ROLE", default_value = "ADMIN")]
        roles: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create another API key for a tenant and print it (shown once).
    Create {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// A label for the key.
        #[arg(long, default_value = "cli")]
        name: String,
        /// The key's roles: INTEGRATOR (start runs, report steps, end runs; read), APPROVER
        /// (decide approvals and incidents; read), ADMIN (everything), READER (read only).
        /// Repeatable.
        #[arg(long = "role", value_name = "ROLE", default_value = "ADMIN")]
        roles: Vec<String>,
    },
    /// Revoke an API key by its id (`key_…`).
    Revoke { key_id: String },
}

impl Cli {
    /// The flag layer of the configuration.
    pub fn overrides(&self) -> CliOverrides {
        let serve = match &self.command {
            Some(Command::Serve(args)) => Some(args),
            _ => None,
        };
        CliOverrides {
            database_url: self.global.database_url.clone(),
            migration_database_url: self.global.migration_database_url.clone(),
            redis_url: self.global.redis_url.clone(),
            bind: serve.and_then(|s| s.bind),
            data_dir: self.global.data_dir.clone(),
            workers: serve.and_then(|s| s.workers),
            log_format: self.global.log_format,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_parsed_with_its_flags() {
        let cli = Cli::parse_from([
            "governance",
            "serve",
            "--workers=off",
            "--bind",
            "127.0.0.1:0",
        ]);
        let o = cli.overrides();
        assert_eq!(o.workers, Some(WorkersMode::Off));
        assert_eq!(o.bind.map(|b| b.port()), Some(0));
    }

    #[test]
    fn no_subcommand_means_serve() {
        let cli = Cli::parse_from(["governance"]);
        assert!(cli.command.is_none());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
