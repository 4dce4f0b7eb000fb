//! `incidentd replay` of recorded bodies gives the same incidents as posting
//! the same bodies to a running daemon (DESIGN §2, event time).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use incidentd::app;
use incidentd::config::{self, Overrides, RawConfig};
use incidentd::domain::SystemClock;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;

/// (sorted fingerprints, state) per incident, sorted: what scoring looks at.
fn shape(incidents: &[Value]) -> Vec<(Vec<String>, String)> {
    let mut v: Vec<(Vec<String>, String)> = incidents
        .iter()
        .map(|i| {
            let fps: BTreeSet<String> = i["alert_fingerprints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            (
                fps.into_iter().collect(),
                i["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn replay_matches_live_ingest() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("tests/data/small-storm.alerts.jsonl");
    let rules = root.join("rules");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config::validate(
        RawConfig::default(),
        &Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            rules_dir: Some(rules.clone()),
            ..Overrides::default()
        },
    )
    .unwrap();

    let (engine_cfg, rule_set) = app::offline_setup(None, Some(rules)).unwrap();
    let replayed = app::replay(engine_cfg, rule_set, std::slice::from_ref(&file))
        .await
        .unwrap();
    let replayed: Vec<Value> = replayed
        .incidents
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect();
    assert!(replayed.len() > 10, "the scenario makes many incidents");

    let running = app::start(&cfg, Arc::new(SystemClock)).await.unwrap();
    for line in std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let req = Request::post("/api/v1/alerts/alertmanager")
            .body(Body::from(line.to_string()))
            .unwrap();
        let resp = running.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // The recorded events are months old, so every hold has passed: the
    // engine's next tick (1 s) settles them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let want = shape(&replayed);
    loop {
        let req = Request::get("/api/v1/incidents?state=all")
            .body(Body::empty())
            .unwrap();
        let resp = running.router.clone().oneshot(req).await.unwrap();
        let v: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        let got = shape(v["incidents"].as_array().unwrap());
        if got == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "live ingest differs from replay:\nlive:   {got:?}\nreplay: {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    running.shutdown().await;
}
