//! What the on-call engineer reads in the daemon's log in the first hour:
//! the startup summary, one INFO line per step of an incident's life, the
//! cause of every failed delivery and each move of a destination's circuit
//! breaker; and no colour escapes in a file. Runs the real binary with its
//! log going to a file, as systemd or a container runtime would.

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::daemon::TestDaemon;

const CMDB: &str = "version: 1
services:
  - { id: shop, tier: 1 }
cis:
  - { id: pg-0, class: database, match: { job: postgres } }
  - { id: shop-api, class: application, service: shop, match: { service: shop-api }, depends_on: [pg-0] }
";

/// A webhook receiver that answers 503 with a message until `up`.
struct Receiver {
    up: AtomicBool,
    calls: AtomicUsize,
}

async fn receiver() -> (Arc<Receiver>, String) {
    let state = Arc::new(Receiver {
        up: AtomicBool::new(false),
        calls: AtomicUsize::new(0),
    });
    let s = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let s = s.clone();
            async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                if s.up.load(Ordering::SeqCst) {
                    (axum::http::StatusCode::OK, axum::Json(json!({"ok": true})))
                } else {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({"message": "receiver in maintenance"})),
                    )
                }
            }
        }),
    );
    let url = support::serve(app, "the webhook receiver").await;
    (state, url)
}

async fn post(base: &str, body: Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/alerts/alertmanager"))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert!(r.status().is_success(), "{}", r.status());
}

/// Polls the daemon's log until a line has every one of `needles`.
async fn log_line(d: &support::daemon::Running, what: &str, needles: &[&str]) -> String {
    support::eventually(what, 20, async || {
        d.log_text()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    })
    .await
}

#[tokio::test]
async fn the_log_tells_the_first_hour() {
    let dir = tempfile::tempdir().unwrap();
    let cmdb = dir.path().join("cmdb.yaml");
    std::fs::write(&cmdb, CMDB).unwrap();
    let (hook, hook_url) = receiver().await;
    let mut d = TestDaemon::new(&dir.path().join("data"), dir.path())
        .config(&format!(
            "[incident]\nauto_resolve_hold = \"0s\"\n[limits]\nmax_alert_age = \"100y\"\n\
             [[outbound.destinations]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{hook_url}/hook\"\nsecret = \"s3cret\"\n\
             backoff_base = \"50ms\"\nbackoff_max = \"100ms\"\nbreaker_failures = 2\nbreaker_cool_down = \"500ms\"\n"
        ))
        .cmdb(&cmdb)
        // Not a terminal, and no NO_COLOR either: plain text all the same.
        .env_remove("NO_COLOR")
        .start();
    d.wait_ready(Duration::from_secs(30)).await;
    let base = d.base.clone();

    // The startup summary: where to point Alertmanager, what is loaded.
    let url = format!("{base}/api/v1/alerts/alertmanager");
    log_line(
        &d,
        "the webhook URL",
        &["INFO", &format!("Alertmanager webhook URL: {url}")],
    )
    .await;
    let text = d.log_text();
    for want in [
        format!("incidentd ready: listening on {base}"),
        format!(
            "store: sqlite {}",
            dir.path().join("data/incidentd.db").display()
        ),
        format!("CMDB: {} (2 CIs, 1 services)", cmdb.display()),
        "destinations: hook (webhook)".to_string(),
        "kafka: off".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} not in the log:\n{text}");
    }
    assert!(
        text.contains("  rules: ") && text.contains(" from "),
        "{text}"
    );

    // An outage opens an incident: one INFO line with its id, priority,
    // root CI and title.
    post(
        &base,
        json!({"version": "4", "alerts": [{"status": "firing",
            "labels": {"alertname": "PostgresDown", "job": "postgres", "severity": "critical"},
            "startsAt": "2026-03-02T08:00:00Z"}]}),
    )
    .await;
    let opened = log_line(&d, "the opened line", &["incident 1 opened"]).await;
    for want in [
        " INFO ",
        "incident=1",
        "event=\"opened\"",
        "priority=P1",
        "root_ci=\"pg-0\"",
        "title=PostgresDown",
        "incident 1 opened: P1 \"PostgresDown\", root CI pg-0",
    ] {
        assert!(opened.contains(want), "{want:?} not in {opened}");
    }
    // The receiver is down: each failure says where, for which incident,
    // the status and the receiver's own words; the breaker opens once.
    let failed = log_line(
        &d,
        "the failed delivery",
        &["outbound delivery to hook failed"],
    )
    .await;
    for want in [
        " WARN ",
        "destination=hook",
        "incident=1",
        "event=\"opened\"",
        "status=503",
        "HTTP 503: {\"message\":\"receiver in maintenance\"}",
    ] {
        assert!(failed.contains(want), "{want:?} not in {failed}");
    }
    log_line(
        &d,
        "the breaker opening",
        &[
            "WARN",
            "circuit breaker of hook open after 2 failures in a row",
        ],
    )
    .await;
    log_line(&d, "a failed probe", &["the half-open probe failed"]).await;

    // The alert resolves: so does the incident, and the line says why.
    post(
        &base,
        json!({"version": "4", "alerts": [{"status": "resolved",
            "labels": {"alertname": "PostgresDown", "job": "postgres", "severity": "critical"},
            "startsAt": "2026-03-02T08:00:00Z", "endsAt": "2026-03-02T08:20:00Z"}]}),
    )
    .await;
    let resolved = log_line(&d, "the resolved line", &["incident 1 resolved"]).await;
    for want in [
        " INFO ",
        "incident=1",
        "event=\"resolved\"",
        "incident 1 resolved (auto-resolved: all 1 alerts resolved",
    ] {
        assert!(resolved.contains(want), "{want:?} not in {resolved}");
    }

    // The receiver comes back: the probe closes the breaker, and the
    // backlog the line gives is the resolved update still waiting behind
    // the opened one (it used to say 0 here).
    hook.up.store(true, Ordering::SeqCst);
    let recovered = log_line(&d, "the recovery", &["destination hook recovered"]).await;
    assert!(
        recovered.contains("circuit breaker closed; 1 message(s) still to send"),
        "{recovered}"
    );
    assert!(recovered.contains("backlog=1"), "{recovered}");
    support::eventually("both updates delivered", 20, async || {
        (hook.calls.load(Ordering::SeqCst) >= 2
            && d.log_text().contains("half-open: one probe call"))
        .then_some(())
    })
    .await;

    d.stop();
    if std::env::var_os("PEEK").is_some() {
        eprintln!("{}", d.log_text());
    }
    let bytes = std::fs::read(&d.log).unwrap();
    assert!(
        !bytes.contains(&0x1b),
        "colour escapes in a log file:\n{}",
        String::from_utf8_lossy(&bytes)
    );
}
