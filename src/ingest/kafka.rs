//! Kafka: a consumer group that feeds the engines (at least once), and the
//! publisher of distributed mode.
//!
//! **Shards.** Each consumed (topic, partition) is a work shard with its own
//! engine (`incident::task`). When the group assigns a partition, its engine
//! is built from the shard's rows in the store; before a partition is given
//! up, its engine flushes, the writer commits, and the offsets are committed.
//! A crashed owner's successor therefore finds every durable effect in the
//! store and re-reads only messages whose effect may not be durable.
//!
//! **Offsets.** librdkafka's auto-commit runs, but only over offsets we
//! *store*, and we store a message's offset only once the store confirmed the
//! batch that holds its effect (`enable.auto.offset.store=false`). A message
//! that cannot be parsed is counted, logged with topic/partition/offset,
//! optionally copied to the dead-letter topic, and its offset is stored with
//! its batch: it never blocks the partition.
//!
//! **Keys.** Everything that may land in one incident must reach one shard:
//! alerts bound to a CMDB CI are keyed by the CI's dependency component (all
//! CIs connected by `depends_on`, whichever direction), unbound alerts by
//! their correlation key. The hot-spot limit: one large component (a shared
//! network or storage layer everything depends on) is one partition, so its
//! alert rate is bounded by one instance's throughput.

use super::settings::{KafkaConfig, PARTITIONS_PER_TOPIC, TopicFormat};
use crate::cmdb::Cmdb;
use crate::correlate::correlation_key;
use crate::domain::IncidentId;
use crate::domain::{Alert, Clock, Timestamp};
use crate::incident::EngineError;
use crate::incident::task::{EngineHandle, Operation, PipelineError};
use crate::normalize::{self, Event, NormalizeError};
use crate::store::{DynStore, Restore};
use crate::telemetry::Metrics;
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::Offset;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("the broker did not acknowledge the publish to {topic}: {message}")]
    Publish { topic: String, message: String },
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Header that marks a message's format when incidentd published it.
const FORMAT_HEADER: &str = "incidentd-format";

/// The work shard of a consumed partition (`config::MAX_SHARDS` bounds it).
pub fn shard_of(topic_index: usize, partition: i32) -> u32 {
    u32::try_from(topic_index).unwrap_or(0) * PARTITIONS_PER_TOPIC
        + u32::try_from(partition).unwrap_or(0)
}

/// The message key that keeps correlated alerts on one partition.
pub fn partition_key(cmdb: &Cmdb, alert: &Alert) -> String {
    match cmdb.bind(&alert.labels) {
        Some(b) => format!("component:{}", cmdb.component_of(b.ci)),
        None => correlation_key(alert),
    }
}

/// The producer settings both the publisher and the dead-letter copy use:
/// every publish is acknowledged by all in-sync replicas and idempotent, so a
/// retried send never duplicates; a short linger batches concurrent webhooks.
fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        .set(
            "message.timeout.ms",
            cfg.produce_timeout.as_millis().max(1).to_string(),
        );
    for (k, v) in &cfg.librdkafka {
        if !k.starts_with("consumer.") {
            c.set(k.trim_start_matches("producer."), v);
        }
    }
    c
}

/// Distributed mode: webhooks are published to the ingest topic, keyed, and
/// answered only once the broker has acknowledged them.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    metrics: Metrics,
}

/// One message for the ingest topic.
pub struct Outgoing {
    pub key: String,
    pub value: Vec<u8>,
    /// `canonical` or `pagerduty`, carried in a header.
    pub format: &'static str,
}

/// A canonical alert as published to the ingest topic (what
/// `normalize::parse_canonical` reads back, fingerprint and source kept).
#[derive(Serialize)]
struct WireAlert<'a> {
    fingerprint: String,
    status: &'static str,
    labels: &'a crate::domain::LabelSet,
    annotations: &'a crate::domain::LabelSet,
    starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    generator_url: &'a str,
    source: &'static str,
}

impl Publisher {
    pub fn new(cfg: &KafkaConfig, topic: &str, metrics: Metrics) -> Result<Publisher, KafkaError> {
        let producer: FutureProducer = producer_config(cfg).create()?;
        Ok(Publisher {
            producer,
            topic: topic.to_string(),
            metrics,
        })
    }

