//! Durable job queues. The storage follows the deployment: SQLite (sharing the service's pool)
//! by default, PostgreSQL when the database is PostgreSQL, Redis when a Redis URL is configured.
//! Queue names are explicit and namespaced, so moving a Rust type never orphans queued jobs and
//! several deployments can share one Redis.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use apalis::prelude::{Task, TaskBuilder, TaskSink};
use apalis_postgres::PostgresStorage;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use governance_core::outcome::FollowUp;
use sea_orm::{DatabaseConnection, DbBackend};
use tokio::sync::Notify;

use crate::jobs::{
    BuildExport, DeliverWebhook, FanOutWebhooks, JobKey, RecordEvaluation, RunAudit, RunSimulation,
};

/// How to reach the queues.
#[derive(Clone)]
pub struct QueueSettings {
    pub db: DatabaseConnection,
    pub redis_url: Option<String>,
    pub namespace: String,
    /// How long finished and dead jobs are kept (see [`crate::retention`]); on Redis also how
    /// long a job's idempotency key outlives it.
    pub retention: Duration,
}

/// The storage of one job type, on whichever backend is configured.
#[derive(Clone)]
pub enum Storage<T> {
    Sqlite(SqliteStorage<T>),
    Postgres(PostgresStorage<T>),
    Redis(RedisStorage<T>),
}

/// One job type's queue: its storage, and the signal that this process pushed to it (which
/// wakes this process's worker at once, see [`crate::wakeup`]).
#[derive(Clone)]
pub struct Queue<T> {
    pub storage: Storage<T>,
    pub pushed: Arc<Notify>,
}

impl<T> Queue<T> {
    fn new(storage: Storage<T>) -> Self {
        Self {
            storage,
            pushed: Arc::new(Notify::new()),
        }
    }
}

/// The queues of every job type.
#[derive(Clone)]
pub struct JobQueue {
    pub evaluation: Queue<RecordEvaluation>,
    pub audit: Queue<RunAudit>,
    pub simulation: Queue<RunSimulation>,
    pub export: Queue<BuildExport>,
    pub fan_out: Queue<FanOutWebhooks>,
    pub delivery: Queue<DeliverWebhook>,
    pub(crate) redis: Option<redis::aio::ConnectionManager>,
    pub(crate) db: DatabaseConnection,
    pub(crate) namespace: String,
    pub(crate) retention: Duration,
}

/// Jobs of one type handled at once by one process.
pub const CONCURRENCY: usize = 4;
/// Evaluation-record jobs handled at once by one process: one per ended run, each a few reads
/// and one small insert, so many run together and their inserts share a commit (on SQLite,
/// through the evaluation lane of `governance_core::store`).
pub const EVALUATION_CONCURRENCY: usize = 64;

/// The job types, by queue name (under the namespace).
pub(crate) const JOB_QUEUES: [&str; 6] = [
    "evaluation",
    "audit",
    "simulation",
    "export",
    "webhook-fan-out",
    "webhook-delivery",
];

/// Jobs moved per script call by [`JobQueue::promote_due_jobs`].
const PROMOTE_CHUNK: u64 = 1000;

/// Move up to ARGV[2] jobs due by ARGV[1] from the scheduled set to the active list, and signal
/// them as apalis-redis does when it promotes.
const PROMOTE_SCRIPT: &str = r#"
local ids = redis.call("zrangebyscore", KEYS[1], 0, ARGV[1], "LIMIT", 0, ARGV[2])
if #ids > 0 then
    redis.call("rpush", KEYS[2], unpack(ids))
    redis.call("zrem", KEYS[1], unpack(ids))
    redis.call("del", KEYS[3])
    redis.call("lpush", KEYS[3], 1)
end
return #ids
"#;

pub(crate) fn queue_name(namespace: &str, job: &str) -> String {
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
    /// The storage of one job type on this backend, under `namespace.job`, fetching up to
    /// `batch` jobs at a time.
    fn queue<T>(&self, namespace: &str, job: &str, batch: usize, retention: Duration) -> Queue<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + Unpin + 'static,
    {
        let queue = queue_name(namespace, job);
        Queue::new(match self {
            Backend::Sqlite(pool) => Storage::Sqlite(
                SqliteStorage::new(pool).with_config(
                    apalis_sqlite::Config::default()
                        .queue(&queue)
                        .batch_size(batch),
                ),
            ),
            Backend::Postgres(pool) => Storage::Postgres(
                PostgresStorage::new(pool).with_config(
                    apalis_postgres::Config::default()
                        .queue(&queue)
                        .batch_size(batch),
                ),
            ),
            Backend::Redis(manager) => Storage::Redis(
                RedisStorage::new(manager.clone()).with_config(
                    apalis_redis::Config::default()
                        .queue(&queue)
                        .batch_size(batch)
                        .idempotency_ttl(Some(retention)),
                ),
            ),
        })
    }
}

