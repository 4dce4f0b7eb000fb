//! The writer under load and across revocations.

use super::*;
use crate::change::ChangeRecord;
use crate::domain::{
    Alert, AlertStatus, Fingerprint, LabelSet, Problem, Source, SystemClock, TimelineEntry,
    Timestamp,
};
use crate::domain::{Incident, IncidentId, IncidentState, Priority};
use crate::normalize::Event;
use crate::store::{
    AlertQuery, AlertRecord, BoxFuture, Delivery, IncidentLog, IncidentQuery, Outbox, OutboxRow,
    Page, Reads, SqliteStore, StoreError,
};
use crate::store::{DynStore, Restore, Snapshot, StoreOp};

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

impl IncidentLog for SlowStore {
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
    fn load_state(&self, what: Restore) -> Fut<'_, Snapshot> {
        self.0.load_state(what)
    }
    fn ping(&self) -> Fut<'_, ()> {
        self.0.ping()
    }
}

impl Reads for SlowStore {
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
    fn timeline(&self, id: IncidentId, page: Page) -> Fut<'_, Vec<TimelineEntry>> {
        self.0.timeline(id, page)
    }
    fn incident_alerts(&self, id: IncidentId, page: Page) -> Fut<'_, Vec<AlertRecord>> {
        self.0.incident_alerts(id, page)
    }
    fn incidents_since_page(
        &self,
        since: Timestamp,
        after: crate::store::IncidentCursor,
        limit: u32,
    ) -> Fut<'_, Vec<Incident>> {
        self.0.incidents_since_page(since, after, limit)
    }
    fn alert_tallies(&self, cuts: [Timestamp; 3]) -> Fut<'_, Vec<crate::store::AlertTally>> {
        self.0.alert_tallies(cuts)
    }
    fn count_by_state(&self) -> Fut<'_, Vec<(IncidentState, u64)>> {
        self.0.count_by_state()
    }
    fn list_alerts(&self, q: AlertQuery) -> Fut<'_, Vec<AlertRecord>> {
        self.0.list_alerts(q)
    }
}

impl Outbox for SlowStore {
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
    fn outbound_refs_like<'a>(
        &'a self,
        d: &'a str,
        prefix: &'a str,
        shards: Option<&'a [u32]>,
        limit: u32,
    ) -> Fut<'a, Vec<(IncidentId, String)>> {
        self.0.outbound_refs_like(d, prefix, shards, limit)
    }
    fn timeline_note(&self, i: IncidentId, e: TimelineEntry) -> Fut<'_, ()> {
        self.0.timeline_note(i, e)
    }
    fn first_alert_labels(&self, i: IncidentId) -> Fut<'_, Option<crate::domain::LabelSet>> {
        self.0.first_alert_labels(i)
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
    let alerts = store.load_state(Restore::default()).await.unwrap().alerts;
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
    let snap = store.load_state(Restore::default()).await.unwrap();
    assert_eq!(
        snap.alerts.len() as u64,
        sent,
        "every submitted alert stored"
    );
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}
