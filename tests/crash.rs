//! kill -9 at any moment, restart: no accepted alert is lost and no incident
//! is duplicated. Runs the real binary against a real SQLite file.

use incidentd::domain::{Fingerprint, LabelSet};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::daemon::{Running, TestDaemon};

/// A daemon on `dir`'s `data` directory, ready; its log goes to `dir`.
async fn start(dir: &std::path::Path) -> Running {
    let mut d = TestDaemon::new(&dir.join("data"), dir)
        .env("RUST_LOG", "warn")
        .start();
    d.wait_ready(Duration::from_secs(20)).await;
    d
}

fn labels(host: usize, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("alertname".to_string(), name.to_string()),
        ("instance".to_string(), format!("host-{host}:9100")),
        ("severity".to_string(), "critical".to_string()),
    ])
}

fn body(batch: usize) -> (String, Vec<Fingerprint>) {
    let mut alerts = vec![];
    let mut fps = vec![];
    for k in 0..20 {
        // 20 hosts x 2 alert names per batch; names share a host so that
        // some alerts join incidents opened by others.
        let host = batch * 10 + k / 2;
        let l = labels(host, if k % 2 == 0 { "HostDown" } else { "HighLoad" });
        let ls: LabelSet = l.clone().into_iter().collect();
        fps.push(Fingerprint::of_labels(&ls));
        alerts.push(json!({"status": "firing", "labels": l, "annotations": {}, "startsAt": "2026-03-02T08:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}));
    }
    (
        json!({"version": "4", "status": "firing", "alerts": alerts}).to_string(),
        fps,
    )
}

/// Every incident, following `next_before` pages as a client would.
async fn all_incidents(base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let v: Value = reqwest::get(format!(
            "{base}/api/v1/incidents?state=all&limit=1000{before}"
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        out.extend(v["incidents"].as_array().unwrap().iter().cloned());
        match v["next_before"].as_i64() {
            Some(id) => before = format!("&before={id}"),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<HashSet<Fingerprint>>> = Arc::default();
    let mut next_batch = 0usize;
    for (round, kill_after_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let d = start(dir.path()).await;
        let stop_at = Instant::now() + Duration::from_millis(kill_after_ms);
        let mut tasks = vec![];
        for w in 0..4 {
            let base = d.base.clone();
            let acked = acked.clone();
            let first = next_batch + w * 1000;
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut b = first;
                while Instant::now() < stop_at + Duration::from_millis(500) {
                    let (text, fps) = body(b);
                    match client
                        .post(format!("{base}/api/v1/alerts/alertmanager"))
                        .body(text)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => acked.lock().unwrap().extend(fps),
                        _ => {}
                    }
                    b += 1;
                }
            }));
        }
        tokio::time::sleep_until(stop_at.into()).await;
        drop(d); // SIGKILL mid-stream
        for t in tasks {
            t.await.unwrap();
        }
        next_batch += 4000;
        eprintln!(
            "round {round}: killed after {kill_after_ms} ms; {} alerts acknowledged so far",
            acked.lock().unwrap().len()
        );
    }
    let d = start(dir.path()).await;
    let incidents = all_incidents(&d.base).await;
    let mut seen: HashSet<Fingerprint> = HashSet::new();
    let mut keys: HashSet<String> = HashSet::new();
    for i in &incidents {
        assert!(
            keys.insert(i["key"].as_str().unwrap().to_string()),
            "duplicate incident for key {}",
            i["key"]
        );
        for f in i["alert_fingerprints"].as_array().unwrap() {
            let fp = Fingerprint::parse(f.as_str().unwrap()).unwrap();
            assert!(seen.insert(fp), "alert {fp} is in two incidents");
        }
    }
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 100,
        "the test must have delivered alerts ({} acked)",
        acked.len()
    );
    let lost: Vec<_> = acked.iter().filter(|f| !seen.contains(f)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged alerts lost after kill -9, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // Each host has exactly one incident per alert name and the two names
    // never merge: incidents = distinct (host, alertname) pairs delivered.
    assert_eq!(
        incidents.len(),
        seen.len(),
        "one incident per (alertname, host)"
    );
}
