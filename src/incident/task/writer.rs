//! The store writer: group commit of the engine's batches, retried until
//! they succeed, and the watermarks (`committed`, `all_durable`) that
//! answer waiting requests. One path for SQLite (one writer, counters
//! coalesced behind changes) and one for stores with several write lanes.

use crate::store::{IncidentLog, StoreOp};
use crate::telemetry::Metrics;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// What the writer publishes: the highest committed batch, the highest
/// batch whose every effect (counters included) is durable, and whether
/// commits currently succeed.
pub(super) struct Watermarks {
    pub committed: watch::Sender<u64>,
    pub all_durable: watch::Sender<u64>,
    pub signals: Signals,
}

/// What every commit reports: whether commits succeed, and a count of the
/// commits that changed an incident (the web board's live updates wait on
/// it; repeats alone do not move it).
#[derive(Clone)]
pub(super) struct Signals {
    pub healthy: Arc<AtomicBool>,
    pub incidents: Arc<watch::Sender<u64>>,
}

/// Whether committing `ops` changes what an incident view shows.
fn changes_incidents(ops: &[StoreOp]) -> bool {
    ops.iter().any(|op| {
        matches!(
            op,
            StoreOp::UpsertIncident(_)
                | StoreOp::Timeline { .. }
                | StoreOp::LinkAlert { .. }
                | StoreOp::UpdateAlert(_)
                | StoreOp::MoveAlerts { .. }
                | StoreOp::UpsertProblem(_)
                | StoreOp::SetProblem { .. }
                | StoreOp::UpsertChange(_)
        )
    })
}

/// Start the writer that suits `store` on `tracker`.
pub(super) fn spawn(
    store: Arc<dyn IncidentLog>,
    rx: mpsc::Receiver<Batch>,
    marks: Watermarks,
    metrics: Metrics,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) {
    if store.write_lanes() > 1 {
        tracker.spawn(lanes_writer_loop(store, rx, marks, metrics, cancel));
    } else {
        tracker.spawn(writer_loop(store, rx, marks, metrics, cancel));
    }
}

/// One writer batch: its number, its ops, and whether it carries a flush of
/// every engine's coalesced counters (after which all effects of earlier
/// batches are in the store once it commits).
pub(super) struct Batch {
    pub(super) seq: u64,
    /// Ops per shard (ops that belong to no engine under shard 0): shards
    /// never touch each other's rows, so the writer may commit them on
    /// separate connections.
    pub(super) groups: Vec<(u32, Vec<StoreOp>)>,
    pub(super) full_flush: bool,
}

/// Repeat counters committed per transaction: small enough that a waiting
/// change batch is never stuck behind a long commit (a chunk of 2,000 took
/// 10–50 ms on a 2-core VM and made the p99 of senders).
const COUNTER_CHUNK: usize = 500;

/// Ops coalesced into one transaction at most (per writer round or lane).
const MAX_COMMIT_OPS: usize = 50_000;

/// Longest that queued counters wait while change batches keep coming.
const COUNTER_MAX_DELAY: Duration = Duration::from_millis(200);

fn is_counter(op: &StoreOp) -> bool {
    matches!(op, StoreOp::TouchAlerts(_))
}

/// Queued counter work: ops, and the points after which every effect of
/// the batches up to a full flush is in the store.
enum Queued {
    Op(StoreOp),
    FlushMark(u64),
}

