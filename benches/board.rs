//! Server time of the web board (issue 18: 1,000 active incidents in under
//! 100 ms and 300 KB): `GET /` through the real router, so it includes
//! reading the active incidents from the store, their SLA timers and the
//! HTML; and one incident page (topology, alerts, timeline).
//!
//! Setup (not timed): a daemon in-process on a temp dir (SQLite) with 100
//! services of 10 CIs each, one incident per CI (alert names and
//! summaries of realistic length), posted through `POST /api/v1/alerts`.
//!
//! Run: `cargo bench --bench board`.

#[path = "support/mod.rs"]
mod support;

use axum::http::StatusCode;
use criterion::{Criterion, criterion_group, criterion_main};
use incidentd::app::Running;
use std::fmt::Write as _;

const SERVICES: usize = 100;
const INCIDENTS: usize = 1_000;

fn cmdb_yaml() -> String {
    let mut y = String::from("version: 1\nservices:\n");
    for s in 0..SERVICES {
        let _ = writeln!(
            y,
            "  - id: business-service-{s:03}\n    tier: {}\n    owner: team-{s:03}\n    sla:\n      response: {{ P1: 15m, P2: 30m, P3: 4h }}\n      resolution: {{ P1: 4h, P2: 8h, P3: 3d }}",
            s % 3 + 1
        );
    }
    y.push_str("cis:\n");
    for i in 0..INCIDENTS {
        let _ = writeln!(
            y,
            "  - {{ id: app-{i:04}.prod.example.com, class: application, service: business-service-{:03} }}",
            i % SERVICES
        );
    }
    y
}

async fn setup(dir: &std::path::Path) -> Running {
    let r = support::start(dir, &cmdb_yaml(), |cfg| {
        cfg.limits.alert.max_alerts = INCIDENTS
    })
    .await;
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    let starts_at = start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let alerts: Vec<serde_json::Value> = (0..INCIDENTS)
        .map(|i| {
            let severity = ["critical", "warning", "info"][i % 3];
            serde_json::json!({
                "labels": {"alertname": format!("HttpErrorRateHigh{i}"), "ci": format!("app-{i:04}.prod.example.com"),
                    "severity": severity},
                "annotations": {"summary": "5xx ratio above 5 % for 10 minutes on the public API"},
                "status": "firing",
                "startsAt": starts_at,
            })
        })
        .collect();
    support::post_alerts(&r, alerts).await;
    r
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rt.block_on(setup(dir.path()));
    let (s, body) = rt.block_on(support::request(&r, "GET", "/", String::new()));
    assert_eq!(s, StatusCode::OK);
    let rows = String::from_utf8_lossy(&body)
        .matches("<tr class=P")
        .count();
    assert_eq!(rows, INCIDENTS, "every incident on the board");
    eprintln!("board: {} bytes, {rows} incidents", body.len());
    let (_, page) = rt.block_on(support::request(&r, "GET", "/incidents/500", String::new()));
    eprintln!("incident page: {} bytes", page.len());
    let mut g = c.benchmark_group("board");
    g.sample_size(30);
    g.bench_function("board_1000_active_incidents", |b| {
        b.iter(|| {
            let (s, body) = rt.block_on(support::request(&r, "GET", "/", String::new()));
            assert_eq!(s, StatusCode::OK);
            std::hint::black_box(body.len())
        })
    });
    g.bench_function("incident_page", |b| {
        b.iter(|| {
            let (s, body) =
                rt.block_on(support::request(&r, "GET", "/incidents/500", String::new()));
            assert_eq!(s, StatusCode::OK);
            std::hint::black_box(body.len())
        })
    });
    g.finish();
    rt.block_on(r.shutdown());
}

criterion_group!(board, benches);
criterion_main!(board);
