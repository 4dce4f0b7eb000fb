//! The documented contracts of the paging and chat APIs incidentd calls,
//! as pure checks of one request: what the real service refuses, the fakes
//! refuse, with the status and body the service answers. A fake that only
//! checked shapes would let a request pass here that production refuses.
//! Each check cites the page it follows; limits are counted in characters,
//! as the services count them.

use axum::http::HeaderMap;
use serde_json::{Value, json};

/// A refusal: the status and the body the service answers with.
pub type Refusal = (u16, Value);

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// PagerDuty Events API v2, `POST /v2/enqueue`
/// (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/,
/// .../acknowledge-events/, .../resolve-events/): a JSON body;
/// `routing_key` (a 32-character integration key) and `event_action`
/// (trigger, acknowledge, resolve) required; a trigger needs
/// `payload.summary` (at most 1024 characters), `payload.source` and
/// `payload.severity` (critical, error, warning, info); `dedup_key` at most
/// 255 characters and required to acknowledge or resolve; `links` and
/// `images` are arrays. A malformed event is 400 with `errors`.
pub fn pagerduty_event(headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let bad = |why: &str| {
        Err((
            400,
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": [why]}),
        ))
    };
    if !is_json(headers) {
        return bad("Content-Type must be application/json");
    }
    let Ok(b) = serde_json::from_slice::<Value>(body) else {
        return bad("body is not JSON");
    };
    if b["routing_key"].as_str().map(str::len) != Some(32) {
        return bad("'routing_key' must be a 32 character integration key");
    }
    let key_len = chars(&b["dedup_key"]);
    if key_len > 255 {
        return bad("'dedup_key' is longer than 255 characters");
    }
    for list in ["links", "images"] {
        if !(b[list].is_null() || b[list].is_array()) {
            return bad("'links' and 'images' must be arrays");
        }
    }
    match b["event_action"].as_str() {
        Some("trigger") => {
            let p = &b["payload"];
            let summary = chars(&p["summary"]);
            if summary == 0 || summary > 1024 {
                return bad("'payload.summary' is required (at most 1024 characters)");
            }
            if chars(&p["source"]) == 0 {
                return bad("'payload.source' is required");
            }
            if !matches!(
                p["severity"].as_str(),
                Some("critical" | "error" | "warning" | "info")
            ) {
                return bad("'payload.severity' must be critical, error, warning or info");
            }
            Ok(())
        }
        Some("acknowledge" | "resolve") if key_len == 0 => {
            bad("'dedup_key' is required to acknowledge or resolve")
        }
        Some("acknowledge" | "resolve") => Ok(()),
        _ => bad("'event_action' must be trigger, acknowledge or resolve"),
    }
}

/// Slack incoming webhook with Block Kit
/// (https://api.slack.com/messaging/webhooks, "Handling errors", and the
/// block reference https://api.slack.com/reference/block-kit/blocks): at
/// most 50 blocks; `header` plain text at most 150 characters; `section`
/// text at most 3000, at most 10 `fields` of at most 2000 each; `context`
/// at most 10 elements; top-level `text` at most 40,000 (a longer one is
/// cut, not refused). A bad block is 400 with the plain-text body
/// `invalid_blocks`; a body with neither text nor blocks, `no_text`.
pub fn slack_webhook(body: &[u8]) -> Result<(), Refusal> {
    let refuse = |what: &str| Err((400, Value::String(what.to_string())));
    let Ok(b) = serde_json::from_slice::<Value>(body) else {
        return refuse("invalid_payload");
    };
    let blocks = b["blocks"].as_array().cloned().unwrap_or_default();
    if chars(&b["text"]) == 0 && blocks.is_empty() {
        return refuse("no_text");
    }
    if !blocks_ok(&blocks) {
        return refuse("invalid_blocks");
    }
    Ok(())
}

