//! SLO metrics as a dashboard reads them from `/metrics`: computed from the
//! incident record (so they survive a restart), per service and SLO of the
//! catalog, at 0 downtime from the start; and the shipped Grafana
//! dashboard names only metrics that incidentd exports.

mod support;
use support::{start, start_on};

use axum::http::StatusCode;
use incidentd::app::Running;
use incidentd::config::{self, Config, Overrides, RawConfig};
use incidentd::domain::{ManualClock, Timestamp};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const CMDB: &str = r#"
version: 1
services:
  - id: shop
    name: Shop
    tier: 1
    sla:
      response: { P1: 15m }
      resolution: { P1: 4h }
    slo:
      - { name: availability, objective: 99.9, window: 30d }
  - id: blog
    tier: 1
    slo:
      - { name: availability, objective: 99.5, window: 7d }
  - id: reports
    tier: 3
cis:
  - { id: shop-db, class: database, service: shop }
  - { id: shop-web, class: app, service: shop, depends_on: [shop-db] }
  - { id: shop-cache, class: cache, service: shop }
  - { id: blog-web, class: app, service: blog }
"#;

fn config(dir: &Path) -> Config {
    let cmdb = dir.join("cmdb.yaml");
    std::fs::write(&cmdb, CMDB).expect("write cmdb");
    let mut c = config::validate(
        RawConfig::default(),
        &Overrides {
            data_dir: Some(dir.join("data")),
            rules_dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")),
            cmdb: Some(cmdb),
            ..Overrides::default()
        },
    )
    .expect("config is valid");
    c.engine.auto_resolve_hold = Duration::ZERO;
    c.slo.refresh = Duration::from_millis(100);
    c
}

/// A clock the test moves by hand, set to the real time now.
fn manual_clock() -> (Arc<ManualClock>, chrono::DateTime<chrono::Utc>) {
    let now = Timestamp::now();
    let at = chrono::DateTime::from_timestamp_millis(now.0).expect("a time");
    (Arc::new(ManualClock::new(now)), at)
}

async fn call(r: &Running, method: &str, uri: &str, body: String) -> (StatusCode, Vec<u8>) {
    support::oneshot(&r.router, method, uri, &[], body.into_bytes()).await
}

async fn scrape(r: &Running) -> String {
    let (s, body) = call(r, "GET", "/metrics", String::new()).await;
    assert_eq!(s, StatusCode::OK);
    String::from_utf8(body).expect("utf-8 metrics")
}

/// The value of the series written exactly `series` (labels sorted by
/// name, as the exposition format prints them).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse::<f64>().expect("a number"))
    })
}

fn shop(metric: &str) -> String {
    format!("{metric}{{service=\"shop\",slo=\"availability\"}}")
}

