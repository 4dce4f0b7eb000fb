//! A Freshservice account's API v2 as incidentd uses it (tickets, notes,
//! "Filter Tickets"), keeping to what the documented API does rather than
//! to what incidentd happens to send (https://api.freshservice.com/,
//! sections "Authentication", "Rate limit", "Tickets": "Create a Ticket",
//! "Update a Ticket", "Filter Tickets", "Create a Note"):
//!
//! - Basic auth with the API key as the user (any password); otherwise 401
//!   `invalid_credentials`. JSON bodies need `Content-Type:
//!   application/json` (else 415). Only `/api/v2/` exists: the v1 API
//!   (`/helpdesk/tickets.json`) is retired.
//! - A create needs a requester (`requester_id`, `email` or `phone`),
//!   `subject` (at most 255 characters), `description`, `status` (2 Open,
//!   3 Pending, 4 Resolved, 5 Closed) and `priority` (1 Low .. 4 Urgent);
//!   `urgency` and `impact` are 1 Low .. 3 High; `source`, `group_id`,
//!   `department_id`, `category` and `custom_fields` must name what the
//!   account has; an unknown field is refused. Errors are 400 with
//!   `{"description": "Validation failed", "errors": [{"field", "message",
//!   "code"}]}` (`missing_field`, `invalid_value`, `invalid_field`,
//!   `datatype_mismatch`). A created ticket is 201 `{"ticket": {…}}`.
//! - "Filter Tickets": `query` wrapped in double quotes, at most 512
//!   characters inside them, terms `field:value` joined by `AND`/`OR` with
//!   parentheses, strings in single quotes; 30 tickets a page (`page`);
//!   the tickets come without their tags; `{"tickets": […], "total": n}`.
//! - Notes: `POST …/tickets/{id}/notes` needs `body`; 201 with the note as
//!   `conversation`. An unknown ticket is 404.
//! - Rate limit: a per-minute budget across the account (its window is
//!   shortened here so a test need not wait a minute); over it, 429 with
//!   `Retry-After` in seconds.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "fs-api-key-7f3a";
/// The account's agent groups, departments, requesters, categories and
/// custom fields, by id or name.
pub const GROUPS: [i64; 2] = [7, 8];
pub const DEPARTMENTS: [i64; 1] = [3];
pub const REQUESTERS: [i64; 1] = [5001];
/// Sources 1–10 are Freshservice's own; 1001 is the account's "Monitoring".
pub const MONITORING_SOURCE: i64 = 1001;
pub const CATEGORIES: [&str; 4] = ["Hardware", "Software", "Network", "Infrastructure"];
pub const CUSTOM_FIELDS: [&str; 2] = ["cf_root_ci", "cf_services"];
const FIELDS: [&str; 17] = [
    "subject",
    "description",
    "email",
    "phone",
    "requester_id",
    "status",
    "priority",
    "urgency",
    "impact",
    "source",
    "group_id",
    "department_id",
    "workspace_id",
    "category",
    "sub_category",
    "tags",
    "custom_fields",
];
const PAGE: usize = 30;
const MAX_QUERY: usize = 512;

/// The account: its tickets, what was called, and the faults to play.
pub struct Account {
    pub tickets: Vec<Value>,
    /// Each ticket's notes: (ticket id, body, private).
    pub notes: Vec<(i64, String, bool)>,
    /// `create`, `filter <query>`, `update <id> <body>`, `note <id>`.
    pub calls: Vec<String>,
    /// Make the next ticket but answer 503 (the answer lost).
    pub lose_next_create: bool,
    /// Answer this many calls with 503 (an outage).
    pub outage: u32,
    /// Calls allowed per window (none: no limit), and the window.
    pub per_window: Option<u32>,
    pub window: Duration,
    window_start: Option<Instant>,
    used: u32,
    /// The number of 429s answered.
    pub throttled: u32,
    /// Calls made before the last 429's `Retry-After` had passed.
    pub early: u32,
    not_before: Option<Instant>,
    next_id: i64,
}

impl Default for Account {
    fn default() -> Account {
        Account {
            tickets: Vec::new(),
            notes: Vec::new(),
            calls: Vec::new(),
            lose_next_create: false,
            outage: 0,
            per_window: None,
            window: Duration::from_secs(60),
            window_start: None,
            used: 0,
            throttled: 0,
            early: 0,
            not_before: None,
            next_id: 380,
        }
    }
}

impl Account {
    /// The ticket `id`.
    pub fn ticket(&self, id: i64) -> Option<&Value> {
        self.tickets.iter().find(|t| t["id"] == id)
    }

    /// The notes of ticket `id`, in order.
    pub fn notes_of(&self, id: i64) -> Vec<String> {
        self.notes
            .iter()
            .filter(|(t, _, _)| *t == id)
            .map(|(_, b, _)| b.clone())
            .collect()
    }
}

