//! Thin async wrappers: the engine task (sole owner of [`Engine`]) and the
//! store writer (group commit). Requests get their answer only once what
//! they changed is durable.

use super::{Engine, EngineConfig, EngineError, IngestOutcome, Stats};
use crate::change::ChangeRecord;
use crate::cmdb::Cmdb;
use crate::domain::{Clock, Incident, IncidentId, IncidentState, Priority};
use crate::normalize::Event;
use crate::rules::RuleSet;
use crate::store::{DynStore, Snapshot, StoreOp};
use crate::telemetry::Metrics;
use std::collections::{BTreeMap, VecDeque};
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

/// An ingest the engine did not apply; a request refused for a memory cap
/// gets its events back, so that a queue source can offer them again.
#[derive(Debug)]
pub struct Refused {
    pub error: EngineError,
    pub events: Vec<Event>,
}

impl From<Refused> for PipelineError {
    fn from(r: Refused) -> Self {
        PipelineError::Engine(r.error)
    }
}

/// A person's action on an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Acknowledge,
    Resolve,
    /// Put on hold (with a reason).
    Hold,
    /// Take off hold.
    Resume,
}

enum Command {
    Ingest {
        shard: u32,
        events: Vec<Event>,
        reply: oneshot::Sender<Result<IngestOutcome, Refused>>,
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
    Hold {
        id: IncidentId,
        actor: String,
        /// `None`: resume.
        reason: Option<String>,
        reply: oneshot::Sender<Result<(Incident, u64), EngineError>>,
    },
    Rules(Arc<RuleSet>),
    Cmdb(Arc<Cmdb>),
    Changes {
        changes: Vec<ChangeRecord>,
        reply: oneshot::Sender<u64>,
    },
    /// Change records already in the store (written by another instance).
    LearnChanges(Vec<ChangeRecord>),
    /// The change calendar in force.
    ChangeBook(oneshot::Sender<Arc<crate::change::ChangeBook>>),
    /// Put a calendar in force whose records are already stored (a bulk
    /// import, built off the engine task).
    SetChangeBook(Arc<crate::change::ChangeBook>),
    /// Take over a shard: build its engine from the stored state.
    Assign {
        shard: u32,
        snapshot: Box<Snapshot>,
        reply: oneshot::Sender<()>,
    },
    /// Give a shard up: flush its counters, drop its engine; the reply is
    /// the batch to wait for before the partition may be released.
    Revoke {
        shard: u32,
        reply: oneshot::Sender<u64>,
    },
}

/// Cloneable handle the HTTP layer and the Kafka source use to talk to the
/// engines.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    committed: watch::Receiver<u64>,
    /// Like `committed`, counters included: every effect (repeat counts
    /// too) of batches up to this one is durable.
    all_durable: watch::Receiver<u64>,
    durable_timeout: Duration,
    store_healthy: Arc<AtomicBool>,
}

