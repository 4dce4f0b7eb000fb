//! A TeamDynamix organization's Web API (`TDWebApi`) as incidentd uses it,
//! keeping to the documented contract (solutions.teamdynamix.com/TDWebApi:
//! "Auth" `POST api/auth/loginadmin`; "Tickets": create, search, feed,
//! patch, and the types, statuses and priorities lists;
//! `TeamDynamix.Api.Tickets.Ticket` for required fields and limits;
//! "About rate limiting"):
//!
//! - The admin login takes `{"BEID", "WebServicesKey"}` and answers the JWT
//!   as `text/plain` (24 hours; shortened here); every other call needs it
//!   as a bearer token, else 401. Bodies must be `application/json`.
//! - A ticket needs `TypeID`, `Title` (1–300 characters), `AccountID`,
//!   `StatusID`, `PriorityID` — each an id this organization has, and a
//!   status of the class New on creation — and a requestor: a known
//!   `RequestorUid`, or `RequestorEmail` with `AllowRequestorCreation=true`.
//!   A bad ticket is 400 with a `Message`.
//! - Statuses carry a `StatusClass` (1 New, 2 In Process, 3 Completed,
//!   4 Cancelled, 5 On Hold); a feed entry's `NewStatusID` moves the ticket;
//!   `Comments` is required.
//! - `PATCH …/tickets/{id}` takes a JSON Patch (`replace` of `/PriorityID`).
//! - Each method is limited per period (60 calls, a create 30); over it,
//!   429 with `X-RateLimit-Reset`, the period's end in RFC 1123 format.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BEID: &str = "7E3A-BEID";
pub const WEB_SERVICES_KEY: &str = "tdx-web-services-key";
pub const APP_ID: u32 = 31;
pub const ACCOUNT_ID: i64 = 812;
pub const REQUESTOR_UID: &str = "4f1e2d3c-0000-4000-8000-00000000a11c";

/// The organization's ticket types, statuses and priorities, with ids as
/// a real tenant has them.
pub fn types() -> Value {
    json!([{"ID": 410, "Name": "Incident", "IsActive": true}, {"ID": 411, "Name": "Service Request", "IsActive": true}])
}
pub fn statuses() -> Value {
    json!([
        {"ID": 1601, "Name": "New", "StatusClass": 1, "Order": 1.0, "IsActive": true},
        {"ID": 1602, "Name": "In Process", "StatusClass": 2, "Order": 2.0, "IsActive": true},
        {"ID": 1605, "Name": "On Hold", "StatusClass": 5, "Order": 3.0, "IsActive": true},
        {"ID": 1603, "Name": "Resolved", "StatusClass": 3, "Order": 4.0, "IsActive": true},
        {"ID": 1604, "Name": "Closed", "StatusClass": 3, "Order": 5.0, "IsActive": true},
        {"ID": 1606, "Name": "Cancelled", "StatusClass": 4, "Order": 6.0, "IsActive": true}
    ])
}
pub fn priorities() -> Value {
    json!([{"ID": 2201, "Name": "Emergency", "Order": 1.0}, {"ID": 2202, "Name": "High", "Order": 2.0},
           {"ID": 2203, "Name": "Medium", "Order": 3.0}, {"ID": 2204, "Name": "Low", "Order": 4.0}])
}

fn class_of(status: i64) -> Option<u64> {
    statuses().as_array()?.iter().find(|s| s["ID"] == status)?["StatusClass"].as_u64()
}

/// The organization: tickets, feed entries, calls and faults.
pub struct Org {
    pub tickets: Vec<Value>,
    /// (ticket id, comments, private, new status id)
    pub feed: Vec<(i64, String, bool, Option<i64>)>,
    /// `login`, `types`, `statuses`, `priorities`, `create`, `search`,
    /// `feed <id>`, `patch <id>`.
    pub calls: Vec<String>,
    pub lose_next_create: bool,
    pub token_life: Duration,
    tokens: Vec<(String, Instant)>,
    /// Calls per method per period (create: half of it), and the period.
    pub per_period: u32,
    pub period: Duration,
    used: HashMap<&'static str, (Instant, u32)>,
    pub throttled: u32,
    /// Calls of a method made before its `X-RateLimit-Reset`.
    pub early: u32,
    reset_at: HashMap<&'static str, Instant>,
    next_id: i64,
}

