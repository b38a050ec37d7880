//! The application: opens the database, migrates, bootstraps the default tenant, binds the HTTP
//! server, and (by default) runs the workers in-process. `main` is a thin wrapper over this, and
//! the tests start it in-process on port 0.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{App, HttpServer, dev::ServerHandle, middleware::from_fn, web};
use anyhow::Context;
use governance_core::{
    db::{self, CheckpointEvent, DbSettings},
    policy::SnapshotCache,
    steps::LaneEvent,
    store::Store,
    tenancy::{self, IssuedKey},
};
use governance_workers::{JobQueue, QueueSettings, WorkerDeps, events::EventBus};
use migration::{Migrator, MigratorTrait};
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, WorkersMode},
    graphql::build_schema,
    http, metrics,
    metrics::Metrics,
    state::AppState,
};

/// Where the bootstrap key of the `default` tenant is written (mode 0600).
pub const BOOTSTRAP_KEY_FILE: &str = "default-tenant.key";

/// A built, bound, not yet running application.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    handle: ServerHandle,
    state: AppState,
    shutdown: CancellationToken,
    workers: Option<JoinHandle<anyhow::Result<()>>>,
    bootstrap_key: Option<IssuedKey>,
}

/// Open the database and bring its schema up to date.
pub async fn open_database(config: &Config) -> anyhow::Result<DatabaseConnection> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        restrict_data_dir(config)?;
    }
    let mut settings = DbSettings::new(url);
    settings.max_connections = config.db_max_connections;
    settings.sqlite_cache_kib = config.db_cache_kib;
    db::connect(&settings).await
}

/// The data directory readable by this user only (0700), and the embedded database with its WAL
/// and shared-memory files 0600: they hold every tenant's records and the download-signing key.
/// The database file is created 0600 before SQLite opens it (SQLite gives its -wal and -shm
/// files the database file's mode), and a looser mode left by an older version is tightened.
fn restrict_data_dir(config: &Config) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = &config.data_dir;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {} to mode 0700", dir.display()))?;
        if config.database_url.is_none() {
            let file = dir.join(governance_core::db::SQLITE_FILE);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("cannot create {}", file.display()))?;
            for suffix in ["", "-wal", "-shm"] {
                let path = dir.join(format!("{}{suffix}", governance_core::db::SQLITE_FILE));
                if path.exists() {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .with_context(|| {
                            format!("cannot restrict {} to mode 0600", path.display())
                        })?;
                }
            }
        }
    }
    Ok(())
}

/// Bring the schema up to date. With `migration_database_url` (PostgreSQL), our migrations and
/// the job queue's run over that connection, as the role owning the schema, and the role `db`
/// logs in as is then granted only what the service needs (`migration::roles`), every time, so
/// the grants follow the schema. Without it, `db` migrates as before, and only when something
/// is pending: a runtime role without DDL rights then starts against a schema its owner
/// migrated (`governance migrate` with the migration URL).
pub async fn migrate(config: &Config, db: &DatabaseConnection) -> anyhow::Result<()> {
    let Some(url) = config.migration_database_url() else {
        let pending = Migrator::get_pending_migrations_read_only(db)
            .await
            .map(|pending| !pending.is_empty())
            .unwrap_or(true);
        if pending {
            Migrator::up(db, None)
                .await
                .context("database migration failed")?;
        }
        return Ok(());
    };
    if db.get_database_backend() != sea_orm::DbBackend::Postgres || !url.starts_with("postgres") {
        anyhow::bail!(
            "`migration_database_url` (GOVERNANCE_MIGRATION_DATABASE_URL) separates the owner and \
             runtime roles on PostgreSQL; SQLite has no roles: leave it unset"
        );
    }
    let mut settings = DbSettings::new(url);
    settings.max_connections = 2;
    let owner = db::connect(&settings)
        .await
        .context("cannot open the migration database URL")?;
    let result = async {
        Migrator::up(&owner, None)
            .await
            .context("database migration failed")?;
        if config.redis_url.is_none() {
            governance_workers::queue::migrate_postgres_storage(&owner).await?;
        }
        let runtime_role = migration::roles::current_role(db).await?;
        migration::roles::grant_runtime(&owner, &runtime_role)
            .await
            .with_context(|| format!("cannot grant the runtime role `{runtime_role}`"))?;
        tracing::info!(role = %runtime_role, "migrated as the owner role; runtime role granted");
        anyhow::Ok(())
    }
    .await;
    owner.close().await.ok();
    result
}

