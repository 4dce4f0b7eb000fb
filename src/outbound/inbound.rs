//! Two-way sync: what a ServiceNow or Jira webhook says happened to the
//! ticket of an incident (`POST /api/v1/webhooks/{destination}`), as an
//! acknowledgement or resolution to apply here. Pure: the API handler
//! applies the result through the engine.

use crate::domain::IncidentId;
use hmac::{KeyInit, Mac};
use serde_json::Value;

/// The header in which Jira Cloud's admin webhooks sign their body
/// (WebSub style: `sha256=<hex HMAC-SHA256 of the raw body>`, keyed with the
/// webhook's secret; developer.atlassian.com/cloud/jira/platform/webhooks/,
/// "Secure admin webhooks").
pub const HUB_SIGNATURE: &str = "x-hub-signature";

/// Whether `header` is the signature of `body` under `secret`, compared in
/// constant time.
pub fn hub_signature_matches(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some((method, hex_mac)) = header.trim().split_once('=') else {
        return false;
    };
    if !method.eq_ignore_ascii_case("sha256") {
        return false;
    }
    let Ok(given) = hex::decode(hex_mac) else {
        return false;
    };
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// What the ticket's new state means for the incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Resolve,
    /// Nothing to do here (a new ticket, a comment, a field change).
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InboundUpdate {
    pub incident: IncidentId,
    pub action: Action,
    /// Who changed the ticket, as the timeline will name them.
    pub actor: String,
}

/// A body that does not say which incident or what happened: the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InboundError {
    pub field: String,
    pub message: String,
}

fn error(field: &str, message: &str) -> InboundError {
    InboundError {
        field: field.into(),
        message: message.into(),
    }
}

/// `incidentd-<id>` back to the id.
fn incident_of(key: &str) -> Option<IncidentId> {
    key.strip_prefix("incidentd-")?
        .parse::<i64>()
        .ok()
        .map(IncidentId)
}

/// A ServiceNow notification (a business rule or flow posting the
/// incident record, as is or under `result`): `correlation_id` names the
/// incident; `state` 6 (Resolved) or 7 (Closed) resolves it, 2 (In
/// Progress) acknowledges it; numbers, numeric strings or the display
/// names are accepted.
pub fn servicenow(body: &Value) -> Result<InboundUpdate, InboundError> {
    let rec = if body["result"].is_object() {
        &body["result"]
    } else {
        body
    };
    let cid = rec["correlation_id"]
        .as_str()
        .ok_or_else(|| error("correlation_id", "required: the incident's incidentd-<id>"))?;
    let incident = incident_of(cid).ok_or_else(|| {
        error(
            "correlation_id",
            "not an incident of incidentd (incidentd-<id>)",
        )
    })?;
    let state = match &rec["state"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        Value::Null => return Err(error("state", "required")),
        _ => return Err(error("state", "a number or a state name")),
    };
    let action = match state.as_str() {
        "6" | "7" | "resolved" | "closed" => Action::Resolve,
        "2" | "in progress" => Action::Acknowledge,
        _ => Action::None,
    };
    let who = rec["sys_updated_by"]
        .as_str()
        .or_else(|| rec["resolved_by"].as_str())
        .unwrap_or("unknown");
    Ok(InboundUpdate {
        incident,
        action,
        actor: format!("servicenow:{who}"),
    })
}

