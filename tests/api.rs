//! The HTTP API in-process (router + real SQLite store + engine tasks), as a
//! sender and an on-call engineer would use it.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use incidentd::app::{self, Running};
use incidentd::config::{self, Config, Overrides, RawConfig, Secret};
use incidentd::domain::SystemClock;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;

fn config(dir: &std::path::Path) -> Config {
    let mut c = config::validate(
        RawConfig::default(),
        &Overrides {
            data_dir: Some(dir.to_path_buf()),
            rules_dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")),
            ..Overrides::default()
        },
    )
    .expect("default config is valid");
    c.engine.auto_resolve_hold = std::time::Duration::ZERO;
    c
}

async fn start(c: &Config) -> Running {
    app::start(c, Arc::new(SystemClock))
        .await
        .expect("pipeline starts")
}

async fn call(
    r: &Running,
    method: &str,
    uri: &str,
    body: impl Into<Body>,
    auth: Option<&str>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = auth {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = r
        .router
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, v, retry)
}

fn webhook(alerts: Value) -> String {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"HostDown\"}", "truncatedAlerts": 0, "status": "firing",
        "receiver": "incidentd", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am:9093", "alerts": alerts
    })
    .to_string()
}

fn alert(host: &str, status: &str, severity: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": "HostDown", "instance": format!("{host}:9100"), "job": "node", "severity": severity},
        "annotations": {"summary": format!("{host} is down"), "runbook_url": "https://runbooks.example.com/HostDown"},
        "startsAt": "2026-03-02T08:00:00Z",
        "endsAt": if status == "resolved" { "2026-03-02T08:10:00Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prom/graph"
    })
}

