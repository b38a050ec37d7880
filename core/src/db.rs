//! Opening the database: SQLite (the embedded default) or PostgreSQL, with the settings that make
//! recorded decisions durable. Both the API and the workers open it through here.

use std::{path::Path, str::FromStr, time::Duration};

use anyhow::Context;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

/// The embedded database's file name inside the data directory.
pub const SQLITE_FILE: &str = "governance.db";

/// How to open the database.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// `sqlite://path/to/file.db`, `sqlite::memory:` or `postgres://…`.
    pub url: String,
    /// Pool size. SQLite serialises writers anyway; a few connections let readers run beside them.
    pub max_connections: u32,
    /// How long to wait for a connection (and, on SQLite, for the write lock).
    pub acquire_timeout: Duration,
    /// SQLite: the page cache each connection keeps, in KiB (`PRAGMA cache_size`). The pages are
    /// in the operating system's cache as well, so a page the connection's cache lacks costs a
    /// read from memory, not from the disk; what this bounds is the memory the pool's caches
    /// grow to, `max_connections` × this, as the database grows.
    pub sqlite_cache_kib: u32,
}

impl DbSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            sqlite_cache_kib: DEFAULT_SQLITE_CACHE_KIB,
        }
    }

    /// The URL of a SQLite file in `dir` (created if missing).
    pub fn sqlite_file_url(dir: &Path) -> String {
        format!("sqlite://{}?mode=rwc", dir.join(SQLITE_FILE).display())
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }
}

/// The page cache of each pooled SQLite connection, unless configured: a quarter of SQLite's own
/// default (2,000 KiB). The step path's writes touch the right edge of each table and the inner
/// pages of its indexes, which fit in it; every other page is a copy of one the operating system
/// caches too. With SQLite's default, the pool's 8 caches kept filling as the database grew: a
/// 10-minute soak at 1,199 steps/s grew the server's memory by 22.7 MiB, and by 12.4 MiB with
/// this (README, "Performance").
pub const DEFAULT_SQLITE_CACHE_KIB: u32 = 512;

/// The isolation of every PostgreSQL transaction the service opens (its connections' default).
pub(crate) const PG_TRANSACTION_ISOLATION: &str = "read committed";

/// Open a pool. On SQLite: WAL, `synchronous=FULL` (a commit is on disk before it is
/// acknowledged), foreign keys on, and a busy timeout so writers queue instead of failing.
pub async fn connect(settings: &DbSettings) -> anyhow::Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(settings.url.clone());
    opts.max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .connect_timeout(settings.acquire_timeout)
        .sqlx_logging(false);
    if settings.is_sqlite() {
        // A pooled connection to a local file cannot have gone away: pinging it on every
        // checkout only added a round trip to the connection's thread in front of every
        // transaction and every read.
        opts.test_before_acquire(false);
        // Validate the URL here so a typo gives a clear message rather than a pool error.
        SqliteConnectOptions::from_str(&settings.url)
            .with_context(|| format!("invalid SQLite URL `{}`", settings.url))?;
        let busy = settings.acquire_timeout;
        // A negative cache size is in KiB (a positive one would be in pages).
        let cache_size = format!("-{}", settings.sqlite_cache_kib.max(1));
        opts.map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(busy)
                .create_if_missing(true)
                // No checkpoint inside a commit: see `checkpoint_in_background`.
                .pragma("wal_autocheckpoint", "0")
                .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
                .pragma("cache_size", cache_size.clone())
        });
    } else {
        // A server, a proxy or a firewall may drop a connection that sat idle; a busy one is
        // checked by using it.
        opts.test_before_acquire_if_idle_for(Duration::from_secs(30));
        // READ COMMITTED plus explicit row locks is what every transaction here reasons in. Set
        // when the connection opens (whatever the database's own default), a transaction need
        // not send `SET TRANSACTION` after its `BEGIN`: a round trip fewer per step batch.
        opts.map_sqlx_postgres_opts(|o| {
            o.options([("default_transaction_isolation", PG_TRANSACTION_ISOLATION)])
        });
    }
    let db = Database::connect(opts)
        .await
        .with_context(|| format!("cannot open the database at `{}`", redact(&settings.url)))?;
    Ok(db)
}

