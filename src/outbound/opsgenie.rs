//! Opsgenie Alert API (`/v2/alerts`, header `Authorization: GenieKey …`
//! added by the sender): create by `alias`, then act on the alert by that
//! alias (`identifierType=alias`), so a retried create is deduplicated by
//! Opsgenie and later calls need no stored id. Kept to the documented
//! limits of "Create Alert" (docs.opsgenie.com/docs/alert-api): message 130
//! characters, alias and entity 512, description 15,000, 20 tags of 50,
//! details 8,000 in all, user 100; a request over them is refused (422).

use super::destination::{Call, Destination};
use super::link::{Answer, Link};
use super::{EventKind, Request, details, external_key, truncate};
use crate::domain::Incident;
use crate::store::{BoxFuture, OutboxRow, StoreError};
use reqwest::RequestBuilder;
use serde_json::json;

/// Who an alert is for: a team, user, escalation or schedule by name
/// (without responders, an alert made with a global API key is unassigned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responder {
    /// `team`, `user`, `escalation` or `schedule`.
    pub kind: String,
    pub name: String,
}

impl Responder {
    /// `team:platform`, `user:jane@example.com`, `escalation:…`, `schedule:…`.
    pub fn parse(s: &str) -> Result<Responder, String> {
        match s.split_once(':') {
            Some((kind @ ("team" | "user" | "escalation" | "schedule"), name))
                if !name.trim().is_empty() =>
            {
                Ok(Responder {
                    kind: kind.to_string(),
                    name: name.trim().to_string(),
                })
            }
            _ => Err(format!(
                "{s:?}: team:<name>, user:<username>, escalation:<name> or schedule:<name>"
            )),
        }
    }

    fn json(&self) -> serde_json::Value {
        // Users are named by their username, the others by name.
        let key = if self.kind == "user" {
            "username"
        } else {
            "name"
        };
        json!({ "type": self.kind, key: self.name })
    }
}

