//! The HTTP API in-process (router + real SQLite store + engine tasks), as a
//! sender and an on-call engineer would use it.

mod support;
use support::start;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use incidentd::app::Running;
use incidentd::config::{self, Config, Overrides, RawConfig, Secret};
use serde_json::{Value, json};
use std::path::PathBuf;
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
    // The alerts here carry fixed dates: keep them as given, whatever
    // today's date (the bounds have a test of their own).
    c.limits.bounds.max_alert_age = std::time::Duration::from_secs(100 * 365 * 86_400);
    c
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

/// A request without body or token.
async fn get(r: &Running, uri: &str) -> (StatusCode, Value, Option<String>) {
    call(r, "GET", uri, Body::empty(), None).await
}

async fn post(r: &Running, uri: &str) -> (StatusCode, Value, Option<String>) {
    call(r, "POST", uri, Body::empty(), None).await
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
    let (s, v, _) = post(&r, &format!("/api/v1/incidents/{id}/ack")).await;
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
        let (_, v, _) = get(&r, &format!("/api/v1/incidents/{id}")).await;
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
    let (s, v, _) = post(&r, &format!("/api/v1/incidents/{id}/resolve")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _, _) = post(&r, "/api/v1/incidents/999/resolve").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = get(&r, "/api/v1/incidents/abc").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (_, m, _) = get(&r, "/metrics").await;
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

    // One bad alert in a group: it alone is refused, named; its
    // neighbours are taken (Alertmanager never retries a 4xx, so a 400
    // would lose them all).
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
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 1, "{v}");
    assert_eq!(v["rejected"][0]["field"], "alerts[1].startsAt", "{v}");
    assert_eq!(v["rejected"][0]["index"], 1);
    assert!(
        v["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("yesterday")
    );

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
        (s, v["rejected"][0]["field"].as_str()),
        (StatusCode::OK, Some("[0].status"))
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

    // Nothing of the refused bodies was taken; the accepted alerts are
    // there, the good neighbour of the bad alert included.
    let mut titles: Vec<String> = incidents(&r, "all")
        .await
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_string())
        .collect();
    titles.sort();
    assert_eq!(titles, ["HostDown: db-8 is down", "HostDown: ok-1 is down"]);
    let (_, m, _) = get(&r, "/metrics").await;
    let m = m.as_str().unwrap();
    for line in [
        r#"incidentd_ingest_requests_rejected_total{reason="invalid",source="alertmanager"} 2"#,
        r#"incidentd_alerts_rejected_total{reason="invalid",source="alertmanager"} 1"#,
        r#"incidentd_alerts_rejected_total{reason="invalid",source="api"} 1"#,
    ] {
        assert!(m.contains(line), "{line} missing");
    }
    // The refused alerts are kept for operators, newest first.
    let (s, v, _) = get(&r, "/api/v1/alerts/rejected").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["total"], 2, "{v}");
    let kept = v["rejected"].as_array().unwrap();
    assert_eq!(kept[0]["source"], "api");
    assert_eq!(kept[0]["field"], "[0].status");
    assert_eq!(kept[1]["source"], "alertmanager");
    assert_eq!(kept[1]["field"], "alerts[1].startsAt");
    assert_eq!(
        kept[1]["alert"]["labels"]["instance"], "db-9:9100",
        "what it said: {v}"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_and_rate_limits_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.alertmanager.token = Some(Secret::Inline("s3cret".into()));
    c.api_source.rate_limit = Some((1, 2));
    c.api_tokens = vec![incidentd::config::ApiToken {
        name: "api".into(),
        secret: Secret::Inline("ops".into()),
        operator: true,
    }];
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
    let (s, _, _) = get(&r, "/api/v1/incidents").await;
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
    let (s, v, _) = get(&r, "/readyz").await;
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
        ("PATCH", "/api/v1/alerts", "", 405, None, "PATCH"),
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
            "GET",
            "/api/v1/incidents/987654/alerts",
            "",
            404,
            None,
            "987654",
        ),
        (
            "GET",
            "/api/v1/incidents/987654/timeline?offset=5",
            "",
            404,
            None,
            "987654",
        ),
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