/// Copy the embedded database to `target`, consistently, while the service keeps running
/// (`VACUUM INTO`: one read transaction, so the copy is the database as of one commit, jobs
/// included, compacted). `target` must not exist; it is written with mode 0600. PostgreSQL is
/// refused with a pointer to `pg_dump`.
pub async fn backup(db: &DatabaseConnection, target: &std::path::Path) -> anyhow::Result<u64> {
    if db.get_database_backend() != sea_orm::DbBackend::Sqlite {
        anyhow::bail!(
            "`governance backup` copies the embedded SQLite database; on PostgreSQL use `pg_dump` (see the README, \"Backups\")"
        );
    }
    if target.exists() {
        anyhow::bail!(
            "{} already exists: name a new file (a backup never overwrites)",
            target.display()
        );
    }
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        anyhow::bail!("{} is not a directory", parent.display());
    }
    let path = target
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", target.display()))?;
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Sqlite,
        "VACUUM INTO ?",
        [path.into()],
    ))
    .await
    .with_context(|| format!("cannot write the backup to {}", target.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(std::fs::metadata(target)?.len())
}

/// Bytes a WAL file is truncated back to after it was reset (it is reused from the start).
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// How often the WAL is checkpointed (copied into the database file) off the write path.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// WAL frames (pages of about 4 KiB) past which the checkpointer resets the WAL: about 64 MiB.
const RESET_ABOVE_FRAMES: i64 = 16_384;

/// How long a reset keeps trying while readers still use old frames before it gives up.
const RESET_PATIENCE: Duration = Duration::from_millis(250);

/// The pause between two attempts of a reset.
const RESET_RETRY: Duration = Duration::from_millis(1);

/// Checkpoint the WAL of an SQLite database every [`CHECKPOINT_INTERVAL`] until `alive` is
/// gone. SQLite's own automatic checkpoint runs inside the COMMIT that crosses its threshold
/// (1,000 pages), so under a steady write load one commit every second or two also copied
/// ~4 MB into the database file and synced it, and every step waiting for that commit waited
/// for the copy too. Connections therefore open with `wal_autocheckpoint=0`, and this task does
/// the work on its own: PASSIVE checkpoints, which never take the write lock (writers go on
/// committing to the WAL meanwhile). Durability is unchanged: a commit is on disk once the WAL
/// is synced. Every process that writes for long (the server, `governance worker`,
/// `governance seed`) runs one through its `Store`.
///
/// A PASSIVE checkpoint copies frames but never moves writers back to the start of the WAL:
/// that happens only when a writer finds every frame copied and no reader still using the WAL,
/// which a busy server (readers at every moment) may never offer. The WAL then grows without
/// end: a 10-minute soak at 1,400 steps/s left a 9.8 GB WAL beside a 0.4 GB database and filled
/// the disk. So when the WAL holds more than [`RESET_ABOVE_FRAMES`], the checkpointer takes this
/// process's writer lock (the step lane waits for at most this one checkpoint) and runs a
/// RESTART checkpoint, which waits for the readers of old frames and copies the rest, so that
/// the next commit writes the WAL from its start again, over the same file (which
/// `journal_size_limit` keeps near [`WAL_SIZE_LIMIT`]).
///
/// Not TRUNCATE, as at first: emptying the file made every reset a 33–44 ms pause of every
/// writer (truncating 64 MiB and syncing that, measured at each reset, one every ~2.5 s at
/// 1,400 steps/s: the whole of the step path's p99), and made the next commits grow the file
/// again block by block. A RESTART took 1–4.5 ms at the same load.
pub(crate) fn checkpoint_in_background(
    db: DatabaseConnection,
    writer: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    alive: std::sync::Weak<std::sync::OnceLock<CheckpointObserver>>,
) {
    if db.get_database_backend() != sea_orm::DbBackend::Sqlite
        || tokio::runtime::Handle::try_current().is_err()
    {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(observer) = alive.upgrade() else {
                return;
            };
            let tell = |event| {
                if let Some(observer) = observer.get() {
                    observer(event);
                }
            };
            if let Err(err) =
                checkpoint_once(&db, writer.as_deref(), RESET_ABOVE_FRAMES, &tell).await
            {
                // Busy (another checkpoint running, a reader pinning old frames) only means
                // "next time".
                tracing::debug!(error = %err, "WAL checkpoint skipped");
            }
        }
    });
}

/// What the WAL checkpointer did, and how long it took (for metrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckpointEvent {
    /// A PASSIVE checkpoint: it copies frames into the database file and syncs it, holding no
    /// lock, though its sync shares the disk with the commits'.
    Copied(Duration),
    /// A reset of the WAL held this process's writer lock this long, so a step batch could wait
    /// as long; `done` is false when it gave up after [`RESET_PATIENCE`] (readers kept old
    /// frames in use) and the next one tries again.
    Reset { held: Duration, done: bool },
}

