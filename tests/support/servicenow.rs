//! A ServiceNow instance's Table API as incidentd uses it (`incident`, and
//! the tables its reference fields point at), keeping to what a real
//! instance does rather than to what incidentd happens to send:
//!
//! - Table API (https://developer.servicenow.com/dev.do#!/reference/api/latest/rest/c_TableAPI):
//!   `GET /api/now/table/{table}` with an encoded `sysparm_query` (terms
//!   joined by `^`, `^OR` alternatives, `fieldINa,b`, `ORDERBYDESCfield`; a
//!   literal `^` written `^^`), `sysparm_fields`, `sysparm_limit`; `GET`,
//!   `PATCH …/{sys_id}`; `POST` creates; every value answered as a string;
//!   401 without valid basic auth.
//! - Reference fields hold a `sys_id`. A name written there without
//!   `sysparm_input_display_value=true` is stored as given: a broken
//!   reference the form shows as empty (the ticket unassigned). Such
//!   writes are listed in `violations` (KB0534905, "Table API FAQs":
//!   only with that flag is a display name turned into its `sys_id`).
//! - Data policies: the instance's `mandatory` fields missing on a create
//!   are a 403 "Data Policy Exception" naming them; a resolution (state 6)
//!   needs `close_code` (one of the form's choices) and `close_notes`
//!   (the incident form's resolution policy); On Hold needs `hold_reason`.
//! - Choice fields take their actual values only (state 1,2,3,6,7,8;
//!   impact and urgency 1–3; hold_reason 1,3,4,5): another value is a
//!   violation (the form would show a value that is no choice).
//! - Closed and Canceled incidents are read-only for the `itil` role: a
//!   `PATCH` is a 403 ACL exception.
//! - String fields have a maximum length (short_description 160,
//!   description 4000); a longer value is cut silently by the instance,
//!   so the fake lists it in `violations`.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The reference fields of `incident` and the tables they refer to.
pub const REFERENCES: [(&str, &str); 11] = [
    ("assignment_group", "sys_user_group"),
    ("assigned_to", "sys_user"),
    ("caller_id", "sys_user"),
    ("opened_by", "sys_user"),
    ("cmdb_ci", "cmdb_ci"),
    ("business_service", "cmdb_ci_service"),
    ("service_offering", "service_offering"),
    ("location", "cmn_location"),
    ("company", "core_company"),
    ("problem_id", "problem"),
    ("rfc", "change_request"),
];

const CHOICES: [(&str, &[&str]); 4] = [
    ("state", &["1", "2", "3", "6", "7", "8"]),
    ("impact", &["1", "2", "3"]),
    ("urgency", &["1", "2", "3"]),
    ("hold_reason", &["1", "3", "4", "5"]),
];

/// The resolution codes of a current instance's incident form.
pub const CLOSE_CODES: [&str; 6] = [
    "Duplicate",
    "Known error",
    "No resolution provided",
    "Resolved by caller",
    "Resolved by change",
    "Solution provided",
];

const MAX_LEN: [(&str, usize); 2] = [("short_description", 160), ("description", 4000)];

/// The labels data-policy errors name fields by.
fn label(field: &str) -> &str {
    match field {
        "caller_id" => "Caller",
        "category" => "Category",
        "business_service" => "Service",
        "assignment_group" => "Assignment group",
        "close_code" => "Resolution code",
        "close_notes" => "Resolution notes",
        "hold_reason" => "On hold reason",
        other => other,
    }
}

/// The instance: its incidents, the records references may name, what
/// was called, and every write a real instance would have stored broken
/// or cut.
#[derive(Default)]
pub struct Instance {
    pub records: Vec<Value>,
    /// Other tables: name → records (`sys_id`, `name`, `user_name`, …).
    pub tables: HashMap<String, Vec<Value>>,
    pub work_notes: Vec<String>,
    /// (method, table or sys_id / query)
    pub calls: Vec<(String, String)>,
    /// Create the next record but answer 503 (the answer lost).
    pub lose_next_create: bool,
    /// Fields a data policy requires on every new incident.
    pub mandatory: Vec<&'static str>,
    pub violations: Vec<String>,
    next_id: u64,
}

