//! Durable job queues. The storage follows the deployment: SQLite (sharing the service's pool)
//! by default, PostgreSQL when the database is PostgreSQL, Redis when a Redis URL is configured.
//! Queue names are explicit and namespaced, so moving a Rust type never orphans queued jobs and
//! several deployments can share one Redis.

use std::time::Duration;

use anyhow::Context;
use apalis::prelude::TaskSink;
use apalis_postgres::PostgresStorage;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use governance_core::outcome::FollowUp;
use sea_orm::{DatabaseConnection, DbBackend};

use crate::jobs::{BuildExport, DeliverWebhook, FanOutWebhooks, RecordEvaluation, RunAudit};

/// How to reach the queues.
#[derive(Clone)]
pub struct QueueSettings {
    pub db: DatabaseConnection,
    pub redis_url: Option<String>,
    pub namespace: String,
}

/// The storage of one job type, on whichever backend is configured.
#[derive(Clone)]
pub enum Storage<T> {
    Sqlite(SqliteStorage<T>),
    Postgres(PostgresStorage<T>),
    Redis(RedisStorage<T>),
}

/// The queues of every job type.
#[derive(Clone)]
pub struct JobQueue {
    pub evaluation: Storage<RecordEvaluation>,
    pub audit: Storage<RunAudit>,
    pub export: Storage<BuildExport>,
    pub fan_out: Storage<FanOutWebhooks>,
    pub delivery: Storage<DeliverWebhook>,
    redis: Option<redis::aio::ConnectionManager>,
    db: DatabaseConnection,
    namespace: String,
}

/// How long the SQLite and Redis storages wait between polls when idle.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

fn queue_name(namespace: &str, job: &str) -> String {
    format!("{namespace}.{job}")
}

/// Where the queues live.
enum Backend {
    Sqlite(sqlx_pool::Sqlite),
    Postgres(sqlx_pool::Postgres),
    Redis(redis::aio::ConnectionManager),
}

mod sqlx_pool {
    pub type Sqlite = sea_orm::sqlx::SqlitePool;
    pub type Postgres = sea_orm::sqlx::PgPool;
}

impl Backend {
    /// The storage of one job type on this backend, under `namespace.job`.
    fn storage<T>(&self, namespace: &str, job: &str) -> Storage<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + Unpin + 'static,
    {
        let queue = queue_name(namespace, job);
        match self {
            Backend::Sqlite(pool) => Storage::Sqlite(
                SqliteStorage::new(pool)
                    .with_config(apalis_sqlite::Config::default().queue(&queue)),
            ),
            Backend::Postgres(pool) => Storage::Postgres(
                PostgresStorage::new(pool)
                    .with_config(apalis_postgres::Config::default().queue(&queue)),
            ),
            Backend::Redis(manager) => Storage::Redis(
                RedisStorage::new(manager.clone())
                    .with_config(apalis_redis::Config::default().queue(&queue)),
            ),
        }
    }
}

impl JobQueue {
    /// Connect the configured storage and apply its migrations (SQLite/PostgreSQL). On SQLite only
    /// the storage's migrations run, never its `setup`, which would weaken our pragmas
    /// (`synchronous=OFF`) on the shared pool.
    pub async fn connect(settings: QueueSettings) -> anyhow::Result<Self> {
        let QueueSettings {
            db,
            redis_url,
            namespace,
        } = settings;
        let backend = match (&redis_url, db.get_database_backend()) {
            (Some(url), _) => {
                let client = redis::Client::open(url.as_str()).with_context(|| {
                    format!("invalid Redis URL `{}`", governance_core::db::redact(url))
                })?;
                let manager = redis::aio::ConnectionManager::new(client)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot connect to Redis at {}",
                            governance_core::db::redact(url)
                        )
                    })?;
                Backend::Redis(manager)
            }
            (None, DbBackend::Sqlite) => {
                let pool = db.get_sqlite_connection_pool();
                SqliteStorage::migrations()
                    .run(pool)
                    .await
                    .context("job queue (SQLite) migration failed")?;
                Backend::Sqlite(pool.clone())
            }
            (None, DbBackend::Postgres) => {
                let pool = db.get_postgres_connection_pool();
                PostgresStorage::migrations()
                    .run(pool)
                    .await
                    .context("job queue (PostgreSQL) migration failed")?;
                Backend::Postgres(pool.clone())
            }
            (None, other) => anyhow::bail!("unsupported database backend {other:?}"),
        };
        Ok(Self {
            evaluation: backend.storage(&namespace, "evaluation"),
            audit: backend.storage(&namespace, "audit"),
            export: backend.storage(&namespace, "export"),
            fan_out: backend.storage(&namespace, "webhook-fan-out"),
            delivery: backend.storage(&namespace, "webhook-delivery"),
            redis: match backend {
                Backend::Redis(manager) => Some(manager),
                _ => None,
            },
            db,
            namespace,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Enqueue the job a follow-up calls for.
    pub async fn enqueue(&self, follow_up: &FollowUp) -> anyhow::Result<()> {
        match follow_up {
            FollowUp::RecordEvaluation { tenant_id, run_id } => {
                push(
                    &self.evaluation,
                    RecordEvaluation {
                        tenant_id: tenant_id.clone(),
                        run_id: run_id.clone(),
                    },
                )
                .await
            }
            FollowUp::BuildExport {
                tenant_id,
                export_id,
            } => {
                push(
                    &self.export,
                    BuildExport {
                        tenant_id: tenant_id.clone(),
                        export_id: export_id.clone(),
                    },
                )
                .await
            }
            FollowUp::FanOutWebhooks {
                tenant_id,
                event_id,
            } => {
                push(
                    &self.fan_out,
                    FanOutWebhooks {
                        tenant_id: tenant_id.clone(),
                        event_id: *event_id,
                    },
                )
                .await
            }
            FollowUp::DeliverWebhook {
                tenant_id,
                webhook_id,
                event_id,
            } => {
                push(
                    &self.delivery,
                    DeliverWebhook {
                        tenant_id: tenant_id.clone(),
                        webhook_id: webhook_id.clone(),
                        event_id: *event_id,
                    },
                )
                .await
            }
            FollowUp::RunAudit {
                tenant_id,
                audit_id,
            } => {
                push(
                    &self.audit,
                    RunAudit {
                        tenant_id: tenant_id.clone(),
                        audit_id: audit_id.clone(),
                    },
                )
                .await
            }
        }
    }

    /// Is the queue's storage answering? (`/readyz`.)
    pub async fn ping(&self) -> anyhow::Result<()> {
        match &self.redis {
            Some(manager) => {
                let mut conn = manager.clone();
                let pong: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .context("Redis did not answer PING")?;
                anyhow::ensure!(pong == "PONG", "unexpected PING answer `{pong}`");
                Ok(())
            }
            // The SQL storages live in the service's database.
            None => governance_core::db::ping(&self.db).await,
        }
    }
}

async fn push<T>(storage: &Storage<T>, job: T) -> anyhow::Result<()>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + Unpin + 'static,
{
    let result = match storage {
        Storage::Sqlite(s) => s
            .clone()
            .push(job)
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
        Storage::Postgres(s) => s
            .clone()
            .push(job)
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
        Storage::Redis(s) => s
            .clone()
            .push(job)
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
    };
    result.context("cannot enqueue job")
}
