//! A StackStorm API (st2api, `https://<host>/api`) as a remediation
//! destination uses it, keeping to the documented contract (the StackStorm
//! API reference, https://api.stackstorm.com/, "Executions": create, get,
//! list, cancel; https://docs.stackstorm.com/authentication.html for API
//! keys; the execution statuses of https://docs.stackstorm.com/reference/
//! action_executions.html):
//!
//! - Every call needs `St2-Api-Key: <key>` (or an auth token); without it
//!   401 `{"faultstring": "Unauthorized - One of Token or API key
//!   required."}`. JSON bodies need `Content-Type: application/json`.
//! - `POST /v1/executions` `{"action": "<pack>.<action>", "parameters":
//!   {…}}`: an unknown action is 400 (`faultstring`); parameters are
//!   checked against the action's schema (a required one missing, an
//!   unknown one: 400). Accepted: 201 with the execution (`id`, 24 hex
//!   digits; `status` `requested`; `action.ref`; `parameters`;
//!   `start_timestamp`).
//! - `GET /v1/executions/{id}`: the execution as it stands: `requested`,
//!   `scheduled`, `running`, then one of `succeeded`, `failed`, `timeout`,
//!   `canceled`, `abandoned` with `end_timestamp` and `result`; an unknown
//!   id is 404.
//! - `GET /v1/executions?action=<ref>&limit=<n>`: newest first, `limit` at
//!   most 100 (more is 400).
//! - `DELETE /v1/executions/{id}` cancels a running execution (`canceling`,
//!   then `canceled`); one already finished is 400.
//!
//! Each known action's behaviour is scripted: how long it runs and how it
//! ends.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "st2-api-key-0c1d";

/// How a scripted action ends.
#[derive(Debug, Clone)]
pub enum Ends {
    /// Succeeds after running this long, with this result.
    Succeeds(Duration, Value),
    /// Fails after running this long, with this result.
    Fails(Duration, Value),
    /// Never finishes (until cancelled).
    Hangs,
}

/// A known action: its parameters (name, required) and how it ends.
#[derive(Debug, Clone)]
pub struct Action {
    pub parameters: Vec<(&'static str, bool)>,
    pub ends: Ends,
}

struct Execution {
    id: String,
    action: String,
    parameters: Value,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    cancelled: Option<chrono::DateTime<chrono::Utc>>,
}

/// The StackStorm: its actions, the executions asked for, and the calls.
#[derive(Default)]
pub struct St2 {
    pub actions: HashMap<String, Action>,
    executions: Vec<Execution>,
    /// `run <action> <parameters>`, `get <id>`, `list`, `cancel <id>`.
    pub calls: Vec<String>,
    /// Start the next execution but answer 503 (the answer lost).
    pub lose_next_run: bool,
}

impl St2 {
    /// The executions of `action` asked for, oldest first (their
    /// parameters).
    pub fn runs_of(&self, action: &str) -> Vec<Value> {
        self.executions
            .iter()
            .filter(|e| e.action == action)
            .map(|e| e.parameters.clone())
            .collect()
    }

    pub fn cancelled(&self) -> usize {
        self.executions
            .iter()
            .filter(|e| e.cancelled.is_some())
            .count()
    }