async fn incidents(r: &Running, state: &str) -> Vec<Value> {
    let (s, v, _) = call(
        r,
        "GET",
        &format!("/api/v1/incidents?state={state}"),
        Body::empty(),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["incidents"].as_array().unwrap().clone()
}

#[tokio::test]
async fn webhook_opens_dedups_acks_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&config(dir.path())).await;
    let body = webhook(json!([
        alert("db-1", "firing", "critical"),
        alert("db-2", "firing", "warning")
    ]));
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/alerts/alertmanager",
        body.clone(),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["new"].as_u64(), v["deduplicated"].as_u64()),
        (Some(2), Some(0))
    );
    // Alertmanager HA twin: the same body again changes nothing.
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts/alertmanager", body, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["new"].as_u64(), v["deduplicated"].as_u64()),
        (Some(0), Some(2))
    );

    let open = incidents(&r, "open").await;
    assert_eq!(open.len(), 2);
    let db1 = open
        .iter()
        .find(|i| i["title"] == "HostDown: db-1 is down")
        .expect("db-1 incident");
    assert_eq!(db1["priority"], "P2");
    assert_eq!(db1["alert_fingerprints"].as_array().unwrap().len(), 1);
    assert_eq!(
        db1["links"]["runbooks"][0],
        "https://runbooks.example.com/HostDown"
    );
    let id = db1["id"].as_i64().unwrap();

    let (s, v, _) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/ack"),
        r#"{"by":"alice"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "acknowledged");
    assert_eq!(v["acknowledged_by"], "alice");
    let (s, v, _) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/ack"),
        Body::empty(),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // The alert resolves: with a zero hold the incident resolves on the next tick.
    let (s, _, _) = call(
        &r,
        "POST",
        "/api/v1/alerts/alertmanager",
        webhook(json!([alert("db-1", "resolved", "critical")])),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let resolved = loop {
        let (_, v, _) = call(
            &r,
            "GET",
            &format!("/api/v1/incidents/{id}"),
            Body::empty(),
            None,
        )
        .await;
        if v["state"] == "resolved" {
            let kinds: Vec<&str> = v["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["kind"].as_str().unwrap())
                .collect();
            assert_eq!(kinds.first(), Some(&"opened"));
            assert!(
                kinds.contains(&"acknowledged")
                    && kinds.contains(&"alert_resolved")
                    && kinds.ends_with(&["resolved"]),
                "{kinds:?}"
            );
            assert_eq!(v["alerts"][0]["labels"]["instance"], "db-1:9100");
            assert_eq!(v["alerts"][0]["deliveries"].as_u64(), Some(3));
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "incident never auto-resolved: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let (s, v, _) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/resolve"),
        Body::empty(),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _, _) = call(
        &r,
        "POST",
        "/api/v1/incidents/999/resolve",
        Body::empty(),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(&r, "GET", "/api/v1/incidents/abc", Body::empty(), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (_, m, _) = call(&r, "GET", "/metrics", Body::empty(), None).await;
    let m = m.as_str().unwrap().to_string();
    assert!(
        m.contains("incidentd_alerts_received_total{source=\"alertmanager\"} 5"),
        "{m}"
    );
    assert!(m.contains("incidentd_alerts_deduplicated_total 2"), "{m}");
    assert!(m.contains("incidentd_incidents_created_total 2"), "{m}");
    // MTTA / MTTR: one observation each, exactly what the incident record
    // says (acknowledged_at / resolved_at minus opened_at).
    let time = |k: &str| {
        serde_json::from_value::<incidentd::domain::Timestamp>(resolved[k].clone())
            .unwrap()
            .millis() as f64
            / 1000.0
    };
    for (h, until) in [
        (
            "incidentd_incident_time_to_acknowledge_seconds",
            "acknowledged_at",
        ),
        ("incidentd_incident_time_to_resolve_seconds", "resolved_at"),
    ] {
        let expected = time(until) - time("opened_at");
        let sum: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{h}_sum ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{h}_sum missing: {m}"));
        assert!((sum - expected).abs() < 0.01, "{h}: {sum} vs {expected}");
        assert!(m.contains(&format!("{h}_count 1")), "{h}: {m}");
    }
    r.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_body_bytes = 4096;
    let r = start(&c).await;
    let (s, _, _) = call(
        &r,
        "POST",
        "/api/v1/alerts/alertmanager",
        webhook(json!([alert("ok-1", "firing", "critical")])),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let mut bad = alert("db-9", "firing", "critical");
    bad["startsAt"] = json!("yesterday");
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/alerts/alertmanager",
        webhook(json!([alert("db-8", "firing", "critical"), bad])),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["detail"]["field"], "alerts[1].startsAt", "{v}");
    assert_eq!(v["detail"]["index"], 1);
    assert!(v["error"].as_str().unwrap().contains("alerts[1].startsAt"));

    let (s, v, _) = call(&r, "POST", "/api/v1/alerts/alertmanager", "{not json", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("not valid JSON"),
        "{v}"
    );
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/alerts/alertmanager",
        r#"{"version":"5","alerts":[]}"#,
        None,
    )
    .await;
    assert_eq!(
        (s, v["detail"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("version"))
    );
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/alerts",
        r#"[{"labels":{"a":"b"},"status":"pending"}]"#,
        None,
    )
    .await;
    assert_eq!(
        (s, v["detail"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("[0].status"))
    );
    let big = webhook(json!(
        (0..40)
            .map(|i| alert(&format!("h{i}"), "firing", "critical"))
            .collect::<Vec<_>>()
    ));
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts/alertmanager", big, None).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["detail"]["limit_bytes"], 4096);
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/alerts/pagerduty",
        r#"{"routing_key":"r","event_action":"trigger"}"#,
        None,
    )
    .await;
    assert_eq!(
        (s, v["detail"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("payload"))
    );

    // Nothing of the rejected batch was taken; the accepted alert is there.
    let all = incidents(&r, "all").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["title"], "HostDown: ok-1 is down");
    let (_, m, _) = call(&r, "GET", "/metrics", Body::empty(), None).await;
    assert!(m.as_str().unwrap().contains(
        r#"incidentd_ingest_requests_rejected_total{reason="invalid",source="alertmanager"} 3"#
    ));
    r.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_and_rate_limits_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.alertmanager.token = Some(Secret::Inline("s3cret".into()));
    c.api_source.rate_limit = Some((1, 2));
    c.api_token = Some(Secret::Inline("ops".into()));
    let r = start(&c).await;
    let body = webhook(json!([alert("db-1", "firing", "critical")]));
    for (tok, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("wrong"), StatusCode::UNAUTHORIZED),
        (Some("s3cret"), StatusCode::OK),
    ] {
        let (s, v, _) = call(&r, "POST", "/api/v1/alerts/alertmanager", body.clone(), tok).await;
        assert_eq!(s, want, "{v}");
    }
    let canonical = r#"[{"labels":{"alertname":"X","instance":"h:1"}}]"#;
    let mut codes = vec![];
    let mut retry = None;
    for _ in 0..4 {
        let (s, _, ra) = call(&r, "POST", "/api/v1/alerts", canonical, None).await;
        codes.push(s);
        retry = retry.or(ra);
    }
    assert_eq!(
        &codes[..2],
        &[StatusCode::OK, StatusCode::OK],
        "burst of 2 allowed"
    );
    assert!(
        codes[2..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{codes:?}"
    );
    assert_eq!(retry.as_deref(), Some("1"));
    let (s, _, _) = call(&r, "GET", "/api/v1/incidents", Body::empty(), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = call(&r, "GET", "/api/v1/incidents", Body::empty(), Some("ops")).await;
    assert_eq!(s, StatusCode::OK);
    r.shutdown().await;
}

#[tokio::test]
async fn pagerduty_events_trigger_ack_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&config(dir.path())).await;
    let trig = r#"{"routing_key":"k","event_action":"trigger","dedup_key":"disk-1","payload":{"summary":"disk full on db-1","source":"db-1","severity":"critical","class":"DiskFull"}}"#;
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts/pagerduty", trig, None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["dedup_key"], "disk-1");
    let (s, _, _) = call(
        &r,
        "POST",
        "/api/v1/alerts/pagerduty",
        r#"{"routing_key":"k","event_action":"acknowledge","dedup_key":"disk-1"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let all = incidents(&r, "all").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["state"], "acknowledged");
    assert_eq!(all[0]["title"], "DiskFull: disk full on db-1");
    let (s, _, _) = call(
        &r,
        "POST",
        "/api/v1/alerts/pagerduty",
        r#"{"routing_key":"k","event_action":"resolve","dedup_key":"disk-1"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while incidents(&r, "resolved").await.len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "PagerDuty resolve never resolved the incident"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    r.shutdown().await;
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path());
    let r = start(&c).await;
    let body = webhook(json!([alert("db-1", "firing", "critical")]));
    call(
        &r,
        "POST",
        "/api/v1/alerts/alertmanager",
        body.clone(),
        None,
    )
    .await;
    r.shutdown().await;
    let r = start(&c).await;
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts/alertmanager", body, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["deduplicated"].as_u64(),
        Some(1),
        "a repeat after restart is still a repeat: {v}"
    );
    assert_eq!(incidents(&r, "all").await.len(), 1);
    let (s, v, _) = call(&r, "GET", "/readyz", Body::empty(), None).await;
    assert_eq!((s, v["ready"].as_bool()), (StatusCode::OK, Some(true)));
    r.shutdown().await;
}

/// A request body that never arrives.
struct Stalled;

impl axum::body::HttpBody for Stalled {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn every_error_is_json_naming_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.request_timeout = std::time::Duration::from_millis(500);
    let r = start(&c).await;
    // (method, path, body, status, the field `detail` names, text the error holds)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        u16,
        Option<&'static str>,
        &'static str,
    );
    let cases: &[Case] = &[
        ("GET", "/nope", "", 404, None, "/nope"),
        ("DELETE", "/api/v1/incidents", "", 405, None, "DELETE"),
        ("GET", "/api/v1/alerts", "", 405, None, "GET"),
        ("PUT", "/api/v1/alerts/alertmanager", "", 405, None, "PUT"),
        (
            "GET",
            "/api/v1/incidents?limit=-1",
            "",
            400,
            Some("limit"),
            "invalid digit",
        ),
        (
            "GET",
            "/api/v1/incidents?limit=abc",
            "",
            400,
            Some("limit"),
            "limit",
        ),
        (
            "GET",
            "/api/v1/incidents?limit=0",
            "",
            400,
            Some("limit"),
            "1..=10000",
        ),
        (
            "GET",
            "/api/v1/incidents?state=bogus",
            "",
            400,
            Some("state"),
            "bogus",
        ),
        (
            "GET",
            "/api/v1/incidents?before=x",
            "",
            400,
            Some("before"),
            "before",
        ),
        ("GET", "/api/v1/incidents/abc", "", 400, Some("id"), "abc"),
        ("GET", "/api/v1/incidents/987654", "", 404, None, "987654"),
        (
            "POST",
            "/api/v1/alerts",
            "{not json",
            400,
            None,
            "not valid JSON",
        ),
        (
            "POST",
            "/api/v1/incidents/987654/ack",
            "",
            404,
            None,
            "987654",
        ),
        ("GET", "/api/v1/cis/no-such-ci", "", 404, None, "no-such-ci"),
    ];
    for (method, path, body, status, field, text) in cases {
        let (s, v, _) = call(&r, method, path, body.to_string(), None).await;
        let what = format!("{method} {path}: {s} {v}");
        assert_eq!(s.as_u16(), *status, "{what}");
        let error = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no JSON error: {what}"));
        assert!(error.contains(text), "{what}");
        if let Some(f) = field {
            assert_eq!(v["detail"]["field"], *f, "{what}");
        }
    }
    // A body that never completes: the request timeout answers, in JSON,
    // with Retry-After.
    let resp = r
        .router
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri("/api/v1/alerts")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::new(Stalled))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("a JSON body");
    assert!(v["error"].as_str().unwrap().contains("took longer"), "{v}");
    r.shutdown().await;
}