type St = Arc<Mutex<Account>>;

fn refusal(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn validation(errors: Vec<Value>) -> Response {
    refusal(
        StatusCode::BAD_REQUEST,
        json!({"description": "Validation failed", "errors": errors}),
    )
}

fn err(field: &str, message: &str, code: &str) -> Value {
    json!({"field": field, "message": message, "code": code})
}

/// Authentication, content type, an outage and the rate limit, in that
/// order, as the service checks them.
fn admit(s: &mut Account, h: &HeaderMap, has_body: bool) -> Option<Response> {
    use base64::Engine as _;
    let ok = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|up| up.split_once(':').is_some_and(|(u, _)| u == API_KEY));
    if !ok {
        return Some(refusal(
            StatusCode::UNAUTHORIZED,
            json!({"code": "invalid_credentials", "message": "You have to be logged in to perform this action."}),
        ));
    }
    if has_body
        && !h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    {
        return Some(refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"code": "invalid_content_type", "message": "Content-Type header is set to application/json"}),
        ));
    }
    if s.outage > 0 {
        s.outage -= 1;
        return Some(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"message": "Service Unavailable"}),
        ));
    }
    if let Some(limit) = s.per_window {
        let now = Instant::now();
        // A little slack for the time the answer takes to arrive.
        if s.not_before
            .is_some_and(|t| now + Duration::from_millis(20) < t)
        {
            s.early += 1;
        }
        let start = *s.window_start.get_or_insert(now);
        if now.duration_since(start) >= s.window {
            s.window_start = Some(now);
            s.used = 0;
        }
        if s.used >= limit {
            s.throttled += 1;
            let left = s.window.saturating_sub(now.duration_since(start));
            let secs = left.as_secs_f64().ceil().max(1.0) as u64;
            s.not_before = Some(now + Duration::from_secs(secs));
            let mut r = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"message": "You have exceeded the limit of requests per minute"}),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("header"),
            );
            return Some(r);
        }
        s.used += 1;
    }
    None
}

fn int_in(v: &Value, field: &str, range: std::ops::RangeInclusive<i64>, errors: &mut Vec<Value>) {
    match v.as_i64() {
        Some(n) if range.contains(&n) => {}
        Some(_) => errors.push(err(
            field,
            &format!(
                "It should be one of these values: '{}'",
                range.map(|n| n.to_string()).collect::<Vec<_>>().join(",")
            ),
            "invalid_value",
        )),
        None => errors.push(err(
            field,
            "Value set is of type String.It should be a/an Integer",
            "datatype_mismatch",
        )),
    }
}

/// The fields of a create or an update against the account: every
/// problem, as the service lists them.
fn check_fields(b: &Map<String, Value>, creating: bool) -> Vec<Value> {
    let mut errors = Vec::new();
    for k in b.keys() {
        if !FIELDS.contains(&k.as_str()) {
            errors.push(err(
                k,
                "Unexpected/invalid field in request",
                "invalid_field",
            ));
        }
    }
    if creating {
        if !["requester_id", "email", "phone"]
            .iter()
            .any(|f| b.contains_key(*f))
        {
            errors.push(err(
                "requester_id",
                "Please fill at least 1 of requester_id, phone, email fields",
                "missing_field",
            ));
        }
        for f in ["subject", "description", "status", "priority"] {
            if !b.contains_key(f) {
                errors.push(err(f, "It should be a/an String", "missing_field"));
            }
        }
    }
    if let Some(s) = b.get("subject") {
        match s.as_str() {
            Some(t) if !t.trim().is_empty() && t.chars().count() <= 255 => {}
            _ => errors.push(err(
                "subject",
                "It should be a/an String of at most 255 characters",
                "invalid_value",
            )),
        }
    }
    if let Some(e) = b.get("email")
        && !e.as_str().is_some_and(|e| e.contains('@'))
    {
        errors.push(err(
            "email",
            "It should be in the 'valid email address' format",
            "invalid_value",
        ));
    }
    for (f, range) in [
        ("status", 2..=5),
        ("priority", 1..=4),
        ("urgency", 1..=3),
        ("impact", 1..=3),
    ] {
        if let Some(v) = b.get(f) {
            int_in(v, f, range, &mut errors);
        }
    }
    let known = |f: &str, v: &Value, ids: &[i64], errors: &mut Vec<Value>| {
        if !v.as_i64().is_some_and(|n| ids.contains(&n)) {
            errors.push(err(
                f,
                &format!("There is no {f} matching the given value"),
                "invalid_value",
            ));
        }
    };
    let sources: Vec<i64> = (1..=10).chain([MONITORING_SOURCE]).collect();
    for (f, ids) in [
        ("source", sources.as_slice()),
        ("group_id", GROUPS.as_slice()),
        ("department_id", DEPARTMENTS.as_slice()),
        ("requester_id", REQUESTERS.as_slice()),
    ] {
        if let Some(v) = b.get(f) {
            known(f, v, ids, &mut errors);
        }
    }
    if let Some(c) = b.get("category")
        && !c.as_str().is_some_and(|c| CATEGORIES.contains(&c))
    {
        errors.push(err(
            "category",
            &format!(
                "It should be one of these values: '{}'",
                CATEGORIES.join(",")
            ),
            "invalid_value",
        ));
    }
    if let Some(t) = b.get("tags") {
        let ok = t.as_array().is_some_and(|a| {
            a.iter().all(|x| {
                x.as_str()
                    .is_some_and(|s| !s.is_empty() && s.chars().count() <= 255)
            })
        });
        if !ok {
            errors.push(err(
                "tags",
                "It should be an Array of Strings of at most 255 characters",
                "invalid_value",
            ));
        }
    }
    if let Some(c) = b.get("custom_fields") {
        match c.as_object() {
            Some(m) => {
                for k in m.keys() {
                    if !CUSTOM_FIELDS.contains(&k.as_str()) {
                        errors.push(err(
                            k,
                            "Unexpected/invalid field in request",
                            "invalid_field",
                        ));
                    }
                }
            }
            None => errors.push(err(
                "custom_fields",
                "It should be a/an key/value pair",
                "datatype_mismatch",
            )),
        }
    }
    errors
}

