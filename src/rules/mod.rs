//! The rule engine (DESIGN §4): operator-written rules that decide, per
//! alert, whether to open an incident, suppress it, and with which
//! priority, assignment group, runbooks and notifications.
//!
//! Rules live in `rules/*.yaml` (not in subdirectories: `rules/tests/` holds
//! rule test cases). Files are read in file-name order, rules in file order,
//! so `00-…`, `10-…` prefixes set precedence.
//!
//! # File format
//!
//! ```yaml
//! rules:
//!   - name: suppress-heartbeats           # required, unique across all files
//!     description: "…"                    # optional
//!     matchers:                           # Alertmanager-style, all must hold; optional
//!       - alertname=~"Watchdog|InfoInhibitor"
//!       - severity!="critical"
//!     match: { env: prod }                # shorthand for `=` matchers; optional
//!     when: 'alert.labels.env == "prod" && int(alert.labels.replicas) > 3'   # CEL; optional
//!     actions:
//!       suppress: "heartbeat alerts are not incidents"   # reason, required text
//!       open: false                       # record the alert, open no incident
//!       priority: P2                      # P1..P5 (also 2 or "p2")
//!       impact: 2                         # 1 (high) .. 3 (low), or high/medium/low
//!       urgency: 1
//!       assign: team-db                   # assignment group
//!       runbook: "https://runbooks.example.com/{{ $labels.alertname }}"  # or a list
//!       notify: [slack-db]                # destination names, or a single one
//!     stop: false                         # true: evaluate no later rule once this matched
//! ```
//!
//! Unknown fields are errors, so a typo never silently disables an action.
//!
//! ## Conditions
//!
//! A rule matches when all its matchers, its `match` pairs and its `when`
//! hold; a rule with none of them matches every alert.
//!
//! - Matchers: `name=value`, `name!=value`, `name=~regex`, `name!~regex`,
//!   spaces allowed around the operator. A value may be double-quoted, with
//!   `\"`, `\\`, `\n` and `\t` escapes; unquoted, it is taken as written
//!   (handy for regexes: `code=~5\d\d`). Regexes are anchored at both ends,
//!   as in Alertmanager. A missing label has the value `""`, so
//!   `team=""` means "no team label".
//! - `when`: a [CEL](https://cel.dev) expression that must return a bool,
//!   over these variables:
//!   - `alert`: `labels` and `annotations` (maps of strings), `status`
//!     (`"firing"`/`"resolved"`), `fingerprint`, `source`, `severity` (the
//!     `severity` label or `""`), `alertname`, `starts_at` (timestamp);
//!   - `ci`: `id`, `class`, `service`, `owner`, `in_change_window` (bool),
//!     `change_id`, when the alert is bound to a CI;
//!   - `service`: `id`, `name`, `tier` (int), `owner`;
//!   - `incident`: `state`, `priority` (`"P1"`…), `alert_count` (int),
//!     `flapping` (bool), when the alert joins an existing incident.
//!
//!   Unknown optional facts (a CI without owner) are `""`. Absent `ci`,
//!   `service` or `incident` are empty maps: guard with `has(ci.class)`.
//!   A condition that fails at run time (e.g. a missing label read as
//!   `alert.labels.team`; prefer `alert.labels.?team.orValue("")` or `has()`)
//!   or returns a non-bool does not match, and the error is reported in
//!   [`Decision::errors`]. The CEL strings extension (`lowerAscii()`,
//!   `split()`, …) is available.
//!
//! ## Actions and precedence
//!
//! Every matching rule applies its actions, in order:
//! - `suppress`: the first matching rule that suppresses wins (its reason is
//!   the one recorded); a suppressed alert opens nothing, whatever `open` says;
//! - `priority`, `impact`, `urgency`, `assign`, `open`: the last matching
//!   rule that sets one wins, so later, more specific rules refine earlier,
//!   general ones;
//! - `runbook` and `notify` accumulate over all matching rules, without
//!   duplicates, in order. Runbook templates may use `{{ $labels.NAME }}` and
//!   `{{ $annotations.NAME }}`; a missing one renders as `""`. Values are
//!   inserted as they are (not URL-encoded), as in Prometheus templates.
//! - `stop: true` ends evaluation after this rule, if it matched.

mod cel_cond;
mod error;
mod file;
mod matcher;
mod template;

#[cfg(test)]
mod tests;

pub use error::RuleError;

use crate::domain::{Alert, Level, Priority};
use cel_cond::Condition;
use matcher::Matcher;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use template::Template;