impl Default for Org {
    fn default() -> Org {
        Org {
            tickets: Vec::new(),
            feed: Vec::new(),
            calls: Vec::new(),
            lose_next_create: false,
            token_life: Duration::from_secs(24 * 3600),
            tokens: Vec::new(),
            per_period: 60,
            period: Duration::from_secs(60),
            used: HashMap::new(),
            throttled: 0,
            early: 0,
            reset_at: HashMap::new(),
            next_id: 907_000,
        }
    }
}

impl Org {
    pub fn feed_of(&self, id: i64) -> Vec<(String, Option<i64>)> {
        self.feed
            .iter()
            .filter(|(t, ..)| *t == id)
            .map(|(_, c, _, s)| (c.clone(), *s))
            .collect()
    }

    pub fn logins(&self) -> usize {
        self.tokens.len()
    }
}

type St = Arc<Mutex<Org>>;

fn message(status: StatusCode, m: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"ID": -1, "ErrorCode": status.as_u16(), "ErrorMessage": m, "Message": m}),
        ),
    )
        .into_response()
}

/// The token, the content type and the method's rate limit.
fn admit(s: &mut Org, h: &HeaderMap, method: &'static str, has_body: bool) -> Option<Response> {
    let now = Instant::now();
    let ok = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| s.tokens.iter().any(|(k, until)| k == t && now < *until));
    if !ok {
        return Some(message(
            StatusCode::UNAUTHORIZED,
            "Authorization has been denied for this request.",
        ));
    }
    if has_body
        && !h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    {
        return Some(message(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Only application/json is supported.",
        ));
    }
    if s.reset_at
        .get(method)
        .is_some_and(|t| now + Duration::from_millis(20) < *t)
    {
        s.early += 1;
    }
    let limit = if method == "create" {
        s.per_period / 2
    } else {
        s.per_period
    }
    .max(1);
    let period = s.period;
    let (start, n) = s.used.entry(method).or_insert((now, 0));
    if now.duration_since(*start) >= period {
        *start = now;
        *n = 0;
    }
    if *n >= limit {
        let end = *start + period;
        let wall = chrono::Utc::now() + chrono::Duration::from_std(end - now).unwrap_or_default();
        // RFC 1123 has whole seconds: the next one.
        let wall = wall + chrono::Duration::seconds(1);
        let reset = wall.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        s.reset_at.insert(method, end);
        s.throttled += 1;
        let mut r = message(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.");
        r.headers_mut()
            .insert("x-ratelimit-reset", reset.parse().expect("header"));
        r.headers_mut().insert(
            "x-ratelimit-limit",
            limit.to_string().parse().expect("header"),
        );
        r.headers_mut()
            .insert("x-ratelimit-remaining", "0".parse().expect("header"));
        return Some(r);
    }
    *n += 1;
    None
}

fn app_ok(app: u32) -> Option<Response> {
    (app != APP_ID).then(|| message(StatusCode::NOT_FOUND, "No such application."))
}

fn check_ticket(t: &Value, q: &HashMap<String, String>) -> Result<(), String> {
    let known = |list: Value, id: &Value| {
        list.as_array()
            .is_some_and(|a| a.iter().any(|x| x["ID"] == *id))
    };
    if !known(types(), &t["TypeID"]) {
        return Err("TypeID: not a ticket type of this application".into());
    }
    match t["Title"].as_str() {
        Some(x) if !x.trim().is_empty() && x.chars().count() <= 300 => {}
        _ => return Err("Title: required, at most 300 characters".into()),
    }
    if t["AccountID"] != ACCOUNT_ID {
        return Err("AccountID: not an account of this organization".into());
    }
    if t["StatusID"].as_i64().and_then(class_of) != Some(1) {
        return Err("StatusID: a status of the class New is required on creation".into());
    }
    if !known(priorities(), &t["PriorityID"]) {
        return Err("PriorityID: not a priority of this organization".into());
    }
    let creation = q.get("AllowRequestorCreation").map(String::as_str) == Some("true");
    let by_uid = t["RequestorUid"] == REQUESTOR_UID;
    let by_email = creation
        && t["RequestorEmail"]
            .as_str()
            .is_some_and(|e| e.contains('@'));
    if !by_uid && !by_email {
        return Err("RequestorUid: a valid requestor is required".into());
    }
    Ok(())
}

