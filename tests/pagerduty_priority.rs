//! PagerDuty's priority and urgency follow incidentd's through the REST
//! API, against a stateful fake of both PagerDuty APIs on 127.0.0.1: the
//! Events API (`/v2/enqueue`, checked by `contracts::pagerduty_event`)
//! makes incidents whose alerts carry the `dedup_key` as their alert key,
//! and the REST API (checked by `contracts::pagerduty_rest`) lists them by
//! that key, lists the account's priorities and updates them. The real
//! daemon runs as a process with its configuration file.

mod support;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::contracts::{self, Refusal};
use support::daemon::{Running, TestDaemon};
use support::{eventually, post_alert};

const ROUTING_KEY: &str = "R0UTINGKEYR0UTINGKEYR0UTINGKEY00";
const TOKEN: &str = "u+Fake-REST-key";
const FROM: &str = "incidentd-bot@example.com";

/// One request either API received.
#[derive(Debug, Clone)]
struct Seen {
    /// "events" or "rest".
    api: &'static str,
    method: String,
    /// With its query.
    path: String,
    headers: HeaderMap,
    body: Value,
    /// What it was answered.
    status: u16,
}

/// An incident of the fake PagerDuty account.
#[derive(Debug, Clone)]
struct PdIncident {
    id: String,
    /// Its own key: like an incident that alert grouping made, not the
    /// alert's, so only a lookup by alert key finds it.
    incident_key: String,
    alert_key: String,
    status: &'static str,
    urgency: String,
    priority: Option<String>,
    /// The Events API makes incidents asynchronously: none is listed
    /// before this.
    listed_from: Instant,
}

impl PdIncident {
    fn json(&self, priorities: &[(String, String)]) -> Value {
        let priority = self.priority.as_ref().map(|id| {
            let name = priorities
                .iter()
                .find(|(p, _)| p == id)
                .map_or("", |(_, n)| n.as_str());
            json!({"id": id, "type": "priority_reference", "summary": name})
        });
        json!({"id": self.id, "type": "incident", "incident_key": self.incident_key,
               "status": self.status, "urgency": self.urgency, "priority": priority})
    }
}

/// A scripted answer to the next REST call of a method.
struct Scripted {
    method: &'static str,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

struct Account {
    /// (id, name), most severe first.
    priorities: Vec<(String, String)>,
    incidents: Vec<PdIncident>,
    seen: Vec<Seen>,
    script: VecDeque<Scripted>,
    /// Every update answered so (a read-only key).
    refuse_updates: Option<Refusal>,
    /// How long after a trigger its new incident is listed.
    create_after: Duration,
}

#[derive(Clone)]
struct FakePagerDuty {
    events_url: String,
    rest_url: String,
    account: Arc<Mutex<Account>>,
}

type Answer = (u16, Vec<(&'static str, String)>, Value);

impl FakePagerDuty {
    async fn start() -> FakePagerDuty {
        let account = Arc::new(Mutex::new(Account {
            priorities: ["P1", "P2", "P3", "P4", "P5"]
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("PRIO{i}X"), n.to_string()))
                .collect(),
            incidents: Vec::new(),
            seen: Vec::new(),
            script: VecDeque::new(),
            refuse_updates: None,
            create_after: Duration::ZERO,
        }));
        let events_url = serve(account.clone(), "events").await;
        let rest_url = serve(account.clone(), "rest").await;
        FakePagerDuty {
            events_url,
            rest_url,
            account,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Account) -> T) -> T {
        f(&mut self.account.lock().expect("fake account"))
    }

    fn seen(&self, api: &str) -> Vec<Seen> {
        self.with(|a| a.seen.iter().filter(|s| s.api == api).cloned().collect())
    }

    fn triggers(&self) -> usize {
        self.seen("events")
            .iter()
            .filter(|s| s.status == 202 && s.body["event_action"] == "trigger")
            .count()
    }

    fn updates(&self) -> Vec<Seen> {
        self.seen("rest")
            .into_iter()
            .filter(|s| s.method == "PUT")
            .collect()
    }

    fn incident(&self, alert_key: &str) -> Option<PdIncident> {
        self.with(|a| {
            a.incidents
                .iter()
                .find(|i| i.alert_key == alert_key)
                .cloned()
        })
    }

    fn priority_name(&self, id: &str) -> Option<String> {
        self.with(|a| {
            a.priorities
                .iter()
                .find(|(p, _)| p == id)
                .map(|(_, n)| n.clone())
        })
    }
}

/// One of the two APIs on its own 127.0.0.1 port (two hosts, as in
/// production); a call meant for the other is not found.
async fn serve(account: Arc<Mutex<Account>>, api: &'static str) -> String {
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let account = account.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let method = parts.method.as_str().to_string();
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or_default().to_string();
            let (status, headers, answer) = {
                let mut a = account.lock().expect("fake account");
                let answer = if api == "events" {
                    events(&mut a, &method, &path, &parts.headers, &bytes)
                } else {
                    rest(&mut a, &method, &path, &query, &parts.headers, &bytes)
                };
                a.seen.push(Seen {
                    api,
                    method,
                    path: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: parts.headers.clone(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    status: answer.0,
                });
                answer
            };
            let mut resp: Response = (
                StatusCode::from_u16(status).expect("status"),
                [("content-type", "application/json")],
                answer.to_string(),
            )
                .into_response();
            for (k, v) in headers {
                resp.headers_mut()
                    .insert(k, v.parse().expect("header value"));
            }
            resp
        }
    });
    support::serve(app, "fake PagerDuty").await
}

