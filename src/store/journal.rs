//! The SQLite store's durability point. Each batch becomes one checksummed
//! record appended to a segment file under `data_dir/journal/` (and
//! fsynced under `synchronous = full`); a projector applies the records to
//! the tables behind it, many per transaction, and notes in the same
//! transaction how far it got (`journal_state`).
//!
//! Why: a sender used to wait while the one writer connection executed
//! every statement of its batch and committed it (WAL frames, statement
//! parsing and the fsync of a small transaction bounded durable ingest at
//! 8 connections; BENCHMARKS.md entries 17–19). Now it waits for one
//! sequential write, and the tables catch up in transactions that write
//! each hot page once for many batches. Reads wait until the projection
//! reaches what was appended before they started, so no read is older than
//! what its caller was told is durable.
//!
//! Recovery (at open): the records after `journal_state.seq` are projected
//! before anything else runs; a record cut short by a crash was never
//! acknowledged (its append had not returned) and is ignored.

use super::StoreError;
use super::sqlite::FileGuard;
use sqlx::SqlitePool;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

/// A segment is closed, and a new one started, beyond this size; a closed
/// segment is deleted once all of it is projected.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Script text per projection transaction at most. Larger transactions
/// were not cheaper per byte (statement execution dominates, not the
/// commit): at 4 MiB a projection took ~570 ms and the process held ~330 MB
/// at the end of a stream run; at 1 MiB it settled at ~50 KB per
/// transaction (it keeps up) and ~100 MB (BENCHMARKS.md entry 19).
const PROJECT_BYTES: usize = 1 << 20;

/// Appended but not yet projected, in KiB, before appends wait. The tables
/// may trail the journal by this much: a read waits for it (~1 s of
/// projection at most), and a burst beyond it is paced by the projection,
/// not hidden in memory (32 MiB kept ~50 MB more resident after a burst
/// and let a 10 s benchmark run 4 s ahead of the tables).
const BACKLOG_KIB: u32 = 8 << 10;

/// Record header: body length (u32), CRC-32C of sequence and body (u32),
/// sequence number (u64), all little-endian.
const HEADER: usize = 16;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn checksum(seq: u64, body: &[u8]) -> u32 {
    let mut d = CRC.digest();
    d.update(&seq.to_le_bytes());
    d.update(body);
    d.finalize()
}

/// Where one record's body lies in its segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    seq: u64,
    at: u64,
    len: u32,
}

/// A record's header.
fn header(seq: u64, body: &[u8]) -> std::io::Result<[u8; HEADER]> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "batch larger than 4 GiB"))?;
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&checksum(seq, body).to_le_bytes());
    h[8..].copy_from_slice(&seq.to_le_bytes());
    Ok(h)
}

#[cfg(test)]
fn encode(seq: u64, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut buf = header(seq, body)?.to_vec();
    buf.extend_from_slice(body);
    Ok(buf)
}

/// The records of one segment's bytes, up to the first that is cut short,
/// fails its checksum, is not text (the tail of a write a crash
/// interrupted) or does not continue the sequence from `first` (what a
/// recycled segment still holds of its previous use), and whether such a
/// tail was found.
fn decode(bytes: &[u8], first: Option<u64>) -> (Vec<Span>, bool) {
    let mut out = Vec::new();
    let mut at = 0;
    let mut want = first;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + HEADER) else {
            return (out, true);
        };
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (len, crc) = (word(0), word(4));
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&head[8..16]);
        let seq = u64::from_le_bytes(seq);
        let start = at + HEADER;
        let Some(body) = bytes.get(start..start + len as usize) else {
            return (out, true);
        };
        if want.is_some_and(|w| w != seq)
            || checksum(seq, body) != crc
            || std::str::from_utf8(body).is_err()
        {
            return (out, true);
        }
        want = Some(seq + 1);
        out.push(Span {
            seq,
            at: start as u64,
            len,
        });
        at = start + len as usize;
    }
    (out, false)
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

