//! Scratch PostgreSQL databases for the suites that run against the server
//! named by `INCIDENTD_TEST_POSTGRES_URL`: each test gets a database of its
//! own, dropped when the guard is, so tests run in parallel and no run
//! leaves databases behind.

use sqlx::Connection;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub const PG_URL_VAR: &str = "INCIDENTD_TEST_POSTGRES_URL";

/// A fresh database, dropped (connections and all) when this is dropped,
/// also when the test panics.
pub struct ScratchDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl ScratchDb {
    /// Creates `<prefix>_<pid>_<seq>_<nanos>` on the server of `admin_url`.
    pub async fn create(admin_url: &str, prefix: &str) -> ScratchDb {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{prefix}_{}_{}_{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("{PG_URL_VAR}={admin_url}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(admin_url, &name);
        ScratchDb {
            admin_url: admin_url.to_string(),
            name,
            url,
        }
    }
}

/// `url` with its database path replaced by `name` (query kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[host_start..]
        .find('/')
        .map_or(base.len(), |i| host_start + i);
    format!("{}/{name}{query}", &base[..host_end])
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside the test's runtime, which cannot block on a
        // future: a thread with a runtime of its own does the work.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(sqlx::Error::Io)?;
            rt.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            let _ = writeln!(std::io::stderr(), "could not drop database {}", self.name);
        }
    }
}