impl Instance {
    fn new_sys_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:032x}", 0x5e_0000_0000_u64 + self.next_id)
    }

    /// Add a record to `table` (a group, user, CI, service), by the field
    /// it is named by; its `sys_id`.
    pub fn add(&mut self, table: &str, fields: Value) -> String {
        let id = self.new_sys_id();
        let mut rec = fields;
        rec["sys_id"] = json!(id);
        self.tables.entry(table.to_string()).or_default().push(rec);
        id
    }

    /// The `sys_id` of the record of `table` named `name`.
    pub fn id_of(&self, table: &str, name: &str) -> Option<String> {
        self.tables.get(table)?.iter().find_map(|r| {
            let named = ["name", "user_name", "number"]
                .iter()
                .any(|k| r[*k].as_str() == Some(name));
            named.then(|| r["sys_id"].as_str().unwrap_or_default().to_string())
        })
    }

    /// The display value of reference `field` of `rec`: the name of the
    /// record its `sys_id` names, or `None` for a broken reference.
    pub fn display(&self, rec: &Value, field: &str) -> Option<String> {
        let table = REFERENCES.iter().find(|(f, _)| *f == field)?.1;
        let id = rec[field].as_str()?;
        self.tables.get(table)?.iter().find_map(|r| {
            (r["sys_id"].as_str() == Some(id)).then(|| {
                ["user_name", "name", "number"]
                    .iter()
                    .find_map(|k| r[*k].as_str())
                    .unwrap_or_default()
                    .to_string()
            })
        })
    }

    /// Check the written `fields` of `rec` as the instance would store
    /// them; the violations noted.
    fn check_writes(&mut self, fields: &Map<String, Value>) {
        for (k, v) in fields {
            let s = as_text(v);
            if let Some((_, table)) = REFERENCES.iter().find(|(f, _)| f == k)
                && !s.is_empty()
                && !self
                    .tables
                    .get(*table)
                    .is_some_and(|t| t.iter().any(|r| r["sys_id"].as_str() == Some(s.as_str())))
            {
                self.violations.push(format!(
                    "{k} = {s:?} is no sys_id of {table}: stored as a broken reference"
                ));
            }
            if let Some((_, allowed)) = CHOICES.iter().find(|(f, _)| f == k)
                && !allowed.contains(&s.as_str())
            {
                self.violations
                    .push(format!("{k} = {s:?} is not one of the choices {allowed:?}"));
            }
            if let Some((_, max)) = MAX_LEN.iter().find(|(f, _)| f == k)
                && s.chars().count() > *max
            {
                self.violations.push(format!(
                    "{k} is {} characters; the instance keeps {max}",
                    s.chars().count()
                ));
            }
        }
    }
}

/// A field's value as the instance stores it: text.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One term of an encoded query holds for `rec`.
fn term(rec: &Value, t: &str) -> bool {
    if let Some((field, list)) = t.split_once("IN")
        && !field.is_empty()
        && !field.contains('=')
    {
        let v = as_text(&rec[field]);
        return list.split(',').any(|x| x == v);
    }
    match t.split_once('=') {
        Some((field, want)) => as_text(&rec[field]) == want,
        None => false,
    }
}

/// The records of `records` an encoded query selects, in its order.
fn select(records: &[Value], query: &str) -> Vec<Value> {
    const ESC: char = '\u{1}';
    let q = query.replace("^^", &ESC.to_string());
    let mut desc = false;
    // Conjunction of disjunctions.
    let mut all: Vec<Vec<String>> = Vec::new();
    for raw in q.split('^') {
        let t = raw.replace(ESC, "^");
        if t.starts_with("ORDERBYDESC") {
            desc = true;
        } else if t.starts_with("ORDERBY") {
        } else if let Some(alt) = t.strip_prefix("OR") {
            if let Some(last) = all.last_mut() {
                last.push(alt.to_string());
            }
        } else if !t.is_empty() {
            all.push(vec![t]);
        }
    }
    let mut out: Vec<Value> = records
        .iter()
        .filter(|r| all.iter().all(|any| any.iter().any(|t| term(r, t))))
        .cloned()
        .collect();
    if desc {
        out.reverse();
    }
    out
}

