//! Reading tickets back (for a ServiceNow or Jira that cannot send
//! webhooks): one query per batch of tickets, and what their state means
//! here, as the webhooks of [`super::inbound`] would say it. Pure; the
//! sender makes the calls and applies the result.

use super::inbound::{self, Action, InboundUpdate};
use super::{Method, Request};
use crate::domain::IncidentId;
use serde_json::{Value, json};

/// Tickets per query: keeps the URL short (ServiceNow sys_ids are 32
/// characters).
pub const BATCH: usize = 50;

/// Query-string escaping of one value (RFC 3986 unreserved kept).
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// ServiceNow: the tickets (by `sys_id`) that are in progress, resolved
/// or closed.
pub fn servicenow(sys_ids: &[String]) -> Request {
    let query = format!("sys_idIN{}^stateIN2,6,7", sys_ids.join(","));
    Request {
        base: super::Base::Url,
        method: Method::Get,
        path: format!(
            "{}?sysparm_query={}&sysparm_fields=sys_id%2Ccorrelation_id%2Cstate%2Csys_updated_by&sysparm_limit={}",
            super::servicenow::TABLE,
            escape(&query),
            sys_ids.len()
        ),
        body: None,
    }
}

/// What ServiceNow's answer to [`servicenow`] means here. Resolved or
/// closed tickets resolve their incidents; an In Progress ticket
/// acknowledges its incident only when someone other than `ours` (the
/// integration user) put it there, since incidentd itself sets In
/// Progress on acknowledgement and reopening. Without `ours` (bearer
/// auth) acknowledgements are not read back.
pub fn servicenow_updates(answer: &Value, ours: Option<&str>) -> Vec<InboundUpdate> {
    answer["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|rec| {
            let u = inbound::servicenow(rec).ok()?;
            let by = rec["sys_updated_by"].as_str();
            match u.action {
                Action::Resolve => Some(u),
                Action::Acknowledge if ours.is_some() && by.is_some() && by != ours => Some(u),
                _ => None,
            }
        })
        .collect()
}

/// Jira: the issues of these incidents (by their `incidentd-<id>` label:
/// a key that no longer exists would fail the whole JQL) in the done
/// category.
pub fn jira(incidents: &[IncidentId], deployment: super::jira::Deployment) -> Request {
    let labels: Vec<String> = incidents
        .iter()
        .map(|i| format!("\"incidentd-{}\"", i.0))
        .collect();
    let jql = format!("labels in ({}) AND statusCategory = Done", labels.join(","));
    Request {
        base: super::Base::Url,
        method: Method::Get,
        // At most BATCH (50) issues: one page on both APIs.
        path: deployment.search(&escape(&jql), "labels%2Cstatus%2Cassignee", incidents.len()),
        body: None,
    }
}

/// What Jira's answer to [`jira`] means here: each done issue resolves its
/// incident, by its assignee.
pub fn jira_updates(answer: &Value) -> Vec<InboundUpdate> {
    answer["issues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|issue| {
            let as_webhook = json!({ "issue": issue, "user": issue["fields"]["assignee"] });
            inbound::jira(&as_webhook)
                .ok()
                .filter(|u| u.action == Action::Resolve)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servicenow_query_and_answer() {
        let r = servicenow(&["a1".into(), "b2".into()]);
        assert_eq!(
            r.path,
            "/api/now/table/incident?sysparm_query=sys_idINa1%2Cb2%5EstateIN2%2C6%2C7&sysparm_fields=sys_id%2Ccorrelation_id%2Cstate%2Csys_updated_by&sysparm_limit=2"
        );
        let answer = json!({"result": [
            {"sys_id": "a1", "correlation_id": "incidentd-1", "state": "6", "sys_updated_by": "beth"},
            {"sys_id": "b2", "correlation_id": "incidentd-2", "state": "2", "sys_updated_by": "incidentd"},
            {"sys_id": "c3", "correlation_id": "incidentd-3", "state": "2", "sys_updated_by": "carl"},
            {"sys_id": "d4", "correlation_id": "not-ours", "state": "7"}
        ]});
        let got: Vec<(i64, Action, String)> = servicenow_updates(&answer, Some("incidentd"))
            .into_iter()
            .map(|u| (u.incident.0, u.action, u.actor))
            .collect();
        assert_eq!(
            got,
            [
                (1, Action::Resolve, "servicenow:beth".into()),
                (3, Action::Acknowledge, "servicenow:carl".into())
            ]
        );
        // Bearer auth: who is "us" is unknown, so only resolutions count.
        assert_eq!(servicenow_updates(&answer, None).len(), 1);
        assert!(servicenow_updates(&json!({"error": {}}), None).is_empty());
    }

    #[test]
    fn jira_query_and_answer() {
        use crate::outbound::jira::Deployment;
        let cloud = jira(&[IncidentId(7), IncidentId(8)], Deployment::Cloud);
        assert!(
            cloud
                .path
                .starts_with("/rest/api/3/search/jql?jql=labels%20in%20")
        );
        let r = jira(&[IncidentId(7), IncidentId(8)], Deployment::DataCenter);
        assert_eq!(
            r.path,
            "/rest/api/2/search?jql=labels%20in%20%28%22incidentd-7%22%2C%22incidentd-8%22%29%20AND%20statusCategory%20%3D%20Done&fields=labels%2Cstatus%2Cassignee&maxResults=2"
        );
        let answer = json!({"issues": [
            {"key": "OPS-1", "fields": {"labels": ["incidentd-7"], "status": {"statusCategory": {"key": "done"}},
                                        "assignee": {"displayName": "Dana"}}},
            {"key": "OPS-2", "fields": {"labels": ["incidentd-8"], "status": {"statusCategory": {"key": "indeterminate"}}}}
        ]});
        let got: Vec<(i64, String)> = jira_updates(&answer)
            .into_iter()
            .map(|u| (u.incident.0, u.actor))
            .collect();
        assert_eq!(got, [(7, "jira:Dana".to_string())]);
    }
}
