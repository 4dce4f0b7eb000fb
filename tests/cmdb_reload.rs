//! The CMDB file reloads when it changes, without losing state; a broken
//! file keeps the last good CMDB. Runs the real binary.

use serde_json::{Value, json};
use std::time::Duration;

mod support;

use support::daemon::TestDaemon;

const V1: &str = "version: 1\nservices: [{ id: shop, tier: 1, owner: team-shop, sla: { response: { P1: 15m }, resolution: { P1: 4h } } }]\ncis:\n  - { id: db, class: database, match: { job: postgres }, owner: team-dba }\n  - { id: api, class: application, service: shop, match: { service: api }, depends_on: [db] }\n";
const V2: &str = "version: 1\nservices: [{ id: shop, tier: 1, owner: team-shop, sla: { response: { P1: 15m }, resolution: { P1: 4h } } }, { id: blog, tier: 3 }]\ncis:\n  - { id: db, class: database, match: { job: postgres }, owner: team-dba }\n  - { id: api, class: application, service: shop, match: { service: api }, depends_on: [db] }\n  - { id: blog-web, class: application, service: blog, match: { service: blog-web }, depends_on: [db] }\n";

async fn get(base: &str, path: &str) -> (u16, Value) {
    match reqwest::get(format!("{base}{path}")).await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null), // not listening yet
    }
}

async fn wait_for(what: &str, ok: impl AsyncFnMut() -> bool) {
    support::wait_until(what, Duration::from_secs(20), ok).await;
}

/// A daemon watching `dir/cmdb.yaml` (written with [`V1`]) every 200 ms,
/// with `extra` configuration; the daemon and the CMDB's path.
fn watching(dir: &std::path::Path, extra: &str) -> (support::daemon::Running, std::path::PathBuf) {
    let cmdb = dir.join("cmdb.yaml");
    std::fs::write(&cmdb, V1).unwrap();
    let config = dir.join("incidentd.toml");
    std::fs::write(
        &config,
        format!(
            "[cmdb]\nfile = {:?}\nreload_interval = \"200ms\"\n{extra}",
            cmdb.display().to_string()
        ),
    )
    .unwrap();
    let d = TestDaemon::new(&dir.join("data"), dir)
        .arg("--config")
        .arg(config.display().to_string())
        .start();
    (d, cmdb)
}

