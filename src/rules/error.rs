//! The rules module's one error type.

use std::path::{Path, PathBuf};

/// A problem found in a rule file, located precisely enough (file, line,
/// rule, field) that `incidentd check` can list every one of them at once and
/// the operator can fix them all in one pass.
///
/// Displays as `rules/10-db.yaml:7: rule "db-down": actions.priority: …`;
/// the line, rule and field parts are left out when unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", prefix(.file, *.line, .rule.as_deref(), .field))]
pub struct RuleError {
    pub file: PathBuf,
    /// 1-based line in `file`, when the YAML parser could place the problem.
    pub line: Option<usize>,
    /// The rule's name, when the rule has a usable one.
    pub rule: Option<String>,
    /// Path of the offending field inside the rule (`actions.priority`,
    /// `matchers[1]`), or inside the file (`rules[3].name`) when the rule has
    /// no name; empty for problems with the file as a whole.
    pub field: String,
    pub message: String,
}

impl RuleError {
    /// An error about a whole file (unreadable, not YAML, …).
    pub(crate) fn file(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        RuleError {
            file: file.to_path_buf(),
            line,
            rule: None,
            field: String::new(),
            message: message.into(),
        }
    }
}

fn prefix(file: &Path, line: Option<usize>, rule: Option<&str>, field: &str) -> String {
    let mut s = file.display().to_string();
    if let Some(line) = line {
        s.push(':');
        s.push_str(&line.to_string());
    }
    s.push_str(": ");
    if let Some(rule) = rule {
        s.push_str("rule ");
        s.push_str(&format!("{rule:?}"));
        s.push_str(": ");
    }
    if !field.is_empty() {
        s.push_str(field);
        s.push_str(": ");
    }
    s
}
