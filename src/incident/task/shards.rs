//! The engine task: sole owner of every owned shard's [`Engine`]. It applies
//! commands, runs timers on a tick, and hands each iteration's store ops to
//! the writer as one numbered batch.

use super::EngineProto;
use super::handle::{Command, Refused};
use super::writer::Batch;
use crate::change::ChangeRecord;
use crate::domain::{Clock, IncidentId};
use crate::incident::{Engine, EngineError, Stats};
use crate::normalize::Event;
use crate::store::StoreOp;
use crate::telemetry::Metrics;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The engines of the shards this instance owns, and the batch numbering
/// they share: every loop iteration's ops from all engines become ONE
/// writer batch, numbered `next_seq`.
pub(super) struct Shards {
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
    pub(super) fn new(engines: Vec<Engine>, proto: EngineProto) -> Self {
        Shards {
            engines: engines.into_iter().map(|e| (e.shard(), e)).collect(),
            prev: BTreeMap::new(),
            proto,
            next_seq: 1,
            last_sent: 0,
            loose_ops: Vec::new(),
            revoked_ops: Vec::new(),
            flushed: false,
            gauge_services: Vec::new(),
        }
    }
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
            let lived = e.take_lifecycle();
            crate::incident::projection::observe(metrics, &lived);
            crate::incident::projection::log_lifecycle(&lived.events);
            let prev = self.prev.entry(*shard).or_default();
            crate::incident::projection::sync_engine(metrics, prev, &e.stats);
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

/// Auto-resolves written per store batch at most (each is an incident row,
/// a timeline entry and its outbox messages).
const DUE_PER_BATCH: usize = 256;

#[allow(clippy::too_many_arguments)]
pub(super) async fn engine_loop(
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
    let mut last_flush = tokio::time::Instant::now();
    // Due at once, as the interval's first tick is.
    let mut last_tick = tokio::time::Instant::now()
        .checked_sub(tick_interval)
        .unwrap_or_else(tokio::time::Instant::now);
    let mut revoked: Vec<oneshot::Sender<u64>> = Vec::new();
    // More auto-resolves are due than one batch takes.
    let mut more_due = false;
    loop {
        shards.prepare();
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let started = std::time::Instant::now();
                apply(&mut shards, cmd, clock.now(), &metrics, &mut revoked);
                // Take whatever else is queued into the same store batch.
                let mut n = 1;
                while n < 256 {
                    match rx.try_recv() {
                        Ok(cmd) => {
                            apply(&mut shards, cmd, clock.now(), &metrics, &mut revoked);
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                metrics.engine_batch_seconds.observe(started.elapsed().as_secs_f64());
            }
            _ = tick.tick() => {}
            () = std::future::ready(()), if more_due => {}
        }
        // Due auto-resolves after every batch of commands, a bounded number
        // per batch: a storm that ended together comes due together, and
        // one commit of thousands of resolves would hold up every sender.
        let now = clock.now();
        more_due = false;
        for e in shards.engines.values_mut() {
            more_due |= e.settle_due(now, DUE_PER_BATCH);
        }
        // Due ticks run after commands too: under sustained load the
        // command branch always wins, and timers, counter flushes (hence
        // `all_durable` and Kafka offsets) must not starve.
        if last_tick.elapsed() >= tick_interval {
            last_tick = tokio::time::Instant::now();
            for e in shards.engines.values_mut() {
                e.housekeep(now);
            }
            metrics.engine_ticks.inc();
            if last_flush.elapsed() >= flush_interval {
                shards.flush_all();
                last_flush = tokio::time::Instant::now();
            }
            crate::incident::projection::gauges(
                shards.engines.values(),
                &shards.proto.cmdb,
                &shards.proto.cfg.sla_pause_on,
                &metrics,
                now,
                &mut shards.gauge_services,
            );
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

/// One command, applied to the shard it names.
fn apply(
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
                let lived = e.take_lifecycle();
                crate::incident::projection::observe(metrics, &lived);
                crate::incident::projection::log_lifecycle(&lived.events);
                let prev = shards.prev.remove(&shard).unwrap_or_default();
                crate::incident::projection::sync_engine(metrics, &prev, &e.stats);
                tracing::info!(shard, "shard revoked; state flushed");
            }
            metrics.shards_owned.set(shards.engines.len() as i64);
            revoked.push(reply);
        }
    }
}