impl EngineHandle {
    /// The last committed batch, changing after every commit (outbox
    /// senders wake on it).
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Hand events to the (single) engine and wait until their effect is
    /// durable.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestOutcome, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Command::Ingest {
                shard: LOCAL_SHARD,
                events,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => PipelineError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => PipelineError::ShuttingDown,
            })?;
        let out = rx.await.map_err(|_| PipelineError::ShuttingDown)??;
        self.wait_durable(out.wait_seq).await?;
        Ok(out)
    }

    /// Hand events to a shard's engine, waiting for room in the queue
    /// (back-pressure for the Kafka source) but not for durability: the
    /// outcome's `wait_seq` says which commit makes them durable. Refused
    /// for a memory cap, the events come back with the refusal.
    pub async fn submit(
        &self,
        shard: u32,
        events: Vec<Event>,
    ) -> Result<IngestOutcome, Result<Refused, PipelineError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ingest {
                shard,
                events,
                reply,
            })
            .await
            .map_err(|_| Err(PipelineError::ShuttingDown))?;
        match rx.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(refused)) => Err(Ok(refused)),
            Err(_) => Err(Err(PipelineError::ShuttingDown)),
        }
    }

    /// Build the engine of `shard` from its stored state.
    pub async fn assign(&self, shard: u32, snapshot: Snapshot) -> Result<(), PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Assign {
                shard,
                snapshot: Box::new(snapshot),
                reply,
            })
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)
    }

    /// Drop the engine of `shard` once everything it did is durable.
    pub async fn revoke(&self, shard: u32) -> Result<(), PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Revoke { shard, reply })
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        let seq = rx.await.map_err(|_| PipelineError::ShuttingDown)?;
        self.wait_fully_durable(seq).await
    }

    pub async fn acknowledge(
        &self,
        id: IncidentId,
        actor: String,
    ) -> Result<Incident, PipelineError> {
        self.act(id, actor, Operation::Acknowledge, None).await
    }

    pub async fn resolve(&self, id: IncidentId, actor: String) -> Result<Incident, PipelineError> {
        self.act(id, actor, Operation::Resolve, None).await
    }

    /// A person's action, answered once it is durable.
    pub async fn act(
        &self,
        id: IncidentId,
        actor: String,
        op: Operation,
        reason: Option<String>,
    ) -> Result<Incident, PipelineError> {
        let (inc, seq) = self.operate(id, actor, op, reason).await?;
        self.wait_durable(seq).await?;
        Ok(inc)
    }

    /// A person's action without waiting for durability: the returned
    /// sequence number says which commit makes it durable (the Kafka source
    /// stores the command message's offset behind it). `reason` is the
    /// hold's reason (required by [`Operation::Hold`], ignored otherwise).
    pub async fn operate(
        &self,
        id: IncidentId,
        actor: String,
        op: Operation,
        reason: Option<String>,
    ) -> Result<(Incident, u64), PipelineError> {
        let (reply, rx) = oneshot::channel();
        let cmd = match op {
            Operation::Acknowledge => Command::Ack { id, actor, reply },
            Operation::Resolve => Command::Resolve { id, actor, reply },
            Operation::Hold => Command::Hold {
                id,
                actor,
                reason: Some(reason.unwrap_or_else(|| "unspecified".into())),
                reply,
            },
            Operation::Resume => Command::Hold {
                id,
                actor,
                reason: None,
                reply,
            },
        };
        self.send(cmd).await?;
        Ok(rx.await.map_err(|_| PipelineError::ShuttingDown)??)
    }

    pub async fn set_rules(&self, rules: Arc<RuleSet>) -> Result<(), PipelineError> {
        self.send(Command::Rules(rules)).await
    }

    /// Teach every engine change records another instance stored.
    pub async fn learn_changes(&self, changes: Vec<ChangeRecord>) -> Result<(), PipelineError> {
        self.send(Command::LearnChanges(changes)).await
    }

    pub async fn set_cmdb(&self, cmdb: Arc<Cmdb>) -> Result<(), PipelineError> {
        self.send(Command::Cmdb(cmdb)).await
    }

    /// The change calendar in force.
    pub async fn change_book(&self) -> Result<Arc<crate::change::ChangeBook>, PipelineError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ChangeBook(reply)).await?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)
    }

    /// Put a calendar whose records are already stored in force.
    pub async fn set_change_book(
        &self,
        book: Arc<crate::change::ChangeBook>,
    ) -> Result<(), PipelineError> {
        self.send(Command::SetChangeBook(book)).await
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
        match tokio::time::timeout(self.durable_timeout, self.wait_durable_unbounded(seq)).await {
            Ok(r) => r,
            Err(_) => Err(PipelineError::NotDurable(self.durable_timeout)),
        }
    }

    /// Wait however long the store needs (the Kafka source: an offset is
    /// stored only after this returns, and an outage just pauses it).
    pub async fn wait_durable_unbounded(&self, seq: u64) -> Result<(), PipelineError> {
        if seq == 0 || *self.committed.borrow() >= seq {
            return Ok(());
        }
        let mut rx = self.committed.clone();
        rx.wait_for(|c| *c >= seq)
            .await
            .map(|_| ())
            .map_err(|_| PipelineError::ShuttingDown)
    }

    /// Cheap check without waiting.
    pub fn is_durable(&self, seq: u64) -> bool {
        seq == 0 || *self.committed.borrow() >= seq
    }

    /// Whether every effect of batches up to `seq`, coalesced repeat
    /// counters included, is durable (what a Kafka offset waits for).
    pub fn is_fully_durable(&self, seq: u64) -> bool {
        seq == 0 || *self.all_durable.borrow() >= seq
    }

    pub async fn wait_fully_durable(&self, seq: u64) -> Result<(), PipelineError> {
        if self.is_fully_durable(seq) {
            return Ok(());
        }
        let mut rx = self.all_durable.clone();
        rx.wait_for(|c| *c >= seq)
            .await
            .map(|_| ())
            .map_err(|_| PipelineError::ShuttingDown)
    }

    /// False while the writer is failing to commit.
    pub fn store_healthy(&self) -> bool {
        self.store_healthy.load(Ordering::Relaxed)
    }
}

/// The shard of a single instance without Kafka (and of `replay`).
pub const LOCAL_SHARD: u32 = 0;

pub struct PipelineOptions {
    pub queue_capacity: usize,
    pub flush_interval: Duration,
    pub tick_interval: Duration,
    pub durable_timeout: Duration,
}

/// What a shard's engine is built from when a partition is assigned.
pub struct EngineProto {
    pub cfg: EngineConfig,
    pub rules: Arc<RuleSet>,
    pub cmdb: Arc<Cmdb>,
    /// Id stride between shards (1 on a single instance).
    pub stride: u32,
}