/// The first sequence a segment holds, from its name.
fn segment_first(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// A projected segment kept for reuse (not a `.log`: never read as one).
const SPARE: &str = "spare.recycle";

/// Segment files under `dir`, oldest first (names sort by first sequence).
fn segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment being written.
struct Open {
    /// Shared with the records queued for the projector, which read their
    /// bodies back from it.
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    last: u64,
}

/// Writes records in sequence; owned by one lock, so that sequence order,
/// file order and the projector's queue order are the same.
pub(super) struct Appender {
    dir: PathBuf,
    sync: bool,
    /// `SEGMENT_BYTES` (smaller in tests).
    segment_bytes: u64,
    current: Option<Open>,
    /// Closed segments and the last sequence each holds.
    closed: Vec<(PathBuf, u64)>,
    /// Whether [`SPARE`] holds a projected segment for the next segment
    /// to reuse: overwriting blocks a file already has makes each synced
    /// append cheaper than growing a new file (0.12 against 0.21 ms per
    /// 16 KiB `dsync` write on the benchmark VM, BENCHMARKS.md entry 21).
    spare: bool,
    next_seq: u64,
}

impl Appender {
    fn new(dir: PathBuf, sync: bool, next_seq: u64) -> Appender {
        Appender {
            sync,
            segment_bytes: SEGMENT_BYTES,
            current: None,
            closed: Vec::new(),
            // One a previous run left is as good as one of ours.
            spare: dir.join(SPARE).is_file(),
            dir,
            next_seq,
        }
    }

    /// Append one record and make it durable (under `sync`); where it is.
    /// On failure nothing of it is left behind to recover (the caller
    /// retries the batch under the next number), or the segment is closed
    /// with the remains at its end, where recovery stops reading it.
    fn append(&mut self, body: &[u8]) -> std::io::Result<Loc> {
        let limit = self.segment_bytes;
        if let Some(cur) = self.current.take_if(|c| c.len >= limit) {
            self.closed.push((cur.path, cur.last));
        }
        let cur = match &mut self.current {
            Some(c) => c,
            None => {
                let path = self.dir.join(segment_name(self.next_seq));
                // A reused file still holds its old records after what is
                // written now; recovery stops at the first that does not
                // continue the sequence from the name.
                let file = if std::mem::take(&mut self.spare) {
                    std::fs::rename(self.dir.join(SPARE), &path)
                        .and_then(|()| OpenOptions::new().read(true).write(true).open(&path))
                } else {
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&path)
                }?;
                if self.sync {
                    sync_dir(&self.dir)?;
                }
                self.current.insert(Open {
                    file: Arc::new(file),
                    path,
                    len: 0,
                    last: self.next_seq.saturating_sub(1),
                })
            }
        };
        let seq = self.next_seq;
        let head = header(seq, body)?;
        // Two writes, not a copy of the body: a torn pair is what the
        // checksum is for. Positional: a reused file is longer than what
        // this use of it has written.
        let written = cur
            .file
            .write_all_at(&head, cur.len)
            .and_then(|()| cur.file.write_all_at(body, cur.len + HEADER as u64))
            .and_then(|()| {
                if self.sync {
                    cur.file.sync_data()
                } else {
                    Ok(())
                }
            });
        if let Err(e) = written {
            let undone = cur
                .file
                .set_len(cur.len)
                .and_then(|()| cur.file.sync_data());
            if undone.is_err()
                && let Some(c) = self.current.take()
            {
                self.closed.push((c.path, c.last.max(seq)));
            }
            return Err(e);
        }
        let loc = Loc {
            seq,
            file: cur.file.clone(),
            at: cur.len + HEADER as u64,
            // `header` refused a body beyond u32.
            len: body.len() as u32,
        };
        cur.len += (HEADER + body.len()) as u64;
        cur.last = seq;
        self.next_seq += 1;
        Ok(loc)
    }

    /// Delete the closed segments whose records are all projected, but
    /// keep one as the spare the next segment reuses.
    fn release(&mut self, projected: u64) {
        self.closed.retain(|(path, last)| {
            if *last > projected {
                return true;
            }
            if !self.spare {
                match std::fs::rename(path, self.dir.join(SPARE)) {
                    Ok(()) => {
                        self.spare = true;
                        return false;
                    }
                    Err(e) => {
                        tracing::debug!(path = %path.display(), error = %e, "cannot keep a projected journal segment for reuse");
                    }
                }
            }
            match std::fs::remove_file(path) {
                Ok(()) => false,
                Err(e) if e.kind() == ErrorKind::NotFound => false,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a projected journal segment");
                    true
                }
            }
        });
    }
}