/// Told of every checkpoint.
pub type CheckpointObserver = std::sync::Arc<dyn Fn(CheckpointEvent) + Send + Sync>;

/// One PASSIVE checkpoint, then a RESTART one (under `writer`) when the WAL held more than
/// `reset_above` frames, each told to `tell`. Returns the WAL's frames before, and whether it
/// was reset.
pub(crate) async fn checkpoint_once(
    db: &DatabaseConnection,
    writer: Option<&tokio::sync::Mutex<()>>,
    reset_above: i64,
    tell: &(dyn Fn(CheckpointEvent) + Sync),
) -> anyhow::Result<(i64, bool)> {
    let copying = std::time::Instant::now();
    let frames = wal_frames(db, "PASSIVE").await?;
    tell(CheckpointEvent::Copied(copying.elapsed()));
    if frames <= reset_above {
        return Ok((frames, false));
    }
    let _turn = match writer {
        Some(lock) => Some(lock.lock().await),
        None => None,
    };
    let held = std::time::Instant::now();
    // On a connection of its own, without SQLite's busy handler: a RESTART checkpoint holds
    // the write lock while it waits for the readers of old frames, and the busy handler waits
    // by sleeping 1, 2, 5, 10, 15, 20… ms between looks, while the readers here finish within
    // about a millisecond. So each attempt gives up at once when it would wait, and is retried
    // a millisecond later; a long reader makes the reset give up after `RESET_PATIENCE` (the
    // next one tries again) rather than hold up every writer of this process.
    use sea_orm::sqlx::{self, Row};
    let mut conn = db.get_sqlite_connection_pool().acquire().await?;
    let usual: i64 = sqlx::query("PRAGMA busy_timeout")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    sqlx::query("PRAGMA busy_timeout = 0")
        .execute(&mut *conn)
        .await?;
    let patience = tokio::time::Instant::now() + RESET_PATIENCE;
    let reset = loop {
        match sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| row.try_get::<i64, _>(0))
        {
            Ok(busy) if busy != 0 && tokio::time::Instant::now() < patience => {
                tokio::time::sleep(RESET_RETRY).await;
            }
            other => break other,
        }
    };
    crate::sqlite_request::restore_busy_timeout(&mut conn, usual).await;
    let done = reset? == 0;
    tell(CheckpointEvent::Reset {
        held: held.elapsed(),
        done,
    });
    Ok((frames, done))
}

/// Run `PRAGMA wal_checkpoint(mode)`; the WAL's size in frames, as it reports it. Straight on a
/// pooled connection: housekeeping, not one of the statements the service's metrics count.
async fn wal_frames(db: &DatabaseConnection, mode: &str) -> anyhow::Result<i64> {
    use sea_orm::sqlx::{self, Row};
    let mut conn = db.get_sqlite_connection_pool().acquire().await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA wal_checkpoint({mode})"
    )))
    .fetch_one(&mut *conn)
    .await?;
    // (busy, frames in the WAL, frames checkpointed); -1 when the database is not in WAL mode.
    Ok(row.try_get(1)?)
}

/// Is the database answering? Used by `/readyz`.
pub async fn ping(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_unprepared("SELECT 1")
        .await
        .context("database ping failed")?;
    Ok(())
}

