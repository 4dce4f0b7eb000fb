//! The OpenAPI document is the API's description: every route the router
//! serves is in it with exactly its methods (a route added without its
//! documentation fails here), and real answers carry what its schemas
//! require.

mod support;

use axum::http::StatusCode;
use incidentd::app::Running;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use support::{call, start};

const CMDB: &str = r#"
version: 1
services:
  - id: shop
    tier: 1
    owner: team-shop
    sla: { response: { P1: 15m }, resolution: { P1: 4h } }
    slo: [{ name: availability, objective: 99.9, window: 30d }]
  - { id: blog, tier: 3 }
cis:
  - { id: shop-db, class: database, service: shop, match: { job: postgres } }
  - { id: shop-web, class: application, service: shop, depends_on: [shop-db] }
"#;

async fn daemon(dir: &std::path::Path) -> Running {
    let cmdb = dir.join("cmdb.yaml");
    std::fs::write(&cmdb, CMDB).expect("write cmdb");
    let c = incidentd::config::validate(
        incidentd::config::RawConfig::default(),
        &incidentd::config::Overrides {
            data_dir: Some(dir.join("data")),
            rules_dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")),
            cmdb: Some(cmdb),
            ..incidentd::config::Overrides::default()
        },
    )
    .expect("valid config");
    start(&c).await
}

async fn document(r: &Running) -> Value {
    let (s, doc) = call(r, "GET", "/api/v1/openapi.json", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    doc
}

/// (path, METHOD) of every operation the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((path.clone(), method.to_uppercase()));
        }
    }
    out
}

#[tokio::test]
async fn every_route_is_documented_with_its_methods() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = daemon(dir.path()).await;
    let doc = document(&r).await;
    let routes: BTreeSet<(String, String)> = incidentd::api::route_table()
        .into_iter()
        .flat_map(|(path, methods)| {
            methods
                .iter()
                .map(move |m| (path.to_string(), m.to_string()))
        })
        .collect();
    let docs = documented(&doc);
    let undocumented: Vec<_> = routes.difference(&docs).collect();
    let unserved: Vec<_> = docs.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}; documented but not served: {unserved:?}"
    );
    // And the table is what the router does: each path answers exactly
    // its methods, 405 to every other (no side effects: unknown ids,
    // empty bodies).
    for (path, methods) in incidentd::api::route_table() {
        let uri = path
            .replace("{id}", "987654")
            .replace("{destination}", "nope");
        for m in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let (s, body) = call(&r, m, &uri, Value::Null).await;
            assert_eq!(
                s == StatusCode::METHOD_NOT_ALLOWED,
                !methods.contains(&m),
                "{m} {uri}: {s} {body}"
            );
        }
    }
    r.shutdown().await;
}

/// The schema `r` points at (`#/components/...`), or `r` itself.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str() {
        Some(r) => {
            let mut v = doc;
            for part in r.trim_start_matches("#/").split('/') {
                v = &v[part];
            }
            assert!(!v.is_null(), "dangling $ref {r}");
            resolve(doc, v)
        }
        None => s,
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

/// What of JSON Schema the document uses: `$ref`, `allOf`, `oneOf`,
/// `type` (one or several), `const`, `enum`, `required`, `properties`,
/// `additionalProperties`, `items`. Errors name the place in the answer.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let s = resolve(doc, schema);
    for part in s["allOf"].as_array().into_iter().flatten() {
        check(doc, part, v, at, errors);
    }
    if let Some(any) = s["oneOf"].as_array() {
        let fits = any.iter().any(|alt| {
            let mut e = Vec::new();
            check(doc, alt, v, at, &mut e);
            e.is_empty()
        });
        if !fits {
            errors.push(format!("{at}: fits none of oneOf: {v}"));
        }
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| type_ok(t, v)) {
        errors.push(format!("{at}: expected {types:?}, got {v}"));
        return;
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errors.push(format!("{at}: expected {c}, got {v}"));
    }
    if let Some(e) = s["enum"].as_array()
        && !e.contains(v)
    {
        errors.push(format!("{at}: {v} not in {e:?}"));
    }
    if let Some(obj) = v.as_object() {
        for r in s["required"].as_array().into_iter().flatten() {
            let name = r.as_str().unwrap_or_default();
            if !obj.contains_key(name) {
                errors.push(format!("{at}: required field {name:?} missing"));
            }
        }
        let props = s["properties"].as_object();
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(p) => check(doc, p, x, &format!("{at}.{k}"), errors),
                None if s["additionalProperties"].is_object() => check(
                    doc,
                    &s["additionalProperties"],
                    x,
                    &format!("{at}.{k}"),
                    errors,
                ),
                None => {}
            }
        }
    }
    if let (Some(items), Some(list)) = (s.get("items"), v.as_array()) {
        for (i, x) in list.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"), errors);
        }
    }
}

