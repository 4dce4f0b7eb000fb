//! Pipeline throughput on one core, over the standard ingest workload
//! (`../shared/bench/`: 4,000 Alertmanager webhook bodies of 20 alerts,
//! ~90% repeats). Every benchmark runs the whole recorded stream once per
//! iteration and reports alerts/s (`Throughput::Elements`).
//!
//! * `parse`            — JSON → canonical events only
//! * `engine`           — pre-parsed events through dedup / correlation /
//!   rules / the incident engine (`ingest` + `take_batch`), default rules
//! * `parse_engine`     — both: the pipeline on one core
//! * `engine_sqlite/*`  — engine plus `SqliteStore::apply` of every batch in
//!   a fresh temp dir, one commit per request body (the daemon's writer
//!   coalesces batches under concurrency, so this is its worst case)
//!
//! The engine is driven the way the daemon's engine task drives it: one
//! `ingest` + `take_batch` per body, `tick` once per wall-clock second and
//! `flush_touches` every 2 s (default `store.flush_interval`). Engine time is
//! the stream's event time (as in `replay`), but the tick/flush rhythm is wall
//! time in the daemon, so it is modelled as "the daemon ingesting at
//! `$INCIDENTD_BENCH_RATE` alerts/s" (default 50,000, the HTTP target): a tick
//! every RATE alerts, a flush every 2 x RATE alerts and at the end. A low rate
//! (e.g. 400, the stream's own event-time pace) makes coalescing weaker and
//! multiplies the touch rows the store has to write.
//!
//! Workload: `$INCIDENTD_BENCH_BODIES` or `/tmp/bench/bodies/amwebhook.jsonl`;
//! generated with `gen_workload.py -n 4000 -g 20` when missing.
//!
//! Run: `cargo bench --bench pipeline` (a few minutes).

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use incidentd::domain::Timestamp;
use incidentd::incident::{Engine, EngineConfig};
use incidentd::normalize::{Event, Intake, TimeBounds, parse_alertmanager};
use incidentd::rules::RuleSet;
use incidentd::store::prelude::*;
use incidentd::store::{SqliteOptions, SqliteStore, Synchronous};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Assumed ingest rate in alerts/s: sets how many alerts pass between ticks.
fn assumed_rate() -> u64 {
    std::env::var("INCIDENTD_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(50_000)
}

struct Workload {
    bodies: Vec<Vec<u8>>,
    /// Parsed events of each body.
    events: Vec<Vec<Event>>,
    /// Engine time for each body: the latest event time so far (as `replay`).
    nows: Vec<Timestamp>,
    alerts: u64,
}

fn workload_path() -> PathBuf {
    if let Some(p) = std::env::var_os("INCIDENTD_BENCH_BODIES") {
        return PathBuf::from(p);
    }
    let path = PathBuf::from("/tmp/bench/bodies/amwebhook.jsonl");
    if !path.exists() {
        let generator =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/gen_workload.py");
        let status = std::process::Command::new("python3")
            .arg(&generator)
            .args(["-n", "4000", "-g", "20", "-o", "/tmp/bench/bodies"])
            .status()
            .expect("running python3 gen_workload.py");
        assert!(status.success(), "gen_workload.py failed: {status}");
    }
    path
}

fn load_workload() -> Workload {
    let path = workload_path();
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let bodies: Vec<Vec<u8>> = text
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let mut clock = Timestamp::MIN;
    let mut events = Vec::with_capacity(bodies.len());
    let mut nows = Vec::with_capacity(bodies.len());
    let mut alerts = 0u64;
    for (i, body) in bodies.iter().enumerate() {
        let evs = parse_alertmanager(body, &Intake::offline(Timestamp::now()))
            .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
            .events;
        clock = clock.max(body_time(&evs));
        alerts += evs.len() as u64;
        events.push(evs);
        nows.push(clock);
    }
    Workload {
        bodies,
        events,
        nows,
        alerts,
    }
}

fn body_time(events: &[Event]) -> Timestamp {
    events
        .iter()
        .map(|e| match e {
            Event::Alert(a) => a.event_time(),
            Event::Acknowledge { at, .. } | Event::Note { at, .. } => *at,
        })
        .max()
        .unwrap_or(Timestamp::MIN)
}

fn rules() -> Arc<RuleSet> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    Arc::new(RuleSet::load_dir(&dir).unwrap_or_else(|e| panic!("loading rules: {e:?}")))
}

