//! Explicit drains: a suite asserts that nothing more happened (no message
//! sent twice, no entry recorded again) only once the daemon says there is
//! nothing left that could make it happen, never after a sleep.

use std::path::Path;
use std::time::Duration;

/// How long a drain may take before the test fails: far above what any
/// suite needs, so that a slow machine only makes a test slower.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);

/// Every outbox message of `store` finished (delivered, skipped or given
/// up): no destination has anything left to send for what was committed.
pub async fn outbox_drained(store: &dyn incidentd::store::Outbox) {
    super::wait_ok("the outbox drained", DRAIN_WITHIN, async || {
        let depth = store.outbox_depth(None).await.map_err(|e| e.to_string())?;
        pending(&depth)
    })
    .await;
}

/// Outbox messages not finished, by destination.
const PENDING_SQL: &str =
    "SELECT destination, COUNT(*) FROM outbox WHERE done_at IS NULL GROUP BY destination";

/// The same for a daemon running as its own process on the SQLite store
/// under `data_dir`, read through a read-only connection of the test's.
pub async fn sqlite_outbox_drained(data_dir: &Path) {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("incidentd.db"))
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(opts)
        .await
        .expect("open the daemon's database read-only");
    super::wait_ok("the outbox drained", DRAIN_WITHIN, async || {
        let rows = sqlx::query_as(PENDING_SQL).fetch_all(&pool).await;
        pending_rows(rows.map_err(|e| e.to_string())?)
    })
    .await;
    pool.close().await;
}

/// The same for instances sharing the PostgreSQL database at `url`.
pub async fn pg_outbox_drained(url: &str) {
    let pool = sqlx::PgPool::connect(url).await.expect("test database");
    super::wait_ok("the outbox drained", DRAIN_WITHIN, async || {
        let rows = sqlx::query_as(PENDING_SQL).fetch_all(&pool).await;
        pending_rows(rows.map_err(|e| e.to_string())?)
    })
    .await;
    pool.close().await;
}

fn pending_rows(rows: Vec<(String, i64)>) -> Result<(), String> {
    let depth: Vec<(String, u64)> = rows
        .into_iter()
        .map(|(d, n)| (d, u64::try_from(n).unwrap_or(0)))
        .collect();
    pending(&depth)
}

fn pending(depth: &[(String, u64)]) -> Result<(), String> {
    if depth.iter().all(|(_, n)| *n == 0) {
        Ok(())
    } else {
        Err(format!("still pending: {depth:?}"))
    }
}
