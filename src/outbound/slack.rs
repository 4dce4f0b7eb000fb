//! Slack, two ways. An incoming webhook (`url` is the hook): a readable
//! Block Kit message when an incident opens, changes priority or resolves
//! (the events on-call people read in a channel), a new one each time. A
//! Slack app (`bot_token` + `channel`, the Web API): one message per
//! incident, updated in place (`chat.update`) so it always shows where the
//! incident stands, and a thread reply under it for each change. `text` is
//! the fallback notifications show. Every text is cut to Block Kit's limits
//! (api.slack.com/reference/block-kit/blocks: header 150 characters,
//! section text 3,000, 10 fields of 2,000): Slack refuses a message over
//! them with `invalid_blocks`, which no retry would fix.

use super::destination::{Credential, Destination, one_call, work_note};
use super::link::{Answer, Link, Ticket, TicketCalls};
use super::{EventKind, Request, external_key, summary};
use crate::domain::{Incident, IncidentState};
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::{Value, json};

/// The message for `kind`, or `None` for events a channel need not see.
/// `link` is where the incident can be opened (the API or a UI), if set.
pub fn message(inc: &Incident, kind: EventKind, link: Option<&str>) -> Option<Request> {
    let (icon, verb) = match kind {
        EventKind::Opened => (":rotating_light:", "opened"),
        EventKind::Reopened => (":rotating_light:", "reopened"),
        EventKind::PriorityChanged => (":arrow_up:", "is now"),
        EventKind::Resolved => (":white_check_mark:", "resolved"),
        EventKind::Acknowledged | EventKind::OnHold | EventKind::Resumed => return None,
    };
    let head = match kind {
        EventKind::PriorityChanged => {
            format!("{icon} Incident {} {verb} {}", inc.id.0, inc.priority)
        }
        _ => format!("{icon} Incident {} {verb}: {}", inc.id.0, summary(inc)),
    };
    // `text` (the notification fallback) is mrkdwn too; the header block
    // is plain text.
    Some(Request::post(
        "",
        json!({ "text": fit(&head, SECTION_MAX), "blocks": blocks(inc, &head, inc.state.as_str(), link) }),
    ))
}

/// The blocks of a message about `inc`: `head` (plain text) over the
/// title, the facts (`state` says where it stands) and the links.
fn blocks(inc: &Incident, head: &str, state: &str, link: Option<&str>) -> Vec<Value> {
    let services = if inc.impacted_services.is_empty() {
        "none in the catalog".to_string()
    } else {
        listed(&inc.impacted_services, FIELD_MAX - 100)
    };
    let field = |k: &str, v: &str| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", fit(v, FIELD_MAX - k.len() - 3))});
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": super::truncate(head, 150), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": fit(&inc.title, SECTION_MAX)}}),
        json!({"type": "section", "fields": [
            field("Priority", &format!("{} (impact {}, urgency {})", inc.priority, inc.impact.get(), inc.urgency.get())),
            field("State", state),
            field("Root cause", inc.root_ci.as_deref().unwrap_or("unknown")),
            field("Services", &services),
            field("Assigned to", inc.assignment_group.as_deref().unwrap_or("unassigned")),
            field("Alerts", &inc.alert_fingerprints.len().to_string()),
        ]}),
    ];
    let mut context = vec![
        json!({"type": "mrkdwn", "text": format!("incidentd incident {} · opened {}", inc.id.0, inc.opened_at.to_rfc3339())}),
    ];
    if let Some(l) = link {
        context.push(json!({"type": "mrkdwn", "text": format!("<{l}|details>")}));
    }
    for r in inc.links.runbooks.iter().take(3) {
        context.push(json!({"type": "mrkdwn", "text": format!("<{r}|runbook>")}));
    }
    blocks.push(json!({"type": "context", "elements": context}));
    blocks
}

/// Block Kit's limits on a section's text and on one of its fields.
const SECTION_MAX: usize = 3_000;
const FIELD_MAX: usize = 2_000;