/// What a rule condition can see about one alert. The CMDB facts are
/// optional: unbound alerts still go through the rules.
#[derive(Debug, Clone, Copy)]
pub struct RuleInput<'a> {
    pub alert: &'a Alert,
    pub ci: Option<&'a CiFacts>,
    pub service: Option<&'a ServiceFacts>,
    pub incident: Option<&'a IncidentFacts>,
}

impl<'a> RuleInput<'a> {
    /// An alert with no CMDB or incident facts.
    pub fn new(alert: &'a Alert) -> Self {
        RuleInput {
            alert,
            ci: None,
            service: None,
            incident: None,
        }
    }
}

/// The configuration item the alert is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CiFacts {
    pub id: String,
    pub class: String,
    pub service: Option<String>,
    pub owner: Option<String>,
    pub in_change_window: bool,
    pub change_id: Option<String>,
}

/// The business service the CI belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    pub id: String,
    pub name: String,
    pub tier: u8,
    pub owner: Option<String>,
}

/// The incident the alert would join, if one is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentFacts {
    pub state: String,
    pub priority: Priority,
    pub alert_count: u64,
    pub flapping: bool,
}

/// Why an alert opens no incident, for the timeline ("why is this here").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub rule: Arc<str>,
    pub reason: String,
}

/// The outcome of all rules for one alert. Every override carries the name
/// of the rule that set it, so the incident timeline can explain it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Names of the matching rules, in evaluation order.
    pub matched: Vec<Arc<str>>,
    /// Set by the first matching rule that suppresses.
    pub suppress: Option<Suppression>,
    pub priority: Option<(Priority, Arc<str>)>,
    pub impact: Option<(Level, Arc<str>)>,
    pub urgency: Option<(Level, Arc<str>)>,
    pub assign: Option<(String, Arc<str>)>,
    pub runbooks: Vec<String>,
    pub notify: Vec<String>,
    /// False when a rule says `open: false`: record the alert, open nothing.
    pub open: bool,
    /// CEL run-time errors, by rule; such a rule counted as not matched.
    pub errors: Vec<(Arc<str>, String)>,
}

/// Same as what an empty rule set decides: open, nothing overridden.
impl Default for Decision {
    fn default() -> Self {
        Decision {
            matched: Vec::new(),
            suppress: None,
            priority: None,
            impact: None,
            urgency: None,
            assign: None,
            runbooks: Vec::new(),
            notify: Vec::new(),
            open: true,
            errors: Vec::new(),
        }
    }
}

/// What a rule does when it matches.
#[derive(Debug, Default)]
pub(crate) struct Actions {
    pub(crate) suppress: Option<String>,
    pub(crate) open: Option<bool>,
    pub(crate) priority: Option<Priority>,
    pub(crate) impact: Option<Level>,
    pub(crate) urgency: Option<Level>,
    pub(crate) assign: Option<String>,
    pub(crate) runbooks: Vec<Template>,
    pub(crate) notify: Vec<String>,
}

impl Actions {
    fn is_empty(&self) -> bool {
        self.suppress.is_none()
            && self.open.is_none()
            && self.priority.is_none()
            && self.impact.is_none()
            && self.urgency.is_none()
            && self.assign.is_none()
            && self.runbooks.is_empty()
            && self.notify.is_empty()
    }
}

/// One compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) description: Option<String>,
    pub(crate) file: PathBuf,
    /// Index in its file's `rules` list, to locate it for messages.
    pub(crate) position: usize,
    pub(crate) matchers: Vec<Matcher>,
    pub(crate) when: Option<Condition>,
    pub(crate) actions: Actions,
    pub(crate) stop: bool,
}

impl Rule {
    /// No condition at all: matches every alert.
    fn is_catch_all(&self) -> bool {
        self.matchers.is_empty() && self.when.is_none()
    }

    fn apply(&self, alert: &Alert, d: &mut Decision) {
        let name = &self.name;
        d.matched.push(Arc::clone(name));
        let a = &self.actions;
        if let (None, Some(reason)) = (&d.suppress, &a.suppress) {
            d.suppress = Some(Suppression {
                rule: Arc::clone(name),
                reason: reason.clone(),
            });
        }
        if let Some(open) = a.open {
            d.open = open;
        }
        if let Some(p) = a.priority {
            d.priority = Some((p, Arc::clone(name)));
        }
        if let Some(l) = a.impact {
            d.impact = Some((l, Arc::clone(name)));
        }
        if let Some(l) = a.urgency {
            d.urgency = Some((l, Arc::clone(name)));
        }
        if let Some(g) = &a.assign {
            d.assign = Some((g.clone(), Arc::clone(name)));
        }
        for t in &a.runbooks {
            let url = t.render(alert);
            if !d.runbooks.contains(&url) {
                d.runbooks.push(url);
            }
        }
        for n in &a.notify {
            if !d.notify.contains(n) {
                d.notify.push(n.clone());
            }
        }
    }
}

