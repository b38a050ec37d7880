//! How full each job queue is, read from its storage: what operators alert on (a backlog, a
//! job waiting too long, jobs that failed for good). Finished jobs are not counted: they are
//! most of the table, and retention bounds them.

use anyhow::Context;

use crate::queue::{JOB_QUEUES, JobQueue, queue_name};

/// One queue's state now.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    /// The job type (`evaluation`, `audit`, `simulation`, `export`, `webhook-fan-out`,
    /// `webhook-delivery`).
    pub queue: &'static str,
    /// Waiting to run, retries included.
    pub pending: u64,
    /// Taken by a worker.
    pub running: u64,
    /// Failed for good (no attempt left, or a permanent failure), kept until retention.
    pub dead: u64,
    /// Seconds the longest-waiting due job has been due (0 when none is).
    pub oldest_due_secs: f64,
}

/// Every queue of the namespace, in [`JOB_QUEUES`] order.
pub async fn stats(jobs: &JobQueue) -> anyhow::Result<Vec<QueueStats>> {
    let mut all = Vec::with_capacity(JOB_QUEUES.len());
    for job in JOB_QUEUES {
        let name = queue_name(&jobs.namespace, job);
        let (pending, running, dead, oldest_due) = match &jobs.redis {
            Some(manager) => redis_counts(manager, &name).await?,
            None => sql_counts(jobs, &name).await?,
        };
        let now = governance_core::time::now().timestamp();
        all.push(QueueStats {
            queue: job,
            pending,
            running,
            dead,
            oldest_due_secs: oldest_due.map_or(0.0, |due| (now - due).max(0) as f64),
        });
    }
    Ok(all)
}

type Counts = (u64, u64, u64, Option<i64>);

async fn sql_counts(jobs: &JobQueue, queue: &str) -> anyhow::Result<Counts> {
    use sea_orm::sqlx::{self, Row};
    let now = governance_core::time::now();
    match jobs.db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => {
            let row = sqlx::query(
                "SELECT \
                 coalesce(sum(status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)), 0), \
                 coalesce(sum(status IN ('Queued', 'Running')), 0), \
                 coalesce(sum(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)), 0), \
                 min(CASE WHEN status IN ('Pending', 'Failed') AND attempts < max_attempts AND run_at <= ? THEN run_at END) \
                 FROM Jobs WHERE job_type = ? AND status IN ('Pending', 'Queued', 'Running', 'Failed', 'Killed')",
            )
            .bind(now.timestamp())
            .bind(queue)
            .fetch_one(jobs.db.get_sqlite_connection_pool())
            .await
            .context("cannot read queue depths (SQLite)")?;
            Ok((
                row.try_get::<i64, _>(0)? as u64,
                row.try_get::<i64, _>(1)? as u64,
                row.try_get::<i64, _>(2)? as u64,
                row.try_get::<Option<i64>, _>(3)?,
            ))
        }
        sea_orm::DbBackend::Postgres => {
            let row = sqlx::query(
                "SELECT \
                 count(*) FILTER (WHERE status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)), \
                 count(*) FILTER (WHERE status IN ('Queued', 'Running')), \
                 count(*) FILTER (WHERE status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts)), \
                 extract(epoch FROM min(run_at) FILTER (WHERE status IN ('Pending', 'Failed') AND attempts < max_attempts AND run_at <= $1))::bigint \
                 FROM apalis.jobs WHERE job_type = $2 AND status IN ('Pending', 'Queued', 'Running', 'Failed', 'Killed')",
            )
            .bind(now)
            .bind(queue)
            .fetch_one(jobs.db.get_postgres_connection_pool())
            .await
            .context("cannot read queue depths (PostgreSQL)")?;
            Ok((
                row.try_get::<i64, _>(0)? as u64,
                row.try_get::<i64, _>(1)? as u64,
                row.try_get::<i64, _>(2)? as u64,
                row.try_get::<Option<i64>, _>(3)?,
            ))
        }
        other => anyhow::bail!("unsupported database backend {other:?}"),
    }
}

/// Pending: the scheduled set (apalis-redis pushes every job there first) and the active list;
/// running: the in-flight sets of the registered workers; dead: the dead set. The oldest due
/// job is the scheduled set's earliest score at or before now (a promoted job is about to be
/// fetched, so it is not aged).
const COUNTS_SCRIPT: &str = r#"
local pending = redis.call("ZCARD", KEYS[1]) + redis.call("LLEN", KEYS[2])
local running = 0
for _, inflight in ipairs(redis.call("ZRANGEBYSCORE", KEYS[3], 0, "+inf")) do
    running = running + redis.call("SCARD", inflight)
end
local dead = redis.call("SCARD", KEYS[4])
local oldest = redis.call("ZRANGEBYSCORE", KEYS[1], 0, ARGV[1], "WITHSCORES", "LIMIT", 0, 1)
local due = -1
if #oldest == 2 then due = math.floor(tonumber(oldest[2])) end
return { pending, running, dead, due }
"#;

async fn redis_counts(
    manager: &redis::aio::ConnectionManager,
    queue: &str,
) -> anyhow::Result<Counts> {
    let config = apalis_redis::Config::default().queue(queue);
    let mut conn = manager.clone();
    let (pending, running, dead, due): (u64, u64, u64, i64) = redis::Script::new(COUNTS_SCRIPT)
        .key(config.scheduled_jobs_set())
        .key(config.active_jobs_list())
        .key(config.workers_set())
        .key(config.dead_jobs_set())
        .arg(governance_core::time::now().timestamp())
        .invoke_async(&mut conn)
        .await
        .with_context(|| format!("cannot read the depth of `{queue}` (Redis)"))?;
    Ok((pending, running, dead, (due >= 0).then_some(due)))
}
