//! Freshservice (API v2, api.freshservice.com): a ticket per incident,
//! private notes for later changes, the ticket's status following the
//! incident's. Idempotent by the ticket id stored once created, with a
//! filter by the ticket's tag `incidentd-<id>` as the fallback when a
//! create's answer was lost: the filter API has no free-text search, so
//! the key rides in a tag, which it can match.
//!
//! Facts this follows (api.freshservice.com, "Tickets"): the API key is
//! the Basic-auth user with any password (`X`); a create needs a requester
//! (`email` or `requester_id`), `subject`, `description` (HTML), `status`
//! and `priority`; status 2 Open, 3 Pending, 4 Resolved, 5 Closed;
//! priority 1 Low .. 4 Urgent; urgency and impact 1 Low .. 3 High;
//! "Filter Tickets" takes `query="…"` (quoted, at most 512 characters,
//! 30 tickets a page) and answers without tags.

use super::destination::{Credential, Destination, TicketReader, work_note};
use super::inbound::{Action, InboundUpdate};
use super::link::{Answer, Link, TicketCalls};
use super::template::Template;
use super::{EventKind, Method, Request, external_key};
use crate::domain::{Incident, IncidentId};
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::{Value, json};

/// Who the tickets are raised for: Freshservice requires a requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// An email address (a requester is made for an unknown one).
    Email(String),
    /// The id of an existing requester.
    Id(i64),
}

/// What a created ticket carries besides what the incident says.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    pub requester: Requester,
    /// Agent group and department ids (Admin → Groups, Departments).
    pub group_id: Option<i64>,
    pub department_id: Option<i64>,
    /// The ticket's source id: an account's own "Monitoring" source has an
    /// id of its own (Admin → Field Manager); unset, Freshservice's default.
    pub source: Option<i64>,
    /// The workspace of an account with several.
    pub workspace_id: Option<i64>,
    pub category: Option<Template>,
    pub sub_category: Option<Template>,
    /// `custom_fields`, by their API names (`cf_…`).
    pub custom: Vec<(String, Template)>,
}

/// Freshservice statuses.
pub const OPEN: u8 = 2;
pub const PENDING: u8 = 3;
pub const RESOLVED: u8 = 4;
pub const CLOSED: u8 = 5;

/// The longest `query` "Filter Tickets" accepts.
pub const MAX_QUERY: usize = 512;

/// Tickets read back per filter query: with the longest incident ids
/// (19 digits) the query stays within [`MAX_QUERY`], and the answer within
/// one page of 30.
pub const POLL_BATCH: usize = 12;

/// Freshservice priority of an incident: P1 Urgent (4), P2 High (3), P3
/// Medium (2), P4 and P5 Low (1).
pub fn priority(inc: &Incident) -> u8 {
    match inc.priority.get() {
        1 => 4,
        2 => 3,
        3 => 2,
        _ => 1,
    }
}

/// incidentd's levels run 1 High .. 3 Low, Freshservice's 1 Low .. 3 High.
fn level(l: crate::domain::Level) -> u8 {
    4 - l.get()
}

/// Text as HTML (Freshservice descriptions and notes are HTML): escaped,
/// lines as `<br>`.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("<br>"),
            c => out.push(c),
        }
    }
    out
}

fn description(inc: &Incident, details_url: Option<&str>) -> String {
    html(&super::ticket_text(inc, details_url))
}

/// `[P1] title (incidentd-42)` on one line within 255 characters.
fn subject(inc: &Incident) -> String {
    super::keyed_title(inc, 255)
}

/// `POST /api/v2/tickets`; the answer is `{"ticket": {"id": …}}`.
pub fn create(inc: &Incident, f: &Fields, details_url: Option<&str>) -> Request {
    let mut body = json!({
        "subject": subject(inc),
        "description": description(inc, details_url),
        "status": OPEN,
        "priority": priority(inc),
        "urgency": level(inc.urgency),
        "impact": level(inc.impact),
        "tags": [external_key(inc)],
    });
    match &f.requester {
        Requester::Email(e) => body["email"] = json!(e),
        Requester::Id(id) => body["requester_id"] = json!(id),
    }
    for (key, v) in [
        ("group_id", f.group_id),
        ("department_id", f.department_id),
        ("source", f.source),
        ("workspace_id", f.workspace_id),
    ] {
        if let Some(v) = v {
            body[key] = json!(v);
        }
    }
    for (key, t) in [("category", &f.category), ("sub_category", &f.sub_category)] {
        if let Some(t) = t {
            body[key] = json!(t.render(inc));
        }
    }
    if !f.custom.is_empty() {
        let custom: serde_json::Map<String, Value> = f
            .custom
            .iter()
            .map(|(k, t)| (k.clone(), json!(t.render(inc))))
            .collect();
        body["custom_fields"] = Value::Object(custom);
    }
    Request::post("/api/v2/tickets", body)
}

