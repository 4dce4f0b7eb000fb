//! A ManageEngine ServiceDesk Plus instance's API v3 as incidentd uses it
//! (requests, notes, list search), and the Zoho Accounts token endpoint of
//! its Cloud edition, keeping to the documented contract rather than to
//! what incidentd happens to send
//! (https://www.manageengine.com/products/service-desk/sdpod-v3-api/,
//! "Getting started" (authentication, `input_data`, the v3 media type,
//! `response_status`), "Request" (add, edit, view list with `list_info`),
//! "Request Note"; Zoho's OAuth guide,
//! https://www.zoho.com/accounts/protocol/oauth/self-client/overview.html,
//! for refreshing an access token):
//!
//! - Calls carry `authtoken: <technician key>` (on-premises) or
//!   `Authorization: Zoho-oauthtoken <access token>` (Cloud; tokens last an
//!   hour, shortened here); otherwise 401 with status code 4002.
//! - `Accept: application/vnd.manageengine.sdp.v3+json` is required.
//! - Bodies are the form field `input_data` holding JSON; a list's
//!   `list_info` rides in the query's `input_data`. A plain JSON body is
//!   refused (4000, `input_data` missing).
//! - Lookups (priority, urgency, impact, status, group, request type,
//!   mode) are objects naming one of the instance's values; another is
//!   4000 with a message 4001 naming the field. `subject` is required, at
//!   most 250 characters. Resolving needs `resolution.content` (the
//!   instance's "resolution mandatory" rule); putting on hold a
//!   `status_change_comments`.
//! - Lists: `search_criteria` with `is`/`contains` on `subject`, `id` and
//!   `status.name`, `row_count` at most 100; answers carry `list_info`.
//! - The v1 API (`/sdpapi/`) is retired.
//! - Zoho answers a bad refresh token with HTTP 200 and
//!   `{"error": "invalid_code"}`.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TECHNICIAN_KEY: &str = "8F3E-SDP-TECH-KEY";
pub const CLIENT_ID: &str = "1000.SELFCLIENT";
pub const CLIENT_SECRET: &str = "zoho-client-secret";
pub const REFRESH_TOKEN: &str = "1000.refresh.token";
const ACCEPT: &str = "application/vnd.manageengine.sdp.v3+json";

const LOOKUPS: [(&str, &[&str]); 7] = [
    ("priority", &["Low", "Normal", "Medium", "High"]),
    ("urgency", &["Low", "Normal", "High", "Urgent"]),
    (
        "impact",
        &[
            "Affects User",
            "Affects Group",
            "Affects Department",
            "Affects Business",
        ],
    ),
    (
        "status",
        &[
            "Open",
            "In Progress",
            "On Hold",
            "Resolved",
            "Closed",
            "Canceled",
        ],
    ),
    ("group", &["Network", "Database"]),
    ("request_type", &["Incident", "Service Request"]),
    ("mode", &["Web Form", "E-Mail", "Phone Call"]),
];

/// The instance: requests, notes, calls, issued tokens and faults.
pub struct Instance {
    pub requests: Vec<Value>,
    /// (request id, description, shown to the requester)
    pub notes: Vec<(String, String, bool)>,
    /// `create`, `search`, `update <id> <status>`, `note <id>`, `token`.
    pub calls: Vec<String>,
    pub lose_next_create: bool,
    /// How long an access token lasts.
    pub token_life: Duration,
    tokens: Vec<(String, Instant)>,
    /// Calls refused for a missing or expired token.
    pub unauthorized: u32,
    next_id: u64,
}

impl Default for Instance {
    fn default() -> Instance {
        Instance {
            requests: Vec::new(),
            notes: Vec::new(),
            calls: Vec::new(),
            lose_next_create: false,
            token_life: Duration::from_secs(3600),
            tokens: Vec::new(),
            unauthorized: 0,
            next_id: 1800,
        }
    }
}