/// `s` escaped for mrkdwn (`&`, `<` and `>` are control characters there)
/// and cut to `max` characters of the escaped text, never inside an
/// entity.
fn fit(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut n = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let piece = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => "",
        };
        let len = if piece.is_empty() { 1 } else { piece.len() };
        // The last piece may use the whole budget; an earlier one must
        // leave room for the ellipsis.
        let room = if chars.peek().is_none() {
            max
        } else {
            max.saturating_sub(1)
        };
        if n + len > room {
            out.push('…');
            return out;
        }
        if piece.is_empty() {
            out.push(c);
        } else {
            out.push_str(piece);
        }
        n += len;
    }
    out
}

/// `items` joined with commas, as many as fit in `max` characters, then
/// "and N more" (plain text: [`fit`] escapes it).
fn listed(items: &[String], max: usize) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        let more = format!(" and {} more", items.len() - i);
        let sep = if i == 0 { "" } else { ", " };
        if out.chars().count() + sep.len() + item.chars().count() + more.len() > max {
            out.push_str(&more);
            return out;
        }
        out.push_str(sep);
        out.push_str(item);
    }
    out
}

/// A Slack incoming webhook: its URL is the secret.
pub struct Slack {
    /// Where an incident can be opened, `{id}` replaced.
    pub incident_url: Option<String>,
}

impl Destination for Slack {
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        let inc = &row.message.incident;
        let url = self
            .incident_url
            .as_ref()
            .map(|u| u.replace("{id}", &inc.id.0.to_string()));
        let req = message(inc, row.message.kind, url.as_deref());
        Box::pin(one_call(link, row, req))
    }

    /// The webhook URL's path is its secret.
    fn display(&self, url: &str) -> String {
        crate::net::redact::redact_url_path(url)
    }
}

// ---------------------------------------------------------------------------
// App mode: the Web API with a bot token
// (api.slack.com/methods/chat.postMessage, …/chat.update,
// …/conversations.history, …/conversations.replies).

/// The Web API's base URL, app mode's default `url`.
pub const WEB_API: &str = "https://slack.com/api";

/// The metadata event type of an incident's message: how a post whose
/// answer was lost is found again (`event_payload.incident_key`).
pub const INCIDENT_EVENT: &str = "incidentd_incident";

/// The metadata event type of a thread reply: how a reply whose answer was
/// lost is found again (`event_payload.delivery`, the outbox message id).
pub const CHANGE_EVENT: &str = "incidentd_change";

/// How many of the channel's latest messages a lookup reads (Slack
/// suggests no more than 200 a page): a post whose answer was lost is
/// looked for by its retry, seconds or minutes later.
const LOOKUP_LIMIT: u32 = 200;

/// Errors that mean "try again": Slack's own trouble (it says so of
/// `internal_error` and `fatal_error`: some of the operation may have
/// happened, which the lookups cover), a workspace mid-migration, a
/// request cut short.
const TRANSIENT: [&str; 5] = [
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
];

/// Errors of a credential refused: as a 401, so that `retry_unauthorized`
/// holds the backlog for a fixed token as for the other destinations.
const UNAUTHORIZED: [&str; 5] = [
    "not_authed",
    "invalid_auth",
    "token_revoked",
    "token_expired",
    "account_inactive",
];

/// `chat.update` errors of a message that can no longer be edited
/// (deleted by someone, posted by another app): a fresh one replaces it.
const GONE: [&str; 3] = [
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
];

/// Where an incident's message is: a channel ID and the message's `ts`,
/// stored as the destination's ticket reference `C…/1700000000.000100`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    pub channel: String,
    pub ts: String,
}

impl MessageRef {
    pub fn parse(s: &str) -> Option<MessageRef> {
        let (channel, ts) = s.split_once('/')?;
        (!channel.is_empty() && !ts.is_empty()).then(|| MessageRef {
            channel: channel.to_string(),
            ts: ts.to_string(),
        })
    }
}

impl std::fmt::Display for MessageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.channel, self.ts)
    }
}