/// A ticket as "Filter Tickets" lists it: without its tags.
fn listed(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("tags");
    }
    t
}

/// A parsed filter query.
enum Q {
    Term(String, Value),
    And(Box<Q>, Box<Q>),
    Or(Box<Q>, Box<Q>),
}

struct Parser<'a> {
    s: &'a str,
}

impl Parser<'_> {
    fn ws(&mut self) {
        self.s = self.s.trim_start();
    }
    fn word(&mut self, w: &str) -> bool {
        self.ws();
        if self.s.starts_with(w) {
            self.s = &self.s[w.len()..];
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Result<Q, String> {
        let mut q = self.and()?;
        while self.word("OR ") {
            q = Q::Or(Box::new(q), Box::new(self.and()?));
        }
        Ok(q)
    }
    fn and(&mut self) -> Result<Q, String> {
        let mut q = self.term()?;
        while self.word("AND ") {
            q = Q::And(Box::new(q), Box::new(self.term()?));
        }
        Ok(q)
    }
    fn term(&mut self) -> Result<Q, String> {
        if self.word("(") {
            let q = self.or()?;
            if !self.word(")") {
                return Err("unbalanced parentheses".into());
            }
            return Ok(q);
        }
        self.ws();
        let (field, rest) = self.s.split_once(':').ok_or("expected field:value")?;
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("invalid field {field:?}"));
        }
        let value = if let Some(r) = rest.strip_prefix('\'') {
            let (v, after) = r.split_once('\'').ok_or("unterminated string")?;
            self.s = after;
            json!(v)
        } else {
            let end = rest.find([' ', ')']).unwrap_or(rest.len());
            let (v, after) = rest.split_at(end);
            self.s = after;
            if v == "null" {
                Value::Null
            } else {
                json!(
                    v.parse::<i64>()
                        .map_err(|_| format!("invalid value {v:?}"))?
                )
            }
        };
        if ![
            "tag", "status", "priority", "urgency", "impact", "group_id", "agent_id",
        ]
        .contains(&field)
        {
            return Err(format!("{field} is not a filterable field"));
        }
        Ok(Q::Term(field.to_string(), value))
    }
}

fn matches(q: &Q, t: &Value) -> bool {
    match q {
        Q::And(a, b) => matches(a, t) && matches(b, t),
        Q::Or(a, b) => matches(a, t) || matches(b, t),
        Q::Term(f, v) if f == "tag" => t["tags"].as_array().is_some_and(|a| a.contains(v)),
        Q::Term(f, v) if f == "agent_id" => t["responder_id"] == *v,
        Q::Term(f, v) => t[f.as_str()] == *v,
    }
}

fn query_error(message: &str) -> Response {
    validation(vec![err("query", message, "invalid_value")])
}

