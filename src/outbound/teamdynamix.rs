//! TeamDynamix (Web API, `TDWebApi`): a ticket per incident in one ticketing
//! application, feed entries for later changes (a feed entry both moves
//! the status and records the comment), the priority patched. Idempotent
//! by the ticket id stored once created, with a search for the key at the
//! end of its title, `(incidentd-<id>)`, when a create's answer was lost.
//!
//! Facts this follows (solutions.teamdynamix.com/TDWebApi: "Auth"
//! `POST api/auth/loginadmin`, "Tickets", `TeamDynamix.Api.Tickets.Ticket`,
//! `TicketSearch`, `TicketFeedEntry`, "About rate limiting"): the admin
//! login takes the BEID and web services key and answers the JWT as plain
//! text, good for 24 hours, sent as a bearer token; a ticket needs
//! `TypeID`, `Title` (at most 300 characters), `AccountID`, `StatusID`,
//! `PriorityID` and a requestor; type, status and priority ids differ per
//! tenant and application, so they are looked up by name (statuses by
//! their status class: 1 New, 2 In Process, 3 Completed, 4 Cancelled,
//! 5 On Hold); methods are limited to 60 calls a minute (a create 30),
//! a 429 telling the period's end in `X-RateLimit-Reset`.

use super::destination::{Destination, Session, TicketReader, work_note};
use super::inbound::{Action, InboundUpdate};
use super::link::{Answer, Link, TicketCalls};
use super::{EventKind, Method, Request, external_key};
use crate::domain::{Incident, IncidentId, Timestamp};
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::Duration;

/// The longest title TeamDynamix keeps.
pub const MAX_TITLE: usize = 300;

/// How long looked-up ids are trusted.
const LOOKUP_LIFE: Duration = Duration::from_secs(3600);

/// Status classes.
pub const NEW: u64 = 1;
pub const IN_PROCESS: u64 = 2;
pub const COMPLETED: u64 = 3;
pub const CANCELLED: u64 = 4;
pub const ON_HOLD: u64 = 5;

/// Who tickets are raised for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requestor {
    /// A person's UID.
    Uid(String),
    /// An email; a person is made for an unknown one
    /// (`AllowRequestorCreation`).
    Email(String),
}

/// What a ticket carries besides what the incident says.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    pub app_id: u32,
    /// The ticket type's name (looked up).
    pub ticket_type: String,
    /// The account (department) id.
    pub account_id: i64,
    pub requestor: Requestor,
    pub responsible_group_id: Option<i64>,
    /// Priority names of P1..P5 (looked up).
    pub priorities: [String; 5],
}

/// The admin login: the BEID and the web services key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub beid: String,
    pub web_services_key: String,
}

/// The ids of a tenant's names, as looked up.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ids {
    pub type_id: i64,
    /// P1..P5.
    pub priorities: [i64; 5],
    /// The first active status of each class, by class.
    pub statuses: Vec<(u64, i64)>,
}

impl Ids {
    fn status(&self, class: u64) -> Option<i64> {
        self.statuses
            .iter()
            .find(|(c, _)| *c == class)
            .map(|(_, id)| *id)
    }
}

