//! Outbound integrations (DESIGN §6): what a destination must hear of when
//! an incident changes, and the requests each destination's API takes for
//! it. Everything here is pure: the outbox sender (next) executes the
//! [`Request`]s, retries them by [`retry`], and records the outcome.
//!
//! Idempotency lives in the requests themselves, so that a retry after a
//! lost answer changes nothing downstream: PagerDuty and Opsgenie act by a
//! key derived from the incident id (`dedup_key`, `alias`), ServiceNow is
//! looked up by `correlation_id` before a create, and the generic webhook
//! carries a delivery id that receivers deduplicate on.

pub mod inbound;
pub mod jira;
pub mod opsgenie;
pub mod owned;
pub mod pagerduty;
pub mod poll;
pub mod retry;
pub mod route;
pub mod sender;
pub mod servicenow;
pub mod slack;
pub mod webhook;

use crate::domain::{Incident, IncidentState, Priority};
use serde::{Deserialize, Serialize};

/// A change of an incident that destinations are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Opened,
    PriorityChanged,
    Acknowledged,
    OnHold,
    Resumed,
    Resolved,
    Reopened,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Opened,
        EventKind::PriorityChanged,
        EventKind::Acknowledged,
        EventKind::OnHold,
        EventKind::Resumed,
        EventKind::Resolved,
        EventKind::Reopened,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::PriorityChanged => "priority_changed",
            EventKind::Acknowledged => "acknowledged",
            EventKind::OnHold => "on_hold",
            EventKind::Resumed => "resumed",
            EventKind::Resolved => "resolved",
            EventKind::Reopened => "reopened",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What changed from `before` (the version destinations last heard of,
/// `None` for a new incident) to `after`, in the order a person would tell
/// it: a reopen first, then the new priority, acknowledgement, hold, and
/// the resolution last. An incident that opens already resolved (replay,
/// a merge) is reported as opened and resolved.
pub fn changes(before: Option<&Incident>, after: &Incident) -> Vec<EventKind> {
    let mut out = Vec::new();
    let Some(b) = before else {
        out.push(EventKind::Opened);
        if after.acknowledged_at.is_some() {
            out.push(EventKind::Acknowledged);
        }
        if after.current_hold().is_some() {
            out.push(EventKind::OnHold);
        }
        if after.state == IncidentState::Resolved {
            out.push(EventKind::Resolved);
        }
        return out;
    };
    let reopened = b.state == IncidentState::Resolved && after.state.is_active();
    if reopened {
        out.push(EventKind::Reopened);
    }
    if b.priority != after.priority && after.state.is_active() {
        out.push(EventKind::PriorityChanged);
    }
    if after.state == IncidentState::Acknowledged
        && (b.state != IncidentState::Acknowledged || reopened)
    {
        out.push(EventKind::Acknowledged);
    }
    let (held_before, held_after) = (b.current_hold().is_some(), after.current_hold().is_some());
    if after.state.is_active() {
        if held_after && (!held_before || after.holds.len() > b.holds.len()) {
            out.push(EventKind::OnHold);
        } else if held_before && !held_after {
            out.push(EventKind::Resumed);
        }
    }
    if after.state == IncidentState::Resolved && b.state != IncidentState::Resolved {
        out.push(EventKind::Resolved);
    }
    out
}

/// The key that names an incident downstream (PagerDuty `dedup_key`,
/// Opsgenie `alias`, ServiceNow `correlation_id`): stable across retries,
/// restarts and instances, since incident ids are unique across shards.
pub fn external_key(inc: &Incident) -> String {
    format!("incidentd-{}", inc.id.0)
}

/// An HTTP method a destination API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
}

/// One HTTP call to a destination: `path` (with its query) is relative to
/// the destination's configured base URL, so a request can never leave the
/// host the operator configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<serde_json::Value>,
}

