//! Outbound delivery through the transactional outbox, against local HTTP
//! servers on 127.0.0.1 that answer like the real APIs (PagerDuty Events
//! v2 202s, Slack's "ok", a webhook receiver) and can be told to fail with
//! 5xx, 429 + Retry-After, 4xx or redirects: every update delivered once
//! and in order through an outage, `Retry-After` honoured, refusals not
//! retried but put on the incident's timeline, the backlog kept across a
//! restart, the rate limit kept, redirects never followed.

mod support;
use support::{call, contracts, start};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use incidentd::app::{self, Running};
use incidentd::config::{self, Config, Overrides};
use incidentd::domain::{Clock, ManualClock, Timestamp};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request a fake destination received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// The status it was answered with.
    status: u16,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Hold the answer this long (the request is recorded at once).
    delay: Duration,
}

fn answer(status: u16) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: String::new(),
        delay: Duration::ZERO,
    }
}

#[derive(Default)]
struct FakeState {
    seen: Vec<Seen>,
    script: VecDeque<Answer>,
    /// Answer once the script is used up.
    default: Option<Answer>,
    /// The service's documented contract: a request it would refuse is
    /// refused as it would be, whatever the script says.
    contract: Option<Contract>,
}

/// A check of one request against a service's contract.
type Contract = fn(&Method, &str, &HeaderMap, &[u8]) -> Result<(), contracts::Refusal>;

fn pagerduty_contract(
    m: &Method,
    path: &str,
    h: &HeaderMap,
    b: &[u8],
) -> Result<(), contracts::Refusal> {
    if m != Method::POST || path != "/v2/enqueue" {
        return Err((404, json!({"message": "Not Found"})));
    }
    contracts::pagerduty_event(h, b)
}

fn slack_contract(
    m: &Method,
    _path: &str,
    _h: &HeaderMap,
    b: &[u8],
) -> Result<(), contracts::Refusal> {
    if m != Method::POST {
        return Err((405, Value::String("invalid_method".into())));
    }
    contracts::slack_webhook(b)
}

fn opsgenie_contract(
    m: &Method,
    path: &str,
    _h: &HeaderMap,
    b: &[u8],
) -> Result<(), contracts::Refusal> {
    if m == Method::POST && path == "/v2/alerts" {
        return contracts::opsgenie_create(b);
    }
    Ok(())
}

/// A destination API on 127.0.0.1 that records every request.
#[derive(Clone)]
struct Fake {
    url: String,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    /// A fake that answers by its script alone (webhook receivers, whose
    /// contract is ours).
    async fn start(default: Answer) -> Fake {
        Fake::start_checked(default, None).await
    }

    async fn pagerduty(default: Answer) -> Fake {
        Fake::start_checked(default, Some(pagerduty_contract)).await
    }

    async fn slack(default: Answer) -> Fake {
        Fake::start_checked(default, Some(slack_contract)).await
    }

    async fn opsgenie(default: Answer) -> Fake {
        Fake::start_checked(default, Some(opsgenie_contract)).await
    }

