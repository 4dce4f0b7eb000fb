//! Field templates: ticket fields an operator fills from the incident
//! (`"[{priority}] {title}"`, `"{service}"`), parsed when the
//! configuration is read so a misspelt placeholder is a start-up error,
//! not an empty field on every ticket.

use crate::domain::Incident;
use std::fmt::Write as _;

/// What a placeholder names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Id,
    Key,
    Title,
    Priority,
    Impact,
    Urgency,
    State,
    RootCi,
    Service,
    Services,
    Cis,
    AssignmentGroup,
    AlertCount,
    OpenedAt,
    Runbooks,
    Problem,
    Change,
}

const VARS: [(&str, Var); 17] = [
    ("id", Var::Id),
    ("key", Var::Key),
    ("title", Var::Title),
    ("priority", Var::Priority),
    ("impact", Var::Impact),
    ("urgency", Var::Urgency),
    ("state", Var::State),
    ("root_ci", Var::RootCi),
    ("service", Var::Service),
    ("services", Var::Services),
    ("cis", Var::Cis),
    ("assignment_group", Var::AssignmentGroup),
    ("alert_count", Var::AlertCount),
    ("opened_at", Var::OpenedAt),
    ("runbooks", Var::Runbooks),
    ("problem", Var::Problem),
    ("change", Var::Change),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
    /// `{label.NAME}`: a label of the incident's first alert (where the
    /// alert's labels are at hand: a remediation's parameters).
    Label(String),
}

/// A parsed template: text with `{name}` placeholders (`{{` and `}}` are
/// literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// The template `s`, or why it is not one (naming the placeholders
    /// there are).
    pub fn parse(s: &str) -> Result<Template, String> {
        Template::parse_inner(s, false)
    }

    /// The template `s`, which may also name the labels of the
    /// incident's first alert, `{label.instance}`.
    pub fn parse_with_labels(s: &str) -> Result<Template, String> {
        Template::parse_inner(s, true)
    }

    /// Whether it names an alert label.
    pub fn uses_labels(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Label(_)))
    }

    fn parse_inner(s: &str, labels: bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("{s:?}: '{{' without its '}}'")),
                        }
                    }
                    let label = name.trim().strip_prefix("label.").filter(|l| {
                        labels
                            && !l.is_empty()
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    });
                    let part = match (label, VARS.iter().find(|(n, _)| *n == name.trim())) {
                        (Some(l), _) => Part::Label(l.to_string()),
                        (None, Some((_, var))) => Part::Var(*var),
                        (None, None) => {
                            return Err(format!(
                                "{s:?}: unknown placeholder {{{name}}}; one of {}{}",
                                VARS.iter()
                                    .map(|(n, _)| format!("{{{n}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                if labels { ", {label.NAME}" } else { "" }
                            ));
                        }
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(part);
                }
                '}' => return Err(format!("{s:?}: '}}' without its '{{' (write '}}}}')")),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: s.to_string(),
            parts,
        })
    }

    /// A fixed text (a configured name, no placeholders).
    pub fn literal(s: &str) -> Template {
        Template {
            source: s.replace('{', "{{").replace('}', "}}"),
            parts: vec![Part::Text(s.to_string())],
        }
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text for `inc`; a placeholder with nothing to say (no root CI,
    /// no problem) is empty.
    pub fn render(&self, inc: &Incident) -> String {
        self.render_with(inc, None)
    }

    /// The text for `inc` with `labels` (its first alert's) for the
    /// `{label.NAME}` placeholders; a label it lacks is empty.
    pub fn render_with(&self, inc: &Incident, labels: Option<&crate::domain::LabelSet>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => value(&mut out, *v, inc),
                Part::Label(l) => out.push_str(labels.and_then(|s| s.get(l)).unwrap_or_default()),
            }
        }
        out
    }
}

fn value(out: &mut String, v: Var, inc: &Incident) {
    let opt = |o: &Option<Box<str>>| o.as_deref().unwrap_or_default().to_string();
    let s = match v {
        Var::Id => {
            let _ = write!(out, "{}", inc.id.0);
            return;
        }
        Var::Key => super::external_key(inc),
        Var::Title => inc.title.to_string(),
        Var::Priority => inc.priority.to_string(),
        Var::Impact => inc.impact.get().to_string(),
        Var::Urgency => inc.urgency.get().to_string(),
        Var::State => inc.state.as_str().to_string(),
        Var::RootCi => opt(&inc.root_ci),
        Var::Service => inc.impacted_services.first().cloned().unwrap_or_default(),
        Var::Services => inc.impacted_services.join(", "),
        Var::Cis => inc.cis.join(", "),
        Var::AssignmentGroup => opt(&inc.assignment_group),
        Var::AlertCount => inc.alert_count.to_string(),
        Var::OpenedAt => inc.opened_at.to_rfc3339(),
        Var::Runbooks => inc.links.runbooks.join(" "),
        Var::Problem => opt(&inc.links.problem),
        Var::Change => opt(&inc.links.change),
    };
    out.push_str(&s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    #[test]
    fn labels_only_where_asked_for() {
        let mut labels = crate::domain::LabelSet::new();
        labels.insert("instance".into(), "pg-0:9187".into());
        let t = Template::parse_with_labels("{label.instance} of {key}").expect("labels allowed");
        assert!(t.uses_labels());
        let inc = crate::outbound::tests::incident();
        assert_eq!(
            t.render_with(&inc, Some(&labels)),
            "pg-0:9187 of incidentd-42"
        );
        assert_eq!(t.render(&inc), " of incidentd-42");
        let e = Template::parse("{label.instance}").expect_err("not for ticket fields");
        assert!(e.contains("unknown placeholder {label.instance}"), "{e}");
        assert!(Template::parse_with_labels("{label.}").is_err());
    }

    #[test]
    fn placeholders_are_filled_and_mistakes_named() {
        let inc = incident();
        let t = Template::parse("[{priority}] {title} on {root_ci} ({key}) {{x}}").expect("ok");
        assert_eq!(
            t.render(&inc),
            "[P1] PostgresDown on pg-0 on pg-0 (incidentd-42) {x}"
        );
        assert_eq!(
            Template::parse("{service}/{services}")
                .expect("ok")
                .render(&inc),
            "checkout/checkout, search"
        );
        assert_eq!(Template::parse("{problem}").expect("ok").render(&inc), "");
        let e = Template::parse("{tittle}").expect_err("unknown");
        assert!(
            e.contains("unknown placeholder {tittle}") && e.contains("{title}"),
            "{e}"
        );
        assert!(Template::parse("{title").is_err());
        assert!(Template::parse("a } b").is_err());
    }
}