/// Block Kit's limits (https://api.slack.com/reference/block-kit/blocks),
/// the same for incoming webhooks and the Web API: at most 50 blocks;
/// `header` plain text of 1..=150 characters; `section` text 1..=3000, at
/// most 10 `fields` of 1..=2000 each, and one of the two; `context` 1..=10
/// elements; no unknown block type.
fn blocks_ok(blocks: &[Value]) -> bool {
    blocks.len() <= 50
        && blocks.iter().all(|block| match block["type"].as_str() {
            Some("header") => {
                block["text"]["type"] == "plain_text"
                    && (1..=150).contains(&chars(&block["text"]["text"]))
            }
            Some("section") => {
                let text_ok =
                    block["text"].is_null() || (1..=3000).contains(&chars(&block["text"]["text"]));
                let fields = block["fields"].as_array().cloned().unwrap_or_default();
                let fields_ok = fields.len() <= 10
                    && fields
                        .iter()
                        .all(|f| (1..=2000).contains(&chars(&f["text"])));
                let has_content = !block["text"].is_null() || !fields.is_empty();
                text_ok && fields_ok && has_content
            }
            Some("context") => block["elements"]
                .as_array()
                .is_some_and(|e| (1..=10).contains(&e.len())),
            Some("divider" | "actions" | "image" | "rich_text") => true,
            _ => false,
        })
}

/// What a Slack workspace knows, for [`slack_web_api`]: the app's bot
/// token, the channels it may post to, and whether a message exists.
pub struct SlackWorkspace<'a> {
    pub token: &'a str,
    pub channels: &'a [String],
    pub message_exists: &'a dyn Fn(&str, &str) -> bool,
}

/// The Slack Web API as incidentd calls it, one request at a time:
/// `chat.postMessage` (https://api.slack.com/methods/chat.postMessage),
/// `chat.update` (https://api.slack.com/methods/chat.update),
/// `conversations.history`
/// (https://api.slack.com/methods/conversations.history) and
/// `conversations.replies`, blocks by the Block Kit reference
/// (https://api.slack.com/reference/block-kit/blocks). Slack answers a
/// refused call with HTTP 200 and `{"ok": false, "error": "…"}`: no token
/// is `not_authed`, a wrong one `invalid_auth`; a missing or unknown
/// `channel` is `channel_not_found`; a message needs `text` or `blocks`
/// (`no_text`); `text` over 40,000 characters is `msg_too_long`; blocks
/// over Block Kit's limits are `invalid_blocks`; `metadata` needs a string
/// `event_type` and an object `event_payload` (`invalid_metadata_format`);
/// `chat.update` needs the `ts` of an existing message
/// (`message_not_found`); a reply's `thread_ts` and the `ts` of
/// `conversations.replies` must name an existing message
/// (`thread_not_found`, the error Slack's thread methods use). JSON bodies
/// need `Content-Type: application/json`. An unknown method is HTTP 404
/// `unknown_method`. `args` are the query's (GET) or the JSON body's
/// (POST) arguments.
pub fn slack_web_api(
    ws: &SlackWorkspace<'_>,
    http_method: &str,
    method: &str,
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
) -> Result<Value, Refusal> {
    let fail = |error: &str| Err((200, json!({"ok": false, "error": error})));
    let post = match (method, http_method) {
        ("chat.postMessage" | "chat.update", "POST") => true,
        ("conversations.history" | "conversations.replies", "GET") => false,
        _ => return Err((404, json!({"ok": false, "error": "unknown_method"}))),
    };
    match headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        None => return fail("not_authed"),
        Some(t) if t != ws.token => return fail("invalid_auth"),
        Some(_) => {}
    }
    let args: Value = if post {
        if !is_json(headers) {
            return fail("invalid_post_type");
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(v) if v.is_object() => v,
            _ => return fail("invalid_json"),
        }
    } else {
        let pairs: serde_json::Map<String, Value> = form_urlencoded_pairs(query);
        Value::Object(pairs)
    };
    let channel = args["channel"].as_str().unwrap_or_default();
    if !ws.channels.iter().any(|c| c == channel) {
        return fail("channel_not_found");
    }
    match method {
        "conversations.history" => Ok(args),
        "conversations.replies" => {
            let ts = args["ts"].as_str().unwrap_or_default();
            if (ws.message_exists)(channel, ts) {
                Ok(args)
            } else {
                fail("thread_not_found")
            }
        }
        _ => {
            let text = chars(&args["text"]);
            let blocks = args["blocks"].as_array().cloned().unwrap_or_default();
            if text == 0 && blocks.is_empty() {
                return fail("no_text");
            }
            if text > 40_000 {
                return fail("msg_too_long");
            }
            if !(args["blocks"].is_null() || args["blocks"].is_array()) || !blocks_ok(&blocks) {
                return fail("invalid_blocks");
            }
            let m = &args["metadata"];
            let metadata_ok =
                m.is_null() || (m["event_type"].is_string() && m["event_payload"].is_object());
            if !metadata_ok {
                return fail("invalid_metadata_format");
            }
            if method == "chat.update" {
                let ts = args["ts"].as_str().unwrap_or_default();
                if !(ws.message_exists)(channel, ts) {
                    return fail("message_not_found");
                }
            } else if let Some(thread) = args.get("thread_ts") {
                let ts = thread.as_str().unwrap_or_default();
                if !(ws.message_exists)(channel, ts) {
                    return fail("thread_not_found");
                }
            }
            Ok(args)
        }
    }
}