/// Compiled rules, in evaluation order. Immutable once built: a reload
/// builds a new set and swaps it in whole, so a bad file never leaves a
/// half-applied rule set running.
pub struct RuleSet {
    rules: Vec<Rule>,
    warnings: Vec<RuleError>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.names().collect::<Vec<_>>())
            .field("warnings", &self.warnings.len())
            .finish()
    }
}

/// No rules: every alert opens an incident with computed defaults.
impl Default for RuleSet {
    fn default() -> Self {
        RuleSet::empty()
    }
}

impl RuleSet {
    pub fn empty() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Loads every `*.yaml` / `*.yml` file directly in `dir`, in file-name
    /// order. Subdirectories (`rules/tests/`) and hidden files (editor
    /// swap files) are skipped. Reports every error of every file.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, Vec<RuleError>> {
        RuleSet::load_dir_for(dir, None)
    }

    /// [`RuleSet::load_dir`], and with `destinations` (the configured
    /// outbound destinations' names) a `notify` naming another is an error:
    /// it would notify nobody, silently.
    pub fn load_dir_for(
        dir: &Path,
        destinations: Option<&[String]>,
    ) -> Result<RuleSet, Vec<RuleError>> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![RuleError::file(
                dir,
                None,
                format!("cannot read rules directory: {e}"),
            )]
        })?;
        let mut paths = Vec::new();
        let mut errors = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    errors.push(RuleError::file(
                        dir,
                        None,
                        format!("cannot read rules directory: {e}"),
                    ));
                    continue;
                }
            };
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
            // `is_file` follows symlinks, as Kubernetes ConfigMap mounts need.
            if is_yaml && !name.starts_with('.') && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let mut sources = Vec::with_capacity(paths.len());
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path, text)),
                Err(e) => errors.push(RuleError::file(&path, None, format!("cannot read: {e}"))),
            }
        }
        let loaded = RuleSet::from_sources_for(&sources, destinations);
        match (loaded, errors.is_empty()) {
            (Ok(mut set), true) => {
                if sources.is_empty() {
                    set.warnings.push(RuleError::file(
                        dir,
                        None,
                        "no *.yaml or *.yml rule files: every alert opens an incident",
                    ));
                }
                Ok(set)
            }
            (Ok(_), false) => Err(errors),
            (Err(more), _) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// Builds a rule set from file contents, in the given order; the paths
    /// are only used in messages.
    pub fn from_sources(files: &[(PathBuf, String)]) -> Result<RuleSet, Vec<RuleError>> {
        RuleSet::from_sources_for(files, None)
    }

    /// [`RuleSet::from_sources`], checking `notify` against `destinations`
    /// when given (see [`RuleSet::load_dir_for`]).
    pub fn from_sources_for(
        files: &[(PathBuf, String)],
        destinations: Option<&[String]>,
    ) -> Result<RuleSet, Vec<RuleError>> {
        let mut env = None;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut rules: Vec<Rule> = Vec::new();
        let mut names: Vec<(&Path, &str, String, usize)> = Vec::new();
        for (path, text) in files {
            let out = file::parse_file(path, text, &mut env);
            errors.extend(out.errors);
            warnings.extend(out.warnings);
            rules.extend(out.rules);
            names.extend(
                out.names
                    .into_iter()
                    .map(|(name, pos)| (path.as_path(), text.as_str(), name, pos)),
            );
        }

        // Lines are looked up only for the duplicates: each lookup re-reads
        // the file.
        let mut first: HashMap<&str, (&Path, &str, usize)> = HashMap::new();
        for (path, text, name, pos) in &names {
            if let Some((first_path, first_text, first_pos)) = first.get(name.as_str()) {
                let at = match file::locate(first_text, &file::rule_path(*first_pos)) {
                    Some(l) => format!("{}:{l}", first_path.display()),
                    None => first_path.display().to_string(),
                };
                errors.push(RuleError {
                    file: path.to_path_buf(),
                    line: file::locate(text, &file::rule_path(*pos)),
                    rule: Some(name.clone()),
                    field: "name".to_string(),
                    message: format!("duplicate rule name, first defined at {at}"),
                });
            } else {
                first.insert(name, (path, text, *pos));
            }
        }
        if let Some(known) = destinations {
            errors.extend(unknown_destinations(&rules, files, known));
        }
        if !errors.is_empty() {
            // Reading order: by file, then by line.
            errors.sort_by_key(|e| {
                let file = files.iter().position(|(p, _)| *p == e.file);
                (file, e.line.unwrap_or(usize::MAX))
            });
            return Err(errors);
        }

        let texts: HashMap<&Path, &str> = files
            .iter()
            .map(|(p, t)| (p.as_path(), t.as_str()))
            .collect();
        let line_of = |r: &Rule| {
            texts
                .get(r.file.as_path())
                .and_then(|t| file::locate(t, &file::rule_path(r.position)))
        };
        let warn = |r: &Rule, message: String| RuleError {
            file: r.file.clone(),
            line: line_of(r),
            rule: Some(r.name.to_string()),
            field: String::new(),
            message,
        };
        let mut stopper: Option<&Rule> = None;
        for r in &rules {
            if let Some(s) = stopper {
                warnings.push(warn(
                    r,
                    format!(
                        "can never match: rule {:?} ({}) before it matches every alert and has stop: true",
                        &*s.name,
                        s.file.display()
                    ),
                ));
                continue;
            }
            if let Some(msg) = contradiction(&r.matchers) {
                warnings.push(warn(r, format!("can never match: {msg}")));
            }
            if r.actions.is_empty() && !r.stop {
                warnings.push(warn(
                    r,
                    "has no actions and no stop: it only records that it matched".to_string(),
                ));
            }
            if r.is_catch_all()
                && let Some(reason) = &r.actions.suppress
            {
                warnings.push(warn(
                    r,
                    format!(
                        "has no matchers and no condition: it suppresses every alert ({reason:?}), so no incident will ever open"
                    ),
                ));
            }
            if r.stop && r.is_catch_all() {
                stopper = Some(r);
            }
        }
        Ok(RuleSet { rules, warnings })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule names in evaluation order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.name)
    }

    /// The rule's `description`, for `check` and "why" explanations.
    pub fn description(&self, rule: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| &*r.name == rule)
            .and_then(|r| r.description.as_deref())
    }

    /// Non-fatal findings, for `incidentd check` and the reload log.
    pub fn warnings(&self) -> &[RuleError] {
        &self.warnings
    }

    /// Runs every rule against one alert. Called when an alert first fires
    /// or changes state, not for repeats.
    pub fn evaluate(&self, input: &RuleInput<'_>) -> Decision {
        let mut d = Decision::default();
        // CEL variables are built at most once per call, and only when a rule
        // with a condition gets past its matchers.
        let mut vars = None;
        for rule in &self.rules {
            if !rule.matchers.iter().all(|m| m.matches(&input.alert.labels)) {
                continue;
            }
            if let Some(cond) = &rule.when {
                let vars = vars.get_or_insert_with(|| cond.activation(input));
                match cond.eval(vars) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        d.errors.push((Arc::clone(&rule.name), e));
                        continue;
                    }
                }
            }
            rule.apply(input.alert, &mut d);
            if rule.stop {
                break;
            }
        }
        d
    }
}

