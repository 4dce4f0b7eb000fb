//! Thin async wrappers: the engine task (sole owner of [`Engine`]) and the
//! store writer (group commit). Requests get their answer only once what
//! they changed is durable.

use super::{Engine, EngineError, IngestOutcome, Stats};
use crate::change::ChangeRecord;
use crate::cmdb::Cmdb;
use crate::domain::{Clock, Incident, IncidentId, IncidentState, Priority};
use crate::normalize::Event;
use crate::rules::RuleSet;
use crate::store::{DynStore, StoreOp};
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the pipeline is overloaded; retry later")]
    Overloaded,
    #[error("the pipeline is shutting down")]
    ShuttingDown,
    #[error(
        "the store did not confirm durability within {0:?}; the delivery may be retried safely"
    )]
    NotDurable(Duration),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

enum Command {
    Ingest {
        events: Vec<Event>,
        reply: oneshot::Sender<IngestOutcome>,
    },
    Ack {
        id: IncidentId,
        actor: String,
        reply: oneshot::Sender<Result<(Incident, u64), EngineError>>,
    },
    Resolve {
        id: IncidentId,
        actor: String,
        reply: oneshot::Sender<Result<(Incident, u64), EngineError>>,
    },
    Rules(Arc<RuleSet>),
    Cmdb(Arc<Cmdb>),
    Changes {
        changes: Vec<ChangeRecord>,
        reply: oneshot::Sender<u64>,
    },
}

/// Cloneable handle the HTTP layer uses to talk to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    committed: watch::Receiver<u64>,
    durable_timeout: Duration,
    store_healthy: Arc<AtomicBool>,
}

impl EngineHandle {
    /// Hand events to the engine and wait until their effect is durable.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Command::Ingest { events, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => PipelineError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => PipelineError::ShuttingDown,
            })?;
        let out = rx.await.map_err(|_| PipelineError::ShuttingDown)?;
        self.wait_durable(out.wait_seq).await?;
        Ok(out)
    }

    pub async fn acknowledge(
        &self,
        id: IncidentId,
        actor: String,
    ) -> Result<Incident, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Ack { id, actor, reply }).await?;
        let (inc, seq) = rx.await.map_err(|_| PipelineError::ShuttingDown)??;
        self.wait_durable(seq).await?;
        Ok(inc)
    }

    pub async fn resolve(&self, id: IncidentId, actor: String) -> Result<Incident, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Resolve { id, actor, reply }).await?;
        let (inc, seq) = rx.await.map_err(|_| PipelineError::ShuttingDown)??;
        self.wait_durable(seq).await?;
        Ok(inc)
    }

    pub async fn set_rules(&self, rules: Arc<RuleSet>) -> Result<(), PipelineError> {
        self.send(Command::Rules(rules)).await
    }

    pub async fn set_cmdb(&self, cmdb: Arc<Cmdb>) -> Result<(), PipelineError> {
        self.send(Command::Cmdb(cmdb)).await
    }

    /// Record change records; returns once they are durable.
    pub async fn add_changes(&self, changes: Vec<ChangeRecord>) -> Result<(), PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Changes { changes, reply }).await?;
        let seq = rx.await.map_err(|_| PipelineError::ShuttingDown)?;
        self.wait_durable(seq).await
    }

    async fn send(&self, cmd: Command) -> Result<(), PipelineError> {
        match tokio::time::timeout(self.durable_timeout, self.tx.send(cmd)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PipelineError::ShuttingDown),
            Err(_) => Err(PipelineError::Overloaded),
        }
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), PipelineError> {
        if seq == 0 || *self.committed.borrow() >= seq {
            return Ok(());
        }
        let mut rx = self.committed.clone();
        match tokio::time::timeout(self.durable_timeout, rx.wait_for(|c| *c >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(PipelineError::ShuttingDown),
            Err(_) => Err(PipelineError::NotDurable(self.durable_timeout)),
        }
    }

    /// False while the writer is failing to commit.
    pub fn store_healthy(&self) -> bool {
        self.store_healthy.load(Ordering::Relaxed)
    }
}

