//! Cost of one refresh of the ITSM KPIs (`kpi.refresh`, every 60 s by
//! default) on a large record: 500 services, 10,000 CIs, 200,000 alerts
//! started over the last week (5 % suppressed), 20,000 incidents opened over
//! the last 30 days (acknowledged and resolved), 1,000 changes. A refresh
//! reads the change calendar, the incidents of the month and the alerts of
//! the week grouped in the store, computes every figure and exports them.
//!
//! Setup (not timed): a SQLite store as the daemon opens it (journal,
//! `synchronous = full`) in a temp dir, filled through the store's writes.
//!
//! Run: `cargo bench --bench kpi`.

use criterion::{Criterion, criterion_group, criterion_main};
use incidentd::change::{ChangeRecord, ChangeState};
use incidentd::cmdb::SharedCmdb;
use incidentd::domain::{
    AlertStatus, Fingerprint, Incident, IncidentId, IncidentState, LabelSet, Level, Links,
    MaybeTime, Priority, Source, ThinVec, Timestamp,
};
use incidentd::kpi::KpiConfig;
use incidentd::kpi::export::KpiExporter;
use incidentd::store::{AlertRecord, DynStore, StoreOp};
use incidentd::store::{SqliteOptions, SqliteStore};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

const SERVICES: usize = 500;
const CIS: usize = 10_000;
const ALERTS: usize = 200_000;
const INCIDENTS: usize = 20_000;
const CHANGES: usize = 1_000;
const MIN: i64 = 60_000;
const DAY: i64 = 24 * 60 * MIN;

fn cmdb() -> SharedCmdb {
    let mut y = String::from("version: 1\nservices:\n");
    for s in 0..SERVICES {
        let _ = writeln!(
            y,
            "  - {{ id: svc-{s:03}, tier: 1, sla: {{ response: {{ P1: 15m }}, resolution: {{ P1: 4h }} }} }}"
        );
    }
    y.push_str("cis:\n");
    for i in 0..CIS {
        let _ = writeln!(
            y,
            "  - {{ id: ci-{i:05}, class: app, service: svc-{:03} }}",
            i % SERVICES
        );
    }
    let cmdb = incidentd::cmdb::parse_yaml("bench", &y).expect("valid CMDB");
    Arc::new(std::sync::RwLock::new(Arc::new(cmdb)))
}

fn incident(i: usize, now: i64) -> Incident {
    let opened = Timestamp(now - 30 * DAY + (i as i64) * (30 * DAY / INCIDENTS as i64));
    let ci = format!("ci-{:05}", i % CIS);
    Incident {
        id: IncidentId(i as i64 + 1),
        key: format!("Down{i}|ci:{ci}").into(),
        state: IncidentState::Resolved,
        priority: Priority::ALL[i % 3],
        impact: Level::MEDIUM,
        urgency: Level::MEDIUM,
        title: format!("Down{i} on {ci}").into(),
        root_ci: Some(ci.into()),
        root_inferred: false,
        cis: ThinVec::new(),
        impacted_services: [format!("svc-{:03}", (i % CIS) % SERVICES)]
            .into_iter()
            .collect(),
        impact_detail: ThinVec::new(),
        assignment_group: None,
        alert_fingerprints: ThinVec::new(),
        alert_count: 10,
        opened_at: opened,
        acknowledged_at: Some(Timestamp(opened.0 + 10 * MIN)),
        acknowledged_by: None,
        resolved_at: Some(Timestamp(opened.0 + 60 * MIN)),
        updated_at: opened,
        reopen_count: 0,
        flapping: false,
        rules: ThinVec::new(),
        links: Links::default(),
        signature: None,
        shard: 0,
        sla_marks: ThinVec::new(),
        holds: ThinVec::new(),
        auto_resolve_at: MaybeTime::NONE,
        unannounced: None,
    }
}