/// Every `notify` of `rules` that names no configured destination, with
/// its line (looked up only for these: each lookup re-reads the file).
fn unknown_destinations(
    rules: &[Rule],
    files: &[(PathBuf, String)],
    known: &[String],
) -> Vec<RuleError> {
    let mut out = Vec::new();
    for r in rules {
        for (j, name) in r.actions.notify.iter().enumerate() {
            if known.iter().any(|k| k == name) {
                continue;
            }
            let mut path = file::rule_path(r.position);
            path.extend([
                file::Seg::Key("actions".into()),
                file::Seg::Key("notify".into()),
                file::Seg::Index(j),
            ]);
            let line = files
                .iter()
                .find(|(p, _)| *p == r.file)
                .and_then(|(_, text)| file::locate(text, &path));
            let configured = if known.is_empty() {
                "none is configured".to_string()
            } else {
                format!("configured: {}", known.join(", "))
            };
            out.push(RuleError {
                file: r.file.clone(),
                line,
                rule: Some(r.name.to_string()),
                field: format!("actions.notify[{j}]"),
                message: format!(
                    "unknown destination {name:?}: no [[outbound.destinations]] has this name ({configured}), so it would notify nobody"
                ),
            });
        }
    }
    out
}

/// Two `=` matchers on one label with different values can never both hold.
fn contradiction(matchers: &[Matcher]) -> Option<String> {
    for (i, a) in matchers.iter().enumerate() {
        let Some(va) = a.required_value() else {
            continue;
        };
        for b in &matchers[i + 1..] {
            if let Some(vb) = b.required_value()
                && a.name() == b.name()
                && va != vb
            {
                return Some(format!("{a} and {b} cannot both hold"));
            }
        }
    }
    None
}
