//! Slack incoming webhook: a readable Block Kit message when an incident
//! opens, changes priority or resolves (the events on-call people read in
//! a channel); `text` is the fallback notifications show.

use super::destination::{Destination, one_call};
use super::link::{Answer, Link};
use super::{EventKind, Request, summary};
use crate::domain::Incident;
use crate::store::{BoxFuture, OutboxRow, StoreError};
use serde_json::json;

/// The message for `kind`, or `None` for events a channel need not see.
/// `link` is where the incident can be opened (the API or a UI), if set.
pub fn message(inc: &Incident, kind: EventKind, link: Option<&str>) -> Option<Request> {
    let (icon, verb) = match kind {
        EventKind::Opened => (":rotating_light:", "opened"),
        EventKind::Reopened => (":rotating_light:", "reopened"),
        EventKind::PriorityChanged => (":arrow_up:", "is now"),
        EventKind::Resolved => (":white_check_mark:", "resolved"),
        EventKind::Acknowledged | EventKind::OnHold | EventKind::Resumed => return None,
    };
    let head = match kind {
        EventKind::PriorityChanged => {
            format!("{icon} Incident {} {verb} {}", inc.id.0, inc.priority)
        }
        _ => format!("{icon} Incident {} {verb}: {}", inc.id.0, summary(inc)),
    };
    let services = if inc.impacted_services.is_empty() {
        "none in the catalog".to_string()
    } else {
        inc.impacted_services.join(", ")
    };
    let field =
        |k: &str, v: &str| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", escape(v))});
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": super::truncate(&head, 150), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": escape(&inc.title)}}),
        json!({"type": "section", "fields": [
            field("Priority", &format!("{} (impact {}, urgency {})", inc.priority, inc.impact.get(), inc.urgency.get())),
            field("State", inc.state.as_str()),
            field("Root cause", inc.root_ci.as_deref().unwrap_or("unknown")),
            field("Services", &services),
            field("Assigned to", inc.assignment_group.as_deref().unwrap_or("unassigned")),
            field("Alerts", &inc.alert_fingerprints.len().to_string()),
        ]}),
    ];
    let mut context = vec![
        json!({"type": "mrkdwn", "text": format!("incidentd incident {} · opened {}", inc.id.0, inc.opened_at.to_rfc3339())}),
    ];
    if let Some(l) = link {
        context.push(json!({"type": "mrkdwn", "text": format!("<{l}|details>")}));
    }
    for r in inc.links.runbooks.iter().take(3) {
        context.push(json!({"type": "mrkdwn", "text": format!("<{r}|runbook>")}));
    }
    blocks.push(json!({"type": "context", "elements": context}));
    // `text` (the notification fallback) is mrkdwn too; the header block
    // is plain text.
    Some(Request::post(
        "",
        json!({ "text": escape(&head), "blocks": blocks }),
    ))
}

/// Slack mrkdwn treats `&`, `<` and `>` as control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming webhook: its URL is the secret.
pub struct Slack {
    /// Where an incident can be opened, `{id}` replaced.
    pub incident_url: Option<String>,
}

impl Destination for Slack {
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        let inc = &row.message.incident;
        let url = self
            .incident_url
            .as_ref()
            .map(|u| u.replace("{id}", &inc.id.0.to_string()));
        let req = message(inc, row.message.kind, url.as_deref());
        Box::pin(one_call(link, row, req))
    }

    /// The webhook URL's path is its secret.
    fn display(&self, url: &str) -> String {
        crate::net::redact::redact_url_path(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    #[test]
    fn open_priority_and_resolve_make_readable_messages() {
        let mut inc = incident();
        inc.title = "5xx > 5% on <checkout> & cart".into();
        let m = message(
            &inc,
            EventKind::Opened,
            Some("https://incidentd.example.com/api/v1/incidents/42"),
        )
        .expect("a message")
        .body
        .expect("body");
        assert_eq!(
            m["text"],
            ":rotating_light: Incident 42 opened: [P1] 5xx &gt; 5% on &lt;checkout&gt; &amp; cart"
        );
        assert_eq!(
            m["blocks"][0]["text"]["text"],
            ":rotating_light: Incident 42 opened: [P1] 5xx > 5% on <checkout> & cart"
        );
        assert_eq!(m["blocks"][0]["type"], "header");
        assert_eq!(
            m["blocks"][1]["text"]["text"],
            "5xx &gt; 5% on &lt;checkout&gt; &amp; cart"
        );
        let fields = m["blocks"][2]["fields"].as_array().expect("fields");
        assert!(
            fields
                .iter()
                .any(|f| f["text"] == "*Services*\ncheckout, search")
        );
        assert!(fields.iter().any(|f| f["text"] == "*Root cause*\npg-0"));
        let ctx = m["blocks"][3]["elements"].as_array().expect("context");
        assert!(ctx.iter().any(|e| e["text"] == "<https://incidentd.example.com/api/v1/incidents/42|details>"));
        let p = message(&inc, EventKind::PriorityChanged, None)
            .expect("message")
            .body
            .expect("body");
        assert_eq!(p["text"], ":arrow_up: Incident 42 is now P1");
        assert!(message(&inc, EventKind::Resolved, None).is_some());
        assert!(message(&inc, EventKind::Acknowledged, None).is_none());
    }
}
