//! The web board in a real browser: Debian's Chromium driven through
//! chromedriver (WebDriver), against `incidentd serve` started by each
//! test. Runs with `INCIDENTD_TEST_BROWSER=1` (as `.ci/run` sets);
//! otherwise each test prints one skip line. Screenshots of every page at
//! desktop and phone width are written under `target/ui-screenshots/`.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::browser::{self, Browser};
use support::daemon::{Running, TestDaemon};

const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);
const OPERATOR: &str = "operator-secret-0123456789";

fn shots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots")
}

/// Both widths of the page the browser shows, as `name-1280.png` and
/// `name-390.png`.
async fn screenshots(b: &Browser, name: &str) {
    for (w, h) in [DESKTOP, PHONE] {
        b.set_size(w, h).await;
        b.full_screenshot(&shots().join(format!("{name}-{w}.png")))
            .await;
    }
    b.set_size(DESKTOP.0, DESKTOP.1).await;
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A daemon on the shipped CMDB, with `extra` configuration.
async fn daemon(dir: &Path, extra: &str) -> Running {
    let data = dir.join("data");
    let cmdb = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cmdb.yaml");
    let mut d = TestDaemon::new(&data, dir)
        .config(extra)
        .cmdb(&cmdb)
        .start();
    d.wait_ready(Duration::from_secs(30)).await;
    d
}

/// An Alertmanager webhook of one alert.
fn webhook(status: &str, name: &str, labels: Value, starts: &str) -> Value {
    let mut l = labels;
    l["alertname"] = json!(name);
    json!({
        "version": "4", "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"), "status": status,
        "receiver": "incidentd", "groupLabels": {"alertname": name}, "commonLabels": l.clone(),
        "commonAnnotations": {}, "externalURL": "http://alertmanager.example.com:9093",
        "alerts": [{
            "status": status, "labels": l,
            "annotations": {"summary": format!("{name} on the checkout path")},
            "startsAt": starts,
            "endsAt": if status == "resolved" { chrono::Utc::now().to_rfc3339() } else { "0001-01-01T00:00:00Z".to_string() },
            "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=up",
            "fingerprint": format!("{:016x}", name.len() * 7919),
        }]
    })
}