    /// Group alerts by partition key into canonical arrays, one message each.
    pub fn encode_alerts(cmdb: &Cmdb, alerts: &[&Alert]) -> Result<Vec<Outgoing>, KafkaError> {
        let mut by_key: BTreeMap<String, Vec<WireAlert<'_>>> = BTreeMap::new();
        for a in alerts {
            by_key
                .entry(partition_key(cmdb, a))
                .or_default()
                .push(WireAlert {
                    fingerprint: a.fingerprint.to_string(),
                    status: a.status.as_str(),
                    labels: &a.labels,
                    annotations: &a.annotations,
                    starts_at: a.starts_at.to_rfc3339(),
                    ends_at: a.ends_at.map(Timestamp::to_rfc3339),
                    generator_url: &a.generator_url,
                    source: a.source.as_str(),
                });
        }
        by_key
            .into_iter()
            .map(|(key, wire)| {
                Ok(Outgoing {
                    key,
                    value: serde_json::to_vec(&wire)?,
                    format: "canonical",
                })
            })
            .collect()
    }

    /// Publish and wait for every acknowledgement.
    pub async fn publish(&self, msgs: Vec<Outgoing>) -> Result<(), KafkaError> {
        let n = msgs.len() as u64;
        let mut pending = Vec::with_capacity(msgs.len());
        for m in &msgs {
            let headers = OwnedHeaders::new().insert(Header {
                key: FORMAT_HEADER,
                value: Some(m.format),
            });
            let rec = FutureRecord::to(&self.topic)
                .key(&m.key)
                .payload(&m.value)
                .headers(headers);
            match self.producer.send_result(rec) {
                Ok(f) => pending.push(f),
                Err((e, _)) => {
                    self.metrics
                        .kafka
                        .published
                        .with_label_values(&["failure"])
                        .inc_by(n);
                    return Err(e.into());
                }
            }
        }
        for f in pending {
            let failed = match f.await {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => Some(e.to_string()),
                Err(_) => Some("the producer was dropped".to_string()),
            };
            if let Some(message) = failed {
                self.metrics
                    .kafka
                    .published
                    .with_label_values(&["failure"])
                    .inc_by(n);
                return Err(KafkaError::Publish {
                    topic: self.topic.clone(),
                    message,
                });
            }
        }
        self.metrics
            .kafka
            .published
            .with_label_values(&["success"])
            .inc_by(n);
        Ok(())
    }

    /// Broker reachable: metadata for the ingest topic within `timeout`.
    pub fn check(&self, timeout: Duration) -> bool {
        self.producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
            .is_ok()
    }
}

/// A person's acknowledge, resolve, hold or resume, travelling to the instance that owns
/// the incident: it is produced to the partition of the incident's shard
/// (header `incidentd-format: command`), so the owner applies it in order
/// with that partition's alerts. Applying it twice is harmless: the second
/// finds the incident already acknowledged or resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IncidentCommand {
    pub command: Operation,
    pub incident: i64,
    pub by: String,
    /// The reason of a `hold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Produces [`IncidentCommand`]s for incidents whose shard another instance
/// owns (any Kafka mode: the command goes to the consumed topic the shard
/// belongs to).
pub struct Forwarder {
    producer: FutureProducer,
    topics: Vec<String>,
    timeout: Duration,
    metrics: Metrics,
}

impl Forwarder {
    /// `shared`: the publisher's producer in distributed mode (one client,
    /// one set of broker connections); otherwise one of its own.
    pub fn new(
        cfg: &KafkaConfig,
        shared: Option<&Publisher>,
        metrics: Metrics,
    ) -> Result<Forwarder, KafkaError> {
        let producer = match shared {
            Some(p) => p.producer.clone(),
            None => producer_config(cfg).create()?,
        };
        Ok(Forwarder {
            producer,
            topics: cfg.topics.iter().map(|t| t.name.clone()).collect(),
            timeout: cfg.produce_timeout,
            metrics,
        })
    }