fn burn(service: &str, window: &str) -> String {
    format!(
        "incidentd_slo_burn_rate{{service=\"{service}\",slo=\"availability\",window=\"{window}\"}}"
    )
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn post_alerts(r: &Running, alerts: Value) {
    let (s, body) = call(r, "POST", "/api/v1/alerts", alerts.to_string()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

/// Scrapes until `pred` holds (the SLO book is re-read every 100 ms).
async fn scrape_until(r: &Running, what: &str, pred: impl Fn(&str) -> bool) -> String {
    for _ in 0..100 {
        let text = scrape(r).await;
        if pred(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{what}: not seen within 5 s; last scrape:\n{}",
        scrape(r).await
    );
}

#[tokio::test]
async fn every_catalog_slo_is_exported_from_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(dir.path())).await;
    let text = scrape(&r).await;
    assert_eq!(
        value(&text, &shop("incidentd_slo_objective_ratio")),
        Some(0.999)
    );
    assert_eq!(
        value(&text, &shop("incidentd_slo_window_seconds")),
        Some(2_592_000.0)
    );
    assert_eq!(value(&text, &shop("incidentd_slo_sli_ratio")), Some(1.0));
    assert_eq!(
        value(&text, &shop("incidentd_slo_error_budget_remaining_ratio")),
        Some(1.0)
    );
    for w in ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "slo"] {
        assert_eq!(value(&text, &burn("shop", w)), Some(0.0), "window {w}");
        assert_eq!(value(&text, &burn("blog", w)), Some(0.0), "window {w}");
    }
    assert_eq!(
        value(&text, &shop("incidentd_slo_bad_seconds_total")),
        Some(0.0)
    );
    assert!(value(&text, &shop("incidentd_slo_valid_seconds_total")).is_some());
    // A service without an SLO has no SLO series.
    assert!(!text.contains("service=\"reports\",slo="), "{text}");
    r.shutdown().await;
}

#[tokio::test]
async fn a_30_minute_outage_spends_its_share_of_the_budget_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let r = start(&cfg).await;
    let now = chrono::Utc::now();
    let start_at = now - chrono::Duration::minutes(40);
    let end_at = now - chrono::Duration::minutes(10);
    let labels = json!({"alertname": "ShopDown", "ci": "shop-web", "severity": "critical"});
    post_alerts(
        &r,
        json!([{"labels": labels, "status": "firing", "startsAt": rfc3339(start_at)}]),
    )
    .await;
    // A low-priority incident on the same service does not count.
    post_alerts(
        &r,
        json!([{"labels": {"alertname": "ShopSlowish", "ci": "shop-cache", "severity": "info"},
                "status": "firing", "startsAt": rfc3339(start_at)}]),
    )
    .await;
    post_alerts(
        &r,
        json!([{"labels": labels, "status": "resolved", "startsAt": rfc3339(start_at),
                "endsAt": rfc3339(end_at)}]),
    )
    .await;
    let expected = 1.0 - 1800.0 / 2592.0;
    let budget = shop("incidentd_slo_error_budget_remaining_ratio");
    let text = scrape_until(&r, "the outage in the SLO figures", |t| {
        value(t, &budget).is_some_and(|v| (v - expected).abs() < 0.001)
    })
    .await;
    // 30 of the last 60 and 120 minutes were down; none of the last 5.
    let b = |w: &str| value(&text, &burn("shop", w)).expect("burn rate");
    assert!((b("1h") - 500.0).abs() < 0.5, "1h burn {}", b("1h"));
    assert!((b("2h") - 250.0).abs() < 0.5, "2h burn {}", b("2h"));
    assert!((b("1d") - 1800.0 / 86.4).abs() < 0.1, "1d burn {}", b("1d"));
    assert_eq!(b("5m"), 0.0);
    assert!((b("slo") - 1800.0 / 2592.0).abs() < 0.001);
    let sli = value(&text, &shop("incidentd_slo_sli_ratio")).expect("sli");
    assert!((sli - (1.0 - 1800.0 / 2_592_000.0)).abs() < 1e-6, "{sli}");
    // The blog's SLO is untouched.
    assert_eq!(value(&text, &burn("blog", "1h")), Some(0.0));
    // The outage ended before this process started counting (it may have
    // been seen open by one refresh, for a moment of live time).
    let bad = value(&text, &shop("incidentd_slo_bad_seconds_total")).expect("bad seconds");
    assert!(bad < 10.0, "{bad}");
    r.shutdown().await;

    // From the store: the same figures right after a restart.
    let r = start(&cfg).await;
    let text = scrape(&r).await;
    let v = value(&text, &budget).expect("budget after restart");
    assert!((v - expected).abs() < 0.001, "after restart: {v}");
    r.shutdown().await;
}