/// The engine task's rhythm: ticks and flushes every so many alerts.
struct Driver {
    engine: Engine,
    tick_every: u64,
    since_tick: u64,
    ticks: u64,
    /// At the end, run the clock an hour on so that every announcement
    /// (and auto-resolve) comes due inside the measurement.
    drain: bool,
    last: Timestamp,
}

impl Driver {
    fn new(rules: &Arc<RuleSet>) -> Driver {
        Driver::with(EngineConfig::default(), rules)
    }

    fn with(cfg: EngineConfig, rules: &Arc<RuleSet>) -> Driver {
        Driver {
            engine: Engine::new(cfg, rules.clone()),
            tick_every: assumed_rate(),
            since_tick: 0,
            ticks: 0,
            drain: false,
            last: Timestamp::MIN,
        }
    }

    /// One request body; returns the ops to commit, if any.
    fn step(
        &mut self,
        events: Vec<Event>,
        now: Timestamp,
    ) -> Option<Vec<incidentd::store::StoreOp>> {
        if self.since_tick >= self.tick_every {
            self.since_tick = 0;
            self.ticks += 1;
            self.engine.tick(now);
            if self.ticks.is_multiple_of(2) {
                self.engine.flush_touches();
            }
        }
        self.since_tick += events.len() as u64;
        self.last = now;
        black_box(self.engine.ingest(events, now));
        self.engine.take_batch().map(|(_, ops)| ops)
    }

    fn finish(&mut self) -> Option<Vec<incidentd::store::StoreOp>> {
        if self.drain {
            self.engine
                .tick(self.last.saturating_add(Duration::from_secs(3600)));
        }
        self.engine.flush_touches();
        self.engine.take_batch().map(|(_, ops)| ops)
    }
}

/// `iters` runs of the decoded workload through fresh drivers, timed
/// without the decoding and the drop.
fn engine_runs(w: &Workload, iters: u64, driver: impl Fn() -> Driver) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = w.events.clone();
        let mut d = driver();
        let started = Instant::now();
        for (evs, &now) in input.into_iter().zip(&w.nows) {
            black_box(d.step(evs, now));
        }
        black_box(d.finish());
        total += started.elapsed();
        drop(d);
    }
    total
}

