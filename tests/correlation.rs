//! CMDB correlation as an on-call engineer sees it: one incident per root
//! cause, impact and priority from the business services, change windows,
//! problems. Runs the real pipeline (`replay_bodies`) on small CMDBs.

use incidentd::app::{self, CmdbChoice, Offline};
use incidentd::domain::{Incident, Problem};
use serde_json::json;
use std::path::PathBuf;

const CMDB: &str = r#"
version: 1
services:
  - { id: shop, tier: 1, owner: team-shop }
  - { id: search, tier: 2, owner: team-search }
  - { id: blog, tier: 3, owner: team-blog }
cis:
  - { id: host-db-1, class: host, hostnames: [db-1], owner: team-platform }
  - { id: db, class: database, match: { job: postgres, cluster: main }, depends_on: [host-db-1], owner: team-dba, runbook: "https://runbooks.example.com/db" }
  - { id: shop-api, class: application, service: shop, match: { service: shop-api }, depends_on: [db] }
  - { id: search-api, class: application, service: search, match: { service: search-api }, depends_on: [db] }
  - { id: blog-web, class: application, service: blog, match: { service: blog-web }, depends_on: [db], owner: team-blog }
  - { id: host-cache-1, class: host, hostnames: [cache-1], owner: team-platform }
  - { id: cache, class: cache, match: { job: redis }, depends_on: [host-cache-1], owner: team-platform }
  - { id: cart-api, class: application, service: shop, match: { service: cart-api }, depends_on: [cache] }
"#;

fn setup(changes: Option<serde_json::Value>) -> (Offline, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cmdb = dir.path().join("cmdb.yaml");
    std::fs::write(&cmdb, CMDB).unwrap();
    let changes_file = changes.map(|c| {
        let p = dir.path().join("changes.json");
        std::fs::write(&p, c.to_string()).unwrap();
        p
    });
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let setup = app::offline_setup(
        None,
        Some(rules),
        CmdbChoice::File(cmdb),
        changes_file.as_deref(),
    )
    .unwrap();
    (setup, dir)
}

/// One Alertmanager body with one alert; `end` makes it resolved.
fn body(labels: serde_json::Value, start: &str, end: Option<&str>) -> (String, Vec<u8>) {
    let alert = json!({
        "status": if end.is_some() { "resolved" } else { "firing" },
        "labels": labels,
        "annotations": {},
        "startsAt": start,
        "endsAt": end.unwrap_or("0001-01-01T00:00:00Z"),
    });
    let b = json!({"version": "4", "status": "firing", "alerts": [alert]});
    ("test".into(), b.to_string().into_bytes())
}

/// A firing alert with `labels` that started at `hms` on the test day.
fn firing(labels: serde_json::Value, hms: &str) -> (String, Vec<u8>) {
    body(labels, &t(hms), None)
}

/// `alertname` on the application CI of `service`.
fn app_alert(alertname: &str, service: &str, severity: &str, hms: &str) -> (String, Vec<u8>) {
    firing(
        json!({"alertname": alertname, "service": service, "severity": severity}),
        hms,
    )
}

/// The shared database down.
fn postgres_down(hms: &str) -> (String, Vec<u8>) {
    firing(
        json!({"alertname": "PostgresDown", "job": "postgres", "cluster": "main", "severity": "critical"}),
        hms,
    )
}

fn t(hms: &str) -> String {
    format!("2026-03-02T{hms}Z")
}

async fn run(setup: Offline, bodies: Vec<(String, Vec<u8>)>) -> (Vec<Incident>, Vec<Problem>) {
    let out = app::replay_bodies(setup, bodies).await.unwrap();
    (out.incidents, out.problems)
}

fn with_alerts(incidents: &[Incident]) -> Vec<&Incident> {
    incidents
        .iter()
        .filter(|i| !i.alert_fingerprints.is_empty())
        .collect()
}

