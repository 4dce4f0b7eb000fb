//! Live heap per active alert in the incident engine, by allocation size.
//!
//!   cargo run --release --manifest-path tools/engine-memory/Cargo.toml [ALERTS]
//!
//! Feeds ALERTS (default 100,000) distinct firing alerts of the shape
//! `scripts/rss_per_alert.py` sends (9 labels, 3 annotations, every alert
//! its own incident: the worst shape) through the engine with the
//! repository's rules, dropping the store operations, and prints the heap
//! the engine keeps per alert: bytes as requested and as mimalloc's size
//! classes round them, the process's RSS growth (mimalloc underneath, as
//! in the daemon), then the allocation sizes that hold most of it. Unlike
//! the daemon's RSS the first two are exact and repeatable, so they tell
//! which structure a change to memory per alert has to shrink
//! (BENCHMARKS.md entry 20); the daemon adds the store, the HTTP side and
//! their allocations on top.

use incidentd::domain::Timestamp;
use incidentd::incident::{Engine, EngineConfig};
use incidentd::normalize::{Intake, parse_alertmanager};
use incidentd::rules::RuleSet;
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Live allocations per mimalloc size class (index from [`class`]).
const CLASSES: usize = 128;
static COUNT: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];
static REQUESTED: AtomicI64 = AtomicI64::new(0);

/// mimalloc's small size classes: exact words up to 64 bytes, then four
/// per power of two (80, 96, 112, 128, 160, …). Returns (index, size).
fn class(size: usize) -> (usize, usize) {
    let size = size.max(8);
    if size <= 64 {
        let s = size.div_ceil(8) * 8;
        return (s / 8 - 1, s);
    }
    let mut idx = 8;
    let mut p = 64;
    loop {
        for q in 1..=4 {
            let s = p + p / 4 * q;
            if size <= s {
                return (idx.min(CLASSES - 1), s);
            }
            idx += 1;
        }
        p *= 2;
    }
}

struct Counting;

// SAFETY: every call is forwarded to mimalloc (the daemon's allocator)
// unchanged; the counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size(), 1);
        // SAFETY: forwarded with the caller's layout.
        unsafe { MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(l.size(), -1);
        // SAFETY: `p` came from mimalloc with this layout.
        unsafe { MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(l.size(), -1);
        note(new, 1);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { MiMalloc.realloc(p, l, new) }
    }
}

fn note(size: usize, sign: i64) {
    COUNT[class(size).0].fetch_add(sign, Ordering::Relaxed);
    REQUESTED.fetch_add(sign * size as i64, Ordering::Relaxed);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Resident set size of this process, in bytes.
fn rss() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map_or(0, |k| k * 1024)
}

fn snapshot() -> (i64, Vec<i64>) {
    (
        REQUESTED.load(Ordering::Relaxed),
        COUNT.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
    )
}

fn body(r: usize, now: &str) -> String {
    let names = [
        "HostDown",
        "DiskFull",
        "HighCPU",
        "HighMemory",
        "ServiceDown",
    ];
    let alerts: Vec<String> = (0..20)
        .map(|k| {
            let i = r * 20 + k;
            let (host, name) = (i / 5, names[i % 5]);
            format!(
                r#"{{"status":"firing","labels":{{"alertname":"{name}","instance":"host-{host}.prod.example.com:9100","job":"node","severity":"critical","env":"prod","service":"svc-{}","team":"sre","region":"eu-west-1","cluster":"prod-1"}},"annotations":{{"summary":"{name} on host-{host}","description":"The host has been failing for more than 5 minutes; see the runbook for the usual causes and what to check first.","runbook_url":"https://runbooks.example.com/{name}"}},"startsAt":"{now}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=up","fingerprint":"{:016x}"}}"#,
                host % 40,
                (i as u64).wrapping_mul(2_654_435_761)
            )
        })
        .collect();
    format!(
        r#"{{"version":"4","status":"firing","receiver":"incidentd","groupKey":"{{}}:{{}}","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://am:9093","alerts":[{}]}}"#,
        alerts.join(",")
    )
}

fn main() {
    let alerts: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let rules = Arc::new(RuleSet::load_dir(&dir).unwrap_or_else(|e| panic!("rules: {e:?}")));
    let now = Timestamp::now();
    let stamp = chrono::DateTime::from_timestamp_millis(now.0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut engine = Engine::new(EngineConfig::default(), rules);
    let before = snapshot();
    let rss_before = rss();
    for r in 0..alerts.div_ceil(20) {
        let b = body(r, &stamp);
        let events = parse_alertmanager(b.as_bytes(), &Intake::offline(now))
            .unwrap_or_else(|e| panic!("body {r}: {e}"))
            .events;
        engine.ingest(events, now);
        drop(engine.take_batch());
    }
    engine.flush_touches();
    drop(engine.take_batch());
    let after = snapshot();
    let rss_after = rss();
    let n = engine.active_alerts().max(1) as f64;
    let mut sizes = [0usize; CLASSES];
    for s in (8..1 << 22).step_by(8) {
        let (i, c) = class(s);
        sizes[i] = sizes[i].max(c);
    }
    let mut rows: Vec<(usize, f64)> = Vec::new();
    let mut classed = 0.0;
    for (i, (a, b)) in before.1.iter().zip(&after.1).enumerate() {
        let per = (b - a) as f64 / n;
        let size = sizes[i];
        classed += per * size as f64;
        if per.abs() >= 0.01 {
            rows.push((size, per));
        }
    }
    println!(
        "active alerts {}, incidents {}: {:.0} B requested, {:.0} B in size classes, RSS {:.0} B per alert",
        engine.active_alerts(),
        engine.tracked_incidents(),
        (after.0 - before.0) as f64 / n,
        classed,
        (rss_after - rss_before) as f64 / n
    );
    rows.sort_by(|a, b| (b.0 as f64 * b.1).total_cmp(&(a.0 as f64 * a.1)));
    for (size, per) in rows.iter().take(16) {
        println!(
            "  {size:>7} B x {per:>6.2} per alert = {:>6.0} B",
            *size as f64 * per
        );
    }
}
