//! PagerDuty: the Events API v2 (`POST /v2/enqueue` at `url`) for every
//! change, and, with a REST API key (`api_token`), the REST API (at
//! `api_url`) for what an event cannot change.
//!
//! Events: `trigger` / `acknowledge` / `resolve` by a `dedup_key` derived
//! from the incident id, so a retried trigger is deduplicated by PagerDuty
//! instead of paging twice. A trigger for an alert that is already open
//! only adds to its log: the incident keeps the urgency and priority it
//! opened with.
//!
//! REST: after the trigger of a `priority_changed`, and of the opening or
//! reopening of a P1 or P2 incident (the ones worth a priority from the
//! start; lower ones keep what the service's rules give them), the
//! PagerDuty incident of the alert is looked up and raised to incidentd's
//! priority:
//! - priority: the account's priority named for incidentd's
//!   (`priority_names`; P1..P5 by default, PagerDuty's default scheme).
//!   An account without priorities (an empty list) gets the urgency alone.
//! - urgency: high for P1 and P2, low for P3..P5.
//! - Raised, never lowered: incidentd's own priority only ever rises, and
//!   a higher priority or a high urgency found in PagerDuty was set there
//!   on purpose (by a responder, an event rule): lowering it could stop a
//!   page someone chose. So in effect urgency is only ever set to high.
//!
//! A refused REST call (403: a read-only key; 404; 400) does not undo the
//! delivery: the event arrived, and the incident's timeline says what
//! PagerDuty answered (`outbound_failed`). No answer, 429 and 5xx are
//! retried like any call; the retry repeats the trigger, which PagerDuty
//! deduplicates on the open alert (a log entry, no new page), and finds
//! the update made if it was. All calls of a message share the
//! destination's rate limit; the Events API's (120 events a minute per
//! routing key) is the tighter one, the REST API allows about 960 a
//! minute per key.

use super::destination::{Call, Destination};
use super::link::{Answer, Link};
use super::retry::transient;
use super::{Base, EventKind, Method, Request, details, external_key, severity, summary, truncate};
use crate::domain::{Incident, Priority};
use crate::store::{BoxFuture, OutboxRow, StoreError};
use reqwest::RequestBuilder;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// PagerDuty's default priority scheme, P1 (most severe) to P5.
pub const DEFAULT_PRIORITY_NAMES: [&str; 5] = ["P1", "P2", "P3", "P4", "P5"];

/// The REST API's versioned media type (its `Accept` header).
pub const REST_MEDIA_TYPE: &str = "application/vnd.pagerduty+json;version=2";

/// How long the account's priorities are kept before they are listed
/// again (they change rarely; a rename is picked up within this).
const PRIORITIES_FOR: Duration = Duration::from_secs(600);

/// Waits before each incident lookup: the Events API creates incidents
/// asynchronously, so a lookup right after the trigger of a new alert may
/// find nothing yet. The destination's sender waits meanwhile: 2.5 s at
/// most, and only while nothing is found.
const LOOKUP_WAITS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_millis(2_000),
];

/// The event for `kind`, or `None` when PagerDuty has nothing to hear
/// (holds have no equivalent in an alert's lifecycle).
pub fn event(routing_key: &str, inc: &Incident, kind: EventKind) -> Option<Request> {
    let action = match kind {
        EventKind::Opened | EventKind::Reopened | EventKind::PriorityChanged => "trigger",
        EventKind::Acknowledged => "acknowledge",
        EventKind::Resolved => "resolve",
        EventKind::OnHold | EventKind::Resumed => return None,
    };
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": external_key(inc),
    });
    if action == "trigger" {
        let mut payload = json!({
            // PagerDuty caps the summary at 1024 characters.
            "summary": truncate(&summary(inc), 1024),
            "source": inc.root_ci.as_deref().unwrap_or("incidentd"),
            "severity": severity(inc.priority),
            "timestamp": inc.opened_at,
            "custom_details": details(inc),
        });
        // Optional fields only when known (no nulls in the event).
        if let Some(ci) = &inc.root_ci {
            payload["component"] = json!(ci);
        }
        if let Some(s) = inc.impacted_services.first() {
            payload["group"] = json!(s);
        }
        body["payload"] = payload;
        body["client"] = json!("incidentd");
        let links: Vec<_> = inc
            .links
            .runbooks
            .iter()
            .map(|r| json!({"href": r, "text": "runbook"}))
            .collect();
        if !links.is_empty() {
            body["links"] = json!(links);
        }
    }
    Some(Request::post("/v2/enqueue", body))
}