/// The Events API: a trigger makes an incident for a new alert key
/// (urgency by severity, as a service set to "use alert severity"), or
/// adds to the open one; acknowledge and resolve act on it.
fn events(a: &mut Account, method: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    if method != "POST" || path != "/v2/enqueue" {
        return (404, Vec::new(), json!({"message": "Not Found"}));
    }
    if let Err((status, why)) = contracts::pagerduty_event(headers, body) {
        return (status, Vec::new(), why);
    }
    let e: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let key = e["dedup_key"].as_str().unwrap_or_default().to_string();
    let open = a
        .incidents
        .iter_mut()
        .find(|i| i.alert_key == key && i.status != "resolved");
    match (e["event_action"].as_str(), open) {
        (Some("trigger"), None) => {
            let n = a.incidents.len() + 1;
            let urgency = match e["payload"]["severity"].as_str() {
                Some("critical" | "error") => "high",
                _ => "low",
            };
            a.incidents.push(PdIncident {
                id: format!("Q{n:03}PDINC"),
                incident_key: format!("grouped-{n}"),
                alert_key: key.clone(),
                status: "triggered",
                urgency: urgency.into(),
                priority: None,
                listed_from: Instant::now() + a.create_after,
            });
        }
        (Some("acknowledge"), Some(i)) => i.status = "acknowledged",
        (Some("resolve"), Some(i)) => i.status = "resolved",
        _ => {}
    }
    (
        202,
        Vec::new(),
        json!({"status": "success", "message": "Event processed", "dedup_key": key}),
    )
}