/// A query string's pairs, decoded, as JSON strings.
fn form_urlencoded_pairs(query: &str) -> serde_json::Map<String, Value> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// Opsgenie Alert API, create alert `POST /v2/alerts`
/// (https://docs.opsgenie.com/docs/alert-api, "Create Alert"): `message`
/// required, at most 130 characters; `alias` at most 512; `description` at
/// most 15,000; `tags` at most 20 of at most 50 characters each; `entity`
/// at most 512; `source` at most 100; `priority` P1–P5; `responders` and
/// `visibleTo` objects of type team, user, escalation or schedule naming
/// `id`, `name` or `username`; `details` at most 8,000 characters in all.
/// A semantic error is 422 with `errors`; a valid request is accepted
/// asynchronously: 202 with a `requestId` whose outcome the request-status
/// API tells.
pub fn opsgenie_create(body: &[u8]) -> Result<(), Refusal> {
    let bad = |field: &str, why: &str| {
        Err((
            422,
            json!({"message": "Request body is not processable. Please check the errors.",
                   "errors": {field: why}, "took": 0.0, "requestId": "fake"}),
        ))
    };
    let Ok(b) = serde_json::from_slice::<Value>(body) else {
        return bad("body", "Could not parse the request body.");
    };
    let message = chars(&b["message"]);
    if message == 0 || message > 130 {
        return bad(
            "message",
            "Message can not be empty or longer than 130 characters.",
        );
    }
    for (field, max) in [
        ("alias", 512),
        ("description", 15_000),
        ("entity", 512),
        ("source", 100),
    ] {
        if chars(&b[field]) > max {
            return bad(field, "too long");
        }
    }
    if let Some(tags) = b["tags"].as_array()
        && (tags.len() > 20 || tags.iter().any(|t| chars(t) == 0 || chars(t) > 50))
    {
        return bad("tags", "At most 20 tags of at most 50 characters.");
    }
    if !(b["priority"].is_null()
        || matches!(
            b["priority"].as_str(),
            Some("P1" | "P2" | "P3" | "P4" | "P5")
        ))
    {
        return bad("priority", "Priority should be one of P1, P2, P3, P4, P5.");
    }
    for list in ["responders", "visibleTo"] {
        for r in b[list].as_array().into_iter().flatten() {
            let typed = matches!(
                r["type"].as_str(),
                Some("team" | "user" | "escalation" | "schedule")
            );
            let named = ["id", "name", "username"].iter().any(|k| chars(&r[*k]) > 0);
            if !(typed && named) {
                return bad(list, "Each needs a type and an id, name or username.");
            }
        }
    }
    if let Some(details) = b["details"].as_object() {
        let total: usize = details
            .iter()
            .map(|(k, v)| k.chars().count() + chars(v))
            .sum();
        if total > 8_000 || details.values().any(|v| !v.is_string()) {
            return bad(
                "details",
                "Details are string values, at most 8000 characters in all.",
            );
        }
    }
    Ok(())
}

