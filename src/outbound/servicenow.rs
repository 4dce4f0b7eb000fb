//! ServiceNow Table API for `incident`: look up by `correlation_id`
//! before creating (so a retry after a lost answer never makes a second
//! ticket), then update the found `sys_id`. States: 1 New, 2 In Progress,
//! 3 On Hold, 6 Resolved; impact and urgency 1..3 as incidentd has them
//! (ServiceNow derives the priority from both); timeline entries go in as
//! work notes.

use super::destination::{Credential, Destination, TicketReader, work_note};
use super::inbound::InboundUpdate;
use super::link::{Answer, Link, Ticket, TicketCalls};
use super::{EventKind, Method, Request, external_key, truncate};
use crate::domain::Incident;
use crate::domain::IncidentId;
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::json;

pub const TABLE: &str = "/api/now/table/incident";

/// `GET` the ticket for `inc`, if one was created: an empty `result`
/// array means none.
pub fn lookup(inc: &Incident) -> Request {
    Request {
        base: super::Base::Url,
        method: Method::Get,
        path: format!(
            "{TABLE}?sysparm_query=correlation_id%3D{}&sysparm_fields=sys_id%2Cnumber%2Cstate&sysparm_limit=1",
            external_key(inc)
        ),
        body: None,
    }
}

/// ServiceNow's `hold_reason` choice values.
fn hold_reason(reason: &str) -> u8 {
    match reason {
        "awaiting_caller" => 1,
        "awaiting_problem" => 3,
        "awaiting_vendor" => 4,
        "awaiting_change" => 5,
        // Anything else: Awaiting Caller is the generic "waiting" choice.
        _ => 1,
    }
}

/// The fields that create the ticket (when [`lookup`] found none).
pub fn create(inc: &Incident, assignment_group: Option<&str>) -> Request {
    let mut body = json!({
        "short_description": truncate(&super::summary(inc), 160),
        "description": description(inc),
        "impact": inc.impact.get(),
        "urgency": inc.urgency.get(),
        "correlation_id": external_key(inc),
        "correlation_display": "incidentd",
        "contact_type": "monitoring",
    });
    if let Some(g) = assignment_group.or(inc.assignment_group.as_deref()) {
        body["assignment_group"] = json!(g);
    }
    if let Some(ci) = &inc.root_ci {
        body["cmdb_ci"] = json!(ci);
    }
    Request::post(TABLE, body)
}

/// The update of ticket `sys_id` for `kind`; `note` (a timeline line)
/// becomes a work note.
/// The `close_code` of a resolution when none is configured: one of the
/// resolution codes of current instances' incident form (the older
/// "Solved (Permanently)" is not a choice there; set `close_code` to the
/// instance's own when it differs).
pub const CLOSE_CODE: &str = "Solution provided";

pub fn update(
    inc: &Incident,
    sys_id: &str,
    kind: EventKind,
    note: &str,
    close_code: &str,
) -> Request {
    let mut body = json!({ "work_notes": note });
    match kind {
        EventKind::Opened | EventKind::PriorityChanged => {
            body["impact"] = json!(inc.impact.get());
            body["urgency"] = json!(inc.urgency.get());
        }
        EventKind::Acknowledged | EventKind::Resumed | EventKind::Reopened => {
            body["state"] = json!(2);
        }
        EventKind::OnHold => {
            body["state"] = json!(3);
            let reason = inc.current_hold().map_or("", |h| h.reason.as_str());
            body["hold_reason"] = json!(hold_reason(reason));
        }
        EventKind::Resolved => {
            body["state"] = json!(6);
            body["close_code"] = json!(close_code);
            body["close_notes"] = json!(format!(
                "Resolved in incidentd (incident {}): {note}",
                inc.id.0
            ));
        }
    }
    Request {
        base: super::Base::Url,
        method: Method::Patch,
        path: format!("{TABLE}/{sys_id}"),
        body: Some(body),
    }
}

fn description(inc: &Incident) -> String {
    let mut d = format!(
        "Opened by incidentd (incident {}) at {}.\nRoot cause CI: {}\nImpacted services: {}\nCIs: {}",
        inc.id.0,
        inc.opened_at.to_rfc3339(),
        inc.root_ci.as_deref().unwrap_or("unknown"),
        inc.impacted_services.join(", "),
        inc.cis.join(", "),
    );
    for r in &inc.links.runbooks {
        d.push_str("\nRunbook: ");
        d.push_str(r);
    }
    d
}