    async fn start_checked(default: Answer, contract: Option<Contract>) -> Fake {
        let state = Arc::new(Mutex::new(FakeState {
            default: Some(default),
            contract,
            ..FakeState::default()
        }));
        let st = state.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let st = st.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let a = {
                    let mut s = st.lock().expect("fake state");
                    let path = parts.uri.path().to_string();
                    let refused = s
                        .contract
                        .and_then(|c| c(&parts.method, &path, &parts.headers, &body).err());
                    let scripted = s
                        .script
                        .pop_front()
                        .or_else(|| s.default.clone())
                        .unwrap_or_else(|| answer(200));
                    let a = match refused {
                        Some((status, why)) => Answer {
                            status,
                            headers: vec![("content-type", "application/json".to_string())],
                            body: match why {
                                Value::String(text) => text,
                                other => other.to_string(),
                            },
                            delay: Duration::ZERO,
                        },
                        None => scripted,
                    };
                    s.seen.push(Seen {
                        at: Instant::now(),
                        method: parts.method.clone(),
                        path: parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers: parts.headers.clone(),
                        body,
                        status: a.status,
                    });
                    a
                };
                tokio::time::sleep(a.delay).await;
                let mut resp: Response =
                    (StatusCode::from_u16(a.status).expect("status"), a.body).into_response();
                for (k, v) in a.headers {
                    resp.headers_mut()
                        .insert(k, v.parse().expect("header value"));
                }
                resp
            }
        });
        let url = support::serve(app, "fake destination").await;
        Fake { url, state }
    }

    fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().expect("fake").script.extend(answers);
    }

    fn set_default(&self, a: Answer) {
        self.state.lock().expect("fake").default = Some(a);
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("fake").seen.clone()
    }

    /// Requests answered 2xx.
    fn accepted(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| (200..300).contains(&s.status))
            .collect()
    }

    async fn wait_accepted(&self, n: usize, what: &str) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} accepted; seen: {:?}",
                got.len(),
                self.seen()
                    .iter()
                    .map(|s| (
                        s.status,
                        s.path.clone(),
                        String::from_utf8_lossy(&s.body).to_string()
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn config(dir: &Path, destinations: &str) -> Config {
    let file = dir.join("incidentd.toml");
    std::fs::write(
        &file,
        format!("[incident]\nauto_resolve_hold = \"0s\"\n\n{destinations}"),
    )
    .expect("write config");
    let mut c = config::load(
        Some(&file),
        &Overrides {
            data_dir: Some(dir.join("data")),
            rules_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")),
            ..Overrides::default()
        },
    )
    .expect("valid config");
    if !destinations.contains("settle") {
        support::announce_at_once(&mut c);
    }
    c
}

fn pagerduty(url: &str, extra: &str) -> String {
    format!(
        "[[outbound.destinations]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"{url}\"\nrouting_key = \"R0UTINGKEYR0UTINGKEYR0UTINGKEY00\"\nbackoff_base = \"20ms\"\nbackoff_max = \"200ms\"\n{extra}\n"
    )
}

/// A clock the test moves, just after the test alerts start.
fn simulated_clock() -> Arc<ManualClock> {
    let t0 = Timestamp::parse_rfc3339("2026-11-30T10:00:05Z")
        .expect("time")
        .expect("time");
    Arc::new(ManualClock::new(t0))
}

/// Opens an incident with one critical alert named `name`; its id.
async fn open(r: &Running, name: &str) -> i64 {
    support::open_incident(r, name, &format!("{name}:9100"), "critical").await
}

/// Polls the incident until its timeline has an entry `pred` accepts.
async fn wait_timeline(r: &Running, id: i64, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = call(r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
        if d["timeline"]
            .as_array()
            .is_some_and(|t| t.iter().any(&pred))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not on the timeline: {d}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics(r: &Running) -> String {
    let (_, bytes) = support::oneshot(&r.router, "GET", "/metrics", &[], Vec::new()).await;
    String::from_utf8(bytes).expect("utf-8")
}

fn actions(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .map(|s| {
            let b = s.json();
            (
                b["event_action"].as_str().unwrap_or_default().to_string(),
                b["dedup_key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_and_slack_follow_the_incident_lifecycle() {
    let pd = Fake::pagerduty(Answer {
        status: 202,
        headers: vec![("content-type", "application/json".into())],
        body: r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#.into(),
        delay: Duration::ZERO,
    })
    .await;
    let slack = Fake::slack(Answer {
        status: 200,
        headers: Vec::new(),
        body: "ok".into(),
        delay: Duration::ZERO,
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "{}\n[[outbound.destinations]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}/services/T000/B000/XXXX\"\nincident_url = \"https://incidentd.example.com/incidents/{{id}}\"\n",
            pagerduty(&pd.url, ""),
            slack.url
        ),
    );
    let r = start(&cfg).await;
    let id = open(&r, "PostgresDown").await;
    let key = format!("incidentd-{id}");
    let got = pd.wait_accepted(1, "trigger").await;
    assert_eq!(got[0].method, Method::POST);
    assert_eq!(got[0].path, "/v2/enqueue");
    let b = got[0].json();
    assert_eq!(
        (b["event_action"].as_str(), b["routing_key"].as_str()),
        (Some("trigger"), Some("R0UTINGKEYR0UTINGKEYR0UTINGKEY00"))
    );
    assert_eq!(b["dedup_key"], key.as_str());
    // An alert outside the CMDB: default impact 2, critical urgency: P2.
    assert_eq!(b["payload"]["severity"], "error", "{b}");
    assert!(b["payload"].get("component").is_none(), "no nulls: {b}");
    assert!(
        b["payload"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("PostgresDown")),
        "{b}"
    );
    let (s, v) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/ack"),
        json!({"by": "alice"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    pd.wait_accepted(2, "acknowledge").await;
    let (s, v) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/resolve"),
        json!({"by": "alice"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = pd.wait_accepted(3, "resolve").await;
    assert_eq!(
        actions(&got),
        [
            ("trigger".to_string(), key.clone()),
            ("acknowledge".to_string(), key.clone()),
            ("resolve".to_string(), key.clone())
        ]
    );
    // Slack hears of the opening and the resolution, not the acknowledgement.
    let msgs = slack.wait_accepted(2, "slack messages").await;
    assert_eq!(msgs[0].path, "/services/T000/B000/XXXX");
    let first = msgs[0].json();
    assert!(
        first["text"].as_str().is_some_and(|t| t.contains("opened")),
        "{first}"
    );
    assert_eq!(first["blocks"][0]["type"], "header");
    assert!(
        msgs[0].body.windows(5).any(|w| w == b"/inci"),
        "the incident link is in the message"
    );
    assert!(
        msgs[1].json()["text"]
            .as_str()
            .is_some_and(|t| t.contains("resolved"))
    );
    support::drain::outbox_drained(&*r.store).await;
    assert_eq!(pd.seen().len(), 3, "nothing sent twice");
    assert_eq!(slack.seen().len(), 2);
    let m = metrics(&r).await;
    for (op, n) in [("opened", 1), ("acknowledged", 1), ("resolved", 1)] {
        let line = format!(
            "incidentd_outbound_requests_total{{destination=\"pd\",operation=\"{op}\",outcome=\"success\"}} {n}"
        );
        assert!(m.contains(&line), "{line} missing");
    }
    assert!(m.contains("incidentd_outbound_queue_depth{destination=\"pd\"} 0"));
    assert!(
        !m.contains("incidentd_outbound_last_success_timestamp_seconds{destination=\"pd\"} 0\n")
    );
    r.shutdown().await;
}

/// Five failures (503s, no answer, a 429 asking for a second), then the
/// API is back: the trigger, acknowledgement and resolution made during
/// the outage arrive once each, in order, and the retry after the 429 came
/// no sooner than it asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_but_never_reorders_or_duplicates() {
    let pd = Fake::pagerduty(answer(202)).await;
    pd.script([
        answer(503),
        answer(502),
        answer(500),
        Answer {
            status: 429,
            headers: vec![("retry-after", "1".into())],
            body: String::new(),
            delay: Duration::ZERO,
        },
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &pagerduty(&pd.url, "breaker_failures = 10\n"));
    let r = start(&cfg).await;
    let id = open(&r, "DiskFull").await;
    let key = format!("incidentd-{id}");
    support::act(&r, id, "ack").await;
    support::act(&r, id, "resolve").await;
    let got = pd
        .wait_accepted(3, "the three updates after the outage")
        .await;
    assert_eq!(
        actions(&got),
        [
            ("trigger".to_string(), key.clone()),
            ("acknowledge".to_string(), key.clone()),
            ("resolve".to_string(), key.clone())
        ]
    );
    let seen = pd.seen();
    // The four failures were all the trigger's; nothing else went before it.
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert!(actions(&seen[..5]).iter().all(|(a, _)| a == "trigger"));
    let after_429 = seen[4].at.duration_since(seen[3].at);
    assert!(
        after_429 >= Duration::from_millis(950),
        "retried {after_429:?} after a Retry-After of 1 s"
    );
    let m = metrics(&r).await;
    assert!(m.contains(
        "incidentd_outbound_requests_total{destination=\"pd\",operation=\"opened\",outcome=\"retry\"} 4"
    ));
    r.shutdown().await;
}

/// Five minutes of simulated time with PagerDuty down (every call a 503)
/// and the default backoff and breaker, while three incidents are opened,
/// acknowledged and resolved; then it is back. The outage is not hammered
/// (a handful of calls in five minutes, the breaker open), recovery is
/// noticed within the breaker's cool-down, and then every update arrives
/// exactly once, each incident's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_simulated_minutes_of_outage_then_every_update_once_in_order() {
    let pd = Fake::pagerduty(answer(503)).await;
    let clock = simulated_clock();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "[[outbound.destinations]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"{}\"\nrouting_key = \"R0UTINGKEYR0UTINGKEYR0UTINGKEY00\"\n",
            pd.url
        ),
    );
    let r = app::start(&cfg, clock.clone())
        .await
        .expect("daemon starts");
    let mut ids = std::collections::BTreeMap::new();
    let mut breaker_opened = false;
    let step = Duration::from_secs(1);
    let outage = 300;
    for second in 0..outage {
        match second {
            0 => {
                ids.insert("a", open(&r, "DiskFull").await);
            }
            40 => {
                ids.insert("b", open(&r, "MemoryPressure").await);
            }
            70 => {
                let (s, _) = call(
                    &r,
                    "POST",
                    &format!("/api/v1/incidents/{}/ack", ids["a"]),
                    Value::Null,
                )
                .await;
                assert_eq!(s, StatusCode::OK);
            }
            130 => {
                ids.insert("c", open(&r, "CertExpiry").await);
            }
            170 => {
                let (s, _) = call(
                    &r,
                    "POST",
                    &format!("/api/v1/incidents/{}/resolve", ids["a"]),
                    Value::Null,
                )
                .await;
                assert_eq!(s, StatusCode::OK);
            }
            230 => {
                let (s, _) = call(
                    &r,
                    "POST",
                    &format!("/api/v1/incidents/{}/resolve", ids["b"]),
                    Value::Null,
                )
                .await;
                assert_eq!(s, StatusCode::OK);
            }
            _ => {}
        }
        clock.advance(step);
        // Real time for the sender to act on the simulated second (its
        // rounds are at least 50 ms apart).
        tokio::time::sleep(Duration::from_millis(25)).await;
        if second % 10 == 5 {
            breaker_opened |= metrics(&r)
                .await
                .contains("incidentd_outbound_breaker_state{destination=\"pd\"} 2");
        }
    }
    let during = pd.seen();
    assert!(during.iter().all(|s| s.status == 503));
    // Default backoff (0.5 s doubling, full jitter) and breaker (5
    // failures, 30 s cool-down): the first failures, then about one probe
    // per cool-down; a sender without them would call every round.
    assert!(
        (5..=25).contains(&during.len()),
        "{} calls in five minutes of outage",
        during.len()
    );
    assert!(breaker_opened, "the breaker never opened");

    pd.set_default(answer(202));
    let back = clock.now();
    let want = 6; // a: trigger, ack, resolve; b: trigger, resolve; c: trigger
    let mut delivered_at = None;
    for _ in 0..120 {
        clock.advance(step);
        tokio::time::sleep(Duration::from_millis(25)).await;
        if pd.accepted().len() >= want {
            delivered_at = Some(clock.now());
            break;
        }
    }
    let delivered_at = delivered_at.unwrap_or_else(|| {
        panic!(
            "not all delivered 2 simulated minutes after the outage: {:?}",
            actions(&pd.accepted())
        )
    });
    eprintln!(
        "{} calls during the simulated outage; backlog delivered {:?} after recovery",
        during.len(),
        delivered_at.since(back)
    );
    assert!(
        // At most one cool-down (30 s) until the probe, then the backlog.
        delivered_at.since(back) <= Duration::from_secs(35),
        "the backlog took {:?} of simulated time after recovery",
        delivered_at.since(back)
    );
    // Nothing more trickles in later.
    for _ in 0..20 {
        clock.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = actions(&pd.accepted());
    assert_eq!(got.len(), want, "each update exactly once: {got:?}");
    let of = |name: &str| -> Vec<String> {
        let key = format!("incidentd-{}", ids[name]);
        got.iter()
            .filter(|(_, k)| *k == key)
            .map(|(a, _)| a.clone())
            .collect()
    };
    assert_eq!(of("a"), ["trigger", "acknowledge", "resolve"]);
    assert_eq!(of("b"), ["trigger", "resolve"]);
    assert_eq!(of("c"), ["trigger"]);
    let m = metrics(&r).await;
    assert!(m.contains("incidentd_outbound_breaker_state{destination=\"pd\"} 0"));
    assert!(
        m.contains("incidentd_outbound_queue_depth{destination=\"pd\"} 0"),
        "{m}"
    );
    r.shutdown().await;
}

/// A 400 is not retried: the next update still goes, and the refusal is
/// on the incident's timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_is_recorded_not_retried() {
    let pd = Fake::pagerduty(answer(202)).await;
    pd.script([Answer {
        status: 400,
        headers: vec![("content-type", "application/json".into())],
        body: r#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect"]}"#.into(),
        delay: Duration::ZERO,
    }]);
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(dir.path(), &pagerduty(&pd.url, ""))).await;
    let id = open(&r, "CertExpiring").await;
    support::act(&r, id, "ack").await;
    let got = pd.wait_accepted(1, "the acknowledgement").await;
    assert_eq!(actions(&got)[0].0, "acknowledge");
    assert_eq!(pd.seen().len(), 2, "the refused trigger was not retried");
    let (_, detail) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    let note = detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .find(|e| e["kind"] == "outbound_failed")
        .cloned()
        .unwrap_or_else(|| panic!("no outbound_failed entry: {detail}"));
    let msg = note["message"].as_str().expect("message");
    assert!(
        msg.contains("pd (pagerduty) refused the opened update: HTTP 400"),
        "{msg}"
    );
    assert!(
        msg.contains("routing_key"),
        "the API's reason is kept: {msg}"
    );
    assert!(metrics(&r).await.contains(
        "incidentd_outbound_requests_total{destination=\"pd\",operation=\"opened\",outcome=\"rejected\"} 1"
    ));
    r.shutdown().await;
}

/// Messages queued while the destination is down survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_survives_a_restart() {
    let pd = Fake::pagerduty(answer(503)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &pagerduty(&pd.url, ""));
    let r = start(&cfg).await;
    let id = open(&r, "NodeDown").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pd.seen().is_empty() {
        assert!(Instant::now() < deadline, "no attempt was made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.shutdown().await;
    pd.set_default(answer(202));
    let r = start(&cfg).await;
    let got = pd.wait_accepted(1, "the trigger after the restart").await;
    assert_eq!(
        actions(&got),
        [("trigger".to_string(), format!("incidentd-{id}"))]
    );
    r.shutdown().await;
}

/// A generic webhook: signed (the receiver verifies the HMAC with the
/// shared secret), the same delivery id on a retry, and a redirect is a
/// refusal, never followed to another host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_never_follow_redirects() {
    let elsewhere = Fake::start(answer(200)).await;
    let hook = Fake::start(answer(204)).await;
    hook.script([answer(503)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "[[outbound.destinations]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/incidentd\"\nsecret = \"s3cret\"\nbackoff_base = \"20ms\"\nbackoff_max = \"100ms\"\n",
            hook.url
        ),
    );
    let r = start(&cfg).await;
    let id = open(&r, "QueueBacklog").await;
    let got = hook.wait_accepted(1, "the webhook").await;
    let seen = hook.seen();
    assert_eq!(seen.len(), 2);
    let delivery = |s: &Seen| {
        s.headers["x-incidentd-delivery"]
            .to_str()
            .expect("delivery id")
            .to_string()
    };
    assert_eq!(
        delivery(&seen[0]),
        delivery(&seen[1]),
        "a retry keeps its delivery id"
    );
    let sig = got[0].headers["x-incidentd-signature"]
        .to_str()
        .expect("signature");
    let now = Timestamp(chrono::Utc::now().timestamp_millis());
    incidentd::outbound::webhook::verify(b"s3cret", sig, &got[0].body, now, 300)
        .expect("the signature verifies");
    assert!(incidentd::outbound::webhook::verify(b"wrong", sig, &got[0].body, now, 300).is_err());
    let b = got[0].json();
    assert_eq!(
        (b["event"].as_str(), b["incident"]["id"].as_i64()),
        (Some("opened"), Some(id))
    );

    // The receiver now redirects elsewhere: not followed, recorded.
    hook.set_default(Answer {
        status: 307,
        headers: vec![("location", format!("{}/steal", elsewhere.url))],
        body: String::new(),
        delay: Duration::ZERO,
    });
    support::act(&r, id, "ack").await;
    wait_timeline(&r, id, "the refused redirect", |e| {
        e["kind"] == "outbound_failed"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("HTTP 307"))
    })
    .await;
    assert_eq!(hook.seen().len(), 3, "the redirect was not retried");
    assert!(elsewhere.seen().is_empty(), "the redirect was followed");
    r.shutdown().await;
}

/// A storm whose dependents alert before their database does pages once.
/// Two of five apps' incidents open, the database's alert joins them 10 s
/// later;
/// with the default 30 s settle delay the webhook hears of one incident,
/// rooted at the database, once the delay ends (on a simulated clock),
/// and never of the incident merged away; the API says who was not told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_whose_root_alerts_late_pages_once() {
    let hook = Fake::start(answer(204)).await;
    let clock = simulated_clock();
    let dir = tempfile::tempdir().expect("tempdir");
    let cmdb = dir.path().join("cmdb.yaml");
    std::fs::write(
        &cmdb,
        format!(
            "version: 1\nservices:\n  - {{id: shop, tier: 1}}\ncis:\n  - {{id: db, class: database}}\n{}",
            // Five apps on the database: two alerting are not yet enough
            // to name it the root without its own alert.
            ["cart", "pay", "search", "ship", "mail"]
                .map(|a| format!("  - {{id: {a}, class: application, service: shop, depends_on: [db]}}\n"))
                .concat()
        ),
    )
    .expect("cmdb");
    let mut cfg = config(
        dir.path(),
        &format!(
            "[outbound]\nsettle = \"30s\"\n[[outbound.destinations]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}/incidentd\"\nsecret = \"s3cret\"\n",
            hook.url
        ),
    );
    cfg.cmdb = Some(cmdb);
    let r = app::start(&cfg, clock.clone())
        .await
        .expect("daemon starts");
    let alert = |name: &str, ci: &str| {
        json!([{"labels": {"alertname": name, "ci": ci, "severity": "critical"},
                "status": "firing", "startsAt": clock.now().to_rfc3339()}])
    };
    for (name, ci) in [("CartErrors", "cart"), ("PayErrors", "pay")] {
        let (st, v) = call(&r, "POST", "/api/v1/alerts", alert(name, ci)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        clock.advance(Duration::from_secs(2));
    }
    let (_, list) = call(&r, "GET", "/api/v1/incidents?state=all", Value::Null).await;
    let first = list["incidents"].as_array().expect("list");
    assert!(!first.is_empty(), "{list}");
    for i in first {
        assert_eq!(
            i["unannounced"]["destinations"][0]["destination"], "hook",
            "waiting for its settle delay: {i}"
        );
    }
    clock.advance(Duration::from_secs(6));
    let (st, v) = call(&r, "POST", "/api/v1/alerts", alert("PostgresDown", "db")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Nothing is announced within the delay (the engine ticks meanwhile).
    clock.advance(Duration::from_secs(19));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        hook.seen().is_empty(),
        "announced within the delay: {:?}",
        hook.seen()
    );
    clock.advance(Duration::from_secs(5));
    let got = hook.wait_accepted(1, "the one announcement").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.seen().len(), 1, "one page for the storm");
    let b = got[0].json();
    assert_eq!(b["event"], "opened", "{b}");
    assert_eq!(b["incident"]["root_ci"], "db", "{b}");
    assert_eq!(b["incident"]["alert_count"], 3, "{b}");
    let announced = b["incident"]["id"].as_i64().expect("id");
    let (_, list) = call(&r, "GET", "/api/v1/incidents?state=all", Value::Null).await;
    for i in list["incidents"].as_array().expect("list") {
        if i["id"].as_i64() == Some(announced) {
            assert!(i.get("unannounced").is_none(), "told: {i}");
        } else {
            assert!(!i["links"]["merged_into"].is_null(), "merged away: {i}");
            assert_eq!(i["unannounced"]["withheld"], true, "never told: {i}");
        }
    }
    let m = wait_metric(
        &r,
        "incidentd_incident_announcements_total{outcome=\"withheld\"}",
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &m,
            "incidentd_incident_announcements_total{outcome=\"announced\"}"
        ),
        1.0,
        "{m}"
    );
    r.shutdown().await;
}

/// 12 incidents at once against a limit of 4 requests/s with a burst of 2:
/// never more than 2 + 4 in any second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_in_every_second() {
    let pd = Fake::pagerduty(answer(202)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(
        dir.path(),
        &pagerduty(&pd.url, "rate_limit = 4.0\nburst = 2\n"),
    ))
    .await;
    let alerts: Vec<Value> = (0..12)
        .map(|i| json!({"labels": {"alertname": format!("Burst{i}"), "instance": format!("h{i}:9100"), "severity": "critical"},
                        "status": "firing", "startsAt": "2026-11-30T10:00:00Z"}))
        .collect();
    let (s, v) = call(&r, "POST", "/api/v1/alerts", Value::Array(alerts)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = pd.wait_accepted(12, "all twelve triggers").await;
    let times: Vec<Instant> = got.iter().map(|s| s.at).collect();
    for (i, t) in times.iter().enumerate() {
        let in_second = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(
            in_second <= 6,
            "{in_second} requests within a second of request {i}"
        );
    }
    let span = times[11].duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(2_200),
        "12 requests in {span:?}"
    );
    let keys: std::collections::BTreeSet<String> =
        actions(&got).into_iter().map(|(_, k)| k).collect();
    assert_eq!(keys.len(), 12, "one trigger per incident");
    r.shutdown().await;
}

#[test]
fn bad_destinations_are_reported_with_their_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        r#"
[outbound]
retention = "10m"
[[outbound.destinations]]
name = "Bad Name"
kind = "pagerduty"
[[outbound.destinations]]
name = "x"
kind = "remedy"
url = "ftp://nope"
[[outbound.destinations]]
name = "h"
kind = "webhook"
url = "http://127.0.0.1:1/h"
rate_limit = 0.0
poll_interval = "1m"
[[outbound.destinations.routes]]
max_priority = "P9"
events = ["exploded"]
"#,
    )
    .expect("write");
    let err = config::load(Some(&file), &Overrides::default()).expect_err("invalid");
    let config::ConfigError::Invalid(errs) = err else {
        panic!("{err}")
    };
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "outbound.destinations[0].name",
            "outbound.destinations[0].routing_key",
            "outbound.destinations[1].kind",
            "outbound.destinations[1].url",
            "outbound.destinations[2].secret",
            "outbound.destinations[2].rate_limit",
            "outbound.destinations[2].routes[0].max_priority",
            "outbound.destinations[2].routes[0].events[0]",
            "outbound.destinations[2].poll_interval",
            "outbound.retention",
        ]
    );
}