/// A Jira webhook (`jira:issue_updated` and the like): the issue's label
/// `incidentd-<id>` names the incident; a status of the done category
/// resolves it, of the in-progress category acknowledges it.
pub fn jira(body: &Value) -> Result<InboundUpdate, InboundError> {
    let fields = &body["issue"]["fields"];
    if !fields.is_object() {
        return Err(error(
            "issue.fields",
            "required: the issue of a Jira webhook",
        ));
    }
    // The label, or (a customer request not labelled yet) the key at the
    // end of the summary, `… (incidentd-<id>)`.
    let incident = fields["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(incident_of)
        .or_else(|| {
            let summary = fields["summary"].as_str()?;
            let key = summary.strip_suffix(')')?.rsplit_once('(')?.1;
            incident_of(key)
        })
        .ok_or_else(|| error("issue.fields.labels", "no incidentd-<id> label"))?;
    let action = match fields["status"]["statusCategory"]["key"].as_str() {
        Some("done") => Action::Resolve,
        Some("indeterminate") => Action::Acknowledge,
        Some(_) => Action::None,
        None => return Err(error("issue.fields.status.statusCategory.key", "required")),
    };
    let who = body["user"]["displayName"]
        .as_str()
        .or_else(|| body["user"]["name"].as_str())
        .unwrap_or("unknown");
    Ok(InboundUpdate {
        incident,
        action,
        actor: format!("jira:{who}"),
    })
}

/// A Freshservice Workflow Automator webhook, whose body the operator
/// writes from placeholders (README, "Freshservice"): `ticket.tags` (a
/// list or the comma-separated placeholder text) or the `(incidentd-<id>)`
/// at the end of `ticket.subject` names the incident; `ticket.status`
/// Resolved (4) or Closed (5) resolves it; an agent on an Open or Pending
/// ticket acknowledges it (incidentd assigns no agent itself).
pub fn freshservice(body: &Value) -> Result<InboundUpdate, InboundError> {
    let t = &body["ticket"];
    if !t.is_object() {
        return Err(error("ticket", "required: the ticket's placeholders"));
    }
    let from_tags = match &t["tags"] {
        Value::Array(a) => a.iter().filter_map(Value::as_str).find_map(incident_of),
        Value::String(s) => s.split([',', ' ']).map(str::trim).find_map(incident_of),
        _ => None,
    };
    let incident = from_tags
        .or_else(|| {
            let subject = t["subject"].as_str()?.trim_end();
            let key = subject.strip_suffix(')')?.rsplit_once('(')?.1;
            incident_of(key)
        })
        .ok_or_else(|| {
            error(
                "ticket.tags",
                "no incidentd-<id> tag (nor one in ticket.subject)",
            )
        })?;
    let status = match &t["status"] {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        Value::String(s) => Some(s.trim().to_ascii_lowercase()),
        _ => None,
    }
    .ok_or_else(|| error("ticket.status", "required: a status number or name"))?;
    let agent = t["agent"]
        .as_str()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.starts_with("{{"));
    let action = match status.as_str() {
        "4" | "5" | "resolved" | "closed" => Action::Resolve,
        "2" | "3" | "open" | "pending" if agent.is_some() => Action::Acknowledge,
        "2" | "3" | "open" | "pending" => Action::None,
        other => {
            return Err(error(
                "ticket.status",
                &format!("{other:?}: one of Open (2), Pending (3), Resolved (4), Closed (5)"),
            ));
        }
    };
    Ok(InboundUpdate {
        incident,
        action,
        actor: agent.map_or_else(|| "freshservice".into(), |a| format!("freshservice:{a}")),
    })
}