/// Where `inc` stands, as its message's header and `State` field say it:
/// (icon, word, state).
fn standing(inc: &Incident) -> (&'static str, &'static str, String) {
    let by = |who: Option<&str>| who.map(|w| format!(" by {w}")).unwrap_or_default();
    if inc.state == IncidentState::Resolved {
        let at = inc
            .resolved_at
            .map(|t| format!(" at {}", t.to_rfc3339()))
            .unwrap_or_default();
        return (":white_check_mark:", "resolved", format!("resolved{at}"));
    }
    if let Some(h) = inc.current_hold() {
        let state = format!("on hold ({}){}", h.reason, by(h.by.as_deref()));
        return (":double_vertical_bar:", "on hold", state);
    }
    if inc.state == IncidentState::Acknowledged {
        let state = format!("acknowledged{}", by(inc.acknowledged_by.as_deref()));
        return (":eyes:", "acknowledged", state);
    }
    (":rotating_light:", "open", "open".to_string())
}

/// The incident's message as it stands now: its fallback `text` and blocks.
pub fn card(inc: &Incident, link: Option<&str>) -> (String, Vec<Value>) {
    let (icon, word, state) = standing(inc);
    let head = format!("{icon} Incident {} {word}: {}", inc.id.0, summary(inc));
    (fit(&head, SECTION_MAX), blocks(inc, &head, &state, link))
}

/// The metadata that names the incident a message is about.
fn incident_metadata(inc: &Incident) -> Value {
    json!({"event_type": INCIDENT_EVENT, "event_payload": {"incident_key": external_key(inc)}})
}

/// `chat.postMessage`: the incident's message in `channel`.
pub fn post(channel: &str, inc: &Incident, link: Option<&str>) -> Request {
    let (text, blocks) = card(inc, link);
    Request::post(
        "/chat.postMessage",
        json!({"channel": channel, "text": text, "blocks": blocks, "metadata": incident_metadata(inc)}),
    )
}

/// `chat.update`: the message at `at` shows `inc` as it stands now (the
/// metadata sent again, so lookups keep finding it whatever Slack does
/// with an update's missing fields).
pub fn update(at: &MessageRef, inc: &Incident, link: Option<&str>) -> Request {
    let (text, blocks) = card(inc, link);
    Request::post(
        "/chat.update",
        json!({"channel": at.channel, "ts": at.ts, "text": text, "blocks": blocks,
               "metadata": incident_metadata(inc)}),
    )
}

/// A `GET` of a Web API method with its query.
fn get(method: &str, query: &[(&str, &str)]) -> Request {
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    Request::get(format!("/{method}?{q}"))
}

/// `conversations.history`: the channel's latest messages with their
/// metadata, to find a message posted before its answer was lost.
pub fn history(channel: &str) -> Request {
    get(
        "conversations.history",
        &[
            ("channel", channel),
            ("limit", &LOOKUP_LIMIT.to_string()),
            ("include_all_metadata", "true"),
        ],
    )
}

/// The `ts` of the message of the incident `key` in a
/// `conversations.history` answer (`messages`, newest first).
pub fn found(answer: &Value, key: &str) -> Option<String> {
    answer["messages"]
        .as_array()?
        .iter()
        .find(|m| {
            m["metadata"]["event_type"] == INCIDENT_EVENT
                && m["metadata"]["event_payload"]["incident_key"] == key
        })
        .and_then(|m| m["ts"].as_str())
        .map(str::to_string)
}

/// Where a `chat.postMessage` answer says the message went.
pub fn posted(answer: &Value) -> Option<MessageRef> {
    Some(MessageRef {
        channel: answer["channel"].as_str()?.to_string(),
        ts: answer["ts"].as_str()?.to_string(),
    })
}