/// ServiceNow field templates are checked at start: a misspelt
/// placeholder, a field incidentd sets itself, a bad field name, and a
/// ServiceNow setting on another kind are each named.
#[test]
fn servicenow_field_map_errors_name_their_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        r#"
[[outbound.destinations]]
name = "snow"
kind = "servicenow"
url = "https://example.service-now.com"
user = "svc"
password = "pw"
short_description = "[{priority}] {tittle}"
business_service = "{service"
[outbound.destinations.fields]
state = "6"
"U Field" = "x"
u_ok = "{root_ci}"
[[outbound.destinations]]
name = "pd"
kind = "pagerduty"
routing_key = "R0UTINGKEYR0UTINGKEYR0UTINGKEY00"
category = "software"
"#,
    )
    .expect("write");
    let err = config::load(Some(&file), &Overrides::default()).expect_err("invalid");
    let config::ConfigError::Invalid(errs) = err else {
        panic!("{err}")
    };
    let got: Vec<(&str, &str)> = errs
        .iter()
        .map(|e| (e.field.as_str(), e.message.as_str()))
        .collect();
    let fields: Vec<&str> = got.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        fields,
        [
            "outbound.destinations[0].short_description",
            "outbound.destinations[0].business_service",
            "outbound.destinations[0].fields.U Field",
            "outbound.destinations[0].fields.state",
            "outbound.destinations[1].category",
        ],
        "{got:?}"
    );
    assert!(
        got[0].1.contains("unknown placeholder {tittle}") && got[0].1.contains("{title}"),
        "{got:?}"
    );
}

/// The real binary is killed with SIGKILL while PagerDuty holds the answer
/// to its trigger (the call made, the outbox row not yet marked). After
/// the restart the trigger goes again with the same `dedup_key`, so
/// PagerDuty keeps one incident: exactly-once in effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_the_call_and_the_mark_makes_no_second_ticket() {
    use support::daemon::TestDaemon;
    let pd = Fake::pagerduty(answer(202)).await;
    // Held for longer than the test: the daemon dies waiting (recorded
    // as not accepted, since its answer never arrives).
    pd.script([Answer {
        status: 504,
        headers: Vec::new(),
        body: String::new(),
        delay: Duration::from_secs(30),
    }]);
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("incidentd.toml");
    std::fs::write(&conf, pagerduty(&pd.url, "timeout = \"60s\"\n")).expect("config");
    let spawn = || {
        TestDaemon::new(&dir.path().join("data"), dir.path())
            .arg("--config")
            .arg(conf.display().to_string())
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .start()
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut first = spawn();
    first.wait_ready(Duration::from_secs(20)).await;
    let base = first.base.clone();
    let resp = http
        .post(format!("{base}/api/v1/alerts"))
        .json(&json!([{"labels": {"alertname": "KillMe", "instance": "k:9100", "severity": "critical"},
                        "status": "firing", "startsAt": "2026-11-30T10:00:00Z"}]))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pd.seen().is_empty() {
        assert!(Instant::now() < deadline, "the trigger was never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first); // SIGKILL, reaped
    let mut second = spawn();
    second.wait_ready(Duration::from_secs(20)).await;
    let got = pd.wait_accepted(1, "the trigger after the restart").await;
    support::drain::sqlite_outbox_drained(&dir.path().join("data")).await;
    let seen = pd.seen();
    drop(second);
    assert_eq!(seen.len(), 2, "once before the kill, once after: {seen:?}");
    let keys: Vec<(String, String)> = actions(&seen);
    assert_eq!(keys[0], keys[1], "the same event with the same dedup_key");
    assert_eq!(keys[0].0, "trigger");
    assert_eq!(got.len(), 1, "one accepted trigger: one PagerDuty incident");
}

fn servicenow(url: &str, password: &str) -> String {
    format!(
        "[[outbound.destinations]]\nname = \"snow\"\nkind = \"servicenow\"\nurl = \"{url}\"\nuser = \"incidentd\"\npassword = \"{password}\"\nassignment_group = \"Service Desk\"\nbackoff_base = \"20ms\"\nbackoff_max = \"100ms\"\n"
    )
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    support::wait_until(what, Duration::from_secs(20), async || done()).await;
}

/// One ServiceNow ticket per incident, found by `correlation_id`, taken
/// through acknowledgement (In Progress), hold (On Hold, Awaiting Vendor),
/// resume and resolution (Resolved, close code), with work notes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_ticket_follows_the_incident() {
    let (url, sn) = support::servicenow::start("incidentd", "pw").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(dir.path(), &servicenow(&url, "pw"))).await;
    let id = open(&r, "ApiDown").await;
    wait_for("the ticket", || sn.lock().expect("sn").records.len() == 1).await;
    for (path, body) in [
        ("ack", json!({"by": "alice"})),
        ("hold", json!({"by": "alice", "reason": "awaiting_vendor"})),
        ("resume", json!({"by": "alice"})),
        ("resolve", json!({"by": "alice"})),
    ] {
        let (s, v) = call(&r, "POST", &format!("/api/v1/incidents/{id}/{path}"), body).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
    }
    wait_for("the resolution", || {
        sn.lock()
            .expect("sn")
            .records
            .first()
            .is_some_and(|t| t["state"] == "6")
    })
    .await;
    {
        let s = sn.lock().expect("sn");
        assert_eq!(s.records.len(), 1, "one ticket");
        let t = &s.records[0];
        assert_eq!(t["correlation_id"], format!("incidentd-{id}").as_str());
        // References hold sys_ids, found by name.
        assert_eq!(
            s.display(t, "assignment_group").as_deref(),
            Some("Service Desk")
        );
        assert_eq!(s.display(t, "caller_id").as_deref(), Some("incidentd"));
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        assert!(
            t["short_description"]
                .as_str()
                .is_some_and(|d| d.contains("ApiDown")),
            "{t}"
        );
        assert_eq!(t["close_code"], "Solution provided");
        assert_eq!(t["hold_reason"], "4", "the hold was Awaiting Vendor");
        assert_eq!(
            s.work_notes,
            [
                "incidentd: acknowledged by alice",
                "incidentd: on hold (awaiting_vendor) by alice",
                "incidentd: taken off hold",
                "incidentd: resolved"
            ]
        );
        // The group and the caller looked up by name, the ticket once
        // before the create; the id was stored after that.
        let calls: Vec<String> = s
            .calls
            .iter()
            .map(|(m, q)| format!("{m} {}", q.split('?').next().unwrap_or_default()))
            .collect();
        assert_eq!(
            calls[..4],
            [
                "GET sys_user_group",
                "GET sys_user",
                &format!("GET correlation_id=incidentd-{id}^ORDERBYDESCsys_created_on"),
                "POST ",
            ]
        );
        assert!(
            calls[4..].iter().all(|c| c.starts_with("PATCH")),
            "{calls:?}"
        );
        assert_eq!(calls.len(), 8, "{calls:?}");
    }
    r.shutdown().await;
}