fn lock(a: &Mutex<Appender>) -> MutexGuard<'_, Appender> {
    // A panic while holding it left at worst a record that recovery
    // ignores; the appender itself stays consistent.
    a.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How far the tables are, and why the projection fails if it does.
#[derive(Debug, Clone, Default)]
struct Progress {
    projected: u64,
    failing: Option<Arc<str>>,
}

/// A record in its segment: the projector reads its body back from the
/// file (the operating system's page cache) into one reused buffer, so
/// the memory a backlog takes is that buffer, not every batch's text
/// until projected (BENCHMARKS.md entries 19 and 20).
#[derive(Clone)]
struct Loc {
    seq: u64,
    file: Arc<File>,
    /// Offset of the body in the file.
    at: u64,
    len: u32,
}

/// An appended record waiting for the projector, holding its share of the
/// backlog until it is in the tables.
struct Pending {
    loc: Loc,
    _room: OwnedSemaphorePermit,
}

impl std::borrow::Borrow<Loc> for Pending {
    fn borrow(&self) -> &Loc {
        &self.loc
    }
}

pub(super) struct Journal {
    dir: PathBuf,
    /// The data directory's journal is ours alone (see [`exclusive`]).
    _lock: Arc<File>,
    appender: Arc<Mutex<Appender>>,
    queue: mpsc::UnboundedSender<Pending>,
    backlog: Arc<Semaphore>,
    appended: Arc<AtomicU64>,
    progress: watch::Receiver<Progress>,
}

/// Run one script that is one transaction on the writer; if it stops
/// part-way, undo it so that the connection goes back to the pool clean.
pub(super) async fn run_script(writer: &SqlitePool, sql: String) -> Result<(), StoreError> {
    let mut conn = writer.acquire().await?;
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
    {
        if let Err(rb) = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await {
            tracing::debug!(error = %rb, "rollback after a failed batch");
        }
        return Err(e.into());
    }
    Ok(())
}

/// SQL text per statement round trip of a projection: records are joined
/// up to this, so that a typical projection is one round trip. One round
/// trip per record made projections slow enough to fill the backlog (p99
/// at 8 connections ~50 ms instead of ~9; BENCHMARKS.md entry 19).
const CHUNK_BYTES: usize = 256 << 10;

