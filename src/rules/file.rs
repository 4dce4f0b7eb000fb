//! Rule files: YAML text → compiled rules, reporting every problem.
//!
//! The text is parsed into a generic YAML value first and then walked by
//! hand, field by field, rather than deserialized into structs: serde stops
//! at the first error, and `incidentd check` must list them all. Line numbers
//! are recovered afterwards, only for the problems found, by re-reading the
//! text up to the offending node (see [`locate`]).

use super::cel_cond::Condition;
use super::matcher::Matcher;
use super::template::{self, Template};
use super::{Actions, Rule, RuleError};
pub(crate) use crate::domain::yaml::{Seg, locate, render_path};
use crate::domain::{Level, Priority};
use serde_yaml_ng::{Mapping, Value};
use std::path::Path;
use std::sync::Arc;

const RULE_FIELDS: &str = "name, description, matchers, match, when, actions, stop";
const ACTION_FIELDS: &str = "suppress, open, priority, impact, urgency, assign, runbook, notify";

/// Path of rule `index` of a file.
pub(crate) fn rule_path(index: usize) -> Vec<Seg> {
    vec![Seg::Key("rules".to_string()), Seg::Index(index)]
}

/// What one file yields: its rules if it is entirely valid, else errors.
#[derive(Default)]
pub(crate) struct FileOutput {
    pub(crate) rules: Vec<Rule>,
    pub(crate) errors: Vec<RuleError>,
    pub(crate) warnings: Vec<RuleError>,
    /// Every rule with a usable name and its position, valid or not, so
    /// duplicate names are reported even alongside other errors.
    pub(crate) names: Vec<(String, usize)>,
}

/// A problem before it is located in the text.
struct Problem {
    /// Where in the document (always starts at `rules[i]` for rule problems).
    path: Vec<Seg>,
    /// The rule's name, when it has a usable one.
    rule: Option<String>,
    message: String,
}

pub(crate) fn parse_file(file: &Path, text: &str, env: &mut Option<Arc<cel::Env>>) -> FileOutput {
    let mut out = FileOutput::default();
    let doc: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            let mut err = RuleError::file(file, line, format!("invalid YAML: {e}"));
            if line.is_none() {
                // No place in the text (several documents, say): the
                // document as a whole is at fault.
                err.field = "document".into();
            }
            out.errors.push(err);
            return out;
        }
    };
    let mut problems = Vec::new();
    match &doc {
        Value::Null => out
            .warnings
            .push(RuleError::file(file, None, "file defines no rules")),
        Value::Mapping(m) => {
            let mut has_rules = false;
            for (k, v) in m {
                match k.as_str() {
                    Some("rules") => {
                        has_rules = true;
                        match v {
                            Value::Sequence(seq) => {
                                if seq.is_empty() {
                                    out.warnings.push(RuleError::file(
                                        file,
                                        None,
                                        "file defines no rules",
                                    ));
                                }
                                for (i, r) in seq.iter().enumerate() {
                                    let mut walker = RuleWalker::new(i, r, &mut problems);
                                    if let Some(name) = &walker.rule {
                                        out.names.push((name.clone(), i));
                                    }
                                    if let Some(rule) = walker.rule(file, r, env) {
                                        out.rules.push(rule);
                                    }
                                }
                            }
                            Value::Null => out.warnings.push(RuleError::file(
                                file,
                                None,
                                "file defines no rules",
                            )),
                            other => problems.push(Problem {
                                path: vec![Seg::Key("rules".into())],
                                rule: None,
                                message: format!("expected a list of rules, got {}", kind(other)),
                            }),
                        }
                    }
                    Some(other) => problems.push(Problem {
                        path: vec![Seg::Key(other.to_string())],
                        rule: None,
                        message: format!("unknown field {other:?}, expected \"rules\""),
                    }),
                    None => problems.push(Problem {
                        path: Vec::new(),
                        rule: None,
                        message: format!("field names must be strings, got {}", kind(k)),
                    }),
                }
            }
            if !has_rules && problems.is_empty() {
                problems.push(Problem {
                    path: vec![Seg::Key("rules".into())],
                    rule: None,
                    message: "missing the top-level \"rules\" list".to_string(),
                });
            }
        }
        other => problems.push(Problem {
            path: Vec::new(),
            rule: None,
            message: format!(
                "expected a mapping with a \"rules\" list, got {}",
                kind(other)
            ),
        }),
    }
    let mut located: Vec<(Option<usize>, Problem)> = problems
        .into_iter()
        .map(|p| (locate(text, &p.path), p))
        .collect();
    // Report in reading order; problems without a line go last.
    located.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
    for (line, p) in located {
        // A named rule's fields are shown relative to the rule; an unnamed
        // one is identified by its position instead.
        let field = match (&p.rule, p.path.first()) {
            (Some(_), Some(Seg::Key(k))) if k == "rules" && p.path.len() >= 2 => {
                render_path(&p.path[2..])
            }
            _ => render_path(&p.path),
        };
        out.errors.push(RuleError {
            file: file.to_path_buf(),
            line,
            rule: p.rule,
            field,
            message: p.message,
        });
    }
    if !out.errors.is_empty() {
        out.rules.clear();
    }
    out
}