/// A canonical alert named `name`, starting at `starts` (RFC 3339).
fn canonical(name: &str, starts: &str) -> Value {
    json!({"labels": {"alertname": name, "instance": format!("{name}:1")}, "status": "firing", "startsAt": starts})
}

fn now_plus(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn oversized_alerts_are_rejected_alone_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&config(dir.path())).await;
    let mut huge = canonical("Huge", &now_plus(0));
    huge["labels"]["blob"] = json!("x".repeat(20_000));
    let mut many = canonical("Many", &now_plus(0));
    for i in 0..200 {
        many["labels"][format!("l{i}")] = json!("v");
    }
    let mut utf8 = canonical("Utf8", &now_plus(0));
    utf8["labels"]["service.name"] = json!("checkout");
    let body = json!([canonical("Fine", &now_plus(0)), huge, many, utf8]).to_string();
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts", body, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 2, "the fine and the UTF-8 one: {v}");
    let fields: Vec<&str> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["[1].labels.blob", "[2].labels"], "{v}");
    // Kept for operators, cut short: not 20 KB of "x".
    let (_, q, _) = get(&r, "/api/v1/alerts/rejected?limit=5").await;
    let kept = q["rejected"].as_array().unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[1]["reason"], "limit");
    assert!(q.to_string().len() < 4_000, "{}", q.to_string().len());
    let (_, m, _) = get(&r, "/metrics").await;
    assert!(
        m.as_str()
            .unwrap()
            .contains(r#"incidentd_alerts_rejected_total{reason="limit",source="api"} 2"#)
    );
    r.shutdown().await;
}

#[tokio::test]
async fn event_times_are_bounded_and_actions_never_precede_the_opening() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.limits.bounds = incidentd::normalize::TimeBounds::default();
    let r = start(&c).await;
    let before = chrono::Utc::now();
    let body = json!([
        canonical("From1970", "1970-01-01T00:00:01Z"),
        canonical("From9999", "9999-01-01T00:00:00Z"),
        // Five minutes ahead: within the skew, kept.
        canonical("Ahead", &now_plus(300)),
    ]);
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts", body.to_string(), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let all = incidents(&r, "all").await;
    let by = |name: &str| {
        all.iter()
            .find(|i| i["title"].as_str().unwrap().contains(name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name}"))
    };
    for name in ["From1970", "From9999"] {
        let inc = by(name);
        let opened =
            chrono::DateTime::parse_from_rfc3339(inc["opened_at"].as_str().unwrap()).unwrap();
        let off = (opened.with_timezone(&chrono::Utc) - before)
            .num_seconds()
            .abs();
        assert!(off < 60, "{name} opened at its receive time: {inc}");
        let id = inc["id"].as_i64().unwrap();
        let (_, d, _) = get(&r, &format!("/api/v1/incidents/{id}")).await;
        assert!(
            d["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "event_time_clamped"),
            "{d}"
        );
    }
    // An incident opened five minutes ahead (a fast sender clock) is not
    // acknowledged or resolved before it opened.
    let ahead = by("Ahead");
    let id = ahead["id"].as_i64().unwrap();
    call(&r, "POST", &format!("/api/v1/incidents/{id}/ack"), "", None).await;
    let (_, inc, _) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/resolve"),
        "",
        None,
    )
    .await;
    assert!(
        inc["acknowledged_at"].as_str() >= inc["opened_at"].as_str(),
        "{inc}"
    );
    assert!(
        inc["resolved_at"].as_str() >= inc["opened_at"].as_str(),
        "{inc}"
    );
    // endsAt before startsAt: that alert is refused.
    let mut contradictory = canonical("Backwards", &now_plus(0));
    contradictory["status"] = json!("resolved");
    contradictory["endsAt"] = json!(now_plus(-3600));
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/alerts",
        json!([contradictory]).to_string(),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["rejected"][0]["field"], "[0].ends_at", "{v}");
    let (_, m, _) = get(&r, "/metrics").await;
    assert!(
        m.as_str()
            .unwrap()
            .contains(r#"incidentd_alert_times_clamped_total{source="api"} 2"#)
    );
    r.shutdown().await;
}

