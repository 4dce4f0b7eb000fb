//! Outbound integrations (DESIGN §6): what a destination must hear of when
//! an incident changes, and the requests each destination's API takes for
//! it. Each destination implements [`destination::Destination`] in its own
//! file from pure request builders; the outbox sender ([`sender`]) delivers
//! through it ([`link`] makes the calls), retries by [`retry`] and records
//! the outcome; [`poller`] reads tickets back.
//!
//! Idempotency lives in the requests themselves, so that a retry after a
//! lost answer changes nothing downstream: PagerDuty and Opsgenie act by a
//! key derived from the incident id (`dedup_key`, `alias`), ServiceNow is
//! looked up by `correlation_id` before a create, a Slack app's message by
//! the metadata it carries before a post, and the generic webhook carries
//! a delivery id that receivers deduplicate on.

pub mod destination;
pub mod freshservice;
pub mod inbound;
pub mod jira;
pub mod link;
pub mod opsgenie;
pub mod owned;
pub mod pagerduty;
pub mod poll;
pub mod poller;
pub mod retention;
pub mod retry;
pub mod sender;
pub mod servicedeskplus;
pub mod servicenow;
pub mod settings;
pub mod slack;
pub mod stackstorm;
pub mod teamdynamix;
pub mod template;
pub mod webhook;

pub use crate::domain::outbox::{EventKind, changes};
use crate::domain::{Incident, Priority};
pub use destination::Credential;
use serde::{Deserialize, Serialize};

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
    Delete,
}

/// Which of a destination's configured base URLs a request is for. A
/// request names one of them, never a host: it can only reach what the
/// operator configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Base {
    /// The destination's `url` (every kind).
    #[default]
    Url,
    /// Its second API, `api_url`: PagerDuty's REST API beside its Events
    /// API. A destination without one refuses the request.
    Api,
}

/// One HTTP call to a destination: `path` (with its query) is relative to
/// the configured base URL `base` names, so a request can never leave the
/// hosts the operator configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<serde_json::Value>,
    pub base: Base,
}

impl Request {
    pub fn post(path: impl Into<String>, body: serde_json::Value) -> Request {
        Request {
            method: Method::Post,
            path: path.into(),
            body: Some(body),
            base: Base::Url,
        }
    }

    /// A `GET` of `path` (no body) on the destination's `url`.
    pub fn get(path: impl Into<String>) -> Request {
        Request {
            method: Method::Get,
            path: path.into(),
            body: None,
            base: Base::Url,
        }
    }

    /// The same request on the destination's `api_url`.
    pub fn on_api(self) -> Request {
        Request {
            base: Base::Api,
            ..self
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

/// A ticket's one-line title, `[P1] title (incidentd-42)`, within `max`
/// characters: line breaks as spaces (ticket tools refuse them in a title),
/// and the key kept whole at the end, where a search finds it when no
/// label or tag could be set.
pub fn keyed_title(inc: &Incident, max: usize) -> String {
    let key = format!(" ({})", external_key(inc));
    let line: String = summary(inc)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{}{key}", truncate(&line, max - key.chars().count()))
}

/// A ticket's plain-text description: who opened it and when, the root
/// cause, the impacted services, runbooks and the incident's page.
pub fn ticket_text(inc: &Incident, details_url: Option<&str>) -> String {
    let mut d = format!(
        "Opened by incidentd (incident {}, {}) at {}.\nRoot cause CI: {}\nImpacted services: {}",
        inc.id.0,
        inc.priority,
        inc.opened_at.to_rfc3339(),
        inc.root_ci.as_deref().unwrap_or("unknown"),
        inc.impacted_services.join(", "),
    );
    for r in &inc.links.runbooks {
        d.push_str("\nRunbook: ");
        d.push_str(r);
    }
    if let Some(u) = details_url {
        d.push_str("\nDetails: ");
        d.push_str(&incident_link(u, inc));
    }
    d
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
/// A destination's link to the incident (`{id}` replaced by its id): its
/// page on the web board, where `ui.public_url` or `incident_url` says.
pub fn incident_link(template: &str, inc: &Incident) -> String {
    template.replace("{id}", &inc.id.0.to_string())
}

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
    use crate::domain::Timestamp;

    pub fn incident() -> Incident {
        let mut i = Incident::test_default();
        i.id = crate::domain::IncidentId(42);
        i.title = "PostgresDown on pg-0".into();
        i.priority = Priority::new(1).expect("P1");
        i.root_ci = Some("pg-0".into());
        i.impacted_services = vec!["checkout".into(), "search".into()].into();
        i.assignment_group = Some("team-dba".into());
        i.opened_at = Timestamp(1_795_000_000_000);
        i.links.runbooks = vec!["https://runbooks.example.com/pg".into()].into();
        i
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