fn benches(c: &mut Criterion) {
    let w = load_workload();
    let rules = rules();
    eprintln!(
        "workload: {} bodies, {} alerts, {:.1} MB, {} rules, tick every {} alerts",
        w.bodies.len(),
        w.alerts,
        w.bodies.iter().map(Vec::len).sum::<usize>() as f64 / 1e6,
        rules.len(),
        assumed_rate()
    );

    if std::env::var_os("INCIDENTD_BENCH_OPS").is_some() {
        print_op_counts(&w, &rules);
    }

    let mut g = c.benchmark_group("pipeline");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(w.alerts));

    // As live ingest decodes: limits checked, event times bounded.
    let live = Intake {
        bounds: Some(TimeBounds::default()),
        ..Intake::offline(w.nows[0])
    };
    g.bench_function("parse", |b| {
        b.iter(|| {
            for body in &w.bodies {
                black_box(parse_alertmanager(black_box(body), &live).expect("valid body"));
            }
        });
    });

    g.bench_function("engine", |b| {
        b.iter_custom(|iters| engine_runs(&w, iters, || Driver::new(&rules)));
    });

    // The same with one destination: every change also becomes outbox
    // rows, new incidents after their settle delay (the delay's queue and
    // announcement decisions) or at once.
    for (name, secs) in [("settle_0s", 0), ("settle_30s", 30)] {
        use incidentd::domain::outbox::{Destination, Settle};
        let cfg = EngineConfig {
            outbound: Arc::from([Destination {
                settle: Settle::uniform(Duration::from_secs(secs)),
                ..Destination::all("pd")
            }]),
            ..EngineConfig::default()
        };
        g.bench_function(format!("engine_outbox/{name}"), |b| {
            b.iter_custom(|iters| {
                engine_runs(&w, iters, || Driver {
                    drain: true,
                    ..Driver::with(cfg.clone(), &rules)
                })
            });
        });
    }

    g.bench_function("parse_engine", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut d = Driver::new(&rules);
                let mut clock = Timestamp::MIN;
                let started = Instant::now();
                for body in &w.bodies {
                    let provisional = if clock == Timestamp::MIN {
                        w.nows[0]
                    } else {
                        clock
                    };
                    let evs = parse_alertmanager(body, &Intake::offline(provisional))
                        .expect("valid body")
                        .events;
                    clock = clock.max(body_time(&evs));
                    black_box(d.step(evs, clock));
                }
                black_box(d.finish());
                total += started.elapsed();
                drop(d);
            }
            total
        });
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // With the journal (the default) and without it (batches committed to
    // the tables before `apply` returns); timed until the tables hold
    // everything (`settle`), so that both do the same work.
    for (name, sync, journal) in [
        ("full", Synchronous::Full, true),
        ("normal", Synchronous::Normal, true),
        ("full_tables_only", Synchronous::Full, false),
    ] {
        g.bench_function(format!("engine_sqlite/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let store = rt
                        .block_on(SqliteStore::open_dir(
                            dir.path(),
                            SqliteOptions {
                                synchronous: sync,
                                journal,
                                ..SqliteOptions::default()
                            },
                        ))
                        .expect("open store");
                    let input = w.events.clone();
                    let mut d = Driver::new(&rules);
                    let started = Instant::now();
                    rt.block_on(async {
                        for (evs, &now) in input.into_iter().zip(&w.nows) {
                            if let Some(ops) = d.step(evs, now) {
                                store.apply(&ops).await.expect("apply");
                            }
                        }
                        if let Some(ops) = d.finish() {
                            store.apply(&ops).await.expect("apply");
                        }
                        store.settle().await.expect("settle");
                    });
                    total += started.elapsed();
                    rt.block_on(store.close());
                    drop(d);
                }
                total
            });
        });
    }
    g.finish();
}

/// What the store has to do for the stream: statements and commits by kind.
fn print_op_counts(w: &Workload, rules: &Arc<RuleSet>) {
    use incidentd::store::StoreOp;
    use std::collections::BTreeMap;
    let mut d = Driver::new(rules);
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut batches = 0u64;
    let mut count = |ops: Vec<StoreOp>| {
        batches += 1;
        for op in ops {
            let (k, n) = match op {
                StoreOp::UpsertIncident(_) => ("upsert_incident", 1),
                StoreOp::InsertAlert(_) => ("insert_alert", 1),
                StoreOp::UpdateAlert(_) => ("update_alert", 1),
                StoreOp::LinkAlert { .. } => ("link_alert", 1),
                StoreOp::Timeline { .. } => ("timeline", 1),
                StoreOp::TouchAlerts(t) => ("touch_alert (rows)", t.len() as u64),
                StoreOp::MoveAlerts { .. } => ("move_alerts", 1),
                StoreOp::UpsertProblem(_) => ("upsert_problem", 1),
                StoreOp::SetProblem { .. } => ("set_problem", 1),
                StoreOp::UpsertChange(_) => ("upsert_change", 1),
                StoreOp::Outbox(_) => ("outbox", 1),
            };
            *kinds.entry(k).or_default() += n;
        }
    };
    for (evs, &now) in w.events.clone().into_iter().zip(&w.nows) {
        if let Some(ops) = d.step(evs, now) {
            count(ops);
        }
    }
    if let Some(ops) = d.finish() {
        count(ops);
    }
    let total: u64 = kinds.values().sum();
    eprintln!(
        "store work for {} alerts: {batches} batches, {total} row statements: {kinds:?}",
        w.alerts
    );
    eprintln!(
        "engine: {} active alerts, {} tracked incidents, stats {:?}",
        d.engine.active_alerts(),
        d.engine.tracked_incidents(),
        d.engine.stats
    );
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