/// The REST API: its contract, the key, then a scripted answer if one is
/// due, else the account's state.
fn rest(
    a: &mut Account,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let ids: Vec<String> = a.priorities.iter().map(|(id, _)| id.clone()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    if let Err((status, why)) = contracts::pagerduty_rest(method, headers, body, &ids) {
        return (status, Vec::new(), why);
    }
    let key = headers.get("authorization").and_then(|v| v.to_str().ok());
    if key != Some(&format!("Token token={TOKEN}")) {
        let (s, b) = contracts::pagerduty_error(401, 2006, "Authentication failed", &[]);
        return (s, Vec::new(), b);
    }
    if a.script.front().is_some_and(|s| s.method == method)
        && let Some(s) = a.script.pop_front()
    {
        return (s.status, s.headers, s.body);
    }
    match (method, path) {
        ("GET", "/incidents") => {
            let mut key = None;
            let mut statuses = Vec::new();
            for (k, v) in form_urlencoded::parse(query.as_bytes()) {
                match k.as_ref() {
                    "incident_key" => key = Some(v.to_string()),
                    "statuses[]" => statuses.push(v.to_string()),
                    _ => {}
                }
            }
            let now = Instant::now();
            // "querying by incident key will return incidents whose alerts
            // have alert_key matching the given incident key"
            let found: Vec<Value> = a
                .incidents
                .iter()
                .filter(|i| {
                    i.listed_from <= now
                        && key
                            .as_deref()
                            .is_none_or(|k| k == i.alert_key || k == i.incident_key)
                        && (statuses.is_empty() || statuses.iter().any(|s| s == i.status))
                })
                .map(|i| i.json(&a.priorities))
                .collect();
            (
                200,
                Vec::new(),
                json!({"incidents": found, "limit": 25, "offset": 0, "more": false, "total": null}),
            )
        }
        ("GET", "/priorities") => {
            let list: Vec<Value> = a
                .priorities
                .iter()
                .map(|(id, name)| json!({"id": id, "type": "priority", "name": name, "summary": name}))
                .collect();
            (
                200,
                Vec::new(),
                json!({"priorities": list, "limit": 100, "offset": 0, "more": false}),
            )
        }
        ("PUT", p) if p.starts_with("/incidents/") => {
            if let Some((s, b)) = a.refuse_updates.clone() {
                return (s, Vec::new(), b);
            }
            let id = &p["/incidents/".len()..];
            let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(i) = a.incidents.iter_mut().find(|i| i.id == id) else {
                let (s, b) = contracts::pagerduty_error(404, 2100, "Not Found", &[]);
                return (s, Vec::new(), b);
            };
            if let Some(p) = b["incident"]["priority"]["id"].as_str() {
                i.priority = Some(p.to_string());
            }
            if let Some(u) = b["incident"]["urgency"].as_str() {
                i.urgency = u.to_string();
            }
            let answer = json!({"incident": i.json(&a.priorities)});
            (200, Vec::new(), answer)
        }
        _ => {
            let (s, b) = contracts::pagerduty_error(404, 2100, "Not Found", &[]);
            (s, Vec::new(), b)
        }
    }
}

/// The repository's rules, and one that makes a tier-1 alert P1.
fn rules(dir: &Path) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for f in std::fs::read_dir(&repo).expect("repo rules") {
        let f = f.expect("entry").path();
        if f.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&f, rules.join(f.file_name().expect("name"))).expect("copy rule");
        }
    }
    std::fs::write(
        rules.join("90-tier-one.yaml"),
        "rules:\n  - name: tier-one-is-p1\n    matchers: ['tier=\"1\"']\n    actions:\n      priority: P1\n",
    )
    .expect("write rule");
    rules
}

/// A `pagerduty` destination on the fake; `rest` adds the REST settings.
fn config(pd: &FakePagerDuty, rest: bool) -> String {
    let mut c = format!(
        "[[outbound.destinations]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"{}\"\nrouting_key = \"{ROUTING_KEY}\"\nbackoff_base = \"20ms\"\nbackoff_max = \"200ms\"\n",
        pd.events_url
    );
    if rest {
        c.push_str(&format!(
            "api_token = \"{TOKEN}\"\napi_url = \"{}\"\nfrom = \"{FROM}\"\n",
            pd.rest_url
        ));
    }
    c
}

async fn daemon(dir: &Path, pd: &FakePagerDuty, rest: bool) -> Running {
    let mut d = TestDaemon::new(&dir.join("data"), dir)
        .rules(&rules(dir))
        .config(&config(pd, rest))
        .start();
    d.wait_ready(Duration::from_secs(30)).await;
    d
}

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