async fn writer_loop(
    store: Arc<dyn IncidentLog>,
    mut rx: mpsc::Receiver<Batch>,
    marks: Watermarks,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let Watermarks {
        committed,
        all_durable,
        signals,
    } = marks;
    // Coalesced repeat counters nobody waits for: written after, and in
    // between, the changes that senders wait on (they only ever grow, so
    // their order against the changes does not matter). Flush marks say
    // when everything up to a full flush has been written.
    let mut counters: VecDeque<Queued> = VecDeque::new();
    let settle_marks = |q: &mut VecDeque<Queued>| {
        while let Some(Queued::FlushMark(seq)) = q.front() {
            all_durable.send_replace(*seq);
            q.pop_front();
        }
    };
    let mut counter_progress = tokio::time::Instant::now();
    // Whether the next round may commit a counter chunk before changes.
    let mut counter_turn = true;
    loop {
        let pending = counters.iter().any(|q| matches!(q, Queued::Op(_)));
        if !pending {
            counter_progress = tokio::time::Instant::now();
        } else if counter_turn && counter_progress.elapsed() >= COUNTER_MAX_DELAY {
            // Under sustained load the queue is never empty: counters
            // still go in (so `all_durable`, and with it the Kafka offsets,
            // keeps advancing), one chunk between two change commits, so
            // that a sender waiting on a change queues behind one chunk at
            // most, not behind a whole flush.
            let chunk = take_counters(&mut counters);
            if !chunk.is_empty() && !commit(&*store, &chunk, &metrics, &signals, &cancel).await {
                return;
            }
            settle_marks(&mut counters);
            counter_turn = false;
            continue;
        }
        counter_turn = true;
        let next = if !pending {
            rx.recv().await
        } else {
            match rx.try_recv() {
                Ok(b) => Some(b),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    let rest: Vec<StoreOp> = counters
                        .drain(..)
                        .filter_map(|q| match q {
                            Queued::Op(op) => Some(op),
                            Queued::FlushMark(_) => None,
                        })
                        .collect();
                    commit(&*store, &rest, &metrics, &signals, &cancel).await;
                    return;
                }
            }
        };
        let Some(first) = next else {
            if counters.is_empty() {
                return; // channel closed and nothing left
            }
            let chunk = take_counters(&mut counters);
            if commit(&*store, &chunk, &metrics, &signals, &cancel).await {
                settle_marks(&mut counters);
            }
            continue;
        };
        let mut seq = first.seq;
        let mut ops = Vec::new();
        let mut absorb = |batch: Batch, ops: &mut Vec<StoreOp>| {
            for op in batch.groups.into_iter().flat_map(|(_, g)| g) {
                if is_counter(&op) {
                    counters.push_back(Queued::Op(op));
                } else {
                    ops.push(op);
                }
            }
            if batch.full_flush {
                counters.push_back(Queued::FlushMark(batch.seq));
            }
        };
        absorb(first, &mut ops);
        while ops.len() < MAX_COMMIT_OPS {
            match rx.try_recv() {
                Ok(more) => {
                    seq = more.seq;
                    absorb(more, &mut ops);
                }
                Err(_) => break,
            }
        }
        let ok = ops.is_empty() || commit(&*store, &ops, &metrics, &signals, &cancel).await;
        if !ok {
            return;
        }
        committed.send_replace(seq);
        settle_marks(&mut counters);
    }
}

/// A lane's share of one batch: its shards' ops (changes and counters).
struct LaneWork {
    seq: u64,
    ops: Vec<StoreOp>,
}

/// The writer for stores with several write lanes (PostgreSQL): every shard
/// belongs to one lane (shard mod lanes), and each lane commits its own
/// queue on its own connection, one transaction after another. Shards never
/// touch each other's rows, so lanes need no coordination; one partition's
/// burst (Kafka delivers a partition's messages in large runs) keeps one
/// lane busy while the others commit theirs.
///
/// Counters travel with their shard's changes here (no lock ordering
/// between a lane and a separate counter writer to worry about).
/// `committed` is the highest batch every lane has finished; `all_durable`
/// the highest full counter flush at or below it.
async fn lanes_writer_loop(
    store: Arc<dyn IncidentLog>,
    mut rx: mpsc::Receiver<Batch>,
    marks: Watermarks,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let Watermarks {
        committed,
        all_durable,
        signals,
    } = marks;
    let n = store.write_lanes().max(1);
    // Seq of the last batch each lane finished, published by the lanes.
    let (done_tx, mut done_rx) = watch::channel(vec![0u64; n]);
    let done_tx = Arc::new(done_tx);
    let mut lanes = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for k in 0..n {
        let (tx, lane_rx) = mpsc::channel::<LaneWork>(256);
        lanes.push(tx);
        handles.push(tokio::spawn(lane_loop(
            k,
            store.clone(),
            lane_rx,
            done_tx.clone(),
            metrics.clone(),
            signals.clone(),
            cancel.clone(),
        )));
    }
    drop(done_tx);
    let mut dispatched = vec![0u64; n];
    let mut latest = 0u64;
    let mut flushes: VecDeque<u64> = VecDeque::new();
    let publish = |latest: u64, dispatched: &[u64], done: &[u64], flushes: &mut VecDeque<u64>| {
        let w = (0..n)
            .map(|k| {
                if done[k] >= dispatched[k] {
                    latest
                } else {
                    done[k]
                }
            })
            .min()
            .unwrap_or(latest);
        if w > *committed.borrow() {
            committed.send_replace(w);
        }
        let mut full = None;
        while let Some(&f) = flushes.front() {
            if f > w {
                break;
            }
            full = Some(f);
            flushes.pop_front();
        }
        if let Some(f) = full {
            all_durable.send_replace(f);
        }
    };
    let mut open = true;
    while open
        || dispatched
            .iter()
            .zip(done_rx.borrow().iter())
            .any(|(d, c)| c < d)
    {
        tokio::select! {
            batch = rx.recv(), if open => {
                let Some(batch) = batch else {
                    open = false;
                    continue;
                };
                let mut parts: Vec<Vec<StoreOp>> = (0..n).map(|_| Vec::new()).collect();
                for (shard, ops) in batch.groups {
                    parts[shard as usize % n].extend(ops);
                }
                for (k, ops) in parts.into_iter().enumerate() {
                    if ops.is_empty() {
                        continue;
                    }
                    if lanes[k].send(LaneWork { seq: batch.seq, ops }).await.is_err() {
                        return; // the lane gave up (shutdown with the store down)
                    }
                    dispatched[k] = batch.seq;
                }
                latest = batch.seq;
                if batch.full_flush {
                    flushes.push_back(batch.seq);
                }
            }
            changed = done_rx.changed() => {
                if changed.is_err() {
                    return; // every lane stopped
                }
            }
        }
        let done = done_rx.borrow_and_update().clone();
        publish(latest, &dispatched, &done, &mut flushes);
        // A lane that gave up (shutdown while the store fails) never
        // finishes its work: nothing more can become durable.
        if (0..n).any(|k| done[k] < dispatched[k] && handles[k].is_finished()) {
            return;
        }
    }
    drop(lanes);
    for h in handles {
        let _ = h.await;
    }
}