async fn post(base: &str, path: &str, body: &Value, token: Option<&str>) -> Value {
    let mut req = client().post(format!("{base}{path}")).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn get(base: &str, path: &str, token: Option<&str>) -> Value {
    let mut req = client().get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("get").json().await.expect("json")
}

#[tokio::test]
async fn a_webhook_appears_live_then_auto_resolves_and_leaves() {
    if !browser::enabled("browser::a_webhook_appears_live_then_auto_resolves_and_leaves") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path(), "[incident]\nauto_resolve_hold = \"4s\"\n").await;
    let b = Browser::start(DESKTOP.0, DESKTOP.1).await;
    b.goto(&format!("{}/", d.base)).await;
    b.wait_text("#empty", "All quiet", Duration::from_secs(5))
        .await;
    screenshots(&b, "board-empty").await;
    // Marks this page load: a reload would lose it.
    b.exec("window.__sameLoad = 42; return true;", vec![]).await;
    let now = chrono::Utc::now().to_rfc3339();
    let fire = webhook(
        "firing",
        "KafkaConsumerStuck",
        json!({"service": "fraud-api", "severity": "critical", "instance": "fraud-api-0"}),
        &now,
    );
    let posted = Instant::now();
    post(&d.base, "/api/v1/alerts/alertmanager", &fire, None).await;
    let row = b
        .wait_text(
            "#board tbody tr",
            "KafkaConsumerStuck",
            Duration::from_secs(2),
        )
        .await;
    let seen = posted.elapsed();
    assert!(seen <= Duration::from_secs(2), "shown after {seen:?}");
    assert_eq!(
        b.exec("return window.__sameLoad;", vec![]).await,
        json!(42),
        "the board reloaded instead of updating"
    );
    assert!(row.try_text().await.is_none_or(|t| t.contains("open")));
    b.wait_text("#board tbody tr", "open", Duration::from_secs(2))
        .await;
    // Nothing but this daemon is asked for anything (no fonts, no CDNs).
    let origins = b
        .exec(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin);",
            vec![],
        )
        .await;
    let origins = origins.as_array().expect("resource origins");
    assert!(!origins.is_empty());
    assert!(
        origins.iter().all(|o| o.as_str() == Some(d.base.as_str())),
        "requests elsewhere: {origins:?}"
    );
    screenshots(&b, "board").await;
    // Its alert resolves: auto-resolving with a countdown, then gone.
    let resolved = webhook(
        "resolved",
        "KafkaConsumerStuck",
        json!({"service": "fraud-api", "severity": "critical", "instance": "fraud-api-0"}),
        &now,
    );
    post(&d.base, "/api/v1/alerts/alertmanager", &resolved, None).await;
    let row = b
        .wait_text("#board tbody tr", "auto-resolving", Duration::from_secs(2))
        .await;
    let _ = row;
    let countdown = b.text_of("#board tbody tr time[data-until]").await;
    assert!(countdown.starts_with("in "), "{countdown:?}");
    screenshots(&b, "board-auto-resolving").await;
    b.wait_text("#empty", "All quiet", Duration::from_secs(15))
        .await;
    assert_eq!(b.exec("return window.__sameLoad;", vec![]).await, json!(42));
    let list = get(&d.base, "/api/v1/incidents?state=resolved", None).await;
    assert_eq!(
        list["incidents"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    b.quit().await;
}

/// A daemon whose API needs the operator token `alice`, with one firing
/// alert `name` on `service`'s CI posted by Alertmanager.
async fn guarded_daemon(dir: &Path, name: &str, service: &str) -> Running {
    let op = dir.join("op.token");
    std::fs::write(&op, format!("{OPERATOR}\n")).expect("write");
    let d = daemon(dir, &format!("[api.operator_tokens]\nalice = {op:?}\n")).await;
    let now = chrono::Utc::now().to_rfc3339();
    let alert = webhook(
        "firing",
        name,
        json!({"service": service, "severity": "critical"}),
        &now,
    );
    post(&d.base, "/api/v1/alerts/alertmanager", &alert, None).await;
    d
}

/// Sign in through the form, as a person does.
async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/")).await;
    b.wait_text("h1", "Sign in", Duration::from_secs(5)).await;
    b.find("#token").await.send_keys(token).await;
    b.find("#sign-in").await.click().await;
}