/// Project `records` (in sequence, the last one `last`) as one
/// transaction that also notes how far it reaches; `buf` is the text
/// buffer kept between projections.
async fn project_batch<L: std::borrow::Borrow<Loc>>(
    writer: &SqlitePool,
    records: &[L],
    buf: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let Some(last) = records.last().map(|r| r.borrow().seq) else {
        return Ok(());
    };
    let end = format!("UPDATE journal_state SET seq = {last} WHERE id = 1;\nCOMMIT;");
    let mut conn = writer.acquire().await?;
    let mut i = 0;
    let ran: Result<(), StoreError> = async {
        while i < records.len() {
            // One round trip: the records up to `CHUNK_BYTES` (a larger
            // one alone), read back into the buffer.
            let mut j = i;
            let mut len = 0;
            while j < records.len() {
                let l = records[j].borrow().len as usize;
                if j > i && len + l > CHUNK_BYTES {
                    break;
                }
                len += l;
                j += 1;
            }
            let chunk: Vec<Loc> = records[i..j].iter().map(|r| r.borrow().clone()).collect();
            let mut text = std::mem::take(buf);
            text.clear();
            if i == 0 {
                text.extend_from_slice(b"BEGIN IMMEDIATE;\n");
            }
            let mut text = tokio::task::spawn_blocking(move || read_bodies(&chunk, text))
                .await
                .map_err(|e| StoreError::Journal(format!("reading the journal: {e}")))?
                .map_err(|e| StoreError::Journal(format!("reading the journal: {e}")))?;
            if j == records.len() {
                text.extend_from_slice(end.as_bytes());
            }
            let sql = Arc::new(String::from_utf8(text).map_err(|_| {
                StoreError::Journal(format!(
                    "journal records {}..={} are not text",
                    records[i].borrow().seq,
                    records[j - 1].borrow().seq
                ))
            })?);
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut *conn)
                .await?;
            // Kept for the next round trip unless it grew for a large
            // record.
            if let Ok(s) = Arc::try_unwrap(sql)
                && s.capacity() <= 2 * CHUNK_BYTES
            {
                *buf = s.into_bytes();
            }
            i = j;
        }
        Ok(())
    }
    .await;
    if let Err(e) = ran {
        if let Err(rb) = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await {
            tracing::debug!(error = %rb, "rollback after a failed projection");
        }
        return Err(e);
    }
    Ok(())
}

/// Append the bodies at `locs` to `text`.
fn read_bodies(locs: &[Loc], mut text: Vec<u8>) -> std::io::Result<Vec<u8>> {
    for l in locs {
        let start = text.len();
        text.resize(start + l.len as usize, 0);
        l.file.read_exact_at(&mut text[start..], l.at)?;
    }
    Ok(text)
}

impl Journal {
    /// Project what an earlier run appended and did not project, then
    /// start appending after it.
    pub(super) async fn open(
        dir: PathBuf,
        sync: bool,
        writer: SqlitePool,
        guard: Option<Arc<FileGuard>>,
    ) -> Result<Journal, StoreError> {
        let io = |what: &str, e: std::io::Error| {
            StoreError::Journal(format!("{what} {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| io("creating", e))?;
        let lock = Arc::new(exclusive(&dir, LOCK_WAIT).await?);
        let projected = recover(&dir, &writer).await?;
        let appender = Arc::new(Mutex::new(Appender::new(dir.clone(), sync, projected + 1)));
        let (queue, rx) = mpsc::unbounded_channel();
        let (tx, progress) = watch::channel(Progress {
            projected,
            failing: None,
        });
        tokio::spawn(project(
            rx,
            writer,
            tx,
            appender.clone(),
            guard,
            lock.clone(),
        ));
        Ok(Journal {
            dir,
            _lock: lock,
            appender,
            queue,
            backlog: Arc::new(Semaphore::new(BACKLOG_KIB as usize)),
            appended: Arc::new(AtomicU64::new(projected)),
            progress,
        })
    }

    /// Append `body` (a batch's SQL, without its transaction) durably.
    pub(super) async fn append(&self, body: String) -> Result<(), StoreError> {
        let kib = u32::try_from(body.len() / 1024 + 1)
            .unwrap_or(u32::MAX)
            .min(BACKLOG_KIB);
        let room = self
            .backlog
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| StoreError::Journal("the journal is closed".into()))?;
        let appender = self.appender.clone();
        let queue = self.queue.clone();
        let appended = self.appended.clone();
        let (done, body) = tokio::task::spawn_blocking(move || {
            let mut a = lock(&appender);
            let done = a.append(body.as_bytes()).map(|loc| {
                appended.store(loc.seq, Ordering::Release);
                // In the lock: the projector sees records in sequence
                // order. It stops only when the store is dropped, with
                // this sender.
                let _ = queue.send(Pending { loc, _room: room });
            });
            (done, body)
        })
        .await
        .map_err(|e| StoreError::Journal(format!("appending: {e}")))?;
        // Freed on the thread that made it, where the allocator reuses it
        // for the next batch at once.
        drop(body);
        done.map_err(|e| StoreError::Journal(format!("appending to {}: {e}", self.dir.display())))
    }

    /// Wait until everything appended before this call is in the tables;
    /// an error while the projection fails.
    pub(super) async fn caught_up(&self) -> Result<(), StoreError> {
        let target = self.appended.load(Ordering::Acquire);
        let mut rx = self.progress.clone();
        let p = rx
            .wait_for(|p| p.projected >= target || p.failing.is_some())
            .await
            .map_err(|_| StoreError::Journal("the journal's projector stopped".into()))?
            .clone();
        match p.failing {
            Some(why) if p.projected < target => Err(StoreError::Journal(format!(
                "the tables are behind the journal: {why}"
            ))),
            _ => Ok(()),
        }
    }

    /// Appended and not yet projected, to the KiB (the backlog's permits).
    pub(super) fn backlog_bytes(&self) -> u64 {
        let free = self.backlog.available_permits() as u64;
        u64::from(BACKLOG_KIB).saturating_sub(free) * 1024
    }

    /// Why the projection currently fails, if it does.
    pub(super) fn failing(&self) -> Option<String> {
        self.progress.borrow().failing.as_deref().map(str::to_owned)
    }
}

/// How long an open waits for the journal's lock: a store of the same
/// process closing, or a daemon being stopped, lets go within it.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Take the journal's lock (`dir/LOCK`), waiting up to `LOCK_WAIT`. Two
/// daemons on one data directory would recover and delete each other's
/// records; the second one is refused instead.
async fn exclusive(dir: &Path, wait: Duration) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Journal(format!("opening {}: {e}", path.display())))?;
    let started = tokio::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Journal(format!(
                    "{} is locked by another incidentd using this data directory",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Journal(format!(
                    "locking {}: {e}",
                    path.display()
                )));
            }
        }
    }
}

