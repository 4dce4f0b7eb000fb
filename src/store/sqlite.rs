//! Embedded SQLite store (WAL). A batch is durable once appended to the
//! journal (`journal.rs`); one writer connection projects the journal into
//! the tables, and a small pool serves reads concurrently, which WAL allows.

use super::batch::{Grouped, group};
use super::journal::{Journal, run_script};
use super::rows::{change_state_str, count_to_db, extra_json, fp_to_db, to_json};
use super::sql::{self, Arg, Dialect, SqlBackend, Stmt};
use super::{BoxFuture, IncidentLog, Restore, Snapshot, StoreError, StoreOp};
use crate::domain::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::query::Query;
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_init.sql")),
    (2, include_str!("migrations/sqlite/0002_cmdb.sql")),
    (3, include_str!("migrations/sqlite/0003_shard.sql")),
    (4, include_str!("migrations/sqlite/0004_outbox.sql")),
    (5, include_str!("migrations/sqlite/0005_outbox_shard.sql")),
    (
        6,
        include_str!("migrations/sqlite/0006_hot_path_indexes.sql"),
    ),
    (7, include_str!("migrations/sqlite/0007_journal.sql")),
];

/// WAL pages (4 KiB) after which a commit checkpoints: the WAL file grows to
/// ~160 MiB and is then reused. A checkpoint copies each page once however
/// often it changed in between, so at SQLite's default of 1,000 the hot
/// pages (incidents, index tails) were copied over and over and checkpoints
/// took ~9 % of the writer thread; 40,000 doubled durable ingest on a
/// realistic stream. Crash recovery reads the WAL once at open (< 1 s).
const WAL_CHECKPOINT_PAGES: &str = "40000";

/// `synchronous` pragma. `Normal` in WAL mode survives a process crash
/// (kill -9) but may lose the last commits on power loss; `Full` survives both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Normal,
    #[default]
    Full,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    pub read_connections: u32,
    /// Acknowledge a batch once appended to the journal, projecting it into
    /// the tables behind (see `journal.rs`); off: once committed to them.
    pub journal: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            read_connections: 4,
            journal: true,
        }
    }
}

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The file opened (none in memory), to notice it deleted or replaced.
    file: Option<Arc<FileGuard>>,
    /// The durability point when on (file stores by default).
    journal: Option<Journal>,
}

/// The identity of the database file at open: device and inode.
pub(super) struct FileGuard {
    path: std::path::PathBuf,
    id: (u64, u64),
    /// Why the file is no longer ours; set once, never cleared.
    lost: std::sync::OnceLock<String>,
}

/// SQLite's 16-byte file header.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl FileGuard {
    /// `Err(reason)` once the file at the path is not the one opened.
    pub(super) fn check(&self, header: bool) -> Result<(), String> {
        if let Some(why) = self.lost.get() {
            return Err(why.clone());
        }
        let why = match file_id(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(format!("{} was deleted", self.path.display()))
            }
            Err(e) => Some(format!("{} cannot be read: {e}", self.path.display())),
            Ok(id) if id != self.id => Some(format!(
                "{} was replaced by another file",
                self.path.display()
            )),
            Ok(_) if header => {
                use std::io::Read;
                let mut h = [0u8; 16];
                let ok = std::fs::File::open(&self.path)
                    .and_then(|mut f| f.read_exact(&mut h))
                    .is_ok_and(|()| &h == SQLITE_HEADER);
                (!ok).then(|| format!("{} was overwritten (no SQLite header)", self.path.display()))
            }
            Ok(_) => None,
        };
        match why {
            Some(w) => Err(self.lost.get_or_init(|| w).clone()),
            None => Ok(()),
        }
    }
}

/// Page cache per connection, in KiB (SQLite's negative `cache_size`).
/// 8 MB, not 32: the stream benchmark was no slower with it, and 24 MB less
/// is ~240 B per active alert at 100k (BENCHMARKS.md entry 18); the OS page
/// cache holds the rest of the database anyway.
const CACHE_KIB: &str = "-8000";

