//! Configuration, layered: built-in defaults → optional TOML file → `GOVERNANCE_*` environment →
//! command-line flags. Unknown keys are rejected at every layer, so a typo is an error, not a
//! silently ignored setting.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// Whether `serve` runs the background workers in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WorkersMode {
    /// Workers run inside `serve` (the embedded default).
    Embedded,
    /// `serve` only answers requests; run `governance worker` processes separately.
    Off,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Limits on GraphQL requests, so one query cannot monopolise the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Deepest selection nesting accepted.
    pub max_depth: usize,
    /// Highest query cost accepted: each field costs 1 plus its children, a connection
    /// multiplies its children by its page size (`first`/`last`, else 50), and `verifyRun`,
    /// `explain`, `requestExport` and `requestAudit` cost more.
    pub max_complexity: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest page a connection returns.
    pub max_page_size: usize,
    /// Most aliased fields in one request document.
    pub max_aliases: usize,
    /// Most root fields in one operation.
    pub max_root_fields: usize,
    /// Most operations in one batched POST (a JSON array); 0 refuses batches.
    pub max_batch: usize,
    /// Milliseconds the policies of a snapshot may take to evaluate one step; past it the step
    /// is answered STOP (fail-closed) and its run stopped.
    pub evaluation_budget_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 15,
            max_complexity: 50_000,
            max_body_bytes: 1024 * 1024,
            max_page_size: 100,
            max_aliases: 30,
            max_root_fields: 20,
            max_batch: 10,
            evaluation_budget_ms: u64::try_from(
                governance_core::steps::EVALUATION_BUDGET.as_millis(),
            )
            .unwrap_or(u64::MAX),
        }
    }
}

/// Webhook endpoints: where they may point and how many a tenant may have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// CIDRs (or single addresses) endpoints may target although they are not public, e.g.
    /// `["10.20.0.0/16"]` for an internal receiver. Empty: public addresses only.
    pub allow_cidrs: Vec<String>,
    /// Endpoints one tenant may have.
    pub max_per_tenant: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_cidrs: Vec::new(),
            max_per_tenant: 25,
        }
    }
}

/// Limits and timers of GraphQL subscriptions over WebSocket, so an idle, flooding or
/// revoked client cannot hold the service's sockets. All durations are whole seconds, at least 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSettings {
    /// Seconds a socket has to complete `connection_init` before it is closed with 4408.
    pub init_timeout_secs: u64,
    /// Subscriptions one socket may have active at once; one more is answered with `error`.
    pub max_subscriptions_per_socket: usize,
    /// Initialised sockets one tenant may hold open on this replica; one more is closed with 1008.
    pub max_sockets_per_tenant: usize,
    /// Seconds between re-checks of a socket's API key, so a revoked key loses its sockets.
    pub auth_recheck_secs: u64,
    /// Seconds between the WebSocket Ping frames the server sends.
    pub ping_interval_secs: u64,
    /// Seconds after an unanswered Ping (no Pong, no frame at all) before the socket is closed.
    pub pong_timeout_secs: u64,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            init_timeout_secs: 10,
            max_subscriptions_per_socket: 32,
            max_sockets_per_tenant: 100,
            auth_recheck_secs: 5,
            ping_interval_secs: 15,
            pong_timeout_secs: 30,
        }
    }
}

impl WebhookSettings {
    /// The rules core applies; a CIDR that does not parse is an error naming it.
    pub fn rules(&self) -> anyhow::Result<governance_core::webhooks::WebhookRules> {
        Ok(governance_core::webhooks::WebhookRules {
            egress: governance_core::egress::EgressPolicy::from_cidrs(&self.allow_cidrs)?,
            max_per_tenant: self.max_per_tenant,
        })
    }
}

impl WebSocketSettings {
    fn secs(value: u64) -> std::time::Duration {
        // Zero would make a timer fire in a busy loop (and tokio's interval panics on it).
        std::time::Duration::from_secs(value.max(1))
    }

    pub fn init_timeout(&self) -> std::time::Duration {
        Self::secs(self.init_timeout_secs)
    }

    pub fn auth_recheck(&self) -> std::time::Duration {
        Self::secs(self.auth_recheck_secs)
    }

    pub fn ping_interval(&self) -> std::time::Duration {
        Self::secs(self.ping_interval_secs)
    }