#[tokio::test]
async fn cmdb_file_reloads_on_change_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    // The alerts carry fixed 2026-03 dates: kept as given.
    let (d, cmdb) = watching(dir.path(), "[limits]\nmax_alert_age = \"100y\"\n");
    let base = d.base.clone();
    wait_for("readiness", async || get(&base, "/readyz").await.0 == 200).await;
    assert_eq!(get(&base, "/api/v1/cis/api").await.0, 200);
    assert_eq!(get(&base, "/api/v1/cis/blog-web").await.0, 404);

    let post = |labels: Value| support::post_alert(&base, labels);
    post(json!({"alertname": "PostgresDown", "job": "postgres", "severity": "critical"})).await;
    let metrics = async || {
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Open incidents by impacted service: the database outage hurts the
    // shop; only catalog services (and `none`) have series.
    let open_in = |text: &str, service: &str| -> i64 {
        text.lines()
            .filter(|l| {
                l.starts_with("incidentd_incidents_open{")
                    && l.contains(&format!("service=\"{service}\""))
                    && l.contains("state=\"open\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum()
    };
    wait_for("the shop's open incident in the gauges", async || {
        open_in(&metrics().await, "shop") == 1
    })
    .await;
    let text = metrics().await;
    assert_eq!(open_in(&text, "none"), 0, "{text}");
    assert!(!text.contains("service=\"blog\""), "{text}");

    // Edit the file: a new CI appears without a restart.
    std::fs::write(&cmdb, V2).unwrap();
    wait_for("the new CI", async || {
        get(&base, "/api/v1/cis/blog-web").await.0 == 200
    })
    .await;
    let (_, ci) = get(&base, "/api/v1/cis/db").await;
    assert_eq!(
        ci["impacted_services"],
        json!([{"id": "blog", "tier": 3}, {"id": "shop", "tier": 1}])
    );
    // State survived: the new CI's alert joins the incident opened before the reload.
    post(json!({"alertname": "HighErrorRate", "service": "blog-web", "severity": "warning"})).await;
    let (_, v) = get(&base, "/api/v1/incidents").await;
    let incidents = v["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{v}");
    assert_eq!(incidents[0]["root_ci"], "db");
    assert_eq!(
        incidents[0]["alert_fingerprints"].as_array().unwrap().len(),
        2
    );
    // The new catalog service is exported at once, at 0: the incident's
    // impact was set when it opened (shop).
    wait_for("the blog's series in the gauges", async || {
        metrics().await.contains("service=\"blog\"")
    })
    .await;
    let text = metrics().await;
    assert_eq!(open_in(&text, "blog"), 0, "{text}");
    assert_eq!(open_in(&text, "shop"), 1, "{text}");
    assert_eq!(open_in(&text, "none"), 0, "{text}");

    // The incident shows its SLA timers against the shop's P1 targets. Its
    // alert started on 2026-03-02, so both were breached long ago, at the
    // instants the targets ran out; nobody acknowledged it.
    let (s, detail) = get(&base, "/api/v1/incidents/1").await;
    assert_eq!(s, 200, "{detail}");
    let sla = &detail["sla"];
    assert_eq!(sla["response"]["target_seconds"], 900, "{sla}");
    assert_eq!(sla["response"]["status"], "breached", "{sla}");
    assert_eq!(
        sla["response"]["breached_at"], "2026-03-02T08:15:00.000Z",
        "{sla}"
    );
    assert_eq!(sla["resolution"]["target_seconds"], 14400, "{sla}");
    assert_eq!(
        sla["resolution"]["breached_at"], "2026-03-02T12:00:00.000Z",
        "{sla}"
    );
    assert_eq!(
        sla["resolution"]["warned_50_at"], "2026-03-02T10:00:00.000Z",
        "{sla}"
    );
    // And on the timeline, once each, at the instants they were passed.
    let sla_entries = |detail: &Value| -> Vec<(String, String)> {
        detail["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"].as_str().unwrap_or_default().starts_with("sla_"))
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["at"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    wait_for("the SLA entries on the timeline", async || {
        sla_entries(&get(&base, "/api/v1/incidents/1").await.1).len() >= 6
    })
    .await;
    let (_, detail) = get(&base, "/api/v1/incidents/1").await;
    let entries = sla_entries(&detail);
    let want: Vec<(String, String)> = [
        ("sla_warning", "2026-03-02T08:07:30.000Z"),
        ("sla_warning", "2026-03-02T08:11:15.000Z"),
        ("sla_breached", "2026-03-02T08:15:00.000Z"),
        ("sla_warning", "2026-03-02T10:00:00.000Z"),
        ("sla_warning", "2026-03-02T11:00:00.000Z"),
        ("sla_breached", "2026-03-02T12:00:00.000Z"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(sorted, want, "{detail}");
    // The value of an unlabelled series, or of one written exactly so.
    let gauge = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    // Two more timer passes of the engine (one a second) record nothing again.
    let ticks = || async { gauge(&metrics().await, "incidentd_engine_ticks_total").unwrap_or(0.0) };
    let seen = ticks().await;
    wait_for("two more engine ticks", async || {
        ticks().await >= seen + 2.0
    })
    .await;
    let (_, again) = get(&base, "/api/v1/incidents/1").await;
    assert_eq!(sla_entries(&again).len(), 6, "recorded once: {again}");
    // The same, as metrics: two running timers, both breached; once
    // acknowledged, the response timer is counted as completed, breached.
    wait_for("the SLA gauges", async || {
        let text = metrics().await;
        gauge(
            &text,
            r#"incidentd_sla_active{sla="response",status="breached"}"#,
        ) == Some(1.0)
            && gauge(
                &text,
                r#"incidentd_sla_active{sla="resolution",status="breached"}"#,
            ) == Some(1.0)
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/incidents/1/ack"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_for("the response timer to stop", async || {
        let text = metrics().await;
        gauge(
            &text,
            r#"incidentd_sla_active{sla="response",status="breached"}"#,
        ) == Some(0.0)
    })
    .await;
    let text = metrics().await;
    assert_eq!(
        gauge(
            &text,
            r#"incidentd_sla_completed_total{outcome="breached",sla="response"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        gauge(
            &text,
            r#"incidentd_sla_completed_total{outcome="met",sla="response"}"#
        ),
        Some(0.0),
        "{text}"
    );
    // Both alerts were bound to their CIs by match labels.
    assert_eq!(
        gauge(&text, r#"incidentd_alerts_bound_total{how="match"}"#),
        Some(2.0),
        "{text}"
    );
    // A broken file keeps the last good CMDB.
    std::fs::write(&cmdb, "cis:\n  - { id: x, depends_on: [nowhere] }\n").unwrap();
    wait_for("the failed reload to be counted", async || {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("incidentd_cmdb_reloads_total{outcome=\"failure\",source=\"file\"} 1")
    })
    .await;
    assert_eq!(get(&base, "/api/v1/cis/blog-web").await.0, 200);
    let (s, v) = get(&base, "/api/v1/problems").await;
    assert_eq!((s, v["problems"].as_array().map(Vec::len)), (200, Some(0)));
}

/// A second entry of an existing CI id, appended under a running daemon,
/// is refused as a fresh start and `check` refuse it: the reload fails,
/// is counted and logged at ERROR with the field and its line, and the
/// first entry stays in force.
#[tokio::test]
async fn a_duplicate_ci_id_fails_the_reload_and_keeps_the_last_good_cmdb() {
    let dir = tempfile::tempdir().unwrap();
    let (d, cmdb) = watching(dir.path(), "");
    let base = d.base.clone();
    wait_for("readiness", async || get(&base, "/readyz").await.0 == 200).await;
    let metrics = async || {
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let reloads = |text: &str, outcome: &str| -> Option<f64> {
        let series =
            format!("incidentd_cmdb_reloads_total{{outcome=\"{outcome}\",source=\"file\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
    };
    let before = metrics().await;
    assert_eq!(reloads(&before, "success"), Some(0.0), "{before}");

    // V1 has five lines; the duplicate is the sixth.
    let mut text = V1.to_string();
    text.push_str("  - { id: db, class: queue, match: { job: kafka } }\n");
    std::fs::write(&cmdb, &text).unwrap();
    wait_for("the failed reload to be counted", async || {
        reloads(&metrics().await, "failure") == Some(1.0)
    })
    .await;
    let text = metrics().await;
    assert_eq!(reloads(&text, "success"), Some(0.0), "{text}");
    assert!(text.contains("incidentd_cmdb_cis 2\n"), "{text}");
    // The first entry is still the one in force.
    let (s, ci) = get(&base, "/api/v1/cis/db").await;
    assert_eq!(s, 200, "{ci}");
    assert_eq!(ci["class"], "database", "{ci}");
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("CMDB reload failed"))
        .unwrap_or_else(|| panic!("no reload error in the log:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(":6: cis[2] (db).id: duplicate CI id \"db\" (first at cis[0])"),
        "{line}"
    );
    assert!(!log.contains("CMDB reloaded"), "{log}");
}

/// A CMDB rewritten in place, as `cp`, a shell redirect or an editor do
/// (truncated, then written in pieces), is read once it is whole: never
/// half-written (a parse failure) nor short of CIs. An emptied file keeps
/// the last good CMDB rather than unbinding every alert.
#[tokio::test]
async fn a_file_rewritten_in_place_is_read_only_when_whole() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (d, cmdb) = watching(dir.path(), "");
    let base = d.base.clone();
    wait_for("readiness", async || get(&base, "/readyz").await.0 == 200).await;
    let metrics = async || {
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let reloads = |text: &str, outcome: &str| -> Option<f64> {
        let series =
            format!("incidentd_cmdb_reloads_total{{outcome=\"{outcome}\",source=\"file\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.parse().ok())
    };

    // Emptied: a second of polls (five) changes nothing.
    std::fs::write(&cmdb, "").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let text = metrics().await;
    assert!(text.contains("incidentd_cmdb_cis 2\n"), "{text}");
    assert_eq!(reloads(&text, "success"), Some(0.0), "{text}");
    assert_eq!(reloads(&text, "failure"), Some(0.0), "{text}");
    assert_eq!(get(&base, "/api/v1/cis/api").await.0, 200);
    assert!(
        d.log_text()
            .contains("CMDB file is empty; keeping the last good CMDB"),
        "{}",
        d.log_text()
    );

    // V2 written in three pieces 40 ms apart, the way a slow writer does,
    // then V1 at once, several times over: each rewrite is one reload of
    // the whole file, nothing in between.
    let mut expected = 0.0;
    for round in 1..=4 {
        let mut f = std::fs::File::create(&cmdb).unwrap();
        let cuts = [0, V2.len() / 3, 2 * V2.len() / 3, V2.len()];
        for w in cuts.windows(2) {
            f.write_all(&V2.as_bytes()[w[0]..w[1]]).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        drop(f);
        expected += 1.0;
        wait_for("V2 to be read", async || {
            reloads(&metrics().await, "success") >= Some(expected)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = metrics().await;
        assert!(
            text.contains("incidentd_cmdb_cis 3\n"),
            "round {round}: {text}"
        );
        assert_eq!(
            reloads(&text, "success"),
            Some(expected),
            "round {round}: {text}"
        );
        std::fs::write(&cmdb, V1).unwrap();
        expected += 1.0;
        wait_for("V1 to be read", async || {
            reloads(&metrics().await, "success") >= Some(expected)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = metrics().await;
    assert_eq!(reloads(&text, "success"), Some(expected), "{text}");
    assert_eq!(reloads(&text, "failure"), Some(0.0), "{text}");
    assert!(text.contains("incidentd_cmdb_cis 2\n"), "{text}");
}
