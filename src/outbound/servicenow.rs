//! ServiceNow Table API for `incident`: look up by `correlation_id`
//! before creating (so a retry after a lost answer never makes a second
//! ticket), then update the found `sys_id`. States: 1 New, 2 In Progress,
//! 3 On Hold, 6 Resolved, 7 Closed; impact and urgency 1..3 as incidentd
//! has them (ServiceNow derives the priority from both); timeline entries
//! go in as work notes.
//!
//! Reference fields (`assignment_group`, `caller_id`, `cmdb_ci`,
//! `business_service`, …) store a `sys_id`: a name written there as is
//! becomes a broken reference (an empty, unassigned field on the form), so
//! names are looked up in the referenced table first and the `sys_id` is
//! sent. Choice fields (`state`, `impact`, `close_code`) keep their actual
//! values, which is why `sysparm_input_display_value` (that would reinterpret
//! them as labels) is not used.

use super::destination::{Credential, Destination, TicketReader, work_note};
use super::inbound::InboundUpdate;
use super::link::{Answer, Link, Ticket, TicketCalls};
use super::poll::escape;
use super::template::Template;
use super::{EventKind, Method, Request, external_key, truncate};
use crate::domain::{Incident, IncidentId, Timestamp};
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;

pub const TABLE: &str = "/api/now/table/incident";

/// ServiceNow's string limits of the two text fields incidentd writes
/// (longer values are cut silently by the instance; cut here, visibly).
const SHORT_DESCRIPTION_MAX: usize = 160;
const DESCRIPTION_MAX: usize = 4000;

/// `GET` the newest ticket for `inc`, if one was created: an empty
/// `result` array means none. Newest, because a ticket closed there is
/// followed by another with the same `correlation_id` when the incident
/// comes back.
pub fn lookup(inc: &Incident) -> Request {
    let query = format!(
        "correlation_id={}^ORDERBYDESCsys_created_on",
        external_key(inc)
    );
    Request {
        base: super::Base::Url,
        method: Method::Get,
        path: format!(
            "{TABLE}?sysparm_query={}&sysparm_fields=sys_id%2Cnumber%2Cstate&sysparm_limit=1",
            escape(&query)
        ),
        body: None,
    }
}

/// `GET` one ticket's number and state.
pub fn read(sys_id: &str) -> Request {
    Request::get(format!(
        "{TABLE}/{}?sysparm_fields=sys_id%2Cnumber%2Cstate",
        escape(sys_id)
    ))
}

/// Whether a ticket read by [`read`] or [`lookup`] is Closed or Canceled:
/// read-only for an integration user, so it cannot follow the incident
/// any more.
pub fn closed(answer: &serde_json::Value) -> bool {
    let r = &answer["result"];
    let rec = if r.is_array() { &r[0] } else { r };
    let state = match &rec["state"] {
        serde_json::Value::String(s) => s.parse::<u64>().ok(),
        v => v.as_u64(),
    };
    matches!(state, Some(7 | 8))
}

fn number(answer: &serde_json::Value) -> Option<String> {
    let r = &answer["result"];
    let rec = if r.is_array() { &r[0] } else { r };
    rec["number"].as_str().map(str::to_string)
}

/// The reference fields of `incident` incidentd may write, with the table
/// each refers to and the query that finds a record by the name an
/// operator would write.
const REFERENCES: [(&str, &str, &str); 11] = [
    ("assignment_group", "sys_user_group", "name={}"),
    ("assigned_to", "sys_user", "user_name={}^ORemail={}"),
    ("caller_id", "sys_user", "user_name={}^ORemail={}"),
    ("opened_by", "sys_user", "user_name={}^ORemail={}"),
    ("cmdb_ci", "cmdb_ci", "name={}"),
    ("business_service", "cmdb_ci_service", "name={}"),
    ("service_offering", "service_offering", "name={}"),
    ("location", "cmn_location", "name={}"),
    ("company", "core_company", "name={}"),
    ("problem_id", "problem", "number={}"),
    ("rfc", "change_request", "number={}"),
];

/// The table `field` refers to, if it is a reference field.
pub fn reference_table(field: &str) -> Option<&'static str> {
    REFERENCES
        .iter()
        .find(|(f, _, _)| *f == field)
        .map(|(_, t, _)| *t)
}