/// A URL without its password, for logs and error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A migrated SQLite database in `dir`, for tests that need the real schema.
#[cfg(test)]
pub(crate) async fn migrated_sqlite(dir: &Path) -> DatabaseConnection {
    use migration::{Migrator, MigratorTrait};
    let db = connect(&DbSettings::new(DbSettings::sqlite_file_url(dir)))
        .await
        .expect("database");
    Migrator::up(&db, None).await.expect("migrations");
    db
}

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, QueryResult, Statement};

    use super::*;

    /// Every pooled SQLite connection keeps the page cache it was given, not SQLite's default.
    #[tokio::test]
    async fn every_sqlite_connection_keeps_the_page_cache_it_was_given() {
        let dir = tempfile::tempdir().expect("dir");
        let mut settings = DbSettings::new(DbSettings::sqlite_file_url(dir.path()));
        settings.max_connections = 3;
        settings.sqlite_cache_kib = 512;
        let db = connect(&settings).await.expect("database");
        let pool = db.get_sqlite_connection_pool();
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = pool.acquire().await.expect("connection");
            let size: i64 = sea_orm::sqlx::query_scalar("PRAGMA cache_size")
                .fetch_one(&mut *conn)
                .await
                .expect("cache size");
            assert_eq!(size, -512, "a negative size is in KiB");
            held.push(conn);
        }
    }

    /// Below the threshold the WAL is only checkpointed; past it, it is reset (RESTART): the
    /// next commit writes it from its start again, without losing a row.
    #[tokio::test]
    async fn a_wal_past_its_threshold_is_reset() {
        let dir = tempfile::tempdir().expect("dir");
        let db = migrated_sqlite(dir.path()).await;
        let wal = dir.path().join("governance.db-wal");
        db.execute_unprepared("CREATE TABLE filler (x BLOB)")
            .await
            .expect("table");
        for _ in 0..40 {
            db.execute_unprepared("INSERT INTO filler VALUES (randomblob(8000))")
                .await
                .expect("insert");
        }
        let events = std::sync::Mutex::new(Vec::new());
        let tell = |event| events.lock().expect("events").push(event);
        let taken = || std::mem::take(&mut *events.lock().expect("events"));
        let (frames, reset) = checkpoint_once(&db, None, 1_000_000, &tell)
            .await
            .expect("passive");
        assert!(
            matches!(taken()[..], [CheckpointEvent::Copied(_)]),
            "a copy, told"
        );
        assert!(
            frames > 40 && !reset,
            "below the threshold: {frames} frames, kept"
        );
        assert!(std::fs::metadata(&wal).expect("wal").len() > 0);

        let lock = tokio::sync::Mutex::new(());
        let (frames, reset) = checkpoint_once(&db, Some(&lock), 10, &tell)
            .await
            .expect("restart");
        assert!(frames > 10 && reset, "{frames} frames, reset {reset}");
        assert!(
            matches!(
                taken()[..],
                [
                    CheckpointEvent::Copied(_),
                    CheckpointEvent::Reset { done: true, .. }
                ]
            ),
            "a copy, then a reset that held the writer lock, told"
        );
        let size = std::fs::metadata(&wal).expect("wal").len();
        db.execute_unprepared("INSERT INTO filler VALUES (randomblob(100))")
            .await
            .expect("insert after the reset");
        let (frames, reset) = checkpoint_once(&db, None, 1_000_000, &|_| {})
            .await
            .expect("passive");
        assert!(
            frames <= 3 && !reset,
            "the next commit wrote the WAL from its start: {frames} frames"
        );
        assert_eq!(
            std::fs::metadata(&wal).expect("wal").len(),
            size,
            "over the same file, not growing it"
        );
        assert_eq!(
            db.query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "SELECT count(*) FROM filler"
            ))
            .await
            .expect("count")
            .expect("row")
            .try_get_by_index::<i64>(0)
            .expect("n"),
            41,
            "nothing was lost"
        );
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://gov:secret@localhost:5432/db"),
            "postgres://gov:***@localhost:5432/db"
        );
        assert_eq!(
            redact("sqlite://data/governance.db"),
            "sqlite://data/governance.db"
        );
        assert_eq!(
            redact("postgres://gov@localhost/db"),
            "postgres://gov@localhost/db"
        );
    }

    /// On PostgreSQL (`GOV_TEST_POSTGRES_URL`, set by `scripts/test postgres`), the service's
    /// connections default to READ COMMITTED, set by the connection itself (so whatever the
    /// database's own default), and a write transaction, begun without `SET TRANSACTION`, is so.
    #[tokio::test]
    async fn postgres_connections_set_read_committed_themselves() {
        let Ok(url) = std::env::var("GOV_TEST_POSTGRES_URL") else {
            return;
        };
        let db = connect(&DbSettings::new(url)).await.expect("postgres");
        let row = one_row(
            &db,
            "SELECT setting, source FROM pg_settings WHERE name = 'default_transaction_isolation'",
        )
        .await;
        let setting: String = row.try_get("", "setting").expect("setting");
        let source: String = row.try_get("", "source").expect("source");
        assert_eq!(
            (setting.as_str(), source.as_str()),
            (PG_TRANSACTION_ISOLATION, "client")
        );
        let store = crate::store::Store::new(db);
        let txn = store.begin_first().await.expect("begin");
        let row = one_row(&*txn, "SHOW transaction_isolation").await;
        let isolation: String = row.try_get("", "transaction_isolation").expect("isolation");
        assert_eq!(isolation, PG_TRANSACTION_ISOLATION);
    }

    /// The one row `sql` returns on PostgreSQL.
    async fn one_row<C: ConnectionTrait>(conn: &C, sql: &str) -> QueryResult {
        conn.query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .expect("query")
            .expect("a row")
    }
}