/// Checks and compiles one rule, recording problems instead of stopping.
struct RuleWalker<'p> {
    base: Vec<Seg>,
    rule: Option<String>,
    problems: &'p mut Vec<Problem>,
    before: usize,
}

impl<'p> RuleWalker<'p> {
    fn new(index: usize, v: &Value, problems: &'p mut Vec<Problem>) -> Self {
        let rule = v
            .as_mapping()
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string);
        let before = problems.len();
        RuleWalker {
            base: rule_path(index),
            rule,
            problems,
            before,
        }
    }

    fn err(&mut self, rel: &[&str], message: impl Into<String>) {
        let mut path = self.base.clone();
        path.extend(rel.iter().map(|k| Seg::Key((*k).to_string())));
        self.err_at(path, message);
    }

    fn err_at(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        self.problems.push(Problem {
            path,
            rule: self.rule.clone(),
            message: message.into(),
        });
    }

    fn path(&self, rel: &[&str]) -> Vec<Seg> {
        let mut path = self.base.clone();
        path.extend(rel.iter().map(|k| Seg::Key((*k).to_string())));
        path
    }

    fn rule(&mut self, file: &Path, v: &Value, env: &mut Option<Arc<cel::Env>>) -> Option<Rule> {
        let Some(m) = v.as_mapping() else {
            self.err(
                &[],
                format!(
                    "expected a rule (a mapping with name, matchers, actions, …), got {}",
                    kind(v)
                ),
            );
            return None;
        };
        let mut name = None;
        let mut description = None;
        let mut matchers = Vec::new();
        let mut when = None;
        let mut actions = Actions::default();
        let mut stop = false;
        for (k, v) in m {
            let Some(key) = k.as_str() else {
                self.err(&[], format!("field names must be strings, got {}", kind(k)));
                continue;
            };
            match key {
                "name" => match v {
                    Value::String(s) if !s.trim().is_empty() => name = Some(s.clone()),
                    Value::String(_) => self.err(&["name"], "rule name must not be empty"),
                    other => self.err(&["name"], format!("expected a string, got {}", kind(other))),
                },
                "description" => description = self.string(&["description"], v),
                "matchers" => self.matchers(v, &mut matchers),
                "match" => self.match_map(v, &mut matchers),
                "when" => when = self.when(v, env),
                "actions" => actions = self.actions(v),
                "stop" => stop = self.boolean(&["stop"], v).unwrap_or(false),
                other => self.err(
                    &[other],
                    format!("unknown field {other:?}, expected one of: {RULE_FIELDS}"),
                ),
            }
        }
        if !m.contains_key("name") {
            self.err(&["name"], "missing required field \"name\"");
        }
        if self.problems.len() > self.before {
            return None;
        }
        let Some(name) = name else {
            // Unreachable: a missing or invalid name was recorded above.
            return None;
        };
        let position = match self.base.last() {
            Some(Seg::Index(i)) => *i,
            _ => 0,
        };
        Some(Rule {
            name: Arc::from(name.as_str()),
            description,
            file: file.to_path_buf(),
            position,
            matchers,
            when,
            actions,
            stop,
        })
    }

    fn string(&mut self, rel: &[&str], v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(rel, format!("expected a string, got {}", kind(other)));
                None
            }
        }
    }

    fn non_empty_string(&mut self, rel: &[&str], v: &Value, what: &str) -> Option<String> {
        let s = self.string(rel, v)?;
        if s.trim().is_empty() {
            self.err(rel, format!("{what} must not be empty"));
            return None;
        }
        Some(s)
    }

    fn boolean(&mut self, rel: &[&str], v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(rel, format!("expected true or false, got {}", kind(other)));
                None
            }
        }
    }

    fn matchers(&mut self, v: &Value, out: &mut Vec<Matcher>) {
        let items = match v {
            Value::Sequence(items) => items,
            Value::Null => return,
            other => {
                self.err(
                    &["matchers"],
                    format!(
                        "expected a list of matcher strings like 'alertname=\"Watchdog\"', got {}",
                        kind(other)
                    ),
                );
                return;
            }
        };
        for (j, item) in items.iter().enumerate() {
            let mut path = self.path(&["matchers"]);
            path.push(Seg::Index(j));
            match item {
                Value::String(s) => match Matcher::parse(s) {
                    Ok(m) => out.push(m),
                    Err(e) => self.err_at(path, e),
                },
                Value::Mapping(_) => self.err_at(
                    path,
                    "expected a matcher string like 'alertname=\"Watchdog\"', got a mapping (use `match:` for name: value pairs)",
                ),
                other => self.err_at(
                    path,
                    format!(
                        "expected a matcher string like 'alertname=\"Watchdog\"', got {}",
                        kind(other)
                    ),
                ),
            }
        }
    }

    fn match_map(&mut self, v: &Value, out: &mut Vec<Matcher>) {
        let map = match v {
            Value::Mapping(map) => map,
            Value::Null => return,
            other => {
                self.err(
                    &["match"],
                    format!("expected a mapping of label: value, got {}", kind(other)),
                );
                return;
            }
        };
        for (k, v) in map {
            let Some(name) = k.as_str() else {
                self.err(
                    &["match"],
                    format!("label names must be strings, got {}", kind(k)),
                );
                continue;
            };
            let rel = ["match", name];
            let Some(value) = scalar_text(v) else {
                self.err(
                    &rel,
                    format!("expected a label value (a string), got {}", kind(v)),
                );
                continue;
            };
            match Matcher::equal(name, &value) {
                Ok(m) => out.push(m),
                Err(e) => self.err(&rel, e),
            }
        }
    }

    fn when(&mut self, v: &Value, env: &mut Option<Arc<cel::Env>>) -> Option<Condition> {
        let src = self.string(&["when"], v)?;
        let env = match env {
            Some(env) => Arc::clone(env),
            None => match super::cel_cond::new_env() {
                Ok(new) => Arc::clone(env.insert(new)),
                Err(e) => {
                    self.err(&["when"], e);
                    return None;
                }
            },
        };
        match Condition::compile(&env, &src) {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(&["when"], e);
                None
            }
        }
    }

    fn actions(&mut self, v: &Value) -> Actions {
        let mut a = Actions::default();
        let map: &Mapping = match v {
            Value::Mapping(map) => map,
            Value::Null => return a,
            other => {
                self.err(
                    &["actions"],
                    format!("expected a mapping of actions, got {}", kind(other)),
                );
                return a;
            }
        };
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                self.err(
                    &["actions"],
                    format!("field names must be strings, got {}", kind(k)),
                );
                continue;
            };
            let rel = ["actions", key];
            match key {
                "suppress" => {
                    a.suppress = match v {
                        Value::String(_) => {
                            self.non_empty_string(&rel, v, "the suppression reason")
                        }
                        other => {
                            self.err(
                                &rel,
                                format!(
                                    "expected the reason for suppressing, as a string, got {}",
                                    kind(other)
                                ),
                            );
                            None
                        }
                    }
                }
                "open" => a.open = self.boolean(&rel, v),
                "priority" => a.priority = self.priority(&rel, v),
                "impact" => a.impact = self.level(&rel, v, "impact"),
                "urgency" => a.urgency = self.level(&rel, v, "urgency"),
                "assign" => a.assign = self.non_empty_string(&rel, v, "the assignment group"),
                "runbook" => {
                    for (path, s) in self.strings(&rel, v) {
                        match Template::parse(&s).and_then(|t| {
                            template::check_http_url(&t)?;
                            Ok(t)
                        }) {
                            Ok(t) => a.runbooks.push(t),
                            Err(e) => self.err_at(path, e),
                        }
                    }
                }
                "notify" => {
                    for (path, s) in self.strings(&rel, v) {
                        if s.trim().is_empty() {
                            self.err_at(path, "destination name must not be empty");
                        } else if !a.notify.contains(&s) {
                            a.notify.push(s);
                        }
                    }
                }
                other => self.err(
                    &rel,
                    format!("unknown field {other:?}, expected one of: {ACTION_FIELDS}"),
                ),
            }
        }
        a
    }

    /// A string or a list of strings, each with its own path.
    fn strings(&mut self, rel: &[&str], v: &Value) -> Vec<(Vec<Seg>, String)> {
        match v {
            Value::String(s) => vec![(self.path(rel), s.clone())],
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for (j, item) in items.iter().enumerate() {
                    let mut path = self.path(rel);
                    path.push(Seg::Index(j));
                    match item {
                        Value::String(s) => out.push((path, s.clone())),
                        other => {
                            self.err_at(path, format!("expected a string, got {}", kind(other)))
                        }
                    }
                }
                out
            }
            other => {
                self.err(
                    rel,
                    format!(
                        "expected a string or a list of strings, got {}",
                        kind(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    fn priority(&mut self, rel: &[&str], v: &Value) -> Option<Priority> {
        let parsed = match v {
            Value::String(s) => Priority::parse(s.trim()),
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .and_then(Priority::new),
            _ => None,
        };
        if parsed.is_none() {
            let got = scalar_text(v).unwrap_or_else(|| kind(v).to_string());
            self.err(rel, format!("priority must be P1..P5, got {got:?}"));
        }
        parsed
    }

    fn level(&mut self, rel: &[&str], v: &Value, what: &str) -> Option<Level> {
        let parsed = match v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .and_then(Level::new),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "1" | "high" => Some(Level::HIGH),
                "2" | "medium" => Some(Level::MEDIUM),
                "3" | "low" => Some(Level::LOW),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            let got = scalar_text(v).unwrap_or_else(|| kind(v).to_string());
            self.err(
                rel,
                format!("{what} must be 1 (high), 2 (medium) or 3 (low), got {got:?}"),
            );
        }
        parsed
    }
}

/// A scalar as label-value text: `500` and `true` are fine as values.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
