//! `http.shutdown_delay`: after SIGTERM the real daemon keeps serving
//! (ingest included, durable before its 2xx) with `/readyz` answering 503
//! `stopping: true`, so that load balancers and Kubernetes endpoints take
//! it out before its listener closes; then it stops as it always did, with
//! status 0. A second SIGTERM cuts the delay short.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::daemon::{Running, TestDaemon, signal};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// A daemon with `shutdown_delay`, ready.
async fn daemon(dir: &std::path::Path, delay: &str) -> Running {
    let mut d = TestDaemon::new(&dir.join("data"), dir)
        .config(&format!("[http]\nshutdown_delay = \"{delay}\"\n"))
        .start();
    d.wait_ready(Duration::from_secs(30)).await;
    d
}

/// Until `/readyz` says the daemon is stopping; its answer.
async fn stopping(c: &reqwest::Client, d: &Running) -> Value {
    support::wait_ok(
        "/readyz to say stopping",
        Duration::from_secs(10),
        async || {
            let (status, body) = support::get_text(c, &format!("{}/readyz", d.base)).await?;
            let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            if status == 503 && v["stopping"] == json!(true) {
                Ok(v)
            } else {
                Err(format!("HTTP {status}: {body}"))
            }
        },
    )
    .await
}

/// Until the process exits (within `within` of `since`); its status.
async fn exit_status(
    d: &mut Running,
    since: Instant,
    within: Duration,
) -> std::process::ExitStatus {
    loop {
        if let Some(status) = d.exited() {
            return status;
        }
        assert!(
            since.elapsed() < within,
            "incidentd still running {within:?} after SIGTERM:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stored alerts named `alertname`.
async fn alerts_named(c: &reqwest::Client, base: &str, alertname: &str) -> Vec<Value> {
    let v = support::get_json(c, &format!("{base}/api/v1/alerts?alertname={alertname}"))
        .await
        .expect("list alerts");
    v["alerts"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_keeps_serving_for_the_delay_with_readyz_failing_then_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client();
    let mut d = daemon(dir.path(), "3s").await;
    let asked = Instant::now();
    signal(d.pid(), "TERM");

    let ready = stopping(&c, &d).await;
    assert_eq!(ready["ready"], json!(false), "{ready}");
    assert_eq!(ready["store"], json!("ok"), "{ready}");

    // An Alertmanager notification in the window is taken as usual: the
    // 2xx means it is durable.
    let body = json!({"version": "4", "status": "firing", "receiver": "incidentd",
        "alerts": [{"status": "firing",
            "labels": {"alertname": "SentWhileStopping", "job": "postgres", "severity": "critical"},
            "startsAt": "2026-03-02T08:00:00Z"}]});
    let r = c
        .post(format!("{}/api/v1/alerts/alertmanager", d.base))
        .json(&body)
        .send()
        .await
        .expect("the listener still takes connections during the delay");
    let status = r.status();
    let answer = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "HTTP {status}: {answer}");
    // The rest of the API still answers too (the list reads the tables,
    // which may trail the journal by a flush).
    support::wait_ok("the alert listed", Duration::from_secs(2), async || {
        let seen = alerts_named(&c, &d.base, "SentWhileStopping").await;
        if seen.len() == 1 {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    let within_delay = asked.elapsed();
    assert!(
        d.exited().is_none() && within_delay < Duration::from_secs(3),
        "the checks took {within_delay:?}: they did not run inside the delay"
    );
    assert_eq!(stopping(&c, &d).await["stopping"], json!(true));

    let status = exit_status(&mut d, asked, Duration::from_secs(30)).await;
    let took = asked.elapsed();
    assert!(status.success(), "{status}:\n{}", d.log_text());
    assert!(
        took >= Duration::from_secs(3),
        "exited {took:?} after SIGTERM, before the delay ended"
    );
    let log = d.log_text();
    for line in [
        "stopping in 3s",
        "shutting down: finishing requests",
        "stopped",
    ] {
        assert!(log.contains(line), "{line:?} not in the log:\n{log}");
    }
    drop(d);

    // The alert taken during the delay is in the record.
    let mut d = TestDaemon::new(&dir.path().join("data"), dir.path())
        .name("restarted")
        .start();
    d.wait_ready(Duration::from_secs(30)).await;
    let kept = alerts_named(&c, &d.base, "SentWhileStopping").await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["labels"]["job"], json!("postgres"), "{kept:?}");
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_delay_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = client();
    let mut d = daemon(dir.path(), "60s").await;
    let asked = Instant::now();
    signal(d.pid(), "TERM");
    // The first is taken (not merged with the second by the kernel).
    stopping(&c, &d).await;
    assert!(d.exited().is_none(), "exited before the second SIGTERM");
    signal(d.pid(), "TERM");
    let status = exit_status(&mut d, asked, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}:\n{}", d.log_text());
    let log = d.log_text();
    assert!(
        log.contains("second stop request"),
        "no line about the second request:\n{log}"
    );
}
