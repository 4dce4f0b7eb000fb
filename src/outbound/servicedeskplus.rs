//! ManageEngine ServiceDesk Plus (API v3): a request per incident, notes
//! for later changes, its status following the incident's. Idempotent by
//! the request id stored once created, with a search for the key at the
//! end of its subject, `(incidentd-<id>)`, when a create's answer was lost.
//!
//! Facts this follows (ServiceDesk Plus API v3 documentation,
//! https://www.manageengine.com/products/service-desk/sdpod-v3-api/ and the
//! on-premises `APIDocs3`): JSON goes as the form field `input_data`
//! (`POST`/`PUT` bodies, and the query of a `GET` list); the media type is
//! `application/vnd.manageengine.sdp.v3+json`; on-premises calls carry the
//! technician's key in an `authtoken` header, Cloud calls an OAuth access
//! token from Zoho Accounts (`Authorization: Zoho-oauthtoken …`, an hour's
//! life, renewed with a refresh token); lookups such as priority, status
//! and group are objects named by `name`; every answer has a
//! `response_status` (2000 success; 4000 with `messages` naming the field;
//! 4015 too many requests). The v1 `/sdpapi/` is retired.

use super::destination::{Destination, Session, TicketReader, work_note};
use super::inbound::{Action, InboundUpdate};
use super::link::{Answer, Link, TicketCalls};
use super::template::Template;
use super::{EventKind, Method, Request, external_key};
use crate::domain::{Incident, IncidentId, Level};
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::{Value, json};
use std::time::Duration;

/// The media type of API v3.
pub const ACCEPT: &str = "application/vnd.manageengine.sdp.v3+json";

/// The longest subject ServiceDesk Plus keeps.
pub const MAX_SUBJECT: usize = 250;

/// How calls are authenticated.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// On-premises: a technician's API key, in the `authtoken` header.
    TechnicianKey(String),
    /// Cloud: OAuth through Zoho Accounts (`accounts_url`, the destination's
    /// second base), a self client's id and secret and a refresh token.
    Zoho {
        client_id: String,
        client_secret: String,
        refresh_token: String,
    },
}

/// What a request carries besides what the incident says; every name is
/// one the instance has (Admin → Helpdesk customizer).
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    /// The requester (a name or an email address; default: the
    /// technician whose key or token is used).
    pub requester: Option<String>,
    pub group: Option<Template>,
    pub category: Option<Template>,
    pub subcategory: Option<Template>,
    pub request_type: Option<String>,
    pub mode: Option<String>,
    /// Priority names of P1..P5.
    pub priorities: [String; 5],
    /// Urgency and impact names of incidentd's High, Medium, Low.
    pub urgencies: [String; 3],
    pub impacts: [String; 3],
    /// The status a resolution sets (`Resolved`, or `Closed`).
    pub resolve_status: String,
    /// User-defined fields (`udf_sline_1`, …), templates.
    pub udf: Vec<(String, Template)>,
}

impl Fields {
    /// The names of a new instance's defaults.
    pub fn defaults() -> Fields {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<_>>();
        Fields {
            requester: None,
            group: None,
            category: None,
            subcategory: None,
            request_type: Some("Incident".into()),
            mode: None,
            priorities: s(&["High", "High", "Medium", "Normal", "Low"])
                .try_into()
                .unwrap_or_default(),
            urgencies: s(&["High", "Normal", "Low"]).try_into().unwrap_or_default(),
            impacts: s(&["Affects Business", "Affects Group", "Affects User"])
                .try_into()
                .unwrap_or_default(),
            resolve_status: "Resolved".into(),
            udf: Vec::new(),
        }
    }
}

fn level(names: &[String; 3], l: Level) -> &str {
    &names[usize::from(l.get().clamp(1, 3) - 1)]
}

fn named(name: &str) -> Value {
    json!({ "name": name })
}

/// `[P1] title (incidentd-42)` on one line within the subject's limit.
fn subject(inc: &Incident) -> String {
    super::keyed_title(inc, MAX_SUBJECT)
}

fn description(inc: &Incident, details_url: Option<&str>) -> String {
    super::freshservice::html(&super::ticket_text(inc, details_url))
}