impl Instance {
    pub fn notes_of(&self, id: &str) -> Vec<String> {
        self.notes
            .iter()
            .filter(|(r, _, _)| r == id)
            .map(|(_, d, _)| d.clone())
            .collect()
    }

    pub fn tokens_issued(&self) -> usize {
        self.tokens.len()
    }
}

type St = Arc<Mutex<Instance>>;

fn failed(status: StatusCode, code: u64, field: Option<&str>, message: &str) -> Response {
    let mut m = json!({"status_code": code, "type": "failed", "message": message});
    if let Some(f) = field {
        m["field"] = json!(f);
    }
    (
        status,
        axum::Json(
            json!({"response_status": {"status_code": 4000, "messages": [m], "status": "failed"}}),
        ),
    )
        .into_response()
}

fn success() -> Value {
    json!({"status_code": 2000, "status": "success"})
}

fn admit(s: &mut Instance, h: &HeaderMap) -> Option<Response> {
    let by_key = h.get("authtoken").and_then(|v| v.to_str().ok()) == Some(TECHNICIAN_KEY);
    let now = Instant::now();
    let by_token = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Zoho-oauthtoken "))
        .is_some_and(|t| s.tokens.iter().any(|(k, until)| k == t && now < *until));
    if !by_key && !by_token {
        s.unauthorized += 1;
        return Some(failed(StatusCode::UNAUTHORIZED, 4002, None, "UNAUTHORISED"));
    }
    if h.get(header::ACCEPT).and_then(|v| v.to_str().ok()) != Some(ACCEPT) {
        return Some(failed(
            StatusCode::BAD_REQUEST,
            4000,
            None,
            "Accept header must be application/vnd.manageengine.sdp.v3+json",
        ));
    }
    None
}

/// The JSON of a form body's `input_data`.
fn input_data(h: &HeaderMap, body: &str) -> Result<Value, Box<Response>> {
    let form = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let data = form
        .then(|| {
            form_urlencoded::parse(body.as_bytes())
                .find(|(k, _)| k == "input_data")
                .map(|(_, v)| v.into_owned())
        })
        .flatten();
    let Some(data) = data else {
        return Err(Box::new(failed(
            StatusCode::BAD_REQUEST,
            4012,
            Some("input_data"),
            "input_data is missing",
        )));
    };
    serde_json::from_str(&data).map_err(|_| {
        Box::new(failed(
            StatusCode::BAD_REQUEST,
            4005,
            Some("input_data"),
            "input_data is not valid JSON",
        ))
    })
}

/// The request fields against the instance's values; the first problem.
fn check(r: &Value, creating: bool) -> Result<(), Box<Response>> {
    let Some(m) = r.as_object() else {
        return Err(Box::new(failed(
            StatusCode::BAD_REQUEST,
            4012,
            Some("request"),
            "request is missing",
        )));
    };
    if creating || m.contains_key("subject") {
        match r["subject"].as_str() {
            Some(s) if !s.trim().is_empty() && s.chars().count() <= 250 => {}
            Some(_) => {
                return Err(Box::new(failed(
                    StatusCode::BAD_REQUEST,
                    4001,
                    Some("subject"),
                    "value exceeds 250 characters or is empty",
                )));
            }
            None => {
                return Err(Box::new(failed(
                    StatusCode::BAD_REQUEST,
                    4012,
                    Some("subject"),
                    "mandatory field is missing",
                )));
            }
        }
    }
    for (field, values) in LOOKUPS {
        if let Some(v) = m.get(field) {
            let name = v["name"].as_str();
            if !name.is_some_and(|n| values.contains(&n)) {
                return Err(Box::new(failed(
                    StatusCode::BAD_REQUEST,
                    4001,
                    Some(field),
                    &format!("{v} is not a {field} of this instance"),
                )));
            }
        }
    }
    if let Some(u) = m.get("udf_fields")
        && !u
            .as_object()
            .is_some_and(|u| u.keys().all(|k| k == "udf_sline_1"))
    {
        return Err(Box::new(failed(
            StatusCode::BAD_REQUEST,
            4001,
            Some("udf_fields"),
            "unknown user-defined field",
        )));
    }
    let status = r["status"]["name"].as_str();
    if status == Some("Resolved")
        && r["resolution"]["content"]
            .as_str()
            .is_none_or(|c| c.trim().is_empty())
    {
        return Err(Box::new(failed(
            StatusCode::BAD_REQUEST,
            4012,
            Some("resolution"),
            "Resolution is mandatory to resolve the request",
        )));
    }
    if status == Some("On Hold")
        && r["status_change_comments"]
            .as_str()
            .is_none_or(|c| c.trim().is_empty())
    {
        return Err(Box::new(failed(
            StatusCode::BAD_REQUEST,
            4012,
            Some("status_change_comments"),
            "a comment is required to put a request on hold",
        )));
    }
    Ok(())
}

