//! The recorded alerts shipped in `examples/alerts` replay as their README
//! says, on the shipped CMDB: what a new user tries first.

use serde_json::Value;
use std::process::Command;

fn replay(file: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(["replay", "--cmdb", "deploy/cmdb.yaml", file])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run incidentd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{file}: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    // One announcement for the outage, once the settle delay ended.
    assert_eq!(v["summary"]["pages"], 1, "{file}: {}", v["summary"]);
    assert_eq!(v["summary"]["alerts"], 3, "{file}: {}", v["summary"]);
    v["incidents"].as_array().expect("incidents").clone()
}

/// One incident rooted at pg-0, with all three alerts and the fraud
/// service impacted; any incident a symptom opened before the database
/// alerted is merged into it.
fn assert_rooted_at_pg0(file: &str, state: &str) {
    let incidents = replay(file);
    let live: Vec<&Value> = incidents
        .iter()
        .filter(|i| i["links"]["merged_into"].is_null())
        .collect();
    assert_eq!(live.len(), 1, "{file}: {incidents:?}");
    let root = live[0];
    assert_eq!(root["root_ci"], "pg-0", "{root}");
    assert_eq!(root["priority"], "P1", "{root}");
    assert_eq!(root["state"], state, "{root}");
    assert_eq!(root["alert_count"], 3, "{root}");
    assert!(
        root["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("PostgresDown")),
        "{root}"
    );
    assert!(
        root["impacted_services"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "fraud")),
        "{root}"
    );
    for merged in incidents
        .iter()
        .filter(|i| !i["links"]["merged_into"].is_null())
    {
        assert_eq!(merged["links"]["merged_into"], root["id"], "{merged}");
    }
}

#[test]
fn the_recorded_webhooks_replay_to_one_incident_at_the_database() {
    assert_rooted_at_pg0("examples/alerts/pg-0-outage.jsonl", "resolved");
}

/// What Alertmanager answers to `GET /api/v2/alerts` (with `receivers`,
/// a status object, `updatedAt`) replays like the webhooks: those alerts
/// are firing.
#[test]
fn alertmanager_api_output_replays() {
    assert_rooted_at_pg0("examples/alerts/alertmanager-v2-alerts.json", "open");
}