/// Whether an event calls for the REST update: a new priority, or an
/// opening at P1 or P2.
pub fn follows(kind: EventKind, priority: Priority) -> bool {
    match kind {
        EventKind::PriorityChanged => true,
        EventKind::Opened | EventKind::Reopened => priority.get() <= 2,
        _ => false,
    }
}

/// The open PagerDuty incident that holds the alert of `inc`'s dedup_key.
/// "List incidents"
/// (https://developer.pagerduty.com/api-reference/9d0b4b12e36f9-list-incidents):
/// `incident_key` "Incidents with child alerts do not have an incident
/// key; querying by incident key will return incidents whose alerts have
/// alert_key matching the given incident key". An Events API v2 event's
/// `dedup_key` is its alert's `alert_key`, so this finds the incident even
/// when alert grouping put the alert into an incident of another key.
/// `date_range=all`: by default only incidents of the last month are
/// searched, and an open one may be older.
pub fn find(inc: &Incident) -> Request {
    Request::get(format!(
        "/incidents?incident_key={}&statuses[]=triggered&statuses[]=acknowledged&date_range=all",
        external_key(inc)
    ))
    .on_api()
}

/// "List priorities"
/// (https://developer.pagerduty.com/api-reference/0fa9ad52bf2d2-list-priorities):
/// the account's priorities, "in order (most to least severe)".
pub fn list_priorities() -> Request {
    Request::get("/priorities?limit=100").on_api()
}

/// "Update an incident"
/// (https://developer.pagerduty.com/api-reference/8a0e1aa2ec666-update-an-incident):
/// `PUT /incidents/{id}` with `{"incident": {...}}`; the `From` header is
/// required with an account-level key.
pub fn update(id: &str, incident: Value) -> Request {
    Request {
        method: Method::Put,
        path: format!("/incidents/{id}"),
        body: Some(json!({ "incident": incident })),
        base: Base::Api,
    }
}

/// A PagerDuty incident as the lookup found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub urgency: Option<String>,
    pub priority_id: Option<String>,
}

/// The first incident of a "List incidents" answer. Its id goes into a
/// path: one that is not a PagerDuty id (letters and digits) is not used.
pub fn found(answer: &Value) -> Option<Found> {
    answer["incidents"].as_array()?.iter().find_map(|i| {
        let id = i["id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))?;
        Some(Found {
            id: id.to_string(),
            urgency: i["urgency"].as_str().map(str::to_string),
            priority_id: i["priority"]["id"].as_str().map(str::to_string),
        })
    })
}

/// One of the account's priorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdPriority {
    pub id: String,
    pub name: String,
}

