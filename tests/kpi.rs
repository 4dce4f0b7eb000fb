//! Service-management KPIs through the API, the metrics and the board, on a
//! scripted month driven on a simulated clock: changes, some followed by
//! incidents on what they touch, some not; a storm of 40 alerts that
//! becomes one incident; heartbeat and in-change noise; acknowledgements
//! and resolutions at known times. Every figure is exact, and the same
//! after a restart (computed from the store).

mod support;
use support::{act, call, config_in, oneshot, start_on};

use axum::http::StatusCode;
use incidentd::domain::{Clock, ManualClock, Timestamp};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// 2026-11-01T00:00:00Z: day 0 of the month.
const T0: i64 = 1_793_491_200_000;

fn at(day: i64, hour: i64, min: i64) -> Timestamp {
    Timestamp(T0 + ((day * 24 + hour) * 60 + min) * 60_000)
}

const CMDB: &str = "version: 1
services:
  - id: shop
    tier: 1
    sla: { response: { P1: 15m }, resolution: { P1: 4h } }
  - id: blog
    tier: 1
    sla: { response: { P1: 30m }, resolution: { P1: 1h } }
cis:
  - { id: net, class: network }
  - { id: db, class: database, depends_on: [net] }
  - { id: web, class: application, service: shop, depends_on: [db] }
  - { id: cms, class: application, service: blog, depends_on: [db] }
  - { id: cdn, class: cdn, service: blog }
";

/// The CMDB above with 39 more shop applications on the database.
fn cmdb() -> String {
    let mut y = CMDB.to_string();
    for i in 1..=39 {
        y.push_str(&format!(
            "  - {{ id: app-{i:02}, class: application, service: shop, depends_on: [db] }}\n"
        ));
    }
    y
}

struct Month {
    clock: Arc<ManualClock>,
}

impl Month {
    fn set(&self, t: Timestamp) {
        self.clock.set(t);
    }

    fn alert(&self, name: &str, ci: Option<&str>, severity: &str, firing: bool) -> Value {
        let mut labels = json!({"alertname": name, "severity": severity});
        if let Some(ci) = ci {
            labels["ci"] = json!(ci);
        }
        let now = self.clock.now().to_rfc3339();
        if firing {
            json!({"labels": labels, "status": "firing", "startsAt": now})
        } else {
            json!({"labels": labels, "status": "resolved", "endsAt": now})
        }
    }
}

async fn post(r: &incidentd::app::Running, alerts: Vec<Value>) {
    let (st, v) = call(r, "POST", "/api/v1/alerts", Value::Array(alerts)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

/// The newest incident rooted at `root`, once it is in `state`.
async fn incident(r: &incidentd::app::Running, root: &str, state: &str) -> Value {
    support::eventually(&format!("an incident on {root} {state}"), 10, async || {
        let (_, v) = call(r, "GET", "/api/v1/incidents?state=all", Value::Null).await;
        v["incidents"]
            .as_array()?
            .iter()
            .filter(|i| i["root_ci"] == root && i["links"]["merged_into"].is_null())
            .max_by_key(|i| i["id"].as_i64())
            .filter(|i| i["state"] == state)
            .cloned()
    })
    .await
}

/// `GET /api/v1/services` once the KPI book was rebuilt after everything
/// written so far, at the clock's time.
async fn services(r: &incidentd::app::Running, clock: &ManualClock) -> Value {
    let now = json!(clock.now());
    support::eventually("the KPI book at the clock's time", 10, async || {
        let (_, v) = call(r, "GET", "/api/v1/services", Value::Null).await;
        (v["kpis_as_of"] == now).then_some(())
    })
    .await;
    // One more refresh (every second): it began after every write above.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (st, v) = call(r, "GET", "/api/v1/services", Value::Null).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["kpis_as_of"], now);
    v
}

fn kpis<'a>(v: &'a Value, service: &str) -> &'a Value {
    v["services"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["id"] == service))
        .map(|s| &s["kpis"])
        .unwrap_or_else(|| panic!("no service {service}: {v}"))
}