/// PagerDuty's REST API error body ("Errors",
/// https://developer.pagerduty.com/docs/rest-api-v2/errors/):
/// `{"error": {"message", "code", "errors": [...]}}`.
pub fn pagerduty_error(status: u16, code: u32, message: &str, errors: &[&str]) -> Refusal {
    let mut error = json!({"message": message, "code": code});
    if !errors.is_empty() {
        error["errors"] = json!(errors);
    }
    (status, json!({ "error": error }))
}

/// PagerDuty REST API v2, the calls incidentd makes: "List incidents"
/// (https://developer.pagerduty.com/api-reference/9d0b4b12e36f9-list-incidents),
/// "List priorities"
/// (https://developer.pagerduty.com/api-reference/0fa9ad52bf2d2-list-priorities)
/// and "Update an incident"
/// (https://developer.pagerduty.com/api-reference/8a0e1aa2ec666-update-an-incident).
/// Every call: `Authorization: Token token=<key>` ("Authentication"; else
/// 401, code 2006 "Authentication failed") and the versioned
/// `Accept: application/vnd.pagerduty+json;version=2`, which the reference
/// marks required (the fake refuses a call without it, 400). An update
/// (`PUT`, `priority_ids` the account's priorities): a `From` header with
/// a user's email (else 400, "You must specify a user's email address in
/// the \"From\" header to perform this action", as the API answers
/// account-level keys); a JSON body `{"incident": {"type": ...}}`, the
/// type `incident_reference` (the reference also names `incident`;
/// incidentd sends the reference, which the fake requires); `priority` a
/// `priority_reference` to one of the account's priorities; `urgency`
/// high or low. Invalid input is 400, code 2001 "Invalid Input Provided",
/// with its `errors`.
pub fn pagerduty_rest(
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
    priority_ids: &[&str],
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let token = header("authorization").and_then(|v| v.strip_prefix("Token token="));
    if token.is_none_or(str::is_empty) {
        return Err(pagerduty_error(401, 2006, "Authentication failed", &[]));
    }
    let invalid = |why: &str| Err(pagerduty_error(400, 2001, "Invalid Input Provided", &[why]));
    if !header("accept").is_some_and(|a| a.contains("application/vnd.pagerduty+json;version=2")) {
        return invalid("Accept must be application/vnd.pagerduty+json;version=2");
    }
    if method != "PUT" {
        return Ok(());
    }
    if !header("from").is_some_and(|f| f.contains('@')) {
        return Err(pagerduty_error(
            400,
            2016,
            "You must specify a user's email address in the \"From\" header to perform this action",
            &[],
        ));
    }
    if !is_json(headers) {
        return invalid("Content-Type must be application/json");
    }
    let Ok(b) = serde_json::from_slice::<Value>(body) else {
        return invalid("The request body is not JSON");
    };
    let incident = &b["incident"];
    if incident["type"] != "incident_reference" {
        return invalid("incident.type must be incident_reference");
    }
    let priority = &incident["priority"];
    if !priority.is_null() {
        if priority["type"] != "priority_reference" {
            return invalid("priority.type must be priority_reference");
        }
        if !priority["id"]
            .as_str()
            .is_some_and(|id| priority_ids.contains(&id))
        {
            return invalid("Priority not found");
        }
    }
    if !(incident["urgency"].is_null()
        || matches!(incident["urgency"].as_str(), Some("high" | "low")))
    {
        return invalid("Urgency must be high or low");
    }
    Ok(())
}