    /// Produce `cmd` to the partition of `shard` and wait for the broker.
    pub async fn forward(&self, shard: u32, cmd: &IncidentCommand) -> Result<(), KafkaError> {
        let index = (shard / PARTITIONS_PER_TOPIC) as usize;
        let partition = i32::try_from(shard % PARTITIONS_PER_TOPIC).unwrap_or(0);
        let Some(topic) = self.topics.get(index) else {
            return Err(KafkaError::Publish {
                topic: format!("#{index}"),
                message: format!("shard {shard} belongs to no configured topic"),
            });
        };
        let value = serde_json::to_vec(cmd)?;
        let key = format!("incident:{}", cmd.incident);
        let rec = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .partition(partition)
            .headers(OwnedHeaders::new().insert(Header {
                key: FORMAT_HEADER,
                value: Some("command"),
            }));
        let sent = self.producer.send(rec, self.timeout).await;
        let outcome = if sent.is_ok() { "success" } else { "failure" };
        self.metrics
            .kafka
            .published
            .with_label_values(&[outcome])
            .inc();
        sent.map(|_| ()).map_err(|(e, _)| KafkaError::Publish {
            topic: topic.clone(),
            message: e.to_string(),
        })
    }
}

/// How far back a newly assigned shard's state reaches (engine config).
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub reopen: Duration,
    pub retention: Duration,
    pub problems: Duration,
}

/// What the consumer needs from the rest of the daemon.
pub struct SourceDeps {
    pub engine: EngineHandle,
    pub store: DynStore,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub windows: Windows,
    /// Outbox delivery follows partition ownership.
    pub outbox: Arc<crate::outbound::owned::Ownership>,
    /// How long a revocation waits for outbound deliveries in flight.
    pub outbox_drain: Duration,
    /// `[limits]` on each alert, and how far event times may stray.
    pub alert_limits: crate::normalize::AlertLimits,
    pub time_bounds: crate::normalize::TimeBounds,
    /// Alerts of a message refused alone.
    pub quarantine: Arc<super::Quarantine>,
}

/// Handle on a running consumer: readiness for `/readyz`.
#[derive(Clone)]
pub struct KafkaSource {
    healthy: Arc<AtomicBool>,
}

impl KafkaSource {
    /// False while the brokers are unreachable or a shard cannot be loaded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Start the consumer on a blocking thread of `tracker`; it drains,
    /// commits and leaves the group when `cancel` fires.
    pub fn spawn(
        cfg: &KafkaConfig,
        deps: SourceDeps,
        tracker: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> Result<KafkaSource, KafkaError> {
        let healthy = Arc::new(AtomicBool::new(true));
        let dlq = match &cfg.dead_letter_topic {
            Some(t) => Some((producer_config(cfg).create::<FutureProducer>()?, t.clone())),
            None => None,
        };
        deps.metrics
            .known_topics(cfg.topics.iter().map(|t| t.name.as_str()));
        let ctx = Ctx {
            topics: cfg.topics.iter().map(|t| t.name.clone()).collect(),
            deps,
            rt: Handle::current(),
            inflight: Mutex::new(VecDeque::new()),
            generation: AtomicU64::new(0),
            healthy: healthy.clone(),
            cancel: cancel.clone(),
        };
        let consumer: BaseConsumer<Ctx> = consumer_config(cfg).create_with_context(ctx)?;
        let names: Vec<&str> = cfg.topics.iter().map(|t| t.name.as_str()).collect();
        consumer.subscribe(&names)?;
        let run = Runner {
            formats: cfg.topics.iter().map(|t| t.format).collect(),
            max_batch: cfg.max_batch,
            batch_wait: cfg.batch_wait,
            dlq,
        };
        tracker.spawn_blocking(move || run.run(consumer, cancel));
        Ok(KafkaSource { healthy })
    }
}

/// Consumer settings, chosen for throughput with bounded memory:
/// - offsets are stored by us after durability and auto-committed every
///   second, and committed at once when the consumer goes idle (a crash
///   re-reads at most about a second plus the batches in flight, all
///   idempotent; a caught-up group shows no lag);
/// - a new group starts at the earliest offset: alerts already in the topic
///   are not skipped;
/// - `fetch.wait.max.ms` 100: a quiet partition delays a batch by at most
///   that; `fetch.max.bytes` 50 MB and `max.partition.fetch.bytes` 4 MB
///   let one fetch carry thousands of alerts per partition;
/// - `queued.max.messages.kbytes` 32 MB caps the prefetch queue (the
///   default, 64 MB, buys nothing once the engine is the bottleneck);
/// - `session.timeout.ms` 10 s: a killed instance's partitions move within
///   about ten seconds instead of the default 45.
///
/// Any of these can be overridden in `[kafka.librdkafka]` (keys prefixed
/// `producer.` apply only to producers, `consumer.` only here).
fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "4194304")
        .set("queued.max.messages.kbytes", "32768")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("statistics.interval.ms", "5000");
    for (k, v) in &cfg.librdkafka {
        if !k.starts_with("producer.") {
            c.set(k.trim_start_matches("consumer."), v);
        }
    }
    c
}