/// A ticket id from an answer (a number in Freshservice's JSON).
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

pub fn created_id(answer: &Value) -> Option<String> {
    id_of(&answer["ticket"]["id"])
}

/// `GET /api/v2/tickets/filter?query="…"`: the query quoted, escaped.
fn filter(query: &str) -> Request {
    Request::get(format!(
        "/api/v2/tickets/filter?query={}",
        super::poll::escape(&format!("\"{query}\""))
    ))
}

/// The ticket of `inc`, by its tag.
pub fn search(inc: &Incident) -> Request {
    filter(&format!("tag:'{}'", external_key(inc)))
}

pub fn found_id(answer: &Value) -> Option<String> {
    id_of(&answer["tickets"][0]["id"])
}

/// A private note (operators', not the requester's).
pub fn note(id: &str, text: &str) -> Request {
    Request::post(
        format!("/api/v2/tickets/{id}/notes"),
        json!({ "body": html(text), "private": true }),
    )
}

/// The fields an event changes on the ticket (`None`: a note only).
/// Acknowledgement has no status of its own in Freshservice's defaults
/// (Open is worked on), so it is a note.
pub fn update(id: &str, inc: &Incident, kind: EventKind) -> Option<Request> {
    let body = match kind {
        EventKind::PriorityChanged => json!({
            "priority": priority(inc),
            "urgency": level(inc.urgency),
            "impact": level(inc.impact),
        }),
        EventKind::OnHold => json!({ "status": PENDING }),
        EventKind::Resumed | EventKind::Reopened => json!({ "status": OPEN }),
        EventKind::Resolved => json!({ "status": RESOLVED }),
        EventKind::Opened | EventKind::Acknowledged => return None,
    };
    Some(Request {
        method: Method::Put,
        path: format!("/api/v2/tickets/{id}"),
        body: Some(body),
        base: super::Base::Url,
    })
}

/// A Freshservice account.
pub struct Freshservice {
    pub fields: Fields,
    pub credential: Credential,
    pub details_url: Option<String>,
}

impl Destination for Freshservice {
    fn credential(&self) -> Option<&Credential> {
        Some(&self.credential)
    }

    /// The ticket (stored, else found by its tag, else created), then the
    /// fields the event changes and a private note.
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
                no_id: "the create answered without a ticket id",
            },
            move |id| (update(id, inc, kind), note(id, &work_note(inc, kind))),
        ))
    }

    fn reader(&self) -> Option<&dyn TicketReader> {
        Some(self)
    }
}

impl TicketReader for Freshservice {
    fn batch(&self) -> usize {
        POLL_BATCH
    }

    /// The batch's tickets that are resolved or closed, by their tags (the
    /// filter cannot match ticket ids).
    fn query(&self, batch: &[(IncidentId, String)], _now: crate::domain::Timestamp) -> Request {
        let tags: Vec<String> = batch
            .iter()
            .map(|(i, _)| format!("tag:'incidentd-{}'", i.0))
            .collect();
        filter(&format!(
            "({}) AND (status:{RESOLVED} OR status:{CLOSED})",
            tags.join(" OR ")
        ))
    }

    /// Each resolved or closed ticket resolves its incident, by the agent
    /// it is assigned to. The answer carries no tags: tickets are matched
    /// to incidents by their stored ids.
    fn updates(&self, batch: &[(IncidentId, String)], answer: &Value) -> Vec<InboundUpdate> {
        answer["tickets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let id = id_of(&t["id"])?;
                let (incident, _) = batch.iter().find(|(_, tid)| *tid == id)?;
                let status = t["status"].as_u64()?;
                (status == u64::from(RESOLVED) || status == u64::from(CLOSED)).then(|| {
                    InboundUpdate {
                        incident: *incident,
                        action: Action::Resolve,
                        actor: actor(&t["responder_id"]),
                    }
                })
            })
            .collect()
    }
}