fn alert(n: usize, now: i64) -> AlertRecord {
    let ci = format!("ci-{:05}", n % CIS);
    let name = format!("A{}", n % 50);
    let start = Timestamp(now - 7 * DAY + (n as i64) * (7 * DAY / ALERTS as i64));
    let suppressed = n.is_multiple_of(20);
    AlertRecord {
        fingerprint: Fingerprint(n as u64 + 1),
        status: AlertStatus::Resolved,
        labels: [
            ("alertname".to_string(), name.clone()),
            ("ci".to_string(), ci.clone()),
        ]
        .into_iter()
        .collect(),
        annotations: LabelSet::new(),
        starts_at: start,
        ends_at: Some(Timestamp(start.0 + 30 * MIN)),
        source: Source::Alertmanager,
        generator_url: String::new(),
        incident: (!suppressed).then(|| IncidentId((n % INCIDENTS) as i64 + 1)),
        key: format!("{name}|ci:{ci}"),
        suppressed: suppressed.then(|| ("in-change".to_string(), "planned".to_string())),
        change: None,
        flapping: false,
        first_seen: start,
        last_seen: start,
        deliveries: 3,
        shard: 0,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Timestamp::now().0;
    let (store, cmdb) = rt.block_on(async {
        let store: DynStore = Arc::new(
            SqliteStore::open_dir(dir.path(), SqliteOptions::default())
                .await
                .expect("store"),
        );
        let incidents: Vec<StoreOp> = (0..INCIDENTS)
            .map(|i| StoreOp::UpsertIncident(Box::new(incident(i, now))))
            .collect();
        for part in incidents.chunks(2_000) {
            store.apply(part).await.expect("incidents");
        }
        let alerts: Vec<StoreOp> = (0..ALERTS)
            .map(|n| StoreOp::InsertAlert(Box::new(alert(n, now))))
            .collect();
        for part in alerts.chunks(5_000) {
            store.apply(part).await.expect("alerts");
        }
        let changes: Vec<ChangeRecord> = (0..CHANGES)
            .map(|i| {
                let start = Timestamp(now - 30 * DAY + (i as i64) * (30 * DAY / CHANGES as i64));
                ChangeRecord {
                    id: format!("CHG{i:05}"),
                    ci: format!("ci-{:05}", (i * 7) % CIS),
                    state: ChangeState::Approved,
                    start,
                    end: Timestamp(start.0 + 60 * MIN),
                    summary: String::new(),
                }
            })
            .collect();
        store.upsert_changes(&changes, 500).await.expect("changes");
        (store, cmdb())
    });
    let metrics = incidentd::telemetry::Metrics::new();
    let exporter = KpiExporter::new(metrics.kpi.clone());
    let cfg = KpiConfig::default();
    let mut g = c.benchmark_group("kpi");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("refresh_200k_alerts_20k_incidents", |b| {
        b.iter(|| {
            rt.block_on(exporter.refresh(&store, &cmdb, &cfg, &[], Timestamp(now)))
                .expect("refresh");
        });
    });
    // Its parts: the week of alerts grouped in the store, the month of
    // incidents read and decoded.
    let cuts = incidentd::kpi::band_starts(Timestamp(now));
    g.bench_function("alert_tallies_200k", |b| {
        b.iter(|| rt.block_on(store.alert_tallies(cuts)).expect("tallies"));
    });
    g.bench_function("incidents_of_the_month_20k", |b| {
        b.iter(|| {
            rt.block_on(store.slo_incidents(Timestamp(now - 31 * DAY), Priority::ALL[4]))
                .expect("incidents")
        });
    });
    g.finish();
    let book = exporter.book();
    eprintln!(
        "kpi: overall 7d noise {:?}, 30d incidents {}",
        book.overall
            .noise
            .get("7d")
            .map(|n| (n.alerts, n.suppressed, n.correlated, n.incidents)),
        book.overall.incidents.get("30d").map_or(0, |f| f.opened)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
