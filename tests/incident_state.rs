//! What an incident says about itself must be true: an on-call engineer
//! reads the count of alerts, the title and the timeline to decide what to
//! do, and acts on the answer of a repeated action.

mod support;
use support::{call, config_in, start};

use axum::http::StatusCode;
use serde_json::{Value, json};

fn cmdb(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("cmdb.yaml");
    std::fs::write(
        &file,
        "version: 1\nservices:\n  - { id: shop, tier: 1 }\n  - { id: search, tier: 2 }\n\
         cis:\n  - { id: db-0, class: database, match: { job: postgres } }\n\
         \x20 - { id: shop-api, class: application, service: shop, depends_on: [db-0], match: { app: shop } }\n\
         \x20 - { id: search-api, class: application, service: search, depends_on: [db-0], match: { app: search } }\n",
    )
    .expect("write cmdb");
    file
}

fn alert(labels: Value, status: &str, starts: &str) -> Value {
    let mut a = json!({"labels": labels, "status": status, "startsAt": starts});
    if status == "resolved" {
        a["endsAt"] = json!(chrono::Utc::now().to_rfc3339());
    }
    a
}

async fn post(r: &incidentd::app::Running, alerts: Value) {
    let (s, v) = call(r, "POST", "/api/v1/alerts", alerts).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn incident(r: &incidentd::app::Running, id: i64) -> Value {
    let (s, v) = call(r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn messages(inc: &Value) -> Vec<String> {
    inc["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// Two symptoms open two incidents; their database's alert re-roots one
/// (its title now names the cause) and folds the other into it. Counts are
/// distinct alerts, unchanged by repeats and resolutions; the merged
/// incident says where its alerts went; a second resolve says "already
/// resolved".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_titles_and_answers_tell_the_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Without root inference: with it, db-0 (both symptoms' only
    // dependency) would be named at the second symptom and nothing would
    // be merged (tests/correlation.rs covers that).
    let mut cfg = config_in(dir.path(), "[correlation]\ninfer_min_dependents = 0\n");
    cfg.cmdb = Some(cmdb(dir.path()));
    let r = start(&cfg).await;
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(5);
    let at = |s: i64| (t0 + chrono::Duration::seconds(s)).to_rfc3339();
    let shop = json!({"alertname": "HighLatency", "app": "shop", "severity": "warning"});
    let search = json!({"alertname": "HighLatency", "app": "search", "severity": "warning"});
    let db = json!({"alertname": "PostgresDown", "job": "postgres", "severity": "critical"});

    post(&r, json!([alert(shop.clone(), "firing", &at(0))])).await;
    // Repeats are deliveries, not alerts.
    for _ in 0..3 {
        post(&r, json!([alert(shop.clone(), "firing", &at(0))])).await;
    }
    post(&r, json!([alert(search.clone(), "firing", &at(1))])).await;
    let (_, list) = call(&r, "GET", "/api/v1/incidents", Value::Null).await;
    let ids: Vec<i64> = list["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .filter_map(|i| i["id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    let first = incident(&r, ids.iter().copied().min().expect("id")).await;
    assert_eq!(first["alert_count"], 1, "{first}");
    assert!(
        messages(&first)
            .iter()
            .any(|m| m.contains("(1 service, highest tier 1)")),
        "{:?}",
        messages(&first)
    );

    post(&r, json!([alert(db.clone(), "firing", &at(2))])).await;
    let (_, list) = call(&r, "GET", "/api/v1/incidents", Value::Null).await;
    let active = list["incidents"].as_array().expect("incidents");
    assert_eq!(active.len(), 1, "{list}");
    let root_id = active[0]["id"].as_i64().expect("id");
    let merged_id = *ids.iter().find(|i| **i != root_id).expect("the other");
    let root = incident(&r, root_id).await;
    assert_eq!(root["root_ci"], "db-0");
    assert!(
        root["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("PostgresDown")),
        "the title names the cause: {}",
        root["title"]
    );
    assert_eq!(root["alert_count"], 3, "{root}");
    assert_eq!(root["alert_fingerprints"].as_array().map(Vec::len), Some(3));
    let merged = incident(&r, merged_id).await;
    assert_eq!(merged["links"]["merged_into"], root_id, "{merged}");
    assert_eq!(
        (
            merged["alert_count"].as_u64(),
            merged["alert_fingerprints"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "{merged}"
    );
    assert!(
        messages(&merged).iter().any(|m| m.contains(&format!(
            "merged into incident {root_id} (1 alert moved there)"
        ))),
        "{:?}",
        messages(&merged)
    );

    // Resolutions do not count as alerts.
    post(
        &r,
        json!([
            alert(shop, "resolved", &at(0)),
            alert(search, "resolved", &at(1)),
            alert(db, "resolved", &at(2))
        ]),
    )
    .await;
    let root = support::eventually("the auto-resolution", 10, async || {
        let v = incident(&r, root_id).await;
        (v["state"] == "resolved").then_some(v)
    })
    .await;
    assert_eq!(root["alert_count"], 3, "{root}");

    let (s, v) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{root_id}/resolve"),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["detail"]["reason"], "already resolved", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("already resolved")),
        "{v}"
    );
    r.shutdown().await;
}