fn field_of<'a>(r: &'a Value, field: &str) -> Option<&'a str> {
    match field {
        "status.name" => r["status"]["name"].as_str(),
        f => r[f].as_str(),
    }
}

fn criterion(c: &Value, r: &Value) -> Result<bool, String> {
    let field = c["field"].as_str().ok_or("field")?;
    if !["subject", "id", "status.name"].contains(&field) {
        return Err(format!("{field} cannot be searched"));
    }
    let got = field_of(r, field).unwrap_or_default();
    let values: Vec<&str> = match (&c["value"], &c["values"]) {
        (Value::String(v), _) => vec![v.as_str()],
        (_, Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err("value or values".into()),
    };
    Ok(match c["condition"].as_str() {
        Some("is") => values.contains(&got),
        Some("contains") => values.iter().any(|v| got.contains(v)),
        other => return Err(format!("condition {other:?}")),
    })
}

/// The instance's routes (Zoho Accounts' token endpoint among them) and
/// its state.
pub fn router() -> (axum::Router, St) {
    let state: St = Arc::new(Mutex::new(Instance::default()));
    let app = axum::Router::new()
        .route(
            "/oauth/v2/token",
            post(|State(st): State<St>, body: String| async move {
                let mut s = st.lock().expect("sdp");
                s.calls.push("token".into());
                let f: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                let ok = f.get("grant_type").map(String::as_str) == Some("refresh_token")
                    && f.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                    && f.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
                    && f.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN);
                if !ok {
                    return axum::Json(json!({"error": "invalid_code"})).into_response();
                }
                let token = format!("1000.access.{}", s.tokens.len() + 1);
                let until = Instant::now() + s.token_life;
                s.tokens.push((token.clone(), until));
                let life = s.token_life.as_secs().max(1);
                axum::Json(json!({"access_token": token, "expires_in": life, "api_domain": "https://www.zohoapis.com", "token_type": "Bearer"}))
                    .into_response()
            }),
        )
        .route(
            "/api/v3/requests",
            post(|State(st): State<St>, h: HeaderMap, body: String| async move {
                let mut s = st.lock().expect("sdp");
                if let Some(r) = admit(&mut s, &h) {
                    return r;
                }
                s.calls.push("create".into());
                let data = match input_data(&h, &body) {
                    Ok(d) => d,
                    Err(r) => return *r,
                };
                let mut r = data["request"].clone();
                if let Err(e) = check(&r, true) {
                    return *e;
                }
                s.next_id += 1;
                r["id"] = json!(s.next_id.to_string());
                if r["status"].is_null() {
                    r["status"] = json!({"name": "Open"});
                }
                s.requests.push(r.clone());
                if std::mem::take(&mut s.lose_next_create) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
                }
                (StatusCode::CREATED, axum::Json(json!({"request": r, "response_status": success()}))).into_response()
            })
            .get(|State(st): State<St>, h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                let mut s = st.lock().expect("sdp");
                if let Some(r) = admit(&mut s, &h) {
                    return r;
                }
                s.calls.push("search".into());
                let data: Value = q.get("input_data").and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null);
                let li = &data["list_info"];
                let rows = li["row_count"].as_u64().unwrap_or(10);
                if rows > 100 {
                    return failed(StatusCode::BAD_REQUEST, 4001, Some("row_count"), "row_count is at most 100");
                }
                let criteria = li["search_criteria"].as_array().cloned().unwrap_or_default();
                let mut found = Vec::new();
                for r in &s.requests {
                    let mut keep: Option<bool> = None;
                    for c in &criteria {
                        let m = match criterion(c, r) {
                            Ok(m) => m,
                            Err(e) => return failed(StatusCode::BAD_REQUEST, 4001, Some("search_criteria"), &e),
                        };
                        keep = Some(match (keep, c["logical_operator"].as_str()) {
                            (None, _) => m,
                            (Some(k), Some("or")) => k || m,
                            (Some(k), _) => k && m,
                        });
                    }
                    if keep.unwrap_or(true) {
                        found.push(r.clone());
                    }
                }
                let more = found.len() as u64 > rows;
                found.truncate(rows as usize);
                axum::Json(json!({"requests": found, "list_info": {"has_more_rows": more, "row_count": rows}, "response_status": [success()]}))
                    .into_response()
            }),
        )
        .route(
            "/api/v3/requests/{id}",
            axum::routing::put(|State(st): State<St>, h: HeaderMap, UrlPath(id): UrlPath<String>, body: String| async move {
                let mut s = st.lock().expect("sdp");
                if let Some(r) = admit(&mut s, &h) {
                    return r;
                }
                let data = match input_data(&h, &body) {
                    Ok(d) => d,
                    Err(r) => return *r,
                };
                let changes = data["request"].clone();
                s.calls.push(format!("update {id} {}", changes["status"]["name"].as_str().unwrap_or("-")));
                if let Err(e) = check(&changes, false) {
                    return *e;
                }
                let Some(r) = s.requests.iter_mut().find(|r| r["id"] == id.as_str()) else {
                    return failed(StatusCode::NOT_FOUND, 4007, Some("id"), "no such request");
                };
                for (k, v) in changes.as_object().into_iter().flatten() {
                    r[k.as_str()] = v.clone();
                }
                axum::Json(json!({"request": r.clone(), "response_status": success()})).into_response()
            }),
        )
        .route(
            "/api/v3/requests/{id}/notes",
            post(|State(st): State<St>, h: HeaderMap, UrlPath(id): UrlPath<String>, body: String| async move {
                let mut s = st.lock().expect("sdp");
                if let Some(r) = admit(&mut s, &h) {
                    return r;
                }
                s.calls.push(format!("note {id}"));
                let data = match input_data(&h, &body) {
                    Ok(d) => d,
                    Err(r) => return *r,
                };
                let Some(text) = data["note"]["description"].as_str().filter(|d| !d.is_empty()) else {
                    return failed(StatusCode::BAD_REQUEST, 4012, Some("description"), "mandatory field is missing");
                };
                if !s.requests.iter().any(|r| r["id"] == id.as_str()) {
                    return failed(StatusCode::NOT_FOUND, 4007, Some("id"), "no such request");
                }
                let shown = data["note"]["show_to_requester"].as_bool().unwrap_or(true);
                s.notes.push((id.clone(), text.to_string(), shown));
                (StatusCode::CREATED, axum::Json(json!({"note": {"description": text}, "response_status": success()}))).into_response()
            }),
        )
        .route(
            "/sdpapi/{*rest}",
            get(|| async { failed(StatusCode::NOT_FOUND, 4000, None, "the v1 API (/sdpapi/) is retired: use /api/v3/") })
                .post(|| async { failed(StatusCode::NOT_FOUND, 4000, None, "the v1 API (/sdpapi/) is retired: use /api/v3/") }),
        )
        .with_state(state.clone());
    (app, state)
}

/// The fake on 127.0.0.1 over plain HTTP: its base URL and its state.
pub async fn start() -> (String, St) {
    let (app, state) = router();
    let url = super::serve(app, "servicedeskplus fake").await;
    (url, state)
}