/// Project the records after `journal_state.seq` found under `dir`, then
/// delete every segment; the last sequence in the tables.
async fn recover(dir: &Path, writer: &SqlitePool) -> Result<u64, StoreError> {
    let io = |e: std::io::Error| StoreError::Journal(format!("reading {}: {e}", dir.display()));
    let seq: i64 = sqlx::query_scalar("SELECT seq FROM journal_state WHERE id = 1")
        .fetch_one(writer)
        .await?;
    let mut projected = u64::try_from(seq).unwrap_or(0);
    let files = segments(dir).map_err(io)?;
    let mut todo = Vec::new();
    for path in &files {
        let mut bytes = Vec::new();
        let mut file = File::open(path).map_err(io)?;
        file.read_to_end(&mut bytes).map_err(io)?;
        let (spans, torn) = decode(&bytes, segment_first(path));
        if torn {
            tracing::info!(segment = %path.display(), records = spans.len(), "journal segment: what follows its last record is not one (the rest of a reused segment, or a write a crash interrupted, never acknowledged); ignored");
        }
        let file = Arc::new(file);
        todo.extend(
            spans
                .into_iter()
                .filter(|r| r.seq > projected)
                .map(|r| Loc {
                    seq: r.seq,
                    file: file.clone(),
                    at: r.at,
                    len: r.len,
                }),
        );
    }
    // Records follow the database's point without a gap; otherwise the
    // database is not the one the journal was written for (a restored
    // backup older than the journal): the records in between went with
    // the database they were projected into, and the later ones cannot be
    // applied alone.
    if let Some(gap) = todo
        .iter()
        .zip(projected + 1..)
        .position(|(r, want)| r.seq != want)
    {
        let aside = dir.with_extension(format!("stale-{}", todo[gap].seq));
        tracing::error!(
            database_at = projected + gap as u64, journal_next = todo[gap].seq, moved_to = %aside.display(),
            "the journal does not continue the database (restored from a backup?); the records from the gap on are set aside, not applied"
        );
        todo.truncate(gap);
        apply_all(writer, &todo, &mut projected).await?;
        // The segments move; the directory (and the lock held on its
        // `LOCK`) stays.
        std::fs::create_dir_all(&aside).map_err(io)?;
        for path in &files {
            if let Some(name) = path.file_name() {
                std::fs::rename(path, aside.join(name)).map_err(io)?;
            }
        }
        return Ok(projected);
    }
    apply_all(writer, &todo, &mut projected).await?;
    if !todo.is_empty() {
        tracing::info!(
            records = todo.len(),
            up_to = projected,
            "journal recovered into the tables"
        );
    }
    for path in &files {
        std::fs::remove_file(path).map_err(io)?;
    }
    Ok(projected)
}