/// A ServiceDesk Plus custom trigger's "Invoke URL" action, whose body the
/// operator writes from `$` variables (README, "ServiceDesk Plus"): the
/// `(incidentd-<id>)` at the end of `request.subject` names the incident;
/// `request.status` Resolved or Closed resolves it, In Progress (or Open
/// with a technician) acknowledges it.
pub fn servicedeskplus(body: &Value) -> Result<InboundUpdate, InboundError> {
    let r = &body["request"];
    if !r.is_object() {
        return Err(error("request", "required: the request's variables"));
    }
    let incident = r["subject"]
        .as_str()
        .and_then(|s| {
            let key = s.trim_end().strip_suffix(')')?.rsplit_once('(')?.1;
            incident_of(key)
        })
        .ok_or_else(|| error("request.subject", "no (incidentd-<id>) at its end"))?;
    let status = r["status"]
        .as_str()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error("request.status", "required: the status name"))?;
    let technician = r["technician"]
        .as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.starts_with('$'));
    let action = match status.as_str() {
        "resolved" | "closed" => Action::Resolve,
        "in progress" => Action::Acknowledge,
        "open" if technician.is_some() => Action::Acknowledge,
        _ => Action::None,
    };
    Ok(InboundUpdate {
        incident,
        action,
        actor: technician.map_or_else(
            || "servicedeskplus".into(),
            |t| format!("servicedeskplus:{t}"),
        ),
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn jira_hub_signatures_verify_and_refuse_tampering() {
        let body = br#"{"webhookEvent":"jira:issue_updated"}"#;
        // Computed with Python's hmac module, not this code.
        let sig = "sha256=6aa3e2df6f840a29cd59150f566611c7d01a3297476a41585e35592366edf8c1";
        assert!(hub_signature_matches(b"jira-webhook-secret", body, sig));
        assert!(hub_signature_matches(
            b"jira-webhook-secret",
            body,
            &sig.to_uppercase().replace("SHA256=", "sha256=")
        ));
        assert!(!hub_signature_matches(b"other-secret", body, sig));
        assert!(!hub_signature_matches(
            b"jira-webhook-secret",
            br#"{"webhookEvent":"jira:issue_deleted"}"#,
            sig
        ));
        for bad in ["", "sha256=", "sha1=6aa3", "6aa3e2df", "sha256=zz"] {
            assert!(
                !hub_signature_matches(b"jira-webhook-secret", body, bad),
                "{bad}"
            );
        }
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn servicedeskplus_variables_map_to_actions() {
        let u = |b: Value| servicedeskplus(&b).map(|u| (u.incident.0, u.action, u.actor));
        assert_eq!(
            u(
                json!({"request": {"id": "9", "subject": "[P1] x (incidentd-42)", "status": "Resolved", "technician": "Ravi"}})
            ),
            Ok((42, Action::Resolve, "servicedeskplus:Ravi".into()))
        );
        assert_eq!(
            u(
                json!({"request": {"subject": "[P1] x (incidentd-7)", "status": "In Progress", "technician": "$technician"}})
            ),
            Ok((7, Action::Acknowledge, "servicedeskplus".into()))
        );
        assert_eq!(
            u(json!({"request": {"subject": "[P1] x (incidentd-7)", "status": "Open"}})),
            Ok((7, Action::None, "servicedeskplus".into()))
        );
        assert_eq!(
            u(json!({"request": {"subject": "no key", "status": "Open"}}))
                .unwrap_err()
                .field,
            "request.subject"
        );
    }

    #[test]
    fn freshservice_placeholders_map_to_actions() {
        let u = |b: Value| freshservice(&b).map(|u| (u.incident.0, u.action, u.actor));
        assert_eq!(
            u(
                json!({"ticket": {"id": "9", "tags": "vip, incidentd-42", "status": "Resolved", "agent": "Dana"}})
            ),
            Ok((42, Action::Resolve, "freshservice:Dana".into()))
        );
        assert_eq!(
            u(json!({"ticket": {"tags": ["incidentd-7"], "status": 2, "agent": "Dana"}})),
            Ok((7, Action::Acknowledge, "freshservice:Dana".into()))
        );
        // No agent (an empty placeholder): nothing to do.
        assert_eq!(
            u(json!({"ticket": {"subject": "[P1] x (incidentd-8)", "status": "3", "agent": ""}})),
            Ok((8, Action::None, "freshservice".into()))
        );
        assert_eq!(
            u(json!({"ticket": {"tags": "", "status": 4}}))
                .unwrap_err()
                .field,
            "ticket.tags"
        );
        assert_eq!(
            u(json!({"ticket": {"tags": "incidentd-1", "status": "Gone"}}))
                .unwrap_err()
                .field,
            "ticket.status"
        );
        assert_eq!(u(json!({"id": 1})).unwrap_err().field, "ticket");
    }

    #[test]
    fn servicenow_states_map_to_actions() {
        let u = servicenow(
            &json!({"correlation_id": "incidentd-42", "state": "6", "sys_updated_by": "beth"}),
        )
        .expect("valid");
        assert_eq!(
            u,
            InboundUpdate {
                incident: IncidentId(42),
                action: Action::Resolve,
                actor: "servicenow:beth".into()
            }
        );
        let u = servicenow(&json!({"result": {"correlation_id": "incidentd-7", "state": 2}}))
            .expect("valid");
        assert_eq!((u.incident, u.action), (IncidentId(7), Action::Acknowledge));
        let u = servicenow(&json!({"correlation_id": "incidentd-7", "state": "Closed"}))
            .expect("valid");
        assert_eq!(u.action, Action::Resolve);
        let u = servicenow(&json!({"correlation_id": "incidentd-7", "state": "3"})).expect("valid");
        assert_eq!(u.action, Action::None);
        assert_eq!(
            servicenow(&json!({"state": "6"})).unwrap_err().field,
            "correlation_id"
        );
        assert_eq!(
            servicenow(&json!({"correlation_id": "INC0010001", "state": "6"}))
                .unwrap_err()
                .field,
            "correlation_id"
        );
        assert_eq!(
            servicenow(&json!({"correlation_id": "incidentd-1"}))
                .unwrap_err()
                .field,
            "state"
        );
    }

    #[test]
    fn jira_status_categories_map_to_actions() {
        let body = |cat: &str| {
            json!({"webhookEvent": "jira:issue_updated", "user": {"displayName": "Bob"},
                   "issue": {"key": "SD-1", "fields": {"labels": ["customer", "incidentd-9"],
                   "status": {"name": "Resolved", "statusCategory": {"key": cat}}}}})
        };
        let u = jira(&body("done")).expect("valid");
        assert_eq!(
            u,
            InboundUpdate {
                incident: IncidentId(9),
                action: Action::Resolve,
                actor: "jira:Bob".into()
            }
        );
        assert_eq!(
            jira(&body("indeterminate")).expect("valid").action,
            Action::Acknowledge
        );
        assert_eq!(jira(&body("new")).expect("valid").action, Action::None);
        let mut no_label = body("done");
        no_label["issue"]["fields"]["labels"] = json!(["x"]);
        assert_eq!(jira(&no_label).unwrap_err().field, "issue.fields.labels");
        // A customer request not labelled yet: the key in its summary.
        no_label["issue"]["fields"]["summary"] = json!("[P1] DiskFull on db-1 (incidentd-7)");
        assert_eq!(jira(&no_label).expect("by summary").incident, IncidentId(7));
        no_label["issue"]["fields"]["summary"] = json!("(incidentd-7) moved by hand");
        assert!(jira(&no_label).is_err());
        assert_eq!(jira(&json!({})).unwrap_err().field, "issue.fields");
    }
}
