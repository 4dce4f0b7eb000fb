//! Runbook URL templates: `{{ $labels.NAME }}` and `{{ $annotations.NAME }}`,
//! the two placeholders Prometheus alerting rules use, and nothing more.
//!
//! Parsed once at load time; rendering is a plain concatenation, so it costs
//! nothing per alert beyond the resulting string.

use crate::domain::Alert;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Label(String),
    Annotation(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub(crate) fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = src;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(format!("unclosed \"{{{{\" in {src:?}"));
            };
            let inner = after[..close].trim();
            let part = if let Some(name) = inner.strip_prefix("$labels.") {
                Part::Label(placeholder_name(name, inner)?)
            } else if let Some(name) = inner.strip_prefix("$annotations.") {
                Part::Annotation(placeholder_name(name, inner)?)
            } else {
                return Err(unsupported(inner));
            };
            parts.push(part);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The template with its placeholders removed, for validating the
    /// fixed part (e.g. that it is an http(s) URL).
    pub(crate) fn literal_text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Renders with the alert's labels and annotations; a missing one
    /// renders as the empty string, as in Prometheus templates.
    pub(crate) fn render(&self, alert: &Alert) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Label(n) => out.push_str(alert.labels.get(n).unwrap_or("")),
                Part::Annotation(n) => out.push_str(alert.annotations.get(n).unwrap_or("")),
            }
        }
        out
    }
}

fn placeholder_name(name: &str, inner: &str) -> Result<String, String> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(name.to_string())
    } else {
        Err(unsupported(inner))
    }
}

fn unsupported(inner: &str) -> String {
    format!(
        "unsupported placeholder \"{{{{ {inner} }}}}\": only {{{{ $labels.NAME }}}} and {{{{ $annotations.NAME }}}} are supported"
    )
}

/// A runbook must be a link someone can click from the incident.
pub(crate) fn check_http_url(t: &Template) -> Result<(), String> {
    let fixed = t.literal_text();
    let lower = fixed.to_ascii_lowercase();
    let scheme_ok = lower.starts_with("http://") || lower.starts_with("https://");
    if scheme_ok && !fixed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Ok(())
    } else {
        Err(format!(
            "runbook must be an http:// or https:// URL (placeholders aside), got {fixed:?}"
        ))
    }
}