/// The thread reply telling of `kind` (delivered as outbox message
/// `delivery`), or `None` for the opening (the message itself tells it).
/// A priority raise and a reopening are broadcast to the channel too
/// (`reply_broadcast`): they call people back to an incident they may
/// have stopped watching. Acknowledgements, holds and the resolution only
/// report progress, which the updated message already shows.
pub fn reply(at: &MessageRef, inc: &Incident, kind: EventKind, delivery: i64) -> Option<Request> {
    if kind == EventKind::Opened {
        return None;
    }
    let broadcast = matches!(kind, EventKind::PriorityChanged | EventKind::Reopened);
    let mut body = json!({
        "channel": at.channel,
        "thread_ts": at.ts,
        "text": fit(&work_note(inc, kind), SECTION_MAX),
        "metadata": {"event_type": CHANGE_EVENT, "event_payload": {
            "incident_key": external_key(inc), "delivery": delivery.to_string()}},
    });
    if broadcast {
        body["reply_broadcast"] = json!(true);
    }
    Some(Request::post("/chat.postMessage", body))
}

/// `conversations.replies`: the thread under the message at `at`, to find
/// a reply posted before its answer was lost.
pub fn replies(at: &MessageRef) -> Request {
    get(
        "conversations.replies",
        &[
            ("channel", &at.channel),
            ("ts", &at.ts),
            ("limit", &LOOKUP_LIMIT.to_string()),
            ("include_all_metadata", "true"),
        ],
    )
}

/// Does a `conversations.replies` answer hold the reply of outbox message
/// `delivery`?
pub fn replied(answer: &Value, delivery: i64) -> bool {
    let d = delivery.to_string();
    answer["messages"].as_array().is_some_and(|ms| {
        ms.iter().any(|m| {
            m["metadata"]["event_type"] == CHANGE_EVENT
                && m["metadata"]["event_payload"]["delivery"] == d.as_str()
        })
    })
}

/// Is this the failure of a `chat.update` of a message that can no longer
/// be edited?
pub fn gone(answer: &Answer) -> bool {
    !answer.ok()
        && answer.json["error"]
            .as_str()
            .is_some_and(|e| GONE.contains(&e))
}

/// What a Web API answer to `method` means. Slack reports most failures
/// as HTTP 200 with `{"ok": false, "error": "…"}`: those become the
/// failing answer they are (rate limited: 429, its `Retry-After` kept;
/// Slack's own trouble: 503; a refused token: 401; any other error, like
/// `channel_not_found` or `invalid_blocks`: a refusal), with Slack's error
/// as the detail. A 2xx without `"ok": true` is no Web API answer (a
/// wrong `url`): refused. Other statuses (429, 5xx) are judged as usual,
/// Slack's error, if any, as their detail.
pub fn interpret(method: &str, answer: Answer) -> Answer {
    let error = answer.json["error"].as_str().map(str::to_string);
    let Some(status) = answer.status.filter(|s| (200..300).contains(s)) else {
        // A 429 or 5xx keeps its status; Slack's word names the cause.
        return match error {
            Some(e) => Answer {
                detail: format!("Slack {method}: {e}"),
                ..answer
            },
            None => answer,
        };
    };
    if answer.json["ok"] == true {
        return answer;
    }
    let Some(error) = error else {
        return Answer {
            status: Some(422),
            detail: format!(
                "Slack {method}: HTTP {status} without \"ok\": true, not a Web API answer (is url the Web API?)"
            ),
            ..answer
        };
    };
    let code = match error.as_str() {
        "ratelimited" | "rate_limited" => 429,
        e if TRANSIENT.contains(&e) => 503,
        e if UNAUTHORIZED.contains(&e) => 401,
        _ => 422,
    };
    // `missing_scope` says which scope the token lacks.
    let needed = answer.json["needed"]
        .as_str()
        .map(|n| format!(" (needed: {n})"))
        .unwrap_or_default();
    Answer {
        status: Some(code),
        detail: format!("Slack {method}: {error}{needed}"),
        ..answer
    }
}

/// A Slack app posting with its bot token to one channel.
pub struct SlackApp {
    /// The channel's ID.
    pub channel: String,
    /// Where an incident can be opened, `{id}` replaced.
    pub incident_url: Option<String>,
    /// The bot token, as a bearer credential.
    pub credential: Credential,
}

impl Destination for SlackApp {
    fn credential(&self) -> Option<&Credential> {
        Some(&self.credential)
    }