#[tokio::test]
async fn acknowledge_hold_resume_and_resolve_from_the_incident_page() {
    if !browser::enabled("browser::acknowledge_hold_resume_and_resolve_from_the_incident_page") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = guarded_daemon(dir.path(), "PricingLatencyHigh", "pricing-api").await;
    let list = get(&d.base, "/api/v1/incidents", Some(OPERATOR)).await;
    let id = list["incidents"][0]["id"].as_i64().expect("an incident");
    let b = Browser::start(DESKTOP.0, DESKTOP.1).await;
    sign_in(&b, &d.base, OPERATOR).await;
    b.wait_text(
        "#board tbody tr",
        "PricingLatencyHigh",
        Duration::from_secs(5),
    )
    .await;
    b.click_on(&format!("#board a[href=\"/incidents/{id}\"]"))
        .await;
    b.wait_text("h1", "PricingLatencyHigh", Duration::from_secs(5))
        .await;
    screenshots(&b, "incident-open").await;
    let api = async |path: &str| get(&d.base, path, Some(OPERATOR)).await;
    let inc_path = format!("/api/v1/incidents/{id}");

    // Keyboard only: Tab from the top of the page reaches the acknowledge
    // button, and Enter presses it.
    let mut reached = false;
    for _ in 0..40 {
        b.press_key(browser::TAB).await;
        let focused = b.exec("return document.activeElement.id;", vec![]).await;
        if focused == json!("do-ack") {
            reached = true;
            break;
        }
    }
    assert!(reached, "the acknowledge button is not reachable with Tab");
    b.press_key(browser::ENTER).await;
    b.wait_text("#note", "Acknowledged by alice", Duration::from_secs(5))
        .await;
    let inc = api(&inc_path).await;
    assert_eq!(inc["state"], "acknowledged", "{inc}");
    assert_eq!(inc["acknowledged_by"], "alice");
    b.wait_text("#timeline li", "alice", Duration::from_secs(2))
        .await;

    // Typed the way a person types, whatever the live updates do meanwhile.
    b.wait_for("the hold reason typed", Duration::from_secs(5), async |b| {
        let field = b.find("#hold-reason").await;
        field.clear().await;
        field.send_keys("awaiting_vendor").await;
        field.prop("value").await == json!("awaiting_vendor")
    })
    .await;
    b.click_on("#do-hold").await;
    b.wait_text("#note", "Put on hold by alice", Duration::from_secs(5))
        .await;
    let inc = api(&inc_path).await;
    assert_eq!(inc["holds"][0]["reason"], "awaiting_vendor", "{inc}");
    assert_eq!(inc["holds"][0]["by"], "alice", "{inc}");
    b.wait_text(
        "#state",
        "on hold (awaiting_vendor)",
        Duration::from_secs(2),
    )
    .await;
    screenshots(&b, "incident-on-hold").await;

    b.click_on("#do-resume").await;
    b.wait_text("#note", "Resumed by alice", Duration::from_secs(5))
        .await;
    let inc = api(&inc_path).await;
    assert!(
        inc["holds"][0]["end"].is_i64() || inc["holds"][0]["end"].is_string(),
        "{inc}"
    );

    b.click_on("#do-resolve").await;
    b.wait_text("#note", "Resolved by alice", Duration::from_secs(5))
        .await;
    let inc = api(&inc_path).await;
    assert_eq!(inc["state"], "resolved", "{inc}");
    let kinds: Vec<(String, String)> = inc["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| {
            Some((
                e["kind"].as_str()?.to_string(),
                e["actor"].as_str()?.to_string(),
            ))
        })
        .collect();
    for k in ["acknowledged", "on_hold", "resumed", "resolved"] {
        assert!(
            kinds.contains(&(k.to_string(), "alice".to_string())),
            "{k} by alice missing: {kinds:?}"
        );
    }
    let timeline = b.text_of("#timeline").await;
    assert!(timeline.matches("alice").count() >= 4, "{timeline}");
    screenshots(&b, "incident-resolved").await;
    b.quit().await;
}