/// Looked-up ids from the three answers; what is missing, if anything.
pub fn ids(types: &Value, statuses: &Value, priorities: &Value, f: &Fields) -> Result<Ids, String> {
    let active = |v: &Value| v["IsActive"].as_bool().unwrap_or(true);
    let by_name = |list: &Value, name: &str| {
        list.as_array()?.iter().filter(|x| active(x)).find(|x| {
            x["Name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })?["ID"]
            .as_i64()
    };
    let type_id = by_name(types, &f.ticket_type)
        .ok_or_else(|| format!("no active ticket type named {:?}", f.ticket_type))?;
    let mut prio = [0; 5];
    for (i, name) in f.priorities.iter().enumerate() {
        prio[i] = by_name(priorities, name)
            .ok_or_else(|| format!("no active priority named {name:?} (P{})", i + 1))?;
    }
    let mut listed: Vec<&Value> = statuses
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| active(s))
        .collect();
    listed.sort_by_key(|s| s["Order"].as_f64().map(|o| (o * 1000.0) as i64));
    let mut by_class = Vec::new();
    for class in [NEW, IN_PROCESS, COMPLETED, ON_HOLD] {
        let id = listed
            .iter()
            .find(|s| s["StatusClass"].as_u64() == Some(class))
            .and_then(|s| s["ID"].as_i64())
            .ok_or_else(|| format!("no active status of class {class}"))?;
        by_class.push((class, id));
    }
    Ok(Ids {
        type_id,
        priorities: prio,
        statuses: by_class,
    })
}

fn api(f: &Fields, rest: &str) -> String {
    format!("/api/{}/tickets{rest}", f.app_id)
}

/// `[P1] title (incidentd-42)` on one line within the title's limit.
fn title(inc: &Incident) -> String {
    super::keyed_title(inc, MAX_TITLE)
}

fn description(inc: &Incident, details_url: Option<&str>) -> String {
    super::ticket_text(inc, details_url)
}

/// The create, its notifications off (the feed is the operators').
pub fn create(inc: &Incident, f: &Fields, ids: &Ids, details_url: Option<&str>) -> Request {
    let creating = matches!(f.requestor, Requestor::Email(_));
    let mut t = json!({
        "TypeID": ids.type_id,
        "Title": title(inc),
        "Description": description(inc, details_url),
        "IsRichHtml": false,
        "AccountID": f.account_id,
        "StatusID": ids.status(NEW).unwrap_or_default(),
        "PriorityID": ids.priorities[usize::from(inc.priority.get() - 1)],
    });
    match &f.requestor {
        Requestor::Uid(u) => t["RequestorUid"] = json!(u),
        Requestor::Email(e) => t["RequestorEmail"] = json!(e),
    }
    if let Some(g) = f.responsible_group_id {
        t["ResponsibleGroupID"] = json!(g);
    }
    Request::post(
        api(
            f,
            &format!(
                "?EnableNotifyReviewer=false&NotifyRequestor=false&NotifyResponsible=false&AllowRequestorCreation={creating}"
            ),
        ),
        t,
    )
}

fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The ticket of `inc`: a text search for its key, kept only where the
/// title ends with it (a text search for `incidentd-4` also finds
/// `incidentd-42`).
pub fn search(inc: &Incident, f: &Fields) -> Request {
    Request::post(
        api(f, "/search"),
        json!({ "SearchText": external_key(inc), "MaxResults": 50 }),
    )
}

/// The id of the search answer's ticket titled with `key`.
pub fn found(answer: &Value, key: &str) -> Option<String> {
    let suffix = format!("({key})");
    answer
        .as_array()?
        .iter()
        .find(|t| t["Title"].as_str().is_some_and(|x| x.ends_with(&suffix)))
        .and_then(|t| id_of(&t["ID"]))
}

/// A private feed entry, moving the ticket to `status` when given.
pub fn feed(f: &Fields, id: &str, text: &str, status: Option<i64>) -> Request {
    let mut body = json!({ "Comments": text, "IsPrivate": true, "IsRichHtml": false });
    if let Some(s) = status {
        body["NewStatusID"] = json!(s);
    }
    Request::post(api(f, &format!("/{id}/feed")), body)
}

/// The status class an event moves the ticket to.
pub fn class_for(kind: EventKind) -> Option<u64> {
    match kind {
        EventKind::Acknowledged => Some(IN_PROCESS),
        EventKind::OnHold => Some(ON_HOLD),
        EventKind::Resumed | EventKind::Reopened => Some(NEW),
        EventKind::Resolved => Some(COMPLETED),
        EventKind::Opened | EventKind::PriorityChanged => None,
    }
}

/// A JSON Patch of the ticket's priority.
pub fn patch_priority(f: &Fields, id: &str, priority_id: i64) -> Request {
    Request {
        method: Method::Patch,
        path: api(f, &format!("/{id}")),
        body: Some(json!([{ "op": "replace", "path": "/PriorityID", "value": priority_id }])),
        base: super::Base::Url,
    }
}

/// A TeamDynamix ticketing application.
pub struct TeamDynamix {
    pub fields: Fields,
    pub login: Login,
    pub details_url: Option<String>,
    /// The looked-up ids and when they were looked up.
    looked_up: Mutex<Option<(Ids, Timestamp)>>,
}

impl TeamDynamix {
    pub fn new(fields: Fields, login: Login, details_url: Option<String>) -> TeamDynamix {
        TeamDynamix {
            fields,
            login,
            details_url,
            looked_up: Mutex::new(None),
        }
    }

    /// The tenant's ids, looked up at most hourly; the failing answer when
    /// they cannot be had (a name the tenant lacks is a refusal).
    async fn ids(&self, link: &Link, row: &OutboxRow) -> Result<Ids, Answer> {
        let now = link.now();
        {
            let held = self
                .looked_up
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((ids, at)) = held.as_ref()
                && now < at.saturating_add(LOOKUP_LIFE)
            {
                return Ok(ids.clone());
            }
        }
        let mut answers = Vec::with_capacity(3);
        for what in ["/types", "/statuses", "/priorities"] {
            let a = link
                .call(&Request::get(api(&self.fields, what)), row.id)
                .await;
            if !a.ok() {
                return Err(a);
            }
            answers.push(a.json);
        }
        let ids = ids(&answers[0], &answers[1], &answers[2], &self.fields)
            .map_err(|why| Answer::refused(&format!("TeamDynamix lookup: {why}")))?;
        *self
            .looked_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((ids.clone(), now));
        Ok(ids)
    }
}

impl Destination for TeamDynamix {
    fn session(&self) -> Option<&dyn Session> {
        Some(self)
    }

    fn authorize(
        &self,
        rb: reqwest::RequestBuilder,
        call: &super::destination::Call<'_>,
    ) -> reqwest::RequestBuilder {
        match call.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// The ticket (stored, else found by its title's key, else created),
    /// then the priority patched if it changed, then one feed entry that
    /// moves the status and says why.
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        Box::pin(async move {
            let inc = &row.message.incident;
            let kind = row.message.kind;
            let ids = match self.ids(link, row).await {
                Ok(ids) => ids,
                Err(answer) => return Ok(Some(answer)),
            };
            let key = external_key(inc);
            let status = class_for(kind).and_then(|c| ids.status(c));
            let priority = ids.priorities[usize::from(inc.priority.get() - 1)];
            link.update_and_note(
                row,
                || TicketCalls {
                    lookup: search(inc, &self.fields),
                    found: Box::new(move |a| found(a, &key)),
                    create: create(inc, &self.fields, &ids, self.details_url.as_deref()),
                    created: Box::new(|a| id_of(&a["ID"])),
                    no_id: "the create answered without a ticket ID",
                },
                |id| {
                    let patch = (kind == EventKind::PriorityChanged)
                        .then(|| patch_priority(&self.fields, id, priority));
                    (patch, feed(&self.fields, id, &work_note(inc, kind), status))
                },
            )
            .await
        })
    }

    fn reader(&self) -> Option<&dyn TicketReader> {
        Some(self)
    }
}

impl Session for TeamDynamix {
    fn request(&self) -> Request {
        Request::post(
            "/api/auth/loginadmin",
            json!({ "BEID": self.login.beid, "WebServicesKey": self.login.web_services_key }),
        )
    }

    /// The JWT, answered as plain text (24 hours).
    fn read(&self, answer: &Answer) -> Option<(String, Duration)> {
        let token = answer.json.as_str()?.trim().trim_matches('"');
        (token.split('.').count() == 3).then(|| (token.to_string(), Duration::from_secs(24 * 3600)))
    }
}

impl TicketReader for TeamDynamix {
    /// Tickets completed or cancelled in the last day (the search cannot
    /// select ids); the batch's are picked out by id.
    fn query(&self, _batch: &[(IncidentId, String)], now: Timestamp) -> Request {
        let since = Timestamp(now.0.saturating_sub(24 * 3600 * 1000));
        Request::post(
            api(&self.fields, "/search"),
            json!({
                "StatusClassIDs": [COMPLETED, CANCELLED],
                "UpdatedDateFrom": since.to_rfc3339(),
                "MaxResults": 1000,
            }),
        )
    }

    fn updates(&self, batch: &[(IncidentId, String)], answer: &Value) -> Vec<InboundUpdate> {
        answer
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let id = id_of(&t["ID"])?;
                let (incident, _) = batch.iter().find(|(_, tid)| *tid == id)?;
                let class = t["StatusClass"].as_u64()?;
                (class == COMPLETED || class == CANCELLED).then(|| InboundUpdate {
                    incident: *incident,
                    action: Action::Resolve,
                    actor: t["ModifiedFullName"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .map_or_else(|| "teamdynamix".into(), |n| format!("teamdynamix:{n}")),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    fn fields() -> Fields {
        Fields {
            app_id: 31,
            ticket_type: "Incident".into(),
            account_id: 812,
            requestor: Requestor::Uid("4f1e-uid".into()),
            responsible_group_id: Some(55),
            priorities: ["Emergency", "High", "Medium", "Low", "Low"].map(String::from),
        }
    }

    #[test]
    fn ids_are_looked_up_by_name_and_status_class() {
        let types =
            json!([{"ID": 9, "Name": "Incident", "IsActive": true}, {"ID": 3, "Name": "Request"}]);
        let statuses = json!([
            {"ID": 70, "Name": "Closed", "StatusClass": 3, "Order": 5.0, "IsActive": true},
            {"ID": 61, "Name": "New", "StatusClass": 1, "Order": 1.0, "IsActive": true},
            {"ID": 62, "Name": "In Process", "StatusClass": 2, "Order": 2.0, "IsActive": true},
            {"ID": 69, "Name": "Resolved", "StatusClass": 3, "Order": 4.0, "IsActive": true},
            {"ID": 63, "Name": "On Hold", "StatusClass": 5, "Order": 3.0, "IsActive": true}
        ]);
        let prios = json!([{"ID": 21, "Name": "Emergency"}, {"ID": 22, "Name": "High"},
            {"ID": 23, "Name": "Medium"}, {"ID": 24, "Name": "Low"}]);
        let ids = ids(&types, &statuses, &prios, &fields()).expect("ids");
        assert_eq!(ids.type_id, 9);
        assert_eq!(ids.priorities, [21, 22, 23, 24, 24]);
        // The first of a class by order: Resolved before Closed.
        assert_eq!(ids.status(COMPLETED), Some(69));
        let mut f = fields();
        f.ticket_type = "Outage".into();
        assert!(
            super::ids(&types, &statuses, &prios, &f)
                .unwrap_err()
                .contains("Outage")
        );
        let c = create(&incident(), &fields(), &ids, None);
        assert!(
            c.path
                .starts_with("/api/31/tickets?EnableNotifyReviewer=false"),
            "{}",
            c.path
        );
        assert!(
            c.path.ends_with("AllowRequestorCreation=false"),
            "{}",
            c.path
        );
        let b = c.body.expect("body");
        assert_eq!(
            (
                b["TypeID"].as_i64(),
                b["StatusID"].as_i64(),
                b["PriorityID"].as_i64()
            ),
            (Some(9), Some(61), Some(21))
        );
        assert_eq!(b["Title"], "[P1] PostgresDown on pg-0 (incidentd-42)");
        assert_eq!(b["RequestorUid"], "4f1e-uid");
        assert_eq!(b["ResponsibleGroupID"], 55);
    }

    #[test]
    fn found_only_by_the_whole_key_and_feed_moves_status() {
        let answer = json!([{"ID": 1, "Title": "x (incidentd-420)"}, {"ID": 2, "Title": "y (incidentd-42)"}]);
        assert_eq!(found(&answer, "incidentd-42"), Some("2".into()));
        assert_eq!(found(&answer, "incidentd-4"), None);
        let e = feed(&fields(), "2", "resolved", Some(69));
        assert_eq!(e.path, "/api/31/tickets/2/feed");
        assert_eq!(
            e.body.expect("body"),
            json!({"Comments": "resolved", "IsPrivate": true, "IsRichHtml": false, "NewStatusID": 69})
        );
        assert_eq!(class_for(EventKind::Resolved), Some(COMPLETED));
        assert_eq!(class_for(EventKind::PriorityChanged), None);
        let p = patch_priority(&fields(), "2", 22);
        assert_eq!(
            (p.method, p.path.as_str()),
            (Method::Patch, "/api/31/tickets/2")
        );
    }

    #[test]
    fn the_jwt_is_read_from_plain_text_and_polls_map_by_id() {
        let d = TeamDynamix::new(
            fields(),
            Login {
                beid: "b".into(),
                web_services_key: "k".into(),
            },
            None,
        );
        let answer = |j: Value| Answer::with_json(200, j);
        assert_eq!(
            d.read(&answer(json!("aaa.bbb.ccc"))).map(|t| t.0),
            Some("aaa.bbb.ccc".into())
        );
        assert_eq!(d.read(&answer(json!({"Message": "no"}))), None);
        let batch = vec![
            (IncidentId(1), "11".to_string()),
            (IncidentId(2), "12".to_string()),
        ];
        let polled = json!([{"ID": 11, "StatusClass": 3, "ModifiedFullName": "Kim Lee"},
            {"ID": 12, "StatusClass": 2}, {"ID": 13, "StatusClass": 3}]);
        let got: Vec<(i64, String)> = d
            .updates(&batch, &polled)
            .into_iter()
            .map(|u| (u.incident.0, u.actor))
            .collect();
        assert_eq!(got, [(1, "teamdynamix:Kim Lee".to_string())]);
        let q = d.query(&batch, Timestamp(90_000_000_000));
        assert_eq!(q.body.expect("body")["StatusClassIDs"], json!([3, 4]));
    }
}