/// The job queue for this configuration (SQLite, PostgreSQL, or Redis).
pub async fn open_queue(config: &Config, db: &DatabaseConnection) -> anyhow::Result<JobQueue> {
    JobQueue::connect(QueueSettings {
        db: db.clone(),
        redis_url: config.redis_url.clone(),
        namespace: config.namespace.clone(),
        retention: config.jobs.retention(),
    })
    .await
}

/// The signing key: read from its file, or created there on first start (logged with its
/// verifier key, which anyone checking a record needs).
pub fn open_signing_key(config: &Config) -> anyhow::Result<governance_core::signing::KeyRing> {
    let path = config.signing.key_path(&config.data_dir);
    let (ring, created) =
        governance_core::signing::KeyRing::load_or_create(&path, &config.signing.name)
            .map_err(|err| anyhow::anyhow!("{err}"))?;
    if created {
        tracing::info!(
            path = %path.display(),
            verifier_key = %ring.active.verifier().encoded(),
            "created the signing key"
        );
    }
    Ok(ring)
}

/// The key that seals the secrets stored in the database: read from its file, or created there
/// on first start. Every replica must read the same file.
pub fn open_secrets_key(
    config: &Config,
) -> anyhow::Result<Arc<governance_core::sealing::SecretsKey>> {
    let path = config.secrets.key_path(&config.data_dir);
    let (key, created) = governance_core::sealing::SecretsKey::load_or_create(&path)
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    if created {
        tracing::info!(path = %path.display(), key_id = key.id(), "created the secrets key");
    }
    Ok(Arc::new(key))
}

/// What the transparency log's sequencer needs.
pub fn log_deps(
    config: &Config,
    keys: Arc<governance_core::signing::KeyRing>,
) -> governance_workers::sequencer::LogDeps {
    governance_workers::sequencer::LogDeps {
        keys,
        settings: config.log.core(),
        witness_file: config.log.witness_file.clone(),
    }
}

/// The event bus: in-process, or across replicas through Redis when a Redis URL is configured.
/// Its relay runs until `shutdown`.
pub async fn open_bus(config: &Config, shutdown: CancellationToken) -> anyhow::Result<EventBus> {
    match &config.redis_url {
        Some(url) => EventBus::with_redis(url, &config.namespace, shutdown)
            .await
            .with_context(|| {
                format!(
                    "cannot connect the event bus to Redis at {}",
                    governance_core::db::redact(url)
                )
            }),
        None => Ok(EventBus::new()),
    }
}

/// Write the bootstrap key where only this user can read it.
fn write_key_file(config: &Config, key: &IssuedKey) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(&config.data_dir)?;
    let path = config.data_dir.join(BOOTSTRAP_KEY_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{}", key.secret)?;
    Ok(path)
}