impl SqliteStore {
    /// Open (creating if needed) `dir/incidentd.db` and migrate it.
    pub async fn open_dir(dir: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("incidentd.db");
        let sync = match opts.synchronous {
            Synchronous::Normal => SqliteSynchronous::Normal,
            Synchronous::Full => SqliteSynchronous::Full,
        };
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", CACHE_KIB);
        // The writer thread bounds durable ingest (BENCHMARKS.md entry 17):
        // statement journals (every multi-row upsert needs one) in memory
        // instead of a temporary file each, and checkpoints every
        // `WAL_CHECKPOINT_PAGES` instead of SQLite's 1,000.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                base.clone()
                    .pragma("temp_store", "memory")
                    .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES),
            )
            .await?;
        // Journal records hold SQL for the schema they were written under:
        // recover them before any later migration changes it.
        migrate(
            &writer,
            if opts.journal {
                JOURNAL_SCHEMA
            } else {
                i64::MAX
            },
        )
        .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(opts.read_connections.max(1))
            .connect_with(base.read_only(true))
            .await?;
        let file = Some(Arc::new(FileGuard {
            id: file_id(&path).map_err(|source| StoreError::DataDir {
                path: path.display().to_string(),
                source,
            })?,
            path,
            lost: std::sync::OnceLock::new(),
        }));
        let journal = if opts.journal {
            Some(
                Journal::open(
                    dir.join("journal"),
                    opts.synchronous == Synchronous::Full,
                    writer.clone(),
                    file.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        migrate(&writer, i64::MAX).await?;
        Ok(SqliteStore {
            writer,
            reader,
            file,
            journal,
        })
    }

    /// A private in-memory database (for `replay` and tests): one connection
    /// serves reads and writes, since each in-memory connection is its own DB.
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await?;
        migrate(&pool, i64::MAX).await?;
        Ok(SqliteStore {
            writer: pool.clone(),
            reader: pool,
            file: None,
            journal: None,
        })
    }

    /// Close the pools once every journal record is in the tables.
    pub async fn close(&self) {
        if let Some(j) = &self.journal
            && let Err(e) = j.caught_up().await
        {
            tracing::warn!(error = %e, "closing with journal records not yet in the tables; the next start applies them");
        }
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// The migration that creates `journal_state`.
const JOURNAL_SCHEMA: i64 = 7;

/// Apply the migrations not yet applied, up to version `upto`.
async fn migrate(pool: &SqlitePool, upto: i64) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    let done: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await?;
    for (version, sql) in MIGRATIONS {
        if done.contains(version) || *version > upto {
            continue;
        }
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migration {
                version: *version,
                source,
            })?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
            .bind(version)
            .bind(Timestamp::now().millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Rows per INSERT/UPDATE statement: large enough to amortize statement
/// overhead, small enough to keep each statement's text modest.
const ROWS_PER_STATEMENT: usize = 256;

/// SQL literal writer. A batch is applied as ONE script (one round trip to
/// sqlx's SQLite thread instead of one per statement, which dominated commit
/// latency), so values are written as literals. Strings use SQLite's only
/// escape, doubling `'`; a string containing NUL (which would end the
/// statement text) is written as a hex blob cast to TEXT. Integers are
/// formatted, never interpolated from text.
struct Sql(String);

impl Sql {
    fn str(&mut self, v: &str) -> &mut Self {
        if v.contains('\0') {
            self.0.push_str("CAST(X'");
            for b in v.as_bytes() {
                self.0.push_str(&format!("{b:02x}"));
            }
            self.0.push_str("' AS TEXT)");
        } else {
            // Whole runs between quotes, not a push per character: the
            // batch's text is built while its senders wait.
            self.0.push('\'');
            let mut parts = v.split('\'');
            if let Some(first) = parts.next() {
                self.0.push_str(first);
            }
            for part in parts {
                self.0.push_str("''");
                self.0.push_str(part);
            }
            self.0.push('\'');
        }
        self
    }
    fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.str(v),
            None => self.raw("NULL"),
        }
    }
    fn int(&mut self, v: i64) -> &mut Self {
        use std::fmt::Write;
        // Into the text directly (no String per number); writing to a
        // String cannot fail.
        let _ = write!(self.0, "{v}");
        self
    }
    fn opt_int(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.int(v),
            None => self.raw("NULL"),
        }
    }
    fn bool(&mut self, v: bool) -> &mut Self {
        self.raw(if v { "1" } else { "0" })
    }
    fn raw(&mut self, v: &str) -> &mut Self {
        self.0.push_str(v);
        self
    }
    /// `, ` between values of a row / rows of a statement.
    fn sep(&mut self, first: bool) -> &mut Self {
        if !first {
            self.0.push_str(", ");
        }
        self
    }
}