pub struct PipelineOptions {
    pub queue_capacity: usize,
    pub flush_interval: Duration,
    pub tick_interval: Duration,
    pub durable_timeout: Duration,
}

/// Start the engine and writer tasks on `tracker`; they stop when `cancel`
/// fires, after flushing coalesced counters and committing what is pending.
pub fn spawn(
    engine: Engine,
    store: DynStore,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    opts: PipelineOptions,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) -> EngineHandle {
    let (tx, rx) = mpsc::channel(opts.queue_capacity);
    let (batch_tx, batch_rx) = mpsc::channel::<(u64, Vec<StoreOp>)>(64);
    let (committed_tx, committed_rx) = watch::channel(0u64);
    let healthy = Arc::new(AtomicBool::new(true));
    tracker.spawn(engine_loop(
        engine,
        rx,
        batch_tx,
        clock,
        metrics.clone(),
        opts.flush_interval,
        opts.tick_interval,
        cancel.clone(),
    ));
    tracker.spawn(writer_loop(
        store,
        batch_rx,
        committed_tx,
        metrics,
        healthy.clone(),
        cancel,
    ));
    EngineHandle {
        tx,
        committed: committed_rx,
        durable_timeout: opts.durable_timeout,
        store_healthy: healthy,
    }
}

#[allow(clippy::too_many_arguments)]
async fn engine_loop(
    mut engine: Engine,
    mut rx: mpsc::Receiver<Command>,
    batch_tx: mpsc::Sender<(u64, Vec<StoreOp>)>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    flush_interval: Duration,
    tick_interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(tick_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    let mut prev_stats = Stats::default();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let started = Instant::now();
                handle(&mut engine, cmd, clock.now());
                // Take whatever else is queued into the same store batch.
                let mut n = 1;
                while n < 256 {
                    match rx.try_recv() {
                        Ok(cmd) => { handle(&mut engine, cmd, clock.now()); n += 1; }
                        Err(_) => break,
                    }
                }
                metrics.engine_batch_seconds.observe(started.elapsed().as_secs_f64());
            }
            _ = tick.tick() => {
                engine.tick(clock.now());
                if last_flush.elapsed() >= flush_interval {
                    engine.flush_touches();
                    last_flush = Instant::now();
                }
                update_gauges(&engine, &metrics);
            }
        }
        if let Some(batch) = engine.take_batch()
            && batch_tx.send(batch).await.is_err()
        {
            tracing::error!("store writer stopped; engine stops");
            return;
        }
        metrics.sync_engine(&prev_stats, &engine.stats);
        prev_stats = engine.stats.clone();
    }
    // Graceful stop: settle what is due and persist coalesced counters.
    engine.tick(clock.now());
    engine.flush_touches();
    if let Some(batch) = engine.take_batch() {
        let _ = batch_tx.send(batch).await;
    }
    metrics.sync_engine(&prev_stats, &engine.stats);
}

fn handle(engine: &mut Engine, cmd: Command, now: crate::domain::Timestamp) {
    match cmd {
        Command::Ingest { events, reply } => {
            let out = engine.ingest(events, now);
            let _ = reply.send(out);
        }
        Command::Ack { id, actor, reply } => {
            let r = engine
                .acknowledge(id, &actor, now)
                .map(|i| (i, engine.pending_seq()));
            let _ = reply.send(r);
        }
        Command::Resolve { id, actor, reply } => {
            let r = engine
                .resolve(id, &actor, now)
                .map(|i| (i, engine.pending_seq()));
            let _ = reply.send(r);
        }
        Command::Rules(rules) => engine.set_rules(rules),
        Command::Cmdb(cmdb) => engine.set_cmdb(cmdb),
        Command::Changes { changes, reply } => {
            engine.add_changes(changes);
            let _ = reply.send(engine.pending_seq());
        }
    }
}