/// A root-cause alert that began before the incident it joins moves the
/// incident's start back, and the SLO figures follow the record.
#[tokio::test]
async fn an_earlier_root_cause_backdates_the_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(dir.path())).await;
    let now = chrono::Utc::now();
    let mins = |m: i64| rfc3339(now - chrono::Duration::minutes(m));
    let web = json!({"alertname": "ShopErrors", "ci": "shop-web", "severity": "critical"});
    let db = json!({"alertname": "DbDown", "ci": "shop-db", "severity": "critical"});
    post_alerts(
        &r,
        json!([{"labels": web, "status": "firing", "startsAt": mins(20)}]),
    )
    .await;
    let budget = shop("incidentd_slo_error_budget_remaining_ratio");
    // Open for 20 minutes so far.
    scrape_until(&r, "20 minutes of downtime", |t| {
        value(t, &budget).is_some_and(|v| (v - (1.0 - 1200.0 / 2592.0)).abs() < 0.001)
    })
    .await;
    // The database (which shop-web depends on) failed 3 minutes earlier.
    post_alerts(
        &r,
        json!([{"labels": db, "status": "firing", "startsAt": mins(23)}]),
    )
    .await;
    post_alerts(
        &r,
        json!([
            {"labels": web, "status": "resolved", "startsAt": mins(20), "endsAt": mins(10)},
            {"labels": db, "status": "resolved", "startsAt": mins(23), "endsAt": mins(10)}
        ]),
    )
    .await;
    // 13 minutes of downtime: from the database's failure to the end.
    scrape_until(&r, "13 minutes of downtime", |t| {
        value(t, &budget).is_some_and(|v| (v - (1.0 - 780.0 / 2592.0)).abs() < 0.001)
    })
    .await;
    let (_, list) = json(&r, "GET", "/api/v1/incidents?state=all", Value::Null).await;
    let incidents = list["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 1, "one incident: {list}");
    assert_eq!(incidents[0]["root_ci"], "shop-db", "{list}");
    let id = incidents[0]["id"].as_u64().expect("id");
    let (_, detail) = json(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    assert!(
        detail["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["kind"] == "backdated"),
        "{detail}"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn an_open_outage_counts_up_to_the_scrape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, now) = manual_clock();
    let r = start_on(&config(dir.path()), clock.clone()).await;
    let started = now - chrono::Duration::minutes(3);
    post_alerts(
        &r,
        json!([{"labels": {"alertname": "BlogDown", "ci": "blog-web", "severity": "critical"},
                "status": "firing", "startsAt": rfc3339(started)}]),
    )
    .await;
    let text = scrape_until(&r, "the open outage", |t| {
        value(t, &burn("blog", "5m")).is_some_and(|v| v > 0.0)
    })
    .await;
    // Down for the last 3 of 5 minutes, objective 99.5 %: 0.6 / 0.005.
    let b5 = value(&text, &burn("blog", "5m")).expect("5m");
    assert!((b5 - 120.0).abs() < 2.0, "5m burn {b5}");
    // The counter counts the seconds since this process started.
    let bad = value(
        &text,
        "incidentd_slo_bad_seconds_total{service=\"blog\",slo=\"availability\"}",
    )
    .expect("bad seconds");
    assert!((0.0..60.0).contains(&bad), "{bad}");
    // Ten seconds later by the daemon's clock, ten more bad seconds.
    clock.advance(Duration::from_secs(10));
    let series = "incidentd_slo_bad_seconds_total{service=\"blog\",slo=\"availability\"}";
    scrape_until(&r, "ten more bad seconds", |t| {
        value(t, series).is_some_and(|v| (v - (bad + 10.0)).abs() < 0.5)
    })
    .await;
    r.shutdown().await;
}

async fn json(r: &Running, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let (s, bytes) = call(r, method, uri, body.to_string()).await;
    (s, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// ITIL "on hold": waiting on a vendor stops the SLA clocks (shown on the
/// incident), a second hold or a resume without hold is a conflict, a hold
/// needs a reason, and the hold is on the timeline.
#[tokio::test]
async fn holding_an_incident_pauses_its_sla_timers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clock, now) = manual_clock();
    let r = start_on(&config(dir.path()), clock.clone()).await;
    let opened = now - chrono::Duration::minutes(20);
    post_alerts(
        &r,
        json!([{"labels": {"alertname": "ShopDown", "ci": "shop-web", "severity": "critical"},
                "status": "firing", "startsAt": rfc3339(opened)}]),
    )
    .await;
    let (_, list) = json(&r, "GET", "/api/v1/incidents", Value::Null).await;
    let id = list["incidents"][0]["id"].as_u64().expect("an incident");
    let base = format!("/api/v1/incidents/{id}");
    let (s, v) = json(&r, "GET", &base, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["sla"]["response"]["status"], "breached", "{v}");
    assert_eq!(v["sla"]["resolution"]["paused"], false);
    let due_before = v["sla"]["resolution"]["due_at"].clone();

    let (s, v) = json(&r, "POST", &format!("{base}/hold"), json!({"by": "alice"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["detail"]["field"], "reason", "{v}");
    let (s, v) = json(
        &r,
        "POST",
        &format!("{base}/hold"),
        json!({"reason": "Awaiting Vendor"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = json(
        &r,
        "POST",
        &format!("{base}/hold"),
        json!({"by": "alice", "reason": "awaiting_vendor"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["holds"][0]["reason"], "awaiting_vendor");
    assert_eq!(v["holds"][0]["end"], Value::Null);
    let (s, _) = json(
        &r,
        "POST",
        &format!("{base}/hold"),
        json!({"reason": "awaiting_vendor"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // While on hold the clocks stand still: the elapsed time does not grow.
    let (_, v) = json(&r, "GET", &base, Value::Null).await;
    assert_eq!(v["sla"]["resolution"]["paused"], true, "{v}");
    let elapsed = v["sla"]["resolution"]["elapsed_seconds"]
        .as_u64()
        .expect("elapsed");
    clock.advance(Duration::from_secs(7200));
    let (_, v) = json(&r, "GET", &base, Value::Null).await;
    assert_eq!(
        v["sla"]["resolution"]["elapsed_seconds"].as_u64(),
        Some(elapsed),
        "{v}"
    );
    assert!(
        v["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["kind"] == "on_hold" && e["actor"] == "alice"),
        "{v}"
    );

    let (s, v) = json(
        &r,
        "POST",
        &format!("{base}/resume"),
        json!({"by": "alice"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["holds"][0]["end"].is_string(), "{v}");
    let (s, _) = json(&r, "POST", &format!("{base}/resume"), Value::Null).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Due later than before by the time spent on hold: two hours.
    let (_, v) = json(&r, "GET", &base, Value::Null).await;
    let ms = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
            .expect("RFC 3339")
            .timestamp_millis()
    };
    let pushed = ms(&v["sla"]["resolution"]["due_at"]) - ms(&due_before);
    assert_eq!(pushed, 7_200_000, "due moved by {pushed} ms: {v}");
    assert_eq!(v["sla"]["resolution"]["paused"], false);
    let (s, _) = json(
        &r,
        "POST",
        "/api/v1/incidents/999999/hold",
        json!({"reason": "awaiting_vendor"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    r.shutdown().await;
}

/// Metric names in a PromQL expression: identifiers starting `incidentd_`
/// (every series the dashboard reads is incidentd's own).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in expr.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            cur.push(ch);
        } else {
            if cur.starts_with("incidentd_") {
                out.push(cur.clone());
            }
            cur.clear();
        }
    }
    out
}

/// Every `expr` and templating query of a Grafana dashboard.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) | ("definition", Value::String(s)) => {
                        out.push(s.clone())
                    }
                    ("query", Value::Object(q)) => {
                        if let Some(Value::String(s)) = q.get("query") {
                            out.push(s.clone());
                        }
                    }
                    _ => dashboard_queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_grafana_dashboard_reads_only_exported_metrics() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/incidentd-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("dashboard file");
    let dash: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dash["panels"], &mut queries);
    dashboard_queries(&dash["templating"], &mut queries);
    assert!(queries.len() >= 20, "too few queries found: {queries:?}");

    // What a running daemon exports: `# TYPE` lines of a scrape. Kafka lag
    // has series only once partitions are assigned, outbound series once a
    // destination is configured: both are given one here.
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(dir.path())).await;
    r.metrics
        .kafka
        .lag
        .with_label_values(&["alerts", "0"])
        .set(0);
    // Outbound series exist once a destination is configured.
    r.metrics.known_destinations(["pd"]);
    // KPI ratios and means exist once there is data (a change decided, an
    // alert, an incident acknowledged or resolved, an SLA timer stopped).
    let kpi = &r.metrics.kpi;
    kpi.change_failure
        .with_label_values(&["shop", "30d"])
        .set(0.0);
    kpi.noise_suppressed
        .with_label_values(&["1d", "maintenance"])
        .set(0.0);
    kpi.noise_reduction.with_label_values(&["1d"]).set(0.0);
    kpi.service_noise_reduction
        .with_label_values(&["shop", "1d"])
        .set(0.0);
    kpi.service_mtta
        .with_label_values(&["shop", "P1", "30d"])
        .set(0.0);
    kpi.service_mttr
        .with_label_values(&["shop", "P1", "30d"])
        .set(0.0);
    kpi.service_sla_compliance
        .with_label_values(&["shop", "response"])
        .set(1.0);
    let scraped = scrape(&r).await;
    r.shutdown().await;
    let mut families = std::collections::BTreeMap::new();
    for l in scraped.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some(t)) = (it.next(), it.next()) {
                families.insert(n.to_string(), t.to_string());
            }
        }
    }
    let mut missing = BTreeSet::new();
    for q in &queries {
        let names = metric_names(q);
        assert!(!names.is_empty(), "query reads no incidentd metric: {q}");
        for n in names {
            let histogram_part = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .filter(|base| families.get(*base).is_some_and(|t| t == "histogram"));
            if histogram_part.is_none() && !families.contains_key(&n) {
                missing.insert(n);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard reads metrics incidentd does not export: {missing:?}"
    );
    // Every panel has a query, and the panels cover what the dashboard promises.
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] != "row" {
            assert!(
                p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel without a query: {}",
                p["title"]
            );
        }
    }
    for needed in [
        "incidentd_slo_error_budget_remaining_ratio",
        "incidentd_slo_burn_rate",
        "incidentd_sla_completed_total",
        "incidentd_incident_time_to_acknowledge_seconds_sum",
        "incidentd_incident_time_to_resolve_seconds_bucket",
        "incidentd_incidents_active",
        "incidentd_alerts_received_total",
    ] {
        assert!(
            queries
                .iter()
                .any(|q| metric_names(q).iter().any(|n| n == needed)),
            "no panel reads {needed}"
        );
    }
}