    /// An execution as the API shows it now.
    fn view(&self, e: &Execution) -> Value {
        let ts = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let mut v = json!({
            "id": e.id,
            "action": {"ref": e.action},
            "parameters": e.parameters,
            "start_timestamp": ts(e.started_at),
            "status": "running",
        });
        if let Some(at) = e.cancelled {
            v["status"] = json!("canceled");
            v["end_timestamp"] = json!(ts(at));
            return v;
        }
        let ran = e.started.elapsed();
        if ran < Duration::from_millis(100) {
            v["status"] = json!("requested");
            return v;
        }
        let (after, status, result) = match &self.actions[&e.action].ends {
            Ends::Succeeds(d, r) => (*d, "succeeded", r.clone()),
            Ends::Fails(d, r) => (*d, "failed", r.clone()),
            Ends::Hangs => return v,
        };
        if ran >= after {
            v["status"] = json!(status);
            v["result"] = result;
            v["end_timestamp"] = json!(ts(
                e.started_at + chrono::Duration::from_std(after).unwrap_or_default()
            ));
        }
        v
    }
}

type St = Arc<Mutex<St2>>;

fn fault(status: StatusCode, m: &str) -> Response {
    (status, axum::Json(json!({"faultstring": m}))).into_response()
}

fn admit(h: &HeaderMap) -> Option<Response> {
    (h.get("st2-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY)).then(|| {
        fault(
            StatusCode::UNAUTHORIZED,
            "Unauthorized - One of Token or API key required.",
        )
    })
}

/// A StackStorm with `actions`: its routes (under `/api`) and its state.
pub fn router(actions: HashMap<String, Action>) -> (axum::Router, St) {
    let state: St = Arc::new(Mutex::new(St2 {
        actions,
        ..St2::default()
    }));
    let app = axum::Router::new()
        .route(
            "/api/v1/executions",
            get(|State(st): State<St>, h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                if let Some(r) = admit(&h) {
                    return r;
                }
                let mut s = st.lock().expect("st2");
                s.calls.push("list".into());
                let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50);
                if limit > 100 {
                    return fault(StatusCode::BAD_REQUEST, "Limit \"101\" specified, maximum value is \"100\"");
                }
                let want = q.get("action");
                let list: Vec<Value> = s
                    .executions
                    .iter()
                    .rev()
                    .filter(|e| want.is_none_or(|a| *a == e.action))
                    .take(limit)
                    .map(|e| s.view(e))
                    .collect();
                axum::Json(Value::Array(list)).into_response()
            })
            .post(|State(st): State<St>, h: HeaderMap, body: String| async move {
                if let Some(r) = admit(&h) {
                    return r;
                }
                if !h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json")) {
                    return fault(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Content-Type");
                }
                let mut s = st.lock().expect("st2");
                let b: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let Some(action) = b["action"].as_str().map(str::to_string) else {
                    return fault(StatusCode::BAD_REQUEST, "'action' is a required property");
                };
                let params = if b["parameters"].is_null() { json!({}) } else { b["parameters"].clone() };
                s.calls.push(format!("run {action} {params}"));
                let Some(known) = s.actions.get(&action).cloned() else {
                    return fault(StatusCode::BAD_REQUEST, &format!("Action \"{action}\" cannot be found."));
                };
                let Some(given) = params.as_object() else {
                    return fault(StatusCode::BAD_REQUEST, "parameters: must be an object");
                };
                for k in given.keys() {
                    if !known.parameters.iter().any(|(p, _)| p == k) {
                        return fault(StatusCode::BAD_REQUEST, &format!("Additional properties are not allowed ('{k}' was unexpected)"));
                    }
                }
                for (p, required) in &known.parameters {
                    if *required && !given.contains_key(*p) {
                        return fault(StatusCode::BAD_REQUEST, &format!("'{p}' is a required property"));
                    }
                }
                let id = format!("{:024x}", 0x6750_0000_0000_u64 + s.executions.len() as u64);
                let e = Execution {
                    id,
                    action,
                    parameters: params,
                    started: Instant::now(),
                    started_at: chrono::Utc::now(),
                    cancelled: None,
                };
                let view = s.view(&e);
                s.executions.push(e);
                if std::mem::take(&mut s.lose_next_run) {
                    return fault(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
                }
                (StatusCode::CREATED, axum::Json(view)).into_response()
            }),
        )
        .route(
            "/api/v1/executions/{id}",
            get(|State(st): State<St>, h: HeaderMap, UrlPath(id): UrlPath<String>| async move {
                if let Some(r) = admit(&h) {
                    return r;
                }
                let mut s = st.lock().expect("st2");
                s.calls.push(format!("get {id}"));
                match s.executions.iter().find(|e| e.id == id) {
                    Some(e) => axum::Json(s.view(e)).into_response(),
                    None => fault(StatusCode::NOT_FOUND, &format!("Resource with a id \"{id}\" not found")),
                }
            })
            .delete(|State(st): State<St>, h: HeaderMap, UrlPath(id): UrlPath<String>| async move {
                if let Some(r) = admit(&h) {
                    return r;
                }
                let mut s = st.lock().expect("st2");
                s.calls.push(format!("cancel {id}"));
                let Some(i) = s.executions.iter().position(|e| e.id == id) else {
                    return fault(StatusCode::NOT_FOUND, &format!("Resource with a id \"{id}\" not found"));
                };
                let status = s.view(&s.executions[i])["status"].as_str().unwrap_or_default().to_string();
                if !["requested", "scheduled", "running"].contains(&status.as_str()) {
                    return fault(StatusCode::BAD_REQUEST, &format!("Action cannot be canceled. State = {status}."));
                }
                s.executions[i].cancelled = Some(chrono::Utc::now());
                let v = s.view(&s.executions[i]);
                axum::Json(v).into_response()
            }),
        )
        .with_state(state.clone());
    (app, state)
}

/// The fake on 127.0.0.1 over plain HTTP: its base URL and its state.
pub async fn start(actions: HashMap<String, Action>) -> (String, St) {
    let (app, state) = router(actions);
    let url = super::serve(app, "stackstorm fake").await;
    (format!("{url}/api"), state)
}