/// The organization's routes (rooted as `TDWebApi` is) and its state.
pub fn router() -> (axum::Router, St) {
    let state: St = Arc::new(Mutex::new(Org::default()));
    let app = axum::Router::new()
        .route(
            "/api/auth/loginadmin",
            post(|State(st): State<St>, body: String| async move {
                let mut s = st.lock().expect("tdx");
                s.calls.push("login".into());
                let b: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if b["BEID"] != BEID || b["WebServicesKey"] != WEB_SERVICES_KEY {
                    return message(
                        StatusCode::UNAUTHORIZED,
                        "Invalid BEID or web services key.",
                    );
                }
                let token = format!(
                    "eyJhbGciOiJIUzI1NiJ9.eyJsb2dpbiI6{}.c2ln",
                    s.tokens.len() + 1
                );
                let until = Instant::now() + s.token_life;
                s.tokens.push((token.clone(), until));
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], token).into_response()
            }),
        )
        .route(
            "/api/{app}/tickets/{what}",
            get(
                |State(st): State<St>,
                 h: HeaderMap,
                 UrlPath((app, what)): UrlPath<(u32, String)>| async move {
                    let mut s = st.lock().expect("tdx");
                    let (list, method) = match what.as_str() {
                        "types" => (types(), "types"),
                        "statuses" => (statuses(), "statuses"),
                        "priorities" => (priorities(), "priorities"),
                        _ => return message(StatusCode::NOT_FOUND, "not found"),
                    };
                    if let Some(r) = admit(&mut s, &h, method, false).or_else(|| app_ok(app)) {
                        return r;
                    }
                    s.calls.push(method.into());
                    axum::Json(list).into_response()
                },
            )
            .post(
                |State(st): State<St>,
                 h: HeaderMap,
                 UrlPath((app, what)): UrlPath<(u32, String)>,
                 body: String| async move {
                    let mut s = st.lock().expect("tdx");
                    if what != "search" {
                        return message(StatusCode::NOT_FOUND, "not found");
                    }
                    if let Some(r) = admit(&mut s, &h, "search", true).or_else(|| app_ok(app)) {
                        return r;
                    }
                    s.calls.push("search".into());
                    let q: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let text = q["SearchText"].as_str().unwrap_or_default().to_string();
                    let classes: Vec<u64> = q["StatusClassIDs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64)
                        .collect();
                    let max = q["MaxResults"].as_u64().unwrap_or(50) as usize;
                    let found: Vec<Value> = s
                        .tickets
                        .iter()
                        .filter(|t| {
                            text.is_empty()
                                || t["Title"].as_str().is_some_and(|x| x.contains(&text))
                                || t["Description"].as_str().is_some_and(|x| x.contains(&text))
                        })
                        .filter(|t| {
                            classes.is_empty()
                                || t["StatusClass"]
                                    .as_u64()
                                    .is_some_and(|c| classes.contains(&c))
                        })
                        .take(max)
                        .cloned()
                        .collect();
                    axum::Json(Value::Array(found)).into_response()
                },
            )
            .patch(
                |State(st): State<St>,
                 h: HeaderMap,
                 UrlPath((app, what)): UrlPath<(u32, String)>,
                 body: String| async move {
                    let mut s = st.lock().expect("tdx");
                    let Ok(id) = what.parse::<i64>() else {
                        return message(StatusCode::NOT_FOUND, "No such ticket.");
                    };
                    if let Some(r) = admit(&mut s, &h, "patch", true).or_else(|| app_ok(app)) {
                        return r;
                    }
                    s.calls.push(format!("patch {id}"));
                    let ops: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let Some(ops) = ops.as_array() else {
                        return message(
                            StatusCode::BAD_REQUEST,
                            "a JSON Patch document (an array of operations) is required",
                        );
                    };
                    let Some(i) = s.tickets.iter().position(|t| t["ID"] == id) else {
                        return message(StatusCode::NOT_FOUND, "No such ticket.");
                    };
                    for op in ops {
                        if op["op"] != "replace" || op["path"] != "/PriorityID" {
                            return message(
                                StatusCode::BAD_REQUEST,
                                "only replace of /PriorityID is supported here",
                            );
                        }
                        if !priorities()
                            .as_array()
                            .is_some_and(|a| a.iter().any(|p| p["ID"] == op["value"]))
                        {
                            return message(
                                StatusCode::BAD_REQUEST,
                                "PriorityID: not a priority of this organization",
                            );
                        }
                        s.tickets[i]["PriorityID"] = op["value"].clone();
                    }
                    axum::Json(s.tickets[i].clone()).into_response()
                },
            ),
        )
        .route(
            "/api/{app}/tickets",
            post(
                |State(st): State<St>,
                 h: HeaderMap,
                 UrlPath(app): UrlPath<u32>,
                 Query(q): Query<HashMap<String, String>>,
                 body: String| async move {
                    let mut s = st.lock().expect("tdx");
                    if let Some(r) = admit(&mut s, &h, "create", true).or_else(|| app_ok(app)) {
                        return r;
                    }
                    s.calls.push("create".into());
                    let mut t: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    if let Err(m) = check_ticket(&t, &q) {
                        return message(StatusCode::BAD_REQUEST, &m);
                    }
                    s.next_id += 1;
                    t["ID"] = json!(s.next_id);
                    t["StatusClass"] = json!(1);
                    t["AppID"] = json!(APP_ID);
                    s.tickets.push(t.clone());
                    if std::mem::take(&mut s.lose_next_create) {
                        return message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
                    }
                    (StatusCode::CREATED, axum::Json(t)).into_response()
                },
            ),
        )
        .route(
            "/api/{app}/tickets/{id}/feed",
            post(
                |State(st): State<St>,
                 h: HeaderMap,
                 UrlPath((app, id)): UrlPath<(u32, i64)>,
                 body: String| async move {
                    let mut s = st.lock().expect("tdx");
                    if let Some(r) = admit(&mut s, &h, "feed", true).or_else(|| app_ok(app)) {
                        return r;
                    }
                    s.calls.push(format!("feed {id}"));
                    let b: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let Some(comments) = b["Comments"].as_str().filter(|c| !c.trim().is_empty())
                    else {
                        return message(StatusCode::BAD_REQUEST, "Comments: required");
                    };
                    let status = b["NewStatusID"].as_i64().filter(|s| *s != 0);
                    let class = match status {
                        Some(st) => match class_of(st) {
                            Some(c) => Some(c),
                            None => {
                                return message(
                                    StatusCode::BAD_REQUEST,
                                    "NewStatusID: not a status of this application",
                                );
                            }
                        },
                        None => None,
                    };
                    let private = b["IsPrivate"].as_bool().unwrap_or(false);
                    let Some(t) = s.tickets.iter_mut().find(|t| t["ID"] == id) else {
                        return message(StatusCode::NOT_FOUND, "No such ticket.");
                    };
                    if let (Some(st), Some(c)) = (status, class) {
                        t["StatusID"] = json!(st);
                        t["StatusClass"] = json!(c);
                    }
                    s.feed.push((id, comments.to_string(), private, status));
                    axum::Json(json!({"ID": s.feed.len(), "Body": comments, "IsPrivate": private}))
                        .into_response()
                },
            ),
        )
        .with_state(state.clone());
    (app, state)
}

/// The fake on 127.0.0.1 over plain HTTP: its base URL and its state.
pub async fn start() -> (String, St) {
    let (app, state) = router();
    let url = super::serve(app, "teamdynamix fake").await;
    (url, state)
}