/// At most 20 tags of at most 50 characters: services (up to 19), then
/// the priority.
fn tags(inc: &Incident) -> Vec<String> {
    let mut tags: Vec<String> = Vec::with_capacity(20);
    for s in &inc.impacted_services {
        if tags.len() == 19 {
            break;
        }
        let t = truncate(s, 50);
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags.push(inc.priority.as_str().to_string());
    tags
}

pub fn request(
    inc: &Incident,
    kind: EventKind,
    actor: Option<&str>,
    responders: &[Responder],
) -> Request {
    let alias = external_key(inc);
    let on = |action: &str| format!("/v2/alerts/{alias}/{action}?identifierType=alias");
    let by = truncate(actor.unwrap_or("incidentd"), 100);
    match kind {
        EventKind::Opened | EventKind::Reopened => {
            let mut body = json!({
                "message": truncate(&inc.title, 130),
                "alias": alias,
                "description": truncate(&description(inc), 15_000),
                "priority": inc.priority.as_str(),
                "tags": tags(inc),
                "entity": inc.root_ci.as_deref().map(|c| truncate(c, 512)),
                "source": "incidentd",
                "details": flat_details(inc, 8_000),
            });
            if !responders.is_empty() {
                body["responders"] = responders.iter().map(Responder::json).collect();
            }
            Request::post("/v2/alerts", body)
        }
        EventKind::PriorityChanged => Request {
            base: super::Base::Url,
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

/// Opsgenie's `details` is a map of strings, at most `budget` characters
/// of keys and values in all: values are cut to what is left, and keys that
/// no longer fit are left out.
fn flat_details(inc: &Incident, budget: usize) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(m) = details(inc) else {
        return serde_json::Map::new();
    };
    let mut left = budget;
    let mut out = serde_json::Map::new();
    for (k, v) in m {
        let s = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        let key = k.chars().count();
        if key + 2 > left {
            break;
        }
        let value = truncate(&s, left - key);
        left -= key + value.chars().count();
        out.insert(k, serde_json::Value::String(value));
    }
    out
}

/// An Opsgenie API integration: the key goes in the `GenieKey` header.
pub struct Opsgenie {
    pub api_key: String,
    pub responders: Vec<Responder>,
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
        let req = request(inc, kind, actor, &self.responders);
        Box::pin(async move {
            let answer = link.call(&req, row.id).await;
            let Some(id) = answer.json["requestId"].as_str().filter(|_| answer.ok()) else {
                return Ok(Some(answer));
            };
            Ok(Some(confirm(link, row.id, id).await.unwrap_or(answer)))
        })
    }
}

/// How an accepted request ended, by the request-status API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    Succeeded,
    /// Opsgenie processed it and did not do it: its status says why.
    Failed(String),
    /// Not processed yet (404), or no answer to read.
    Pending,
}

/// Reads `GET /v2/alerts/requests/{id}`'s answer.
pub fn processed(status: Option<u16>, answer: &serde_json::Value) -> Processed {
    let data = &answer["data"];
    match (
        status,
        data["isSuccess"].as_bool().or(data["success"].as_bool()),
    ) {
        (Some(200), Some(true)) => Processed::Succeeded,
        (Some(200), Some(false)) => Processed::Failed(
            data["status"]
                .as_str()
                .unwrap_or("no status given")
                .to_string(),
        ),
        _ => Processed::Pending,
    }
}

/// Opsgenie accepts a request with 202 and processes it later
/// (docs.opsgenie.com/docs/alert-api, "Get Request Status"): an
/// acknowledgement of an alert it no longer has is accepted, then fails.
/// Asks a few times how it ended; a failure becomes a refusal with
/// Opsgenie's reason (no retry would change it), anything else leaves the
/// accepted answer standing.
async fn confirm(link: &Link, delivery: i64, request_id: &str) -> Option<Answer> {
    let check = Request {
        base: super::Base::Url,
        method: super::Method::Get,
        path: format!("/v2/alerts/requests/{request_id}"),
        body: None,
    };
    for wait_ms in [100, 300, 1_000] {
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        let a = link.call(&check, delivery).await;
        match processed(a.status, &a.json) {
            Processed::Succeeded => return None,
            Processed::Failed(why) => {
                return Some(Answer::refused(&format!(
                    "Opsgenie accepted the request, then did not process it: {why}"
                )));
            }
            Processed::Pending => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    #[test]
    fn request_status_answers() {
        use serde_json::json;
        let ok = json!({"data": {"success": true, "isSuccess": true, "status": "Created alert"}});
        assert_eq!(processed(Some(200), &ok), Processed::Succeeded);
        let failed = json!({"data": {"success": false, "isSuccess": false, "status": "Alert does not exist"}});
        assert_eq!(
            processed(Some(200), &failed),
            Processed::Failed("Alert does not exist".into())
        );
        let pending = json!({"message": "Request not found. It might not be processed, yet."});
        assert_eq!(processed(Some(404), &pending), Processed::Pending);
        assert_eq!(
            processed(None, &serde_json::Value::Null),
            Processed::Pending
        );
    }

    #[test]
    fn a_wide_incident_keeps_to_the_documented_limits() {
        let mut inc = incident();
        inc.title = "x".repeat(2_000).into();
        inc.impacted_services = (0..40)
            .map(|i| format!("{i:02}-{}", "s".repeat(60)))
            .collect();
        inc.root_ci = Some("c".repeat(600).into());
        let team = Responder::parse("team:platform").expect("valid");
        let user = Responder::parse("user:jane@example.com").expect("valid");
        let b = request(&inc, EventKind::Opened, None, &[team, user])
            .body
            .expect("body");
        assert_eq!(b["message"].as_str().map(|m| m.chars().count()), Some(130));
        let tags = b["tags"].as_array().expect("tags");
        assert_eq!(tags.len(), 20);
        assert_eq!(tags[19], "P1");
        assert!(
            tags.iter()
                .all(|t| t.as_str().is_some_and(|t| t.chars().count() <= 50))
        );
        assert_eq!(b["entity"].as_str().map(|e| e.chars().count()), Some(512));
        let details: usize = b["details"]
            .as_object()
            .expect("details")
            .iter()
            .map(|(k, v)| k.chars().count() + v.as_str().map_or(0, |s| s.chars().count()))
            .sum();
        assert!(details <= 8_000, "{details}");
        assert_eq!(
            b["responders"],
            json!([{"type": "team", "name": "platform"}, {"type": "user", "username": "jane@example.com"}])
        );
        assert!(Responder::parse("group:x").is_err());
        assert!(Responder::parse("team:").is_err());
    }

    #[test]
    fn create_by_alias_then_act_on_the_alias() {
        let inc = incident();
        let r = request(&inc, EventKind::Opened, None, &[]);
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
        let ack = request(&inc, EventKind::Acknowledged, Some("alice"), &[]);
        assert_eq!(
            ack.path,
            "/v2/alerts/incidentd-42/acknowledge?identifierType=alias"
        );
        assert_eq!(ack.body.expect("body")["user"], "alice");
        let close = request(&inc, EventKind::Resolved, None, &[]);
        assert_eq!(
            close.path,
            "/v2/alerts/incidentd-42/close?identifierType=alias"
        );
        let p = request(&inc, EventKind::PriorityChanged, None, &[]);
        assert_eq!(
            (p.method, p.path.as_str()),
            (
                super::super::Method::Put,
                "/v2/alerts/incidentd-42/priority?identifierType=alias"
            )
        );
        let long = {
            let mut i = inc.clone();
            i.title = "x".repeat(500).into();
            i
        };
        let b = request(&long, EventKind::Opened, None, &[])
            .body
            .expect("body");
        assert_eq!(b["message"].as_str().map(|s| s.chars().count()), Some(130));
    }
}
