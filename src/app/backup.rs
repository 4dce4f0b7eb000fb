//! `incidentd backup`: a consistent copy of the SQLite record of the data
//! directory `serve` would use, into a new file or onto stdout, beside a
//! running daemon (see [`crate::store::backup`]).

use crate::config::{self, Overrides, StoreBackend};
use crate::store::backup::{copy_database, copy_staged};
use anyhow::{Result, bail};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Where the copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A new file (never one that exists).
    File(PathBuf),
    /// Standard output (`-`), staged in the data directory meanwhile.
    Stdout,
}

impl Target {
    /// `-` is stdout, anything else a file.
    pub fn parse(arg: PathBuf) -> Target {
        if arg.as_os_str() == "-" {
            Target::Stdout
        } else {
            Target::File(arg)
        }
    }
}

/// Copy the database the configuration (file, variables, `overrides`)
/// names to `target`; the one-line summary for stderr.
pub async fn backup(
    config_file: Option<PathBuf>,
    overrides: Overrides,
    target: Target,
) -> Result<String> {
    let from_cli = overrides.store.is_some();
    let cfg = config::load(config_file.as_deref(), &overrides)?;
    if let StoreBackend::Postgres { url, .. } = &cfg.store {
        let setting = match (&config_file, from_cli) {
            (_, true) => "--store or INCIDENTD_STORE".to_string(),
            (Some(f), false) => format!("store.url in {}", f.display()),
            (None, false) => "store.url".to_string(),
        };
        bail!(
            "the store is PostgreSQL ({setting} = {}): `incidentd backup` copies the SQLite database only; back up PostgreSQL with pg_dump",
            crate::net::redact_url(url)
        );
    }
    let db = cfg.data_dir.join("incidentd.db");
    match target {
        Target::File(out) => {
            let c = copy_database(&db, &out).await?;
            Ok(format!(
                "backed up {} ({} incidents, {} bytes) to {}",
                db.display(),
                c.incidents,
                c.bytes,
                out.display()
            ))
        }
        Target::Stdout => {
            // A terminal would show binary, and a tty (`kubectl exec -t`)
            // rewrites line endings: the bytes would not be a database.
            if std::io::stdout().is_terminal() {
                bail!(
                    "stdout is a terminal: redirect it into a file (`incidentd backup - > incidentd-backup.db`; with kubectl exec, without -t)"
                );
            }
            let stage = cfg
                .data_dir
                .join(format!("incidentd-backup-{}.tmp", std::process::id()));
            let (file, c) = copy_staged(&db, &stage).await?;
            let mut file = file.into_std().await;
            // A pipe's pace is the reader's: on the blocking pool.
            let sent = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                let n = std::io::copy(&mut file, &mut stdout)?;
                stdout.flush().map(|()| n)
            })
            .await?;
            match sent {
                Ok(n) if n == c.bytes => {}
                Ok(n) => bail!(
                    "writing the copy of {} to stdout: {n} of {} bytes sent",
                    db.display(),
                    c.bytes
                ),
                Err(e) => bail!("writing the copy of {} to stdout: {e}", db.display()),
            }
            Ok(format!(
                "backed up {} ({} incidents, {} bytes) to stdout",
                db.display(),
                c.incidents,
                c.bytes
            ))
        }
    }
}