/// A batch as one transaction.
fn script(g: &Grouped<'_>) -> String {
    let mut q = Sql(String::with_capacity(64 * 1024));
    q.raw("BEGIN IMMEDIATE;\n");
    body(g, &mut q);
    q.raw("COMMIT;");
    q.0
}

/// A batch's statements, without a transaction (the journal's record: the
/// projector runs many in one).
fn body(g: &Grouped<'_>, q: &mut Sql) {
    for rows in g.incidents.chunks(ROWS_PER_STATEMENT) {
        q.raw(
            "INSERT INTO incidents (id, key, state, priority, impact, urgency, title, root_ci, assignment_group, \
             alert_count, opened_at, acknowledged_at, acknowledged_by, resolved_at, updated_at, reopen_count, flapping, extra, shard) VALUES ",
        );
        for (i, inc) in rows.iter().enumerate() {
            let extra = extra_json(inc);
            q.sep(i == 0).raw("(");
            q.int(inc.id.0)
                .raw(", ")
                .str(&inc.key)
                .raw(", ")
                .str(inc.state.as_str())
                .raw(", ");
            q.int(i64::from(inc.priority.get()))
                .raw(", ")
                .int(i64::from(inc.impact.get()))
                .raw(", ");
            q.int(i64::from(inc.urgency.get()))
                .raw(", ")
                .str(&inc.title)
                .raw(", ");
            q.opt_str(inc.root_ci.as_deref())
                .raw(", ")
                .opt_str(inc.assignment_group.as_deref())
                .raw(", ");
            q.int(count_to_db(inc.alert_count))
                .raw(", ")
                .int(inc.opened_at.millis())
                .raw(", ");
            q.opt_int(inc.acknowledged_at.map(Timestamp::millis))
                .raw(", ");
            q.opt_str(inc.acknowledged_by.as_deref()).raw(", ");
            q.opt_int(inc.resolved_at.map(Timestamp::millis))
                .raw(", ")
                .int(inc.updated_at.millis())
                .raw(", ");
            q.int(i64::from(inc.reopen_count))
                .raw(", ")
                .bool(inc.flapping)
                .raw(", ")
                .str(&extra)
                .raw(", ")
                .int(i64::from(inc.shard))
                .raw(")");
        }
        q.raw(
            " ON CONFLICT(id) DO UPDATE SET key=excluded.key, state=excluded.state, priority=excluded.priority, \
             impact=excluded.impact, urgency=excluded.urgency, title=excluded.title, root_ci=excluded.root_ci, \
             assignment_group=excluded.assignment_group, alert_count=excluded.alert_count, \
             opened_at=excluded.opened_at, acknowledged_at=excluded.acknowledged_at, \
             acknowledged_by=excluded.acknowledged_by, resolved_at=excluded.resolved_at, \
             updated_at=excluded.updated_at, reopen_count=excluded.reopen_count, \
             flapping=excluded.flapping, extra=excluded.extra, shard=excluded.shard;\n",
        );
    }
    for rows in g.inserts.chunks(ROWS_PER_STATEMENT) {
        q.raw(
            "INSERT INTO alerts (fingerprint, status, labels, annotations, starts_at, ends_at, source, generator_url, \
             incident_id, corr_key, suppressed_rule, suppressed_reason, flapping, first_seen, last_seen, deliveries, change_id, shard) VALUES ",
        );
        for (i, a) in rows.iter().enumerate() {
            let labels = to_json(&a.labels);
            let annotations = to_json(&a.annotations);
            q.sep(i == 0).raw("(");
            q.int(fp_to_db(a.fingerprint))
                .raw(", ")
                .str(a.status.as_str())
                .raw(", ");
            q.str(&labels).raw(", ").str(&annotations).raw(", ");
            q.int(a.starts_at.millis())
                .raw(", ")
                .opt_int(a.ends_at.map(Timestamp::millis))
                .raw(", ");
            q.str(a.source.as_str())
                .raw(", ")
                .str(&a.generator_url)
                .raw(", ");
            q.opt_int(a.incident.map(|i| i.0))
                .raw(", ")
                .str(&a.key)
                .raw(", ");
            q.opt_str(a.suppressed.as_ref().map(|s| s.0.as_str()))
                .raw(", ");
            q.opt_str(a.suppressed.as_ref().map(|s| s.1.as_str()))
                .raw(", ");
            q.bool(a.flapping)
                .raw(", ")
                .int(a.first_seen.millis())
                .raw(", ");
            q.int(a.last_seen.millis())
                .raw(", ")
                .int(count_to_db(a.deliveries))
                .raw(", ");
            q.opt_str(a.change.as_deref())
                .raw(", ")
                .int(i64::from(a.shard))
                .raw(")");
        }
        q.raw(
            " ON CONFLICT(fingerprint) DO UPDATE SET status=excluded.status, labels=excluded.labels, \
             annotations=excluded.annotations, starts_at=excluded.starts_at, ends_at=excluded.ends_at, \
             source=excluded.source, generator_url=excluded.generator_url, incident_id=excluded.incident_id, \
             corr_key=excluded.corr_key, suppressed_rule=excluded.suppressed_rule, \
             suppressed_reason=excluded.suppressed_reason, flapping=excluded.flapping, change_id=excluded.change_id, \
             shard=excluded.shard, \
             last_seen=MAX(alerts.last_seen, excluded.last_seen), deliveries=MAX(alerts.deliveries, excluded.deliveries);\n",
        );
    }
    for rows in g.updates.chunks(ROWS_PER_STATEMENT) {
        q.raw(
            "WITH v(fp, status, starts_at, ends_at, incident_id, corr_key, keep, s_rule, s_reason, flapping, last_seen, deliveries, keep_change, change_id) AS (VALUES ",
        );
        for (i, u) in rows.iter().enumerate() {
            let set = u.suppressed.as_ref().and_then(Option::as_ref);
            q.sep(i == 0).raw("(");
            q.int(fp_to_db(u.fingerprint))
                .raw(", ")
                .str(u.status.as_str())
                .raw(", ");
            q.int(u.starts_at.millis())
                .raw(", ")
                .opt_int(u.ends_at.map(Timestamp::millis))
                .raw(", ");
            q.opt_int(u.incident.map(|i| i.0))
                .raw(", ")
                .str(&u.key)
                .raw(", ");
            q.bool(u.suppressed.is_none()).raw(", ");
            q.opt_str(set.map(|s| s.0.as_str()))
                .raw(", ")
                .opt_str(set.map(|s| s.1.as_str()))
                .raw(", ");
            q.bool(u.flapping)
                .raw(", ")
                .int(u.last_seen.millis())
                .raw(", ");
            q.int(count_to_db(u.deliveries)).raw(", ");
            q.bool(u.change.is_none()).raw(", ");
            q.opt_str(u.change.as_ref().and_then(|c| c.as_deref()))
                .raw(")");
        }
        q.raw(
            ") UPDATE alerts SET status = v.status, starts_at = v.starts_at, ends_at = v.ends_at, \
             incident_id = v.incident_id, corr_key = v.corr_key, \
             suppressed_rule = CASE WHEN v.keep THEN alerts.suppressed_rule ELSE v.s_rule END, \
             suppressed_reason = CASE WHEN v.keep THEN alerts.suppressed_reason ELSE v.s_reason END, \
             flapping = v.flapping, last_seen = MAX(alerts.last_seen, v.last_seen), \
             deliveries = MAX(alerts.deliveries, v.deliveries), \
             change_id = CASE WHEN v.keep_change THEN alerts.change_id ELSE v.change_id END \
             FROM v WHERE alerts.fingerprint = v.fp;\n",
        );
    }
    for rows in g.links.chunks(ROWS_PER_STATEMENT) {
        q.raw("INSERT INTO incident_alerts (incident_id, fingerprint, joined_at) VALUES ");
        for (i, (inc, fp, at)) in rows.iter().enumerate() {
            q.sep(i == 0)
                .raw("(")
                .int(inc.0)
                .raw(", ")
                .int(fp_to_db(*fp))
                .raw(", ")
                .int(at.millis())
                .raw(")");
        }
        q.raw(" ON CONFLICT DO NOTHING;\n");
    }
    // Merges: after links (the moved rows exist), before timeline.
    for (from, to) in &g.moves {
        q.raw("UPDATE OR IGNORE incident_alerts SET incident_id = ")
            .int(to.0);
        q.raw(" WHERE incident_id = ").int(from.0).raw(";\n");
        q.raw("DELETE FROM incident_alerts WHERE incident_id = ")
            .int(from.0)
            .raw(";\n");
        q.raw("UPDATE alerts SET incident_id = ")
            .int(to.0)
            .raw(" WHERE incident_id = ")
            .int(from.0)
            .raw(";\n");
    }
    for p in &g.problems {
        let data = to_json(p);
        q.raw("INSERT INTO problems (id, signature, state, opened_at, data) VALUES (");
        q.str(&p.id)
            .raw(", ")
            .str(&p.signature)
            .raw(", ")
            .str(&p.state)
            .raw(", ");
        q.int(p.opened_at.millis()).raw(", ").str(&data);
        q.raw(") ON CONFLICT(id) DO UPDATE SET state = excluded.state, data = excluded.data;\n");
    }
    for (incidents, problem) in &g.set_problem {
        for chunk in incidents.chunks(ROWS_PER_STATEMENT) {
            q.raw("UPDATE incidents SET extra = json_set(extra, '$.links.problem', ")
                .str(problem);
            q.raw(") WHERE id IN (");
            for (i, id) in chunk.iter().enumerate() {
                q.sep(i == 0).int(id.0);
            }
            q.raw(");\n");
        }
    }
    // Many rows per statement: a bulk calendar import of 100k records
    // spent most of its time preparing one statement per record.
    for rows in g.changes.chunks(ROWS_PER_STATEMENT) {
        q.raw("INSERT INTO changes (id, ci, state, start_at, end_at, summary) VALUES ");
        for (i, c) in rows.iter().enumerate() {
            let state = change_state_str(c.state);
            q.sep(i == 0).raw("(");
            q.str(&c.id)
                .raw(", ")
                .str(&c.ci)
                .raw(", ")
                .str(&state)
                .raw(", ");
            q.int(c.start.millis())
                .raw(", ")
                .int(c.end.millis())
                .raw(", ")
                .str(&c.summary)
                .raw(")");
        }
        q.raw(" ON CONFLICT(id) DO UPDATE SET ci = excluded.ci, state = excluded.state, \
               start_at = excluded.start_at, end_at = excluded.end_at, summary = excluded.summary;\n");
    }
    for rows in g.timeline.chunks(ROWS_PER_STATEMENT) {
        q.raw("INSERT INTO timeline (incident_id, at, kind, message, actor) VALUES ");
        for (i, (inc, e)) in rows.iter().enumerate() {
            q.sep(i == 0)
                .raw("(")
                .int(inc.0)
                .raw(", ")
                .int(e.at.millis())
                .raw(", ");
            q.str(e.kind.as_str())
                .raw(", ")
                .str(&e.message)
                .raw(", ")
                .opt_str(e.actor.as_deref())
                .raw(")");
        }
        q.raw(";\n");
    }
    for rows in g.outbox.chunks(ROWS_PER_STATEMENT) {
        q.raw("INSERT INTO outbox (destination, incident_id, shard, kind, at, incident) VALUES ");
        for (i, m) in rows.iter().enumerate() {
            q.sep(i == 0)
                .raw("(")
                .str(&m.destination)
                .raw(", ")
                .int(m.incident.id.0)
                .raw(", ")
                .int(i64::from(m.incident.shard))
                .raw(", ");
            q.str(m.kind.as_str())
                .raw(", ")
                .int(m.at.millis())
                .raw(", ")
                .str(&to_json(&m.incident))
                .raw(")");
        }
        q.raw(";\n");
    }
    for rows in g.touches.chunks(ROWS_PER_STATEMENT) {
        q.raw("WITH v(fp, last_seen, deliveries) AS (VALUES ");
        for (i, t) in rows.iter().enumerate() {
            q.sep(i == 0)
                .raw("(")
                .int(fp_to_db(t.fingerprint))
                .raw(", ")
                .int(t.last_seen.millis())
                .raw(", ");
            q.int(count_to_db(t.deliveries)).raw(")");
        }
        q.raw(
            ") UPDATE alerts SET last_seen = MAX(alerts.last_seen, v.last_seen), \
             deliveries = MAX(alerts.deliveries, v.deliveries) FROM v WHERE alerts.fingerprint = v.fp;\n",
        );
    }
}