/// `POST /api/v3/requests`; the answer is `{"request": {"id": "…"}}`.
pub fn create(inc: &Incident, f: &Fields, details_url: Option<&str>) -> Request {
    let mut r = json!({
        "subject": subject(inc),
        "description": description(inc, details_url),
        "status": named("Open"),
        "priority": named(&f.priorities[usize::from(inc.priority.get() - 1)]),
        "urgency": named(level(&f.urgencies, inc.urgency)),
        "impact": named(level(&f.impacts, inc.impact)),
    });
    if let Some(who) = &f.requester {
        r["requester"] = if who.contains('@') {
            json!({ "email_id": who })
        } else {
            named(who)
        };
    }
    for (key, v) in [("request_type", &f.request_type), ("mode", &f.mode)] {
        if let Some(v) = v {
            r[key] = named(v);
        }
    }
    for (key, t) in [
        ("group", &f.group),
        ("category", &f.category),
        ("subcategory", &f.subcategory),
    ] {
        if let Some(v) = t.as_ref().map(|t| t.render(inc)).filter(|v| !v.is_empty()) {
            r[key] = named(&v);
        }
    }
    if !f.udf.is_empty() {
        let udf: serde_json::Map<String, Value> = f
            .udf
            .iter()
            .map(|(k, t)| (k.clone(), json!(t.render(inc))))
            .collect();
        r["udf_fields"] = Value::Object(udf);
    }
    Request::post("/api/v3/requests", json!({ "request": r }))
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn created_id(answer: &Value) -> Option<String> {
    id_of(&answer["request"]["id"])
}

/// A `GET /api/v3/requests` list with `list_info` in `input_data`.
fn list(list_info: Value) -> Request {
    let input = json!({ "list_info": list_info }).to_string();
    Request::get(format!(
        "/api/v3/requests?input_data={}",
        super::poll::escape(&input)
    ))
}

/// The request of `inc`, by the key in its subject (with its
/// parentheses, so that `incidentd-4` does not match `incidentd-42`).
pub fn search(inc: &Incident) -> Request {
    list(json!({
        "row_count": 1,
        "search_criteria": [{
            "field": "subject",
            "condition": "contains",
            "value": format!("({})", external_key(inc)),
        }],
    }))
}

pub fn found_id(answer: &Value) -> Option<String> {
    id_of(&answer["requests"][0]["id"])
}

/// A note for the technicians, not shown to the requester.
pub fn note(id: &str, text: &str) -> Request {
    Request::post(
        format!("/api/v3/requests/{id}/notes"),
        json!({ "note": {
            "description": super::freshservice::html(text),
            "show_to_requester": false,
            "notify_technician": false,
        }}),
    )
}

/// The fields an event changes (`None`: a note only).
pub fn update(id: &str, inc: &Incident, kind: EventKind, f: &Fields) -> Option<Request> {
    let status = |name: &str, comment: &str| json!({ "status": named(name), "status_change_comments": comment });
    let r = match kind {
        EventKind::PriorityChanged => json!({
            "priority": named(&f.priorities[usize::from(inc.priority.get() - 1)]),
            "urgency": named(level(&f.urgencies, inc.urgency)),
            "impact": named(level(&f.impacts, inc.impact)),
        }),
        EventKind::Acknowledged => status("In Progress", "acknowledged in incidentd"),
        EventKind::OnHold => status(
            "On Hold",
            &format!(
                "on hold in incidentd: {}",
                inc.current_hold().map_or("", |h| h.reason.as_str())
            ),
        ),
        EventKind::Resumed | EventKind::Reopened => status("Open", "open again in incidentd"),
        EventKind::Resolved => {
            let mut r = status(&f.resolve_status, "resolved in incidentd");
            r["resolution"] = json!({ "content": format!(
                "Resolved in incidentd: the alerts of incident {} cleared or it was resolved there.",
                inc.id.0
            )});
            r
        }
        EventKind::Opened => return None,
    };
    Some(Request {
        method: Method::Put,
        path: format!("/api/v3/requests/{id}"),
        body: Some(json!({ "request": r })),
        base: super::Base::Url,
    })
}

/// A ServiceDesk Plus instance.
pub struct ServiceDeskPlus {
    pub fields: Fields,
    pub auth: Auth,
    pub details_url: Option<String>,
}

impl Destination for ServiceDeskPlus {
    fn accept(&self, call: &super::destination::Call<'_>) -> &'static str {
        match call.base {
            super::Base::Url => ACCEPT,
            super::Base::Api => "application/json",
        }
    }

    /// `input_data=<JSON>` to the API; the token call's fields as a form.
    fn encode(&self, req: &Request, body: &Value) -> (&'static str, Vec<u8>) {
        let mut form = form_urlencoded::Serializer::new(String::new());
        match req.base {
            super::Base::Url => {
                form.append_pair("input_data", &body.to_string());
            }
            super::Base::Api => {
                for (k, v) in body.as_object().into_iter().flatten() {
                    form.append_pair(k, v.as_str().unwrap_or_default());
                }
            }
        }
        (
            "application/x-www-form-urlencoded",
            form.finish().into_bytes(),
        )
    }

    fn authorize(
        &self,
        rb: reqwest::RequestBuilder,
        call: &super::destination::Call<'_>,
    ) -> reqwest::RequestBuilder {
        match (&self.auth, call.base, call.token) {
            (Auth::TechnicianKey(key), _, _) => rb.header("authtoken", key),
            (Auth::Zoho { .. }, super::Base::Url, Some(token)) => rb.header(
                reqwest::header::AUTHORIZATION,
                format!("Zoho-oauthtoken {token}"),
            ),
            _ => rb,
        }
    }

    /// A 2xx whose `response_status` says it failed is the failure it
    /// reports: 4015 (too many requests) a 429, others a 400.
    fn interpret(&self, _req: &Request, answer: Answer) -> Answer {
        if !answer.ok() {
            return answer;
        }
        let statuses: Vec<&Value> = match &answer.json["response_status"] {
            Value::Array(a) => a.iter().collect(),
            v @ Value::Object(_) => vec![v],
            _ => Vec::new(),
        };
        let codes: Vec<u64> = statuses
            .iter()
            .flat_map(|s| {
                let inner = s["messages"].as_array().into_iter().flatten();
                std::iter::once(&s["status_code"]).chain(inner.map(|m| &m["status_code"]))
            })
            .filter_map(Value::as_u64)
            .collect();
        if codes.contains(&4015) {
            Answer {
                status: Some(429),
                ..answer
            }
        } else if codes.iter().any(|c| *c >= 4000) {
            Answer {
                status: Some(400),
                ..answer
            }
        } else {
            answer
        }
    }

    fn session(&self) -> Option<&dyn Session> {
        matches!(self.auth, Auth::Zoho { .. }).then_some(self as &dyn Session)
    }

    /// The request (stored, else found by its subject's key, else
    /// created), then the fields the event changes and a note.
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        let inc = &row.message.incident;
        let kind = row.message.kind;
        Box::pin(link.update_and_note(
            row,
            || TicketCalls {
                lookup: search(inc),
                found: Box::new(found_id),
                create: create(inc, &self.fields, self.details_url.as_deref()),
                created: Box::new(created_id),
                no_id: "the create answered without a request id",
            },
            move |id| {
                (
                    update(id, inc, kind, &self.fields),
                    note(id, &work_note(inc, kind)),
                )
            },
        ))
    }

    fn reader(&self) -> Option<&dyn TicketReader> {
        Some(self)
    }
}

impl Session for ServiceDeskPlus {
    /// Zoho Accounts' token endpoint, `grant_type=refresh_token`.
    fn request(&self) -> Request {
        let Auth::Zoho {
            client_id,
            client_secret,
            refresh_token,
        } = &self.auth
        else {
            return Request::post("/oauth/v2/token", json!({}));
        };
        Request::post(
            "/oauth/v2/token",
            json!({
                "grant_type": "refresh_token",
                "client_id": client_id,
                "client_secret": client_secret,
                "refresh_token": refresh_token,
            }),
        )
        .on_api()
    }

    fn read(&self, answer: &Answer) -> Option<(String, Duration)> {
        let token = answer.json["access_token"].as_str()?.to_string();
        let lasts = answer.json["expires_in"].as_u64().unwrap_or(3600);
        Some((token, Duration::from_secs(lasts)))
    }
}

impl TicketReader for ServiceDeskPlus {
    /// The batch's requests that are resolved or closed.
    fn query(&self, batch: &[(IncidentId, String)], _now: crate::domain::Timestamp) -> Request {
        let ids: Vec<&str> = batch.iter().map(|(_, id)| id.as_str()).collect();
        let mut done = vec!["Resolved", "Closed"];
        if !done.contains(&self.fields.resolve_status.as_str()) {
            done.push(self.fields.resolve_status.as_str());
        }
        list(json!({
            "row_count": batch.len().clamp(1, 100),
            "search_criteria": [
                { "field": "id", "condition": "is", "values": ids },
                { "field": "status.name", "condition": "is", "values": done,
                  "logical_operator": "and" },
            ],
            "fields_required": ["id", "status", "technician"],
        }))
    }

    /// Each resolved or closed request resolves its incident, by its
    /// technician; requests are matched to incidents by their ids.
    fn updates(&self, batch: &[(IncidentId, String)], answer: &Value) -> Vec<InboundUpdate> {
        answer["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let id = id_of(&r["id"])?;
                let (incident, _) = batch.iter().find(|(_, rid)| *rid == id)?;
                let status = r["status"]["name"].as_str()?;
                let done = ["Resolved", "Closed", self.fields.resolve_status.as_str()]
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(status));
                done.then(|| InboundUpdate {
                    incident: *incident,
                    action: Action::Resolve,
                    actor: r["technician"]["name"].as_str().map_or_else(
                        || "servicedeskplus".into(),
                        |t| format!("servicedeskplus:{t}"),
                    ),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    #[test]
    fn create_names_every_lookup_and_ends_the_subject_with_the_key() {
        let mut f = Fields::defaults();
        f.group = Some(Template::parse("{assignment_group}").expect("template"));
        f.requester = Some("noc@example.com".into());
        f.udf = vec![("udf_sline_1".into(), Template::parse("{key}").expect("t"))];
        let c = create(&incident(), &f, None);
        assert_eq!(c.path, "/api/v3/requests");
        let r = &c.body.expect("body")["request"];
        assert_eq!(r["subject"], "[P1] PostgresDown on pg-0 (incidentd-42)");
        assert_eq!(r["priority"], json!({"name": "High"}));
        assert_eq!(r["impact"], json!({"name": "Affects Business"}));
        assert_eq!(r["status"], json!({"name": "Open"}));
        assert_eq!(r["group"], json!({"name": "team-dba"}));
        assert_eq!(r["requester"], json!({"email_id": "noc@example.com"}));
        assert_eq!(r["request_type"], json!({"name": "Incident"}));
        assert_eq!(r["udf_fields"], json!({"udf_sline_1": "incidentd-42"}));
        assert_eq!(
            created_id(&json!({"request": {"id": "1801"}})),
            Some("1801".into())
        );
    }

    #[test]
    fn bodies_go_as_input_data_and_failures_inside_2xx_are_failures() {
        let d = ServiceDeskPlus {
            fields: Fields::defaults(),
            auth: Auth::TechnicianKey("k".into()),
            details_url: None,
        };
        let req = note("7", "a & b");
        let (ct, body) = d.encode(&req, req.body.as_ref().expect("body"));
        assert_eq!(ct, "application/x-www-form-urlencoded");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, "input_data");
        let v: Value = serde_json::from_str(&pairs[0].1).expect("json");
        assert_eq!(v["note"]["description"], "a &amp; b");
        let s = search(&incident());
        assert!(
            s.path
                .starts_with("/api/v3/requests?input_data=%7B%22list_info%22"),
            "{}",
            s.path
        );
        let answer = |j: Value| Answer::with_json(200, j);
        let limited = d.interpret(
            &req,
            answer(json!({"response_status": {"status_code": 4000, "messages": [{"status_code": 4015}]}})),
        );
        assert_eq!(limited.status, Some(429));
        let refused = d.interpret(
            &req,
            answer(json!({"response_status": {"status_code": 4000, "messages": [{"status_code": 4001, "field": "priority"}]}})),
        );
        assert_eq!(refused.status, Some(400));
        let limited = d.interpret(
            &req,
            answer(json!({"response_status": [{"status_code": 4015}]})),
        );
        assert_eq!(limited.status, Some(429));
        let fine = d.interpret(
            &req,
            answer(json!({"response_status": {"status_code": 2000}})),
        );
        assert_eq!(fine.status, Some(200));
    }

    #[test]
    fn events_map_to_statuses_and_polling_maps_by_id() {
        let f = Fields::defaults();
        let inc = incident();
        let status = |k| {
            update("7", &inc, k, &f)
                .and_then(|r| r.body)
                .map(|b| b["request"]["status"]["name"].clone())
        };
        assert_eq!(status(EventKind::Acknowledged), Some(json!("In Progress")));
        assert_eq!(status(EventKind::OnHold), Some(json!("On Hold")));
        assert_eq!(status(EventKind::Resolved), Some(json!("Resolved")));
        assert_eq!(status(EventKind::Reopened), Some(json!("Open")));
        assert_eq!(status(EventKind::Opened), None);
        let d = ServiceDeskPlus {
            fields: f,
            auth: Auth::TechnicianKey("k".into()),
            details_url: None,
        };
        let batch = vec![
            (IncidentId(1), "11".to_string()),
            (IncidentId(2), "12".to_string()),
        ];
        let answer = json!({"requests": [
            {"id": "11", "status": {"name": "Resolved"}, "technician": {"name": "Ravi"}},
            {"id": "12", "status": {"name": "Open"}},
            {"id": "99", "status": {"name": "Closed"}}
        ]});
        let got: Vec<(i64, String)> = d
            .updates(&batch, &answer)
            .into_iter()
            .map(|u| (u.incident.0, u.actor))
            .collect();
        assert_eq!(got, [(1, "servicedeskplus:Ravi".to_string())]);
    }
}