/// Start the engine and writer tasks on `tracker`; they stop when `cancel`
/// fires, after flushing coalesced counters and committing what is pending.
/// `engines` are the shards owned from the start (the single engine of a
/// lone instance); Kafka assigns the others.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    engines: Vec<Engine>,
    proto: EngineProto,
    store: DynStore,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    opts: PipelineOptions,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) -> EngineHandle {
    let (tx, rx) = mpsc::channel(opts.queue_capacity);
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(64);
    let (committed_tx, committed_rx) = watch::channel(0u64);
    let (all_tx, all_rx) = watch::channel(0u64);
    let healthy = Arc::new(AtomicBool::new(true));
    let shards = Shards {
        engines: engines.into_iter().map(|e| (e.shard(), e)).collect(),
        prev: BTreeMap::new(),
        proto,
        next_seq: 1,
        last_sent: 0,
        loose_ops: Vec::new(),
        revoked_ops: Vec::new(),
        flushed: false,
        gauge_services: Vec::new(),
    };
    tracker.spawn(engine_loop(
        shards,
        rx,
        batch_tx,
        clock,
        metrics.clone(),
        opts.flush_interval,
        opts.tick_interval,
        cancel.clone(),
    ));
    if store.write_lanes() > 1 {
        tracker.spawn(lanes_writer_loop(
            store,
            batch_rx,
            committed_tx,
            all_tx,
            metrics,
            healthy.clone(),
            cancel,
        ));
    } else {
        tracker.spawn(writer_loop(
            store,
            batch_rx,
            committed_tx,
            all_tx,
            metrics,
            healthy.clone(),
            cancel,
        ));
    }
    EngineHandle {
        tx,
        committed: committed_rx,
        all_durable: all_rx,
        durable_timeout: opts.durable_timeout,
        store_healthy: healthy,
    }
}

/// The engines of the shards this instance owns, and the batch numbering
/// they share: every loop iteration's ops from all engines become ONE
/// writer batch, numbered `next_seq`.
struct Shards {
    engines: BTreeMap<u32, Engine>,
    /// Stats already reported to metrics, per shard.
    prev: BTreeMap<u32, Stats>,
    proto: EngineProto,
    next_seq: u64,
    /// Seq of the last batch handed to the writer.
    last_sent: u64,
    /// Ops that belong to no engine (changes while no shard is owned).
    loose_ops: Vec<StoreOp>,
    /// Last ops of shards revoked this iteration, kept under their shard:
    /// they must follow that shard's earlier ops on the same write lane.
    revoked_ops: Vec<(u32, Vec<StoreOp>)>,
    /// Every engine flushed its coalesced counters in this iteration.
    flushed: bool,
    /// The services the open-incident gauges were last exported for.
    gauge_services: Vec<String>,
}

impl Shards {
    /// Add change records to the calendar every engine shares: built
    /// once, not once per engine.
    fn learn(&mut self, changes: Vec<ChangeRecord>) {
        let Some(first) = self.engines.values().next() else {
            return;
        };
        let mut book = first.change_book();
        std::sync::Arc::make_mut(&mut book).upsert_many(changes);
        for e in self.engines.values_mut() {
            e.set_change_book(book.clone());
        }
    }

    /// Whether `events` for `shard` would pass a memory cap of the
    /// instance (all its shards together); the refusal when so. Only
    /// requests that bring new alerts are counted: repeats and resolves
    /// always pass, so a full daemon can still drain.
    fn full(&self, shard: u32, events: &[Event]) -> Option<EngineError> {
        let (grow, opens) = self.engines.get(&shard)?.growth(events);
        if grow == 0 {
            return None;
        }
        let (alerts, incidents) = self
            .engines
            .values()
            .map(Engine::load)
            .fold((0, 0), |(a, i), (x, y)| (a + x, i + y));
        let cfg = &self.proto.cfg;
        if alerts + grow > cfg.max_active_alerts {
            return Some(EngineError::Full {
                what: "alerts in memory",
                limit: cfg.max_active_alerts,
                setting: "limits.max_active_alerts",
            });
        }
        if opens && incidents >= cfg.max_active_incidents {
            return Some(EngineError::Full {
                what: "active incidents",
                limit: cfg.max_active_incidents,
                setting: "limits.max_active_incidents",
            });
        }
        None
    }
}

/// One writer batch: its number, its ops, and whether it carries a flush of
/// every engine's coalesced counters (after which all effects of earlier
/// batches are in the store once it commits).
struct Batch {
    seq: u64,
    /// Ops per shard (ops that belong to no engine under shard 0): shards
    /// never touch each other's rows, so the writer may commit them on
    /// separate connections.
    groups: Vec<(u32, Vec<StoreOp>)>,
    full_flush: bool,
}

impl Shards {
    fn prepare(&mut self) {
        for e in self.engines.values_mut() {
            e.set_seq(self.next_seq);
        }
    }

    fn flush_all(&mut self) {
        for e in self.engines.values_mut() {
            e.flush_touches();
        }
        self.flushed = true;
    }