    /// Slack warns of a JSON body without a charset.
    fn content_type(&self) -> &'static str {
        "application/json; charset=utf-8"
    }

    fn interpret(&self, req: &Request, answer: Answer) -> Answer {
        let method = req.path.trim_start_matches('/');
        let method = method.split_once('?').map_or(method, |(m, _)| m);
        interpret(method, answer)
    }

    /// The incident's message (stored, else looked up in the channel by
    /// its metadata, else posted: a post whose answer was lost is found by
    /// the retry, never made twice); for a later event, the message
    /// updated to the incident's state (a fresh one when it was deleted)
    /// and a thread reply telling the change (on a retry, not if the
    /// thread already has it).
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        Box::pin(async move {
            let inc = &row.message.incident;
            let kind = row.message.kind;
            let url = self
                .incident_url
                .as_ref()
                .map(|u| u.replace("{id}", &inc.id.0.to_string()));
            let url = url.as_deref();
            let ticket = link
                .ticket(row, || {
                    let (key, channel) = (external_key(inc), self.channel.clone());
                    TicketCalls {
                        lookup: history(&self.channel),
                        found: Box::new(move |a: &Value| {
                            found(a, &key).map(|ts| {
                                MessageRef {
                                    channel: channel.clone(),
                                    ts,
                                }
                                .to_string()
                            })
                        }),
                        create: post(&self.channel, inc, url),
                        created: Box::new(|a: &Value| posted(a).map(|m| m.to_string())),
                        no_id: "Slack chat.postMessage answered without channel and ts",
                    }
                })
                .await?;
            let stored = match ticket {
                Ticket::Known(s) => s,
                Ticket::Created(_, answer) | Ticket::Done(answer) => return Ok(Some(answer)),
            };
            let Some(mut at) = MessageRef::parse(&stored) else {
                return Ok(Some(Answer::refused(&format!(
                    "the stored Slack message reference {stored:?} is not channel/ts"
                ))));
            };
            let mut last = link.call(&update(&at, inc, url), row.id).await;
            if gone(&last) {
                tracing::info!(incident = inc.id.0, slack_message = %at, detail = %last.detail, "the incident's Slack message cannot be updated; posting a fresh one");
                last = link.call(&post(&self.channel, inc, url), row.id).await;
                if !last.ok() {
                    return Ok(Some(last));
                }
                let Some(fresh) = posted(&last.json) else {
                    return Ok(Some(Answer::refused(
                        "Slack chat.postMessage answered without channel and ts",
                    )));
                };
                link.remember(row, &fresh.to_string()).await?;
                at = fresh;
            } else if !last.ok() {
                return Ok(Some(last));
            }
            let Some(note) = reply(&at, inc, kind, row.id) else {
                return Ok(Some(last));
            };
            // A reply whose answer was lost (or that went before a later
            // call failed) is not posted twice.
            if row.attempts > 0 {
                let thread = link.call(&replies(&at), row.id).await;
                if !thread.ok() {
                    return Ok(Some(thread));
                }
                if replied(&thread.json, row.id) {
                    return Ok(Some(thread));
                }
            }
            Ok(Some(link.call(&note, row.id).await))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Method;
    use crate::outbound::tests::incident;

    #[test]
    fn texts_are_escaped_and_cut_to_block_kit_limits() {
        assert_eq!(fit("a<b>&c", 100), "a&lt;b&gt;&amp;c");
        assert_eq!(fit("abcdef", 5), "abcd…");
        assert_eq!(fit("abcde", 5), "abcde");
        // Never inside an entity.
        assert_eq!(fit("abc&def", 6), "abc…");
        let many: Vec<String> = (0..40).map(|i| format!("service-{i:02}")).collect();
        let l = listed(&many, 100);
        assert!(l.chars().count() <= 100 && l.ends_with(" more"), "{l}");
        assert!(l.starts_with("service-00, service-01"), "{l}");

        let mut inc = incident();
        inc.title = "<db> & ".repeat(700).into();
        inc.impacted_services = (0..40)
            .map(|i| format!("{i:02}-{}", "s".repeat(80)))
            .collect();
        let b = message(&inc, EventKind::Opened, None)
            .expect("message")
            .body
            .expect("body");
        let count = |v: &serde_json::Value| v.as_str().map_or(0, |s| s.chars().count());
        assert!(count(&b["text"]) <= 3_000);
        for block in b["blocks"].as_array().expect("blocks") {
            match block["type"].as_str() {
                Some("header") => assert!(count(&block["text"]["text"]) <= 150),
                Some("section") => {
                    assert!(count(&block["text"]["text"]) <= 3_000);
                    let fields = block["fields"].as_array().cloned().unwrap_or_default();
                    assert!(fields.len() <= 10);
                    assert!(fields.iter().all(|f| count(&f["text"]) <= 2_000));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn open_priority_and_resolve_make_readable_messages() {
        let mut inc = incident();
        inc.title = "5xx > 5% on <checkout> & cart".into();
        let m = message(
            &inc,
            EventKind::Opened,
            Some("https://incidentd.example.com/api/v1/incidents/42"),
        )
        .expect("a message")
        .body
        .expect("body");
        assert_eq!(
            m["text"],
            ":rotating_light: Incident 42 opened: [P1] 5xx &gt; 5% on &lt;checkout&gt; &amp; cart"
        );
        assert_eq!(
            m["blocks"][0]["text"]["text"],
            ":rotating_light: Incident 42 opened: [P1] 5xx > 5% on <checkout> & cart"
        );
        assert_eq!(m["blocks"][0]["type"], "header");
        assert_eq!(
            m["blocks"][1]["text"]["text"],
            "5xx &gt; 5% on &lt;checkout&gt; &amp; cart"
        );
        let fields = m["blocks"][2]["fields"].as_array().expect("fields");
        assert!(
            fields
                .iter()
                .any(|f| f["text"] == "*Services*\ncheckout, search")
        );
        assert!(fields.iter().any(|f| f["text"] == "*Root cause*\npg-0"));
        let ctx = m["blocks"][3]["elements"].as_array().expect("context");
        assert!(ctx.iter().any(|e| e["text"] == "<https://incidentd.example.com/api/v1/incidents/42|details>"));
        let p = message(&inc, EventKind::PriorityChanged, None)
            .expect("message")
            .body
            .expect("body");
        assert_eq!(p["text"], ":arrow_up: Incident 42 is now P1");
        assert!(message(&inc, EventKind::Resolved, None).is_some());
        assert!(message(&inc, EventKind::Acknowledged, None).is_none());
    }

    fn answer(status: u16, json: Value) -> Answer {
        Answer::with_json(status, json)
    }

    #[test]
    fn the_app_posts_one_message_that_shows_where_the_incident_stands() {
        use crate::domain::{Hold, Timestamp};
        let mut inc = incident();
        let p = post(
            "C0123456789",
            &inc,
            Some("https://incidentd.example.com/i/42"),
        );
        assert_eq!(
            (p.method, p.path.as_str()),
            (Method::Post, "/chat.postMessage")
        );
        let b = p.body.expect("body");
        assert_eq!(b["channel"], "C0123456789");
        assert_eq!(b["metadata"]["event_type"], "incidentd_incident");
        assert_eq!(
            b["metadata"]["event_payload"]["incident_key"],
            "incidentd-42"
        );
        assert_eq!(
            b["text"],
            ":rotating_light: Incident 42 open: [P1] PostgresDown on pg-0"
        );
        assert_eq!(b["blocks"][0]["type"], "header");
        let fields = b["blocks"][2]["fields"].as_array().expect("fields");
        assert!(fields.iter().any(|f| f["text"] == "*State*\nopen"), "{b}");

        let at = MessageRef {
            channel: "C0123456789".into(),
            ts: "1700000000.000100".into(),
        };
        assert_eq!(at.to_string(), "C0123456789/1700000000.000100");
        assert_eq!(MessageRef::parse(&at.to_string()), Some(at.clone()));
        assert_eq!(MessageRef::parse("C0123456789"), None);

        inc.state = IncidentState::Acknowledged;
        inc.acknowledged_by = Some("alice".into());
        let u = update(&at, &inc, None);
        assert_eq!(u.path, "/chat.update");
        let b = u.body.expect("body");
        assert_eq!(
            (b["channel"].as_str(), b["ts"].as_str()),
            (Some("C0123456789"), Some("1700000000.000100"))
        );
        assert_eq!(
            b["text"],
            ":eyes: Incident 42 acknowledged: [P1] PostgresDown on pg-0"
        );
        let fields = b["blocks"][2]["fields"].as_array().expect("fields");
        assert!(
            fields
                .iter()
                .any(|f| f["text"] == "*State*\nacknowledged by alice"),
            "{b}"
        );

        inc.holds.push(Hold {
            reason: "awaiting_vendor".into(),
            start: Timestamp(0),
            end: None,
            by: Some("bob <ops>".into()),
        });
        let (text, blocks) = card(&inc, None);
        assert!(
            text.starts_with(":double_vertical_bar: Incident 42 on hold"),
            "{text}"
        );
        let fields = blocks[2]["fields"].as_array().expect("fields");
        assert!(
            fields
                .iter()
                .any(|f| f["text"] == "*State*\non hold (awaiting_vendor) by bob &lt;ops&gt;"),
            "{blocks:?}"
        );

        inc.state = IncidentState::Resolved;
        inc.holds[0].end = Some(Timestamp(1));
        inc.resolved_at = Some(Timestamp(1_795_000_060_000));
        let (text, blocks) = card(&inc, None);
        assert!(
            text.starts_with(":white_check_mark: Incident 42 resolved"),
            "{text}"
        );
        let fields = blocks[2]["fields"].as_array().expect("fields");
        assert!(
            fields
                .iter()
                .any(|f| f["text"] == "*State*\nresolved at 2026-11-18T11:07:40.000Z"),
            "{blocks:?}"
        );
    }

    #[test]
    fn each_change_is_a_thread_reply_and_raises_are_broadcast() {
        let mut inc = incident();
        let at = MessageRef {
            channel: "C0123456789".into(),
            ts: "1700000000.000100".into(),
        };
        assert!(reply(&at, &inc, EventKind::Opened, 7).is_none());
        inc.acknowledged_by = Some("alice".into());
        let r = reply(&at, &inc, EventKind::Acknowledged, 7).expect("a reply");
        assert_eq!(r.path, "/chat.postMessage");
        let b = r.body.expect("body");
        assert_eq!(b["thread_ts"], "1700000000.000100");
        assert_eq!(b["channel"], "C0123456789");
        assert_eq!(b["text"], "incidentd: acknowledged by alice");
        assert!(b.get("reply_broadcast").is_none());
        assert!(b.get("blocks").is_none());
        assert_eq!(b["metadata"]["event_type"], "incidentd_change");
        assert_eq!(b["metadata"]["event_payload"]["delivery"], "7");
        for kind in [EventKind::PriorityChanged, EventKind::Reopened] {
            let b = reply(&at, &inc, kind, 8)
                .expect("a reply")
                .body
                .expect("body");
            assert_eq!(b["reply_broadcast"], true, "{kind:?}");
        }
        for kind in [EventKind::OnHold, EventKind::Resumed, EventKind::Resolved] {
            let b = reply(&at, &inc, kind, 8)
                .expect("a reply")
                .body
                .expect("body");
            assert!(b.get("reply_broadcast").is_none(), "{kind:?}");
        }
        let thread = json!({"ok": true, "messages": [
            {"ts": "1700000000.000100", "metadata": {"event_type": "incidentd_incident", "event_payload": {"incident_key": "incidentd-42"}}},
            {"ts": "1700000001.000100", "thread_ts": "1700000000.000100",
             "metadata": {"event_type": "incidentd_change", "event_payload": {"incident_key": "incidentd-42", "delivery": "7"}}}]});
        assert!(replied(&thread, 7));
        assert!(!replied(&thread, 8));
        let q = replies(&at);
        assert_eq!(q.method, Method::Get);
        assert_eq!(
            q.path,
            "/conversations.replies?channel=C0123456789&ts=1700000000.000100&limit=200&include_all_metadata=true"
        );
    }

    #[test]
    fn a_lost_post_is_found_by_its_metadata() {
        let h = history("C0123456789");
        assert_eq!((h.method, h.body.is_none()), (Method::Get, true));
        assert_eq!(
            h.path,
            "/conversations.history?channel=C0123456789&limit=200&include_all_metadata=true"
        );
        let answer = json!({"ok": true, "has_more": false, "messages": [
            {"type": "message", "ts": "1700000003.000100", "text": "someone else"},
            {"type": "message", "ts": "1700000002.000100",
             "metadata": {"event_type": "incidentd_incident", "event_payload": {"incident_key": "incidentd-4"}}},
            {"type": "message", "ts": "1700000001.000100",
             "metadata": {"event_type": "incidentd_incident", "event_payload": {"incident_key": "incidentd-42"}}}]});
        assert_eq!(
            found(&answer, "incidentd-42"),
            Some("1700000001.000100".into())
        );
        assert_eq!(found(&answer, "incidentd-43"), None);
        assert_eq!(
            found(&json!({"ok": true, "messages": []}), "incidentd-42"),
            None
        );
        assert_eq!(
            posted(&json!({"ok": true, "channel": "C0123456789", "ts": "1700000000.000100"})),
            Some(MessageRef {
                channel: "C0123456789".into(),
                ts: "1700000000.000100".into()
            })
        );
        assert_eq!(posted(&json!({"ok": true})), None);
    }

    #[test]
    fn ok_false_is_never_delivered() {
        let ok = interpret(
            "chat.postMessage",
            answer(200, json!({"ok": true, "ts": "1.2"})),
        );
        assert!(ok.ok());
        let status = |error: &str| {
            interpret(
                "chat.postMessage",
                answer(200, json!({"ok": false, "error": error})),
            )
            .status
        };
        assert_eq!(status("ratelimited"), Some(429));
        assert_eq!(status("rate_limited"), Some(429));
        for e in [
            "internal_error",
            "fatal_error",
            "service_unavailable",
            "request_timeout",
        ] {
            assert_eq!(status(e), Some(503), "{e}");
        }
        for e in ["invalid_auth", "not_authed", "token_revoked"] {
            assert_eq!(status(e), Some(401), "{e}");
        }
        for e in [
            "channel_not_found",
            "not_in_channel",
            "msg_too_long",
            "invalid_blocks",
            "message_not_found",
        ] {
            assert_eq!(status(e), Some(422), "{e}");
        }
        let a = interpret(
            "conversations.history",
            answer(
                200,
                json!({"ok": false, "error": "missing_scope", "needed": "channels:history"}),
            ),
        );
        assert_eq!(
            a.detail,
            "Slack conversations.history: missing_scope (needed: channels:history)"
        );
        // Not a Web API answer at all.
        let a = interpret("chat.postMessage", answer(200, Value::Null));
        assert_eq!(a.status, Some(422));
        assert!(a.detail.contains("not a Web API answer"), "{}", a.detail);
        // Statuses keep their meaning, with Retry-After.
        let mut limited = answer(429, json!({"ok": false, "error": "ratelimited"}));
        limited.retry_after = Some(std::time::Duration::from_secs(3));
        let a = interpret("chat.update", limited);
        assert_eq!(
            (a.status, a.retry_after),
            (Some(429), Some(std::time::Duration::from_secs(3)))
        );
        assert_eq!(a.detail, "Slack chat.update: ratelimited");
        assert_eq!(
            interpret("chat.update", answer(502, Value::Null)).status,
            Some(502)
        );
        // A deleted message is gone; a refused token is not.
        let deleted = interpret(
            "chat.update",
            answer(200, json!({"ok": false, "error": "message_not_found"})),
        );
        assert!(gone(&deleted));
        let other = interpret(
            "chat.update",
            answer(200, json!({"ok": false, "error": "channel_not_found"})),
        );
        assert!(!gone(&other));
        assert!(!gone(&interpret(
            "chat.update",
            answer(200, json!({"ok": true}))
        )));
    }
}