impl SqliteStore {
    /// Everything appended so far is in the tables (at once without a journal).
    async fn caught_up(&self) -> Result<(), StoreError> {
        match &self.journal {
            Some(j) => j.caught_up().await,
            None => Ok(()),
        }
    }
}

impl IncidentLog for SqliteStore {
    fn apply<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if ops.is_empty() {
                return Ok(());
            }
            // Never a write into a file that is no longer at its path (a
            // `stat` per commit; the header is read by `integrity`).
            if let Some(f) = &self.file {
                f.check(false).map_err(StoreError::Lost)?;
            }
            if let Some(j) = &self.journal {
                let mut q = Sql(String::with_capacity(64 * 1024));
                body(&group(ops), &mut q);
                return j.append(q.0).await;
            }
            run_script(&self.writer, script(&group(ops))).await
        })
    }

    fn load_state(&self, what: Restore) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(sql::load_state(self, what))
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.integrity()?;
            if let Some(why) = self.journal.as_ref().and_then(Journal::failing) {
                return Err(StoreError::Journal(why));
            }
            sqlx::query("SELECT 1").execute(&self.reader).await?;
            Ok(())
        })
    }

    fn settle(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.caught_up())
    }

    fn journal_backlog(&self) -> Option<u64> {
        self.journal.as_ref().map(Journal::backlog_bytes)
    }

    fn integrity(&self) -> Result<(), StoreError> {
        match &self.file {
            Some(f) => f.check(true).map_err(StoreError::Lost),
            None => Ok(()),
        }
    }

    fn lost(&self) -> Option<String> {
        self.file.as_ref().and_then(|f| f.lost.get().cloned())
    }
}