    pub fn pong_timeout(&self) -> std::time::Duration {
        Self::secs(self.pong_timeout_secs)
    }
}

/// Every setting of the service. See the README's configuration table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Database URL; default: the SQLite file `governance.db` in `data_dir`.
    pub database_url: Option<String>,
    /// PostgreSQL only: the URL of the role that owns the schema. When set, migrations (ours and
    /// the job queue's) run over it, and the role of `database_url` is then granted only what
    /// the service needs (see `migration::roles`). Unset: one role does both.
    pub migration_database_url: Option<String>,
    /// Redis URL; when set, jobs use Redis storage and events fan out over Redis pub/sub.
    pub redis_url: Option<String>,
    /// Address the HTTP server binds (port 0 picks a free one).
    pub bind: SocketAddr,
    /// Directory for the SQLite file, the bootstrap key file and exports.
    pub data_dir: PathBuf,
    /// Run the workers inside `serve` (`embedded`) or not (`off`).
    pub workers: WorkersMode,
    /// `human` or `json` logs.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax (e.g. `info,governance_api=debug`).
    pub log_level: String,
    /// Database pool size.
    pub db_max_connections: u32,
    /// SQLite: the page cache of each pooled connection, in KiB.
    pub db_cache_kib: u32,
    /// Prefix for queue names and Redis keys, so several deployments can share one Redis.
    pub namespace: String,
    /// Seconds a graceful shutdown waits for in-flight requests and jobs.
    pub shutdown_timeout_secs: u64,
    /// Request limits.
    pub limits: Limits,
    /// Calls per minute per tenant of the costly operations (0 = unlimited).
    pub rate_limits: governance_core::rate_limit::RateLimits,
    /// A directory of Typst templates (`common.typ`, `evidence.typ`, `soc2.typ`,
    /// `executive-debrief.typ`) to render export PDFs with instead of the built-in ones.
    pub templates_dir: Option<PathBuf>,
    /// Webhook endpoint rules.
    pub webhooks: WebhookSettings,
    /// Subscription socket limits and timers.
    pub websocket: WebSocketSettings,
    /// Job queue housekeeping.
    pub jobs: JobSettings,
    pub signing: SigningSettings,
    pub secrets: SecretsSettings,
    pub log: LogSettings,
}

/// Each tenant's transparency log (see `docs/verifying.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Prefix of each tenant log's origin line (`<prefix>/<tenant id>`); name the deployment,
    /// e.g. `governance.example.com`.
    pub origin_prefix: String,
    /// A running run's head is logged at most this often (seconds); an ended run's at once.
    pub head_interval_secs: u64,
    /// Append every signed checkpoint here as a JSON line: a witness the database's
    /// administrator does not control. `verifyRun` checks the log against its last line.
    pub witness_file: Option<PathBuf>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            origin_prefix: "governance".to_string(),
            head_interval_secs: 60,
            witness_file: None,
        }
    }
}

impl LogSettings {
    pub fn core(&self) -> governance_core::transparency::LogSettings {
        governance_core::transparency::LogSettings {
            origin_prefix: self.origin_prefix.clone(),
            head_interval: chrono::Duration::seconds(
                self.head_interval_secs.min(i64::MAX as u64) as i64
            ),
        }
    }
}

/// The deployment's signing key (kept outside the database; see `docs/verifying.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningSettings {
    /// The private key file; default `signing.key` in `data_dir`, created on first start. Every
    /// replica of a deployment must read the same file.
    pub key_path: Option<PathBuf>,
    /// The key's name in signatures and verifier keys (no spaces, no `+`).
    pub name: String,
}

impl Default for SigningSettings {
    fn default() -> Self {
        Self {
            key_path: None,
            name: "governance".to_string(),
        }
    }
}

impl SigningSettings {
    pub fn key_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.key_path
            .clone()
            .unwrap_or_else(|| data_dir.join("signing.key"))
    }
}

/// The key that encrypts secrets stored in the database (webhook signing secrets, the
/// download-link key), kept outside the database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSettings {
    /// The key file; default `secrets.key` in `data_dir`, created on first start (mode 0600).
    /// Every replica must read the same file, and it must be backed up with the database:
    /// without it the stored secrets cannot be read.
    pub key_path: Option<PathBuf>,
}

