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
use super::{EventKind, Method, Request, external_key, truncate};
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

fn description(inc: &Incident, details_url: Option<&str>) -> String {
    // Jira's limit for a text field.
    truncate(&super::ticket_text(inc, details_url), 32_767)
}

/// The summary of the ticket: `[P1] title (incidentd-42)`, on one line
/// (Jira refuses a summary with line breaks) within Jira's 255
/// characters. The key in it is what finds a customer request again when
/// no label could be set yet.
fn ticket_summary(inc: &Incident) -> String {
    super::keyed_title(inc, 255)
}

/// The create call; its answer carries `issueKey` (service desk) or `key`.
/// A customer request carries only `summary` and `description`, the fields
/// every request type has: JSM refuses fields its request type lacks
/// (developer.atlassian.com, "Create customer request":
/// `requestFieldValues` are the request type's fields), and `labels` is
/// rarely one of them; the label is added by the platform API afterwards
/// ([`label`]).
pub fn create(inc: &Incident, target: &Target, details_url: Option<&str>) -> Request {
    let label = external_key(inc);
    let title = ticket_summary(inc);
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
                    "description": description(inc, details_url),
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
                    "description": description(inc, details_url),
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

/// Search for the ticket of `inc` (when no key is stored): by its label,
/// or by the key in its summary (a request whose label was not set yet).
pub fn search(inc: &Incident, deployment: Deployment) -> Request {
    let key = external_key(inc);
    let jql = format!("labels = \"{key}\" OR summary ~ \"\\\"{key}\\\"\"");
    Request {
        base: super::Base::Url,
        method: Method::Get,
        path: deployment.search(&super::poll::escape(&jql), "key,status", 1),
        body: None,
    }
}

/// Adds the `incidentd-<id>` label (idempotent: adding a label it has
/// changes nothing), by which polling and webhooks know the ticket.
pub fn label(key: &str, inc: &Incident) -> Request {
    Request {
        base: super::Base::Url,
        method: Method::Put,
        path: format!("/rest/api/2/issue/{key}"),
        body: Some(json!({ "update": { "labels": [ { "add": external_key(inc) } ] } })),
    }
}

/// The key the search found, if any.
pub fn found_key(answer: &serde_json::Value) -> Option<String> {
    answer["issues"][0]["key"].as_str().map(str::to_string)
}

/// A note for the operators. On a customer request it goes through the
/// service desk API as internal (`public: false`): a comment made through
/// the platform API would be shown to the customer.
pub fn comment(key: &str, text: &str, target: &Target) -> Request {
    match target {
        Target::ServiceDesk { .. } => Request::post(
            format!("/rest/servicedeskapi/request/{key}/comment"),
            json!({ "body": text, "public": false }),
        ),
        Target::Project { .. } => Request::post(
            format!("/rest/api/2/issue/{key}/comment"),
            json!({ "body": text }),
        ),
    }
}

/// The transitions available, with the fields each one's screen has (a
/// resolve transition often requires `resolution`).
pub fn transitions(key: &str) -> Request {
    Request {
        base: super::Base::Url,
        method: Method::Get,
        path: format!("/rest/api/2/issue/{key}/transitions?expand=transitions.fields"),
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
pub fn pick_transition<'a>(
    answer: &'a serde_json::Value,
    category: &str,
    preferred: Option<&str>,
) -> Option<&'a serde_json::Value> {
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
    Some(chosen)
}

/// The call that moves the issue by `chosen` (a transition of a
/// `GET …/transitions?expand=transitions.fields` answer). When its screen
/// has a `resolution` field, that is set: `resolution` if it is one of the
/// allowed values, else the first allowed one.
pub fn transition(key: &str, chosen: &serde_json::Value, resolution: &str) -> Option<Request> {
    let id = match &chosen["id"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let mut body = json!({ "transition": { "id": id } });
    let field = &chosen["fields"]["resolution"];
    if field.is_object() {
        let allowed: Vec<&str> = field["allowedValues"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        let name = if allowed.is_empty() || allowed.contains(&resolution) {
            resolution
        } else {
            allowed[0]
        };
        body["fields"] = json!({ "resolution": { "name": name } });
    }
    Some(Request::post(
        format!("/rest/api/2/issue/{key}/transitions"),
        body,
    ))
}

/// A Jira (Service Management) project.
pub struct Jira {
    pub target: Target,
    pub resolve_transition: Option<String>,
    /// The resolution a resolving transition sets when its screen asks.
    pub resolution: String,
    pub deployment: Deployment,
    pub credential: Credential,
    /// The incident's page on the web board (`{id}` replaced), in the
    /// description.
    pub details_url: Option<String>,
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
                    found: Box::new(found_key),
                    create: create(inc, &self.target, self.details_url.as_deref()),
                    created: Box::new(created_key),
                    no_id: "the create answered without an issue key",
                })
                .await?;
            let (key, created) = match ticket {
                Ticket::Known(k) => (k, None),
                Ticket::Created(k, answer) => (k, Some(answer)),
                Ticket::Done(answer) => return Ok(Some(answer)),
            };
            // A customer request gets its label with its opening (a failure
            // is retried: the stored key then leads here again).
            if kind == EventKind::Opened && matches!(self.target, Target::ServiceDesk { .. }) {
                let labelled = link.call(&label(&key, inc), row.id).await;
                if !labelled.ok() {
                    return Ok(Some(labelled));
                }
            }
            // The create was the opening itself.
            if let Some(answer) = created {
                return Ok(Some(answer));
            }
            if let Some(category) = category_for(kind) {
                let available = link.call(&transitions(&key), row.id).await;
                if !available.ok() {
                    return Ok(Some(available));
                }
                let preferred = (kind == EventKind::Resolved)
                    .then_some(self.resolve_transition.as_deref())
                    .flatten();
                let chosen = pick_transition(&available.json, category, preferred)
                    .and_then(|t| transition(&key, t, &self.resolution));
                if let Some(req) = chosen {
                    let moved = link.call(&req, row.id).await;
                    if !moved.ok() {
                        return Ok(Some(moved));
                    }
                }
            }
            let note = comment(&key, &work_note(inc, kind), &self.target);
            Ok(Some(link.call(&note, row.id).await))
        })
    }

    fn reader(&self) -> Option<&dyn TicketReader> {
        Some(self)
    }
}