/// The priorities of a "List priorities" answer, most severe first.
pub fn priorities(answer: &Value) -> Vec<PdPriority> {
    answer["priorities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(PdPriority {
                id: p["id"].as_str()?.to_string(),
                name: p["name"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// What the account's priorities are known as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// Most severe first; empty when the account has priorities off.
    Names(Vec<PdPriority>),
    /// The list was refused: why.
    Unreadable(String),
}

/// What raising a PagerDuty incident to incidentd's priority takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The update, `None` when PagerDuty is already as high.
    pub update: Option<Request>,
    /// Why the priority could not be set, when it could not.
    pub unset: Option<String>,
}

/// How `found` is raised to `target`, named by `names` in the account's
/// `listed` priorities: the priority when the account's is lower (a later
/// one in its list) or none; high urgency for P1 and P2 where it is low.
/// Nothing is ever lowered (see the module's documentation).
pub fn plan(found: &Found, listed: &Listed, target: Priority, names: &[String; 5]) -> Plan {
    let name = &names[usize::from(target.get() - 1)];
    let mut incident = json!({ "type": "incident_reference" });
    let mut unset = None;
    match listed {
        Listed::Names(list) if list.is_empty() => {}
        Listed::Names(list) => match list.iter().position(|p| &p.name == name) {
            Some(rank) => {
                let current = found
                    .priority_id
                    .as_deref()
                    .and_then(|id| list.iter().position(|p| p.id == id));
                if current.is_none_or(|c| rank < c) {
                    incident["priority"] =
                        json!({ "id": list[rank].id, "type": "priority_reference" });
                }
            }
            None => {
                let have: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
                unset = Some(format!(
                    "PagerDuty has no priority named {name:?} (it has {}): set priority_names",
                    have.join(", ")
                ));
            }
        },
        Listed::Unreadable(why) => {
            unset = Some(format!("PagerDuty's priorities could not be listed: {why}"));
        }
    }
    let urgency = if target.get() <= 2 { "high" } else { "low" };
    if urgency == "high" && found.urgency.as_deref() != Some("high") {
        incident["urgency"] = json!(urgency);
    }
    let changes = incident.as_object().is_some_and(|o| o.len() > 1);
    Plan {
        update: changes.then(|| update(&found.id, incident)),
        unset: unset.map(|why| format!("the priority of incident {} was not set: {why}", found.id)),
    }
}

/// A refused REST call as PagerDuty explains it: its status, the error's
/// `message` and `errors` ("Errors",
/// https://developer.pagerduty.com/docs/rest-api-v2/errors/), else the
/// answer's text.
pub fn refusal(status: Option<u16>, answer: &Value, detail: &str) -> String {
    let e = &answer["error"];
    let mut why = e["message"]
        .as_str()
        .map_or_else(|| detail.to_string(), str::to_string);
    let more: Vec<&str> = e["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !more.is_empty() {
        why = format!("{why} ({})", more.join("; "));
    }
    let why = truncate(&why, 300);
    match status {
        Some(s) => format!("HTTP {s}: {why}"),
        None => why,
    }
}

/// The REST API side of a destination, its key read.
pub struct Rest {
    pub token: String,
    /// The `From` header: the email of the user updates are made as.
    pub from: String,
    pub priority_names: [String; 5],
    /// Whether a 401 is retried (as every call of the destination).
    pub retry_unauthorized: bool,
}

/// A PagerDuty service's Events API integration (the routing key rides in
/// each event's body, no header), with the REST API when a key is set.
pub struct PagerDuty {
    routing_key: String,
    rest: Option<Rest>,
    /// The account's priorities, and when they were listed.
    listed: Mutex<Option<(Instant, Listed)>>,
}

/// How the REST update after a delivered event went.
enum Followed {
    /// Made, or nothing to make.
    Done,
    /// A transient failure: the message is tried again with this answer.
    Again(Answer),
    /// Refused for good: why, for the timeline.
    Failed(String),
}

impl PagerDuty {
    pub fn new(routing_key: String, rest: Option<Rest>) -> PagerDuty {
        PagerDuty {
            routing_key,
            rest,
            listed: Mutex::new(None),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Listed)>> {
        // A poisoned cache is only a cache.
        self.listed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The account's priorities: kept [`PRIORITIES_FOR`]; `Err` with the
    /// answer of a transient failure. 402 ("the account does not have the
    /// abilities", a plan without priorities) is an account without them.
    async fn priorities(&self, link: &Link, delivery: i64, rest: &Rest) -> Result<Listed, Answer> {
        if let Some((at, listed)) = self.cached().as_ref()
            && at.elapsed() < PRIORITIES_FOR
        {
            return Ok(listed.clone());
        }
        let a = link.call(&list_priorities(), delivery).await;
        let listed = if a.ok() {
            Listed::Names(priorities(&a.json))
        } else if transient(a.status, rest.retry_unauthorized) {
            return Err(during(a, "listing PagerDuty's priorities"));
        } else if a.status == Some(402) {
            Listed::Names(Vec::new())
        } else {
            Listed::Unreadable(refusal(a.status, &a.json, &a.detail))
        };
        *self.cached() = Some((Instant::now(), listed.clone()));
        Ok(listed)
    }

    /// Raise the PagerDuty incident of `row`'s alert to its priority.
    async fn follow(&self, link: &Link, row: &OutboxRow, rest: &Rest) -> Followed {
        let inc = &row.message.incident;
        let mut incident = None;
        for wait in LOOKUP_WAITS {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let a = link.call(&find(inc), row.id).await;
            if !a.ok() {
                return if transient(a.status, rest.retry_unauthorized) {
                    Followed::Again(during(a, "looking up the PagerDuty incident"))
                } else {
                    Followed::Failed(format!(
                        "PagerDuty refused the incident lookup: {}",
                        refusal(a.status, &a.json, &a.detail)
                    ))
                };
            }
            incident = found(&a.json);
            if incident.is_some() {
                break;
            }
        }
        let Some(incident) = incident else {
            return Followed::Failed(format!(
                "no open PagerDuty incident holds the alert {} (an event rule may have suppressed it): its priority was not set",
                external_key(inc)
            ));
        };
        let listed = match self.priorities(link, row.id, rest).await {
            Ok(l) => l,
            Err(a) => return Followed::Again(a),
        };
        let plan = plan(&incident, &listed, inc.priority, &rest.priority_names);
        if let Some(req) = plan.update {
            let a = link.call(&req, row.id).await;
            if !a.ok() {
                return if transient(a.status, rest.retry_unauthorized) {
                    Followed::Again(during(a, "updating the PagerDuty incident"))
                } else {
                    Followed::Failed(format!(
                        "PagerDuty refused to raise incident {} to {}: {}",
                        incident.id,
                        inc.priority,
                        refusal(a.status, &a.json, &a.detail)
                    ))
                };
            }
        }
        match plan.unset {
            Some(why) => Followed::Failed(why),
            None => Followed::Done,
        }
    }
}

/// A transient REST failure, its detail saying which call it was.
fn during(mut a: Answer, what: &str) -> Answer {
    a.detail = format!("{what}: {}", a.detail);
    a
}

impl Destination for PagerDuty {
    /// REST calls carry the key (`Authorization: Token token=…`) and the
    /// user they act as (`From`); events carry their routing key in the
    /// body.
    fn authorize(&self, rb: RequestBuilder, call: &Call<'_>) -> RequestBuilder {
        match (&self.rest, call.base) {
            (Some(rest), Base::Api) => rb
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("Token token={}", rest.token),
                )
                .header(reqwest::header::FROM, &rest.from),
            _ => rb,
        }
    }

    fn accept(&self, call: &Call<'_>) -> &'static str {
        match call.base {
            Base::Api => REST_MEDIA_TYPE,
            Base::Url => "application/json",
        }
    }

    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        Box::pin(async move {
            let inc = &row.message.incident;
            let kind = row.message.kind;
            let Some(req) = event(&self.routing_key, inc, kind) else {
                return Ok(None);
            };
            let sent = link.call(&req, row.id).await;
            let Some(rest) = self
                .rest
                .as_ref()
                .filter(|_| sent.ok() && follows(kind, inc.priority))
            else {
                return Ok(Some(sent));
            };
            Ok(Some(match self.follow(link, row, rest).await {
                Followed::Done => sent,
                Followed::Again(a) => a,
                Followed::Failed(why) => sent.noting(why),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    #[test]
    fn trigger_carries_the_payload_ack_and_resolve_only_the_key() {
        let inc = incident();
        let r = event("R0UTING", &inc, EventKind::Opened).expect("a trigger");
        assert_eq!(r.path, "/v2/enqueue");
        let b = r.body.expect("body");
        assert_eq!(b["event_action"], "trigger");
        assert_eq!(b["dedup_key"], "incidentd-42");
        assert_eq!(b["routing_key"], "R0UTING");
        assert_eq!(b["payload"]["summary"], "[P1] PostgresDown on pg-0");
        assert_eq!(b["payload"]["severity"], "critical");
        assert_eq!(b["payload"]["source"], "pg-0");
        assert_eq!(b["payload"]["timestamp"], "2026-11-18T11:06:40.000Z");
        assert_eq!(
            b["payload"]["custom_details"]["impacted_services"][1],
            "search"
        );
        assert_eq!(b["links"][0]["href"], "https://runbooks.example.com/pg");
        let ack = event("R0UTING", &inc, EventKind::Acknowledged).expect("ack");
        let b = ack.body.expect("body");
        assert_eq!(b["event_action"], "acknowledge");
        assert_eq!(b["dedup_key"], "incidentd-42");
        assert!(b.get("payload").is_none());
        let res = event("R0UTING", &inc, EventKind::Resolved).expect("resolve");
        assert_eq!(res.body.expect("body")["event_action"], "resolve");
        assert!(event("R0UTING", &inc, EventKind::OnHold).is_none());
    }

    fn names() -> [String; 5] {
        DEFAULT_PRIORITY_NAMES.map(String::from)
    }

    fn scheme() -> Listed {
        Listed::Names(
            [
                ("PA", "P1"),
                ("PB", "P2"),
                ("PC", "P3"),
                ("PD", "P4"),
                ("PE", "P5"),
            ]
            .map(|(id, name)| PdPriority {
                id: id.into(),
                name: name.into(),
            })
            .to_vec(),
        )
    }

    fn p(n: u8) -> Priority {
        Priority::new(n).expect("priority")
    }

    #[test]
    fn rest_requests_go_to_the_api_url_by_the_alert_key() {
        let inc = incident();
        let f = find(&inc);
        assert_eq!((f.method, f.base), (Method::Get, Base::Api));
        assert_eq!(
            f.path,
            "/incidents?incident_key=incidentd-42&statuses[]=triggered&statuses[]=acknowledged&date_range=all"
        );
        let l = list_priorities();
        assert_eq!(
            (l.base, l.path.as_str()),
            (Base::Api, "/priorities?limit=100")
        );
        let u = update(
            "Q1ABC",
            json!({"type": "incident_reference", "urgency": "high"}),
        );
        assert_eq!((u.method, u.base), (Method::Put, Base::Api));
        assert_eq!(u.path, "/incidents/Q1ABC");
        assert_eq!(
            u.body.expect("body"),
            json!({"incident": {"type": "incident_reference", "urgency": "high"}})
        );
        // Events stay on the events URL.
        let e = event("R0UTING", &inc, EventKind::PriorityChanged).expect("trigger");
        assert_eq!(e.base, Base::Url);
    }

    #[test]
    fn which_events_follow_with_a_rest_update() {
        assert!(follows(EventKind::PriorityChanged, p(3)));
        assert!(follows(EventKind::Opened, p(1)));
        assert!(follows(EventKind::Reopened, p(2)));
        assert!(!follows(EventKind::Opened, p(3)));
        assert!(!follows(EventKind::Acknowledged, p(1)));
        assert!(!follows(EventKind::Resolved, p(1)));
    }

    #[test]
    fn the_lookup_answer_and_the_priorities_are_read() {
        let answer = json!({"incidents": [
            {"id": "../x", "urgency": "low"},
            {"id": "Q1ABC", "urgency": "low", "incident_key": "other",
             "priority": {"id": "PC", "type": "priority_reference", "summary": "P3"}}
        ]});
        assert_eq!(
            found(&answer),
            Some(Found {
                id: "Q1ABC".into(),
                urgency: Some("low".into()),
                priority_id: Some("PC".into()),
            })
        );
        assert_eq!(found(&json!({"incidents": []})), None);
        let listed = priorities(&json!({"priorities": [
            {"id": "PA", "name": "SEV1"}, {"id": "PB"}, {"id": "PC", "name": "SEV3"}]}));
        assert_eq!(
            listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["SEV1", "SEV3"]
        );
    }

    #[test]
    fn a_raise_sets_priority_and_high_urgency() {
        let low_p3 = Found {
            id: "Q1ABC".into(),
            urgency: Some("low".into()),
            priority_id: Some("PC".into()),
        };
        let plan1 = plan(&low_p3, &scheme(), p(1), &names());
        assert_eq!(plan1.unset, None);
        let req = plan1.update.expect("an update");
        assert_eq!(req.path, "/incidents/Q1ABC");
        assert_eq!(
            req.body.expect("body"),
            json!({"incident": {"type": "incident_reference",
                "priority": {"id": "PA", "type": "priority_reference"}, "urgency": "high"}})
        );
        // P3 -> P4 at incidentd would lower PagerDuty's: nothing, and a
        // low-urgency target leaves the urgency alone.
        assert_eq!(plan(&low_p3, &scheme(), p(4), &names()).update, None);
        // No priority yet: a P3 is set, the urgency kept.
        let bare = Found {
            priority_id: None,
            ..low_p3.clone()
        };
        assert_eq!(
            plan(&bare, &scheme(), p(3), &names())
                .update
                .and_then(|r| r.body),
            Some(json!({"incident": {"type": "incident_reference",
                "priority": {"id": "PC", "type": "priority_reference"}}}))
        );
    }

    #[test]
    fn nothing_is_lowered() {
        // A responder raised it to P1, high: incidentd's P2 leaves it.
        let raised = Found {
            id: "Q1ABC".into(),
            urgency: Some("high".into()),
            priority_id: Some("PA".into()),
        };
        assert_eq!(
            plan(&raised, &scheme(), p(2), &names()),
            Plan {
                update: None,
                unset: None
            }
        );
        // Already there: no call.
        assert_eq!(plan(&raised, &scheme(), p(1), &names()).update, None);
        // High urgency, P3: the priority only.
        let high_p3 = Found {
            priority_id: Some("PC".into()),
            ..raised
        };
        let body = plan(&high_p3, &scheme(), p(2), &names())
            .update
            .and_then(|r| r.body)
            .expect("an update");
        assert!(body["incident"].get("urgency").is_none(), "{body}");
        assert_eq!(body["incident"]["priority"]["id"], "PB");
    }

    #[test]
    fn without_priorities_the_urgency_alone() {
        let low = Found {
            id: "Q1ABC".into(),
            urgency: Some("low".into()),
            priority_id: None,
        };
        let off = plan(&low, &Listed::Names(Vec::new()), p(1), &names());
        assert_eq!(off.unset, None, "priorities off is no failure");
        assert_eq!(
            off.update.and_then(|r| r.body),
            Some(json!({"incident": {"type": "incident_reference", "urgency": "high"}}))
        );
        // Renamed priorities without priority_names: said, urgency still set.
        let renamed = Listed::Names(vec![PdPriority {
            id: "PX".into(),
            name: "SEV1".into(),
        }]);
        let r = plan(&low, &renamed, p(1), &names());
        assert!(r.update.is_some());
        assert!(
            r.unset
                .as_deref()
                .is_some_and(|u| u.contains("\"P1\"") && u.contains("SEV1")),
            "{r:?}"
        );
        // Mapped: found by its name.
        let mut sev = names();
        sev[0] = "SEV1".into();
        let r = plan(&low, &renamed, p(1), &sev);
        assert_eq!(r.unset, None);
        assert_eq!(
            r.update.and_then(|r| r.body).expect("body")["incident"]["priority"]["id"],
            "PX"
        );
        let unreadable = plan(
            &low,
            &Listed::Unreadable("HTTP 403: Forbidden".into()),
            p(1),
            &names(),
        );
        assert!(
            unreadable
                .unset
                .is_some_and(|u| u.contains("HTTP 403: Forbidden"))
        );
    }

    #[test]
    fn refusals_are_told_in_pagerduty_s_words() {
        let body = json!({"error": {"message": "Access Denied", "code": 2010}});
        assert_eq!(refusal(Some(403), &body, "raw"), "HTTP 403: Access Denied");
        let body = json!({"error": {"message": "Invalid Input Provided", "code": 2001,
            "errors": ["Priority not found"]}});
        assert_eq!(
            refusal(Some(400), &body, "raw"),
            "HTTP 400: Invalid Input Provided (Priority not found)"
        );
        assert_eq!(
            refusal(Some(404), &Value::Null, "Not Found"),
            "HTTP 404: Not Found"
        );
    }
}
