//! The store failing under the daemon, against the real binary: a database
//! file deleted or replaced while running is noticed within seconds
//! (`/readyz` 503, ingest 503 at once, an ERROR line, a metric) and never
//! written to; a store that cannot be opened at start is retried until it
//! can, with `/healthz` alive and `/readyz` saying why meanwhile.

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

mod support;

use support::daemon::{Running, TestDaemon};

fn spawn(dir: &Path, data: &Path) -> Running {
    TestDaemon::new(data, dir)
        .env("INCIDENTD_CONFIG__LOG_FORMAT", "json")
        .start()
}

async fn get(client: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let r = client.get(url).send().await.ok()?;
    let s = r.status().as_u16();
    Some((s, r.json().await.unwrap_or(Value::Null)))
}

async fn post_alert(client: &reqwest::Client, base: &str, name: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let r = client
        .post(format!("{base}/api/v1/alerts"))
        .json(&json!([{"labels": {"alertname": name, "instance": "h:1"}, "status": "firing"}]))
        .send()
        .await
        .expect("answer");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null), started.elapsed())
}

async fn until(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("client")
}

/// Ingest refused at once and `/readyz` failing, after `break_it`.
async fn lost_store(break_it: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = spawn(dir.path(), &data);
    let c = client();
    until("ready", 20, async || {
        get(&c, &format!("{}/readyz", d.base))
            .await
            .is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert_eq!(post_alert(&c, &d.base, "BeforeTheLoss").await.0, 200);
    break_it(&data);
    until("/readyz to fail", 10, async || {
        get(&c, &format!("{}/readyz", d.base))
            .await
            .is_some_and(|(s, v)| s == 503 && v["store"] == "failing")
    })
    .await;
    let (s, v, took) = post_alert(&c, &d.base, "AfterTheLoss").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["detail"]["store"], "lost", "{v}");
    assert!(
        took < Duration::from_secs(2),
        "refused at once, not after the request timeout: {took:?}"
    );
    until("an ERROR line", 10, async || {
        std::fs::read_to_string(&d.log).is_ok_and(|log| {
            log.lines()
                .any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("the store is lost"))
        })
    })
    .await;
    let m = c
        .get(format!("{}/metrics", d.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(m.contains("incidentd_store_lost_total 1"), "counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_is_noticed_and_never_written() {
    lost_store(|data| {
        for f in std::fs::read_dir(data).expect("data dir") {
            let p = f.expect("entry").path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("incidentd.db"))
            {
                std::fs::remove_file(p).expect("rm");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_database_is_noticed() {
    lost_store(|data| {
        // Copied over (another file at the same path), as a careless
        // restore would do.
        let db = data.join("incidentd.db");
        let copy = data.join("copy.db");
        std::fs::copy(&db, &copy).expect("copy");
        std::fs::rename(&copy, &db).expect("rename over");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_open_at_start_is_retried_until_it_can() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file where the data directory should be: the store cannot open
    // (as root, permissions would not stop it; this does).
    let data = dir.path().join("data");
    std::fs::write(&data, "in the way").expect("block");
    let d = spawn(dir.path(), &data);
    let c = client();
    until("/healthz", 20, async || {
        get(&c, &format!("{}/healthz", d.base))
            .await
            .is_some_and(|(s, _)| s == 200)
    })
    .await;
    let (s, v) = get(&c, &format!("{}/readyz", d.base))
        .await
        .expect("readyz");
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["store"], "opening", "{v}");
    until("the cause on /readyz", 10, async || {
        get(&c, &format!("{}/readyz", d.base))
            .await
            .is_some_and(|(_, v)| v["error"].as_str().is_some_and(|e| e.contains("data")))
    })
    .await;
    let (s, v, _) = post_alert(&c, &d.base, "WhileOpening").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["detail"]["store"], "opening", "{v}");
    // The operator clears the way: no restart needed.
    std::fs::remove_file(&data).expect("unblock");
    until("ready after the fix", 40, async || {
        get(&c, &format!("{}/readyz", d.base))
            .await
            .is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert_eq!(post_alert(&c, &d.base, "AfterTheFix").await.0, 200);
}