/// The id and priority of incidentd's incident of `alertname`.
async fn incident_of(base: &str, alertname: &str) -> Option<(i64, String)> {
    let list = get(&format!("{base}/api/v1/incidents?state=all")).await;
    list["incidents"].as_array()?.iter().find_map(|i| {
        i["title"]
            .as_str()
            .filter(|t| t.contains(alertname))
            .and(Some((
                i["id"].as_i64()?,
                i["priority"].as_str()?.to_string(),
            )))
    })
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// A warning alert opens a P3 incident; once PagerDuty has its trigger, a
/// tier-1 critical alert of the same target joins it and raises it to P1.
/// incidentd's incident id.
async fn open_p3_then_raise_to_p1(d: &Running, pd: &FakePagerDuty) -> i64 {
    post_alert(
        &d.base,
        json!({"alertname": "DatabaseDown", "instance": "db-1:9100", "severity": "warning"}),
    )
    .await;
    let (id, p) = eventually("the P3 incident", 20, async || {
        incident_of(&d.base, "DatabaseDown").await
    })
    .await;
    assert_eq!(p, "P3", "warning x default impact");
    eventually("the opening trigger", 20, async || {
        (pd.triggers() == 1).then_some(())
    })
    .await;
    post_alert(
        &d.base,
        json!({"alertname": "DatabaseDown", "instance": "db-1:9100", "job": "blackbox",
               "severity": "critical", "tier": "1"}),
    )
    .await;
    eventually("incidentd's raise to P1", 20, async || {
        incident_of(&d.base, "DatabaseDown")
            .await
            .filter(|(_, p)| p == "P1")
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_raised_to_p1_ends_at_p1_and_high_urgency_in_pagerduty() {
    let pd = FakePagerDuty::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path(), &pd, true).await;
    let id = open_p3_then_raise_to_p1(&d, &pd).await;
    let key = format!("incidentd-{id}");
    let found = eventually("PagerDuty's incident at P1", 20, async || {
        pd.incident(&key).filter(|i| i.priority.is_some())
    })
    .await;
    assert_eq!(
        pd.priority_name(found.priority.as_deref().unwrap_or_default())
            .as_deref(),
        Some("P1")
    );
    assert_eq!(found.urgency, "high");
    assert_ne!(found.incident_key, key, "found by its alert's key");
    support::drain::sqlite_outbox_drained(&dir.path().join("data")).await;
    // The P3 opening called no REST; the raise looked the incident up by
    // its alert key, listed the priorities and updated it once.
    let rest = pd.seen("rest");
    let calls: Vec<(&str, &str)> = rest
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    let lookup = format!(
        "/incidents?incident_key={key}&statuses[]=triggered&statuses[]=acknowledged&date_range=all"
    );
    let update = format!("/incidents/{}", found.id);
    assert_eq!(
        calls,
        [
            ("GET", lookup.as_str()),
            ("GET", "/priorities?limit=100"),
            ("PUT", update.as_str())
        ]
    );
    assert!(rest.iter().all(|s| s.status == 200), "{rest:?}");
    let put = &rest[2];
    assert_eq!(
        put.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Token token={TOKEN}").as_str())
    );
    assert_eq!(
        put.headers.get("from").and_then(|v| v.to_str().ok()),
        Some(FROM)
    );
    assert_eq!(
        put.body,
        json!({"incident": {"type": "incident_reference",
            "priority": {"id": found.priority, "type": "priority_reference"}, "urgency": "high"}})
    );
    // Events carry no REST key, and both triggers went to the events host.
    let events = pd.seen("events");
    assert_eq!(pd.triggers(), 2, "the opening and the raise");
    assert!(
        events
            .iter()
            .all(|s| s.headers.get("authorization").is_none())
    );
    assert!(events.iter().all(|s| s.body["dedup_key"] == key.as_str()));
    let m = metrics(&d.base).await;
    let line = "incidentd_outbound_requests_total{destination=\"pd\",operation=\"priority_changed\",outcome=\"success\"} 1";
    assert!(m.contains(line), "{line} missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_token_only_events_are_sent() {
    let pd = FakePagerDuty::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path(), &pd, false).await;
    let id = open_p3_then_raise_to_p1(&d, &pd).await;
    eventually("the raise's trigger", 20, async || {
        (pd.triggers() == 2).then_some(())
    })
    .await;
    support::drain::sqlite_outbox_drained(&dir.path().join("data")).await;
    assert!(pd.seen("rest").is_empty(), "no REST call without a key");
    // PagerDuty's incident stays as it opened: the raise is a log entry.
    let i = pd
        .incident(&format!("incidentd-{id}"))
        .expect("PagerDuty's incident");
    assert_eq!((i.priority, i.urgency.as_str()), (None, "low"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_key_is_on_the_timeline_and_the_event_still_delivered() {
    let pd = FakePagerDuty::start().await;
    pd.with(|a| {
        a.refuse_updates = Some(contracts::pagerduty_error(403, 2010, "Access Denied", &[]));
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path(), &pd, true).await;
    let id = open_p3_then_raise_to_p1(&d, &pd).await;
    let entry = eventually("outbound_failed on the timeline", 20, async || {
        let inc = get(&format!("{}/api/v1/incidents/{id}", d.base)).await;
        inc["timeline"].as_array()?.iter().find_map(|e| {
            (e["kind"] == "outbound_failed")
                .then(|| e["message"].as_str().map(str::to_string))
                .flatten()
        })
    })
    .await;
    assert!(
        entry.contains("pd (pagerduty)")
            && entry.contains("priority_changed update was delivered")
            && entry.contains("HTTP 403: Access Denied"),
        "{entry}"
    );
    support::drain::sqlite_outbox_drained(&dir.path().join("data")).await;
    assert_eq!(pd.updates().len(), 1, "a refusal is not retried");
    assert_eq!(pd.triggers(), 2);
    let m = metrics(&d.base).await;
    let line = "incidentd_outbound_requests_total{destination=\"pd\",operation=\"priority_changed\",outcome=\"success\"} 1";
    assert!(m.contains(line), "{line} missing");
    assert!(
        !m.lines()
            .any(|l| l.contains("outcome=\"rejected\"") && !l.ends_with(" 0")),
        "nothing given up"
    );
    let i = pd
        .incident(&format!("incidentd-{id}"))
        .expect("PagerDuty's incident");
    assert_eq!(i.priority, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_update_is_retried_and_made_once() {
    let pd = FakePagerDuty::start().await;
    pd.with(|a| {
        a.script.push_back(Scripted {
            method: "PUT",
            status: 429,
            headers: vec![("retry-after", "1".into())],
            body: contracts::pagerduty_error(429, 2020, "Rate Limit Exceeded", &[]).1,
        });
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path(), &pd, true).await;
    let id = open_p3_then_raise_to_p1(&d, &pd).await;
    let key = format!("incidentd-{id}");
    eventually("PagerDuty's incident at P1", 20, async || {
        pd.incident(&key).filter(|i| i.priority.is_some())
    })
    .await;
    support::drain::sqlite_outbox_drained(&dir.path().join("data")).await;
    let updates = pd.updates();
    let statuses: Vec<u16> = updates.iter().map(|u| u.status).collect();
    assert_eq!(statuses, [429, 200], "retried after the 429, made once");
    assert!(
        updates[1].body == updates[0].body,
        "the same update: {updates:?}"
    );
    // The retry repeated the raise's trigger: PagerDuty deduplicated it
    // on the open alert, one incident.
    assert_eq!(pd.triggers(), 3);
    assert_eq!(pd.with(|a| a.incidents.len()), 1);
    let i = pd.incident(&key).expect("PagerDuty's incident");
    assert_eq!(i.urgency, "high");
    // The priorities were listed once: kept for the retry.
    let listed = pd
        .seen("rest")
        .iter()
        .filter(|s| s.path.starts_with("/priorities"))
        .count();
    assert_eq!(listed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p1_opening_is_set_once_pagerduty_lists_the_incident() {
    let pd = FakePagerDuty::start().await;
    // PagerDuty makes the incident a moment after the trigger.
    pd.with(|a| a.create_after = Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path(), &pd, true).await;
    post_alert(
        &d.base,
        json!({"alertname": "CheckoutDown", "instance": "web-1:9100", "severity": "warning",
               "tier": "1"}),
    )
    .await;
    let (id, p) = eventually("the P1 incident", 20, async || {
        incident_of(&d.base, "CheckoutDown").await
    })
    .await;
    assert_eq!(p, "P1");
    let key = format!("incidentd-{id}");
    let i = eventually("PagerDuty's incident at P1", 20, async || {
        pd.incident(&key).filter(|i| i.priority.is_some())
    })
    .await;
    // A warning opens low in PagerDuty; incidentd's P1 makes it high.
    assert_eq!(i.urgency, "high");
    support::drain::sqlite_outbox_drained(&dir.path().join("data")).await;
    let lookups: Vec<u16> = pd
        .seen("rest")
        .iter()
        .filter(|s| s.path.starts_with("/incidents?"))
        .map(|s| s.status)
        .collect();
    assert!(lookups.len() >= 2, "looked again until listed: {lookups:?}");
    assert_eq!(pd.updates().len(), 1);
}

#[test]
fn rest_settings_are_checked_field_by_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        r#"
[[outbound.destinations]]
name = "pd"
kind = "pagerduty"
routing_key = "R0UTINGKEYR0UTINGKEYR0UTINGKEY00"
api_token = "k"
api_url = "ftp://api.pagerduty.com"
priority_names = { P1 = "SEV1", P9 = "SEV9", P2 = " " }
[[outbound.destinations]]
name = "pd2"
kind = "pagerduty"
routing_key = "R0UTINGKEYR0UTINGKEYR0UTINGKEY00"
from = "bot@example.com"
[[outbound.destinations]]
name = "pd3"
kind = "pagerduty"
routing_key = "R0UTINGKEYR0UTINGKEYR0UTINGKEY00"
api_token = "k"
from = "not an email"
[[outbound.destinations]]
name = "chat"
kind = "slack"
url = "http://127.0.0.1:9/hook"
api_token = "k"
"#,
    )
    .expect("write");
    let err = incidentd::config::load(Some(&file), &incidentd::config::Overrides::default())
        .expect_err("invalid");
    let incidentd::config::ConfigError::Invalid(errs) = err else {
        panic!("{err}")
    };
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "outbound.destinations[0].api_url",
            "outbound.destinations[0].from",
            "outbound.destinations[0].priority_names.P2",
            "outbound.destinations[0].priority_names.P9",
            "outbound.destinations[1].from",
            "outbound.destinations[2].from",
            "outbound.destinations[3].api_token",
        ],
        "{errs:?}"
    );
    // A valid one: the defaults filled in.
    std::fs::write(
        &file,
        r#"
[[outbound.destinations]]
name = "pd"
kind = "pagerduty"
routing_key = "R0UTINGKEYR0UTINGKEYR0UTINGKEY00"
api_token = "k"
from = "bot@example.com"
priority_names = { P1 = "SEV1" }
"#,
    )
    .expect("write");
    let c = incidentd::config::load(Some(&file), &incidentd::config::Overrides::default())
        .expect("valid");
    let d = &c.outbound[0];
    assert_eq!(d.url, "https://events.pagerduty.com");
    assert_eq!(d.api_url(), Some("https://api.pagerduty.com"));
    let incidentd::config::outbound::DestinationKind::PagerDuty {
        rest: Some(rest), ..
    } = &d.kind
    else {
        panic!("{:?}", d.kind)
    };
    assert_eq!(rest.from, "bot@example.com");
    assert_eq!(rest.priority_names, ["SEV1", "P2", "P3", "P4", "P5"]);
}