impl Application {
    /// Build everything and bind the listener; nothing is served until [`Self::run_until_stopped`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        // Checked before anything is opened: a bad setting fails the start, naming itself.
        let webhook_rules = Arc::new(config.webhooks.rules()?);
        let metrics = Arc::new(Metrics::new()?);
        let mut db = open_database(&config).await?;
        let statements = metrics.db_statements.clone();
        db.set_metric_callback(move |info| {
            let outcome = if info.failed { "failed" } else { "ok" };
            statements.with_label_values(&[outcome]).inc();
        });
        migrate(&config, &db).await?;
        let jobs = open_queue(&config, &db).await?;
        let store = Store::new(db.clone()).with_secrets(open_secrets_key(&config)?);
        let statements = metrics.db_statements.clone();
        store.observe_statements(Arc::new(move |count, outcome| {
            statements
                .with_label_values(&[outcome.label()])
                .inc_by(count as u64);
        }));
        let checkpoints = metrics.wal_checkpoint_seconds.clone();
        store.observe_checkpoints(Arc::new(move |event| {
            let (kind, took) = match event {
                CheckpointEvent::Copied(took) => ("copy", took),
                CheckpointEvent::Reset { held, done: true } => ("reset", held),
                CheckpointEvent::Reset { held, done: false } => ("reset_gave_up", held),
            };
            checkpoints
                .with_label_values(&[kind])
                .observe(took.as_secs_f64());
        }));
        let bootstrap_key = tenancy::bootstrap_default(&store).await?;
        if let Some(key) = &bootstrap_key {
            let path = write_key_file(&config, key)?;
            // Printed, not logged: it must not end up in log aggregation.
            println!(
                "Created tenant `{}`. Its API key, shown once:\n\n    {}\n\nAlso written to {} (mode 0600). Send it as `Authorization: Bearer <key>`.",
                key.tenant_name,
                key.secret,
                path.display()
            );
        }
        let shutdown = CancellationToken::new();
        let bus = open_bus(&config, shutdown.clone()).await?;
        let sealed = governance_core::sealing::seal_stored_secrets(&store).await?;
        if sealed.webhook_secrets > 0 {
            tracing::info!(
                count = sealed.webhook_secrets,
                "sealed webhook secrets stored in plaintext"
            );
        }
        let download_key = Arc::new(sealed.download_key);
        let signing = Arc::new(open_signing_key(&config)?);
        let cache = SnapshotCache::new();
        let recorder = governance_core::steps::Recorder::new(
            store.clone(),
            cache.clone(),
            config.limits.evaluation_budget(),
        );
        let batch_sizes = metrics.step_batch_size.clone();
        let lock_waits = metrics.step_batch_lock_wait.clone();
        let guard_refusals = metrics.step_batch_guard_refusals.clone();
        recorder.observe_batches(Arc::new(move |event| match event {
            LaneEvent::Committed(size) => batch_sizes.observe(size as f64),
            LaneEvent::WaitedForLock(waited) => lock_waits.observe(waited.as_secs_f64()),
            LaneEvent::GuardRefused => guard_refusals.inc(),
        }));
        let state = AppState {
            db,
            store,
            jobs,
            bus,
            cache,
            recorder,
            config: config.clone(),
            metrics,
            download_key,
            rate_limiter: Arc::new(governance_core::rate_limit::RateLimiter::new(
                config.rate_limits.clone(),
            )),
            webhook_rules,
            ws_sockets: Default::default(),
            keys: Default::default(),
            signing,
        };
        let schema = build_schema(state.clone(), &config.limits);

        let listener = TcpListener::bind(config.bind)
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(app_state.clone()))
                .app_data(web::Data::new(schema.clone()))
                .wrap(from_fn(metrics::track))
                .wrap(http::security_headers())
                .configure(http::routes)
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout_secs)
        .run();
        let handle = server.handle();

        let workers = match config.workers {
            WorkersMode::Embedded => Some(tokio::spawn(governance_workers::run(
                WorkerDeps {
                    store: state.store.clone(),
                    jobs: state.jobs.clone(),
                    bus: state.bus.clone(),
                    cache: state.cache.clone(),
                    renderer: config.renderer(),
                    egress: state.webhook_rules.egress.clone(),
                    recorder: state.recorder.clone(),
                    log: log_deps(&config, state.signing.clone()),
                },
                shutdown.clone(),
            ))),
            WorkersMode::Off => None,
        };
        tracing::info!(
            port,
            workers = ?config.workers,
            database = %db::redact(&config.database_url()),
            redis = config.redis_url.as_deref().map(db::redact).unwrap_or_else(|| "none".into()),
            "governance API listening; GraphiQL at http://{}:{}/graphql",
            config.bind.ip(),
            port
        );
        Ok(Self {
            port,
            server,
            handle,
            state,
            shutdown,
            workers,
            bootstrap_key,
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The `default` tenant's key if this start created it.
    pub fn bootstrap_key(&self) -> Option<&IssuedKey> {
        self.bootstrap_key.as_ref()
    }

    /// A token that, when cancelled, shuts the application down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serve until the shutdown token is cancelled, then stop accepting, finish in-flight
    /// requests and jobs, and return.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            handle,
            shutdown,
            workers,
            state,
            ..
        } = self;
        let stopper = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tracing::info!("shutting down: finishing in-flight requests and jobs");
                handle.stop(true).await;
            })
        };
        let served = server.await;
        // The server can also end on its own (e.g. a fatal error): stop the workers too.
        shutdown.cancel();
        let _ = stopper.await;
        if let Some(workers) = workers {
            match tokio::time::timeout(
                Duration::from_secs(state.config.shutdown_timeout_secs),
                workers,
            )
            .await
            {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => tracing::error!(error = ?err, "workers ended with an error"),
                Ok(Err(err)) => tracing::error!(error = ?err, "workers task failed"),
                Err(_) => tracing::warn!("workers did not stop in time"),
            }
        }
        state.db.clone().close().await.ok();
        served.context("HTTP server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Cancel `token` on Ctrl-C or SIGTERM: the one shutdown path of the process.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        token.cancel();
    });
}