/// A batch handed to the engines whose offsets wait for durability.
struct InFlight {
    /// Its changes are durable once this batch commits.
    wait_seq: u64,
    /// Everything, repeat counters included, once this batch is fully
    /// durable (`EngineHandle::is_fully_durable`).
    settle_seq: u64,
    /// (topic index, partition) → next offset to consume.
    offsets: BTreeMap<(usize, i32), i64>,
    consumed: Vec<u64>,
    /// Messages in the batch (back-pressure counts these).
    messages: usize,
    started: Instant,
}

struct Ctx {
    topics: Vec<String>,
    deps: SourceDeps,
    rt: Handle,
    inflight: Mutex<VecDeque<InFlight>>,
    /// Bumped at every revoke: messages polled before it are dropped unsent
    /// (their partitions may have moved; they will be read again).
    generation: AtomicU64,
    healthy: Arc<AtomicBool>,
    cancel: CancellationToken,
}

impl Ctx {
    fn topic_index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == name)
    }

    /// Store the offsets of finished batches, oldest first; with `all`,
    /// wait for every batch in flight. Returns whether any were stored.
    fn settle(&self, consumer: &BaseConsumer<Ctx>, all: bool) -> bool {
        let mut stored = false;
        loop {
            let front = {
                let mut q = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
                match q.front() {
                    Some(f) if all || self.deps.engine.is_fully_durable(f.settle_seq) => {
                        q.pop_front()
                    }
                    _ => None,
                }
            };
            let Some(batch) = front else { return stored };
            if !self.deps.engine.is_fully_durable(batch.settle_seq)
                && self
                    .rt
                    .block_on(self.deps.engine.wait_fully_durable(batch.settle_seq))
                    .is_err()
            {
                // Shutting down before the store confirmed: do not store.
                return stored;
            }
            stored = true;
            let mut tpl = TopicPartitionList::new();
            for ((t, p), next) in &batch.offsets {
                if let Err(e) =
                    tpl.add_partition_offset(&self.topics[*t], *p, Offset::Offset(*next))
                {
                    tracing::error!(error = %e, "building the offset list");
                }
            }
            if let Err(e) = consumer.store_offsets(&tpl) {
                // The partition was revoked meanwhile; its new owner re-reads.
                tracing::debug!(error = %e, "storing offsets");
            }
            for (t, n) in batch.consumed.iter().enumerate() {
                if *n > 0 {
                    self.deps
                        .metrics
                        .kafka
                        .consumed
                        .with_label_values(&[&self.topics[t]])
                        .inc_by(*n);
                }
            }
            self.deps
                .metrics
                .kafka
                .batch_seconds
                .observe(batch.started.elapsed().as_secs_f64());
        }
    }

    /// The oldest batch in flight whose changes are not yet committed, and
    /// how many messages such batches hold.
    fn unconfirmed(&self) -> (u64, usize) {
        let q = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let mut it = q
            .iter()
            .filter(|f| !self.deps.engine.is_durable(f.wait_seq));
        match it.next() {
            Some(first) => (
                first.wait_seq,
                first.messages + it.map(|f| f.messages).sum::<usize>(),
            ),
            None => (0, 0),
        }
    }

    /// Load a newly assigned shard's state and hand it to the engine task,
    /// retrying while the store is down (the partition waits; nothing else
    /// is safe to do with it).
    fn assign(&self, topic: &str, partition: i32) {
        let Some(t) = self.topic_index(topic) else {
            return;
        };
        let shard = shard_of(t, partition);
        let w = self.deps.windows;
        let mut backoff = Duration::from_millis(100);
        loop {
            let now = self.deps.clock.now();
            let loaded = self.rt.block_on(self.deps.store.load_state(Restore {
                shard: Some(shard),
                resolved_since: now.saturating_sub(w.reopen),
                alerts_since: now.saturating_sub(w.retention),
                signed_since: now.saturating_sub(w.problems),
            }));
            match loaded {
                Ok(snap) => {
                    if let Err(e) = self.rt.block_on(self.deps.engine.assign(shard, snap)) {
                        tracing::warn!(error = %e, shard, "engine stopped during assignment");
                        return;
                    }
                    self.deps.outbox.gain(shard);
                    return;
                }
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    if self.cancel.is_cancelled() {
                        return;
                    }
                    tracing::error!(error = %e, topic, partition, retry_in = ?backoff, "cannot load the state of an assigned partition");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        for (name, topic) in &stats.topics {
            if self.topic_index(name).is_none() {
                continue;
            }
            for (p, part) in &topic.partitions {
                if *p < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                let lag = if part.desired && part.consumer_lag_stored >= 0 {
                    part.consumer_lag_stored
                } else if part.desired {
                    part.consumer_lag.max(0)
                } else {
                    0
                };
                self.deps
                    .metrics
                    .kafka
                    .lag
                    .with_label_values(&[name.as_str(), &p.to_string()])
                    .set(lag);
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.healthy.store(false, Ordering::Relaxed);
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Ctx>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.deps
            .metrics
            .kafka
            .rebalances
            .with_label_values(&["revoke"])
            .inc();
        // Flush before giving up: what was handed over becomes durable, its
        // offsets are stored, the shards' counters are written, and the
        // offsets are committed, so the next owner starts where we stopped.
        self.settle(consumer, true);
        let shards: Vec<u32> = tpl
            .elements()
            .iter()
            .filter_map(|e| Some(shard_of(self.topic_index(e.topic())?, e.partition())))
            .collect();
        // No outbound delivery of these shards may still run when the next
        // owner starts its own.
        if !self
            .rt
            .block_on(self.deps.outbox.release(&shards, self.deps.outbox_drain))
        {
            tracing::warn!(?shards, wait = ?self.deps.outbox_drain, "outbound deliveries still running when giving partitions up");
        }
        for shard in shards {
            if let Err(err) = self.rt.block_on(self.deps.engine.revoke(shard)) {
                tracing::warn!(error = %err, shard, "revoking a shard");
            }
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
            && !matches!(
                e.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::NoOffset)
            )
        {
            self.deps.metrics.kafka.commit_failures.inc();
            tracing::warn!(error = %e, "committing offsets before a rebalance");
        }
        tracing::info!(partitions = tpl.count(), "partitions revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Ctx>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.deps
                    .metrics
                    .kafka
                    .rebalances
                    .with_label_values(&["assign"])
                    .inc();
                for e in tpl.elements() {
                    self.assign(e.topic(), e.partition());
                }
                self.healthy.store(true, Ordering::Relaxed);
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result
            && !matches!(
                e.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::NoOffset)
            )
        {
            self.deps.metrics.kafka.commit_failures.inc();
            tracing::warn!(error = %e, "offset commit failed (retried with the next commit)");
        }
    }
}

/// Messages per consumer, in units of `max_batch`, whose changes may wait
/// for their commit at once: enough that the engines keep working through
/// a whole commit of the store (which then finds the next group of batches
/// ready), small enough to bound memory and the re-read after a crash.
const IN_FLIGHT_BATCHES: usize = 8;

struct Runner {
    formats: Vec<TopicFormat>,
    max_batch: usize,
    batch_wait: Duration,
    dlq: Option<(FutureProducer, String)>,
}

/// Messages of one poll window, per shard.
#[derive(Default)]
struct Pending {
    events: BTreeMap<u32, Vec<Event>>,
    /// Acknowledge/resolve commands; one ends its batch, so it applies
    /// after every alert read before it.
    commands: Vec<IncidentCommand>,
    offsets: BTreeMap<(usize, i32), i64>,
    consumed: Vec<u64>,
    messages: usize,
}

impl Runner {
    fn run(self, consumer: BaseConsumer<Ctx>, cancel: CancellationToken) {
        let ctx = consumer.context();
        let topics = ctx.topics.len();
        while !cancel.is_cancelled() {
            let generation = ctx.generation.load(Ordering::SeqCst);
            let mut p = Pending {
                consumed: vec![0; topics],
                ..Pending::default()
            };
            let mut deadline: Option<Instant> = None;
            while p.messages < self.max_batch && p.commands.is_empty() && !cancel.is_cancelled() {
                let wait = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()),
                    None => Duration::from_millis(100),
                };
                if deadline.is_some() && wait.is_zero() {
                    break;
                }
                match consumer.poll(wait) {
                    None => {
                        // Idle: store what became durable meanwhile and
                        // commit it now rather than at the next auto-commit
                        // (up to a second later): caught up means lag 0 for
                        // whoever watches the group, and nothing to re-read
                        // after a crash.
                        if deadline.is_none()
                            && ctx.settle(&consumer, false)
                            && let Err(e) = consumer.commit_consumer_state(CommitMode::Async)
                        {
                            tracing::debug!(error = %e, "committing offsets when idle");
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "kafka consume error");
                    }
                    Some(Ok(m)) => {
                        ctx.healthy.store(true, Ordering::Relaxed);
                        deadline.get_or_insert_with(|| Instant::now() + self.batch_wait);
                        self.take(ctx, &m, &mut p);
                    }
                }
                if ctx.generation.load(Ordering::SeqCst) != generation {
                    break;
                }
            }
            if ctx.generation.load(Ordering::SeqCst) != generation || p.messages == 0 {
                // A rebalance happened while polling: drop the unsent
                // messages; they are read again from the committed offsets.
                continue;
            }
            self.submit(&consumer, p);
        }
        // Leaving: make what was handed over durable, store and commit.
        ctx.settle(&consumer, true);
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
            && !matches!(
                e.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::NoOffset)
            )
        {
            tracing::warn!(error = %e, "final offset commit");
        }
        consumer.unsubscribe();
        tracing::info!("kafka consumer stopped");
    }

    /// Parse one message into its shard's events (or dead-letter it) and
    /// advance its partition's offset either way.
    fn take(&self, ctx: &Ctx, m: &rdkafka::message::BorrowedMessage<'_>, p: &mut Pending) {
        let Some(t) = ctx.topic_index(m.topic()) else {
            return;
        };
        let shard = shard_of(t, m.partition());
        p.messages += 1;
        p.offsets.insert((t, m.partition()), m.offset() + 1);
        let now = ctx.deps.clock.now();
        if header_format(m) == Some(b"command") {
            let parsed = serde_json::from_slice::<IncidentCommand>(m.payload().unwrap_or_default())
                .map_err(|e| NormalizeError::field("value".to_string(), None, e.to_string()));
            match parsed {
                Ok(cmd) => {
                    p.consumed[t] += 1;
                    p.commands.push(cmd);
                }
                Err(e) => self.invalid(ctx, m, &e),
            }
            return;
        }
        let parsed = match m.payload() {
            None | Some([]) => Err(NormalizeError::field(
                "value".to_string(),
                None,
                "empty message".to_string(),
            )),
            Some(body) => {
                let intake = crate::normalize::Intake {
                    now,
                    limits: ctx.deps.alert_limits,
                    bounds: Some(ctx.deps.time_bounds),
                };
                parse_message(self.formats[t], header_format(m), body, &intake)
            }
        };
        match parsed {
            Ok(batch) => {
                p.consumed[t] += 1;
                self.note_batch(ctx, m, &batch);
                ctx.deps
                    .metrics
                    .alerts_received
                    .with_label_values(&["kafka"])
                    .inc_by(
                        batch
                            .events
                            .iter()
                            .filter(|e| !matches!(e, Event::Note { .. }))
                            .count() as u64,
                    );
                p.events.entry(shard).or_default().extend(batch.events);
            }
            Err(e) => self.invalid(ctx, m, &e),
        }
    }

    /// Count, log and keep the alerts of a message refused alone (the
    /// message's other alerts go on; it is not dead-lettered, since it
    /// parsed), and those whose time was bounded.
    fn note_batch(
        &self,
        ctx: &Ctx,
        m: &rdkafka::message::BorrowedMessage<'_>,
        batch: &crate::normalize::Batch,
    ) {
        let metrics = &ctx.deps.metrics;
        if batch.clamped > 0 {
            metrics
                .alert_times_clamped
                .with_label_values(&["kafka"])
                .inc_by(batch.clamped as u64);
        }
        let Some(first) = batch.rejected.first() else {
            return;
        };
        for r in &batch.rejected {
            metrics
                .alerts_rejected
                .with_label_values(&["kafka", r.reason.as_str()])
                .inc();
        }
        let origin = format!("{}/{}@{}", m.topic(), m.partition(), m.offset());
        tracing::warn!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            rejected = batch.rejected.len(),
            field = %first.field,
            error = %first.error,
            "alerts of a kafka message rejected; the rest of it was accepted (GET /api/v1/alerts/rejected)"
        );
        ctx.deps.quarantine.record(
            ctx.deps.clock.now(),
            crate::domain::Source::Kafka,
            Some(&origin),
            &batch.rejected,
        );
    }

    /// Count, log and dead-letter a message that cannot be used.
    fn invalid(&self, ctx: &Ctx, m: &rdkafka::message::BorrowedMessage<'_>, e: &NormalizeError) {
        ctx.deps
            .metrics
            .kafka
            .invalid
            .with_label_values(&[m.topic()])
            .inc();
        tracing::warn!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            error = %e,
            "invalid kafka message skipped"
        );
        self.dead_letter(ctx, m, e);
    }

    /// Copy an invalid message to the dead-letter topic, with where it came
    /// from and why, before its offset can be stored.
    fn dead_letter(
        &self,
        ctx: &Ctx,
        m: &rdkafka::message::BorrowedMessage<'_>,
        err: &NormalizeError,
    ) {
        let Some((producer, topic)) = &self.dlq else {
            return;
        };
        let reason = err.to_string();
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "incidentd-error",
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: "incidentd-source-topic",
                value: Some(m.topic()),
            })
            .insert(Header {
                key: "incidentd-source-partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "incidentd-source-offset",
                value: Some(offset.as_str()),
            });
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .payload(m.payload().unwrap_or_default())
            .headers(headers);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        let sent = ctx.rt.block_on(producer.send(rec, Duration::from_secs(10)));
        match sent {
            Ok(_) => ctx
                .deps
                .metrics
                .kafka
                .dead_lettered
                .with_label_values(&[m.topic()])
                .inc(),
            Err((e, _)) => {
                tracing::error!(error = %e, topic, "dead-letter publish failed; the message is only logged");
            }
        }
    }

    /// Hand the batch to the engines and queue its offsets behind the commit
    /// that makes it durable.
    fn submit(&self, consumer: &BaseConsumer<Ctx>, p: Pending) {
        let ctx = consumer.context();
        let started = Instant::now();
        let (mut wait_seq, mut settle_seq) = (0, 0);
        let mut offsets = p.offsets;
        for (shard, mut events) in p.events {
            let mut waiting_since: Option<Instant> = None;
            loop {
                match ctx.rt.block_on(ctx.deps.engine.submit(shard, events)) {
                    Ok(out) => {
                        wait_seq = wait_seq.max(out.wait_seq);
                        settle_seq = settle_seq.max(out.wait_seq).max(out.open_seq);
                        if let Some(t) = waiting_since {
                            tracing::info!(waited = ?t.elapsed(), "room again; consuming");
                        }
                        break;
                    }
                    // A memory cap: the batch waits, and with it this
                    // consumer (back-pressure, nothing skipped), until
                    // alerts resolve or incidents close.
                    Err(Ok(crate::incident::task::Refused {
                        error: e @ EngineError::Full { .. },
                        events: back,
                    })) => {
                        if waiting_since.is_none() {
                            tracing::warn!(error = %e, "engine full; consumption paused until there is room");
                            waiting_since = Some(Instant::now());
                        }
                        if ctx.cancel.is_cancelled() {
                            return;
                        }
                        events = back;
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(Ok(crate::incident::task::Refused {
                        error: EngineError::NotOwned(_),
                        ..
                    })) => {
                        // Revoked under us: leave its offsets to the new owner.
                        offsets.retain(|(t, part), _| shard_of(*t, *part) != shard);
                        break;
                    }
                    Err(Ok(r)) => {
                        tracing::warn!(error = %r.error, "engine refused the batch; not acknowledged");
                        return;
                    }
                    Err(Err(e)) => {
                        tracing::warn!(error = %e, "engine unavailable; batch not acknowledged");
                        return;
                    }
                }
            }
        }
        for cmd in p.commands {
            let (id, op) = (IncidentId(cmd.incident), cmd.command);
            match ctx
                .rt
                .block_on(ctx.deps.engine.operate(id, cmd.by, op, cmd.reason))
            {
                Ok((_, seq)) => {
                    wait_seq = wait_seq.max(seq);
                    settle_seq = settle_seq.max(seq);
                    tracing::info!(incident = id.0, ?op, "forwarded command applied");
                }
                Err(PipelineError::Engine(e)) => {
                    // Already done (a redelivery, or someone was quicker),
                    // or no longer active: nothing to apply.
                    tracing::info!(incident = id.0, ?op, reason = %e, "forwarded command not applied");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "engine unavailable; batch not acknowledged");
                    return;
                }
            }
        }
        ctx.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(InFlight {
                wait_seq,
                settle_seq,
                offsets,
                consumed: p.consumed,
                messages: p.messages,
                started,
            });
        ctx.settle(consumer, false);
        loop {
            // Back-pressure: a bounded number of messages whose changes
            // are not committed yet. (Batches waiting only for the next
            // counter flush cost nothing but their offsets.)
            let (seq, n) = ctx.unconfirmed();
            if n <= IN_FLIGHT_BATCHES * self.max_batch {
                break;
            }
            if ctx
                .rt
                .block_on(ctx.deps.engine.wait_durable_unbounded(seq))
                .is_err()
            {
                return;
            }
            ctx.settle(consumer, false);
        }
    }
}