#[tokio::test]
async fn a_database_storm_is_one_incident_rooted_at_the_database() {
    if !browser::enabled("browser::a_database_storm_is_one_incident_rooted_at_the_database") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path(), "").await;
    // The shipped example: pg-0 fails, its five dependents alert too.
    let recorded = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/alerts/alertmanager-v2-alerts.json"),
    )
    .expect("example");
    let body: Value = serde_json::from_str(&recorded).expect("json");
    post(&d.base, "/api/v2/alerts", &body, None).await;
    let active = get(&d.base, "/api/v1/incidents", None).await;
    let incidents = active["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 1, "{active}");
    let inc = &incidents[0];
    let id = inc["id"].as_i64().expect("id");
    let b = Browser::start(DESKTOP.0, DESKTOP.1).await;
    b.goto(&format!("{}/", d.base)).await;
    let rows = b.find_all("#board tbody tr").await;
    assert_eq!(rows.len(), 1);
    assert!(b.text_of("#board tbody tr").await.contains("pg-0"));
    b.goto(&format!("{}/incidents/{id}", d.base)).await;
    // Read in one script: a live update may replace the page meanwhile.
    let topo = b
        .exec(
            "const q = s => document.querySelector(s);
             const all = s => [...document.querySelectorAll(s)];
             return {
               root: all('#topology g.node.root').map(g => g.dataset.ci),
               rootFill: getComputedStyle(q('#topology g.node.root rect')).fill,
               alerting: all('#topology g.node.alerting').map(g => g.dataset.ci),
               alertingFill: getComputedStyle(q('#topology g.node.alerting rect')).fill,
               services: all('#topology g.service').map(g => g.dataset.service),
             };",
            vec![],
        )
        .await;
    // Highlighted: the root alone, filled unlike the alerting CIs.
    assert_eq!(topo["root"], json!(["pg-0"]), "{topo}");
    assert_ne!(
        topo["rootFill"], topo["alertingFill"],
        "the root is not highlighted: {topo}"
    );
    assert!(
        topo["alerting"].as_array().is_some_and(|a| !a.is_empty()),
        "{topo}"
    );
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("services")
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let services = strings(&topo["services"]);
    let expected = strings(&inc["impacted_services"]);
    assert!(!expected.is_empty());
    assert_eq!(services, expected);
    let listed = b.text_of("#services").await;
    for s in &expected {
        assert!(listed.contains(s.as_str()), "{s} not in {listed}");
    }
    screenshots(&b, "incident-storm").await;
    // Dark mode: dark background, light text, the root still stands out.
    b.color_scheme("dark").await;
    let colors = b
        .exec(
            "const b = getComputedStyle(document.body); return [b.backgroundColor, b.color];",
            vec![],
        )
        .await;
    let lum = |v: &Value| -> u32 {
        v.as_str()
            .unwrap_or_default()
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .filter_map(|x| x.trim().parse::<u32>().ok())
            .sum()
    };
    assert!(
        lum(&colors[0]) < 150 && lum(&colors[1]) > 500,
        "not dark: {colors}"
    );
    screenshots(&b, "incident-storm-dark").await;
    b.color_scheme("light").await;
    // The CMDB page of the root: what depends on it, its incident.
    b.click_on("#topology g.node.root").await;
    b.wait_text("h1", "pg-0", Duration::from_secs(5)).await;
    assert!(b.text_of("#recent").await.contains(&format!("#{id}")));
    let dependents = b
        .exec(
            "return document.querySelectorAll('#dependents li').length;",
            vec![],
        )
        .await;
    assert!(dependents.as_u64().is_some_and(|n| n > 0), "{dependents}");
    screenshots(&b, "ci").await;
    b.goto(&format!("{}/cis", d.base)).await;
    screenshots(&b, "cmdb").await;
    b.goto(&format!("{}/problems", d.base)).await;
    screenshots(&b, "problems").await;
    b.goto(&format!("{}/changes", d.base)).await;
    screenshots(&b, "changes").await;
    b.quit().await;
}

