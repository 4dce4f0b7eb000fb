//! StackStorm remediation against a StackStorm API fake that keeps to its
//! documented contract (`tests/support/stackstorm.rs`): an execution that
//! succeeds (its steps on the timeline, the incident resolved when asked),
//! one that fails (the incident stays open), one that never finishes
//! (timed out and cancelled), a lost answer that starts no second run, and
//! the guardrails (cool-down under a flapping alert, the hourly limit, a
//! dry run).

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::stackstorm::{API_KEY, Action, Ends};
use support::{call, start};

fn actions() -> HashMap<String, Action> {
    [
        (
            "ops.restart_consumer",
            Action {
                parameters: vec![
                    ("incident", true),
                    ("priority", false),
                    ("services", false),
                    ("host", false),
                ],
                ends: Ends::Succeeds(Duration::from_millis(400), json!({"stdout": "restarted"})),
            },
        ),
        (
            "ops.failover",
            Action {
                parameters: vec![("incident", true)],
                ends: Ends::Fails(
                    Duration::from_millis(300),
                    json!({"stderr": "replica is 40 s behind; refusing to promote"}),
                ),
            },
        ),
        (
            "ops.clear_disk",
            Action {
                parameters: vec![("incident", true)],
                ends: Ends::Hangs,
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A daemon whose one destination runs `action` at `api` with `extra`
/// settings; its parameters are the incident's key unless `extra` says.
fn daemon_config(
    dir: &std::path::Path,
    api: &str,
    action: &str,
    extra: &str,
) -> incidentd::config::Config {
    let params = if extra.contains("parameters") {
        ""
    } else {
        "parameters = { incident = \"{key}\" }\n"
    };
    support::config_in(
        dir,
        &format!(
            "[incident]\nauto_resolve_hold = \"0s\"\n\n[[outbound.destinations]]\nname = \"st2\"\nkind = \"stackstorm\"\nurl = \"{api}\"\napi_key = \"{API_KEY}\"\naction = \"{action}\"\n{params}follow_interval = \"100ms\"\nbackoff_base = \"20ms\"\nbackoff_max = \"200ms\"\n{extra}\n"
        ),
    )
}

/// Posts alert `name`: resolved at `at` (with `starts` its start), or
/// firing from `at` (a new firing starts anew).
async fn alert(r: &incidentd::app::Running, name: &str, firing: bool, starts: &str, at: &str) {
    let labels =
        json!({"alertname": name, "instance": format!("{name}:9100"), "severity": "critical"});
    let body = if firing {
        json!([{"labels": labels, "status": "firing", "startsAt": at}])
    } else {
        json!([{"labels": labels, "status": "resolved", "startsAt": starts, "endsAt": at}])
    };
    let (s, v) = call(r, "POST", "/api/v1/alerts", body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// The remediation entries of incident `id`'s timeline.
async fn remediation(r: &incidentd::app::Running, id: i64) -> (Vec<String>, Value) {
    let (_, d) = call(r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    let steps = d["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["kind"] == "remediation")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    (steps, d)
}

/// Waits until incident `id`'s remediation entries satisfy `done`.
async fn wait_steps(
    r: &incidentd::app::Running,
    id: i64,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> (Vec<String>, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (steps, d) = remediation(r, id).await;
        if done(&steps) {
            return (steps, d);
        }
        assert!(Instant::now() < deadline, "{what}: {steps:?}\n{d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A remediation that succeeds, its parameters rendered from the incident
/// and its alert's labels: requested once (even though StackStorm's
/// answer to the run was lost: the retry finds it), running, succeeded,
/// each on the timeline; with `resolve_on_success` the incident is then
/// resolved by the remediation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_remediation_is_followed_and_resolves_the_incident() {
    let (api, st2) = support::stackstorm::start(actions()).await;
    st2.lock().expect("st2").lose_next_run = true;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = daemon_config(
        dir.path(),
        &api,
        "ops.restart_consumer",
        "resolve_on_success = \"resolve\"\nparameters = { incident = \"{key}\", priority = \"{priority}\", host = \"{label.instance}\" }\n",
    );
    let r = start(&cfg).await;
    let id = support::open_incident(&r, "ConsumerStuck", "ConsumerStuck:9100", "critical").await;
    let (steps, d) = wait_steps(&r, id, "the success", |s| {
        s.iter().any(|m| m.contains("succeeded"))
    })
    .await;
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(
        steps[0].starts_with("remediation ops.restart_consumer requested (execution "),
        "{steps:?}"
    );
    assert!(
        steps[1].starts_with("remediation ops.restart_consumer running"),
        "{steps:?}"
    );
    assert!(
        steps[2].starts_with("remediation ops.restart_consumer succeeded in "),
        "{steps:?}"
    );
    let runs = st2.lock().expect("st2").runs_of("ops.restart_consumer");
    assert_eq!(
        runs,
        [
            json!({"incident": format!("incidentd-{id}"), "priority": d["priority"], "host": "ConsumerStuck:9100"})
        ],
        "one execution despite the lost answer"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = remediation(&r, id).await;
        if d["state"] == "resolved" {
            assert!(
                d["timeline"]
                    .as_array()
                    .expect("timeline")
                    .iter()
                    .any(|e| e["kind"] == "resolved" && e["actor"] == "stackstorm:st2"),
                "{d}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not resolved: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, m) = support::oneshot(&r.router, "GET", "/metrics", &[], Vec::new()).await;
    let m = String::from_utf8(m).expect("utf-8");
    for line in [
        r#"incidentd_remediations_total{destination="st2",outcome="requested"} 1"#,
        r#"incidentd_remediations_total{destination="st2",outcome="succeeded"} 1"#,
    ] {
        assert!(m.contains(line), "{line} not in:\n{m}");
    }
    r.shutdown().await;
}

/// A remediation that fails says why (StackStorm's stderr), and the
/// incident stays open for a person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_remediation_says_why_and_leaves_the_incident_open() {
    let (api, _st2) = support::stackstorm::start(actions()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = daemon_config(
        dir.path(),
        &api,
        "ops.failover",
        "resolve_on_success = \"resolve\"\n",
    );
    let r = start(&cfg).await;
    let id = support::open_incident(&r, "PrimaryDown", "PrimaryDown:9100", "critical").await;
    let (steps, d) = wait_steps(&r, id, "the failure", |s| {
        s.iter().any(|m| m.contains("failed"))
    })
    .await;
    let last = steps.last().expect("a step");
    assert!(
        last.starts_with(
            "remediation ops.failover failed: replica is 40 s behind; refusing to promote"
        ),
        "{steps:?}"
    );
    assert_eq!(d["state"], "open", "{d}");
    r.shutdown().await;
}

/// An execution that never finishes is cancelled once `execution_timeout`
/// has passed, and the timeline says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remediation_that_never_finishes_times_out_and_is_cancelled() {
    let (api, st2) = support::stackstorm::start(actions()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = daemon_config(
        dir.path(),
        &api,
        "ops.clear_disk",
        "execution_timeout = \"1s\"\n",
    );
    let r = start(&cfg).await;
    let id = support::open_incident(&r, "DiskFull", "DiskFull:9100", "critical").await;
    let (steps, d) = wait_steps(&r, id, "the timeout", |s| {
        s.iter().any(|m| m.contains("timed out"))
    })
    .await;
    assert!(
        steps.last().is_some_and(
            |m| m.starts_with("remediation ops.clear_disk timed out after 1s; cancelled")
        ),
        "{steps:?}"
    );
    assert_eq!(st2.lock().expect("st2").cancelled(), 1);
    assert_eq!(d["state"], "open", "{d}");
    r.shutdown().await;
}

/// Guardrails: an alert that flaps (its incident resolved and reopened
/// twice; then the engine's flap damping keeps it open) runs the
/// remediation once, each reopening held back by
/// the cool-down; a second incident within the hour is held back by the
/// hourly limit; each says why on its timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cool_down_and_hourly_limit_hold_under_a_flapping_alert() {
    let (api, st2) = support::stackstorm::start(actions()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = daemon_config(
        dir.path(),
        &api,
        "ops.restart_consumer",
        "cool_down = \"1h\"\nmax_executions_per_hour = 1\n",
    );
    let r = start(&cfg).await;
    let id = support::open_incident(&r, "Flappy", "Flappy:9100", "critical").await;
    wait_steps(&r, id, "the first run", |s| {
        s.iter().any(|m| m.contains("succeeded"))
    })
    .await;
    let mut starts = "2026-11-30T10:00:00Z".to_string();
    for i in 1..=2u64 {
        let now = chrono::Utc::now();
        alert(&r, "Flappy", false, &starts, &now.to_rfc3339()).await;
        starts = (now + chrono::Duration::seconds(1)).to_rfc3339();
        alert(&r, "Flappy", true, &starts, &starts).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, d) = remediation(&r, id).await;
            if d["reopen_count"].as_u64() == Some(i) {
                break;
            }
            assert!(Instant::now() < deadline, "not reopened: {d}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The next clearing comes a second later, after this firing.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let (steps, d) = wait_steps(&r, id, "both reopenings held back", |s| {
        s.iter().filter(|m| m.contains("held back")).count() == 2
    })
    .await;
    assert_eq!(d["reopen_count"].as_u64(), Some(2), "{d}");
    assert!(
        steps
            .iter()
            .filter(|m| m.contains("held back"))
            .all(|m| m.contains("had one") && m.contains("(cool-down 1h)")),
        "{steps:?}"
    );
    let other = support::open_incident(&r, "Another", "Another:9100", "critical").await;
    let (steps, _) = wait_steps(&r, other, "the hourly limit", |s| !s.is_empty()).await;
    assert_eq!(
        steps,
        [
            "remediation ops.restart_consumer held back: the limit of 1 executions an hour is reached"
        ]
    );
    assert_eq!(
        st2.lock()
            .expect("st2")
            .runs_of("ops.restart_consumer")
            .len(),
        1
    );
    r.shutdown().await;
}

/// A dry run records what would have run, with its parameters, and calls
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_records_what_would_run() {
    let (api, st2) = support::stackstorm::start(actions()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = daemon_config(dir.path(), &api, "ops.restart_consumer", "dry_run = true\n");
    let r = start(&cfg).await;
    let id = support::open_incident(&r, "WouldRestart", "WouldRestart:9100", "critical").await;
    let (steps, _) = wait_steps(&r, id, "the dry run", |s| !s.is_empty()).await;
    assert_eq!(
        steps,
        [format!(
            "remediation ops.restart_consumer would run with {{\"incident\":\"incidentd-{id}\"}} (dry run)"
        )]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        st2.lock().expect("st2").calls.is_empty(),
        "{:?}",
        st2.lock().expect("st2").calls
    );
    r.shutdown().await;
}

/// A parameter that renders empty (`{root_ci}` of an incident bound to no
/// CI) holds the run back rather than aim the action at nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_parameter_holds_the_run_back() {
    let (api, st2) = support::stackstorm::start(actions()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = daemon_config(
        dir.path(),
        &api,
        "ops.restart_consumer",
        "parameters = { incident = \"{key}\", services = \"{root_ci}\" }\n",
    );
    let r = start(&cfg).await;
    let id = support::open_incident(&r, "Unbound", "Unbound:9100", "critical").await;
    let (steps, _) = wait_steps(&r, id, "held back", |s| !s.is_empty()).await;
    assert_eq!(
        steps,
        [
            "remediation ops.restart_consumer held back: parameter services is empty for this incident"
        ]
    );
    assert!(
        st2.lock()
            .expect("st2")
            .runs_of("ops.restart_consumer")
            .is_empty()
    );
    r.shutdown().await;
}

/// Settings: an action that is no `pack.action`, a bad `resolve_on_success`
/// and a StackStorm setting on another kind are each named.
#[test]
fn stackstorm_settings_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("incidentd.toml");
    std::fs::write(
        &file,
        "[[outbound.destinations]]\nname = \"st2\"\nkind = \"stackstorm\"\nurl = \"https://st2.example.com/api\"\napi_key = \"k\"\naction = \"restart\"\nresolve_on_success = \"yes\"\nmax_executions_per_hour = 0\nparameters = { \"bad name\" = \"x\" }\n\n[[outbound.destinations]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://example.com/hook\"\nsecret = \"s\"\ndry_run = true\n",
    )
    .expect("write");
    let e = incidentd::config::load(Some(&file), &incidentd::config::Overrides::default())
        .expect_err("invalid")
        .to_string();
    for needle in [
        "outbound.destinations[0].action: \"restart\": an action reference, pack.action",
        "outbound.destinations[0].resolve_on_success: \"yes\": acknowledge or resolve",
        "outbound.destinations[0].max_executions_per_hour: must be at least 1",
        "outbound.destinations[0].parameters.bad name",
        "outbound.destinations[1].dry_run: only for stackstorm destinations",
    ] {
        assert!(e.contains(needle), "{needle} not in:\n{e}");
    }
}