/// A `sys_id` already (32 hex digits): sent as is.
pub fn is_sys_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `GET` the record of reference `field` named `value` (its `sys_id`);
/// `None` for a field that is not a reference.
pub fn find_reference(field: &str, value: &str) -> Option<Request> {
    let (_, table, query) = REFERENCES.iter().find(|(f, _, _)| *f == field)?;
    // `^` separates the terms of an encoded query; a literal one is `^^`.
    let v = value.replace('^', "^^");
    Some(Request::get(format!(
        "/api/now/table/{table}?sysparm_query={}&sysparm_fields=sys_id&sysparm_limit=1",
        escape(&query.replace("{}", &v))
    )))
}

/// How the ticket's fields are filled from the incident: templates the
/// operator may set, with defaults that suit a CMDB kept in step with
/// ServiceNow's (CI and service names as there).
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    pub short_description: Template,
    /// `None`: the built-in description (root CI, services, CIs, runbooks).
    pub description: Option<Template>,
    /// The resolution code of resolved tickets.
    pub close_code: String,
    /// Every other field, by name; one that renders empty is left out.
    pub set: Vec<(String, Template)>,
}

/// The `close_code` of a resolution when none is configured: one of the
/// resolution codes of current instances' incident form (the older
/// "Solved (Permanently)" is not a choice there; set `close_code` to the
/// instance's own when it differs).
pub const CLOSE_CODE: &str = "Solution provided";

/// The fields incidentd itself keeps: not for the operator's map.
pub const RESERVED: [&str; 11] = [
    "correlation_id",
    "correlation_display",
    "contact_type",
    "state",
    "impact",
    "urgency",
    "work_notes",
    "close_notes",
    "hold_reason",
    "short_description",
    "description",
];

impl Fields {
    /// The defaults: `[P1] title (incidentd-<id>)`, the built-in
    /// description, the incident's assignment group, the root CI as
    /// `cmdb_ci`, the first impacted service as `business_service`, and
    /// `caller` (the integration user, when known) as `caller_id`.
    pub fn defaults(caller: Option<&str>) -> Fields {
        let t = |s: &str| Template::parse(s).unwrap_or_else(|_| Template::literal(s));
        let mut set = vec![
            ("assignment_group".to_string(), t("{assignment_group}")),
            ("cmdb_ci".to_string(), t("{root_ci}")),
            ("business_service".to_string(), t("{service}")),
        ];
        if let Some(c) = caller {
            set.push(("caller_id".to_string(), Template::literal(c)));
        }
        Fields {
            short_description: t("[{priority}] {title}"),
            description: None,
            close_code: CLOSE_CODE.to_string(),
            set,
        }
    }

    /// Set (or replace) `field`.
    pub fn put(&mut self, field: &str, t: Template) {
        match self.set.iter_mut().find(|(f, _)| f == field) {
            Some(slot) => slot.1 = t,
            None => self.set.push((field.to_string(), t)),
        }
    }

    /// The operator's fields for `inc`, rendered; empty ones left out.
    pub fn values(&self, inc: &Incident) -> Vec<(String, String)> {
        self.set
            .iter()
            .map(|(f, t)| (f.clone(), t.render(inc).trim().to_string()))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }
}

/// ServiceNow's `hold_reason` choice values.
fn hold_reason(reason: &str) -> u8 {
    match reason {
        "awaiting_caller" => 1,
        "awaiting_problem" => 3,
        "awaiting_vendor" => 4,
        "awaiting_change" => 5,
        // Anything else: Awaiting Caller is the generic "waiting" choice.
        _ => 1,
    }
}

