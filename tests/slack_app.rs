//! Slack as an app (bot token, Web API) against a stateful fake of the Web
//! API on 127.0.0.1 that keeps the channel's messages and threads and
//! refuses what Slack refuses (`contracts::slack_web_api`): one message
//! per incident, updated in place, a thread reply per change; no second
//! message or reply when an answer is lost; `ok: false` retried or
//! recorded by its meaning; a deleted message replaced; the widest outage
//! accepted.

mod support;
use support::{act, call, config_in, contracts, start};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use incidentd::app::Running;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "xoxb-1111-2222-incidentdtest";
const CHANNEL: &str = "C0INCIDENTS";

/// A message in the fake workspace.
#[derive(Debug, Clone)]
struct Msg {
    channel: String,
    ts: String,
    text: String,
    blocks: Value,
    metadata: Value,
    thread_ts: Option<String>,
    broadcast: bool,
}

/// A fault the next call of a method meets.
#[derive(Debug, Clone)]
enum Fault {
    /// Done, but answered 500 (the answer lost on its way back).
    LoseAnswer,
    /// `{"ok": false, "error": …}` with HTTP 200.
    Error(&'static str),
    /// HTTP 429 `ratelimited` asking for this many seconds.
    Limited(u64),
}

/// One call the fake received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: String,
    args: Value,
    content_type: String,
    /// `ok`, or Slack's error (the contract's or a fault's).
    outcome: String,
}

#[derive(Default)]
struct SlackState {
    messages: Vec<Msg>,
    seen: Vec<Seen>,
    faults: VecDeque<(&'static str, Fault)>,
    next_ts: u64,
}

/// The Slack Web API of one workspace with one channel, at `url`.
#[derive(Clone)]
struct FakeSlack {
    url: String,
    state: Arc<Mutex<SlackState>>,
}

fn reply_json(status: u16, body: Value, retry_after: Option<u64>) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).expect("status"),
        axum::Json(body),
    )
        .into_response();
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert("retry-after", s.to_string().parse().expect("header"));
    }
    resp
}

/// A message as `conversations.*` show it (metadata only when asked).
fn shown(m: &Msg, metadata: bool) -> Value {
    let mut v = json!({"type": "message", "ts": m.ts, "text": m.text, "blocks": m.blocks,
                       "bot_id": "B0INCIDENTD"});
    if let Some(t) = &m.thread_ts {
        v["thread_ts"] = json!(t);
        if m.broadcast {
            v["subtype"] = json!("thread_broadcast");
        }
    }
    if metadata && !m.metadata.is_null() {
        v["metadata"] = m.metadata.clone();
    }
    v
}

