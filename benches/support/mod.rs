//! What the in-process benches share: a daemon started on a temp dir with
//! a CMDB and no rules (every alert opens its incident), and requests
//! through its real router.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use incidentd::app::{self, Running};
use incidentd::config::{self, Config, Overrides, RawConfig};
use incidentd::domain::SystemClock;
use std::path::Path;
use std::sync::Arc;
use tower::ServiceExt;

/// One request through the router: status and body.
pub async fn request(r: &Running, method: &str, uri: &str, body: String) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let resp = r.router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes.to_vec())
}

/// A daemon on `dir` (SQLite) with `cmdb` as its catalog and no rules;
/// `tune` adjusts the validated configuration before the start.
pub async fn start(dir: &Path, cmdb: &str, tune: impl FnOnce(&mut Config)) -> Running {
    let path = dir.join("cmdb.yaml");
    std::fs::write(&path, cmdb).expect("write cmdb");
    let mut cfg = config::validate(
        RawConfig::default(),
        &Overrides {
            data_dir: Some(dir.join("data")),
            rules_dir: Some(dir.join("no-rules")),
            cmdb: Some(path),
            ..Overrides::default()
        },
    )
    .expect("config");
    tune(&mut cfg);
    app::start(&cfg, Arc::new(SystemClock))
        .await
        .expect("daemon starts")
}

/// `POST /api/v1/alerts` with `alerts`, which must be accepted.
pub async fn post_alerts(r: &Running, alerts: Vec<serde_json::Value>) {
    let (s, body) = request(
        r,
        "POST",
        "/api/v1/alerts",
        serde_json::Value::Array(alerts).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}