fn header_format<'a>(m: &'a rdkafka::message::BorrowedMessage<'_>) -> Option<&'a [u8]> {
    let h = m.headers()?;
    h.iter()
        .find(|h| h.key == FORMAT_HEADER)
        .and_then(|h| h.value)
}

/// Parse a message value by the topic's format, or by the header incidentd
/// itself set when it published the message.
pub fn parse_message(
    format: TopicFormat,
    header: Option<&[u8]>,
    body: &[u8],
    intake: &normalize::Intake,
) -> Result<normalize::Batch, NormalizeError> {
    match header {
        Some(b"canonical") => return normalize::parse_canonical(body, intake),
        Some(b"pagerduty") => {
            return normalize::parse_pagerduty(body, intake).map(|(events, _)| normalize::Batch {
                events,
                ..normalize::Batch::default()
            });
        }
        _ => {}
    }
    match format {
        TopicFormat::Auto => normalize::parse_any(body, intake),
        TopicFormat::Canonical => normalize::parse_canonical(body, intake),
        TopicFormat::Alertmanager => normalize::parse_alertmanager(body, intake),
    }
}

/// The action service forwards through the command topic.
impl crate::incident::actions::Forward for Forwarder {
    fn forward<'a>(
        &'a self,
        shard: u32,
        a: &'a crate::incident::actions::Action,
    ) -> crate::store::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let cmd = IncidentCommand {
                command: a.op,
                incident: a.id.0,
                by: a.actor.clone(),
                reason: a.reason.clone(),
            };
            Forwarder::forward(self, shard, &cmd)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