#[tokio::test]
async fn a_late_root_cause_absorbs_its_dependents_incidents() {
    let (s, _d) = setup(None);
    let bodies = vec![
        app_alert("HighErrorRate", "blog-web", "warning", "08:00:10"),
        app_alert("HighErrorRate", "search-api", "warning", "08:00:20"),
        // The database alert arrives last, minutes later in delivery, though it started first.
        postgres_down("08:00:00"),
        app_alert("HighErrorRate", "shop-api", "critical", "08:03:00"),
    ];
    let (all, _) = run(s, bodies).await;
    let live = with_alerts(&all);
    assert_eq!(live.len(), 1, "one incident for one root cause: {all:#?}");
    let inc = live[0];
    assert_eq!(inc.root_ci.as_deref(), Some("db"));
    assert_eq!(inc.alert_fingerprints.len(), 4);
    assert_eq!(inc.impacted_services, vec!["blog", "search", "shop"]);
    assert_eq!(
        inc.assignment_group.as_deref(),
        Some("team-dba"),
        "owner of the root CI"
    );
    assert_eq!(
        inc.priority.as_str(),
        "P1",
        "tier-1 service hurt x critical"
    );
    assert!(
        inc.links
            .runbooks
            .iter()
            .any(|r| &**r == "https://runbooks.example.com/db"),
        "runbook from the CI record"
    );
    // The second dependent's alert did not open an incident of its own:
    // two of db's three dependents alerting named db the inferred root at
    // once, and db's own alert then confirmed it.
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(!inc.root_inferred, "confirmed by db's own alert");
}

#[tokio::test]
async fn a_late_root_cause_takes_over_when_no_root_can_be_inferred() {
    // Inference off: each dependent opens its own incident, and the late
    // root merges them.
    let dir = tempfile::tempdir().unwrap();
    let cmdb = dir.path().join("cmdb.yaml");
    std::fs::write(&cmdb, CMDB).unwrap();
    let config = dir.path().join("incidentd.toml");
    std::fs::write(&config, "[correlation]\ninfer_min_dependents = 0\n").unwrap();
    let s = app::offline_setup(
        Some(config.as_path()),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")),
        CmdbChoice::File(cmdb),
        None,
    )
    .unwrap();
    let bodies = vec![
        app_alert("HighErrorRate", "blog-web", "warning", "08:00:10"),
        app_alert("HighErrorRate", "search-api", "warning", "08:00:20"),
        postgres_down("08:00:00"),
    ];
    let (all, _) = run(s, bodies).await;
    let live = with_alerts(&all);
    assert_eq!(live.len(), 1, "{all:#?}");
    assert_eq!(live[0].root_ci.as_deref(), Some("db"));
    let merged: Vec<&Incident> = all
        .iter()
        .filter(|i| i.links.merged_into == Some(live[0].id))
        .collect();
    assert_eq!(merged.len(), 1, "{all:#?}");
    assert_eq!(merged[0].state.as_str(), "resolved");
}

#[tokio::test]
async fn unrelated_failures_at_the_same_moment_stay_separate() {
    let (s, _d) = setup(None);
    let bodies = vec![
        postgres_down("08:00:00"),
        firing(
            json!({"alertname": "RedisDown", "job": "redis", "severity": "critical"}),
            "08:00:00",
        ),
        app_alert("HighErrorRate", "cart-api", "critical", "08:00:30"),
        app_alert("HighErrorRate", "shop-api", "critical", "08:00:30"),
    ];
    let (all, _) = run(s, bodies).await;
    let live = with_alerts(&all);
    assert_eq!(live.len(), 2, "{all:#?}");
    let by_root = |r: &str| {
        live.iter()
            .find(|i| i.root_ci.as_deref() == Some(r))
            .unwrap()
    };
    assert_eq!(by_root("db").alert_fingerprints.len(), 2);
    assert_eq!(by_root("cache").alert_fingerprints.len(), 2);
    assert_eq!(by_root("cache").impacted_services, vec!["shop"]);
}

