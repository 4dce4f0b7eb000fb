//! PagerDuty Events API v2 (`POST /v2/enqueue` on events.pagerduty.com):
//! one event per change, `trigger` / `acknowledge` / `resolve` by a
//! `dedup_key` derived from the incident id, so a retried trigger is
//! deduplicated by PagerDuty instead of paging twice.

use super::destination::{Destination, one_call};
use super::link::{Answer, Link};
use super::{EventKind, Request, details, external_key, severity, summary, truncate};
use crate::domain::Incident;
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::json;

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

/// A PagerDuty service's Events API integration: the routing key rides in
/// each event's body, no header.
pub struct PagerDuty {
    pub routing_key: String,
}

impl Destination for PagerDuty {
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        let req = event(&self.routing_key, &row.message.incident, row.message.kind);
        Box::pin(one_call(link, row, req))
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
}