/// The account's routes and its state (serve them over HTTP or HTTPS).
pub fn router() -> (axum::Router, St) {
    let state: St = Arc::new(Mutex::new(Account::default()));
    let app = axum::Router::new()
        .route(
            "/api/v2/tickets",
            post(|State(st): State<St>, h: HeaderMap, body: String| async move {
                let mut s = st.lock().expect("fs");
                if let Some(r) = admit(&mut s, &h, true) {
                    return r;
                }
                s.calls.push("create".into());
                let Ok(Value::Object(b)) = serde_json::from_str::<Value>(&body) else {
                    return validation(vec![err("body", "It should be a JSON object", "invalid_json")]);
                };
                let errors = check_fields(&b, true);
                if !errors.is_empty() {
                    return validation(errors);
                }
                s.next_id += 1;
                let mut t = Value::Object(b);
                t["id"] = json!(s.next_id);
                t["responder_id"] = Value::Null;
                s.tickets.push(t.clone());
                if std::mem::take(&mut s.lose_next_create) {
                    return refusal(StatusCode::SERVICE_UNAVAILABLE, json!({"message": "Service Unavailable"}));
                }
                (StatusCode::CREATED, axum::Json(json!({"ticket": t}))).into_response()
            }),
        )
        .route(
            "/api/v2/tickets/filter",
            get(|State(st): State<St>, h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                let mut s = st.lock().expect("fs");
                if let Some(r) = admit(&mut s, &h, false) {
                    return r;
                }
                let Some(raw) = q.get("query") else {
                    return query_error("It should be a/an String");
                };
                s.calls.push(format!("filter {raw}"));
                let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
                    return query_error("The query should be enclosed in double quotes");
                };
                if inner.chars().count() > MAX_QUERY {
                    return query_error("The query should not exceed 512 characters");
                }
                let mut p = Parser { s: inner };
                let parsed = match p.or() {
                    Ok(q) if p.s.trim().is_empty() => q,
                    Ok(_) => return query_error("unexpected text after the query"),
                    Err(m) => return query_error(&m),
                };
                let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
                let all: Vec<&Value> = s.tickets.iter().filter(|t| matches(&parsed, t)).collect();
                let tickets: Vec<Value> = all.iter().skip((page - 1) * PAGE).take(PAGE).map(|t| listed(t)).collect();
                axum::Json(json!({"tickets": tickets, "total": all.len()})).into_response()
            }),
        )
        .route(
            "/api/v2/tickets/{id}",
            get(|State(st): State<St>, h: HeaderMap, UrlPath(id): UrlPath<i64>| async move {
                let mut s = st.lock().expect("fs");
                if let Some(r) = admit(&mut s, &h, false) {
                    return r;
                }
                match s.ticket(id) {
                    Some(t) => axum::Json(json!({"ticket": t})).into_response(),
                    None => refusal(StatusCode::NOT_FOUND, json!({"code": "access_denied", "message": "not found"})),
                }
            })
            .put(|State(st): State<St>, h: HeaderMap, UrlPath(id): UrlPath<i64>, body: String| async move {
                let mut s = st.lock().expect("fs");
                if let Some(r) = admit(&mut s, &h, true) {
                    return r;
                }
                s.calls.push(format!("update {id} {body}"));
                let Ok(Value::Object(b)) = serde_json::from_str::<Value>(&body) else {
                    return validation(vec![err("body", "It should be a JSON object", "invalid_json")]);
                };
                let errors = check_fields(&b, false);
                if !errors.is_empty() {
                    return validation(errors);
                }
                let Some(t) = s.tickets.iter_mut().find(|t| t["id"] == id) else {
                    return refusal(StatusCode::NOT_FOUND, json!({"code": "access_denied", "message": "not found"}));
                };
                for (k, v) in b {
                    t[k.as_str()] = v;
                }
                axum::Json(json!({"ticket": t.clone()})).into_response()
            }),
        )
        .route(
            "/api/v2/tickets/{id}/notes",
            post(|State(st): State<St>, h: HeaderMap, UrlPath(id): UrlPath<i64>, body: String| async move {
                let mut s = st.lock().expect("fs");
                if let Some(r) = admit(&mut s, &h, true) {
                    return r;
                }
                s.calls.push(format!("note {id}"));
                let b: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let Some(text) = b["body"].as_str().filter(|t| !t.is_empty()) else {
                    return validation(vec![err("body", "It should be a/an String", "missing_field")]);
                };
                if s.ticket(id).is_none() {
                    return refusal(StatusCode::NOT_FOUND, json!({"code": "access_denied", "message": "not found"}));
                }
                let private = b["private"].as_bool().unwrap_or(true);
                s.notes.push((id, text.to_string(), private));
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"conversation": {"id": s.notes.len(), "body": text, "private": private, "ticket_id": id}})),
                )
                    .into_response()
            }),
        )
        .fallback(|| async {
            refusal(
                StatusCode::NOT_FOUND,
                json!({"code": "not_found", "message": "Only API v2 (/api/v2/) is served; v1 is retired"}),
            )
        })
        .with_state(state.clone());
    (app, state)
}

/// The fake on 127.0.0.1 over plain HTTP: its base URL and its state.
pub async fn start() -> (String, St) {
    let (app, state) = router();
    let url = super::serve(app, "freshservice fake").await;
    (url, state)
}