impl SecretsSettings {
    pub fn key_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.key_path
            .clone()
            .unwrap_or_else(|| data_dir.join("secrets.key"))
    }
}

/// Job queue housekeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Hours a finished or dead job is kept in the queue's storage before it is removed.
    pub retention_hours: u64,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            retention_hours: 7 * 24,
        }
    }
}

impl JobSettings {
    pub fn retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.retention_hours.saturating_mul(3600))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            migration_database_url: None,
            redis_url: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            workers: WorkersMode::Embedded,
            log_format: LogFormat::Human,
            log_level: "info".to_string(),
            db_max_connections: 8,
            db_cache_kib: governance_core::db::DEFAULT_SQLITE_CACHE_KIB,
            namespace: "governance".to_string(),
            shutdown_timeout_secs: 30,
            limits: Limits::default(),
            rate_limits: Default::default(),
            templates_dir: None,
            webhooks: WebhookSettings::default(),
            websocket: WebSocketSettings::default(),
            jobs: JobSettings::default(),
            signing: SigningSettings::default(),
            secrets: SecretsSettings::default(),
            log: LogSettings::default(),
        }
    }
}

/// The environment variable naming an optional configuration file.
pub const CONFIG_FILE_ENV: &str = "GOVERNANCE_CONFIG";

impl Limits {
    /// The evaluation budget (at least 1 ms).
    pub fn evaluation_budget(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.evaluation_budget_ms.max(1))
    }
}

impl Config {
    /// Layer defaults, the file (if any), the environment, then `overrides` (from flags).
    pub fn load(
        file: Option<PathBuf>,
        overrides: &CliOverrides,
    ) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let file = file.or_else(|| std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(Env::prefixed("GOVERNANCE_").ignore(&["config"]).split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)
    }

    /// The owner role's URL, when migrations run as another role than the service.
    pub fn migration_database_url(&self) -> Option<&str> {
        self.migration_database_url
            .as_deref()
            .filter(|url| !url.is_empty())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| governance_core::db::DbSettings::sqlite_file_url(&self.data_dir))
    }
}

/// Settings given as flags; only those present override the lower layers.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkersMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// The export PDF renderer this configuration asks for.
    pub fn renderer(&self) -> std::sync::Arc<governance_workers::render::Renderer> {
        use governance_workers::render::{Renderer, Templates};
        std::sync::Arc::new(Renderer::new(match &self.templates_dir {
            Some(dir) => Templates::Dir(dir.clone()),
            None => Templates::Embedded,
        }))
    }
}