/// The create's answer is lost (ServiceNow made the ticket, answered 503):
/// the retry finds the ticket by `correlation_id` and creates no second.
/// Wrong credentials are a refusal, on the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_never_makes_a_second_ticket() {
    let (url, sn) = support::servicenow::start("incidentd", "pw").await;
    sn.lock().expect("sn").lose_next_create = true;
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(dir.path(), &servicenow(&url, "pw"))).await;
    let id = open(&r, "QueueStuck").await;
    support::act(&r, id, "resolve").await;
    wait_for("the resolution", || {
        sn.lock()
            .expect("sn")
            .records
            .first()
            .is_some_and(|t| t["state"] == "6")
    })
    .await;
    {
        let s = sn.lock().expect("sn");
        assert_eq!(s.records.len(), 1, "one ticket despite the lost answer");
        // The names were looked up once (the retry used what it learnt).
        let kinds: Vec<&str> = s.calls.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            kinds,
            ["GET", "GET", "GET", "POST", "GET", "PATCH", "PATCH"]
        );
    }
    r.shutdown().await;

    // A wrong password is a refusal, on the timeline.
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(dir.path(), &servicenow(&url, "wrong"))).await;
    let id = open(&r, "BadCreds").await;
    wait_timeline(&r, id, "the refusal", |e| {
        e["kind"] == "outbound_failed"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("HTTP 401") && m.contains("User Not Authenticated"))
    })
    .await;
    r.shutdown().await;

    // With retry_unauthorized, a rotated password's 401s are retried, not
    // dropped, and once the configuration is fixed (a restart reads it)
    // the ticket is made. (A ServiceNow of its own: incident ids start at
    // 1 again.)
    let (url, sn) = support::servicenow::start("incidentd", "pw").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hold = |pw: &str| format!("{}retry_unauthorized = true\n", servicenow(&url, pw));
    let r = start(&config(dir.path(), &hold("wrong"))).await;
    let id = open(&r, "BadCreds").await;
    let m = wait_metric(
        &r,
        r#"incidentd_outbound_requests_total{destination="snow",operation="opened",outcome="retry"}"#,
        2.0,
    )
    .await;
    assert_eq!(
        sample(
            &m,
            r#"incidentd_outbound_requests_total{destination="snow",operation="opened",outcome="rejected"}"#
        ),
        0.0,
        "a refused credential must not drop the update:\n{m}"
    );
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    assert!(
        !d["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["kind"] == "outbound_failed"),
        "{d}"
    );
    r.shutdown().await;
    assert!(sn.lock().expect("sn").records.is_empty());
    let r = start(&config(dir.path(), &hold("pw"))).await;
    wait_for("the ticket after the fix", || {
        sn.lock()
            .expect("sn")
            .records
            .iter()
            .any(|t| t["correlation_id"] == format!("incidentd-{id}").as_str())
    })
    .await;
    let tickets = sn.lock().expect("sn").records.len();
    assert_eq!(tickets, 1);
    r.shutdown().await;
}

/// A wide outage (40 impacted services, a 2,000-character title with
/// line breaks) through a Jira Service Management desk: the request, its
/// label, internal comments and transitions are all accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_outage_is_accepted_by_jira() {
    let (url, jira) = jira_fake().await;
    jira.lock().expect("jira").cloud = true;
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = format!(
        "[[outbound.destinations]]\nname = \"jsm\"\nkind = \"jira\"\nurl = \"{url}\"\ndeployment = \"cloud\"\nuser = \"ops@example.com\"\npassword = \"api-token\"\n\
         service_desk_id = \"1\"\nrequest_type_id = \"10\"\nbackoff_base = \"20ms\"\nbackoff_max = \"100ms\"\n"
    );
    let mut cfg = config(dir.path(), &dest);
    cfg.cmdb = Some(support::wide_cmdb(dir.path()));
    let r = start(&cfg).await;
    let d = support::wide_outage(&r).await;
    let id = d["id"].as_i64().expect("id");
    {
        let s = jira.lock().expect("jira");
        assert_eq!(s.issues.len(), 1, "{:?}", s.calls);
        let (key, labels, category, comments) = &s.issues[0];
        assert_eq!(category, "done");
        assert_eq!(labels, &[format!("incidentd-{id}")]);
        assert!(comments.len() >= 2, "{comments:?}");
        assert!(s.public_comments.is_empty(), "{:?}", s.public_comments);
        let summary = &s.summaries[key];
        assert!(summary.ends_with(&format!("(incidentd-{id})")), "{summary}");
    }
    r.shutdown().await;
}