fn update_gauges(engine: &Engine, metrics: &Metrics) {
    metrics
        .active_alerts
        .set(i64::try_from(engine.active_alerts()).unwrap_or(i64::MAX));
    let mut counts = [[0i64; 2]; 5];
    for inc in engine.active_incidents() {
        let p = usize::from(inc.priority.get() - 1);
        let s = usize::from(inc.state == IncidentState::Acknowledged);
        counts[p][s] += 1;
    }
    for (pi, p) in Priority::ALL.iter().enumerate() {
        for (si, s) in [IncidentState::Open, IncidentState::Acknowledged]
            .iter()
            .enumerate()
        {
            metrics
                .incidents_open
                .with_label_values(&["none", p.as_str(), s.as_str()])
                .set(counts[pi][si]);
        }
    }
}

/// Repeat counters committed per transaction when changes are waiting: small
/// enough that a waiting change batch is never stuck behind a long commit.
const COUNTER_CHUNK: usize = 2_000;

fn is_counter(op: &StoreOp) -> bool {
    matches!(op, StoreOp::TouchAlerts(_) | StoreOp::TouchIncident { .. })
}

async fn writer_loop(
    store: DynStore,
    mut rx: mpsc::Receiver<(u64, Vec<StoreOp>)>,
    committed: watch::Sender<u64>,
    metrics: Metrics,
    healthy: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    // Coalesced repeat counters nobody waits for: written after, and in
    // between, the changes that senders wait on (they only ever grow, so
    // their order against the changes does not matter).
    let mut counters: std::collections::VecDeque<StoreOp> = std::collections::VecDeque::new();
    loop {
        let next = if counters.is_empty() {
            rx.recv().await
        } else {
            match rx.try_recv() {
                Ok(b) => Some(b),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    let rest: Vec<StoreOp> = counters.drain(..).collect();
                    commit(&*store, &rest, &metrics, &healthy, &cancel).await;
                    return;
                }
            }
        };
        let Some((mut seq, first)) = next else {
            if counters.is_empty() {
                return; // channel closed and nothing left
            }
            let chunk = take_counters(&mut counters);
            commit(&*store, &chunk, &metrics, &healthy, &cancel).await;
            continue;
        };
        let mut ops = Vec::with_capacity(first.len());
        let mut absorb = |batch: Vec<StoreOp>, ops: &mut Vec<StoreOp>| {
            for op in batch {
                if is_counter(&op) {
                    counters.push_back(op);
                } else {
                    ops.push(op);
                }
            }
        };
        absorb(first, &mut ops);
        while ops.len() < 50_000 {
            match rx.try_recv() {
                Ok((s, more)) => {
                    seq = s;
                    absorb(more, &mut ops);
                }
                Err(_) => break,
            }
        }
        if !ops.is_empty() && !commit(&*store, &ops, &metrics, &healthy, &cancel).await {
            return;
        }
        committed.send_replace(seq);
    }
}

/// Up to `COUNTER_CHUNK` rows of queued counter ops.
fn take_counters(q: &mut std::collections::VecDeque<StoreOp>) -> Vec<StoreOp> {
    let mut out = Vec::new();
    let mut rows = 0;
    while rows < COUNTER_CHUNK {
        let Some(op) = q.pop_front() else { break };
        match op {
            StoreOp::TouchAlerts(mut t) if rows + t.len() > COUNTER_CHUNK => {
                let rest = t.split_off(COUNTER_CHUNK - rows);
                rows = COUNTER_CHUNK;
                out.push(StoreOp::TouchAlerts(t));
                q.push_front(StoreOp::TouchAlerts(rest));
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
    store: &dyn crate::store::Store,
    ops: &[StoreOp],
    metrics: &Metrics,
    healthy: &AtomicBool,
    cancel: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = Instant::now();
        match store.apply(ops).await {
            Ok(()) => {
                metrics
                    .store_commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.store_batch_ops.observe(ops.len() as f64);
                if !healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("store commits succeed again");
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