impl Request {
    pub fn post(path: impl Into<String>, body: serde_json::Value) -> Request {
        Request {
            method: Method::Post,
            path: path.into(),
            body: Some(body),
        }
    }
}

/// `s` in at most `max` characters, an ellipsis marking a cut (APIs cap
/// titles; a character is never split).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{keep}…")
}

/// A one-line summary: `[P1] title`.
pub fn summary(inc: &Incident) -> String {
    format!("[{}] {}", inc.priority, inc.title)
}

/// Severity words paging tools use, by priority.
pub fn severity(p: Priority) -> &'static str {
    match p.get() {
        1 => "critical",
        2 => "error",
        3 => "warning",
        _ => "info",
    }
}

/// Shared facts every destination's details carry.
pub fn details(inc: &Incident) -> serde_json::Value {
    serde_json::json!({
        "incident_id": inc.id.0,
        "priority": inc.priority.as_str(),
        "impact": inc.impact.get(),
        "urgency": inc.urgency.get(),
        "state": inc.state.as_str(),
        "root_ci": inc.root_ci,
        "cis": inc.cis,
        "impacted_services": inc.impacted_services,
        "assignment_group": inc.assignment_group,
        "alert_count": inc.alert_count,
        "opened_at": inc.opened_at,
        "change": inc.links.change,
        "problem": inc.links.problem,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{Hold, Timestamp};

    pub fn incident() -> Incident {
        let mut i = Incident::test_default();
        i.id = crate::domain::IncidentId(42);
        i.title = "PostgresDown on pg-0".into();
        i.priority = Priority::new(1).expect("P1");
        i.root_ci = Some("pg-0".into());
        i.impacted_services = vec!["checkout".into(), "search".into()];
        i.assignment_group = Some("team-dba".into());
        i.opened_at = Timestamp(1_795_000_000_000);
        i.links.runbooks = vec!["https://runbooks.example.com/pg".into()];
        i
    }

    #[test]
    fn a_new_incident_is_opened_and_whatever_it_already_is() {
        let mut i = incident();
        assert_eq!(changes(None, &i), [EventKind::Opened]);
        i.state = IncidentState::Resolved;
        assert_eq!(changes(None, &i), [EventKind::Opened, EventKind::Resolved]);
    }

    #[test]
    fn transitions_are_told_in_order() {
        let open = incident();
        let mut acked = open.clone();
        acked.state = IncidentState::Acknowledged;
        acked.acknowledged_at = Some(Timestamp(1));
        acked.priority = Priority::new(2).expect("P2");
        assert_eq!(
            changes(Some(&open), &acked),
            [EventKind::PriorityChanged, EventKind::Acknowledged]
        );
        // Nothing new: nothing to send.
        assert_eq!(changes(Some(&acked), &acked), []);
        let mut held = acked.clone();
        held.holds.push(Hold {
            reason: "awaiting_vendor".into(),
            start: Timestamp(2),
            end: None,
            by: None,
        });
        assert_eq!(changes(Some(&acked), &held), [EventKind::OnHold]);
        let mut resumed = held.clone();
        resumed.holds[0].end = Some(Timestamp(3));
        assert_eq!(changes(Some(&held), &resumed), [EventKind::Resumed]);
        let mut resolved = held.clone();
        resolved.state = IncidentState::Resolved;
        resolved.holds[0].end = Some(Timestamp(4));
        // Resolving ends the hold: only the resolution is news.
        assert_eq!(changes(Some(&held), &resolved), [EventKind::Resolved]);
        let mut reopened = resolved.clone();
        reopened.state = IncidentState::Open;
        reopened.acknowledged_at = None;
        assert_eq!(changes(Some(&resolved), &reopened), [EventKind::Reopened]);
    }

    #[test]
    fn kinds_round_trip_and_text_is_cut_on_characters() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(external_key(&incident()), "incidentd-42");
        assert_eq!(summary(&incident()), "[P1] PostgresDown on pg-0");
    }
}