impl SlackState {
    /// Do what `method` asks with `args` (already checked by the contract).
    fn perform(&mut self, method: &str, args: &Value) -> Value {
        let metadata = args["include_all_metadata"] == "true";
        let limit = args["limit"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .unwrap_or(100);
        match method {
            "chat.postMessage" => {
                self.next_ts += 1;
                let m = Msg {
                    channel: args["channel"].as_str().unwrap_or_default().to_string(),
                    ts: format!("1700000000.{:06}", self.next_ts),
                    text: args["text"].as_str().unwrap_or_default().to_string(),
                    blocks: args["blocks"].clone(),
                    metadata: args["metadata"].clone(),
                    thread_ts: args["thread_ts"].as_str().map(str::to_string),
                    broadcast: args["reply_broadcast"] == true,
                };
                let answer = json!({"ok": true, "channel": m.channel, "ts": m.ts,
                                    "message": shown(&m, false)});
                self.messages.push(m);
                answer
            }
            "chat.update" => {
                let (channel, ts) = (&args["channel"], &args["ts"]);
                let Some(m) = self
                    .messages
                    .iter_mut()
                    .find(|m| m.channel == *channel && m.ts == *ts)
                else {
                    return json!({"ok": false, "error": "message_not_found"});
                };
                m.text = args["text"].as_str().unwrap_or_default().to_string();
                m.blocks = args["blocks"].clone();
                if !args["metadata"].is_null() {
                    m.metadata = args["metadata"].clone();
                }
                json!({"ok": true, "channel": m.channel, "ts": m.ts, "text": m.text})
            }
            "conversations.history" => {
                // Newest first: top-level messages and broadcast replies.
                let messages: Vec<Value> = self
                    .messages
                    .iter()
                    .rev()
                    .filter(|m| m.channel == args["channel"])
                    .filter(|m| m.thread_ts.is_none() || m.broadcast)
                    .take(limit)
                    .map(|m| shown(m, metadata))
                    .collect();
                json!({"ok": true, "messages": messages, "has_more": false, "pin_count": 0})
            }
            "conversations.replies" => {
                // The parent first, then its replies, oldest first.
                let ts = &args["ts"];
                let messages: Vec<Value> = self
                    .messages
                    .iter()
                    .filter(|m| m.channel == args["channel"])
                    .filter(|m| m.ts == *ts || m.thread_ts.as_deref() == ts.as_str())
                    .take(limit)
                    .map(|m| shown(m, metadata))
                    .collect();
                json!({"ok": true, "messages": messages, "has_more": false})
            }
            _ => json!({"ok": false, "error": "unknown_method"}),
        }
    }
}

impl FakeSlack {
    async fn start() -> FakeSlack {
        let state = Arc::new(Mutex::new(SlackState::default()));
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
                let method = parts
                    .uri
                    .path()
                    .strip_prefix("/api/")
                    .unwrap_or_default()
                    .to_string();
                let mut s = st.lock().expect("fake slack");
                let channels = [CHANNEL.to_string()];
                let messages = s.messages.clone();
                let exists = move |channel: &str, ts: &str| {
                    messages.iter().any(|m| m.channel == channel && m.ts == ts)
                };
                let checked = contracts::slack_web_api(
                    &contracts::SlackWorkspace {
                        token: TOKEN,
                        channels: &channels,
                        message_exists: &exists,
                    },
                    parts.method.as_str(),
                    &method,
                    &parts.headers,
                    parts.uri.query().unwrap_or_default(),
                    &body,
                );
                let content_type = header(&parts.headers, "content-type");
                let seen = |args: Value, outcome: &str| Seen {
                    at: Instant::now(),
                    method: method.clone(),
                    args,
                    content_type: content_type.clone(),
                    outcome: outcome.to_string(),
                };
                let args = match checked {
                    Ok(args) => args,
                    Err((status, why)) => {
                        let e = why["error"].as_str().unwrap_or_default().to_string();
                        let record = seen(Value::Null, &e);
                        s.seen.push(record);
                        return reply_json(status, why, None);
                    }
                };
                let fault = s
                    .faults
                    .front()
                    .filter(|(m, _)| *m == method)
                    .map(|(_, f)| f.clone());
                if fault.is_some() {
                    s.faults.pop_front();
                }
                match fault {
                    Some(Fault::Error(e)) => {
                        let record = seen(args, e);
                        s.seen.push(record);
                        reply_json(200, json!({"ok": false, "error": e}), None)
                    }
                    Some(Fault::Limited(secs)) => {
                        let record = seen(args, "ratelimited");
                        s.seen.push(record);
                        reply_json(
                            429,
                            json!({"ok": false, "error": "ratelimited"}),
                            Some(secs),
                        )
                    }
                    Some(Fault::LoseAnswer) => {
                        s.perform(&method, &args);
                        let record = seen(args, "answer lost");
                        s.seen.push(record);
                        reply_json(500, json!({"ok": false, "error": "lost"}), None)
                    }
                    None => {
                        let answer = s.perform(&method, &args);
                        let outcome = answer["error"].as_str().unwrap_or("ok").to_string();
                        let record = seen(args, &outcome);
                        s.seen.push(record);
                        reply_json(200, answer, None)
                    }
                }
            }
        });
        let url = format!("{}/api", support::serve(app, "fake slack").await);
        FakeSlack { url, state }
    }

    fn fault(&self, method: &'static str, fault: Fault) {
        self.state
            .lock()
            .expect("fake slack")
            .faults
            .push_back((method, fault));
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("fake slack").seen.clone()
    }

    /// The channel's own messages (not thread replies).
    fn channel_messages(&self) -> Vec<Msg> {
        let s = self.state.lock().expect("fake slack");
        s.messages
            .iter()
            .filter(|m| m.thread_ts.is_none())
            .cloned()
            .collect()
    }

    /// The replies under the message `ts`, oldest first.
    fn thread(&self, ts: &str) -> Vec<Msg> {
        let s = self.state.lock().expect("fake slack");
        s.messages
            .iter()
            .filter(|m| m.thread_ts.as_deref() == Some(ts))
            .cloned()
            .collect()
    }

    /// Someone deletes the message `ts` (its replies stay, as in Slack).
    fn delete(&self, ts: &str) {
        self.state
            .lock()
            .expect("fake slack")
            .messages
            .retain(|m| m.ts != ts);
    }

    /// `(method, outcome)` of every call, in order.
    fn calls(&self) -> Vec<(String, String)> {
        self.seen()
            .into_iter()
            .map(|s| (s.method, s.outcome))
            .collect()
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A `slack` destination in app mode named `name`, posting to `channel`
/// through `fake`, retrying fast; its token read from a file, as in
/// production.
fn slack_app(dir: &Path, name: &str, fake: &FakeSlack, channel: &str) -> String {
    let token = dir.join(format!("{name}-token"));
    std::fs::write(&token, format!("{TOKEN}\n")).expect("write token");
    format!(
        "[[outbound.destinations]]\nname = \"{name}\"\nkind = \"slack\"\nurl = \"{}\"\nbot_token_file = \"{}\"\nchannel = \"{channel}\"\nincident_url = \"https://incidentd.example.com/incidents/{{id}}\"\nrate_limit = 20.0\nburst = 10\nbackoff_base = \"20ms\"\nbackoff_max = \"200ms\"\n",
        fake.url,
        token.display()
    )
}

/// The incident's timeline.
async fn timeline(r: &Running, id: i64) -> Vec<Value> {
    let (_, d) = call(r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    d["timeline"].as_array().cloned().unwrap_or_default()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    support::wait_until(what, Duration::from_secs(20), async || done()).await;
}

/// Waits for a timeline entry of `kind` whose message has `text`.
async fn wait_entry(r: &Running, id: i64, kind: &str, text: &str) {
    support::wait_ok(
        &format!("a {kind} entry naming {text}"),
        Duration::from_secs(20),
        async || {
            let t = timeline(r, id).await;
            if t.iter().any(|e| {
                e["kind"] == kind && e["message"].as_str().is_some_and(|m| m.contains(text))
            }) {
                Ok(())
            } else {
                Err(format!("{t:?}"))
            }
        },
    )
    .await;
}

/// The `State` field of a message's blocks.
fn state_field(m: &Msg) -> String {
    m.blocks[2]["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["text"].as_str())
        .find_map(|t| t.strip_prefix("*State*\n"))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_is_one_message_updated_in_place_and_a_reply_per_change() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config_in(
        dir.path(),
        &slack_app(dir.path(), "chat", &slack, CHANNEL),
    ))
    .await;
    // A warning outside the CMDB: impact 2 x urgency 2, P3.
    let id = support::open_incident(&r, "QueueBacklog", "mq-1:9100", "warning").await;
    wait_for("the incident's message", || {
        slack.channel_messages().len() == 1
    })
    .await;
    let first = slack.channel_messages()[0].clone();
    assert_eq!(first.metadata["event_type"], "incidentd_incident");
    assert_eq!(
        first.metadata["event_payload"]["incident_key"],
        format!("incidentd-{id}").as_str()
    );
    assert!(
        first.text.contains("open") && first.text.contains("[P3]"),
        "{}",
        first.text
    );
    let (s, v) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/ack"),
        json!({"by": "alice"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("the acknowledgement's reply", || {
        slack.thread(&first.ts).len() == 1
    })
    .await;
    // A critical alert on the same host joins it: urgency 1, P2.
    assert_eq!(
        support::open_incident(&r, "QueueBacklog", "mq-1:9200", "critical").await,
        id
    );
    wait_for("the raise's reply", || slack.thread(&first.ts).len() == 2).await;
    act(&r, id, "resolve").await;
    wait_for("the resolution's reply", || {
        slack.thread(&first.ts).len() == 3
    })
    .await;
    support::drain::outbox_drained(&*r.store).await;

    let messages = slack.channel_messages();
    assert_eq!(messages.len(), 1, "one message per incident: {messages:?}");
    let m = &messages[0];
    assert_eq!(m.ts, first.ts, "updated in place");
    assert!(
        m.text.contains(&format!("Incident {id} resolved")) && m.text.contains("[P2]"),
        "{}",
        m.text
    );
    assert!(
        state_field(m).starts_with("resolved at "),
        "{}",
        state_field(m)
    );
    let thread: Vec<(String, bool)> = slack
        .thread(&first.ts)
        .into_iter()
        .map(|m| (m.text, m.broadcast))
        .collect();
    assert_eq!(
        thread,
        [
            ("incidentd: acknowledged by alice".to_string(), false),
            (
                "incidentd: priority now P2 (impact 2, urgency 1)".to_string(),
                true
            ),
            ("incidentd: resolved".to_string(), false),
        ]
    );
    let calls = slack.calls();
    assert!(calls.iter().all(|(_, o)| o == "ok"), "{calls:?}");
    let methods: Vec<&str> = calls.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        methods,
        [
            // Looked up once before the post; the ts was stored after that.
            "conversations.history",
            "chat.postMessage",
            "chat.update",
            "chat.postMessage",
            "chat.update",
            "chat.postMessage",
            "chat.update",
            "chat.postMessage",
        ]
    );
    for s in slack.seen() {
        if s.method.starts_with("chat.") {
            assert_eq!(s.content_type, "application/json; charset=utf-8");
        }
    }
    // The message showed each state as it came.
    let updates: Vec<String> = slack
        .seen()
        .into_iter()
        .filter(|s| s.method == "chat.update")
        .map(|s| s.args["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        updates[0].contains("acknowledged") && updates[0].contains("[P3]"),
        "{updates:?}"
    );
    assert!(
        updates[1].contains("acknowledged") && updates[1].contains("[P2]"),
        "{updates:?}"
    );
    assert!(updates[2].contains("resolved"), "{updates:?}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_posts_no_second_message_nor_reply() {
    let slack = FakeSlack::start().await;
    slack.fault("chat.postMessage", Fault::LoseAnswer);
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config_in(
        dir.path(),
        &slack_app(dir.path(), "chat", &slack, CHANNEL),
    ))
    .await;
    let id = support::open_incident(&r, "CacheEvictions", "cache-1:9100", "critical").await;
    support::drain::outbox_drained(&*r.store).await;
    let messages = slack.channel_messages();
    assert_eq!(messages.len(), 1, "one message despite the lost answer");
    let ts = messages[0].ts.clone();
    assert_eq!(
        slack.calls(),
        [
            ("conversations.history".to_string(), "ok".to_string()),
            ("chat.postMessage".to_string(), "answer lost".to_string()),
            // The retry finds the message by its metadata.
            ("conversations.history".to_string(), "ok".to_string()),
            ("chat.update".to_string(), "ok".to_string()),
        ]
    );
    wait_entry(&r, id, "outbound_retrying", "HTTP 500").await;

    // The acknowledgement's reply is posted, its answer lost: the retry
    // finds it in the thread.
    slack.fault("chat.postMessage", Fault::LoseAnswer);
    act(&r, id, "ack").await;
    support::drain::outbox_drained(&*r.store).await;
    act(&r, id, "resolve").await;
    support::drain::outbox_drained(&*r.store).await;
    let thread: Vec<String> = slack.thread(&ts).into_iter().map(|m| m.text).collect();
    assert_eq!(
        thread,
        ["incidentd: acknowledged by api", "incidentd: resolved"]
    );
    assert_eq!(slack.channel_messages().len(), 1);
    let methods: Vec<String> = slack.calls().into_iter().skip(4).map(|(m, _)| m).collect();
    assert_eq!(
        methods,
        [
            "chat.update",
            "chat.postMessage",
            "chat.update",
            "conversations.replies",
            "chat.update",
            "chat.postMessage",
        ]
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_false_is_retried_or_recorded_by_what_it_means() {
    let slack = FakeSlack::start().await;
    slack.fault("conversations.history", Fault::Limited(1));
    slack.fault("chat.postMessage", Fault::Error("ratelimited"));
    slack.fault("chat.postMessage", Fault::Error("internal_error"));
    let dir = tempfile::tempdir().expect("tempdir");
    let destinations = format!(
        "{}\n{}",
        slack_app(dir.path(), "chat", &slack, CHANNEL),
        // A channel the workspace does not have.
        slack_app(dir.path(), "elsewhere", &slack, "C0NOSUCHCHAN")
    );
    let r = start(&config_in(dir.path(), &destinations)).await;
    let id = support::open_incident(&r, "ReplicaLag", "db-7:9100", "critical").await;
    wait_entry(&r, id, "outbound_failed", "channel_not_found").await;
    support::drain::outbox_drained(&*r.store).await;
    // `chat` got there after a 429, `ratelimited` and `internal_error`.
    assert_eq!(slack.channel_messages().len(), 1);
    let seen = slack.seen();
    let ok_post = seen
        .iter()
        .filter(|s| s.args["channel"] == CHANNEL)
        .map(|s| (s.method.as_str(), s.outcome.as_str()))
        .collect::<Vec<_>>();
    assert_eq!(
        ok_post,
        [
            ("conversations.history", "ratelimited"),
            ("conversations.history", "ok"),
            ("chat.postMessage", "ratelimited"),
            ("conversations.history", "ok"),
            ("chat.postMessage", "internal_error"),
            ("conversations.history", "ok"),
            ("chat.postMessage", "ok"),
        ]
    );
    // Retry-After: 1 was obeyed.
    let history: Vec<Instant> = seen
        .iter()
        .filter(|s| s.method == "conversations.history" && s.args["channel"] == CHANNEL)
        .map(|s| s.at)
        .collect();
    assert!(
        history[1].duration_since(history[0]) >= Duration::from_millis(950),
        "retried {:?} after the 429",
        history[1].duration_since(history[0])
    );
    let t = timeline(&r, id).await;
    let says = |kind: &str, text: &str| {
        t.iter()
            .any(|e| e["kind"] == kind && e["message"].as_str().is_some_and(|m| m.contains(text)))
    };
    assert!(
        says("outbound_retrying", "chat.postMessage: ratelimited"),
        "{t:?}"
    );
    assert!(
        says("outbound_retrying", "chat.postMessage: internal_error"),
        "{t:?}"
    );
    assert!(
        says(
            "outbound_failed",
            "elsewhere (slack) refused the opened update"
        ) && says(
            "outbound_failed",
            "Slack conversations.history: channel_not_found"
        ),
        "{t:?}"
    );
    // Nothing else was tried for the refused destination.
    let elsewhere = seen
        .iter()
        .filter(|s| s.args.is_null() || s.args["channel"] != CHANNEL)
        .count();
    assert_eq!(elsewhere, 1, "{seen:?}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_message_is_posted_again() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let r = start(&config_in(
        dir.path(),
        &slack_app(dir.path(), "chat", &slack, CHANNEL),
    ))
    .await;
    let id = support::open_incident(&r, "CertExpiring", "edge-1:9100", "critical").await;
    wait_for("the incident's message", || {
        slack.channel_messages().len() == 1
    })
    .await;
    let old = slack.channel_messages()[0].ts.clone();
    slack.delete(&old);
    act(&r, id, "ack").await;
    support::drain::outbox_drained(&*r.store).await;
    let messages = slack.channel_messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let fresh = messages[0].clone();
    assert_ne!(fresh.ts, old);
    assert!(fresh.text.contains("acknowledged"), "{}", fresh.text);
    assert_eq!(
        fresh.metadata["event_payload"]["incident_key"],
        format!("incidentd-{id}").as_str()
    );
    // The fresh message is the one kept: the resolution updates it.
    act(&r, id, "resolve").await;
    support::drain::outbox_drained(&*r.store).await;
    assert_eq!(slack.channel_messages().len(), 1);
    assert!(slack.channel_messages()[0].text.contains("resolved"));
    let thread: Vec<String> = slack
        .thread(&fresh.ts)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        thread,
        ["incidentd: acknowledged by api", "incidentd: resolved"]
    );
    let calls = slack.calls();
    assert_eq!(
        calls[2..],
        [
            ("chat.update".to_string(), "message_not_found".to_string()),
            ("chat.postMessage".to_string(), "ok".to_string()),
            ("chat.postMessage".to_string(), "ok".to_string()),
            ("chat.update".to_string(), "ok".to_string()),
            ("chat.postMessage".to_string(), "ok".to_string()),
        ]
    );
    assert!(
        !timeline(&r, id)
            .await
            .iter()
            .any(|e| e["kind"] == "outbound_failed"),
        "a deleted message is no failure"
    );
    r.shutdown().await;
}

/// The widest outage (40 impacted services, a 2,000-character title full
/// of mrkdwn's control characters) opened, raised, acknowledged, held,
/// resumed and resolved: Slack accepts every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_outage_is_accepted_by_the_web_api() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config_in(dir.path(), &slack_app(dir.path(), "chat", &slack, CHANNEL));
    cfg.cmdb = Some(support::wide_cmdb(dir.path()));
    let r = start(&cfg).await;
    let long: String = "Primary <db> & replicas > lag; "
        .chars()
        .cycle()
        .take(2_000)
        .collect();
    let alert = |severity: &str, instance: &str| {
        json!([{"labels": {"alertname": "PostgresDown", "job": "postgres", "instance": instance, "severity": severity},
                "annotations": {"summary": long, "runbook_url": "https://runbooks.example.com/pg"},
                "status": "firing", "startsAt": "2026-11-30T10:00:00Z"}])
    };
    let (s, v) = call(&r, "POST", "/api/v1/alerts", alert("warning", "pg-0:9187")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, list) = call(&r, "GET", "/api/v1/incidents", Value::Null).await;
    let inc = &list["incidents"][0];
    assert_eq!(
        inc["impacted_services"].as_array().map(Vec::len),
        Some(40),
        "{inc}"
    );
    let id = inc["id"].as_i64().expect("id");
    let (s, v) = call(&r, "POST", "/api/v1/alerts", alert("critical", "pg-0:9100")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    act(&r, id, "ack").await;
    let (s, v) = call(
        &r,
        "POST",
        &format!("/api/v1/incidents/{id}/hold"),
        json!({"by": "<dba> & co", "reason": "awaiting_vendor"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    act(&r, id, "resume").await;
    act(&r, id, "resolve").await;
    support::drain::outbox_drained(&*r.store).await;
    let calls = slack.calls();
    assert!(calls.len() >= 8, "{calls:?}");
    assert!(calls.iter().all(|(_, o)| o == "ok"), "{calls:?}");
    let messages = slack.channel_messages();
    assert_eq!(messages.len(), 1);
    assert!(
        state_field(&messages[0]).starts_with("resolved"),
        "{messages:?}"
    );
    let failures: Vec<Value> = timeline(&r, id)
        .await
        .into_iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("outbound_") && k != "outbound_delivered")
        })
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    r.shutdown().await;
}