/// apalis-sqlite acknowledges a batch with `UPDATE Jobs … FROM json_each(?) WHERE Jobs.id = …
/// AND Jobs.lock_by = ?`. Without statistics SQLite drives that from the `lock_by` index, and
/// a finished job keeps its worker's name, so every acknowledgement re-parses the batch's JSON
/// once per job the worker ever finished: a worker gets slower the longer it runs (measured:
/// 700 jobs/s falling to 150 within 10,000 jobs). Telling the planner what is true of that
/// index, that one worker name covers many rows, makes it look each acknowledged job up by id
/// instead. (SQLite documents writing `sqlite_stat1` by hand for exactly this.)
async fn steer_sqlite_acks(pool: &sqlx_pool::Sqlite) -> anyhow::Result<()> {
    use sea_orm::sqlx;
    let mut conn = pool.acquire().await?;
    // Creates sqlite_stat1 when missing without scanning `Jobs` (which only grows).
    sqlx::query("ANALYZE sqlite_schema")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM sqlite_stat1 WHERE tbl = 'Jobs' AND idx = 'LIdx'")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('Jobs', 'LIdx', '1000000 100000')",
    )
    .execute(&mut *conn)
    .await?;
    // Make every connection reload the statistics.
    sqlx::query("ANALYZE sqlite_schema")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Apply the PostgreSQL job storage's migrations (the `apalis` schema), unless every one is