/// Calls `method uri` and checks the answer against the schema the
/// document gives for `path` (its template), `method` and the status.
async fn answers_as_documented(
    r: &Running,
    doc: &Value,
    method: &str,
    path: &str,
    uri: &str,
    body: Value,
) -> Value {
    let (status, v) = call(r, method, uri, body).await;
    let op = &doc["paths"][path][method.to_lowercase()];
    let response = resolve(doc, &op["responses"][status.as_str()]);
    assert!(
        !response.is_null(),
        "{method} {uri} answered {status}, which the document does not list: {v}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    let mut errors = Vec::new();
    check(doc, schema, &v, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {uri} ({status}) differs from its schema:\n{}\n{v}",
        errors.join("\n")
    );
    v
}

#[tokio::test]
async fn answers_carry_what_their_schemas_require() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = daemon(dir.path()).await;
    let doc = document(&r).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    answers_as_documented(
        &r,
        &doc,
        "POST",
        "/api/v1/alerts",
        "/api/v1/alerts",
        json!([
            {"labels": {"alertname": "PgDown", "job": "postgres", "severity": "critical"},
             "annotations": {"summary": "primary down"}, "status": "firing", "startsAt": now},
            {"labels": {"alertname": "Watchdog"}, "status": "firing", "startsAt": now}
        ]),
    )
    .await;
    let list = answers_as_documented(
        &r,
        &doc,
        "GET",
        "/api/v1/incidents",
        "/api/v1/incidents",
        Value::Null,
    )
    .await;
    let id = list["incidents"][0]["id"].as_i64().expect("an incident");
    let one = format!("/api/v1/incidents/{id}");
    let detail =
        answers_as_documented(&r, &doc, "GET", "/api/v1/incidents/{id}", &one, Value::Null).await;
    assert!(detail["sla"]["response"].is_object(), "{detail}");
    for (op, body) in [
        ("ack", json!({"by": "alice"})),
        ("hold", json!({"reason": "awaiting_vendor"})),
        ("resume", Value::Null),
        ("resolve", Value::Null),
    ] {
        answers_as_documented(
            &r,
            &doc,
            "POST",
            &format!("/api/v1/incidents/{{id}}/{op}"),
            &format!("{one}/{op}"),
            body,
        )
        .await;
    }
    answers_as_documented(
        &r,
        &doc,
        "POST",
        "/api/v1/changes",
        "/api/v1/changes",
        json!([{"id": "CHG0001", "ci": "shop-db", "state": "approved",
                "start": "2026-03-02T08:00:00Z", "end": "2026-03-02T09:00:00Z"}]),
    )
    .await;
    // A conflict and an unknown id: the error shape.
    answers_as_documented(
        &r,
        &doc,
        "POST",
        "/api/v1/incidents/{id}/ack",
        &format!("{one}/ack"),
        Value::Null,
    )
    .await;
    answers_as_documented(
        &r,
        &doc,
        "GET",
        "/api/v1/incidents/{id}",
        "/api/v1/incidents/987654",
        Value::Null,
    )
    .await;
    for (path, uri) in [
        ("/api/v1/incidents/{id}/alerts", format!("{one}/alerts")),
        ("/api/v1/incidents/{id}/timeline", format!("{one}/timeline")),
        ("/api/v1/alerts", "/api/v1/alerts".to_string()),
        (
            "/api/v1/alerts",
            "/api/v1/alerts?suppressed=true".to_string(),
        ),
        ("/api/v1/services", "/api/v1/services".to_string()),
        ("/api/v1/cis", "/api/v1/cis?limit=1".to_string()),
        ("/api/v1/cis/{id}", "/api/v1/cis/shop-db".to_string()),
        (
            "/api/v1/alerts/rejected",
            "/api/v1/alerts/rejected".to_string(),
        ),
        ("/api/v1/problems", "/api/v1/problems".to_string()),
        ("/api/v1/changes", "/api/v1/changes".to_string()),
        (
            "/api/v1/changes/{id}",
            "/api/v1/changes/CHG0001".to_string(),
        ),
        ("/api/v1/changes/{id}", "/api/v1/changes/CHG9".to_string()),
        ("/healthz", "/healthz".to_string()),
        ("/readyz", "/readyz".to_string()),
    ] {
        let v = answers_as_documented(&r, &doc, "GET", path, &uri, Value::Null).await;
        if uri.ends_with("suppressed=true") {
            assert_eq!(v["alerts"][0]["suppressed"]["rule"], "suppress-heartbeats");
        }
    }
    r.shutdown().await;
}