#[tokio::test]
async fn memory_caps_refuse_new_alerts_with_503_and_repeats_still_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.engine.max_active_alerts = 100;
    let r = start(&c).await;
    let batch = |from: usize, n: usize| {
        json!(
            (from..from + n)
                .map(|i| canonical(&format!("Cap{i}"), &now_plus(0)))
                .collect::<Vec<_>>()
        )
        .to_string()
    };
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts", batch(0, 100), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v, retry) = call(&r, "POST", "/api/v1/alerts", batch(100, 1), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["detail"]["reason"], "limits.max_active_alerts", "{v}");
    assert!(retry.is_some());
    // Known alerts still go through (a repeat adds nothing).
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts", batch(0, 10), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, m, _) = get(&r, "/metrics").await;
    assert!(
        m.as_str()
            .unwrap()
            .contains(r#"incidentd_ingest_requests_rejected_total{reason="full",source="api"} 1"#)
    );
    r.shutdown().await;

    // Active incidents likewise: beyond the cap, alerts that would open
    // one wait (503) until some resolve.
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.engine.max_active_incidents = 10;
    let r = start(&c).await;
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts", batch(0, 10), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts", batch(10, 1), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["detail"]["reason"], "limits.max_active_incidents", "{v}");
    let id = incidents(&r, "active").await[0]["id"].as_i64().unwrap();
    call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/resolve"),
        "",
        None,
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (s, _, _) = call(&r, "POST", "/api/v1/alerts", batch(10, 1), None).await;
        if s == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "room after a resolve");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    r.shutdown().await;
}

#[tokio::test]
async fn long_incidents_are_paged_and_action_text_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&config(dir.path())).await;
    let alerts: Vec<Value> = (0..250)
        .map(|i| {
            json!({"labels": {"alertname": "Wide", "instance": "one:1", "n": i.to_string()},
                   "status": "firing", "startsAt": now_plus(0)})
        })
        .collect();
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/alerts",
        json!(alerts).to_string(),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = incidents(&r, "all").await[0]["id"].as_i64().unwrap();
    let (_, d, _) = get(&r, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(d["alert_count"], 250);
    assert_eq!(d["alerts"].as_array().unwrap().len(), 100);
    assert_eq!(d["alerts_next"], 100);
    let (_, p, _) = get(
        &r,
        &format!("/api/v1/incidents/{id}/alerts?offset=100&limit=200"),
    )
    .await;
    assert_eq!(p["alerts"].as_array().unwrap().len(), 150, "{p}");
    assert_eq!(p["next_offset"], Value::Null);
    let (s, t, _) = get(&r, &format!("/api/v1/incidents/{id}/timeline?limit=2")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["timeline"].as_array().unwrap().len(), 2);
    assert_eq!(t["next_offset"], 2);
    // `by` is bounded and free of control characters.
    for (by, what) in [
        ("x".repeat(300), "at most 256"),
        ("eve\u{1b}[2J".to_string(), "control"),
    ] {
        let (s, v, _) = call(
            &r,
            "POST",
            &format!("/api/v1/incidents/{id}/ack"),
            json!({ "by": by }).to_string(),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["detail"]["field"], "by");
        assert!(v["error"].as_str().unwrap().contains(what), "{v}");
    }
    r.shutdown().await;
}