/// The fields that create the ticket (when [`lookup`] found none):
/// `values` are the operator's fields with references already turned
/// into `sys_id`s; `notes` (references that named no record, a ticket
/// this one follows) go in as its first work note.
pub fn create(
    inc: &Incident,
    fields: &Fields,
    values: &[(String, String)],
    notes: &[String],
    details_url: Option<&str>,
) -> Request {
    let description = match &fields.description {
        Some(t) => t.render(inc),
        None => description(inc, details_url),
    };
    let mut body = json!({
        "short_description": truncate(&one_line(&fields.short_description.render(inc)), SHORT_DESCRIPTION_MAX),
        "description": truncate(&description, DESCRIPTION_MAX),
        "impact": inc.impact.get(),
        "urgency": inc.urgency.get(),
        "correlation_id": external_key(inc),
        "correlation_display": "incidentd",
        "contact_type": "monitoring",
    });
    for (f, v) in values {
        body[f.as_str()] = json!(v);
    }
    if !notes.is_empty() {
        body["work_notes"] = json!(format!("incidentd: {}", notes.join("; ")));
    }
    Request::post(TABLE, body)
}

/// The update of ticket `sys_id` for `kind`; `note` (a timeline line)
/// becomes a work note.
pub fn update(
    inc: &Incident,
    sys_id: &str,
    kind: EventKind,
    note: &str,
    close_code: &str,
) -> Request {
    let mut body = json!({ "work_notes": note });
    match kind {
        EventKind::Opened | EventKind::PriorityChanged => {
            body["impact"] = json!(inc.impact.get());
            body["urgency"] = json!(inc.urgency.get());
        }
        EventKind::Acknowledged | EventKind::Resumed | EventKind::Reopened => {
            body["state"] = json!(2);
        }
        EventKind::OnHold => {
            body["state"] = json!(3);
            let reason = inc.current_hold().map_or("", |h| h.reason.as_str());
            body["hold_reason"] = json!(hold_reason(reason));
        }
        EventKind::Resolved => {
            body["state"] = json!(6);
            body["close_code"] = json!(close_code);
            body["close_notes"] = json!(format!(
                "Resolved in incidentd (incident {}): {note}",
                inc.id.0
            ));
        }
    }
    Request {
        base: super::Base::Url,
        method: Method::Patch,
        path: format!("{TABLE}/{sys_id}"),
        body: Some(body),
    }
}

/// A single-line field's text: line breaks and other controls as spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn description(inc: &Incident, details_url: Option<&str>) -> String {
    let mut d = format!(
        "Opened by incidentd (incident {}) at {}.\nRoot cause CI: {}\nImpacted services: {}\nCIs: {}",
        inc.id.0,
        inc.opened_at.to_rfc3339(),
        inc.root_ci.as_deref().unwrap_or("unknown"),
        inc.impacted_services.join(", "),
        inc.cis.join(", "),
    );
    for r in &inc.links.runbooks {
        d.push_str("\nRunbook: ");
        d.push_str(r);
    }
    if let Some(u) = details_url {
        d.push_str("\nDetails: ");
        d.push_str(&super::incident_link(u, inc));
    }
    d
}

/// The `sys_id` of the first record of a Table API answer
/// (`{"result": [...]}` of a query, `{"result": {...}}` of a create).
pub fn sys_id(answer: &serde_json::Value) -> Option<String> {
    let r = &answer["result"];
    let rec = if r.is_array() { &r[0] } else { r };
    rec["sys_id"].as_str().map(str::to_string)
}

/// How long a name's `sys_id` is trusted (groups and CIs are rarely
/// renamed), and how long a name that named nothing stays unnamed (so a
/// group created afterwards is used soon).
const FOUND_FOR_MS: i64 = 3_600_000;
const MISSING_FOR_MS: i64 = 300_000;

/// A ServiceNow instance's `incident` table.
pub struct ServiceNow {
    pub fields: Fields,
    pub credential: Credential,
    /// The incident's page on the web board (`{id}` replaced), in the
    /// built-in description.
    pub details_url: Option<String>,
    /// (field, name) → the `sys_id` it names (`None`: no record), and
    /// until when that is trusted.
    refs: Mutex<HashMap<(String, String), Named>>,
}

/// What a name was found to name (`None`: no record), and until when
/// that is trusted.
type Named = (Option<String>, Timestamp);

/// The operator's fields ready for a create, or the answer that ends the
/// delivery (a lookup to retry).
enum Resolved {
    Values(Vec<(String, String)>, Vec<String>),
    Failed(Answer),
}

