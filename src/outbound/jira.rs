//! Jira Service Management: a request (or a plain Jira issue) per
//! incident, comments for later changes, and a transition to done on
//! resolve. Idempotent by the issue key stored once created, with a search
//! by label (`incidentd-<id>`) as the fallback when a create's answer was
//! lost. Transition ids differ between workflows, so they are looked up on
//! the issue (`GET …/transitions`) and picked by the status category they
//! lead to, never hard-coded.

use super::destination::{Credential, Destination, TicketReader, work_note};
use super::inbound::InboundUpdate;
use super::link::{Answer, Link, Ticket, TicketCalls};
use super::{EventKind, Method, Request, external_key, summary, truncate};
use crate::domain::Incident;
use crate::domain::IncidentId;
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::json;

/// Which Jira: their search APIs differ. Jira Cloud retired
/// `GET /rest/api/2/search` (410 Gone; the Jira Cloud platform changelog on
/// developer.atlassian.com) for `GET /rest/api/3/search/jql` ("Search for
/// issues using JQL enhanced search": token paging, `isLast`);
/// Data Center keeps `/rest/api/2/search`. The other calls (create,
/// comment, transitions) are REST v2 on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    Cloud,
    DataCenter,
}

impl Deployment {
    /// The search path for `jql` (escaped), asking for `fields`.
    pub fn search(self, jql: &str, fields: &str, max: usize) -> String {
        let path = match self {
            Deployment::Cloud => "/rest/api/3/search/jql",
            Deployment::DataCenter => "/rest/api/2/search",
        };
        format!("{path}?jql={jql}&fields={fields}&maxResults={max}")
    }
}

/// Where requests are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// JSM customer request: `POST /rest/servicedeskapi/request`.
    ServiceDesk {
        service_desk_id: String,
        request_type_id: String,
    },
    /// Plain issue: `POST /rest/api/2/issue`.
    Project { key: String, issue_type: String },
}

/// Jira priority names for P1..P5 (the default scheme).
fn priority_name(inc: &Incident) -> &'static str {
    ["Highest", "High", "Medium", "Low", "Lowest"][usize::from(inc.priority.get() - 1)]
}

fn description(inc: &Incident) -> String {
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
    d
}

/// The create call; its answer carries `issueKey` (service desk) or `key`.
pub fn create(inc: &Incident, target: &Target) -> Request {
    let label = external_key(inc);
    let title = truncate(&summary(inc), 255);
    match target {
        Target::ServiceDesk {
            service_desk_id,
            request_type_id,
        } => Request::post(
            "/rest/servicedeskapi/request",
            json!({
                "serviceDeskId": service_desk_id,
                "requestTypeId": request_type_id,
                "requestFieldValues": {
                    "summary": title,
                    "description": description(inc),
                    "labels": [label],
                },
            }),
        ),
        Target::Project { key, issue_type } => Request::post(
            "/rest/api/2/issue",
            json!({
                "fields": {
                    "project": { "key": key },
                    "issuetype": { "name": issue_type },
                    "summary": title,
                    "description": description(inc),
                    "labels": [label],
                    "priority": { "name": priority_name(inc) },
                }
            }),
        ),
    }
}

/// The key of a created issue from the create call's answer.
pub fn created_key(answer: &serde_json::Value) -> Option<String> {
    answer["issueKey"]
        .as_str()
        .or_else(|| answer["key"].as_str())
        .map(str::to_string)
}

/// Search for the issue labelled for `inc` (when no key is stored).
pub fn search(inc: &Incident, deployment: Deployment) -> Request {
    Request {
        method: Method::Get,
        path: deployment.search(
            &format!("labels%3D%22{}%22", external_key(inc)),
            "key,status",
            1,
        ),
        body: None,
    }
}

/// The key the search found, if any.
pub fn found_key(answer: &serde_json::Value) -> Option<String> {
    answer["issues"][0]["key"].as_str().map(str::to_string)
}

pub fn comment(key: &str, text: &str) -> Request {
    Request::post(
        format!("/rest/api/2/issue/{key}/comment"),
        json!({ "body": text }),
    )
}

pub fn transitions(key: &str) -> Request {
    Request {
        method: Method::Get,
        path: format!("/rest/api/2/issue/{key}/transitions"),
        body: None,
    }
}

/// The status category a change moves the issue to (`None`: a comment
/// only).
pub fn category_for(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::Resolved => Some("done"),
        EventKind::Acknowledged => Some("indeterminate"),
        EventKind::Reopened => Some("new"),
        EventKind::Opened | EventKind::PriorityChanged | EventKind::OnHold | EventKind::Resumed => {
            None
        }
    }
}