impl TicketReader for Jira {
    fn query(&self, batch: &[(IncidentId, String)], _now: crate::domain::Timestamp) -> Request {
        let ids: Vec<IncidentId> = batch.iter().map(|(i, _)| *i).collect();
        super::poll::jira(&ids, self.deployment)
    }

    fn updates(
        &self,
        _batch: &[(IncidentId, String)],
        answer: &serde_json::Value,
    ) -> Vec<InboundUpdate> {
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
        let c = create(
            &inc,
            &sd,
            Some("https://incidentd.example.com/incidents/{id}"),
        );
        assert_eq!(c.path, "/rest/servicedeskapi/request");
        let b = c.body.expect("body");
        assert_eq!(b["serviceDeskId"], "4");
        assert!(
            b["requestFieldValues"]["description"].as_str().is_some_and(
                |d| d.ends_with("\nDetails: https://incidentd.example.com/incidents/42")
            ),
            "{b}"
        );
        // Only the fields every request type has.
        let fields: Vec<&String> = b["requestFieldValues"]
            .as_object()
            .expect("fields")
            .keys()
            .collect();
        assert_eq!(fields, ["description", "summary"]);
        assert_eq!(
            b["requestFieldValues"]["summary"],
            "[P1] PostgresDown on pg-0 (incidentd-42)"
        );
        let l = label("SD-7", &inc);
        assert_eq!(l.path, "/rest/api/2/issue/SD-7");
        assert_eq!(
            l.body.expect("body"),
            json!({"update": {"labels": [{"add": "incidentd-42"}]}})
        );
        let project = Target::Project {
            key: "OPS".into(),
            issue_type: "Incident".into(),
        };
        let p = create(&inc, &project, None);
        assert_eq!(p.path, "/rest/api/2/issue");
        let b = p.body.expect("body");
        assert_eq!(b["fields"]["project"]["key"], "OPS");
        assert_eq!(b["fields"]["priority"]["name"], "Highest");
        assert_eq!(b["fields"]["labels"], json!(["incidentd-42"]));
        assert_eq!(
            created_key(&json!({"issueKey": "SD-7"})),
            Some("SD-7".into())
        );
        assert_eq!(
            created_key(&json!({"id": "1", "key": "OPS-9"})),
            Some("OPS-9".into())
        );
        let jql =
            "labels%20%3D%20%22incidentd-42%22%20OR%20summary%20~%20%22%5C%22incidentd-42%5C%22%22";
        assert_eq!(
            search(&inc, Deployment::DataCenter).path,
            format!("/rest/api/2/search?jql={jql}&fields=key,status&maxResults=1")
        );
        assert_eq!(
            search(&inc, Deployment::Cloud).path,
            format!("/rest/api/3/search/jql?jql={jql}&fields=key,status&maxResults=1")
        );
        assert_eq!(
            found_key(&json!({"issues": [{"key": "OPS-9"}]})),
            Some("OPS-9".into())
        );
        assert_eq!(found_key(&json!({"issues": []})), None);
        // Operator notes: internal on a customer request.
        let internal = comment("SD-7", "hi", &sd);
        assert_eq!(internal.path, "/rest/servicedeskapi/request/SD-7/comment");
        assert_eq!(internal.body.expect("body")["public"], false);
        assert_eq!(
            comment("OPS-9", "hi", &project).path,
            "/rest/api/2/issue/OPS-9/comment"
        );
        let answer = json!({"transitions": [
            {"id": "11", "name": "Start", "to": {"statusCategory": {"key": "indeterminate"}}},
            {"id": "31", "name": "Close", "to": {"statusCategory": {"key": "done"}}},
            {"id": 41, "name": "Resolve", "to": {"statusCategory": {"key": "done"}},
             "fields": {"resolution": {"required": true,
                "allowedValues": [{"name": "Fixed"}, {"name": "Won't Do"}]}}}
        ]});
        let id = |t: Option<&serde_json::Value>| t.map(|t| t["id"].to_string());
        assert_eq!(
            id(pick_transition(&answer, "done", None)),
            Some("\"31\"".into())
        );
        assert_eq!(
            id(pick_transition(&answer, "done", Some("resolve"))),
            Some("41".into())
        );
        assert_eq!(
            id(pick_transition(&answer, "indeterminate", Some("nope"))),
            Some("\"11\"".into())
        );
        assert_eq!(pick_transition(&answer, "new", None), None);
        assert_eq!(category_for(EventKind::Resolved), Some("done"));
        // No resolution field: none sent.
        let close = pick_transition(&answer, "done", None).expect("close");
        let t = transition("OPS-9", close, "Done").expect("request");
        assert_eq!(t.body.expect("body"), json!({"transition": {"id": "31"}}));
        // Required, and "Done" is not allowed there: the first allowed value.
        let resolve = pick_transition(&answer, "done", Some("resolve")).expect("resolve");
        let t = transition("OPS-9", resolve, "Done").expect("request");
        assert_eq!(
            t.body.expect("body"),
            json!({"transition": {"id": "41"}, "fields": {"resolution": {"name": "Fixed"}}})
        );
        let t = transition("OPS-9", resolve, "Won't Do").expect("request");
        assert_eq!(
            t.body.expect("body")["fields"]["resolution"]["name"],
            "Won't Do"
        );
    }
}