fn project(rec: &Value, fields: Option<&String>) -> Value {
    match fields {
        None => rec.clone(),
        Some(f) => {
            let mut m = Map::new();
            for name in f.split(',') {
                m.insert(name.to_string(), json!(as_text(&rec[name])));
            }
            Value::Object(m)
        }
    }
}

fn failure(status: StatusCode, message: &str, detail: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "detail": detail}, "status": "failure"})),
    )
        .into_response()
}

type St = Arc<Mutex<Instance>>;

struct Auth {
    want: String,
}

impl Auth {
    fn refused(&self, h: &HeaderMap) -> Option<Response> {
        (h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(self.want.as_str()))
            .then(|| {
                failure(
                    StatusCode::UNAUTHORIZED,
                    "User Not Authenticated",
                    "Required to provide Auth information",
                )
            })
    }
}

type Params = Query<HashMap<String, String>>;

/// Start an instance on 127.0.0.1 for basic auth `user`:`password`, with
/// the group "Service Desk" and the user `user` in its directory; its URL.
pub async fn start(user: &'static str, password: &'static str) -> (String, Arc<Mutex<Instance>>) {
    use base64::Engine as _;
    let auth = Arc::new(Auth {
        want: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ),
    });
    let state: St = Arc::new(Mutex::new(Instance::default()));
    {
        let mut s = state.lock().expect("sn");
        s.add("sys_user_group", json!({"name": "Service Desk"}));
        s.add(
            "sys_user",
            json!({"user_name": user, "email": format!("{user}@example.com"), "name": "incidentd integration"}),
        );
    }
    let (a1, a2, a3, a4) = (auth.clone(), auth.clone(), auth.clone(), auth);
    let app = axum::Router::new()
        .route(
            "/api/now/table/{table}",
            get(move |State(st): State<St>, h: HeaderMap, UrlPath(table): UrlPath<String>, Query(q): Params| async move {
                if let Some(r) = a1.refused(&h) {
                    return r;
                }
                let mut s = st.lock().expect("sn");
                let query = q.get("sysparm_query").cloned().unwrap_or_default();
                s.calls.push(("GET".into(), if table == "incident" { query.clone() } else { format!("{table}?{query}") }));
                let records = if table == "incident" {
                    s.records.clone()
                } else {
                    s.tables.get(&table).cloned().unwrap_or_default()
                };
                let limit = q.get("sysparm_limit").and_then(|l| l.parse().ok()).unwrap_or(10_000);
                let found: Vec<Value> = select(&records, &query)
                    .iter()
                    .take(limit)
                    .map(|r| project(r, q.get("sysparm_fields")))
                    .collect();
                axum::Json(json!({ "result": found })).into_response()
            })
            .post(move |State(st): State<St>, h: HeaderMap, UrlPath(table): UrlPath<String>, body: axum::body::Bytes| async move {
                if let Some(r) = a2.refused(&h) {
                    return r;
                }
                if table != "incident" {
                    return failure(StatusCode::FORBIDDEN, "Operation Failed", "ACL Exception Insert Failed due to security constraints");
                }
                let json_body = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
                let Some(Value::Object(fields)) = serde_json::from_slice::<Value>(&body).ok().filter(|_| json_body) else {
                    return failure(StatusCode::BAD_REQUEST, "Exception while reading request", "The payload is not valid JSON.");
                };
                let mut s = st.lock().expect("sn");
                s.calls.push(("POST".into(), String::new()));
                let missing: Vec<&str> = s
                    .mandatory
                    .iter()
                    .filter(|f| fields.get(**f).is_none_or(|v| as_text(v).is_empty()))
                    .map(|f| label(f))
                    .collect();
                if !missing.is_empty() {
                    return failure(
                        StatusCode::FORBIDDEN,
                        "Operation Failed",
                        &format!("Data Policy Exception: \n\tThe following fields are mandatory: {}\n", missing.join(", ")),
                    );
                }
                s.check_writes(&fields);
                let n = s.records.len() + 1;
                let sys_id = s.new_sys_id();
                let mut rec = Map::new();
                for (k, v) in &fields {
                    if k == "work_notes" {
                        continue;
                    }
                    let mut t = as_text(v);
                    if let Some((_, max)) = MAX_LEN.iter().find(|(f, _)| f == k) {
                        t = t.chars().take(*max).collect();
                    }
                    rec.insert(k.clone(), json!(t));
                }
                if let Some(n) = fields.get("work_notes").and_then(Value::as_str) {
                    s.work_notes.push(n.to_string());
                }
                rec.insert("sys_id".into(), json!(sys_id));
                rec.insert("number".into(), json!(format!("INC{n:07}")));
                rec.insert("state".into(), json!("1"));
                rec.insert("sys_updated_by".into(), json!(user));
                let rec = Value::Object(rec);
                s.records.push(rec.clone());
                if std::mem::take(&mut s.lose_next_create) {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                (StatusCode::CREATED, axum::Json(json!({ "result": rec }))).into_response()
            }),
        )
        .route(
            "/api/now/table/incident/{sys_id}",
            get(move |State(st): State<St>, h: HeaderMap, UrlPath(sys_id): UrlPath<String>, Query(q): Params| async move {
                if let Some(r) = a3.refused(&h) {
                    return r;
                }
                let mut s = st.lock().expect("sn");
                s.calls.push(("GET".into(), sys_id.clone()));
                match s.records.iter().find(|r| r["sys_id"] == sys_id.as_str()) {
                    Some(rec) => axum::Json(json!({ "result": project(rec, q.get("sysparm_fields")) })).into_response(),
                    None => failure(StatusCode::NOT_FOUND, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"),
                }
            })
            .patch(move |State(st): State<St>, h: HeaderMap, UrlPath(sys_id): UrlPath<String>, axum::Json(body): axum::Json<Value>| async move {
                if let Some(r) = a4.refused(&h) {
                    return r;
                }
                let mut s = st.lock().expect("sn");
                s.calls.push(("PATCH".into(), sys_id.clone()));
                let Value::Object(fields) = body else {
                    return failure(StatusCode::BAD_REQUEST, "Exception while reading request", "The payload is not valid JSON.");
                };
                let Some(at) = s.records.iter().position(|r| r["sys_id"] == sys_id.as_str()) else {
                    return failure(StatusCode::NOT_FOUND, "No Record found", "Record doesn't exist or ACL restricts the record retrieval");
                };
                if matches!(s.records[at]["state"].as_str(), Some("7" | "8")) {
                    return failure(StatusCode::FORBIDDEN, "Operation Failed", "ACL Exception Update Failed due to security constraints");
                }
                let after = |f: &str| fields.get(f).map(as_text).unwrap_or_else(|| as_text(&s.records[at][f]));
                let needs: &[&str] = match after("state").as_str() {
                    "6" => &["close_code", "close_notes"],
                    "3" => &["hold_reason"],
                    _ => &[],
                };
                let missing: Vec<&str> = needs.iter().filter(|f| after(f).is_empty()).map(|f| label(f)).collect();
                if !missing.is_empty() {
                    return failure(
                        StatusCode::FORBIDDEN,
                        "Operation Failed",
                        &format!("Data Policy Exception: \n\tThe following fields are mandatory: {}\n", missing.join(", ")),
                    );
                }
                if after("state") == "6" && !CLOSE_CODES.contains(&after("close_code").as_str()) {
                    let code = after("close_code");
                    s.violations.push(format!("close_code = {code:?} is not one of the choices {CLOSE_CODES:?}"));
                }
                s.check_writes(&fields);
                if let Some(n) = fields.get("work_notes").and_then(Value::as_str) {
                    s.work_notes.push(n.to_string());
                }
                let rec = &mut s.records[at];
                for (k, v) in fields {
                    if k != "work_notes" {
                        rec[k] = json!(as_text(&v));
                    }
                }
                rec["sys_updated_by"] = json!(user);
                let rec = rec.clone();
                axum::Json(json!({ "result": rec })).into_response()
            }),
        )
        .with_state(state.clone());
    let url = super::serve(app, "servicenow fake").await;
    (url, state)
}