#[cfg(test)]
// figment's Jail API returns its own (large) error type; that is its design, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn layers_apply_in_order_and_unknown_keys_fail() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "gov.toml",
                "bind = \"127.0.0.1:9000\"\nnamespace = \"file\"\n[limits]\nmax_depth = 7\n",
            )?;
            jail.set_env("GOVERNANCE_NAMESPACE", "env");
            jail.set_env("GOVERNANCE_LIMITS__MAX_COMPLEXITY", "99");
            let flags = CliOverrides {
                workers: Some(WorkersMode::Off),
                ..Default::default()
            };
            let config = Config::load(Some("gov.toml".into()), &flags).map_err(|e| *e)?;
            assert_eq!(config.bind.port(), 9000); // file over default
            assert_eq!(config.namespace, "env"); // env over file
            assert_eq!(config.limits.max_depth, 7);
            assert_eq!(config.limits.max_complexity, 99);
            assert_eq!(config.workers, WorkersMode::Off); // flag over all
            assert_eq!(config.log_format, LogFormat::Human); // default kept

            jail.set_env("GOVERNANCE_NO_SUCH_SETTING", "1");
            let err = Config::load(Some("gov.toml".into()), &flags).unwrap_err();
            assert!(err.to_string().contains("no_such_setting"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        Jail::expect_with(|jail| {
            jail.create_file("gov.toml", "bnid = \"127.0.0.1:9000\"\n")?;
            let err = Config::load(Some("gov.toml".into()), &CliOverrides::default()).unwrap_err();
            assert!(err.to_string().contains("bnid"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn webhook_cidrs_parse_at_start_up_or_name_the_bad_one() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "gov.toml",
                "[webhooks]\nallow_cidrs = [\"10.0.0.0/8\", \"::1\"]\nmax_per_tenant = 3\n",
            )?;
            let config =
                Config::load(Some("gov.toml".into()), &CliOverrides::default()).map_err(|e| *e)?;
            let rules = config.webhooks.rules().map_err(|e| e.to_string())?;
            assert_eq!(rules.max_per_tenant, 3);
            assert_eq!(rules.egress.allowed().len(), 2);
            assert_eq!(Config::default().webhooks.max_per_tenant, 25);

            let bad = WebhookSettings {
                allow_cidrs: vec!["10.0.0.0/40".into()],
                ..Default::default()
            };
            let err = bad.rules().unwrap_err().to_string();
            assert!(err.contains("`10.0.0.0/40`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn websocket_settings_default_and_layer() {
        Jail::expect_with(|jail| {
            let defaults = Config::load(None, &CliOverrides::default()).map_err(|e| *e)?;
            assert_eq!(defaults.websocket, WebSocketSettings::default());
            assert_eq!(defaults.websocket.init_timeout_secs, 10);
            assert_eq!(defaults.websocket.max_subscriptions_per_socket, 32);
            assert_eq!(defaults.websocket.max_sockets_per_tenant, 100);
            assert_eq!(defaults.websocket.auth_recheck_secs, 5);
            assert_eq!(defaults.websocket.ping_interval_secs, 15);
            assert_eq!(defaults.websocket.pong_timeout_secs, 30);

            jail.create_file(
                "gov.toml",
                "[websocket]\ninit_timeout_secs = 3\nmax_sockets_per_tenant = 7\n",
            )?;
            jail.set_env("GOVERNANCE_WEBSOCKET__MAX_SOCKETS_PER_TENANT", "9");
            let config =
                Config::load(Some("gov.toml".into()), &CliOverrides::default()).map_err(|e| *e)?;
            assert_eq!(config.websocket.init_timeout_secs, 3); // file over default
            assert_eq!(config.websocket.max_sockets_per_tenant, 9); // env over file
            assert_eq!(config.websocket.ping_interval_secs, 15); // default kept

            jail.create_file("bad.toml", "[websocket]\nping_intervall_secs = 1\n")?;
            let err = Config::load(Some("bad.toml".into()), &CliOverrides::default()).unwrap_err();
            assert!(err.to_string().contains("ping_intervall_secs"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn websocket_timers_are_never_zero() {
        let settings = WebSocketSettings {
            ping_interval_secs: 0,
            ..WebSocketSettings::default()
        };
        assert_eq!(settings.ping_interval(), std::time::Duration::from_secs(1));
    }

    #[test]
    fn default_database_is_sqlite_in_data_dir() {
        let config = Config::default();
        assert!(
            config
                .database_url()
                .starts_with("sqlite://data/governance.db")
        );
    }

    #[test]
    fn migration_url_and_secrets_key_layer() {
        Jail::expect_with(|jail| {
            let defaults = Config::load(None, &CliOverrides::default()).map_err(|e| *e)?;
            assert_eq!(defaults.migration_database_url(), None);
            assert_eq!(
                defaults.secrets.key_path(&defaults.data_dir),
                PathBuf::from("data/secrets.key")
            );
            jail.create_file(
                "gov.toml",
                "database_url = \"postgres://app@db/gov\"\nmigration_database_url = \"postgres://owner@db/gov\"\n[secrets]\nkey_path = \"/keys/s.key\"\n",
            )?;
            let config =
                Config::load(Some("gov.toml".into()), &CliOverrides::default()).map_err(|e| *e)?;
            assert_eq!(
                config.migration_database_url(),
                Some("postgres://owner@db/gov")
            );
            assert_eq!(
                config.secrets.key_path(&config.data_dir),
                PathBuf::from("/keys/s.key")
            );
            jail.set_env(
                "GOVERNANCE_MIGRATION_DATABASE_URL",
                "postgres://migrator@db/gov",
            );
            jail.set_env("GOVERNANCE_SECRETS__KEY_PATH", "/elsewhere/s.key");
            let config =
                Config::load(Some("gov.toml".into()), &CliOverrides::default()).map_err(|e| *e)?;
            assert_eq!(
                config.migration_database_url(),
                Some("postgres://migrator@db/gov")
            );
            assert_eq!(
                config.secrets.key_path(&config.data_dir),
                PathBuf::from("/elsewhere/s.key")
            );
            Ok(())
        });
    }
}