#[tokio::test]
async fn named_tokens_read_or_act_and_the_token_is_who_acted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    let token = |name: &str, secret: &str, operator: bool| incidentd::config::ApiToken {
        name: name.into(),
        secret: Secret::Inline(secret.into()),
        operator,
    };
    c.api_tokens = vec![
        token("grafana", "read-secret", false),
        token("alice", "alice-secret", true),
    ];
    let r = start(&c).await;
    let (s, _, _) = call(
        &r,
        "POST",
        "/api/v1/alerts/alertmanager",
        webhook(json!([alert("id-1", "firing", "critical")])),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "ingest has its own per-source tokens");
    let list = |t: Option<&'static str>| {
        let r = &r;
        async move {
            call(r, "GET", "/api/v1/incidents", Body::empty(), t)
                .await
                .0
        }
    };
    assert_eq!(list(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(list(Some("wrong")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(list(Some("read-secret")).await, StatusCode::OK);
    assert_eq!(list(Some("alice-secret")).await, StatusCode::OK);
    let (_, v, _) = call(
        &r,
        "GET",
        "/api/v1/incidents",
        Body::empty(),
        Some("read-secret"),
    )
    .await;
    let id = v["incidents"][0]["id"].as_i64().unwrap();
    // A reader may not act, nor post a change window.
    let (s, v, _) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/ack"),
        "",
        Some("read-secret"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["detail"]["token"], "grafana");
    let change = r#"[{"id":"CHG1","ci":"x","state":"approved","start":"2026-01-01T00:00:00Z","end":"2027-01-01T00:00:00Z"}]"#;
    let (s, _, _) = call(&r, "POST", "/api/v1/changes", change, Some("read-secret")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // An operator acts, and is recorded by the token's name whatever the
    // body claims.
    let (s, inc, _) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/ack"),
        json!({"by": "servicenow:admin"}).to_string(),
        Some("alice-secret"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{inc}");
    assert_eq!(inc["acknowledged_by"], "alice");
    r.shutdown().await;
}

#[tokio::test]
async fn change_calendars_import_in_bulk_and_update_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.limits.max_changes_per_request = 30_000;
    // A change must name a CI of the CMDB: one with the CIs a calendar
    // of this size touches.
    let mut cmdb = String::from("cis:\n  - { id: pg-0, class: database }\n");
    for i in 0..500 {
        cmdb.push_str(&format!("  - {{ id: ci-{i} }}\n"));
    }
    for i in 0..10_000 {
        cmdb.push_str(&format!("  - {{ id: moved-{i} }}\n"));
    }
    let cmdb_file = dir.path().join("cmdb.yaml");
    std::fs::write(&cmdb_file, cmdb).unwrap();
    c.cmdb = Some(cmdb_file);
    let r = start(&c).await;
    let now = chrono::Utc::now();
    let at = |h: i64| {
        (now + chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let changes = |n: usize, ci: &dyn Fn(usize) -> String| {
        json!(
            (0..n)
                .map(
                    |i| json!({"id": format!("CHG{i:06}"), "ci": ci(i), "state": "approved",
                            "start": at(-1), "end": at(1)})
                )
                .collect::<Vec<_>>()
        )
        .to_string()
    };
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/changes",
        changes(20_000, &|i| format!("ci-{}", i % 500)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["accepted"].as_array().unwrap().len(), 20_000);
    // The same ids again, moved to other CIs: updated, not duplicated.
    let moved = |i: usize| {
        if i == 7 {
            // Alerts carrying `ci: pg-0` bind to it.
            "pg-0".to_string()
        } else {
            format!("moved-{i}")
        }
    };
    let (s, _, _) = call(&r, "POST", "/api/v1/changes", changes(10_000, &moved), None).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, list, _) = get(&r, "/api/v1/changes").await;
    let list = list["changes"].as_array().unwrap().clone();
    assert_eq!(list.len(), 20_000);
    let chg0 = list.iter().find(|c| c["id"] == "CHG000000").unwrap();
    assert_eq!(chg0["ci"], "moved-0");
    // The calendar in force follows: an alert on the CI a change moved to
    // is in its window (the shipped rule suppresses it).
    let alert = json!([{"labels": {"alertname": "Reboot", "ci": "pg-0", "severity": "critical"},
                        "status": "firing", "startsAt": now.to_rfc3339()}]);
    let (s, v, _) = call(&r, "POST", "/api/v1/alerts", alert.to_string(), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["suppressed"], 1, "in the change window: {v}");
    // Beyond the per-request cap: refused, nothing stored.
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/changes",
        changes(30_001, &|_| "x".into()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["detail"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("max_changes_per_request")
    );
    // A change on a CI the CMDB does not have could never apply: the
    // import is refused, naming each such record; nothing is stored.
    let (s, v, _) = call(
        &r,
        "POST",
        "/api/v1/changes",
        changes(3, &|i| if i == 1 { "pg-9".into() } else { "pg-0".into() }),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["detail"]["errors"],
        json!([{"field": "[1].ci", "record": "CHG000001",
                "message": "unknown CI \"pg-9\": no CI of the CMDB has this id"}]),
        "{v}"
    );
    let (_, list, _) = get(&r, "/api/v1/changes").await;
    let chg1 = list["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "CHG000001")
        .cloned()
        .unwrap();
    assert_eq!(chg1["ci"], "moved-1", "{chg1}");
    r.shutdown().await;
}

/// A catalog with SLOs and SLAs: `shop` (tier 1) runs on `shop-db`, which
/// the blog also uses.
const CATALOG: &str = r#"
version: 1
services:
  - id: shop
    name: Shop
    tier: 1
    owner: team-shop
    sla: { response: { P1: 15m, P2: 30m }, resolution: { P1: 4h, P2: 8h } }
    slo: [{ name: availability, objective: 99.9, window: 30d }]
  - { id: blog, tier: 3, owner: team-blog }
cis:
  - { id: shop-db, class: database, service: shop, owner: dba, match: { job: postgres } }
  - { id: shop-web, class: application, service: shop, depends_on: [shop-db] }
  - { id: blog-web, class: application, service: blog, depends_on: [shop-db] }
  - { id: blog-cache, class: cache, service: blog }
"#;

fn catalog_config(dir: &std::path::Path) -> Config {
    let cmdb = dir.join("cmdb.yaml");
    std::fs::write(&cmdb, CATALOG).unwrap();
    let mut c = config(dir);
    c.cmdb = Some(cmdb);
    c.cmdb_required = true;
    c.slo.refresh = std::time::Duration::from_millis(100);
    c
}

fn ago(minutes: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn post_alerts(r: &Running, alerts: Value) {
    let (s, v, _) = call(r, "POST", "/api/v1/alerts", alerts.to_string(), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn services_carry_live_slo_figures_and_their_active_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&catalog_config(dir.path())).await;
    // Down for 40 minutes and still down: a P1 on the shop.
    post_alerts(
        &r,
        json!([{"labels": {"alertname": "ShopDown", "ci": "shop-web", "severity": "critical"},
                "status": "firing", "startsAt": ago(40)}]),
    )
    .await;
    let v = support::eventually("the outage in the SLO figures", 10, async || {
        let (s, v, _) = get(&r, "/api/v1/services").await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let bad = v["services"][0]["slos"][0]["figures"]["bad_seconds"].as_f64();
        bad.is_some_and(|b| b > 2000.0).then_some(v)
    })
    .await;
    let shop = &v["services"][0];
    assert_eq!(shop["id"], "shop");
    assert_eq!(
        (shop["tier"].as_u64(), shop["owner"].as_str()),
        (Some(1), Some("team-shop"))
    );
    assert_eq!(shop["open_incidents"], 1, "{shop}");
    assert_eq!(shop["highest_priority"], "P1");
    assert_eq!(shop["sla"]["response_seconds"]["P1"], 900);
    assert_eq!(shop["sla"]["resolution_seconds"]["P2"], 28_800);
    let slo = &shop["slos"][0];
    assert_eq!(
        (slo["name"].as_str(), slo["objective"].as_f64()),
        (Some("availability"), Some(0.999))
    );
    assert_eq!(slo["window_seconds"], 2_592_000);
    let f = &slo["figures"];
    // About 40 minutes of a 43.2-minute budget spent; the last hour was
    // 2/3 bad: a burn rate of about 667 over 1h, 1000 over 5m.
    let budget = f["error_budget_remaining"].as_f64().unwrap();
    assert!((budget - (1.0 - 40.0 / 43.2)).abs() < 0.01, "{f}");
    let burn = |w: &str| f["burn_rates"][w].as_f64().unwrap();
    assert!((burn("1h") - 666.7).abs() < 5.0, "{f}");
    assert!((burn("5m") - 1000.0).abs() < 1e-6, "{f}");
    assert!(f["sli"].as_f64().unwrap() < 1.0);
    // The blog: no SLO, no incident (the shop's web server is not its).
    let blog = &v["services"][1];
    assert_eq!(blog["id"], "blog");
    assert_eq!(blog["open_incidents"], 0);
    assert!(
        blog["highest_priority"].is_null() && blog["slos"] == json!([]),
        "{blog}"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn cis_are_listed_by_class_and_service_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&catalog_config(dir.path())).await;
    let ids = |v: &Value| -> Vec<String> {
        v["cis"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, all, _) = get(&r, "/api/v1/cis").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(ids(&all), ["blog-cache", "blog-web", "shop-db", "shop-web"]);
    assert_eq!(
        (all["total"].as_u64(), all["next_offset"].is_null()),
        (Some(4), true)
    );
    let db = &all["cis"][2];
    assert_eq!(db["class"], "database");
    assert_eq!(db["service"], "shop");
    assert_eq!(db["assignment_group"], "dba");
    assert_eq!(db["dependent_count"], 2);
    // Without an owner of its own: the service's.
    assert_eq!(all["cis"][3]["assignment_group"], "team-shop");
    assert_eq!(all["cis"][3]["depends_on"], json!(["shop-db"]));
    let (_, apps, _) = get(&r, "/api/v1/cis?class=application").await;
    assert_eq!(ids(&apps), ["blog-web", "shop-web"]);
    let (_, blog_apps, _) = get(&r, "/api/v1/cis?class=application&service=blog").await;
    assert_eq!(ids(&blog_apps), ["blog-web"]);
    let (_, p1, _) = get(&r, "/api/v1/cis?limit=3").await;
    assert_eq!((ids(&p1).len(), p1["next_offset"].as_u64()), (3, Some(3)));
    let (_, p2, _) = get(&r, "/api/v1/cis?limit=3&offset=3").await;
    assert_eq!(ids(&p2), ["shop-web"]);
    assert!(p2["next_offset"].is_null(), "{p2}");
    let (_, none, _) = get(&r, "/api/v1/cis?service=nope").await;
    assert_eq!((none["total"].as_u64(), ids(&none).len()), (Some(0), 0));
    let (s, e, _) = get(&r, "/api/v1/cis?colour=red").await;
    assert_eq!(
        (s, e["detail"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("colour")),
        "{e}"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn alerts_list_the_firing_and_the_suppressed_with_rule_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&catalog_config(dir.path())).await;
    post_alerts(
        &r,
        json!([
            {"labels": {"alertname": "PgDown", "job": "postgres", "severity": "critical"},
             "annotations": {"summary": "primary down"}, "status": "firing", "startsAt": ago(10)},
            {"labels": {"alertname": "ShopDown", "ci": "shop-web", "severity": "critical"},
             "status": "firing", "startsAt": ago(9)},
            {"labels": {"alertname": "Watchdog", "severity": "none"}, "status": "firing", "startsAt": ago(8)},
            {"labels": {"alertname": "CacheCold", "ci": "blog-cache", "severity": "warning"},
             "status": "resolved", "startsAt": ago(30), "endsAt": ago(20)}
        ]),
    )
    .await;
    let names = |v: &Value| -> Vec<String> {
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["alertname"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, firing, _) = get(&r, "/api/v1/alerts").await;
    assert_eq!(s, StatusCode::OK, "{firing}");
    // Newest first; the heartbeat is suppressed, the resolved one gone.
    assert_eq!(names(&firing), ["ShopDown", "PgDown"]);
    let pg = &firing["alerts"][1];
    assert_eq!(
        (pg["ci"].as_str(), pg["service"].as_str()),
        (Some("shop-db"), Some("shop"))
    );
    assert!(pg["incident"].as_i64().is_some(), "{pg}");
    assert!(pg["suppressed"].is_null());
    assert_eq!(pg["annotations"]["summary"], "primary down");
    let (_, sup, _) = get(&r, "/api/v1/alerts?suppressed=true").await;
    assert_eq!(names(&sup), ["Watchdog"]);
    let w = &sup["alerts"][0];
    assert_eq!(w["suppressed"]["rule"], "suppress-heartbeats");
    assert!(
        w["suppressed"]["reason"]
            .as_str()
            .unwrap()
            .contains("heartbeat"),
        "{w}"
    );
    assert!(w["incident"].is_null());
    for (query, want) in [
        ("ci=shop-db", vec!["PgDown"]),
        ("service=shop", vec!["ShopDown", "PgDown"]),
        ("service=blog", vec![]),
        ("alertname=ShopDown", vec!["ShopDown"]),
        ("alertname=PgDown&service=shop&ci=shop-web", vec![]),
    ] {
        let (_, v, _) = get(&r, &format!("/api/v1/alerts?{query}")).await;
        assert_eq!(names(&v), want, "{query}: {v}");
    }
    let (_, p1, _) = get(&r, "/api/v1/alerts?limit=1").await;
    assert_eq!(
        (names(&p1), p1["next_offset"].as_u64()),
        (vec!["ShopDown".to_string()], Some(1))
    );
    let (_, p2, _) = get(&r, "/api/v1/alerts?limit=1&offset=1").await;
    assert_eq!(names(&p2), ["PgDown"]);
    let (s, e, _) = get(&r, "/api/v1/alerts?suppressed=maybe").await;
    assert_eq!(
        (s, e["detail"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("suppressed")),
        "{e}"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn a_wrong_method_is_told_the_allowed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&config(dir.path())).await;
    for (method, path, allowed) in [
        ("DELETE", "/api/v1/alerts", json!(["GET", "HEAD", "POST"])),
        ("PUT", "/api/v1/incidents/1/ack", json!(["POST"])),
        ("POST", "/api/v1/services", json!(["GET", "HEAD"])),
        ("GET", "/api/v1/alerts/alertmanager", json!(["POST"])),
    ] {
        let resp = r
            .router
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let allow = resp.headers()[header::ALLOW].to_str().unwrap().to_string();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).expect("a JSON body");
        assert_eq!(v["detail"]["method"], method, "{v}");
        assert_eq!(v["detail"]["allowed"], allowed, "{method} {path}: {v}");
        let names: Vec<&str> = allowed
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert!(
            v["error"].as_str().unwrap().contains(&names.join(", ")),
            "{v}"
        );
        // The same methods as the Allow header, whatever their order.
        let mut a: Vec<&str> = allow.split(',').map(str::trim).collect();
        let mut b = names.clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{method} {path}");
    }
    r.shutdown().await;
}

#[tokio::test]
async fn auto_resolve_at_shows_the_hold_and_clears_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = catalog_config(dir.path());
    c.engine.auto_resolve_hold = std::time::Duration::from_secs(600);
    let now = incidentd::domain::Timestamp::now();
    let clock = std::sync::Arc::new(incidentd::domain::ManualClock::new(now));
    let r = support::start_on(&c, clock.clone()).await;
    let at = |min: i64| {
        chrono::DateTime::from_timestamp_millis(now.0 + min * 60_000)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let labels = json!({"alertname": "ShopDown", "ci": "shop-web", "severity": "critical"});
    let fire = |start: i64| json!([{"labels": labels, "status": "firing", "startsAt": at(start)}]);
    let end = |start: i64, end: i64| json!([{"labels": labels, "status": "resolved", "startsAt": at(start), "endsAt": at(end)}]);
    post_alerts(&r, fire(-20)).await;
    let id = incidents(&r, "active").await[0]["id"].as_i64().unwrap();
    let detail = async || get(&r, &format!("/api/v1/incidents/{id}")).await.1;
    let when = |v: &Value| {
        v["auto_resolve_at"].as_str().map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        })
    };
    let v = detail().await;
    assert!(
        v.as_object().unwrap().contains_key("auto_resolve_at") && v["auto_resolve_at"].is_null(),
        "{v}"
    );
    // The alert ended a minute ago: the incident waits out the 10-minute
    // hold, and says until when.
    post_alerts(&r, end(-20, -1)).await;
    let v = detail().await;
    assert_eq!(v["state"], "open");
    assert_eq!(when(&v), Some(now.0 + 9 * 60_000), "{v}");
    // Lists carry it too.
    assert_eq!(
        when(&incidents(&r, "active").await[0]),
        Some(now.0 + 9 * 60_000)
    );
    // Firing again within the hold: the incident goes on, no resolve due.
    post_alerts(&r, fire(0)).await;
    assert!(detail().await["auto_resolve_at"].is_null());
    post_alerts(&r, end(0, 0)).await;
    assert_eq!(when(&detail().await), Some(now.0 + 10 * 60_000));
    // The hold passes: resolved, and nothing is due any more.
    clock.advance(std::time::Duration::from_secs(11 * 60));
    let v = support::eventually("the auto-resolve", 10, async || {
        let v = detail().await;
        (v["state"] == "resolved").then_some(v)
    })
    .await;
    assert!(v["auto_resolve_at"].is_null(), "{v}");
    r.shutdown().await;
}

#[tokio::test]
async fn actions_answer_with_the_incident_and_its_sla() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&catalog_config(dir.path())).await;
    post_alerts(
        &r,
        json!([{"labels": {"alertname": "ShopDown", "ci": "shop-web", "severity": "critical"},
                "status": "firing", "startsAt": ago(2)}]),
    )
    .await;
    let id = incidents(&r, "active").await[0]["id"].as_i64().unwrap();
    let act = async |op: &str, body: Value| {
        let (s, v, _) = call(
            &r,
            "POST",
            &format!("/api/v1/incidents/{id}/{op}"),
            body.to_string(),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{op}: {v}");
        v
    };
    let v = act("ack", json!({"by": "alice"})).await;
    assert_eq!(
        (v["state"].as_str(), v["acknowledged_by"].as_str()),
        (Some("acknowledged"), Some("alice"))
    );
    assert_eq!(v["sla"]["response"]["status"], "met", "{v}");
    assert_eq!(v["sla"]["response"]["target_seconds"], 900);
    assert_eq!(v["sla"]["resolution"]["status"], "running", "{v}");
    let v = act("hold", json!({"reason": "awaiting_vendor"})).await;
    assert_eq!(v["sla"]["resolution"]["paused"], true, "{v}");
    let v = act("resume", Value::Null).await;
    assert_eq!(v["sla"]["resolution"]["paused"], false, "{v}");
    let v = act("resolve", Value::Null).await;
    assert_eq!(v["state"], "resolved");
    assert_eq!(v["sla"]["resolution"]["status"], "met", "{v}");
    // The same timers as the detail shows.
    let (_, d, _) = get(&r, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(d["sla"], v["sla"]);
    r.shutdown().await;
}

#[tokio::test]
async fn incidents_are_listed_by_priority_and_service() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(&catalog_config(dir.path())).await;
    post_alerts(
        &r,
        json!([
            {"labels": {"alertname": "ShopDown", "ci": "shop-web", "severity": "critical"}, "status": "firing", "startsAt": ago(3)},
            {"labels": {"alertname": "CacheCold", "ci": "blog-cache", "severity": "warning"}, "status": "firing", "startsAt": ago(2)}
        ]),
    )
    .await;
    let titles = async |q: &str| -> Vec<String> {
        let (s, v, _) = get(&r, &format!("/api/v1/incidents?{q}")).await;
        assert_eq!(s, StatusCode::OK, "{q}: {v}");
        v["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(titles("").await.len(), 2);
    let shop = titles("service=shop").await;
    assert!(shop.len() == 1 && shop[0].contains("ShopDown"), "{shop:?}");
    let p1 = titles("priority=P1").await;
    assert!(p1.len() == 1 && p1[0].contains("ShopDown"), "{p1:?}");
    assert!(titles("priority=P1&service=blog").await.is_empty());
    let (s, e, _) = get(&r, "/api/v1/incidents?priority=P9").await;
    assert_eq!(
        (s, e["detail"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("priority")),
        "{e}"
    );
    r.shutdown().await;
}
