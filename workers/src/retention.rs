//! Retention of the job tables: jobs finished for good (done, killed, or failed with no attempt
//! left) are removed once older than the configured age, a small batch per statement, oldest
//! first where the storage can tell. Nothing else is touched (no `VACUUM`: SQLite reuses the
//! freed pages). Removing a finished job frees its idempotency key; on Redis the key expires
//! after the same age by itself.

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::queue::{JOB_QUEUES, JobQueue, queue_name};

/// Jobs removed per statement (or per Redis script call).
pub const BATCH: u64 = 500;
/// Statements per pass at most, so one pass stays short however large the backlog.
pub const MAX_BATCHES: u64 = 20;

/// Remove up to `batch` jobs of each of the namespace's queues finished before `cutoff`, at
/// most [`MAX_BATCHES`] times over; returns how many were removed.
pub async fn remove_finished_before(
    jobs: &JobQueue,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> anyhow::Result<u64> {
    let mut removed = 0;
    for _ in 0..MAX_BATCHES {
        let n = remove_batch(jobs, cutoff, batch).await?;
        removed += n;
        if n < batch {
            break;
        }
    }
    Ok(removed)
}

/// One pass with the configured retention: what is older than `retention` ago.
pub async fn apply(jobs: &JobQueue) -> anyhow::Result<u64> {
    let cutoff = governance_core::time::now() - chrono::Duration::from_std(jobs.retention)?;
    remove_finished_before(jobs, cutoff, BATCH).await
}

async fn remove_batch(jobs: &JobQueue, cutoff: DateTime<Utc>, batch: u64) -> anyhow::Result<u64> {
    use sea_orm::sqlx;
    let queues: Vec<String> = JOB_QUEUES
        .iter()
        .map(|job| queue_name(&jobs.namespace, job))
        .collect();
    if let Some(manager) = &jobs.redis {
        return remove_redis(manager, &queues, cutoff, batch).await;
    }
    match jobs.db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => {
            let pool = jobs.db.get_sqlite_connection_pool();
            // Served by apalis's partial index on (status, done_at) of finished jobs.
            let query = sqlx::query(
                "DELETE FROM Jobs WHERE rowid IN (SELECT rowid FROM Jobs \
                 WHERE status IN ('Done', 'Killed', 'Failed') AND done_at IS NOT NULL \
                 AND done_at < ? AND (status <> 'Failed' OR attempts >= max_attempts) \
                 AND job_type IN (SELECT value FROM json_each(?)) ORDER BY done_at LIMIT ?)",
            )
            .bind(cutoff.timestamp())
            .bind(serde_json::to_string(&queues)?);
            let result = query
                .bind(batch as i64)
                .execute(pool)
                .await
                .context("cannot remove finished jobs (SQLite)")?;
            Ok(result.rows_affected())
        }
        sea_orm::DbBackend::Postgres => {
            let pool = jobs.db.get_postgres_connection_pool();
            let result = sqlx::query(
                "DELETE FROM apalis.jobs WHERE id IN (SELECT id FROM apalis.jobs \
                 WHERE status IN ('Done', 'Killed', 'Failed') AND done_at < $1 \
                 AND (status <> 'Failed' OR attempts >= max_attempts) \
                 AND job_type = ANY($2) ORDER BY done_at LIMIT $3)",
            )
            .bind(cutoff)
            .bind(&queues)
            .bind(batch as i64)
            .execute(pool)
            .await
            .context("cannot remove finished jobs (PostgreSQL)")?;
            Ok(result.rows_affected())
        }
        other => anyhow::bail!("unsupported database backend {other:?}"),
    }
}

/// Up to ARGV[2] members of the done or dead set KEYS[1], finished at or before ARGV[1]
/// (seconds), are removed with their data (field of hash KEYS[2]) and metadata (KEYS[3]:id).
/// The sets have no order: a random sample is looked at each call.
const REMOVE_SCRIPT: &str = r#"
local ids = redis.call("SRANDMEMBER", KEYS[1], ARGV[2])
local removed = 0
for _, id in ipairs(ids) do
    local meta = KEYS[3] .. ":" .. id
    local done_at = redis.call("HGET", meta, "done_at")
    if done_at and tonumber(done_at) <= tonumber(ARGV[1]) then
        redis.call("HDEL", KEYS[2], id)
        redis.call("DEL", meta)
        redis.call("SREM", KEYS[1], id)
        removed = removed + 1
    end
end
return removed
"#;

async fn remove_redis(
    manager: &redis::aio::ConnectionManager,
    queues: &[String],
    cutoff: DateTime<Utc>,
    batch: u64,
) -> anyhow::Result<u64> {
    let script = redis::Script::new(REMOVE_SCRIPT);
    let mut conn = manager.clone();
    let mut removed = 0;
    for queue in queues {
        let config = apalis_redis::Config::default().queue(queue);
        for set in [config.done_jobs_set(), config.dead_jobs_set()] {
            let n: u64 = script
                .key(&set)
                .key(config.job_data_hash())
                .key(config.job_meta_hash())
                .arg(cutoff.timestamp())
                .arg(batch)
                .invoke_async(&mut conn)
                .await
                .with_context(|| format!("cannot remove finished jobs of `{queue}` (Redis)"))?;
            removed += n;
        }
    }
    Ok(removed)
}