#[tokio::test]
async fn later_alerts_outside_the_window_open_their_own_incident() {
    let (s, _d) = setup(None);
    let bodies = vec![
        postgres_down("08:00:00"),
        // 40 minutes later, on a dependent: a different problem.
        app_alert("HighLatency", "blog-web", "warning", "08:40:00"),
    ];
    let (all, _) = run(s, bodies).await;
    assert_eq!(with_alerts(&all).len(), 2, "{all:#?}");
}

#[tokio::test]
async fn priority_rises_when_impact_widens() {
    let (s, _d) = setup(None);
    let bodies = vec![
        app_alert("HighErrorRate", "blog-web", "critical", "08:00:00"),
        postgres_down("08:01:00"),
    ];
    let store_out = app::replay_bodies(s, bodies).await.unwrap();
    let inc = store_out
        .incidents
        .iter()
        .find(|i| !i.alert_fingerprints.is_empty())
        .unwrap();
    assert_eq!(inc.root_ci.as_deref(), Some("db"));
    assert_eq!(inc.priority.as_str(), "P1");
    // Opened as the blog's problem (tier 3: low impact → P3), then raised.
    assert_eq!(inc.impact.get(), 1);
}

#[tokio::test]
async fn change_windows_suppress_the_ci_and_mark_dependents_change_related() {
    let changes = json!([{"id": "CHG1", "ci": "host-db-1", "state": "approved",
        "start": "2026-03-02T08:00:00Z", "end": "2026-03-02T08:30:00Z", "summary": "patching"}]);
    let (s, _d) = setup(Some(changes));
    let bodies = vec![
        // The host under change: recorded, no incident.
        firing(
            json!({"alertname": "HostDown", "instance": "db-1:9100", "severity": "critical"}),
            "08:05:00",
        ),
        // A dependent failing during the change: an incident, linked to it.
        app_alert("HighErrorRate", "shop-api", "critical", "08:06:00"),
        // The host again, 10 minutes after the window: change-related, not suppressed.
        firing(
            json!({"alertname": "HostHighLoad", "instance": "db-1:9100", "severity": "warning"}),
            "08:40:00",
        ),
    ];
    let (all, _) = run(s, bodies).await;
    let live = with_alerts(&all);
    assert_eq!(live.len(), 2, "{all:#?}");
    assert!(
        live.iter()
            .all(|i| i.links.change.as_deref() == Some("CHG1")),
        "{live:#?}"
    );
    assert!(
        live.iter().all(|i| !i.title.starts_with("HostDown")),
        "the in-window alert opened nothing"
    );
}

#[tokio::test]
async fn recurring_incidents_open_a_problem_and_list_their_predecessors() {
    let (s, _d) = setup(None);
    let mut bodies = Vec::new();
    for day in ["02", "03", "04"] {
        let start = format!("2026-03-{day}T08:00:00Z");
        let end = format!("2026-03-{day}T08:10:00Z");
        let labels = json!({"alertname": "RedisDown", "job": "redis", "severity": "critical", "attempt": day});
        bodies.push(body(labels.clone(), &start, None));
        bodies.push(body(labels, &start, Some(&end)));
    }
    let (all, problems) = run(s, bodies).await;
    let live = with_alerts(&all);
    assert_eq!(live.len(), 3);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = &problems[0];
    assert_eq!(p.root_ci.as_deref(), Some("cache"));
    assert_eq!(p.alertname, "RedisDown");
    assert_eq!(p.incidents.len(), 3);
    for i in &live {
        assert_eq!(
            i.links.problem.as_deref(),
            Some(p.id.as_str()),
            "every incident links the problem: {i:#?}"
        );
    }
    let third = live.iter().max_by_key(|i| i.opened_at).unwrap();
    assert_eq!(
        third.links.similar.len(),
        2,
        "the new one lists the earlier ones"
    );
}