/// One lane: commit queued work in order, coalescing what is queued into
/// one transaction (up to `MAX_COMMIT_OPS`), retrying until it succeeds.
async fn lane_loop(
    k: usize,
    store: Arc<dyn IncidentLog>,
    mut rx: mpsc::Receiver<LaneWork>,
    done: Arc<watch::Sender<Vec<u64>>>,
    metrics: Metrics,
    signals: Signals,
    cancel: CancellationToken,
) {
    while let Some(first) = rx.recv().await {
        let mut seq = first.seq;
        let mut ops = first.ops;
        while ops.len() < MAX_COMMIT_OPS {
            match rx.try_recv() {
                Ok(more) => {
                    seq = more.seq;
                    ops.extend(more.ops);
                }
                Err(_) => break,
            }
        }
        if !commit(&*store, &ops, &metrics, &signals, &cancel).await {
            // Wake the coordinator so it sees this lane has stopped.
            done.send_modify(|_| ());
            return;
        }
        done.send_modify(|d| d[k] = seq);
    }
}

/// Up to `COUNTER_CHUNK` rows of queued counter ops, stopping at a flush
/// mark so that the mark can be settled after this chunk commits.
fn take_counters(q: &mut VecDeque<Queued>) -> Vec<StoreOp> {
    let mut out = Vec::new();
    let mut rows = 0;
    while rows < COUNTER_CHUNK {
        let op = match q.front() {
            Some(Queued::Op(_)) => match q.pop_front() {
                Some(Queued::Op(op)) => op,
                _ => break,
            },
            _ => break,
        };
        match op {
            StoreOp::TouchAlerts(mut t) if rows + t.len() > COUNTER_CHUNK => {
                let rest = t.split_off(COUNTER_CHUNK - rows);
                rows = COUNTER_CHUNK;
                out.push(StoreOp::TouchAlerts(t));
                q.push_front(Queued::Op(StoreOp::TouchAlerts(rest)));
            }
            StoreOp::TouchAlerts(t) => {
                rows += t.len().max(1);
                out.push(StoreOp::TouchAlerts(t));
            }
            other => {
                rows += 1;
                out.push(other);
            }
        }
    }
    out
}

/// Commit one batch, retrying until it succeeds. False only when giving up
/// at shutdown.
async fn commit(
    store: &dyn IncidentLog,
    ops: &[StoreOp],
    metrics: &Metrics,
    signals: &Signals,
    cancel: &CancellationToken,
) -> bool {
    let healthy = &*signals.healthy;
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = std::time::Instant::now();
        match store.apply(ops).await {
            Ok(()) => {
                metrics
                    .store_commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.store_batch_ops.observe(ops.len() as f64);
                if !healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("store commits succeed again");
                }
                if changes_incidents(ops) {
                    signals.incidents.send_modify(|n| *n += 1);
                }
                return true;
            }
            Err(e) => {
                // Never drop a batch while running: the senders of what it
                // holds are still waiting (and get 503 after their timeout;
                // their retries wait on this same batch). Only at shutdown
                // do we give up, and then nobody was told it was durable.
                metrics.store_errors.inc();
                healthy.store(false, Ordering::Relaxed);
                if cancel.is_cancelled() && backoff >= Duration::from_secs(5) {
                    tracing::error!(error = %e, ops = ops.len(), "store still failing at shutdown; unacknowledged changes not persisted");
                    return false;
                }
                tracing::error!(error = %e, ops = ops.len(), retry_in = ?backoff, "store commit failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