/// Who changed a ticket, as the timeline names them: the agent's id
/// (what the API gives), else the tool.
fn actor(responder: &Value) -> String {
    match id_of(responder) {
        Some(id) => format!("freshservice:agent-{id}"),
        None => "freshservice".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    fn fields() -> Fields {
        Fields {
            requester: Requester::Email("noc@example.com".into()),
            group_id: Some(7),
            department_id: None,
            source: Some(1001),
            workspace_id: None,
            category: Some(Template::parse("Infrastructure").expect("template")),
            sub_category: None,
            custom: vec![(
                "cf_root_ci".into(),
                Template::parse("{root_ci}").expect("template"),
            )],
        }
    }

    #[test]
    fn create_carries_the_required_fields_and_the_tag() {
        let inc = incident();
        let c = create(
            &inc,
            &fields(),
            Some("https://i.example.com/incidents/{id}"),
        );
        assert_eq!(c.path, "/api/v2/tickets");
        let b = c.body.expect("body");
        assert_eq!(b["email"], "noc@example.com");
        assert_eq!(b["subject"], "[P1] PostgresDown on pg-0 (incidentd-42)");
        assert_eq!(
            (b["status"].as_u64(), b["priority"].as_u64()),
            (Some(2), Some(4))
        );
        // incidentd's High (1) is Freshservice's High (3).
        assert_eq!(
            (b["impact"].as_u64(), b["urgency"].as_u64()),
            (Some(3), Some(3))
        );
        assert_eq!(b["tags"], json!(["incidentd-42"]));
        assert_eq!(
            (b["group_id"].as_i64(), b["source"].as_i64()),
            (Some(7), Some(1001))
        );
        assert!(b.get("department_id").is_none(), "{b}");
        assert_eq!(b["category"], "Infrastructure");
        assert_eq!(b["custom_fields"], json!({"cf_root_ci": "pg-0"}));
        let d = b["description"].as_str().expect("description");
        assert!(d.contains("<br>Root cause CI: pg-0<br>"), "{d}");
        assert!(
            d.ends_with("Details: https://i.example.com/incidents/42"),
            "{d}"
        );
        assert_eq!(
            created_id(&json!({"ticket": {"id": 381}})),
            Some("381".into())
        );
        assert_eq!(created_id(&json!({"ticket": {}})), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html("a<b> & \"c\"\nd"),
            "a&lt;b&gt; &amp; &quot;c&quot;<br>d"
        );
    }

    #[test]
    fn search_filters_by_tag_quoted() {
        let s = search(&incident());
        assert_eq!(
            s.path,
            "/api/v2/tickets/filter?query=%22tag%3A%27incidentd-42%27%22"
        );
        assert_eq!(
            found_id(&json!({"tickets": [{"id": 9}], "total": 1})),
            Some("9".into())
        );
        assert_eq!(found_id(&json!({"tickets": [], "total": 0})), None);
    }

    #[test]
    fn events_map_to_statuses() {
        let inc = incident();
        let status = |k| {
            update("9", &inc, k)
                .and_then(|r| r.body)
                .map(|b| b["status"].clone())
        };
        assert_eq!(status(EventKind::Resolved), Some(json!(4)));
        assert_eq!(status(EventKind::OnHold), Some(json!(3)));
        assert_eq!(status(EventKind::Reopened), Some(json!(2)));
        assert_eq!(status(EventKind::Acknowledged), None);
        let p = update("9", &inc, EventKind::PriorityChanged).expect("update");
        assert_eq!(
            (p.method, p.path.as_str()),
            (Method::Put, "/api/v2/tickets/9")
        );
        assert_eq!(p.body.expect("body")["priority"], 4);
        let n = note("9", "x < y");
        assert_eq!(n.path, "/api/v2/tickets/9/notes");
        assert_eq!(
            n.body.expect("body"),
            json!({"body": "x &lt; y", "private": true})
        );
    }

    #[test]
    fn polling_stays_within_the_query_limit_and_maps_by_ticket_id() {
        let f = Freshservice {
            fields: fields(),
            credential: Credential::None,
            details_url: None,
        };
        let batch: Vec<(IncidentId, String)> = (0..POLL_BATCH)
            .map(|i| (IncidentId(i64::MAX - i as i64), format!("{}", 100 + i)))
            .collect();
        let q = f.query(&batch, crate::domain::Timestamp(0));
        let query = q.path.split_once("query=").expect("query").1;
        let decoded: String = form_urlencoded::parse(format!("q={query}").as_bytes())
            .map(|(_, v)| v.into_owned())
            .collect();
        assert!(
            decoded.starts_with("\"(tag:'incidentd-9223372036854775807' OR "),
            "{decoded}"
        );
        assert!(
            decoded.ends_with(") AND (status:4 OR status:5)\""),
            "{decoded}"
        );
        assert!(
            decoded.chars().count() - 2 <= MAX_QUERY,
            "{}",
            decoded.len()
        );
        let answer = json!({"tickets": [
            {"id": 100, "status": 4, "responder_id": 55},
            {"id": 101, "status": 5, "responder_id": null},
            {"id": 102, "status": 2},
            {"id": 999, "status": 4}
        ], "total": 4});
        let got: Vec<(i64, String)> = f
            .updates(&batch, &answer)
            .into_iter()
            .map(|u| (u.incident.0, u.actor))
            .collect();
        assert_eq!(
            got,
            [
                (i64::MAX, "freshservice:agent-55".to_string()),
                (i64::MAX - 1, "freshservice".to_string())
            ]
        );
    }
}