/// applied already: checking first needs only SELECT on its history, so a service logged in as
/// a runtime role without DDL rights starts once the owner has migrated (see
/// `migration::roles`), while a single-role deployment keeps migrating on start.
pub async fn migrate_postgres_storage(db: &DatabaseConnection) -> anyhow::Result<()> {
    use sea_orm::sqlx;
    let pool = db.get_postgres_connection_pool();
    let migrator = PostgresStorage::migrations();
    // The table name is sqlx's constant, not input.
    let applied: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM {} WHERE success",
        migrator.table_name
    )))
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let pending = migrator
        .iter()
        .any(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version));
    if pending {
        migrator
            .run(pool)
            .await
            .context("job queue (PostgreSQL) migration failed")?;
    }
    Ok(())
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
            retention,
        } = settings;
        let backend = match (&redis_url, db.get_database_backend()) {
            (Some(url), _) => {
                let client = crate::redis_client::client(url).with_context(|| {
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
                steer_sqlite_acks(pool)
                    .await
                    .context("job queue (SQLite) planner statistics")?;
                Backend::Sqlite(pool.clone())
            }
            (None, DbBackend::Postgres) => {
                migrate_postgres_storage(&db).await?;
                Backend::Postgres(db.get_postgres_connection_pool().clone())
            }
            (None, other) => anyhow::bail!("unsupported database backend {other:?}"),
        };
        Ok(Self {
            evaluation: backend.queue(&namespace, "evaluation", EVALUATION_CONCURRENCY, retention),
            audit: backend.queue(&namespace, "audit", CONCURRENCY, retention),
            simulation: backend.queue(&namespace, "simulation", CONCURRENCY, retention),
            export: backend.queue(&namespace, "export", CONCURRENCY, retention),
            fan_out: backend.queue(&namespace, "webhook-fan-out", CONCURRENCY, retention),
            delivery: backend.queue(&namespace, "webhook-delivery", CONCURRENCY, retention),
            redis: match backend {
                Backend::Redis(manager) => Some(manager),
                _ => None,
            },
            db,
            namespace,
            retention,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Enqueue the job a follow-up calls for. Each job carries the identity of what it works
    /// on as its idempotency key (unique per queue), so enqueueing it again while it is queued,
    /// running or kept as finished (see [`Self::remove_finished_before`]) adds nothing: the
    /// sweeper's repairs never duplicate a job that is only late.
    pub async fn enqueue(&self, follow_up: &FollowUp) -> anyhow::Result<()> {
        match follow_up {
            FollowUp::RecordEvaluation { tenant_id, run_id } => {
                let job = RecordEvaluation {
                    tenant_id: tenant_id.clone(),
                    run_id: run_id.clone(),
                };
                push_all(&self.evaluation, vec![job]).await
            }
            FollowUp::BuildExport {
                tenant_id,
                export_id,
            } => {
                let job = BuildExport {
                    tenant_id: tenant_id.clone(),
                    export_id: export_id.clone(),
                };
                push_all(&self.export, vec![job]).await
            }
            FollowUp::FanOutWebhooks {
                tenant_id,
                event_id,
            } => {
                let job = FanOutWebhooks {
                    tenant_id: tenant_id.clone(),
                    event_id: *event_id,
                };
                push_all(&self.fan_out, vec![job]).await
            }
            FollowUp::DeliverWebhook {
                tenant_id,
                webhook_id,
                event_id,
            } => {
                let job = DeliverWebhook {
                    tenant_id: tenant_id.clone(),
                    webhook_id: webhook_id.clone(),
                    event_id: *event_id,
                };
                push_all(&self.delivery, vec![job]).await
            }
            FollowUp::RunAudit {
                tenant_id,
                audit_id,
            } => {
                let job = RunAudit {
                    tenant_id: tenant_id.clone(),
                    audit_id: audit_id.clone(),
                };
                push_all(&self.audit, vec![job]).await
            }
            FollowUp::RunSimulation {
                tenant_id,
                simulation_id,
            } => {
                let job = RunSimulation {
                    tenant_id: tenant_id.clone(),
                    simulation_id: simulation_id.clone(),
                };
                push_all(&self.simulation, vec![job]).await
            }
        }
    }

    /// Enqueue many evaluation-record jobs at once (bulk loads).
    pub async fn enqueue_evaluations(&self, jobs: Vec<RecordEvaluation>) -> anyhow::Result<()> {
        push_all(&self.evaluation, jobs).await
    }

    /// On Redis, move every due job from its queue's scheduled set to its active list, at most
    /// [`PROMOTE_CHUNK`] per script call; returns how many moved (0 on the SQL storages).
    ///
    /// apalis-redis pushes every job to the scheduled set, and its fetch promotes ALL due jobs
    /// with one Lua `unpack`, which Redis refuses past about 8,000 values ("too many results to
    /// unpack"). A backlog larger than that (workers down while jobs keep coming) would make
    /// every fetch fail, for good. Promoting in chunks first, when workers start and on every
    /// sweep, keeps the due set small enough for apalis's own fetch.
    pub async fn promote_due_jobs(&self) -> anyhow::Result<u64> {
        let Some(manager) = &self.redis else {
            return Ok(0);
        };
        let script = redis::Script::new(PROMOTE_SCRIPT);
        let mut conn = manager.clone();
        let mut moved = 0;
        for job in JOB_QUEUES {
            let config = apalis_redis::Config::default().queue(queue_name(&self.namespace, job));
            loop {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs();
                let n: u64 = script
                    .key(config.scheduled_jobs_set())
                    .key(config.active_jobs_list())
                    .key(config.signal_list())
                    .arg(now)
                    .arg(PROMOTE_CHUNK)
                    .invoke_async(&mut conn)
                    .await
                    .with_context(|| format!("cannot promote due `{job}` jobs"))?;
                moved += n;
                if n < PROMOTE_CHUNK {
                    break;
                }
            }
        }
        Ok(moved)
    }

    /// Put back in the queue the jobs taken by this process's workers named `generation` (see
    /// `runner`), which have stopped: apalis would leave them to other workers' heartbeats
    /// (a minute and more), and a job such as an evaluation record would wait that long. Each
    /// job is idempotent, so one that had in fact finished does no harm run again. Redis keeps
    /// its own account of a dead worker's jobs. Returns how many were put back.
    pub async fn release_jobs_of(&self, generation: &str) -> anyhow::Result<u64> {
        use sea_orm::sqlx;
        if self.redis.is_some() {
            return Ok(0);
        }
        // Worker names are `governance-<job>-<pid>-<generation>-<run>` (letters, digits, `-`).
        let pattern = format!("governance-%-{}-{generation}-%", std::process::id());
        let released = match self.db.get_database_backend() {
            DbBackend::Sqlite => sqlx::query(
                "UPDATE Jobs SET status = 'Pending', done_at = NULL, lock_by = NULL,                  lock_at = NULL WHERE status IN ('Running', 'Queued') AND lock_by LIKE ?",
            )
            .bind(&pattern)
            .execute(self.db.get_sqlite_connection_pool())
            .await
            .context("cannot release a stopped worker's jobs (SQLite)")?
            .rows_affected(),
            DbBackend::Postgres => sqlx::query(
                "UPDATE apalis.jobs SET status = 'Pending', done_at = NULL, lock_by = NULL,                  lock_at = NULL WHERE status IN ('Running', 'Queued') AND lock_by LIKE $1",
            )
            .bind(&pattern)
            .execute(self.db.get_postgres_connection_pool())
            .await
            .context("cannot release a stopped worker's jobs (PostgreSQL)")?
            .rows_affected(),
            _ => 0,
        };
        Ok(released)
    }

    /// Whether the queues are kept in the SQLite database.
    pub fn is_sqlite(&self) -> bool {
        self.redis.is_none() && self.db.get_database_backend() == DbBackend::Sqlite
    }

    /// SQLite: wake this process's worker of every queue holding a job its fetch would claim
    /// now (pending and not locked, or failed with attempts left, and due); returns how many
    /// were woken. One read, which takes no lock: a fetch is an `UPDATE`, and on SQLite every
    /// one, even one that finds nothing, takes the database's one write lock, which every
    /// step's commit needs too. Nothing on the other backends.
    pub async fn wake_claimable(&self) -> anyhow::Result<usize> {
        use sea_orm::sqlx;
        if !self.is_sqlite() {
            return Ok(0);
        }
        let names: Vec<String> = JOB_QUEUES
            .iter()
            .map(|job| queue_name(&self.namespace, job))
            .collect();
        // The conditions of apalis-sqlite's `fetch_next.sql`, which claims due jobs by
        // `run_at` in whole seconds. The answer is each such queue's place in `names`.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let claimable: Vec<i64> = sqlx::query_scalar(
            "SELECT q.key FROM json_each(?) AS q WHERE EXISTS (SELECT 1 FROM Jobs \
             WHERE Jobs.job_type = q.value \
             AND ((Jobs.status = 'Pending' AND Jobs.lock_by IS NULL) \
                  OR (Jobs.status = 'Failed' AND Jobs.attempts < Jobs.max_attempts)) \
             AND (Jobs.run_at IS NULL OR Jobs.run_at <= ?))",
        )
        .bind(serde_json::to_string(&names)?)
        .bind(now)
        .fetch_all(self.db.get_sqlite_connection_pool())
        .await
        .context("cannot read which job queues hold due jobs (SQLite)")?;
        // In `JOB_QUEUES` order.
        let signals = [
            &self.evaluation.pushed,
            &self.audit.pushed,
            &self.simulation.pushed,
            &self.export.pushed,
            &self.fan_out.pushed,
            &self.delivery.pushed,
        ];
        for index in &claimable {
            if let Some(pushed) = usize::try_from(*index).ok().and_then(|i| signals.get(i)) {
                pushed.notify_waiters();
            }
        }
        Ok(claimable.len())
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

/// A job with its idempotency key: the identity of what it works on.
fn keyed<T: JobKey>(job: T) -> Task<T> {
    let key = job.key();
    TaskBuilder::new(job).idempotency_key(key).build()
}

/// Push `jobs` to `queue` in one go, each keyed by its work, then wake this process's worker
/// for it. A job whose key the queue already holds is left out: by the storage on SQLite and
/// Redis; on PostgreSQL, whose apalis insert has no `ON CONFLICT`, a batch refused for a key
/// already there is pushed again one job at a time, skipping those.
async fn push_all<T>(queue: &Queue<T>, jobs: Vec<T>) -> anyhow::Result<()>
where
    T: JobKey
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + Unpin
        + 'static,
{
    let all = jobs.iter().cloned().map(keyed).collect();
    match push_tasks(&queue.storage, all).await {
        Ok(()) => {}
        Err(err) if is_queued_already(&err) => {
            for job in jobs {
                match push_tasks(&queue.storage, vec![keyed(job)]).await {
                    Ok(()) => {}
                    Err(err) if is_queued_already(&err) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Err(err) => return Err(err),
    }
    queue.pushed.notify_waiters();
    Ok(())
}

/// The refusal of a job whose idempotency key its queue already holds (PostgreSQL's unique
/// index on `(job_type, idempotency_key)`).
fn is_queued_already(err: &anyhow::Error) -> bool {
    format!("{err:#}").contains("idx_jobs_idempotency_key")
}

async fn push_tasks<T>(storage: &Storage<T>, tasks: Vec<Task<T>>) -> anyhow::Result<()>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + Unpin + 'static,
{
    let mut tasks = futures::stream::iter(tasks);
    let result = match storage {
        Storage::Sqlite(s) => s
            .clone()
            .push_all(&mut tasks)
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
        Storage::Postgres(s) => s
            .clone()
            .push_all(&mut tasks)
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
        Storage::Redis(s) => s
            .clone()
            .push_all(&mut tasks)
            .await
            .map_err(|e| anyhow::anyhow!("{e}")),
    };
    result.context("cannot enqueue job")
}
