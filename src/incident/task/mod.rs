//! Thin async wrappers around the pure engine, in three parts: the
//! protocol callers speak ([`handle`]), the task that owns the engines of
//! the owned shards ([`shards`]), and the store writer with group commit
//! ([`writer`]). Requests get their answer only once what they changed is
//! durable.

mod handle;
mod shards;
mod writer;

pub use handle::{EngineHandle, Operation, PipelineError, Refused};

use super::{Engine, EngineConfig};
use crate::cmdb::Cmdb;
use crate::domain::Clock;
use crate::rules::RuleSet;
use crate::store::IncidentLog;
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

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
    store: Arc<dyn IncidentLog>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    opts: PipelineOptions,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) -> EngineHandle {
    let (tx, rx) = mpsc::channel(opts.queue_capacity);
    let (batch_tx, batch_rx) = mpsc::channel::<writer::Batch>(64);
    let (committed_tx, committed_rx) = watch::channel(0u64);
    let (all_tx, all_rx) = watch::channel(0u64);
    let healthy = Arc::new(AtomicBool::new(true));
    let (incidents_tx, incidents_rx) = watch::channel(0u64);
    let shards = shards::Shards::new(engines, proto);
    tracker.spawn(shards::engine_loop(
        shards,
        rx,
        batch_tx,
        clock,
        metrics.clone(),
        opts.flush_interval,
        opts.tick_interval,
        cancel.clone(),
    ));
    writer::spawn(
        store,
        batch_rx,
        writer::Watermarks {
            committed: committed_tx,
            all_durable: all_tx,
            signals: writer::Signals {
                healthy: healthy.clone(),
                incidents: Arc::new(incidents_tx),
            },
        },
        metrics,
        tracker,
        cancel,
    );
    EngineHandle {
        tx,
        committed: committed_rx,
        all_durable: all_rx,
        incidents: incidents_rx,
        durable_timeout: opts.durable_timeout,
        store_healthy: healthy,
    }
}

#[cfg(test)]
mod tests;
