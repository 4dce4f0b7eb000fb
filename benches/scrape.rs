//! Cost of one `GET /metrics` of a daemon with a large catalog: 500
//! business services with an SLO each and 10,000 open P1 incidents spread
//! over them (20 each, one CI per incident; issue 5: under 50 ms). Measured through the real router, so it
//! includes the SLO figures computed at the scrape (8 burn-rate windows per
//! SLO), the `incidentd_incidents_open` series (500 services x 5
//! priorities x 2 states) and the text encoding.
//!
//! Setup (not timed): a daemon in-process on a temp dir (SQLite), the 10k
//! incidents posted through `POST /api/v1/alerts`, then a wait until the
//! engine's gauges and the SLO book show them all.
//!
//! Run: `cargo bench --bench scrape`.

#[path = "support/mod.rs"]
mod support;

use axum::http::StatusCode;
use criterion::{Criterion, criterion_group, criterion_main};
use incidentd::app::Running;
use std::fmt::Write as _;
use std::time::Duration;

const SERVICES: usize = 500;
const INCIDENTS: usize = 10_000;

fn cmdb_yaml() -> String {
    let mut y = String::from("version: 1\nservices:\n");
    for s in 0..SERVICES {
        let _ = writeln!(
            y,
            "  - id: svc-{s:03}\n    tier: 1\n    sla:\n      response: {{ P1: 15m, P2: 30m }}\n      resolution: {{ P1: 4h, P2: 8h }}\n    slo:\n      - {{ name: availability, objective: 99.9, window: 30d }}"
        );
    }
    y.push_str("cis:\n");
    // One CI per incident (alerts on one CI share its incident).
    for i in 0..INCIDENTS {
        let _ = writeln!(
            y,
            "  - {{ id: ci-{i:05}, class: app, service: svc-{:03} }}",
            i % SERVICES
        );
    }
    y
}

async fn setup(dir: &std::path::Path) -> Running {
    let r = support::start(dir, &cmdb_yaml(), |cfg| {
        cfg.slo.refresh = Duration::from_millis(500);
        cfg.queue_capacity = 100_000;
    })
    .await;
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    let starts_at = start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for chunk in (0..INCIDENTS).collect::<Vec<_>>().chunks(1000) {
        let alerts: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                serde_json::json!({
                    "labels": {"alertname": format!("Down{i}"), "ci": format!("ci-{i:05}"), "severity": "critical"},
                    "status": "firing",
                    "startsAt": starts_at,
                })
            })
            .collect();
        support::post_alerts(&r, alerts).await;
    }
    // Wait until the gauges (engine tick, 1 s) and the SLO book (500 ms)
    // have caught up with every incident.
    let mut seen = (0, 0);
    for _ in 0..200 {
        let (_, text) = support::request(&r, "GET", "/metrics", String::new()).await;
        let text = String::from_utf8(text).expect("utf-8");
        let open: i64 = text
            .lines()
            .filter(|l| l.starts_with("incidentd_incidents_active{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum();
        let slo_down = text
            .lines()
            .filter(|l| l.starts_with("incidentd_slo_burn_rate{") && l.contains("window=\"5m\""))
            .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
            .count();
        if open == INCIDENTS as i64 && slo_down == SERVICES {
            return r;
        }
        seen = (open, slo_down);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the daemon did not show {INCIDENTS} incidents on {SERVICES} services: last saw {} active incidents, {} services down",
        seen.0, seen.1
    );
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rt.block_on(setup(dir.path()));
    let (_, body) = rt.block_on(support::request(&r, "GET", "/metrics", String::new()));
    let lines = body.iter().filter(|b| **b == b'\n').count();
    eprintln!(
        "scrape: {} bytes, {lines} lines, {SERVICES} services, {INCIDENTS} open incidents",
        body.len()
    );
    let mut g = c.benchmark_group("scrape");
    g.sample_size(30);
    g.bench_function("metrics_500_services_10k_incidents", |b| {
        b.iter(|| {
            let (s, body) = rt.block_on(support::request(&r, "GET", "/metrics", String::new()));
            assert_eq!(s, StatusCode::OK);
            std::hint::black_box(body.len())
        })
    });
    g.finish();
    rt.block_on(r.shutdown());
}

criterion_group!(scrape, benches);
criterion_main!(scrape);