/// An instance whose data policies make caller, category and service
/// mandatory, configured with a field map: the ticket is accepted, every
/// reference names its record (by sys_id, looked up by name), and
/// nothing is stored broken or cut. Without the category the data
/// policy's refusal is on the timeline; a group the instance does not
/// have leaves the field empty and says so in a work note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_fields_meet_the_instance_policies() {
    let (url, sn) = support::servicenow::start("incidentd", "pw").await;
    {
        let mut s = sn.lock().expect("sn");
        s.mandatory = vec!["caller_id", "category", "business_service"];
        s.add(
            "sys_user",
            json!({"user_name": "svc-monitoring", "email": "mon@example.com"}),
        );
        s.add("sys_user_group", json!({"name": "DBA"}));
        s.add("cmdb_ci", json!({"name": "main-db"}));
        s.add(
            "cmdb_ci_service",
            json!({"name": "business-service-number-00-of-the-catalog"}),
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = format!(
        "[[outbound.destinations]]\nname = \"snow\"\nkind = \"servicenow\"\nurl = \"{url}\"\nuser = \"incidentd\"\npassword = \"pw\"\n\
         assignment_group = \"DBA\"\ncaller = \"mon@example.com\"\ncategory = \"database\"\nsubcategory = \"db2\"\n\
         short_description = \"{{priority}} {{root_ci}}: {{title}}\"\nbackoff_base = \"20ms\"\nbackoff_max = \"100ms\"\n\
         [outbound.destinations.fields]\nu_incidentd_services = \"{{services}}\"\n"
    );
    let mut cfg = config(dir.path(), &dest);
    cfg.cmdb = Some(support::wide_cmdb(dir.path()));
    let r = start(&cfg).await;
    support::wide_outage(&r).await;
    {
        let s = sn.lock().expect("sn");
        assert_eq!(s.records.len(), 1);
        let t = &s.records[0];
        assert_eq!(t["state"], "6", "{t}");
        for (field, name) in [
            ("assignment_group", "DBA"),
            ("caller_id", "svc-monitoring"),
            ("cmdb_ci", "main-db"),
            (
                "business_service",
                "business-service-number-00-of-the-catalog",
            ),
        ] {
            assert_eq!(s.display(t, field).as_deref(), Some(name), "{field}: {t}");
        }
        assert_eq!(
            (t["category"].as_str(), t["subcategory"].as_str()),
            (Some("database"), Some("db2"))
        );
        assert!(
            t["short_description"]
                .as_str()
                .is_some_and(|d| d.starts_with("P1 main-db: PostgresDown: Primary <db>")
                    && d.chars().count() == 160),
            "{t}"
        );
        assert!(
            t["u_incidentd_services"]
                .as_str()
                .is_some_and(|v| v.contains("number-39")),
            "{t}"
        );
        assert!(s.violations.is_empty(), "{:?}", s.violations);
    }
    r.shutdown().await;

    // The data policy's refusal names the field; the group that is not
    // there is left empty, with a note. (An instance of its own: incident
    // ids start at 1 again.)
    let (url, sn) = support::servicenow::start("incidentd", "pw").await;
    {
        let mut s = sn.lock().expect("sn");
        s.mandatory = vec!["caller_id", "category"];
        s.add("sys_user", json!({"user_name": "svc-monitoring"}));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = format!(
        "[[outbound.destinations]]\nname = \"snow\"\nkind = \"servicenow\"\nurl = \"{url}\"\nuser = \"incidentd\"\npassword = \"pw\"\n\
         assignment_group = \"No Such Team\"\ncaller = \"svc-monitoring\"\n"
    );
    let mut cfg = config(dir.path(), &dest);
    cfg.cmdb = Some(support::wide_cmdb(dir.path()));
    let r = start(&cfg).await;
    let id = open(&r, "NoCategory").await;
    wait_timeline(&r, id, "the data policy's refusal", |e| {
        e["kind"] == "outbound_failed"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("HTTP 403") && m.contains("mandatory: Category"))
    })
    .await;
    sn.lock().expect("sn").mandatory.clear();
    let id = open(&r, "UnknownTeam").await;
    wait_for("the ticket without its group", || {
        sn.lock()
            .expect("sn")
            .records
            .iter()
            .any(|t| t["correlation_id"] == format!("incidentd-{id}").as_str())
    })
    .await;
    {
        let s = sn.lock().expect("sn");
        let t = s.records.last().expect("ticket");
        assert!(t["assignment_group"].is_null(), "no broken reference: {t}");
        assert!(
            s.work_notes
                .iter()
                .any(|n| n
                    .contains("assignment_group \"No Such Team\" names no sys_user_group record")),
            "{:?}",
            s.work_notes
        );
        assert!(s.violations.is_empty(), "{:?}", s.violations);
    }
    r.shutdown().await;
}

/// A ticket closed in ServiceNow is read-only: when its incident fires
/// again here, a new ticket follows the closed one (saying so), and the
/// incident's later changes go to it; a resolution of a closed ticket is
/// no failure. A lost answer to that create makes no third ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_ticket_is_followed_by_a_new_one() {
    let (url, sn) = support::servicenow::start("incidentd", "pw").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(dir.path(), &servicenow(&url, "pw"))).await;
    let id = open(&r, "DiskFull").await;
    support::act(&r, id, "resolve").await;
    wait_for("the resolution", || {
        sn.lock()
            .expect("sn")
            .records
            .first()
            .is_some_and(|t| t["state"] == "6")
    })
    .await;
    support::drain::outbox_drained(&*r.store).await;
    {
        // Closed there (the instance's auto-close, days later); the next
        // create's answer will be lost.
        let mut s = sn.lock().expect("sn");
        s.records[0]["state"] = json!("7");
        s.lose_next_create = true;
    }
    // The alert clears, then fires again.
    let labels =
        json!({"alertname": "DiskFull", "instance": "DiskFull:9100", "severity": "critical"});
    let now = chrono::Utc::now();
    let (s, v) = call(
        &r,
        "POST",
        "/api/v1/alerts",
        json!([{"labels": labels, "status": "resolved", "startsAt": "2026-11-30T10:00:00Z",
                "endsAt": now.to_rfc3339()}]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let again = now + chrono::Duration::seconds(1);
    let (s, v) = call(
        &r,
        "POST",
        "/api/v1/alerts",
        json!([{"labels": labels, "status": "firing", "startsAt": again.to_rfc3339()}]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_timeline(&r, id, "the reopening", |e| e["kind"] == "reopened").await;
    support::act(&r, id, "ack").await;
    support::act(&r, id, "resolve").await;
    wait_for("the follow-up resolved", || {
        sn.lock()
            .expect("sn")
            .records
            .get(1)
            .is_some_and(|t| t["state"] == "6")
    })
    .await;
    support::drain::outbox_drained(&*r.store).await;
    {
        let s = sn.lock().expect("sn");
        assert_eq!(s.records.len(), 2, "one follow-up despite the lost answer");
        assert_eq!(s.records[0]["state"], "7", "the closed ticket untouched");
        let next = &s.records[1];
        assert_eq!(next["correlation_id"], format!("incidentd-{id}").as_str());
        assert!(
            s.work_notes
                .iter()
                .any(|n| n.contains("follows INC0000001, closed in ServiceNow")),
            "{:?}",
            s.work_notes
        );
        assert!(s.violations.is_empty(), "{:?}", s.violations);
    }
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    assert!(
        !d["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["kind"] == "outbound_failed"),
        "{d}"
    );
    r.shutdown().await;
}

/// The value of `series` (name and labels) in a scrape, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Polls `/metrics` until the sample `series` reaches `at_least`; the text.
async fn wait_metric(r: &Running, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics(r).await;
        if sample(&m, series) >= at_least {
            return m;
        }
        assert!(Instant::now() < deadline, "{series} below {at_least}:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Jira (Service Management) as far as incidentd uses it: customer
/// requests, label search, comments, and a workflow whose transitions are
/// offered per status (ids as a real workflow has them, not 1, 2, 3).
/// It keeps to the documented contract: JSM "Create customer request"
/// (https://developer.atlassian.com/cloud/jira/service-desk/rest/api-group-request/)
/// takes only the request type's fields and "Create request comment"
/// defaults to public; the platform's issue search on Cloud is
/// `/rest/api/3/search/jql`, the v2 search answering 410
/// (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issue-search/,
/// and the changelog's removal notice); "Get transitions" with
/// `expand=transitions.fields` shows a screen's required `resolution`
/// (https://developer.atlassian.com/cloud/jira/platform/rest/v2/api-group-issues/);
/// field limits: summary one line of at most 255 characters, text fields
/// 32,767.
#[derive(Default)]
struct JiraState {
    /// (key, labels, status category, comments)
    issues: Vec<(String, Vec<String>, String, Vec<String>)>,
    calls: Vec<String>,
    lose_next_create: bool,
    /// Jira Cloud: `GET /rest/api/2/search` is gone (410, as Cloud answers
    /// since its removal; the Jira Cloud platform changelog), and
    /// `GET /rest/api/3/search/jql` ("Search for issues using JQL enhanced
    /// search") answers `{issues, isLast, nextPageToken?}` without `total`.
    cloud: bool,
    /// key → summary.
    summaries: std::collections::HashMap<String, String>,
    /// Comments a customer can see (made through the platform API on a
    /// customer request, or with `public` true): operator notes must not be.
    public_comments: Vec<String>,
}

impl JiraState {
    /// The issues `jql` finds: `labels="x"` (the lookup before a create)
    /// or `labels in ("a","b") AND statusCategory = Done` (reading back).
    fn search(&mut self, jql: &str) -> Vec<Value> {
        self.calls.push("search".into());
        if let Some(rest) = jql.strip_prefix("labels in (") {
            let (list, cond) = rest.split_once(')').unwrap_or((rest, ""));
            let labels: Vec<String> = list
                .split(',')
                .map(|l| l.trim_matches('"').to_string())
                .collect();
            let done_only = cond.trim() == "AND statusCategory = Done";
            return self
                .issues
                .iter()
                .filter(|i| i.1.iter().any(|l| labels.contains(l)))
                .filter(|i| !done_only || i.2 == "done")
                .map(|i| {
                    json!({"key": i.0, "fields": {"labels": i.1,
                    "status": {"statusCategory": {"key": i.2}},
                    "assignee": {"displayName": "Dana"}}})
                })
                .collect();
        }
        // `labels = "x" OR summary ~ "\"x\""`: the label, or the key in
        // the summary.
        let label = jql.split('"').nth(1).unwrap_or_default().to_string();
        let summaries = &self.summaries;
        self.issues
            .iter()
            .filter(|i| {
                i.1.contains(&label)
                    || (jql.contains("summary ~")
                        && summaries.get(&i.0).is_some_and(|s| s.contains(&label)))
            })
            .map(|i| json!({"key": i.0}))
            .collect()
    }
}

async fn jira_fake() -> (String, Arc<Mutex<JiraState>>) {
    use axum::extract::{Path as UrlPath, Query, State};
    use axum::routing::{get, post};
    type St = Arc<Mutex<JiraState>>;
    let state: St = Arc::new(Mutex::new(JiraState::default()));
    let transitions = |category: &str| -> Value {
        match category {
            "new" => json!({"transitions": [
                {"id": "811", "name": "Start progress", "to": {"name": "In Progress", "statusCategory": {"key": "indeterminate"}}},
                {"id": "831", "name": "Resolve", "to": {"name": "Resolved", "statusCategory": {"key": "done"}},
                 "fields": {"resolution": {"required": true, "name": "Resolution", "allowedValues": [{"id": "10000", "name": "Done"}, {"id": "10001", "name": "Won't Do"}]}}}]}),
            "indeterminate" => json!({"transitions": [
                {"id": "821", "name": "Wait for customer", "to": {"name": "Waiting", "statusCategory": {"key": "indeterminate"}}},
                {"id": "831", "name": "Resolve", "to": {"name": "Resolved", "statusCategory": {"key": "done"}},
                 "fields": {"resolution": {"required": true, "name": "Resolution", "allowedValues": [{"id": "10000", "name": "Done"}, {"id": "10001", "name": "Won't Do"}]}}}]}),
            _ => json!({"transitions": [
                {"id": "851", "name": "Reopen", "to": {"name": "Open", "statusCategory": {"key": "new"}}}]}),
        }
    };
    let app = axum::Router::new()
        .route(
            "/rest/servicedeskapi/request",
            post(
                |State(st): State<St>, axum::Json(body): axum::Json<Value>| async move {
                    let mut s = st.lock().expect("jira");
                    s.calls.push("create".into());
                    // "Create customer request": `requestFieldValues` may hold
                    // only the fields of the request type; this one's are
                    // summary and description, as most are (no labels).
                    let fields = body["requestFieldValues"].as_object().cloned().unwrap_or_default();
                    if let Some(other) = fields.keys().find(|k| !["summary", "description"].contains(&k.as_str())) {
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(json!({"errorMessage": format!("The field '{other}' is not valid for this request type.")})),
                        )
                            .into_response();
                    }
                    let key = format!("SD-{}", s.issues.len() + 1);
                    // Jira's field limits: a summary of one line and at
                    // most 255 characters, a text field at most 32,767.
                    let summary = fields.get("summary").and_then(Value::as_str).unwrap_or_default();
                    let description = fields.get("description").and_then(Value::as_str).unwrap_or_default();
                    let refusal = if summary.is_empty() || summary.chars().count() > 255 {
                        Some("summary: Summary is required (at most 255 characters).")
                    } else if summary.contains(['\n', '\r']) {
                        Some("summary: The summary is invalid because it contains newline characters.")
                    } else if description.chars().count() > 32_767 {
                        Some("description: The entered text is too long. It exceeds the allowed limit of 32,767 characters.")
                    } else {
                        None
                    };
                    if let Some(why) = refusal {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({"errorMessage": why}))).into_response();
                    }
                    s.summaries.insert(key.clone(), summary.to_string());
                    s.issues
                        .push((key.clone(), Vec::new(), "new".into(), Vec::new()));
                    if std::mem::take(&mut s.lose_next_create) {
                        return StatusCode::BAD_GATEWAY.into_response();
                    }
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"issueId": "10001", "issueKey": key})),
                    )
                        .into_response()
                },
            ),
        )
        .route(
            "/rest/api/2/search",
            get(
                |State(st): State<St>,
                 Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let mut s = st.lock().expect("jira");
                    if s.cloud {
                        s.calls.push("search v2 (gone)".into());
                        return (
                            StatusCode::GONE,
                            axum::Json(json!({"errorMessages": [
                                "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API."],
                                "errors": {}})),
                        )
                            .into_response();
                    }
                    let found = s.search(q.get("jql").map(String::as_str).unwrap_or_default());
                    axum::Json(json!({"issues": found, "total": found.len()})).into_response()
                },
            ),
        )
        .route(
            "/rest/api/3/search/jql",
            get(
                |State(st): State<St>,
                 Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let mut s = st.lock().expect("jira");
                    if !s.cloud {
                        return StatusCode::NOT_FOUND.into_response();
                    }
                    let found = s.search(q.get("jql").map(String::as_str).unwrap_or_default());
                    axum::Json(json!({"issues": found, "isLast": true})).into_response()
                },
            ),
        )
        .route(
            "/rest/api/2/issue/{key}",
            axum::routing::put(
                |State(st): State<St>,
                 UrlPath(key): UrlPath<String>,
                 axum::Json(body): axum::Json<Value>| async move {
                    let mut s = st.lock().expect("jira");
                    s.calls.push(format!("label {key}"));
                    let adds: Vec<String> = body["update"]["labels"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|op| op["add"].as_str().map(str::to_string))
                        .collect();
                    match s.issues.iter_mut().find(|i| i.0 == key) {
                        Some(i) => {
                            for l in adds {
                                if !i.1.contains(&l) {
                                    i.1.push(l);
                                }
                            }
                            StatusCode::NO_CONTENT.into_response()
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .route(
            "/rest/api/2/issue/{key}/comment",
            post(
                |State(st): State<St>,
                 UrlPath(key): UrlPath<String>,
                 axum::Json(body): axum::Json<Value>| async move {
                    let mut s = st.lock().expect("jira");
                    s.calls.push(format!("comment {key}"));
                    let text = body["body"].as_str().unwrap_or_default().to_string();
                    // On a customer request, a platform comment is public.
                    if key.starts_with("SD-") {
                        s.public_comments.push(text.clone());
                    }
                    match s.issues.iter_mut().find(|i| i.0 == key) {
                        Some(i) => {
                            i.3.push(text);
                            (StatusCode::CREATED, axum::Json(json!({"id": "1"}))).into_response()
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .route(
            "/rest/servicedeskapi/request/{key}/comment",
            post(
                |State(st): State<St>,
                 UrlPath(key): UrlPath<String>,
                 axum::Json(body): axum::Json<Value>| async move {
                    let mut s = st.lock().expect("jira");
                    s.calls.push(format!("comment {key}"));
                    let text = body["body"].as_str().unwrap_or_default().to_string();
                    // "Create request comment": `public` defaults to true.
                    if body["public"].as_bool() != Some(false) {
                        s.public_comments.push(text.clone());
                    }
                    match s.issues.iter_mut().find(|i| i.0 == key) {
                        Some(i) => {
                            i.3.push(text);
                            (StatusCode::CREATED, axum::Json(json!({"id": "1", "public": body["public"]}))).into_response()
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .route(
            "/rest/api/2/issue/{key}/transitions",
            get(
                move |State(st): State<St>, UrlPath(key): UrlPath<String>| async move {
                    let mut s = st.lock().expect("jira");
                    s.calls.push(format!("transitions {key}"));
                    let cat = s
                        .issues
                        .iter()
                        .find(|i| i.0 == key)
                        .map(|i| i.2.clone())
                        .unwrap_or_default();
                    axum::Json(transitions(&cat))
                },
            )
            .post(
                |State(st): State<St>,
                 UrlPath(key): UrlPath<String>,
                 axum::Json(body): axum::Json<Value>| async move {
                    let mut s = st.lock().expect("jira");
                    let id = body["transition"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    s.calls.push(format!("transition {key} {id}"));
                    // The Resolve screen requires a resolution.
                    if id == "831" && body["fields"]["resolution"]["name"].as_str().is_none() {
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(json!({"errorMessages": [], "errors": {"resolution": "Resolution is required."}})),
                        )
                            .into_response();
                    }
                    let to = match id.as_str() {
                        "811" | "821" => "indeterminate",
                        "831" => "done",
                        "851" => "new",
                        _ => return StatusCode::BAD_REQUEST.into_response(),
                    };
                    match s.issues.iter_mut().find(|i| i.0 == key) {
                        Some(i) => {
                            i.2 = to.to_string();
                            StatusCode::NO_CONTENT.into_response()
                        }
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .with_state(state.clone());
    let url = support::serve(app, "jira fake").await;
    (url, state)
}

/// One Jira request per incident: acknowledged moves it to a status of
/// the "in progress" category, resolved to "done", each with a comment;
/// a lost create answer is found again by label, never made twice. On
/// Jira Cloud, whose v2 search is gone, and on Data Center.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_request_follows_the_incident() {
    jira_request_follows_the_incident_on("data_center").await;
    jira_request_follows_the_incident_on("cloud").await;
}

async fn jira_request_follows_the_incident_on(deployment: &str) {
    let (url, jira) = jira_fake().await;
    {
        let mut s = jira.lock().expect("jira");
        s.lose_next_create = true;
        s.cloud = deployment == "cloud";
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "[[outbound.destinations]]\nname = \"jsm\"\nkind = \"jira\"\nurl = \"{url}\"\ndeployment = \"{deployment}\"\nuser = \"bot@example.com\"\npassword = \"api-token\"\nservice_desk_id = \"4\"\nrequest_type_id = \"27\"\nbackoff_base = \"20ms\"\nbackoff_max = \"100ms\"\n"
        ),
    );
    let r = start(&cfg).await;
    let id = open(&r, "CheckoutErrors").await;
    for path in ["ack", "resolve"] {
        let (s, v) = call(
            &r,
            "POST",
            &format!("/api/v1/incidents/{id}/{path}"),
            json!({"by": "bob"}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    wait_for("the resolution", || {
        jira.lock()
            .expect("jira")
            .issues
            .first()
            .is_some_and(|i| i.2 == "done" && i.3.len() == 3)
    })
    .await;
    {
        let s = jira.lock().expect("jira");
        assert_eq!(
            s.issues.len(),
            1,
            "one request despite the lost create answer"
        );
        let (key, labels, _, comments) = &s.issues[0];
        assert_eq!(labels, &[format!("incidentd-{id}")]);
        assert!(
            s.public_comments.is_empty(),
            "operator notes shown to the customer: {:?}",
            s.public_comments
        );
        assert_eq!(
            comments,
            &[
                "incidentd opened incident 1",
                "incidentd: acknowledged by bob",
                "incidentd: resolved"
            ]
            .map(|c| c.replace("incident 1", &format!("incident {id}")))
        );
        assert_eq!(
            s.calls,
            [
                "search".to_string(),
                "create".into(),
                // The lost create is found by the key in its summary (the
                // label comes after the create).
                "search".into(),
                format!("label {key}"),
                format!("comment {key}"),
                format!("transitions {key}"),
                format!("transition {key} 811"),
                format!("comment {key}"),
                format!("transitions {key}"),
                format!("transition {key} 831"),
                format!("comment {key}"),
            ]
        );
    }
    r.shutdown().await;
}

async fn call_with_token(r: &Running, uri: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let bearer = format!("Bearer {token}");
    let (status, bytes) = support::oneshot(
        &r.router,
        "POST",
        uri,
        &[("authorization", &bearer)],
        body.to_string().into_bytes(),
    )
    .await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `POST` a body to `uri` with these headers, in process.
async fn post_with(
    r: &Running,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, Value) {
    let (status, bytes) = support::oneshot(&r.router, "POST", uri, headers, body.to_vec()).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Jira Cloud's admin webhooks carry no token: they sign the body with the
/// webhook's secret (`X-Hub-Signature: sha256=<hex HMAC-SHA256>`,
/// developer.atlassian.com/cloud/jira/platform/webhooks/, "Secure admin
/// webhooks"). A body signed with the configured `inbound_secret` acts;
/// unsigned, tampered or foreign-signed ones are refused before routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_cloud_signed_webhooks_act_on_the_incident() {
    use hmac::{KeyInit, Mac};
    let (jira_url, _jira) = jira_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "[[outbound.destinations]]\nname = \"jsm\"\nkind = \"jira\"\nurl = \"{jira_url}\"\ntoken = \"pat\"\nproject = \"OPS\"\ninbound_secret = \"whsec-jira-1\"\n"
        ),
    );
    let r = start(&cfg).await;
    let id = open(&r, "JiraSide").await;
    let body = json!({"webhookEvent": "jira:issue_updated", "user": {"displayName": "Dana"},
        "issue": {"key": "OPS-1", "fields": {"labels": [format!("incidentd-{id}")],
        "status": {"statusCategory": {"key": "indeterminate"}}}}})
    .to_string();
    let sign = |secret: &[u8], b: &[u8]| {
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).expect("key");
        m.update(b);
        format!("sha256={}", hex::encode(m.finalize().into_bytes()))
    };
    let uri = "/api/v1/webhooks/jsm";
    let good = sign(b"whsec-jira-1", body.as_bytes());
    let tampered = body.replace("indeterminate", "done");
    for (what, headers, b) in [
        ("unsigned", vec![], body.as_str()),
        (
            "another secret",
            vec![("x-hub-signature", sign(b"guess", body.as_bytes()))],
            body.as_str(),
        ),
        (
            "a changed body",
            vec![("x-hub-signature", good.clone())],
            tampered.as_str(),
        ),
        (
            "a bearer token",
            vec![("authorization", "Bearer whsec-jira-1".to_string())],
            body.as_str(),
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, v) = post_with(&r, uri, &headers, b.as_bytes()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {v}");
    }
    let (s, v) = post_with(&r, uri, &[("x-hub-signature", &good)], body.as_bytes()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["action"], "acknowledged", "{v}");
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    assert_eq!(d["acknowledged_by"], "jira:Dana", "{d}");
    r.shutdown().await;
}

/// Two-way sync: a ticket resolved in ServiceNow, or taken in progress in
/// Jira, acts on the incident here through `POST /api/v1/webhooks/{name}`;
/// repeats change nothing, the token is required, bad bodies name the
/// field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_changed_downstream_act_on_the_incident() {
    let (sn_url, sn) = support::servicenow::start("incidentd", "pw").await;
    let (jira_url, _jira) = jira_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "{}inbound_token = \"sn-t0ken\"\n\n[[outbound.destinations]]\nname = \"jsm\"\nkind = \"jira\"\nurl = \"{jira_url}\"\ntoken = \"pat\"\nproject = \"OPS\"\ninbound_token = \"jira-t0ken\"\n",
            servicenow(&sn_url, "pw")
        ),
    );
    let r = start(&cfg).await;
    let id = open(&r, "ServiceNowSide").await;
    wait_for("the ticket", || sn.lock().expect("sn").records.len() == 1).await;

    let cid = format!("incidentd-{id}");
    let (s, v) = call_with_token(&r, "/api/v1/webhooks/snow", "wrong", json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = call_with_token(&r, "/api/v1/webhooks/nowhere", "sn-t0ken", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // Without a valid token, no name is told apart from another:
    // authentication comes before routing.
    let (s, v) = call_with_token(&r, "/api/v1/webhooks/nowhere", "wrong", json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    // One destination's token does not speak for another.
    let (s, v) = call_with_token(&r, "/api/v1/webhooks/jsm", "sn-t0ken", json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = call_with_token(
        &r,
        "/api/v1/webhooks/snow",
        "sn-t0ken",
        json!({"state": "6"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["detail"]["field"], "correlation_id", "{v}");

    // Taken in progress in Jira: acknowledged here.
    let jira_body = |cat: &str| {
        json!({"webhookEvent": "jira:issue_updated", "user": {"displayName": "Bob"},
               "issue": {"key": "OPS-1", "fields": {"labels": [cid.clone()], "status": {"statusCategory": {"key": cat}}}}})
    };
    let (s, v) = call_with_token(
        &r,
        "/api/v1/webhooks/jsm",
        "jira-t0ken",
        jira_body("indeterminate"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["action"], "acknowledged");
    let (s, v) = call_with_token(
        &r,
        "/api/v1/webhooks/jsm",
        "jira-t0ken",
        jira_body("indeterminate"),
    )
    .await;
    assert_eq!(
        (s, v["action"].as_str()),
        (StatusCode::OK, Some("none")),
        "{v}"
    );

    // Resolved in ServiceNow: resolved here, once.
    let sn_body = json!({"result": {"correlation_id": cid, "state": "6", "sys_updated_by": "beth", "number": "INC0000001"}});
    let (s, v) = call_with_token(&r, "/api/v1/webhooks/snow", "sn-t0ken", sn_body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["action"].as_str(), v["state"].as_str()),
        (Some("resolved"), Some("resolved"))
    );
    let (s, v) = call_with_token(&r, "/api/v1/webhooks/snow", "sn-t0ken", sn_body).await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::OK, Some("already resolved")),
        "{v}"
    );
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    assert_eq!(d["acknowledged_by"], "jira:Bob", "{d}");
    assert!(
        d["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["kind"] == "resolved" && e["actor"] == "servicenow:beth"),
        "{d}"
    );
    let (s, _) = call_with_token(
        &r,
        "/api/v1/webhooks/snow",
        "sn-t0ken",
        json!({"correlation_id": "incidentd-999999", "state": "6"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Counted once each; the repeat and the unknown incident not at all.
    let m = metrics(&r).await;
    for line in [
        r#"incidentd_inbound_updates_total{action="acknowledged",destination="jsm",via="webhook"} 1"#,
        r#"incidentd_inbound_updates_total{action="resolved",destination="snow",via="webhook"} 1"#,
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
    r.shutdown().await;
}

/// A rule's `notify` sends its incidents to a destination that routes
/// nothing by itself (`rules_only`); other incidents do not go there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_notify_their_destinations() {
    let slack = Fake::slack(answer(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(
        rules.join("notify.yaml"),
        "rules:\n  - name: dba-chat\n    matchers: ['alertname=\"PostgresDown\"']\n    actions:\n      notify: [dba-chat]\n",
    )
    .expect("rule file");
    let file = dir.path().join("incidentd.toml");
    std::fs::write(
        &file,
        format!(
            "[[outbound.destinations]]\nname = \"dba-chat\"\nkind = \"slack\"\nurl = \"{}/hook\"\nrules_only = true\n",
            slack.url
        ),
    )
    .expect("config");
    let mut cfg = config::load(
        Some(&file),
        &Overrides {
            data_dir: Some(dir.path().join("data")),
            rules_dir: Some(rules),
            ..Overrides::default()
        },
    )
    .expect("config");
    support::announce_at_once(&mut cfg);
    let r = start(&cfg).await;
    let other = open(&r, "DiskFull").await;
    let id = open(&r, "PostgresDown").await;
    let got = slack.wait_accepted(1, "the rule's notification").await;
    support::drain::outbox_drained(&*r.store).await;
    assert_eq!(
        slack.seen().len(),
        1,
        "only the rule's incident: {:?}",
        slack.seen()
    );
    assert!(
        got[0].json()["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("Incident {id} opened"))),
        "{}",
        got[0].json()
    );
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    assert_eq!(d["links"]["notify"], json!(["dba-chat"]), "{d}");
    let (_, d) = call(
        &r,
        "GET",
        &format!("/api/v1/incidents/{other}"),
        Value::Null,
    )
    .await;
    assert!(d["links"].get("notify").is_none(), "{d}");
    r.shutdown().await;
}

/// Opsgenie's Alert API as it documents it (docs.opsgenie.com/docs/alert-api):
/// every call is accepted asynchronously (202 with a `requestId`) and
/// processed later; "Get Request Status" (`GET /v2/alerts/requests/{id}`)
/// answers 404 until the request is processed, then whether it succeeded
/// and why. An action on an alias Opsgenie does not have is accepted and
/// then fails ("Alert does not exist"). Creates are checked against the
/// documented field limits (`contracts::opsgenie_create`).
#[derive(Default)]
struct OpsgenieState {
    /// alias → open | acknowledged | closed.
    alerts: std::collections::BTreeMap<String, String>,
    /// requestId → (success, status, times asked).
    requests: std::collections::HashMap<String, (bool, String, u32)>,
    /// (method, path, body, authorization) of every action and create.
    calls: Vec<(String, String, Value, String)>,
}

async fn opsgenie_fake() -> (String, Arc<Mutex<OpsgenieState>>) {
    use axum::extract::{Path as UrlPath, State};
    use axum::routing::{get, post};
    type St = Arc<Mutex<OpsgenieState>>;
    let state: St = Arc::default();
    fn accepted(s: &mut OpsgenieState, ok: bool, status: &str) -> Response {
        let id = format!("req-{}", s.requests.len() + 1);
        s.requests.insert(id.clone(), (ok, status.to_string(), 0));
        (
            StatusCode::ACCEPTED,
            axum::Json(
                json!({"result": "Request will be processed", "took": 0.01, "requestId": id}),
            ),
        )
            .into_response()
    }
    fn auth(h: &HeaderMap) -> String {
        h.get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
    async fn act(
        st: St,
        method: &str,
        alias: String,
        action: String,
        h: HeaderMap,
        body: Bytes,
    ) -> Response {
        let mut s = st.lock().expect("opsgenie");
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        s.calls
            .push((method.into(), format!("{alias}/{action}"), v, auth(&h)));
        let Some(state) = s.alerts.get(&alias).cloned() else {
            return accepted(&mut s, false, "Alert does not exist");
        };
        let next = match action.as_str() {
            "acknowledge" => "acknowledged",
            "close" => "closed",
            _ => state.as_str(),
        }
        .to_string();
        s.alerts.insert(alias, next);
        accepted(&mut s, true, &format!("{action} done"))
    }
    let app = axum::Router::new()
        .route(
            "/v2/alerts",
            post(|State(st): State<St>, h: HeaderMap, body: Bytes| async move {
                if let Err((status, why)) = contracts::opsgenie_create(&body) {
                    return (StatusCode::from_u16(status).expect("status"), axum::Json(why)).into_response();
                }
                let mut s = st.lock().expect("opsgenie");
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let alias = v["alias"].as_str().unwrap_or_default().to_string();
                s.calls.push(("POST".into(), "create".into(), v, auth(&h)));
                s.alerts.entry(alias).or_insert_with(|| "open".into());
                accepted(&mut s, true, "Created alert")
            }),
        )
        .route(
            "/v2/alerts/{alias}/{action}",
            post(
                |State(st): State<St>, UrlPath((alias, action)): UrlPath<(String, String)>, h: HeaderMap, body: Bytes| {
                    act(st, "POST", alias, action, h, body)
                },
            )
            .put(
                |State(st): State<St>, UrlPath((alias, action)): UrlPath<(String, String)>, h: HeaderMap, body: Bytes| {
                    act(st, "PUT", alias, action, h, body)
                },
            ),
        )
        .route(
            "/v2/alerts/requests/{id}",
            get(|State(st): State<St>, UrlPath(id): UrlPath<String>| async move {
                let mut s = st.lock().expect("opsgenie");
                let Some(r) = s.requests.get_mut(&id) else {
                    return StatusCode::NOT_FOUND.into_response();
                };
                r.2 += 1;
                if r.2 == 1 {
                    // The first ask comes before processing.
                    return (
                        StatusCode::NOT_FOUND,
                        axum::Json(json!({"message": "Request not found. It might not be processed, yet.", "took": 0.0})),
                    )
                        .into_response();
                }
                axum::Json(json!({"data": {"success": r.0, "isSuccess": r.0, "status": r.1, "action": "Create"},
                                  "took": 0.01, "requestId": id}))
                .into_response()
            }),
        );
    let app = app.with_state(state.clone());
    let url = support::serve(app, "opsgenie fake").await;
    (url, state)
}

/// Opsgenie: created by alias with the API key, then acknowledged and
/// closed by that alias, each request's processing confirmed; an action
/// Opsgenie accepts and then fails (the alert is gone there) is noticed
/// and put on the incident's timeline with Opsgenie's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsgenie_acts_by_alias_and_notices_failed_requests() {
    let (url, og) = opsgenie_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "[[outbound.destinations]]\nname = \"og\"\nkind = \"opsgenie\"\nurl = \"{url}\"\napi_key = \"eb243592-faa2-4ba2-a551-1afdf565c889\"\nresponders = [\"team:platform\"]\n"
        ),
    );
    let r = start(&cfg).await;
    let id = open(&r, "LatencyHigh").await;
    for path in ["ack", "resolve"] {
        let (s, v) = call(
            &r,
            "POST",
            &format!("/api/v1/incidents/{id}/{path}"),
            json!({"by": "carol"}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let alias = format!("incidentd-{id}");
    wait_for("the alert closed", || {
        og.lock()
            .expect("og")
            .alerts
            .get(&alias)
            .map(String::as_str)
            == Some("closed")
    })
    .await;
    support::drain::outbox_drained(&*r.store).await;
    {
        let s = og.lock().expect("og");
        let paths: Vec<&str> = s.calls.iter().map(|c| c.1.as_str()).collect();
        assert_eq!(
            paths,
            [
                "create".to_string(),
                format!("{alias}/acknowledge"),
                format!("{alias}/close")
            ]
        );
        assert_eq!(s.calls[0].2["priority"], "P2");
        assert_eq!(
            s.calls[0].2["responders"],
            json!([{"type": "team", "name": "platform"}])
        );
        assert_eq!(s.calls[1].2["user"], "carol");
        assert!(
            s.calls
                .iter()
                .all(|c| c.3 == "GenieKey eb243592-faa2-4ba2-a551-1afdf565c889")
        );
        assert!(
            s.requests.values().all(|r| r.2 >= 2),
            "every request's outcome was read: {:?}",
            s.requests
        );
    }

    // Gone in Opsgenie (deleted there): the next action is accepted, then
    // fails; incidentd notices and says so on the incident.
    let other = open(&r, "QueueStuck").await;
    let other_alias = format!("incidentd-{other}");
    wait_for("the second alert", || {
        og.lock().expect("og").alerts.contains_key(&other_alias)
    })
    .await;
    support::drain::outbox_drained(&*r.store).await;
    og.lock().expect("og").alerts.remove(&other_alias);
    support::act(&r, other, "ack").await;
    wait_timeline(&r, other, "the failed acknowledgement", |e| {
        e["kind"] == "outbound_failed"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("Alert does not exist"))
    })
    .await;
    r.shutdown().await;
}

/// A storm of 429s without Retry-After: the retries still keep to the
/// rate limit (2 + 4 in any second), and every trigger is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_keeps_to_the_rate_limit() {
    let pd = Fake::pagerduty(answer(202)).await;
    pd.script((0..12).map(|_| answer(429)));
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config(
        dir.path(),
        &pagerduty(
            &pd.url,
            "rate_limit = 4.0\nburst = 2\nbreaker_failures = 100\n",
        ),
    ))
    .await;
    let alerts: Vec<Value> = (0..4)
        .map(|i| json!({"labels": {"alertname": format!("Storm{i}"), "instance": format!("s{i}:9100"), "severity": "critical"},
                        "status": "firing", "startsAt": "2026-11-30T10:00:00Z"}))
        .collect();
    let (s, v) = call(&r, "POST", "/api/v1/alerts", Value::Array(alerts)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got = pd
        .wait_accepted(4, "the four triggers after the storm")
        .await;
    let seen = pd.seen();
    assert_eq!(seen.len(), 16, "12 refused + 4 accepted");
    let times: Vec<Instant> = seen.iter().map(|s| s.at).collect();
    for (i, t) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(n <= 6, "{n} requests within a second of request {i}");
    }
    let keys: std::collections::BTreeSet<String> =
        actions(&got).into_iter().map(|(_, k)| k).collect();
    assert_eq!(keys.len(), 4, "each trigger once");
    r.shutdown().await;
}

/// For tools that cannot send webhooks, `poll_interval` reads the tickets
/// of active incidents back: a ServiceNow ticket resolved by someone
/// resolves its incident, one put In Progress by someone else
/// acknowledges it, but In Progress set by incidentd's own user (as on
/// every acknowledgement) does nothing; a Jira issue moved to done
/// resolves its incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_changed_downstream_are_read_back() {
    let (sn_url, sn) = support::servicenow::start("incidentd", "s3cret").await;
    let (jira_url, jira) = jira_fake().await;
    // Jira Cloud: read back through the enhanced search.
    jira.lock().expect("jira").cloud = true;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &format!(
            "{}poll_interval = \"1s\"\n\n[[outbound.destinations]]\nname = \"jsm\"\nkind = \"jira\"\nurl = \"{jira_url}\"\ndeployment = \"cloud\"\ntoken = \"pat\"\nservice_desk_id = \"1\"\nrequest_type_id = \"10\"\npoll_interval = \"1s\"\n",
            servicenow(&sn_url, "s3cret")
        ),
    );
    let r = start(&cfg).await;
    let a = open(&r, "DiskFull").await;
    let b = open(&r, "MemoryPressure").await;
    let c = open(&r, "CertExpiry").await;
    wait_for("three tickets and three requests", || {
        sn.lock().expect("sn").records.len() == 3 && jira.lock().expect("jira").issues.len() == 3
    })
    .await;
    // The creates are marked delivered before the tickets change.
    support::drain::outbox_drained(&*r.store).await;
    let ticket = |id: i64| format!("incidentd-{id}");
    {
        let mut s = sn.lock().expect("sn");
        for rec in &mut s.records {
            let (state, by) = match rec["correlation_id"].as_str() {
                Some(k) if k == ticket(a) => ("6", "beth"),
                Some(k) if k == ticket(b) => ("2", "carl"),
                _ => ("2", "incidentd"),
            };
            rec["state"] = json!(state);
            rec["sys_updated_by"] = json!(by);
        }
    }
    wait_timeline(&r, a, "resolved from ServiceNow", |e| {
        e["kind"] == "resolved" && e["actor"] == "servicenow:beth"
    })
    .await;
    wait_timeline(&r, b, "acknowledged from ServiceNow", |e| {
        e["kind"] == "acknowledged" && e["actor"] == "servicenow:carl"
    })
    .await;
    // Now c's Jira request is done there.
    {
        let mut j = jira.lock().expect("jira");
        let label = ticket(c);
        let calls = j.calls.clone();
        let issue = j
            .issues
            .iter_mut()
            .find(|i| i.1.contains(&label))
            .unwrap_or_else(|| panic!("c's request: {calls:?}"));
        issue.2 = "done".into();
    }
    wait_timeline(&r, c, "resolved from Jira", |e| {
        e["kind"] == "resolved" && e["actor"] == "jira:Dana"
    })
    .await;
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{c}"), Value::Null).await;
    assert_eq!(d["state"], "resolved", "{d}");
    // c's ServiceNow ticket was In Progress by incidentd itself: c was
    // never acknowledged from there.
    assert!(
        d["timeline"]
            .as_array()
            .is_some_and(|t| !t.iter().any(|e| e["kind"] == "acknowledged")),
        "{d}"
    );
    let m = metrics(&r).await;
    for line in [
        r#"incidentd_inbound_updates_total{action="resolved",destination="snow",via="poll"} 1"#,
        r#"incidentd_inbound_updates_total{action="acknowledged",destination="snow",via="poll"} 1"#,
        r#"incidentd_inbound_updates_total{action="resolved",destination="jsm",via="poll"} 1"#,
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
    for dest in ["snow", "jsm"] {
        let line = format!(
            "incidentd_outbound_requests_total{{destination=\"{dest}\",operation=\"poll\",outcome=\"success\"}}"
        );
        assert!(m.contains(&line), "{dest} never polled:\n{m}");
    }
    r.shutdown().await;
}

/// Finished messages are the delivery record, not an archive: older than
/// `outbound.retention` (7 days by default) they are deleted, at start and
/// hourly; the incidents themselves stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_messages_are_pruned_after_the_retention() {
    let pd = Fake::pagerduty(answer(202)).await;
    let clock = simulated_clock();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &pagerduty(&pd.url, ""));
    let db = format!(
        "sqlite://{}?mode=ro",
        dir.path().join("data").join("incidentd.db").display()
    );
    let count = async |sql: &str| -> i64 {
        let pool = sqlx::SqlitePool::connect(&db)
            .await
            .expect("open the store");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    };
    let r = app::start(&cfg, clock.clone())
        .await
        .expect("daemon starts");
    let id = open(&r, "DiskFull").await;
    support::act(&r, id, "resolve").await;
    pd.wait_accepted(2, "trigger and resolve").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("SELECT COUNT(*) FROM outbox WHERE done_at IS NOT NULL").await < 2 {
        assert!(
            Instant::now() < deadline,
            "the deliveries were never marked done"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.shutdown().await;

    // Eight days later: the restart prunes them.
    clock.advance(Duration::from_secs(8 * 86_400));
    let r = app::start(&cfg, clock.clone())
        .await
        .expect("daemon starts again");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("SELECT COUNT(*) FROM outbox").await > 0 {
        assert!(
            Instant::now() < deadline,
            "finished messages were not pruned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["state"], "resolved", "{d}");
    assert_eq!(pd.seen().len(), 2, "nothing sent again");
    r.shutdown().await;
}

/// Opens, raises, acknowledges and resolves an incident whose root carries
/// 40 services and whose title is 2,000 characters long (and full of the
/// characters chat formats treat specially) through `destinations`; every
/// request each destination received must have been accepted.
async fn wide_outage_through(destinations: &str, fakes: &[(&str, &Fake)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path(), destinations);
    let cmdb = support::wide_cmdb(dir.path());
    cfg.cmdb = Some(cmdb);
    let r = start(&cfg).await;
    let d = support::wide_outage(&r).await;
    for (name, fake) in fakes {
        let seen = fake.seen();
        assert!(!seen.is_empty(), "{name} heard nothing");
        for s in &seen {
            assert!(
                (200..300).contains(&s.status),
                "{name} refused {} {}: {} ({} bytes)",
                s.method,
                s.path,
                s.status,
                s.body.len()
            );
        }
    }
    let failures: Vec<&Value> = d["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("outbound_") && k != "outbound_delivered")
        })
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_outage_is_accepted_by_pagerduty_slack_and_opsgenie() {
    let pd = Fake::pagerduty(answer(202)).await;
    let slack = Fake::slack(answer(200)).await;
    let og = Fake::opsgenie(answer(202)).await;
    let destinations = format!(
        "{}\n[[outbound.destinations]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}/services/T0/B0/X\"\n\n[[outbound.destinations]]\nname = \"og\"\nkind = \"opsgenie\"\nurl = \"{}\"\napi_key = \"eb243592-faa2-4ba2-a551-1afdf565c889\"\n",
        pagerduty(&pd.url, ""),
        slack.url,
        og.url
    );
    wide_outage_through(
        &destinations,
        &[("pagerduty", &pd), ("slack", &slack), ("opsgenie", &og)],
    )
    .await;
}
