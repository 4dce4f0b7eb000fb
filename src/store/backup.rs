//! An online copy of the SQLite record (`incidentd backup`): `VACUUM INTO`
//! on a read-only connection of its own. It reads in one transaction, so
//! the copy is consistent as of its start, whatever a running daemon
//! writes meanwhile (WAL lets readers and the writer go on together); it
//! writes every page once, compacted, into a new file.
//!
//! The journal (`data_dir/journal/`) is neither read nor locked: a running
//! daemon holds its lock, and a copy of the tables is what a restore starts
//! from (the records a running daemon has appended and not yet projected,
//! milliseconds' worth, are not in it).

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the copy waits for a lock it cannot read through (a daemon
/// recovering its WAL at start); normal writes never block it.
const BUSY_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no SQLite database at {0}: nothing to back up (is the data directory right?)")]
    NoDatabase(PathBuf),
    #[error("{0} exists already: a backup never overwrites a file; choose another name")]
    Exists(PathBuf),
    #[error("{0}: no such directory to write the backup into")]
    NoDirectory(PathBuf),
    #[error("{0}: SQLite takes only UTF-8 file names")]
    NotUtf8(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copying {db} into {out}: {source}")]
    Copy {
        db: PathBuf,
        out: PathBuf,
        #[source]
        source: sqlx::Error,
    },
}

/// What a copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Incident rows, open and closed.
    pub incidents: u64,
    /// The copy's size.
    pub bytes: u64,
}

/// Copy the database `db` into the new file `out`, consistently, while
/// another process may be writing it. `out` must not exist (an existing
/// file is never overwritten) and its directory must. On an error, or if
/// the returned future is dropped, `out` is removed again.
pub async fn copy_database(db: &Path, out: &Path) -> Result<Copied, BackupError> {
    let (copied, mut claimed) = copy(db, out).await?;
    // The new name made durable with the bytes (synced in `copy`).
    let dir = parent(out);
    let synced = match tokio::fs::File::open(dir).await {
        Ok(d) => d.sync_all().await,
        Err(e) => Err(e),
    };
    synced.map_err(|source| BackupError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    claimed.keep();
    Ok(copied)
}

/// The directory `file` is in (`.` for a bare name).
fn parent(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// [`copy_database`] into `stage` (a new file), opened for reading and
/// then removed: the copy lives as long as the returned file, and nothing
/// is left behind whatever ends the process later (an error, a signal, a
/// reader that went away).
pub async fn copy_staged(
    db: &Path,
    stage: &Path,
) -> Result<(tokio::fs::File, Copied), BackupError> {
    let (copied, claimed) = copy(db, stage).await?;
    let file = tokio::fs::File::open(stage)
        .await
        .map_err(|source| BackupError::Io {
            path: stage.to_path_buf(),
            source,
        })?;
    drop(claimed);
    Ok((file, copied))
}

/// The copy, and the claim that removes it unless kept.
async fn copy(db: &Path, out: &Path) -> Result<(Copied, Claimed), BackupError> {
    match std::fs::metadata(db) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(BackupError::NoDatabase(db.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::NoDatabase(db.to_path_buf()));
        }
        Err(source) => {
            return Err(BackupError::Io {
                path: db.to_path_buf(),
                source,
            });
        }
    }
    let out_text = out
        .to_str()
        .ok_or_else(|| BackupError::NotUtf8(out.to_path_buf()))?;
    let dir = parent(out);
    if !dir.is_dir() {
        return Err(BackupError::NoDirectory(dir.to_path_buf()));
    }
    // SQLite writes the copy under a rollback journal beside it: one
    // already there is not ours to remove afterwards.
    let journal = rollback_journal(out);
    for p in [out, journal.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(BackupError::Exists(p.to_path_buf()));
        }
    }
    let copy_err = |source| BackupError::Copy {
        db: db.to_path_buf(),
        out: out.to_path_buf(),
        source,
    };
    // Read-only: nothing this process does can change the daemon's file.
    // No `create_if_missing`: a database removed since the check above is
    // an error, not a new empty one.
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(BUSY_WAIT)
        .connect()
        .await
        .map_err(copy_err)?;
    // Claimed atomically: a file that appeared since the check is not
    // ours to overwrite (`VACUUM INTO` accepts an empty file).
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(out.to_path_buf()),
            std::io::ErrorKind::NotFound => BackupError::NoDirectory(dir.to_path_buf()),
            _ => BackupError::Io {
                path: out.to_path_buf(),
                source,
            },
        })?;
    let claimed = Claimed(Some([out.to_path_buf(), journal]));
    sqlx::query("VACUUM INTO ?")
        .bind(out_text)
        .execute(&mut conn)
        .await
        .map_err(copy_err)?;
    conn.close().await.map_err(copy_err)?;
    // SQLite does not sync the file `VACUUM INTO` writes.
    let io = |source| BackupError::Io {
        path: out.to_path_buf(),
        source,
    };
    file.sync_all().await.map_err(io)?;
    let bytes = file.metadata().await.map_err(io)?.len();
    drop(file);
    let incidents = count_incidents(out).await.map_err(copy_err)?;
    Ok((Copied { incidents, bytes }, claimed))
}

