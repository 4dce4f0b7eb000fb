//! Opsgenie Alert API (`/v2/alerts`, header `Authorization: GenieKey …`
//! added by the sender): create by `alias`, then act on the alert by that
//! alias (`identifierType=alias`), so a retried create is deduplicated by
//! Opsgenie and later calls need no stored id.

use super::destination::{Call, Destination, one_call};
use super::link::{Answer, Link};
use super::{EventKind, Request, details, external_key, truncate};
use crate::domain::Incident;
use crate::store::{BoxFuture, OutboxRow, StoreError};
use reqwest::RequestBuilder;
use serde_json::json;

pub fn request(inc: &Incident, kind: EventKind, actor: Option<&str>) -> Request {
    let alias = external_key(inc);
    let on = |action: &str| format!("/v2/alerts/{alias}/{action}?identifierType=alias");
    let by = actor.unwrap_or("incidentd");
    match kind {
        EventKind::Opened | EventKind::Reopened => {
            let mut tags: Vec<String> = inc.impacted_services.clone();
            tags.push(inc.priority.as_str().to_string());
            Request::post(
                "/v2/alerts",
                json!({
                    // Opsgenie caps the message at 130 characters.
                    "message": truncate(&inc.title, 130),
                    "alias": alias,
                    "description": truncate(&description(inc), 15_000),
                    "priority": inc.priority.as_str(),
                    "tags": tags,
                    "entity": inc.root_ci,
                    "source": "incidentd",
                    "details": flat_details(inc),
                }),
            )
        }
        EventKind::PriorityChanged => Request {
            method: super::Method::Put,
            path: on("priority"),
            body: Some(json!({ "priority": inc.priority.as_str() })),
        },
        EventKind::Acknowledged => Request::post(
            on("acknowledge"),
            json!({ "user": by, "source": "incidentd", "note": format!("acknowledged by {by} in incidentd") }),
        ),
        EventKind::Resolved => Request::post(
            on("close"),
            json!({ "user": by, "source": "incidentd", "note": "resolved in incidentd" }),
        ),
        EventKind::OnHold | EventKind::Resumed => {
            let note = match (kind, inc.current_hold()) {
                (EventKind::OnHold, Some(h)) => format!("on hold in incidentd: {}", h.reason),
                _ => "taken off hold in incidentd".to_string(),
            };
            Request::post(
                on("notes"),
                json!({ "user": by, "source": "incidentd", "note": note }),
            )
        }
    }
}

fn description(inc: &Incident) -> String {
    let mut d = format!(
        "incidentd incident {} ({}), root cause {}, impacting {}.",
        inc.id.0,
        inc.priority,
        inc.root_ci.as_deref().unwrap_or("unknown"),
        if inc.impacted_services.is_empty() {
            "no catalogued service".to_string()
        } else {
            inc.impacted_services.join(", ")
        }
    );
    for r in &inc.links.runbooks {
        d.push_str("\nRunbook: ");
        d.push_str(r);
    }
    d
}

/// Opsgenie's `details` is a map of strings.
fn flat_details(inc: &Incident) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(m) = details(inc) else {
        return serde_json::Map::new();
    };
    m.into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, serde_json::Value::String(s))
        })
        .collect()
}

/// An Opsgenie API integration: the key goes in the `GenieKey` header.
pub struct Opsgenie {
    pub api_key: String,
}

impl Destination for Opsgenie {
    fn authorize(&self, rb: RequestBuilder, _call: &Call<'_>) -> RequestBuilder {
        rb.header(
            reqwest::header::AUTHORIZATION,
            format!("GenieKey {}", self.api_key),
        )
    }

    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        let inc = &row.message.incident;
        let kind = row.message.kind;
        let actor = match kind {
            EventKind::Acknowledged => inc.acknowledged_by.as_deref(),
            EventKind::OnHold => inc.current_hold().and_then(|h| h.by.as_deref()),
            _ => None,
        };
        Box::pin(one_call(link, row, Some(request(inc, kind, actor))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    #[test]
    fn create_by_alias_then_act_on_the_alias() {
        let inc = incident();
        let r = request(&inc, EventKind::Opened, None);
        assert_eq!(r.path, "/v2/alerts");
        let b = r.body.expect("body");
        assert_eq!(b["alias"], "incidentd-42");
        assert_eq!(b["priority"], "P1");
        assert_eq!(b["message"], "PostgresDown on pg-0");
        assert_eq!(b["tags"], json!(["checkout", "search", "P1"]));
        assert_eq!(
            b["details"]["impacted_services"],
            "[\"checkout\",\"search\"]"
        );
        assert_eq!(b["details"]["incident_id"], "42");
        let ack = request(&inc, EventKind::Acknowledged, Some("alice"));
        assert_eq!(
            ack.path,
            "/v2/alerts/incidentd-42/acknowledge?identifierType=alias"
        );
        assert_eq!(ack.body.expect("body")["user"], "alice");
        let close = request(&inc, EventKind::Resolved, None);
        assert_eq!(
            close.path,
            "/v2/alerts/incidentd-42/close?identifierType=alias"
        );
        let p = request(&inc, EventKind::PriorityChanged, None);
        assert_eq!(
            (p.method, p.path.as_str()),
            (
                super::super::Method::Put,
                "/v2/alerts/incidentd-42/priority?identifierType=alias"
            )
        );
        let long = {
            let mut i = inc.clone();
            i.title = "x".repeat(500);
            i
        };
        let b = request(&long, EventKind::Opened, None).body.expect("body");
        assert_eq!(b["message"].as_str().map(|s| s.chars().count()), Some(130));
    }
}
