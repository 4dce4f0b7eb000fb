//! SIGHUP reloads rules atomically; a bad file keeps the old rules running.

use serde_json::{Value, json};
use std::time::{Duration, Instant};

mod support;

use support::daemon::{TestDaemon, signal};

async fn post(base: &str, name: &str) -> Value {
    support::post_alert(
        base,
        json!({"alertname": name, "instance": "h:1", "severity": "critical"}),
    )
    .await
}

async fn metric(base: &str, line_prefix: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn wait_for(base: &str, prefix: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(base, prefix).await != Some(want) {
        assert!(Instant::now() < deadline, "{prefix} never became {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_rules_and_keeps_old_ones_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("a.yaml"),
        "rules:\n  - name: p1\n    actions:\n      priority: P1\n",
    )
    .unwrap();
    let mut d = TestDaemon::new(&dir.path().join("data"), dir.path())
        .rules(&rules)
        .start();
    d.wait_ready(Duration::from_secs(20)).await;
    let base = d.base.clone();
    assert_eq!(metric(&base, "incidentd_rules_loaded ").await, Some(1.0));

    // New rules: suppress everything named Noisy.
    std::fs::write(
        rules.join("b.yaml"),
        "rules:\n  - name: quiet\n    matchers: ['alertname=\"Noisy\"']\n    actions:\n      suppress: testing reload\n",
    )
    .unwrap();
    signal(d.pid(), "HUP");
    wait_for(
        &base,
        "incidentd_rule_reloads_total{outcome=\"success\"}",
        1.0,
    )
    .await;
    assert_eq!(metric(&base, "incidentd_rules_loaded ").await, Some(2.0));
    let v = post(&base, "Noisy").await;
    assert_eq!(v["suppressed"], 1, "{v}");

    // A broken file: the reload fails and the two rules stay in force.
    std::fs::write(
        rules.join("c.yaml"),
        "rules:\n  - name: broken\n    actions:\n      priority: P9\n",
    )
    .unwrap();
    signal(d.pid(), "HUP");
    wait_for(
        &base,
        "incidentd_rule_reloads_total{outcome=\"failure\"}",
        1.0,
    )
    .await;
    assert_eq!(metric(&base, "incidentd_rules_loaded ").await, Some(2.0));
    let v = post(&base, "Noisy2").await;
    assert_eq!(v["new"], 1);
    let v: Value = reqwest::get(format!("{base}/api/v1/incidents"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let titles: Vec<&str> = v["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        vec!["Noisy2 on h"],
        "Noisy was suppressed, Noisy2 opened under the old rules"
    );
    assert_eq!(v["incidents"][0]["priority"], "P1", "rule p1 still applies");
}