/// The `sys_id` of the first record of a Table API answer
/// (`{"result": [...]}` of a query, `{"result": {...}}` of a create).
pub fn sys_id(answer: &serde_json::Value) -> Option<String> {
    let r = &answer["result"];
    let rec = if r.is_array() { &r[0] } else { r };
    rec["sys_id"].as_str().map(str::to_string)
}

/// A ServiceNow instance's `incident` table.
pub struct ServiceNow {
    pub assignment_group: Option<String>,
    /// The resolution code resolved tickets get (`close_code`).
    pub close_code: String,
    pub credential: Credential,
}

impl Destination for ServiceNow {
    fn credential(&self) -> Option<&Credential> {
        Some(&self.credential)
    }

    /// The ticket's `sys_id` (stored, else looked up by `correlation_id`,
    /// else created: a create whose answer was lost is found by the lookup
    /// of the retry, never made twice), then the update for the event.
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
                    lookup: lookup(inc),
                    found: sys_id,
                    create: create(inc, self.assignment_group.as_deref()),
                    created: sys_id,
                    no_id: "the create answered without a sys_id",
                })
                .await?;
            let sys_id = match ticket {
                Ticket::Known(s) => s,
                Ticket::Created(_, answer) | Ticket::Done(answer) => return Ok(Some(answer)),
            };
            let note = work_note(inc, kind);
            Ok(Some(
                link.call(&update(inc, &sys_id, kind, &note, &self.close_code), row.id)
                    .await,
            ))
        })
    }

    fn reader(&self) -> Option<&dyn TicketReader> {
        Some(self)
    }
}

impl TicketReader for ServiceNow {
    fn query(&self, batch: &[(IncidentId, String)]) -> Request {
        let ids: Vec<String> = batch.iter().map(|(_, e)| e.clone()).collect();
        super::poll::servicenow(&ids)
    }

    /// In Progress set by the integration user itself is ours (basic
    /// auth tells who that is; with a bearer token acknowledgements are
    /// not read back).
    fn updates(&self, answer: &serde_json::Value) -> Vec<InboundUpdate> {
        let ours = match &self.credential {
            Credential::Basic { user, .. } => Some(user.as_str()),
            _ => None,
        };
        super::poll::servicenow_updates(answer, ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Hold, Timestamp};
    use crate::outbound::tests::incident;

    #[test]
    fn look_up_create_and_update_by_correlation_id() {
        let inc = incident();
        let l = lookup(&inc);
        assert_eq!(l.method, Method::Get);
        assert_eq!(
            l.path,
            "/api/now/table/incident?sysparm_query=correlation_id%3Dincidentd-42&sysparm_fields=sys_id%2Cnumber%2Cstate&sysparm_limit=1"
        );
        let c = create(&inc, None).body.expect("body");
        assert_eq!(c["correlation_id"], "incidentd-42");
        assert_eq!(c["short_description"], "[P1] PostgresDown on pg-0");
        assert_eq!(
            (c["impact"].as_u64(), c["urgency"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(c["assignment_group"], "team-dba");
        assert_eq!(c["cmdb_ci"], "pg-0");
        let r = update(
            &inc,
            "abc123",
            EventKind::Resolved,
            "auto-resolved",
            CLOSE_CODE,
        );
        assert_eq!(
            (r.method, r.path.as_str()),
            (Method::Patch, "/api/now/table/incident/abc123")
        );
        let b = r.body.expect("body");
        assert_eq!(b["state"], 6);
        assert_eq!(b["close_code"], "Solution provided");
        assert_eq!(b["work_notes"], "auto-resolved");
        let mut held = inc.clone();
        held.holds.push(Hold {
            reason: "awaiting_vendor".into(),
            start: Timestamp(0),
            end: None,
            by: None,
        });
        let h = update(&held, "abc123", EventKind::OnHold, "on hold", CLOSE_CODE)
            .body
            .expect("body");
        assert_eq!(
            (h["state"].as_u64(), h["hold_reason"].as_u64()),
            (Some(3), Some(4))
        );
        let a = update(&inc, "abc123", EventKind::Acknowledged, "ack", CLOSE_CODE)
            .body
            .expect("body");
        assert_eq!(a["state"], 2);
        assert_eq!(
            sys_id(&json!({"result": [{"sys_id": "s1", "number": "INC001"}]})),
            Some("s1".into())
        );
        assert_eq!(
            sys_id(&json!({"result": {"sys_id": "s2"}})),
            Some("s2".into())
        );
        assert_eq!(sys_id(&json!({"result": []})), None);
    }
}