impl ServiceNow {
    pub fn new(fields: Fields, credential: Credential, details_url: Option<String>) -> ServiceNow {
        ServiceNow {
            fields,
            credential,
            details_url,
            refs: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &(String, String), now: Timestamp) -> Option<Option<String>> {
        let refs = self.refs.lock().ok()?;
        refs.get(key)
            .filter(|(_, until)| *until > now)
            .map(|(id, _)| id.clone())
    }

    /// The operator's fields for `row`'s incident with every reference
    /// turned into a `sys_id` (cached); a name that names no record (or
    /// that this user may not read) is left out and said in `notes`, so
    /// the ticket is still made and shows why a field is empty.
    async fn resolve(&self, link: &Link, row: &OutboxRow) -> Resolved {
        let now = link.now();
        let mut values = Vec::new();
        let mut notes = Vec::new();
        for (field, value) in self.fields.values(&row.message.incident) {
            let req = if is_sys_id(&value) {
                None
            } else {
                find_reference(&field, &value)
            };
            let Some(req) = req else {
                values.push((field, value));
                continue;
            };
            let key = (field.clone(), value.clone());
            let id = match self.cached(&key, now) {
                Some(id) => id,
                None => {
                    let a = link.call(&req, row.id).await;
                    let retry = a
                        .status
                        .is_none_or(|s| matches!(s, 401 | 408 | 429) || s >= 500);
                    if retry {
                        return Resolved::Failed(a);
                    }
                    if !a.ok() {
                        let table = reference_table(&field).unwrap_or("?");
                        notes.push(format!(
                            "{field} {value:?} could not be looked up in {table} (HTTP {}); left empty",
                            a.status.unwrap_or(0)
                        ));
                        continue;
                    }
                    let id = sys_id(&a.json);
                    let ttl = if id.is_some() {
                        FOUND_FOR_MS
                    } else {
                        MISSING_FOR_MS
                    };
                    if let Ok(mut refs) = self.refs.lock() {
                        refs.insert(key, (id.clone(), Timestamp(now.0 + ttl)));
                    }
                    id
                }
            };
            match id {
                Some(id) => values.push((field, id)),
                None => notes.push(format!(
                    "{field} {value:?} names no {} record; left empty",
                    reference_table(&field).unwrap_or("?")
                )),
            }
        }
        Resolved::Values(values, notes)
    }

    /// The ticket `old` (read back) is closed, so read-only, while the
    /// incident goes on: a new ticket follows it, saying so, and takes its
    /// place. Found by the lookup first, so a retry after a lost answer
    /// makes no second one.
    async fn follow_up(
        &self,
        link: &Link,
        row: &OutboxRow,
        old_id: &str,
        old: &serde_json::Value,
    ) -> Result<Option<Answer>, StoreError> {
        let inc = &row.message.incident;
        let kind = row.message.kind;
        let found = link.call(&lookup(inc), row.id).await;
        if !found.ok() {
            return Ok(Some(found));
        }
        let id = match sys_id(&found.json) {
            Some(id) if id != old_id && !closed(&found.json) => {
                link.remember(row, &id).await?;
                id
            }
            _ => {
                let (values, mut notes) = match self.resolve(link, row).await {
                    Resolved::Values(v, n) => (v, n),
                    Resolved::Failed(a) => return Ok(Some(a)),
                };
                notes.insert(
                    0,
                    format!(
                        "incident {} goes on; it follows {}, closed in ServiceNow",
                        inc.id.0,
                        number(old).unwrap_or_else(|| old_id.to_string())
                    ),
                );
                let made = link
                    .call(
                        &create(
                            inc,
                            &self.fields,
                            &values,
                            &notes,
                            self.details_url.as_deref(),
                        ),
                        row.id,
                    )
                    .await;
                if !made.ok() {
                    return Ok(Some(made));
                }
                let Some(id) = sys_id(&made.json) else {
                    return Ok(Some(Answer::refused(
                        "the create answered without a sys_id",
                    )));
                };
                link.remember(row, &id).await?;
                if kind == EventKind::Reopened {
                    // The new ticket is the reopening.
                    return Ok(Some(made));
                }
                id
            }
        };
        let note = work_note(inc, kind);
        Ok(Some(
            link.call(
                &update(inc, &id, kind, &note, &self.fields.close_code),
                row.id,
            )
            .await,
        ))
    }
}

impl Destination for ServiceNow {
    fn credential(&self) -> Option<&Credential> {
        Some(&self.credential)
    }