/// Project `records` (in sequence) in transactions of `PROJECT_BYTES`, as
/// the projector does.
async fn apply_all(
    writer: &SqlitePool,
    records: &[Loc],
    projected: &mut u64,
) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < records.len() && (end == start || bytes < PROJECT_BYTES) {
            bytes += records[end].len as usize;
            end += 1;
        }
        project_batch(writer, &records[start..end], &mut buf).await?;
        *projected = records[end - 1].seq;
        start = end;
    }
    Ok(())
}

/// The projector: apply queued records in large transactions, in order,
/// retrying a failed one until it succeeds (its records are durable in
/// the journal; dropping them would lose acknowledged alerts).
async fn project(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    writer: SqlitePool,
    progress: watch::Sender<Progress>,
    appender: Arc<Mutex<Appender>>,
    guard: Option<Arc<FileGuard>>,
    // Held until the last queued record is projected: a store opened again
    // in the same process must not recover the same records meanwhile.
    _lock: Arc<File>,
) {
    let mut buf = Vec::with_capacity(CHUNK_BYTES + 4096);
    while let Some(first) = rx.recv().await {
        let mut bytes = first.loc.len as usize;
        let mut batch = vec![first];
        while bytes < PROJECT_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.loc.len as usize;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |p| p.loc.seq);
        let mut backoff = Duration::from_millis(50);
        loop {
            // Never into a database file that is no longer at its path:
            // the records stay in the journal for a restart.
            let done = match guard.as_ref().map(|g| g.check(false)) {
                Some(Err(why)) => Err(StoreError::Lost(why)),
                _ => project_batch(&writer, &batch, &mut buf).await,
            };
            match done {
                Ok(()) => break,
                Err(e) => {
                    let why: Arc<str> = e.to_string().into();
                    if progress.borrow().failing.as_deref() != Some(&*why) {
                        tracing::error!(error = %why, up_to = last, "projecting the journal into the tables failed; retrying (the records are safe in the journal)");
                    }
                    progress.send_modify(|p| p.failing = Some(why));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        progress.send_modify(|p| {
            p.projected = last;
            p.failing = None;
        });
        drop(batch);
        let a = appender.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || lock(&a).release(last)).await {
            tracing::warn!(error = %e, "releasing projected journal segments");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_ignored() {
        let mut bytes = encode(7, b"INSERT 1;").expect("encode");
        bytes.extend(encode(8, "UPDATE 'é';".as_bytes()).expect("encode"));
        let (r, torn) = decode(&bytes, Some(7));
        assert!(!torn);
        let bodies: Vec<(u64, &[u8])> = r
            .iter()
            .map(|s| {
                (
                    s.seq,
                    &bytes[s.at as usize..(s.at + u64::from(s.len)) as usize],
                )
            })
            .collect();
        assert_eq!(
            bodies,
            [(7, &b"INSERT 1;"[..]), (8, "UPDATE 'é';".as_bytes())]
        );
        // Cut anywhere inside the second record: the first survives.
        let one = encode(7, b"INSERT 1;").expect("encode").len();
        for cut in one + 1..bytes.len() {
            let (r, torn) = decode(&bytes[..cut], Some(7));
            assert!(torn, "cut at {cut}");
            assert_eq!(r.len(), 1, "cut at {cut}");
        }
        // A flipped bit in the body fails the checksum.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let (r, torn) = decode(&bad, Some(7));
        assert!(torn);
        assert_eq!(r.len(), 1);
        // Records that do not start at the segment's first sequence, or
        // do not continue it, are not this segment's.
        assert_eq!(decode(&bytes, Some(8)).0.len(), 0);
        let mut reused = encode(20, b"INSERT 20;").expect("encode");
        reused.extend(encode(21, b"INSERT 21;").expect("encode"));
        reused.extend(&bytes);
        let (r, torn) = decode(&reused, Some(20));
        assert!(torn);
        assert_eq!(r.iter().map(|s| s.seq).collect::<Vec<_>>(), [20, 21]);
    }

    #[test]
    fn segments_rotate_and_are_deleted_once_projected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = Appender::new(dir.path().to_path_buf(), true, 1);
        a.segment_bytes = 1000;
        let big = vec![b'x'; 500];
        for _ in 0..5 {
            a.append(&big).expect("append");
        }
        // 2 records per segment before it passes the size: 3 segments.
        assert_eq!(segments(dir.path()).expect("list").len(), 3);
        assert_eq!(a.closed.iter().map(|c| c.1).collect::<Vec<_>>(), [2, 4]);
        a.release(3);
        assert_eq!(segments(dir.path()).expect("list").len(), 2);
        assert!(
            dir.path().join(SPARE).exists(),
            "the first is kept for reuse"
        );
        a.release(5);
        let left = segments(dir.path()).expect("list");
        assert_eq!(left.len(), 1, "the open segment stays");
        assert!(left[0].ends_with(segment_name(5)));
        // The next segment reuses the spare: its old records (1 and 2)
        // are still in the file after the new one, and are not read.
        a.append(&big).expect("append");
        a.append(b"INSERT 7;").expect("append");
        assert!(!dir.path().join(SPARE).exists(), "reused");
        let path = dir.path().join(segment_name(7));
        let bytes = std::fs::read(&path).expect("segment 7");
        assert!(bytes.len() > 1000, "the reused file keeps its length");
        let (r, torn) = decode(&bytes, segment_first(&path));
        assert!(torn);
        assert_eq!(r.iter().map(|s| s.seq).collect::<Vec<_>>(), [7]);
    }

    fn timeline_row(seq: u64) -> String {
        format!(
            "INSERT INTO timeline (incident_id, at, kind, message) VALUES (1, {seq}, 'assigned', 'record {seq}');\n"
        )
    }

    async fn open(dir: &Path) -> crate::store::SqliteStore {
        crate::store::SqliteStore::open_dir(dir, crate::store::SqliteOptions::default())
            .await
            .expect("open")
    }

    async fn rows(dir: &Path) -> (Vec<String>, i64) {
        let pool = SqlitePool::connect(&format!("sqlite://{}", dir.join("incidentd.db").display()))
            .await
            .expect("db");
        let msgs: Vec<String> = sqlx::query_scalar("SELECT message FROM timeline ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("timeline");
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM journal_state")
            .fetch_one(&pool)
            .await
            .expect("journal_state");
        pool.close().await;
        (msgs, seq)
    }

    /// A crash left records 1–3 appended (3 cut short) and none projected:
    /// the next open applies 1 and 2 once, and a further open nothing.
    #[tokio::test]
    async fn recovery_applies_what_a_crash_left_exactly_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        open(dir.path()).await.close().await;
        let jdir = dir.path().join("journal");
        let mut bytes = Vec::new();
        for seq in 1..=3 {
            bytes.extend(encode(seq, timeline_row(seq).as_bytes()).expect("encode"));
        }
        bytes.truncate(bytes.len() - 5);
        std::fs::write(jdir.join(segment_name(1)), &bytes).expect("segment");
        let store = open(dir.path()).await;
        store.close().await;
        drop(store);
        let (msgs, seq) = rows(dir.path()).await;
        assert_eq!(msgs, ["record 1", "record 2"]);
        assert_eq!(seq, 2);
        assert!(
            segments(&jdir).expect("list").is_empty(),
            "recovered segments deleted"
        );
        // Records already in the tables are skipped, even if a segment
        // survived (a crash between the projection and the deletion).
        let mut again = encode(2, timeline_row(2).as_bytes()).expect("encode");
        again.extend(encode(3, timeline_row(3).as_bytes()).expect("encode"));
        std::fs::write(jdir.join(segment_name(2)), &again).expect("segment");
        open(dir.path()).await.close().await;
        let (msgs, seq) = rows(dir.path()).await;
        assert_eq!(msgs, ["record 1", "record 2", "record 3"]);
        assert_eq!(seq, 3);
    }

    /// A database restored from a backup older than the journal's start:
    /// the journal is set aside, not applied over it.
    #[tokio::test]
    async fn a_journal_that_does_not_continue_the_database_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        open(dir.path()).await.close().await;
        let jdir = dir.path().join("journal");
        let mut bytes = encode(8, timeline_row(8).as_bytes()).expect("encode");
        bytes.extend(encode(9, timeline_row(9).as_bytes()).expect("encode"));
        std::fs::write(jdir.join(segment_name(8)), &bytes).expect("segment");
        let store = open(dir.path()).await;
        let (msgs, seq) = rows(dir.path()).await;
        assert!(msgs.is_empty(), "{msgs:?}");
        assert_eq!(seq, 0);
        assert!(
            dir.path()
                .join("journal.stale-8")
                .join(segment_name(8))
                .exists()
        );
        assert!(segments(&jdir).expect("list").is_empty(), "moved out");
        assert!(jdir.join("LOCK").exists(), "the locked file stays in place");
        // Appends go on after the database's point.
        let ops = [crate::store::StoreOp::Timeline {
            incident: crate::domain::IncidentId(1),
            entry: crate::domain::TimelineEntry {
                at: crate::domain::Timestamp::from_millis(5),
                kind: crate::domain::TimelineKind::Assigned,
                message: "after".into(),
                actor: None,
            },
        }];
        crate::store::IncidentLog::apply(&store, &ops)
            .await
            .expect("apply");
        crate::store::IncidentLog::settle(&store)
            .await
            .expect("settle");
        assert_eq!(
            crate::store::IncidentLog::journal_backlog(&store),
            Some(0),
            "nothing left to project"
        );
        store.close().await;
        let (msgs, seq) = rows(dir.path()).await;
        assert_eq!(msgs, ["after"]);
        assert_eq!(seq, 1);
    }

    #[tokio::test]
    async fn a_second_owner_of_the_journal_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = exclusive(dir.path(), Duration::ZERO).await.expect("first");
        let second = exclusive(dir.path(), Duration::from_millis(100)).await;
        let err = second.expect_err("refused").to_string();
        assert!(err.contains("locked by another incidentd"), "{err}");
    }

    fn note(message: String) -> crate::store::StoreOp {
        crate::store::StoreOp::Timeline {
            incident: crate::domain::IncidentId(1),
            entry: crate::domain::TimelineEntry {
                at: crate::domain::Timestamp::from_millis(5),
                kind: crate::domain::TimelineKind::Assigned,
                message,
                actor: None,
            },
        }
    }

    /// Records larger than a round trip's text go alone, smaller ones are
    /// joined; either way one transaction, in order.
    #[tokio::test]
    async fn large_and_small_records_project_in_order() {
        use crate::store::IncidentLog;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path()).await;
        let big = "x".repeat(CHUNK_BYTES + 10);
        for m in [
            "a".to_string(),
            big.clone(),
            "b".into(),
            "c".into(),
            big.clone(),
        ] {
            store.apply(&[note(m)]).await.expect("apply");
        }
        store.settle().await.expect("settle");
        store.close().await;
        let (msgs, seq) = rows(dir.path()).await;
        let short: Vec<&str> = msgs
            .iter()
            .map(|m| if m.len() > 1 { "big" } else { m.as_str() })
            .collect();
        assert_eq!(short, ["a", "big", "b", "c", "big"]);
        assert!(msgs[1] == big && msgs[4] == big);
        assert_eq!(seq, 5);
    }
}