impl SqlBackend for SqliteStore {
    type Row = SqliteRow;
    const DIALECT: Dialect = Dialect::Sqlite;

    fn fetch<'a>(&'a self, st: Stmt<'a>) -> BoxFuture<'a, Result<Vec<SqliteRow>, StoreError>> {
        Box::pin(async move {
            self.caught_up().await?;
            Ok(query(st)?.fetch_all(&self.reader).await?)
        })
    }

    fn fetch_consistent<'a>(
        &'a self,
        sts: Vec<Stmt<'a>>,
    ) -> BoxFuture<'a, Result<Vec<Vec<SqliteRow>>, StoreError>> {
        Box::pin(async move {
            // On the writer: every batch committed before is seen, and no
            // batch commits between the statements.
            self.caught_up().await?;
            let mut tx = self.writer.begin().await?;
            let mut out = Vec::with_capacity(sts.len());
            for st in sts {
                out.push(query(st)?.fetch_all(&mut *tx).await?);
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    fn execute<'a>(&'a self, sts: Vec<Stmt<'a>>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            // After the batches appended before: rows they create or change
            // are there to update, and this write lands after theirs.
            self.caught_up().await?;
            let mut tx = self.writer.begin().await?;
            let mut first = None;
            for st in sts {
                let n = query(st)?.execute(&mut *tx).await?.rows_affected();
                first.get_or_insert(n);
            }
            tx.commit().await?;
            Ok(first.unwrap_or(0))
        })
    }
}

/// A shared statement with its arguments bound.
fn query(st: Stmt<'_>) -> Result<Query<'static, Sqlite, SqliteArguments>, StoreError> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(st.sql));
    for a in &st.args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.as_ref()),
            Arg::OptText(v) => q.bind(v.as_deref()),
            Arg::Ints(_) => {
                return Err(StoreError::Config(
                    "an array argument in a SQLite statement".into(),
                ));
            }
        };
    }
    Ok(q)
}