fn noise(k: &Value, w: &str) -> (u64, u64, u64, u64, Value) {
    let n = &k["noise"][w];
    let u = |f: &str| n[f].as_u64().unwrap_or_else(|| panic!("{f} in {n}"));
    (
        u("alerts"),
        u("suppressed"),
        u("correlated"),
        u("incidents"),
        round(&n["reduction_ratio"]),
    )
}

/// A ratio to 9 places (`null` stays): the figures are divisions.
fn round(v: &Value) -> Value {
    v.as_f64()
        .map_or(Value::Null, |x| json!((x * 1e9).round() / 1e9))
}

fn changes(k: &Value, w: &str) -> (u64, u64, u64, Value) {
    let c = &k["changes"][w];
    let u = |f: &str| c[f].as_u64().unwrap_or_else(|| panic!("{f} in {c}"));
    (
        u("failed"),
        u("successful"),
        u("pending"),
        round(&c["failure_ratio"]),
    )
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_month_gives_exact_kpis_through_the_api_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cmdb_file = dir.path().join("cmdb.yaml");
    std::fs::write(&cmdb_file, cmdb()).expect("cmdb");
    let mut cfg = config_in(dir.path(), "[kpi]\nrefresh = \"1s\"\n");
    cfg.cmdb = Some(cmdb_file);
    let m = Month {
        clock: Arc::new(ManualClock::new(at(0, 0, 0))),
    };
    let r = start_on(&cfg, m.clock.clone()).await;

    // The month's change calendar, imported on its first day.
    let change = |id: &str, ci: &str, from: Timestamp, to: Timestamp, summary: &str| json!({"id": id, "ci": ci, "state": "approved", "start": from, "end": to, "summary": summary});
    let (st, v) = call(
        &r,
        "POST",
        "/api/v1/changes",
        json!([
            change(
                "CHG-1",
                "db",
                at(1, 10, 0),
                at(1, 11, 0),
                "db minor upgrade"
            ),
            change("CHG-2", "cdn", at(3, 10, 0), at(3, 11, 0), "cdn config"),
            change("CHG-3", "cms", at(5, 10, 0), at(5, 11, 0), "cms release"),
            change(
                "CHG-4",
                "net",
                at(20, 10, 0),
                at(20, 11, 0),
                "switch firmware"
            ),
            change("CHG-5", "web", at(29, 18, 0), at(29, 20, 0), "web release"),
        ]),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // Day 1: an hour after CHG-1 on the database, the shop's web tier
    // breaks (web depends on db): acknowledged after 5 minutes, resolved
    // after an hour.
    m.set(at(1, 12, 0));
    post(
        &r,
        vec![m.alert("HighErrorRate", Some("web"), "critical", true)],
    )
    .await;
    let a = incident(&r, "web", "open").await;
    let a_id = a["id"].as_i64().expect("id");
    m.set(at(1, 12, 5));
    act(&r, a_id, "ack").await;
    m.set(at(1, 13, 0));
    post(
        &r,
        vec![m.alert("HighErrorRate", Some("web"), "critical", false)],
    )
    .await;
    incident(&r, "web", "resolved").await;

    // Day 5: the CMS alerts inside its own change window: planned work,
    // suppressed.
    m.set(at(5, 10, 30));
    post(&r, vec![m.alert("CmsDown", Some("cms"), "critical", true)]).await;
    m.set(at(5, 10, 40));
    post(&r, vec![m.alert("CmsDown", Some("cms"), "critical", false)]).await;

    // Day 10: the database goes down and 39 shop applications with it: 40
    // alerts, one incident, resolved two hours later.
    m.set(at(10, 10, 0));
    post(
        &r,
        vec![m.alert("PostgresDown", Some("db"), "critical", true)],
    )
    .await;
    for i in 1..=39 {
        m.clock.advance(Duration::from_secs(1));
        post(
            &r,
            vec![m.alert(
                "HighErrorRate",
                Some(&format!("app-{i:02}")),
                "critical",
                true,
            )],
        )
        .await;
    }
    let b_open = incident(&r, "db", "open").await;
    m.set(at(10, 12, 0));
    let mut clear = vec![m.alert("PostgresDown", Some("db"), "critical", false)];
    clear.extend((1..=39).map(|i| {
        m.alert(
            "HighErrorRate",
            Some(&format!("app-{i:02}")),
            "critical",
            false,
        )
    }));
    post(&r, clear).await;
    let b = incident(&r, "db", "resolved").await;
    assert_eq!(b["id"], b_open["id"]);
    assert_eq!(b["alert_count"], 40, "the storm is one incident: {b}");

    // An hour after the storm ended.
    m.set(at(10, 13, 0));
    let v = services(&r, &m.clock).await;
    let all = &v["overall"];
    assert_eq!(noise(all, "1h"), (0, 0, 0, 0, Value::Null), "{all}");
    assert_eq!(noise(all, "1d"), (40, 0, 39, 1, json!(0.975)), "{all}");
    assert_eq!(noise(all, "7d"), (41, 1, 39, 1, json!(0.975)), "{all}");
    assert_eq!(
        all["noise"]["7d"]["suppressed_by_rule"],
        json!({"suppress-in-change-window": 1})
    );
    let shop = kpis(&v, "shop");
    assert_eq!(
        noise(shop, "1d"),
        (39, 0, 39, 1, round(&json!(1.0 - 1.0 / 39.0))),
        "the applications' alerts all joined the database's incident: {shop}"
    );
    let blog = kpis(&v, "blog");
    assert_eq!(noise(blog, "1d"), (0, 0, 0, 1, Value::Null), "{blog}");
    assert_eq!(noise(blog, "7d"), (1, 1, 0, 1, Value::Null), "{blog}");
    // CHG-1 failed (day 1), CHG-2 and CHG-3 passed their day; CHG-4 and
    // CHG-5 have not begun.
    assert_eq!(
        changes(all, "30d"),
        (1, 2, 0, round(&json!(1.0 / 3.0))),
        "{all}"
    );
    assert_eq!(
        changes(all, "7d"),
        (0, 1, 0, json!(0.0)),
        "only CHG-3 ended within 7 days"
    );

    // Day 20: CHG-4 on the network, and half an hour after it the CMS
    // (which depends on it through the database) fails: acknowledged
    // after 20 minutes, resolved after two hours.
    m.set(at(20, 11, 30));
    post(&r, vec![m.alert("CmsDown", Some("cms"), "critical", true)]).await;
    let c = incident(&r, "cms", "open").await;
    let c_id = c["id"].as_i64().expect("id");
    m.set(at(20, 11, 50));
    act(&r, c_id, "ack").await;
    m.set(at(20, 13, 30));
    post(&r, vec![m.alert("CmsDown", Some("cms"), "critical", false)]).await;
    incident(&r, "cms", "resolved").await;

    // Day 29: a heartbeat (suppressed) and a CDN warning that resolves in
    // half an hour; CHG-5 on web runs that evening.
    m.set(at(29, 9, 0));
    post(&r, vec![m.alert("Watchdog", None, "none", true)]).await;
    m.set(at(29, 10, 0));
    post(
        &r,
        vec![m.alert("CdnLatency", Some("cdn"), "warning", true)],
    )
    .await;
    let d = incident(&r, "cdn", "open").await;
    assert_eq!(d["priority"], "P2", "{d}");
    m.set(at(29, 10, 30));
    post(
        &r,
        vec![m.alert("CdnLatency", Some("cdn"), "warning", false)],
    )
    .await;
    incident(&r, "cdn", "resolved").await;

    // The month's end.
    m.set(at(30, 0, 0));
    let v = services(&r, &m.clock).await;
    let check = |v: &Value| {
        let all = &v["overall"];
        // CHG-1 (A) and CHG-4 (C) failed, CHG-2 and CHG-3 passed, CHG-5
        // is within its failure window.
        assert_eq!(changes(all, "30d"), (2, 2, 1, json!(0.5)), "{all}");
        assert_eq!(changes(all, "7d"), (0, 0, 1, Value::Null), "{all}");
        // db and net reach both services, cdn and cms the blog, web the shop.
        let shop = kpis(v, "shop");
        assert_eq!(changes(shop, "30d"), (2, 0, 1, json!(1.0)), "{shop}");
        let blog = kpis(v, "blog");
        assert_eq!(changes(blog, "30d"), (2, 2, 0, json!(0.5)), "{blog}");

        // The last week: the heartbeat (suppressed, bound to no CI) and the
        // CDN warning, which opened its incident.
        assert_eq!(noise(all, "7d"), (2, 1, 0, 1, json!(0.0)), "{all}");
        assert_eq!(
            all["noise"]["7d"]["suppressed_by_rule"],
            json!({"suppress-heartbeats": 1})
        );
        assert_eq!(noise(blog, "7d"), (1, 0, 0, 1, json!(0.0)), "{blog}");
        assert_eq!(noise(shop, "7d"), (0, 0, 0, 0, Value::Null), "{shop}");

        // Incidents of the month: A and the storm on the shop; the storm,
        // C and D on the blog.
        let inc = |k: &Value, w: &str| k["incidents"][w].clone();
        let s30 = inc(shop, "30d");
        assert_eq!(s30["opened"], 2, "{s30}");
        assert_eq!(s30["mtta_seconds"], 300.0, "A after 5 minutes: {s30}");
        assert_eq!(s30["mttr_seconds"], 5400.0, "1 h and 2 h: {s30}");
        assert_eq!(s30["by_priority"]["P1"]["opened"], 2, "{s30}");
        let b30 = inc(blog, "30d");
        assert_eq!(b30["opened"], 3, "{b30}");
        assert_eq!(b30["mtta_seconds"], 1200.0, "C after 20 minutes: {b30}");
        assert_eq!(b30["mttr_seconds"], 5400.0, "2 h, 2 h and 30 m: {b30}");
        assert_eq!(b30["by_priority"]["P1"]["mttr_seconds"], 7200.0, "{b30}");
        assert_eq!(b30["by_priority"]["P2"]["opened"], 1, "{b30}");
        assert_eq!(b30["by_priority"]["P2"]["mttr_seconds"], 1800.0, "{b30}");
        assert_eq!(inc(blog, "7d")["opened"], 1);
        assert_eq!(inc(shop, "7d")["opened"], 0);
        let a30 = inc(all, "30d");
        assert_eq!(
            (a30["opened"].clone(), a30["mtta_seconds"].clone()),
            (json!(4), json!(750.0))
        );
        assert_eq!(a30["mttr_seconds"], 4950.0, "{a30}");

        // SLA: the shop answers P1 in 15 m and resolves in 4 h (A met
        // both; the storm, answered only by its resolution after 2 h,
        // missed the response); the blog in 30 m and 1 h (the storm
        // missed both, C answered in 20 m and resolved in 2 h; D, a P2,
        // has no target).
        assert_eq!(
            shop["sla_compliance"],
            json!({"response": 0.5, "resolution": 1.0})
        );
        assert_eq!(
            blog["sla_compliance"],
            json!({"response": 0.5, "resolution": 0.0})
        );
    };
    check(&v);

    // The changes and the incidents that failed them, both ways.
    let (_, list) = call(&r, "GET", "/api/v1/changes", Value::Null).await;
    let outcome = |id: &str| {
        list["changes"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["id"] == id))
            .map(|c| {
                (
                    c["outcome"].clone(),
                    c["failed_by"].as_array().map_or(0, Vec::len),
                )
            })
            .unwrap_or_else(|| panic!("no {id}: {list}"))
    };
    assert_eq!(outcome("CHG-1"), (json!("failed"), 1));
    assert_eq!(outcome("CHG-2"), (json!("successful"), 0));
    assert_eq!(outcome("CHG-3"), (json!("successful"), 0));
    assert_eq!(outcome("CHG-4"), (json!("failed"), 1));
    assert_eq!(outcome("CHG-5"), (json!("pending"), 0));
    let (st, chg4) = call(&r, "GET", "/api/v1/changes/CHG-4", Value::Null).await;
    assert_eq!(st, StatusCode::OK, "{chg4}");
    assert_eq!(chg4["failed_by"][0]["id"], c_id, "{chg4}");
    assert_eq!(chg4["failed_by"][0]["root_ci"], "cms", "{chg4}");
    assert_eq!(chg4["services"], json!(["blog", "shop"]), "{chg4}");
    let kinds: Vec<&str> = chg4["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["window_started", "window_ended", "failed"],
        "{chg4}"
    );
    assert!(
        chg4["timeline"][2]["message"].as_str().is_some_and(
            |m| m.contains("30m after its window ended, rooted at cms, downstream of net")
        ),
        "{chg4}"
    );
    let (st, missing) = call(&r, "GET", "/api/v1/changes/CHG-9", Value::Null).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{missing}");
    let (_, a) = call(&r, "GET", &format!("/api/v1/incidents/{a_id}"), Value::Null).await;
    assert_eq!(a["failed_changes"], json!(["CHG-1"]), "{a}");
    let entry = a["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["kind"] == "change_failed"))
        .unwrap_or_else(|| panic!("no change_failed entry: {a}"));
    assert_eq!(
        entry["message"],
        "counts against change CHG-1 on db (db minor upgrade): opened 1h after its window ended"
    );

    // The same figures as metrics.
    let (_, text) = oneshot(&r.router, "GET", "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8(text).expect("utf-8");
    for (series, want) in [
        (
            r#"incidentd_change_failure_ratio{service="shop",window="30d"}"#,
            1.0,
        ),
        (
            r#"incidentd_change_failure_ratio{service="blog",window="30d"}"#,
            0.5,
        ),
        (
            r#"incidentd_changes_total{outcome="failed",service="shop"}"#,
            2.0,
        ),
        (
            r#"incidentd_changes_total{outcome="failed",service="blog"}"#,
            2.0,
        ),
        (
            r#"incidentd_changes_total{outcome="successful",service="blog"}"#,
            2.0,
        ),
        (
            r#"incidentd_changes_total{outcome="successful",service="shop"}"#,
            0.0,
        ),
        (
            r#"incidentd_noise_alerts{kind="received",window="7d"}"#,
            2.0,
        ),
        (
            r#"incidentd_noise_suppressed_alerts{rule="suppress-heartbeats",window="7d"}"#,
            1.0,
        ),
        (r#"incidentd_noise_reduction_ratio{window="7d"}"#, 0.0),
        (
            r#"incidentd_service_incidents_opened{priority="P1",service="shop",window="30d"}"#,
            2.0,
        ),
        (
            r#"incidentd_service_mttr_seconds{priority="P1",service="shop",window="30d"}"#,
            5400.0,
        ),
        (
            r#"incidentd_service_mtta_seconds{priority="P1",service="blog",window="30d"}"#,
            1200.0,
        ),
        (
            r#"incidentd_service_sla_compliance_ratio{service="blog",sla="resolution"}"#,
            0.0,
        ),
    ] {
        assert_eq!(metric(&text, series), Some(want), "{series} in\n{text}");
    }
    assert_eq!(
        metric(
            &text,
            r#"incidentd_service_mtta_seconds{priority="P1",service="shop",window="7d"}"#
        ),
        None,
        "no incident acknowledged this week: no mean"
    );

    // The board shows the same.
    let (st, html) = oneshot(&r.router, "GET", "/changes", &[], Vec::new()).await;
    assert_eq!(st, StatusCode::OK);
    let html = String::from_utf8(html).expect("utf-8");
    assert!(
        html.contains(r#"id="CHG-4" data-outcome="failed""#),
        "{html}"
    );
    assert!(
        html.contains(&format!(r#"href="/incidents/{c_id}""#)),
        "{html}"
    );
    let (_, html) = oneshot(&r.router, "GET", "/services", &[], Vec::new()).await;
    let html = String::from_utf8(html).expect("utf-8");
    assert!(
        html.contains("ITSM KPIs") && html.contains(r#"id="kpis""#),
        "{html}"
    );

    // From the store: the same figures after a restart; the change
    // counters count what is decided from now on.
    let before = v;
    r.shutdown().await;
    let r = start_on(&cfg, m.clock.clone()).await;
    let after = services(&r, &m.clock).await;
    check(&after);
    assert_eq!(after["overall"], before["overall"]);
    for s in ["shop", "blog"] {
        assert_eq!(kpis(&after, s), kpis(&before, s), "{s}");
    }
    let (_, text) = oneshot(&r.router, "GET", "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8(text).expect("utf-8");
    assert_eq!(
        metric(
            &text,
            r#"incidentd_changes_total{outcome="failed",service="shop"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"incidentd_change_failure_ratio{service="shop",window="30d"}"#
        ),
        Some(1.0)
    );
    r.shutdown().await;
}