    /// The ticket's `sys_id` (stored, else looked up by `correlation_id`,
    /// else created: a create whose answer was lost is found by the lookup
    /// of the retry, never made twice), then the update for the event; a
    /// ticket closed there meanwhile is followed by a new one.
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        Box::pin(async move {
            let inc = &row.message.incident;
            let kind = row.message.kind;
            let sys_id = match link.stored_ticket(row).await? {
                Some(s) => s,
                None => {
                    let (values, notes) = match self.resolve(link, row).await {
                        Resolved::Values(v, n) => (v, n),
                        Resolved::Failed(a) => return Ok(Some(a)),
                    };
                    let ticket = link
                        .ticket(row, || TicketCalls {
                            lookup: lookup(inc),
                            found: Box::new(sys_id),
                            create: create(
                                inc,
                                &self.fields,
                                &values,
                                &notes,
                                self.details_url.as_deref(),
                            ),
                            created: Box::new(sys_id),
                            no_id: "the create answered without a sys_id",
                        })
                        .await?;
                    match ticket {
                        Ticket::Known(s) => s,
                        Ticket::Created(_, answer) | Ticket::Done(answer) => {
                            return Ok(Some(answer));
                        }
                    }
                }
            };
            if kind == EventKind::Reopened {
                // Reopening is where a ticket closed meanwhile is met.
                let now = link.call(&read(&sys_id), row.id).await;
                if !now.ok() {
                    return Ok(Some(now));
                }
                if closed(&now.json) {
                    return self.follow_up(link, row, &sys_id, &now.json).await;
                }
            }
            let note = work_note(inc, kind);
            let answer = link
                .call(
                    &update(inc, &sys_id, kind, &note, &self.fields.close_code),
                    row.id,
                )
                .await;
            if answer.status == Some(403) {
                // Closed tickets are read-only for the integration role.
                let now = link.call(&read(&sys_id), row.id).await;
                if now.ok() && closed(&now.json) {
                    if kind == EventKind::Resolved {
                        return Ok(Some(Answer::done("the ticket was closed already")));
                    }
                    return self.follow_up(link, row, &sys_id, &now.json).await;
                }
            }
            Ok(Some(answer))
        })
    }

    fn reader(&self) -> Option<&dyn TicketReader> {
        Some(self)
    }
}

impl TicketReader for ServiceNow {
    fn query(&self, batch: &[(IncidentId, String)], _now: crate::domain::Timestamp) -> Request {
        let ids: Vec<String> = batch.iter().map(|(_, e)| e.clone()).collect();
        super::poll::servicenow(&ids)
    }

    /// In Progress set by the integration user itself is ours (basic
    /// auth tells who that is; with a bearer token acknowledgements are
    /// not read back).
    fn updates(
        &self,
        _batch: &[(IncidentId, String)],
        answer: &serde_json::Value,
    ) -> Vec<InboundUpdate> {
        let ours = match &self.credential {
            Credential::Basic { user, .. } => Some(user.as_str()),
            _ => None,
        };
        super::poll::servicenow_updates(answer, ours)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Hold, Timestamp};
    use crate::outbound::tests::incident;

