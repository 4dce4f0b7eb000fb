//! Slack incoming webhook: a readable Block Kit message when an incident
//! opens, changes priority or resolves (the events on-call people read in
//! a channel); `text` is the fallback notifications show. Every text is cut
//! to Block Kit's limits (api.slack.com/reference/block-kit/blocks: header
//! 150 characters, section text 3,000, 10 fields of 2,000): Slack refuses
//! a message over them with `invalid_blocks`, which no retry would fix.

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
        listed(&inc.impacted_services, FIELD_MAX - 100)
    };
    let field = |k: &str, v: &str| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", fit(v, FIELD_MAX - k.len() - 3))});
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": super::truncate(&head, 150), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": fit(&inc.title, SECTION_MAX)}}),
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
        json!({ "text": fit(&head, SECTION_MAX), "blocks": blocks }),
    ))
}

/// Block Kit's limits on a section's text and on one of its fields.
const SECTION_MAX: usize = 3_000;
const FIELD_MAX: usize = 2_000;

/// `s` escaped for mrkdwn (`&`, `<` and `>` are control characters there)
/// and cut to `max` characters of the escaped text, never inside an
/// entity.
fn fit(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut n = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let piece = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => "",
        };
        let len = if piece.is_empty() { 1 } else { piece.len() };
        // The last piece may use the whole budget; an earlier one must
        // leave room for the ellipsis.
        let room = if chars.peek().is_none() {
            max
        } else {
            max.saturating_sub(1)
        };
        if n + len > room {
            out.push('…');
            return out;
        }
        if piece.is_empty() {
            out.push(c);
        } else {
            out.push_str(piece);
        }
        n += len;
    }
    out
}

/// `items` joined with commas, as many as fit in `max` characters, then
/// "and N more" (plain text: [`fit`] escapes it).
fn listed(items: &[String], max: usize) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        let more = format!(" and {} more", items.len() - i);
        let sep = if i == 0 { "" } else { ", " };
        if out.chars().count() + sep.len() + item.chars().count() + more.len() > max {
            out.push_str(&more);
            return out;
        }
        out.push_str(sep);
        out.push_str(item);
    }
    out
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
    fn texts_are_escaped_and_cut_to_block_kit_limits() {
        assert_eq!(fit("a<b>&c", 100), "a&lt;b&gt;&amp;c");
        assert_eq!(fit("abcdef", 5), "abcd…");
        assert_eq!(fit("abcde", 5), "abcde");
        // Never inside an entity.
        assert_eq!(fit("abc&def", 6), "abc…");
        let many: Vec<String> = (0..40).map(|i| format!("service-{i:02}")).collect();
        let l = listed(&many, 100);
        assert!(l.chars().count() <= 100 && l.ends_with(" more"), "{l}");
        assert!(l.starts_with("service-00, service-01"), "{l}");

        let mut inc = incident();
        inc.title = "<db> & ".repeat(700);
        inc.impacted_services = (0..40)
            .map(|i| format!("{i:02}-{}", "s".repeat(80)))
            .collect();
        let b = message(&inc, EventKind::Opened, None)
            .expect("message")
            .body
            .expect("body");
        let count = |v: &serde_json::Value| v.as_str().map_or(0, |s| s.chars().count());
        assert!(count(&b["text"]) <= 3_000);
        for block in b["blocks"].as_array().expect("blocks") {
            match block["type"].as_str() {
                Some("header") => assert!(count(&block["text"]["text"]) <= 150),
                Some("section") => {
                    assert!(count(&block["text"]["text"]) <= 3_000);
                    let fields = block["fields"].as_array().cloned().unwrap_or_default();
                    assert!(fields.len() <= 10);
                    assert!(fields.iter().all(|f| count(&f["text"]) <= 2_000));
                }
                _ => {}
            }
        }
    }

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
