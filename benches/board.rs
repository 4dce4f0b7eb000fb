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

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use incidentd::app::{self, Running};
use incidentd::config::{self, Overrides, RawConfig};
use incidentd::domain::SystemClock;
use std::fmt::Write as _;
use std::sync::Arc;
use tower::ServiceExt;

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

async fn request(r: &Running, method: &str, uri: &str, body: String) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = r.router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes.to_vec())
}

async fn setup(dir: &std::path::Path) -> Running {
    let cmdb = dir.join("cmdb.yaml");
    std::fs::write(&cmdb, cmdb_yaml()).expect("write cmdb");
    let mut cfg = config::validate(
        RawConfig::default(),
        &Overrides {
            data_dir: Some(dir.join("data")),
            rules_dir: Some(dir.join("no-rules")),
            cmdb: Some(cmdb),
            ..Overrides::default()
        },
    )
    .expect("config");
    cfg.limits.alert.max_alerts = INCIDENTS;
    let r = app::start(&cfg, Arc::new(SystemClock))
        .await
        .expect("daemon starts");
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
    let (s, body) = request(
        &r,
        "POST",
        "/api/v1/alerts",
        serde_json::Value::Array(alerts).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
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
    let (s, body) = rt.block_on(request(&r, "GET", "/", String::new()));
    assert_eq!(s, StatusCode::OK);
    let rows = String::from_utf8_lossy(&body)
        .matches("<tr class=P")
        .count();
    assert_eq!(rows, INCIDENTS, "every incident on the board");
    eprintln!("board: {} bytes, {rows} incidents", body.len());
    let (_, page) = rt.block_on(request(&r, "GET", "/incidents/500", String::new()));
    eprintln!("incident page: {} bytes", page.len());
    let mut g = c.benchmark_group("board");
    g.sample_size(30);
    g.bench_function("board_1000_active_incidents", |b| {
        b.iter(|| {
            let (s, body) = rt.block_on(request(&r, "GET", "/", String::new()));
            assert_eq!(s, StatusCode::OK);
            std::hint::black_box(body.len())
        })
    });
    g.bench_function("incident_page", |b| {
        b.iter(|| {
            let (s, body) = rt.block_on(request(&r, "GET", "/incidents/500", String::new()));
            assert_eq!(s, StatusCode::OK);
            std::hint::black_box(body.len())
        })
    });
    g.finish();
    rt.block_on(r.shutdown());
}

criterion_group!(board, benches);
criterion_main!(board);