    #[test]
    fn look_up_create_and_update_by_correlation_id() {
        let inc = incident();
        let l = lookup(&inc);
        assert_eq!(l.method, Method::Get);
        assert_eq!(
            l.path,
            "/api/now/table/incident?sysparm_query=correlation_id%3Dincidentd-42%5EORDERBYDESCsys_created_on&sysparm_fields=sys_id%2Cnumber%2Cstate&sysparm_limit=1"
        );
        let fields = Fields::defaults(Some("svc-incidentd"));
        let values = fields.values(&inc);
        assert_eq!(
            values,
            [
                ("assignment_group".to_string(), "team-dba".to_string()),
                ("cmdb_ci".to_string(), "pg-0".to_string()),
                ("business_service".to_string(), "checkout".to_string()),
                ("caller_id".to_string(), "svc-incidentd".to_string()),
            ]
        );
        let c = create(&inc, &fields, &values, &[], None)
            .body
            .expect("body");
        assert_eq!(c["correlation_id"], "incidentd-42");
        assert_eq!(c["short_description"], "[P1] PostgresDown on pg-0");
        assert_eq!(
            (c["impact"].as_u64(), c["urgency"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(c["assignment_group"], "team-dba");
        assert!(c["work_notes"].is_null(), "no note without one: {c}");
        let noted = create(
            &inc,
            &fields,
            &[],
            &["caller_id \"x\" names no sys_user record".into()],
            Some("https://incidentd.example.com/incidents/{id}"),
        )
        .body
        .expect("body");
        assert!(
            noted["work_notes"]
                .as_str()
                .is_some_and(|n| n.contains("names no sys_user"))
        );
        assert!(
            noted["description"].as_str().is_some_and(
                |d| d.ends_with("\nDetails: https://incidentd.example.com/incidents/42")
            ),
            "{noted}"
        );
        let r = update(
            &inc,
            "abc123",
            EventKind::Resolved,
            "auto-resolved",
            CLOSE_CODE,
        );
        assert_eq!(
            (r.method, r.path.as_str()),
            (Method::Patch, "/api/now/table/incident/abc123")
        );
        let b = r.body.expect("body");
        assert_eq!(b["state"], 6);
        assert_eq!(b["close_code"], "Solution provided");
        assert_eq!(b["work_notes"], "auto-resolved");
        let mut held = inc.clone();
        held.holds.push(Hold {
            reason: "awaiting_vendor".into(),
            start: Timestamp(0),
            end: None,
            by: None,
        });
        let h = update(&held, "abc123", EventKind::OnHold, "on hold", CLOSE_CODE)
            .body
            .expect("body");
        assert_eq!(
            (h["state"].as_u64(), h["hold_reason"].as_u64()),
            (Some(3), Some(4))
        );
        let a = update(&inc, "abc123", EventKind::Acknowledged, "ack", CLOSE_CODE)
            .body
            .expect("body");
        assert_eq!(a["state"], 2);
        assert_eq!(
            sys_id(&json!({"result": [{"sys_id": "s1", "number": "INC001"}]})),
            Some("s1".into())
        );
        assert_eq!(
            sys_id(&json!({"result": {"sys_id": "s2"}})),
            Some("s2".into())
        );
        assert_eq!(sys_id(&json!({"result": []})), None);
    }

    #[test]
    fn references_are_looked_up_by_name_and_text_fits_the_fields() {
        let r = find_reference("assignment_group", "DBA ^ On-call").expect("a reference");
        assert_eq!(
            r.path,
            "/api/now/table/sys_user_group?sysparm_query=name%3DDBA%20%5E%5E%20On-call&sysparm_fields=sys_id&sysparm_limit=1"
        );
        let u = find_reference("caller_id", "jane@example.com").expect("a reference");
        assert!(u.path.contains("sys_user?sysparm_query=user_name%3Djane%40example.com%5EORemail%3Djane%40example.com"), "{}", u.path);
        assert!(find_reference("category", "software").is_none());
        assert!(is_sys_id("0123456789abcdef0123456789ABCDEF"));
        assert!(!is_sys_id("Service Desk"));
        assert!(closed(&json!({"result": {"state": "7"}})));
        assert!(closed(&json!({"result": [{"state": 8}]})));
        assert!(!closed(&json!({"result": {"state": "6"}})));

        let mut inc = incident();
        inc.title = "x".repeat(2000).into();
        inc.impacted_services = (0..40)
            .map(|i| format!("service-{i:02}-{}", "s".repeat(80)))
            .collect();
        let mut fields = Fields::defaults(None);
        fields.put("category", Template::parse("database").expect("t"));
        fields.put("u_services", Template::parse("{services}").expect("t"));
        let c = create(&inc, &fields, &fields.values(&inc), &[], None)
            .body
            .expect("body");
        assert_eq!(
            c["short_description"].as_str().map(|s| s.chars().count()),
            Some(160)
        );
        assert!(
            c["description"]
                .as_str()
                .is_some_and(|s| s.chars().count() <= 4000)
        );
        assert_eq!(c["category"], "database");
        assert!(
            c["u_services"]
                .as_str()
                .is_some_and(|s| s.contains("service-39"))
        );
    }
}