/// From a `GET …/transitions` answer, the id of the transition to a
/// status of `category` (`new`, `indeterminate`, `done`); a transition
/// named `preferred` wins when several lead there.
pub fn pick_transition(
    answer: &serde_json::Value,
    category: &str,
    preferred: Option<&str>,
) -> Option<String> {
    let all = answer["transitions"].as_array()?;
    let to_category: Vec<&serde_json::Value> = all
        .iter()
        .filter(|t| t["to"]["statusCategory"]["key"] == category)
        .collect();
    let chosen = preferred
        .and_then(|p| {
            to_category.iter().find(|t| {
                t["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(p))
            })
        })
        .or_else(|| to_category.first())?;
    match &chosen["id"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn transition(key: &str, id: &str) -> Request {
    Request::post(
        format!("/rest/api/2/issue/{key}/transitions"),
        json!({ "transition": { "id": id } }),
    )
}

/// A Jira (Service Management) project.
pub struct Jira {
    pub target: Target,
    pub resolve_transition: Option<String>,
    pub deployment: Deployment,
    pub credential: Credential,
}

impl Destination for Jira {
    fn credential(&self) -> Option<&Credential> {
        Some(&self.credential)
    }

    /// The issue key (stored, else searched by label, else created: a
    /// create whose answer was lost is found by the search of the retry),
    /// then the transition the event calls for (looked up on the issue,
    /// picked by the status category it leads to; none available, e.g.
    /// already done: nothing to move) and a comment. The transition goes
    /// first, so a retry after a failed comment finds it done and does not
    /// move the issue twice.
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        Box::pin(async move {
            let inc = &row.message.incident;
            let kind = row.message.kind;
            let ticket = link
                .ticket(row, || TicketCalls {
                    lookup: search(inc, self.deployment),
                    found: found_key,
                    create: create(inc, &self.target),
                    created: created_key,
                    no_id: "the create answered without an issue key",
                })
                .await?;
            let key = match ticket {
                Ticket::Known(k) => k,
                Ticket::Done(answer) => return Ok(Some(answer)),
            };
            if let Some(category) = category_for(kind) {
                let available = link.call(&transitions(&key), row.id).await;
                if !available.ok() {
                    return Ok(Some(available));
                }
                let preferred = (kind == EventKind::Resolved)
                    .then_some(self.resolve_transition.as_deref())
                    .flatten();
                if let Some(id) = pick_transition(&available.json, category, preferred) {
                    let moved = link.call(&transition(&key, &id), row.id).await;
                    if !moved.ok() {
                        return Ok(Some(moved));
                    }
                }
            }
            Ok(Some(
                link.call(&comment(&key, &work_note(inc, kind)), row.id)
                    .await,
            ))
        })
    }

    fn reader(&self) -> Option<&dyn TicketReader> {
        Some(self)
    }
}

impl TicketReader for Jira {
    fn query(&self, batch: &[(IncidentId, String)]) -> Request {
        let ids: Vec<IncidentId> = batch.iter().map(|(i, _)| *i).collect();
        super::poll::jira(&ids, self.deployment)
    }

    fn updates(&self, answer: &serde_json::Value) -> Vec<InboundUpdate> {
        super::poll::jira_updates(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    #[test]
    fn create_search_comment_and_transition_by_category() {
        let inc = incident();
        let sd = Target::ServiceDesk {
            service_desk_id: "4".into(),
            request_type_id: "27".into(),
        };
        let c = create(&inc, &sd);
        assert_eq!(c.path, "/rest/servicedeskapi/request");
        let b = c.body.expect("body");
        assert_eq!(b["serviceDeskId"], "4");
        assert_eq!(b["requestFieldValues"]["labels"], json!(["incidentd-42"]));
        assert_eq!(
            b["requestFieldValues"]["summary"],
            "[P1] PostgresDown on pg-0"
        );
        let p = create(
            &inc,
            &Target::Project {
                key: "OPS".into(),
                issue_type: "Incident".into(),
            },
        );
        assert_eq!(p.path, "/rest/api/2/issue");
        let b = p.body.expect("body");
        assert_eq!(b["fields"]["project"]["key"], "OPS");
        assert_eq!(b["fields"]["priority"]["name"], "Highest");
        assert_eq!(
            created_key(&json!({"issueKey": "SD-7"})),
            Some("SD-7".into())
        );
        assert_eq!(
            created_key(&json!({"id": "1", "key": "OPS-9"})),
            Some("OPS-9".into())
        );
        assert_eq!(
            search(&inc, Deployment::DataCenter).path,
            "/rest/api/2/search?jql=labels%3D%22incidentd-42%22&fields=key,status&maxResults=1"
        );
        assert_eq!(
            search(&inc, Deployment::Cloud).path,
            "/rest/api/3/search/jql?jql=labels%3D%22incidentd-42%22&fields=key,status&maxResults=1"
        );
        assert_eq!(
            found_key(&json!({"issues": [{"key": "OPS-9"}]})),
            Some("OPS-9".into())
        );
        assert_eq!(found_key(&json!({"issues": []})), None);
        assert_eq!(
            comment("OPS-9", "hi").path,
            "/rest/api/2/issue/OPS-9/comment"
        );
        let answer = json!({"transitions": [
            {"id": "11", "name": "Start", "to": {"statusCategory": {"key": "indeterminate"}}},
            {"id": "31", "name": "Close", "to": {"statusCategory": {"key": "done"}}},
            {"id": 41, "name": "Resolve", "to": {"statusCategory": {"key": "done"}}}
        ]});
        assert_eq!(pick_transition(&answer, "done", None), Some("31".into()));
        assert_eq!(
            pick_transition(&answer, "done", Some("resolve")),
            Some("41".into())
        );
        assert_eq!(
            pick_transition(&answer, "indeterminate", Some("nope")),
            Some("11".into())
        );
        assert_eq!(pick_transition(&answer, "new", None), None);
        assert_eq!(category_for(EventKind::Resolved), Some("done"));
        let t = transition("OPS-9", "41");
        assert_eq!(t.body.expect("body")["transition"]["id"], "41");
    }
}