/// The copy's incident rows, read the way nothing is written beside it
/// (`immutable`: no `-shm` or `-wal` file, no lock), which also shows
/// that it opens as a database.
async fn count_incidents(copy: &Path) -> Result<u64, sqlx::Error> {
    let mut conn = SqliteConnectOptions::new()
        .filename(copy)
        .read_only(true)
        .immutable(true)
        .connect()
        .await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The rollback journal SQLite keeps beside `db` while it writes it.
fn rollback_journal(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

/// A file this process created, and its rollback journal, removed when
/// dropped unless kept: a copy cut short by an error or a signal leaves
/// nothing behind that could pass for a backup.
struct Claimed(Option<[PathBuf; 2]>);

impl Claimed {
    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        for p in self.0.take().into_iter().flatten() {
            // An unlink or two, not worth a blocking-pool hop; a failure
            // leaves a file the error reported names (or none was made).
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteOptions, SqliteStore};

    #[tokio::test]
    async fn copies_an_open_store_into_a_database_that_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let store = SqliteStore::open_dir(&data, SqliteOptions::default())
            .await
            .expect("open");
        let out = dir.path().join("copy.db");
        let copied = copy_database(&data.join("incidentd.db"), &out)
            .await
            .expect("copy");
        assert_eq!(copied.incidents, 0);
        assert_eq!(copied.bytes, std::fs::metadata(&out).expect("copy").len());
        let header = std::fs::read(&out).expect("read copy");
        assert!(header.starts_with(b"SQLite format 3\0"));
        // Nothing beside the copy: no -shm, -wal or -journal.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["copy.db", "data"]);
        drop(store);
        // A daemon's store opens on it.
        let restored = dir.path().join("restored");
        std::fs::create_dir(&restored).expect("mkdir");
        std::fs::rename(&out, restored.join("incidentd.db")).expect("move");
        SqliteStore::open_dir(&restored, SqliteOptions::default())
            .await
            .expect("the copy opens as a store");
    }

    #[tokio::test]
    async fn a_staged_copy_is_unlinked_and_read_whole_from_its_file() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().expect("tempdir");
        drop(
            SqliteStore::open_dir(dir.path(), SqliteOptions::default())
                .await
                .expect("open"),
        );
        let stage = dir.path().join("stage.tmp");
        let (mut file, copied) = copy_staged(&dir.path().join("incidentd.db"), &stage)
            .await
            .expect("copy");
        assert!(!stage.exists(), "unlinked before it is read");
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await.expect("read");
        assert_eq!(bytes.len() as u64, copied.bytes);
        assert!(bytes.starts_with(b"SQLite format 3\0"));
    }

    #[tokio::test]
    async fn refuses_a_missing_database_an_existing_file_and_a_missing_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("incidentd.db");
        let out = dir.path().join("copy.db");
        let e = copy_database(&db, &out).await.expect_err("no database");
        assert!(matches!(&e, BackupError::NoDatabase(p) if p == &db), "{e}");
        assert!(!out.exists(), "nothing written");

        let data = dir.path().join("data");
        drop(
            SqliteStore::open_dir(&data, SqliteOptions::default())
                .await
                .expect("open"),
        );
        let db = data.join("incidentd.db");
        std::fs::write(&out, b"keep me").expect("write");
        let e = copy_database(&db, &out).await.expect_err("exists");
        assert!(matches!(&e, BackupError::Exists(p) if p == &out), "{e}");
        assert_eq!(std::fs::read(&out).expect("read"), b"keep me");

        let nowhere = dir.path().join("missing").join("copy.db");
        let e = copy_database(&db, &nowhere).await.expect_err("no dir");
        assert!(
            matches!(&e, BackupError::NoDirectory(p) if p == &dir.path().join("missing")),
            "{e}"
        );
    }
}
