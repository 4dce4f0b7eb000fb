//! SIGHUP reloads rules atomically; a bad file keeps the old rules running.
//! Without a signal, rules and the CMDB reload when Kubernetes updates the
//! ConfigMap they are mounted from (a `..data` symlink swap).

use serde_json::{Value, json};
use std::time::{Duration, Instant};

mod support;

/// Suppresses every alert named Noisy.
const QUIET: &str = "rules:\n  - name: quiet\n    matchers: ['alertname=\"Noisy\"']\n    actions:\n      suppress: testing reload\n";
/// Not a valid rule file (there is no P9).
const BROKEN: &str = "rules:\n  - name: broken\n    actions:\n      priority: P9\n";

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

/// Waits until `outcome` ("success" or "failure") reloads were counted.
async fn reloads(base: &str, outcome: &str, want: f64) {
    wait_for(
        base,
        &format!("incidentd_rule_reloads_total{{outcome=\"{outcome}\"}}"),
        want,
    )
    .await;
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
    // Only the signal reloads here: the directory is not watched.
    let mut d = TestDaemon::new(&dir.path().join("data"), dir.path())
        .rules(&rules)
        .config("rules_reload_interval = \"0s\"\n")
        .start();
    d.wait_ready(Duration::from_secs(20)).await;
    let base = d.base.clone();
    assert_eq!(metric(&base, "incidentd_rules_loaded ").await, Some(1.0));

    // New rules: suppress everything named Noisy.
    std::fs::write(rules.join("b.yaml"), QUIET).unwrap();
    signal(d.pid(), "HUP");
    reloads(&base, "success", 1.0).await;
    assert_eq!(metric(&base, "incidentd_rules_loaded ").await, Some(2.0));
    let v = post(&base, "Noisy").await;
    assert_eq!(v["suppressed"], 1, "{v}");

    // A broken file: the reload fails and the two rules stay in force.
    std::fs::write(rules.join("c.yaml"), BROKEN).unwrap();
    signal(d.pid(), "HUP");
    reloads(&base, "failure", 1.0).await;
    assert_eq!(metric(&base, "incidentd_rules_loaded ").await, Some(2.0));
    let v = post(&base, "Noisy2").await;
    assert_eq!(v["new"], 1);
    let v = get(&base, "/api/v1/incidents").await;
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

/// Updates `dir` the way the kubelet updates a mounted ConfigMap: the
/// files go into a new hidden directory, a `..data_tmp` link to it is
/// renamed over `..data` (one atomic step), each visible name is a link
/// through `..data`, names no longer in the map go, and the old directory
/// is removed.
fn configmap_update(dir: &std::path::Path, version: u32, files: &[(&str, &str)]) {
    use std::os::unix::fs::symlink;
    let ts = format!("..2026_12_06_10_00_{version:02}.{version}");
    std::fs::create_dir_all(dir.join(&ts)).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(&ts).join(name), text).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    symlink(&ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        if std::fs::symlink_metadata(dir.join(name)).is_err() {
            symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with('.') && !files.iter().any(|(f, _)| *f == n) {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

const CMDB_V1: &str = "cis:\n  - id: web-1\n    class: host\n";
const CMDB_V2: &str = "cis:\n  - id: web-1\n    class: host\n  - id: web-2\n    class: host\n";

#[tokio::test]
async fn rules_and_cmdb_reload_when_their_configmaps_are_updated() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    let cmdb_dir = dir.path().join("cmdb");
    std::fs::create_dir(&rules).unwrap();
    std::fs::create_dir(&cmdb_dir).unwrap();
    let p1 = "rules:\n  - name: p1\n    actions:\n      priority: P1\n";
    configmap_update(&rules, 1, &[("a.yaml", p1)]);
    configmap_update(&cmdb_dir, 1, &[("cmdb.yaml", CMDB_V1)]);
    let mut d = TestDaemon::new(&dir.path().join("data"), dir.path())
        .rules(&rules)
        .cmdb(&cmdb_dir.join("cmdb.yaml"))
        .config("rules_reload_interval = \"200ms\"\n[cmdb]\nreload_interval = \"200ms\"\n")
        .start();
    d.wait_ready(Duration::from_secs(20)).await;
    let base = d.base.clone();
    assert_eq!(metric(&base, "incidentd_rules_loaded ").await, Some(1.0));

    // The map gains a rule that suppresses Noisy; a.yaml keeps its name
    // and now resolves to a new file.
    configmap_update(&rules, 2, &[("a.yaml", p1), ("b.yaml", QUIET)]);
    wait_for(&base, "incidentd_rules_loaded ", 2.0).await;
    let v = post(&base, "Noisy").await;
    assert_eq!(v["suppressed"], 1, "{v}");

    // Same names, same sizes, new content: the rule's priority changes.
    configmap_update(
        &rules,
        3,
        &[("a.yaml", &p1.replace("P1", "P2")), ("b.yaml", QUIET)],
    );
    reloads(&base, "success", 2.0).await;
    let v = post(&base, "Fresh").await;
    assert_eq!(v["new"], 1, "{v}");
    let list = get(&base, "/api/v1/incidents").await;
    assert_eq!(list["incidents"][0]["title"], "Fresh on h", "{list}");
    assert_eq!(list["incidents"][0]["priority"], "P2", "{list}");

    // A broken update keeps the rules in force.
    configmap_update(&rules, 4, &[("a.yaml", BROKEN)]);
    reloads(&base, "failure", 1.0).await;
    assert_eq!(metric(&base, "incidentd_rules_loaded ").await, Some(2.0));

    // The CMDB's map gains a CI.
    let cis = async || {
        get(&base, "/api/v1/cis").await["cis"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(cis().await, 1);
    configmap_update(&cmdb_dir, 2, &[("cmdb.yaml", CMDB_V2)]);
    support::wait_until(
        "the CMDB update took effect",
        Duration::from_secs(10),
        async || cis().await == 2,
    )
    .await;
    d.stop();
}