    /// This iteration's ops of every engine, as one batch.
    fn take_batch(&mut self, metrics: &Metrics) -> Option<Batch> {
        let mut groups = Vec::new();
        let loose = std::mem::take(&mut self.loose_ops);
        if !loose.is_empty() {
            groups.push((0, loose));
        }
        groups.append(&mut self.revoked_ops);
        for (shard, e) in &mut self.engines {
            if let Some((_, more)) = e.take_batch()
                && !more.is_empty()
            {
                groups.push((*shard, more));
            }
            super::projection::observe(metrics, &e.take_lifecycle());
            let prev = self.prev.entry(*shard).or_default();
            super::projection::sync_engine(metrics, prev, &e.stats);
            *prev = e.stats.clone();
        }
        let full_flush = std::mem::take(&mut self.flushed);
        if groups.is_empty() && !full_flush {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_sent = seq;
        Some(Batch {
            seq,
            groups,
            full_flush,
        })
    }

    fn owner_of(&mut self, id: IncidentId) -> Option<&mut Engine> {
        self.engines.values_mut().find(|e| e.incident(id).is_some())
    }
}

#[allow(clippy::too_many_arguments)]
async fn engine_loop(
    mut shards: Shards,
    mut rx: mpsc::Receiver<Command>,
    batch_tx: mpsc::Sender<Batch>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    flush_interval: Duration,
    tick_interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(tick_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = Instant::now();
    // Due at once, as the interval's first tick is.
    let mut last_tick = Instant::now()
        .checked_sub(tick_interval)
        .unwrap_or_else(Instant::now);
    let mut revoked: Vec<oneshot::Sender<u64>> = Vec::new();
    loop {
        shards.prepare();
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let started = Instant::now();
                handle(&mut shards, cmd, clock.now(), &metrics, &mut revoked);
                // Take whatever else is queued into the same store batch.
                let mut n = 1;
                while n < 256 {
                    match rx.try_recv() {
                        Ok(cmd) => {
                            handle(&mut shards, cmd, clock.now(), &metrics, &mut revoked);
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                metrics.engine_batch_seconds.observe(started.elapsed().as_secs_f64());
            }
            _ = tick.tick() => {}
        }
        // Due ticks run after commands too: under sustained load the
        // command branch always wins, and timers, counter flushes (hence
        // `all_durable` and Kafka offsets) must not starve.
        if last_tick.elapsed() >= tick_interval {
            last_tick = Instant::now();
            let now = clock.now();
            for e in shards.engines.values_mut() {
                e.tick(now);
            }
            if last_flush.elapsed() >= flush_interval {
                shards.flush_all();
                last_flush = Instant::now();
            }
            update_gauges(&mut shards, &metrics, now);
        }
        if let Some(batch) = shards.take_batch(&metrics)
            && batch_tx.send(batch).await.is_err()
        {
            tracing::error!("store writer stopped; engine stops");
            return;
        }
        for r in revoked.drain(..) {
            let _ = r.send(shards.last_sent);
        }
    }
    // Graceful stop: settle what is due and persist coalesced counters.
    shards.prepare();
    let now = clock.now();
    for e in shards.engines.values_mut() {
        e.tick(now);
    }
    shards.flush_all();
    if let Some(batch) = shards.take_batch(&metrics) {
        let _ = batch_tx.send(batch).await;
    }
}

fn handle(
    shards: &mut Shards,
    cmd: Command,
    now: crate::domain::Timestamp,
    metrics: &Metrics,
    revoked: &mut Vec<oneshot::Sender<u64>>,
) {
    match cmd {
        Command::Ingest {
            shard,
            events,
            reply,
        } => {
            let open = shards.next_seq;
            let full = shards.full(shard, &events);
            let out = match (shards.engines.get_mut(&shard), full) {
                (Some(_), Some(error)) => Err(Refused { error, events }),
                (Some(e), None) => {
                    let mut out = e.ingest(events, now);
                    // Repeat counters ride on a later flush: the batch
                    // open now is the earliest that can make them durable.
                    out.open_seq = open;
                    Ok(out)
                }
                (None, _) => Err(Refused {
                    error: EngineError::NotOwned(shard),
                    events: Vec::new(),
                }),
            };
            let _ = reply.send(out);
        }
        Command::Ack { id, actor, reply } => {
            let r = match shards.owner_of(id) {
                Some(e) => e.acknowledge(id, &actor, now).map(|i| (i, e.pending_seq())),
                None => Err(EngineError::NotActive(id)),
            };
            let _ = reply.send(r);
        }
        Command::Resolve { id, actor, reply } => {
            let r = match shards.owner_of(id) {
                Some(e) => e.resolve(id, &actor, now).map(|i| (i, e.pending_seq())),
                None => Err(EngineError::NotActive(id)),
            };
            let _ = reply.send(r);
        }
        Command::Hold {
            id,
            actor,
            reason,
            reply,
        } => {
            let r = match shards.owner_of(id) {
                Some(e) => match &reason {
                    Some(reason) => e.hold(id, reason, &actor, now),
                    None => e.resume(id, &actor, now),
                }
                .map(|i| (i, e.pending_seq())),
                None => Err(EngineError::NotActive(id)),
            };
            let _ = reply.send(r);
        }
        Command::Rules(rules) => {
            for e in shards.engines.values_mut() {
                e.set_rules(rules.clone());
            }
            shards.proto.rules = rules;
        }
        Command::Cmdb(cmdb) => {
            for e in shards.engines.values_mut() {
                e.set_cmdb(cmdb.clone());
            }
            shards.proto.cmdb = cmdb;
        }
        Command::Changes { changes, reply } => {
            let seq = if changes.is_empty() {
                0
            } else {
                shards.next_seq
            };
            shards.loose_ops.extend(
                changes
                    .iter()
                    .map(|c| StoreOp::UpsertChange(Box::new(c.clone()))),
            );
            shards.learn(changes);
            let _ = reply.send(seq);
        }
        Command::LearnChanges(changes) => shards.learn(changes),
        Command::ChangeBook(reply) => {
            let book = shards
                .engines
                .values()
                .next()
                .map(Engine::change_book)
                .unwrap_or_default();
            let _ = reply.send(book);
        }
        Command::SetChangeBook(book) => {
            for e in shards.engines.values_mut() {
                e.set_change_book(book.clone());
            }
        }
        Command::Assign {
            shard,
            snapshot,
            reply,
        } => {
            let p = &shards.proto;
            let mut e = Engine::new(p.cfg.clone(), p.rules.clone());
            e.set_cmdb(p.cmdb.clone());
            e.set_shard(shard, p.stride);
            tracing::info!(
                shard,
                incidents = snapshot.incidents.len(),
                alerts = snapshot.alerts.len(),
                "shard assigned; state loaded"
            );
            e.restore(*snapshot, now);
            e.set_seq(shards.next_seq);
            shards.prev.insert(shard, e.stats.clone());
            shards.engines.insert(shard, e);
            metrics.shards_owned.set(shards.engines.len() as i64);
            let _ = reply.send(());
        }
        Command::Revoke { shard, reply } => {
            // A full flush, so that the reply's batch settles every counter.
            shards.flush_all();
            if let Some(mut e) = shards.engines.remove(&shard) {
                if let Some((_, ops)) = e.take_batch() {
                    shards.revoked_ops.push((shard, ops));
                }
                super::projection::observe(metrics, &e.take_lifecycle());
                let prev = shards.prev.remove(&shard).unwrap_or_default();
                super::projection::sync_engine(metrics, &prev, &e.stats);
                tracing::info!(shard, "shard revoked; state flushed");
            }
            metrics.shards_owned.set(shards.engines.len() as i64);
            revoked.push(reply);
        }
    }
}

/// Open incidents by service, priority and state: an incident counts once
/// for each business service it impacts (so the per-service series do not
/// add up to the total when incidents impact several), `none` when it
/// impacts none. Every service of the catalog is exported, at 0 when quiet;
/// when the catalog changes, series of services no longer in it go.
fn update_gauges(shards: &mut Shards, metrics: &Metrics, now: crate::domain::Timestamp) {
    let alerts: usize = shards.engines.values().map(Engine::active_alerts).sum();
    metrics
        .active_alerts
        .set(i64::try_from(alerts).unwrap_or(i64::MAX));
    let cmdb = &shards.proto.cmdb;
    let mut services: Vec<&str> = cmdb.services().iter().map(|s| s.id.as_str()).collect();
    services.push("none");
    let index: rustc_hash::FxHashMap<&str, usize> =
        services.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    // [service][priority][open=0 / acknowledged=1]
    let mut counts = vec![[[0i64; 2]; 5]; services.len()];
    let none = services.len() - 1;
    // [response, resolution][running, warning50, warning75, breached]
    let mut sla = [[0i64; 4]; 2];
    // [priority][open=0 / acknowledged=1], each incident once.
    let mut totals = [[0i64; 2]; 5];
    for inc in shards.engines.values().flat_map(Engine::active_incidents) {
        use crate::slo::sla::SlaStatus;
        let timers = crate::slo::sla::incident_sla(cmdb, inc, now, &shards.proto.cfg.sla_pause_on);
        // An active incident's response timer stopped once acknowledged;
        // its resolution timer runs until it is resolved.
        let running = [
            timers.response.filter(|_| inc.acknowledged_at.is_none()),
            timers.resolution,
        ];
        for (k, t) in running.iter().enumerate() {
            let status = match t.as_ref().map(|t| t.status) {
                Some(SlaStatus::Running) => 0,
                Some(SlaStatus::Warning50) => 1,
                Some(SlaStatus::Warning75) => 2,
                Some(SlaStatus::Breached) => 3,
                Some(SlaStatus::Met) | None => continue,
            };
            sla[k][status] += 1;
        }
        let p = usize::from(inc.priority.get() - 1);
        let s = usize::from(inc.state == IncidentState::Acknowledged);
        totals[p][s] += 1;
        let mut any = false;
        for svc in &inc.impacted_services {
            if let Some(&i) = index.get(svc.as_str()) {
                counts[i][p][s] += 1;
                any = true;
            }
        }
        if !any {
            counts[none][p][s] += 1;
        }
    }
    if shards.gauge_services.len() != services.len()
        || shards
            .gauge_services
            .iter()
            .zip(&services)
            .any(|(a, b)| a != b)
    {
        metrics.incidents_open.reset();
        shards.gauge_services = services.iter().map(|s| s.to_string()).collect();
    }
    for (k, sla_kind) in crate::telemetry::SLA_KINDS.iter().enumerate() {
        for (j, status) in crate::telemetry::SLA_ACTIVE_STATUSES.iter().enumerate() {
            metrics
                .sla_active
                .with_label_values(&[sla_kind, status])
                .set(sla[k][j]);
        }
    }
    for (pi, p) in Priority::ALL.iter().enumerate() {
        for (si, s) in IncidentState::ACTIVE.iter().enumerate() {
            metrics
                .incidents_active
                .with_label_values(&[p.as_str(), s.as_str()])
                .set(totals[pi][si]);
        }
    }
    for (svc, by_priority) in services.iter().zip(&counts) {
        for (pi, p) in Priority::ALL.iter().enumerate() {
            for (si, s) in IncidentState::ACTIVE.iter().enumerate() {
                metrics
                    .incidents_open
                    .with_label_values(&[svc, p.as_str(), s.as_str()])
                    .set(by_priority[pi][si]);
            }
        }
    }
}

/// Repeat counters committed per transaction when changes are waiting: small
/// enough that a waiting change batch is never stuck behind a long commit.
const COUNTER_CHUNK: usize = 2_000;

/// Ops coalesced into one transaction at most (per writer round or lane).
const MAX_COMMIT_OPS: usize = 50_000;

/// Longest that queued counters wait while change batches keep coming.
const COUNTER_MAX_DELAY: Duration = Duration::from_millis(200);

fn is_counter(op: &StoreOp) -> bool {
    matches!(op, StoreOp::TouchAlerts(_) | StoreOp::TouchIncident { .. })
}

/// Queued counter work: ops, and the points after which every effect of
/// the batches up to a full flush is in the store.
enum Queued {
    Op(StoreOp),
    FlushMark(u64),
}

#[allow(clippy::too_many_arguments)]
async fn writer_loop(
    store: DynStore,
    mut rx: mpsc::Receiver<Batch>,
    committed: watch::Sender<u64>,
    all_durable: watch::Sender<u64>,
    metrics: Metrics,
    healthy: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
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
    let mut counter_progress = Instant::now();
    loop {
        let pending = counters.iter().any(|q| matches!(q, Queued::Op(_)));
        if !pending {
            counter_progress = Instant::now();
        } else if counter_progress.elapsed() >= COUNTER_MAX_DELAY {
            // Under sustained load the queue is never empty: counters
            // still go in (up to the oldest flush mark, so `all_durable`,
            // and with it the Kafka offsets, keeps advancing).
            let has_mark = counters.iter().any(|q| matches!(q, Queued::FlushMark(_)));
            loop {
                let chunk = take_counters(&mut counters);
                if !chunk.is_empty() && !commit(&*store, &chunk, &metrics, &healthy, &cancel).await
                {
                    return;
                }
                let before = counters.len();
                settle_marks(&mut counters);
                if !has_mark || chunk.is_empty() || counters.len() < before {
                    break;
                }
            }
            counter_progress = Instant::now();
            continue;
        }
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
                    commit(&*store, &rest, &metrics, &healthy, &cancel).await;
                    return;
                }
            }
        };
        let Some(first) = next else {
            if counters.is_empty() {
                return; // channel closed and nothing left
            }
            let chunk = take_counters(&mut counters);
            if commit(&*store, &chunk, &metrics, &healthy, &cancel).await {
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
        let ok = ops.is_empty() || commit(&*store, &ops, &metrics, &healthy, &cancel).await;
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
    store: DynStore,
    mut rx: mpsc::Receiver<Batch>,
    committed: watch::Sender<u64>,
    all_durable: watch::Sender<u64>,
    metrics: Metrics,
    healthy: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
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
            healthy.clone(),
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
    store: DynStore,
    mut rx: mpsc::Receiver<LaneWork>,
    done: Arc<watch::Sender<Vec<u64>>>,
    metrics: Metrics,
    healthy: Arc<AtomicBool>,
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
        if !commit(&*store, &ops, &metrics, &healthy, &cancel).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Alert, AlertStatus, Fingerprint, LabelSet, Problem, Source, SystemClock, TimelineEntry,
        Timestamp,
    };
    use crate::store::{
        AlertRecord, BoxFuture, Delivery, IncidentQuery, OutboxRow, Page, SqliteStore, Store,
        StoreError,
    };

    fn alert(i: u64) -> Event {
        let labels: LabelSet = [
            ("alertname".to_string(), "Busy".to_string()),
            ("instance".to_string(), format!("host-{i}")),
        ]
        .into_iter()
        .collect();
        Event::Alert(Alert {
            fingerprint: Fingerprint::of_labels(&labels),
            status: AlertStatus::Firing,
            labels,
            annotations: LabelSet::new(),
            starts_at: Timestamp(1_772_438_400_000),
            ends_at: None,
            source: Source::Alertmanager,
            generator_url: String::new(),
        })
    }

    /// A store whose commits take a while, as a server's do under load: the
    /// writer is the bottleneck and always finds the next batch queued. It
    /// reports `.1` write lanes, and a batch that inserts alerts takes `.2`
    /// longer; everything else is the SQLite store's.
    struct SlowStore(SqliteStore, usize, Duration);

    type Fut<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

    impl Store for SlowStore {
        fn write_lanes(&self) -> usize {
            self.1
        }
        fn apply<'a>(&'a self, ops: &'a [StoreOp]) -> Fut<'a, ()> {
            Box::pin(async move {
                let mut delay = Duration::from_millis(20);
                if ops.iter().any(|o| matches!(o, StoreOp::InsertAlert(_))) {
                    delay += self.2;
                }
                tokio::time::sleep(delay).await;
                self.0.apply(ops).await
            })
        }
        fn load_state(
            &self,
            s: Option<u32>,
            a: Timestamp,
            b: Timestamp,
            c: Timestamp,
        ) -> Fut<'_, Snapshot> {
            self.0.load_state(s, a, b, c)
        }
        fn list_problems(&self) -> Fut<'_, Vec<Problem>> {
            self.0.list_problems()
        }
        fn list_changes(&self) -> Fut<'_, Vec<ChangeRecord>> {
            self.0.list_changes()
        }
        fn list_incidents(&self, q: IncidentQuery) -> Fut<'_, Vec<Incident>> {
            self.0.list_incidents(q)
        }
        fn get_incident(&self, id: IncidentId) -> Fut<'_, Option<Incident>> {
            self.0.get_incident(id)
        }
        fn slo_incidents(&self, since: Timestamp, worst: Priority) -> Fut<'_, Vec<Incident>> {
            self.0.slo_incidents(since, worst)
        }
        fn outbox_pending<'a>(
            &'a self,
            d: &'a str,
            shards: Option<&'a [u32]>,
            limit: u32,
        ) -> Fut<'a, Vec<OutboxRow>> {
            self.0.outbox_pending(d, shards, limit)
        }
        fn outbox_prune(&self, before: Timestamp, limit: u32) -> Fut<'_, u64> {
            self.0.outbox_prune(before, limit)
        }
        fn outbox_wake<'a>(&'a self, d: &'a str, now: Timestamp) -> Fut<'a, u64> {
            self.0.outbox_wake(d, now)
        }
        fn outbound_poll_refs<'a>(
            &'a self,
            d: &'a str,
            shards: Option<&'a [u32]>,
            limit: u32,
        ) -> Fut<'a, Vec<(IncidentId, String)>> {
            self.0.outbound_poll_refs(d, shards, limit)
        }
        fn outbox_retry(
            &self,
            id: i64,
            n: u32,
            next: Timestamp,
            e: String,
            note: Option<(IncidentId, TimelineEntry)>,
        ) -> Fut<'_, ()> {
            self.0.outbox_retry(id, n, next, e, note)
        }
        fn outbox_finish(
            &self,
            id: i64,
            at: Timestamp,
            outcome: Delivery,
            note: Option<(IncidentId, TimelineEntry)>,
        ) -> Fut<'_, ()> {
            self.0.outbox_finish(id, at, outcome, note)
        }
        fn outbox_depth<'a>(&'a self, shards: Option<&'a [u32]>) -> Fut<'a, Vec<(String, u64)>> {
            self.0.outbox_depth(shards)
        }
        fn outbound_ref<'a>(&'a self, d: &'a str, i: IncidentId) -> Fut<'a, Option<String>> {
            self.0.outbound_ref(d, i)
        }
        fn set_outbound_ref<'a>(&'a self, d: &'a str, i: IncidentId, x: &'a str) -> Fut<'a, ()> {
            self.0.set_outbound_ref(d, i, x)
        }
        fn timeline(&self, id: IncidentId, page: Page) -> Fut<'_, Vec<TimelineEntry>> {
            self.0.timeline(id, page)
        }
        fn incident_alerts(&self, id: IncidentId, page: Page) -> Fut<'_, Vec<AlertRecord>> {
            self.0.incident_alerts(id, page)
        }
        fn count_by_state(&self) -> Fut<'_, Vec<(IncidentState, u64)>> {
            self.0.count_by_state()
        }
        fn ping(&self) -> Fut<'_, ()> {
            self.0.ping()
        }
    }

    /// A partition is revoked while its shard's earlier batch is still being
    /// committed on its lane: the revoke's final ops (here: the alert's
    /// resolution, handled in the same engine round) must commit after it,
    /// on the same lane, or the older insert would overwrite them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revoked_shard_ops_stay_in_order() {
        let sqlite = SqliteStore::in_memory().await.unwrap();
        // The first batch (an insert) commits slowly on its lane.
        let store: DynStore = Arc::new(SlowStore(sqlite, 3, Duration::from_millis(200)));
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        let mut engine = Engine::new(EngineConfig::default(), Arc::new(RuleSet::empty()));
        engine.set_shard(1, 4);
        let handle = spawn(
            vec![engine],
            EngineProto {
                cfg: EngineConfig::default(),
                rules: Arc::new(RuleSet::empty()),
                cmdb: Arc::new(Cmdb::empty()),
                stride: 4,
            },
            store.clone(),
            Arc::new(SystemClock),
            Metrics::new(),
            PipelineOptions {
                queue_capacity: 64,
                flush_interval: Duration::from_secs(60),
                tick_interval: Duration::from_secs(60),
                durable_timeout: Duration::from_secs(5),
            },
            &tracker,
            cancel.clone(),
        );
        handle.submit(1, vec![alert(7)]).await.unwrap();
        let Event::Alert(mut resolved) = alert(7) else {
            unreachable!()
        };
        resolved.status = AlertStatus::Resolved;
        resolved.ends_at = Some(Timestamp(resolved.starts_at.0 + 60_000));
        let (ingested, revoked) = tokio::join!(
            handle.submit(1, vec![Event::Alert(resolved)]),
            handle.revoke(1)
        );
        ingested.unwrap();
        revoked.unwrap();
        let alerts = store
            .load_state(None, Timestamp(0), Timestamp(0), Timestamp(0))
            .await
            .unwrap()
            .alerts;
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].status, AlertStatus::Resolved, "{alerts:?}");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    /// Under sustained load (the writer always finds the next batch queued)
    /// the coalesced counters still go in, so "fully durable" - what Kafka
    /// offsets wait for - keeps advancing instead of only when load stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_become_durable_while_load_continues() {
        counters_durable_under_load(1).await;
    }

    /// The same through the per-lane writer (PostgreSQL's), which must also
    /// report durable exactly what every lane committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_writer_reports_durability_under_load() {
        counters_durable_under_load(3).await;
    }

    async fn counters_durable_under_load(lanes: usize) {
        let sqlite = SqliteStore::in_memory().await.unwrap();
        let store: DynStore = Arc::new(SlowStore(sqlite, lanes, Duration::ZERO));
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        // Four shards, as four Kafka partitions: with three lanes, one lane
        // carries two of them.
        const SHARDS: u32 = 4;
        let engines = (0..SHARDS)
            .map(|shard| {
                let mut e = Engine::new(EngineConfig::default(), Arc::new(RuleSet::empty()));
                e.set_shard(shard, SHARDS);
                e
            })
            .collect();
        let handle = spawn(
            engines,
            EngineProto {
                cfg: EngineConfig::default(),
                rules: Arc::new(RuleSet::empty()),
                cmdb: Arc::new(Cmdb::empty()),
                stride: SHARDS,
            },
            store.clone(),
            Arc::new(SystemClock),
            Metrics::new(),
            PipelineOptions {
                queue_capacity: 64,
                flush_interval: Duration::from_millis(50),
                tick_interval: Duration::from_millis(10),
                durable_timeout: Duration::from_secs(5),
            },
            &tracker,
            cancel.clone(),
        );
        let stop = CancellationToken::new();
        let mut load = Vec::new();
        // New alerts all the time, one sender per shard: every engine round
        // has changes, so the writer never finds its queue empty.
        for shard in 0..SHARDS {
            let (h, stop) = (handle.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let mut i = u64::from(shard) * 1_000_000;
                let (mut sent, mut seq) = (0u64, 0u64);
                while !stop.is_cancelled() {
                    let batch = (0..50).map(|k| alert(i + k)).collect();
                    seq = seq.max(h.submit(shard, batch).await.unwrap().wait_seq);
                    i += 50;
                    sent += 50;
                }
                (sent, seq)
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A batch submitted now, under load: repeats (of shard 0's first
        // alerts), whose counters are durable only after a flush.
        let out = handle
            .submit(0, (0..50).map(alert).collect())
            .await
            .unwrap();
        let seq = out.wait_seq.max(out.open_seq);
        let settled =
            tokio::time::timeout(Duration::from_secs(3), handle.wait_fully_durable(seq)).await;
        let still_loading = load.iter().all(|h| !h.is_finished());
        stop.cancel();
        let (mut sent, mut last) = (0, 0);
        for h in load {
            let (n, seq) = h.await.unwrap();
            sent += n;
            last = last.max(seq);
        }
        assert!(still_loading, "the load stopped early");
        assert!(
            settled.is_ok(),
            "counters were not flushed while load continued"
        );
        // Durable means in the store, on every lane: the moment the last
        // batch is reported durable, every alert is there.
        handle.wait_durable_unbounded(last).await.unwrap();
        let snap = store
            .load_state(None, Timestamp(0), Timestamp(0), Timestamp(0))
            .await
            .unwrap();
        assert_eq!(
            snap.alerts.len() as u64,
            sent,
            "every submitted alert stored"
        );
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