#[tokio::test]
async fn an_overspent_error_budget_is_red_on_the_services_page() {
    if !browser::enabled("browser::an_overspent_error_budget_is_red_on_the_services_page") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path(), "[slo]\nrefresh = \"1s\"\n").await;
    // A scripted outage: the fraud database down for two hours, against a
    // 99.9 % objective over 30 days (43 minutes of budget).
    let two_hours_ago = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    post(
        &d.base,
        "/api/v1/alerts/alertmanager",
        &webhook(
            "firing",
            "PostgresDown",
            json!({"cluster": "pg-0", "job": "postgres", "severity": "critical"}),
            &two_hours_ago,
        ),
        None,
    )
    .await;
    let active = get(&d.base, "/api/v1/incidents", None).await;
    let hurt: Vec<String> = active["incidents"][0]["impacted_services"]
        .as_array()
        .expect("impacted services")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    assert!(hurt.iter().any(|s| s == "fraud"), "{active}");
    let catalog = get(&d.base, "/api/v1/services", None).await;
    let untouched = catalog["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .find(|id| !hurt.iter().any(|h| h == id) && *id != "fraud")
        .expect("a service the outage does not touch")
        .to_string();
    // The SLO figures follow the store every `slo.refresh`: wait until the
    // API shows the budget spent, as the page will.
    let spent = Instant::now();
    loop {
        let catalog = get(&d.base, "/api/v1/services", None).await;
        let left = catalog["services"]
            .as_array()
            .and_then(|v| v.iter().find(|s| s["id"] == "fraud"))
            .and_then(|s| s["slos"][0]["figures"]["error_budget_remaining"].as_f64());
        if left.is_some_and(|l| l < 0.0) {
            break;
        }
        assert!(
            spent.elapsed() < Duration::from_secs(30),
            "the API never showed fraud's budget overspent: {catalog}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b = Browser::start(DESKTOP.0, DESKTOP.1).await;
    b.goto(&format!("{}/services", d.base)).await;
    let row = b
        .wait_text(
            "#services tr[data-service=\"fraud\"]",
            "overspent",
            Duration::from_secs(10),
        )
        .await;
    let _ = row;
    // Read in one script: a live update may replace the page meanwhile.
    let look = b
        .exec(
            "const row = document.querySelector('#services tr[data-service=\"fraud\"]');
             const bar = row.querySelector('.budget');
             return {
               class: bar.className,
               bar: getComputedStyle(bar).backgroundColor,
               label: getComputedStyle(row.querySelector('.budget-label.over')).color,
             };",
            vec![],
        )
        .await;
    assert!(
        look["class"].as_str().is_some_and(|c| c.contains("over")),
        "{look}"
    );
    for c in [&look["label"], &look["bar"]] {
        let rgb: Vec<u32> = c
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("rgba(")
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        assert!(
            rgb.len() >= 3 && rgb[0] > 150 && rgb[1] < 100 && rgb[2] < 100,
            "not red: {c}"
        );
    }
    // A service the outage does not touch keeps its budget.
    let other = b
        .text_of(&format!("#services tr[data-service=\"{untouched}\"]"))
        .await;
    assert!(other.contains("100% left"), "{other}");
    screenshots(&b, "services").await;
    b.quit().await;
}

#[tokio::test]
async fn without_a_token_the_board_asks_for_one_and_leaks_nothing() {
    if !browser::enabled("browser::without_a_token_the_board_asks_for_one_and_leaks_nothing") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = guarded_daemon(dir.path(), "ConfidentialPayrollOutage", "fraud-api").await;
    let b = Browser::start(DESKTOP.0, DESKTOP.1).await;
    for path in ["/", "/incidents/1", "/services", "/cis/pg-0"] {
        b.goto(&format!("{}{path}", d.base)).await;
        b.wait_text("h1", "Sign in", Duration::from_secs(5)).await;
        assert!(b.url().await.contains("/login?next="));
        let html = b.page_source().await;
        assert!(!html.contains("ConfidentialPayrollOutage"), "{path}");
        assert!(!html.contains("Depended on by"), "{path}");
        assert!(!html.contains("fraud"), "{path}");
    }
    screenshots(&b, "login").await;
    // A wrong token is refused on the form.
    b.find("#token").await.send_keys("guess").await;
    b.find("#sign-in").await.click().await;
    b.wait_text("#login-error", "not one of", Duration::from_secs(5))
        .await;
    // The right one goes where the user was going.
    sign_in(&b, &d.base, OPERATOR).await;
    b.wait_text(
        "#board",
        "ConfidentialPayrollOutage",
        Duration::from_secs(5),
    )
    .await;
    // The cookie is out of the page's reach.
    let visible = b.exec("return document.cookie;", vec![]).await;
    assert_eq!(visible, json!(""), "cookies readable by script: {visible}");
    b.quit().await;
}
