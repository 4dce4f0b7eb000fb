//! Rule unit tests (`incidentd test DIR`, DESIGN §4): YAML cases of input
//! alerts and expected incidents, run through the real pipeline
//! ([`offline::replay_bodies`]: normalize, dedup, correlate, rules, incident
//! engine, SQLite store in memory), failing on any difference. Modelled on
//! `promtool test rules`.
//!
//! # File format
//!
//! Every `*.yaml` / `*.yml` file directly in `DIR` is a test file (sorted by
//! name; hidden files skipped). `DIR` may also name one file.
//!
//! ```yaml
//! rules: ..            # optional: rule directory, relative to this file;
//!                      # default: the parent of the directory holding it
//!                      # (rules/tests/x.yaml tests rules/*.yaml)
//! config: null         # optional: incidentd TOML config, relative to this
//!                      # file (engine settings: holds, windows, matrix);
//!                      # default: `incidentd test --config`, else defaults
//! cmdb: cmdb.yaml      # optional: CMDB (exchange format), relative to this
//!                      # file; without it alerts bind to no CI
//! changes: changes.json  # optional: change records (JSON array)
//! tests:
//!   - name: critical host down pages at P2
//!     alerts:          # deliveries, processed in order, one at a time
//!       - labels: {alertname: HostDown, instance: "db-1:9100", severity: critical}
//!         annotations: {summary: db-1 is down}
//!         starts_at: "2026-03-02T08:00:00Z"
//!       - labels: {alertname: HostDown, instance: "db-1:9100", severity: critical}
//!         status: resolved
//!         starts_at: "2026-03-02T08:00:00Z"
//!         ends_at: "2026-03-02T08:10:00Z"
//!     expect:
//!       incidents:     # exactly these incidents, ordered by opened_at then id
//!         - title: "HostDown on db-1"     # every field optional; only the
//!           state: resolved               # fields given are compared
//!           priority: P2
//! ```
//!
//! ## Alerts
//!
//! Each item is one delivery: either a canonical alert (the shape
//! `POST /api/v1/alerts` takes: `labels`, `annotations`, `status`,
//! `starts_at`, `ends_at`, `fingerprint`, `source`, `generator_url`; camelCase
//! accepted) or a whole Alertmanager webhook body (an object with `alerts`).
//! Items go through the same parsers as live traffic. Label and annotation
//! values that YAML reads as numbers or booleans (`port: 9100`) are taken as
//! the strings they were written as.
//!
//! Time runs on the alerts' own times, never the wall clock, so a test gives
//! the same result on any day. For that, every alert needs `starts_at`; an
//! alert with `ends_at` needs an explicit `status` (the API reads a future
//! `ends_at` as "still firing"); a resolved alert needs `ends_at`. After the
//! last item, pending auto-resolve holds run out, as if the stream went
//! quiet: an incident whose alerts all resolved ends up `resolved`.
//!
//! ## Expected incidents
//!
//! | field              | compared with                                   |
//! |--------------------|-------------------------------------------------|
//! | `title`            | title                                           |
//! | `key`              | correlation key (`HostDown\|host:db-1`)         |
//! | `state`            | `open`, `acknowledged` or `resolved`            |
//! | `priority`         | `P1` … `P5`                                     |
//! | `impact`, `urgency`| 1 (high) … 3 (low)                              |
//! | `alerts`           | number of distinct alerts (fingerprints)        |
//! | `fingerprints`     | the set of alert fingerprints (16 hex digits)   |
//! | `deliveries`       | deliveries counted, repeats included            |
//! | `rules`            | the set of rules that acted on the incident     |
//! | `runbooks`         | the set of runbook links                        |
//! | `assignment_group` | group; `null` asserts there is none            |
//! | `root_ci`          | root cause CI; `null` asserts there is none     |
//! | `root_inferred`    | bool: the root CI has no alert of its own       |
//! | `flapping`         | bool                                            |
//! | `reopen_count`     | times it was reopened                           |
//! | `opened_at`        | RFC 3339 time                                   |
//! | `resolved_at`      | RFC 3339 time; `null` asserts it is unresolved  |
//!
//! Lists are compared as sets. Unknown fields are errors, in the file as in
//! the expectations, so a typo never turns a check off.
//!
//! ## Output
//!
//! One line per test (`ok` / `FAIL`); for a failure, each difference
//! (`incidents[0].priority: expected P1, got P2`) and then every incident
//! the rules produced, one per line, written as an expectation that can be
//! pasted into the file. A file that cannot be read, parsed or set up (bad
//! rules, bad config) is reported with its path and field and counts as one
//! failure.

use crate::domain::{Fingerprint, Incident, IncidentState, Level, Priority, Timestamp};
use crate::normalize::NormalizeError;
use crate::offline;
use serde::{Deserialize, Deserializer};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a whole run could not start; problems inside test files are
/// reported in the output instead, as failures.
#[derive(Debug, thiserror::Error)]
pub enum RuleTestError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no *.yaml or *.yml test files", .0.display())]
    NoFiles(PathBuf),
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Tests run and failed. A file that could not be set up is one failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

impl Summary {
    fn add(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rules: Option<PathBuf>,
    #[serde(default)]
    config: Option<PathBuf>,
    /// CMDB file (exchange format) relative to the test file; none if unset.
    #[serde(default)]
    cmdb: Option<PathBuf>,
    /// Change records (JSON array) relative to the test file.
    #[serde(default)]
    changes: Option<PathBuf>,
    tests: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    alerts: Vec<serde_yaml_ng::Value>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    incidents: Vec<Expected>,
}

/// One expected incident; `None` means "not compared".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    title: Option<String>,
    key: Option<String>,
    state: Option<IncidentState>,
    priority: Option<Priority>,
    impact: Option<Level>,
    urgency: Option<Level>,
    alerts: Option<usize>,
    fingerprints: Option<Vec<Fingerprint>>,
    deliveries: Option<u64>,
    rules: Option<Vec<String>>,
    runbooks: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    assignment_group: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    root_ci: Option<Option<String>>,
    root_inferred: Option<bool>,
    flapping: Option<bool>,
    reopen_count: Option<u32>,
    opened_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "nullable")]
    resolved_at: Option<Option<Timestamp>>,
}

/// Absent → `None` (not compared); `null` → `Some(None)` (must be unset).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `incidentd test DIR`: run every test file in `dir` (or the one file
/// `dir` names), writing the report to `out`.
pub async fn run_dir(
    dir: &Path,
    config: Option<&Path>,
    out: &mut (dyn Write + Send),
) -> Result<Summary, RuleTestError> {
    let files = if dir.is_file() {
        vec![dir.to_path_buf()]
    } else {
        test_files(dir)?
    };
    let mut total = Summary::default();
    for file in &files {
        let mut report = String::new();
        total.add(run_file(file, config, &mut report).await);
        out.write_all(report.as_bytes())?;
    }
    writeln!(
        out,
        "\n{} passed, {} failed ({} file{})",
        total.passed,
        total.failed,
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    )?;
    Ok(total)
}

fn test_files(dir: &Path) -> Result<Vec<PathBuf>, RuleTestError> {
    let read_err = |source| RuleTestError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if (name.ends_with(".yaml") || name.ends_with(".yml"))
            && !name.starts_with('.')
            && path.is_file()
        {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(RuleTestError::NoFiles(dir.to_path_buf()));
    }
    files.sort();
    Ok(files)
}

/// The directory a test file's relative paths start from.
fn base_dir(file: &Path) -> &Path {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The parent of the directory holding the test file: `rules/tests/x.yaml`
/// → `rules`.
fn default_rules_dir(file: &Path) -> PathBuf {
    let dir = base_dir(file);
    match (dir.file_name(), dir.parent()) {
        (Some(_), Some(p)) if !p.as_os_str().is_empty() => p.to_path_buf(),
        (Some(_), _) => PathBuf::from("."),
        // `.` or `..`: no name to strip.
        (None, _) => dir.join(".."),
    }
}

/// Run one test file, appending its report to `out`.
/// (Writing to a `String` cannot fail, hence the ignored `writeln!` results.)
pub async fn run_file(file: &Path, cli_config: Option<&Path>, out: &mut String) -> Summary {
    let shown = file.display();
    let fail = |out: &mut String, msg: String| {
        let _ = writeln!(out, "{shown}\n  FAIL  {msg}");
        Summary {
            passed: 0,
            failed: 1,
        }
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(out, format!("{shown}: cannot read: {e}")),
    };
    let parsed: TestFile = match parse_yaml(file, &text) {
        Ok(t) => t,
        Err(e) => return fail(out, e),
    };
    if parsed.tests.is_empty() {
        return fail(out, format!("{shown}: tests: the file defines no tests"));
    }
    let base = base_dir(file);
    let rules_dir = parsed
        .rules
        .as_ref()
        .map_or_else(|| default_rules_dir(file), |r| base.join(r));
    if !rules_dir.is_dir() {
        return fail(
            out,
            format!("{shown}: rules: {} is not a directory", rules_dir.display()),
        );
    }
    let config = parsed
        .config
        .as_ref()
        .map(|c| base.join(c))
        .or_else(|| cli_config.map(Path::to_path_buf));
    let cmdb = match &parsed.cmdb {
        Some(p) => offline::CmdbChoice::File(base.join(p)),
        None => offline::CmdbChoice::None,
    };
    let changes = parsed.changes.as_ref().map(|c| base.join(c));
    let setup = match offline::offline_setup(
        config.as_deref(),
        Some(rules_dir.clone()),
        cmdb,
        changes.as_deref(),
    ) {
        Ok(setup) => setup,
        Err(e) => return fail(out, format!("{shown}: {e:#}")),
    };
    let _ = writeln!(out, "{shown} (rules: {})", rules_dir.display());
    let mut summary = Summary::default();
    for (i, case) in parsed.tests.iter().enumerate() {
        let problems = match bodies_of(i, &case.alerts) {
            Err(e) => vec![e],
            Ok(bodies) => match offline::replay_bodies(setup.clone(), bodies).await {
                Err(e) => vec![replay_error(&e)],
                // A rejected alert in a test is the test's mistake.
                Ok(r) if !r.rejected.is_empty() => r
                    .rejected
                    .iter()
                    .map(|(at, rej)| position(at, &rej.field, &rej.error))
                    .collect(),
                Ok(r) => {
                    let mut got = r.incidents;
                    got.sort_by_key(|inc| (inc.opened_at, inc.id));
                    let diffs = compare(&case.expect.incidents, &got, &r.deliveries);
                    if diffs.is_empty() {
                        diffs
                    } else {
                        with_got(diffs, &got, &r.deliveries)
                    }
                }
            },
        };
        if problems.is_empty() {
            summary.passed += 1;
            let _ = writeln!(out, "  ok    {}", case.name);
        } else {
            summary.failed += 1;
            let _ = writeln!(out, "  FAIL  {}", case.name);
            for p in problems {
                let _ = writeln!(out, "        {p}");
            }
        }
    }
    summary
}

/// Deserialize a test file; the error reads `FILE:LINE: path.to.field: message`
/// (serde_yaml_ng puts the path in front of its message).
fn parse_yaml(file: &Path, text: &str) -> Result<TestFile, String> {
    serde_yaml_ng::from_str(text).map_err(|e| {
        let mut at = file.display().to_string();
        if let Some(l) = e.location() {
            let _ = write!(at, ":{}", l.line());
        }
        let mut message = e.to_string();
        // It appends " at line L column C"; the line is already in front.
        if let Some(cut) = message.rfind(" at line ") {
            message.truncate(cut);
        }
        format!("{at}: {message}")
    })
}

/// Each item of a case's `alerts`, as a JSON body for the normalizers.
fn bodies_of(
    case: usize,
    items: &[serde_yaml_ng::Value],
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut bodies = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let at = format!("tests[{case}].alerts[{j}]");
        let mut json =
            serde_json::to_value(item).map_err(|e| format!("{at}: not a JSON value: {e}"))?;
        let Some(obj) = json.as_object_mut() else {
            return Err(format!(
                "{at}: expected an alert or an Alertmanager webhook body (a mapping)"
            ));
        };
        if let Some(alerts) = obj.get_mut("alerts") {
            let list = alerts
                .as_array_mut()
                .map(Vec::as_mut_slice)
                .unwrap_or(&mut []);
            for (k, a) in list.iter_mut().enumerate() {
                if let Some(a) = a.as_object_mut() {
                    check_alert(a, &format!("{at}.alerts[{k}]"), "startsAt", "endsAt")?;
                }
            }
        } else {
            check_alert(obj, &at, "starts_at", "ends_at")?;
            // A one-alert array: the format is never guessed from the text,
            // and errors always name `[0].field`, trimmed in `replay_error`.
            json = serde_json::Value::Array(vec![json]);
        }
        let body = serde_json::to_vec(&json).map_err(|e| format!("{at}: {e}"))?;
        bodies.push((at, body));
    }
    Ok(bodies)
}

/// A normalizer error as `tests[1].alerts[0].labels.bad-name: message`.
fn replay_error(e: &anyhow::Error) -> String {
    match (
        e.downcast_ref::<String>(),
        e.downcast_ref::<NormalizeError>(),
    ) {
        (Some(at), Some(NormalizeError::Field { field, message, .. })) => {
            position(at, field, message)
        }
        _ => format!("{e:#}"),
    }
}

/// `tests[1].alerts[0]` + a normalizer's field path + its message.
fn position(at: &str, field: &str, message: &str) -> String {
    let field = field.strip_prefix("[0]").unwrap_or(field);
    let field = if field == "body" { "" } else { field };
    let sep = if field.is_empty() || field.starts_with(['.', '[']) {
        ""
    } else {
        "."
    };
    format!("{at}{sep}{field}: {message}")
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

/// Make the times explicit (see the module docs) and YAML's numbers and
/// booleans in labels strings again.
fn check_alert(a: &mut JsonMap, at: &str, starts: &str, ends: &str) -> Result<(), String> {
    for key in ["labels", "annotations"] {
        if let Some(map) = a.get_mut(key).and_then(|m| m.as_object_mut()) {
            for v in map.values_mut() {
                if v.is_number() || v.is_boolean() {
                    *v = serde_json::Value::String(v.to_string());
                }
            }
        }
    }
    let get = |snake: &str, camel: &str| a.get(snake).or_else(|| a.get(camel)).cloned();
    let camel = |s: &str| {
        if s == "starts_at" {
            "startsAt"
        } else {
            "endsAt"
        }
    };
    if get(starts, camel(starts)).is_none() {
        return Err(format!(
            "{at}.{starts}: required in tests, so that the result does not depend on the clock"
        ));
    }
    let status = a.get("status").and_then(|s| s.as_str());
    let has_end = get(ends, camel(ends)).is_some();
    if has_end && status.is_none() {
        return Err(format!(
            "{at}.status: required when {ends} is given (\"resolved\", or \"firing\" for an expected end)"
        ));
    }
    if status == Some("resolved") && !has_end {
        return Err(format!("{at}.{ends}: required for a resolved alert"));
    }
    Ok(())
}

/// Every difference between expected and actual incidents.
/// Deliveries per incident, as replay counted them.
type Deliveries = std::collections::HashMap<crate::domain::IncidentId, u64>;

fn compare(want: &[Expected], got: &[Incident], deliveries: &Deliveries) -> Vec<String> {
    let mut diffs = Vec::new();
    if want.len() != got.len() {
        diffs.push(format!(
            "incidents: expected {} incident{}, got {}",
            want.len(),
            if want.len() == 1 { "" } else { "s" },
            got.len()
        ));
    }
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        let mut d = Diff {
            at: i,
            out: &mut diffs,
        };
        d.one("title", w.title.as_ref(), &g.title.to_string(), |s| {
            quote(s)
        });
        d.one("key", w.key.as_ref(), &g.key.to_string(), |s| quote(s));
        d.one("state", w.state.as_ref(), &g.state, |s| s.as_str().into());
        d.one("priority", w.priority.as_ref(), &g.priority, |p| {
            p.to_string()
        });
        d.one("impact", w.impact.as_ref(), &g.impact, |l| {
            l.get().to_string()
        });
        d.one("urgency", w.urgency.as_ref(), &g.urgency, |l| {
            l.get().to_string()
        });
        d.one(
            "alerts",
            w.alerts.as_ref(),
            &g.alert_fingerprints.len(),
            ToString::to_string,
        );
        let fps = |v: &[Fingerprint]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        d.set(
            "fingerprints",
            w.fingerprints.as_deref().map(fps).as_deref(),
            &fps(&g.alert_fingerprints),
        );
        d.one(
            "deliveries",
            w.deliveries.as_ref(),
            &deliveries.get(&g.id).copied().unwrap_or(0),
            ToString::to_string,
        );
        d.set("rules", w.rules.as_deref(), &g.rules);
        d.set("runbooks", w.runbooks.as_deref(), &g.links.runbooks);
        d.one(
            "assignment_group",
            w.assignment_group.as_ref(),
            &g.assignment_group.as_deref().map(str::to_owned),
            |o| o.as_deref().map_or("null".into(), quote),
        );
        d.one(
            "root_ci",
            w.root_ci.as_ref(),
            &g.root_ci.as_deref().map(str::to_owned),
            |o| o.as_deref().map_or("null".into(), quote),
        );
        d.one(
            "root_inferred",
            w.root_inferred.as_ref(),
            &g.root_inferred,
            bool::to_string,
        );
        d.one(
            "flapping",
            w.flapping.as_ref(),
            &g.flapping,
            bool::to_string,
        );
        d.one(
            "reopen_count",
            w.reopen_count.as_ref(),
            &g.reopen_count,
            ToString::to_string,
        );
        d.one("opened_at", w.opened_at.as_ref(), &g.opened_at, time);
        d.one("resolved_at", w.resolved_at.as_ref(), &g.resolved_at, |t| {
            t.as_ref().map_or("null".into(), time)
        });
    }
    diffs
}

/// After the differences: what the rules did produce.
fn with_got(mut diffs: Vec<String>, got: &[Incident], deliveries: &Deliveries) -> Vec<String> {
    diffs.push(match got.len() {
        0 => "got no incidents".to_string(),
        n => format!("got {n} incident{}:", if n == 1 { "" } else { "s" }),
    });
    diffs.extend(got.iter().map(|g| {
        format!(
            "  - {}",
            as_expectation(g, deliveries.get(&g.id).copied().unwrap_or(0))
        )
    }));
    diffs
}

struct Diff<'a> {
    at: usize,
    out: &'a mut Vec<String>,
}

impl Diff<'_> {
    fn one<T: PartialEq>(
        &mut self,
        field: &str,
        want: Option<&T>,
        got: &T,
        show: impl Fn(&T) -> String,
    ) {
        if let Some(w) = want.filter(|w| *w != got) {
            self.out.push(format!(
                "incidents[{}].{field}: expected {}, got {}",
                self.at,
                show(w),
                show(got)
            ));
        }
    }

    fn set<G: AsRef<str>>(&mut self, field: &str, want: Option<&[String]>, got: &[G]) {
        let Some(want) = want else { return };
        let missing: Vec<&String> = want
            .iter()
            .filter(|w| !got.iter().any(|g| g.as_ref() == w.as_str()))
            .collect();
        let extra: Vec<&G> = got
            .iter()
            .filter(|g| !want.iter().any(|w| w == g.as_ref()))
            .collect();
        if missing.is_empty() && extra.is_empty() {
            return;
        }
        let mut msg = format!(
            "incidents[{}].{field}: expected {}, got {}",
            self.at,
            list(want),
            list(got)
        );
        if !missing.is_empty() {
            let _ = write!(msg, "; missing {}", list(&missing));
        }
        if !extra.is_empty() {
            let _ = write!(msg, "; unexpected {}", list(&extra));
        }
        self.out.push(msg);
    }
}

/// A double-quoted string that is valid YAML as well as readable.
fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn time(t: &Timestamp) -> String {
    quote(&t.to_rfc3339())
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

/// One incident as a YAML flow mapping in the expectation format.
fn as_expectation(g: &Incident, deliveries: u64) -> String {
    let fps: Vec<String> = g
        .alert_fingerprints
        .iter()
        .map(ToString::to_string)
        .collect();
    format!(
        "{{title: {}, key: {}, state: {}, priority: {}, impact: {}, urgency: {}, alerts: {}, \
         fingerprints: {}, deliveries: {}, rules: {}, runbooks: {}, assignment_group: {}, \
         root_ci: {}, root_inferred: {}, flapping: {}, reopen_count: {}, opened_at: {}, \
         resolved_at: {}}}",
        quote(&g.title),
        quote(&g.key),
        g.state.as_str(),
        g.priority,
        g.impact.get(),
        g.urgency.get(),
        g.alert_fingerprints.len(),
        list(&fps),
        deliveries,
        list(&g.rules),
        list(&g.links.runbooks),
        g.assignment_group.as_deref().map_or("null".into(), quote),
        g.root_ci.as_deref().map_or("null".into(), quote),
        g.root_inferred,
        g.flapping,
        g.reopen_count,
        time(&g.opened_at),
        g.resolved_at.as_ref().map_or("null".into(), time),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
rules:
  - name: suppress-watchdog
    matchers: ['alertname="Watchdog"']
    actions: {suppress: heartbeat}
  - name: db-team
    matchers: ['team="db"']
    actions: {assign: team-db, urgency: 1}
"#;

    /// A rules dir with `RULES` and a `tests/` dir holding `name` = `text`.
    fn setup(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("rules.yaml"), RULES).unwrap();
        let tests = root.path().join("tests");
        std::fs::create_dir(&tests).unwrap();
        std::fs::write(tests.join(name), text).unwrap();
        (root, tests)
    }

    async fn run(dir: &Path) -> (Summary, String) {
        let mut out = Vec::new();
        let summary = run_dir(dir, None, &mut out).await.unwrap();
        (summary, String::from_utf8(out).unwrap())
    }

    const CASES: &str = r#"
tests:
  - name: watchdog is no incident
    alerts:
      - labels: {alertname: Watchdog}
        starts_at: "2026-03-02T08:00:00Z"
    expect: {incidents: []}
  - name: db alert goes to the db team and resolves after the hold
    alerts:
      - labels: {alertname: PgDown, instance: "pg-1:9187", team: db, port: 5432}
        starts_at: "2026-03-02T08:00:00Z"
      - labels: {alertname: PgDown, instance: "pg-1:9187", team: db, port: 5432}
        status: resolved
        starts_at: "2026-03-02T08:00:00Z"
        ends_at: "2026-03-02T08:01:00Z"
    expect:
      incidents:
        - title: PgDown on pg-1
          state: resolved
          priority: P2
          urgency: 1
          alerts: 1
          rules: [db-team]
          assignment_group: team-db
          resolved_at: "2026-03-02T08:01:00Z"
"#;

    #[tokio::test]
    async fn passing_cases() {
        let (_root, dir) = setup("ok.yaml", CASES);
        let (summary, out) = run(&dir).await;
        assert_eq!(
            summary,
            Summary {
                passed: 2,
                failed: 0
            },
            "{out}"
        );
        assert!(out.contains("  ok    watchdog is no incident"), "{out}");
        assert!(out.contains("2 passed, 0 failed (1 file)"), "{out}");
    }

    #[tokio::test]
    async fn failure_names_index_field_and_values() {
        let text = CASES
            .replace("priority: P2", "priority: P1")
            .replace("assignment_group: team-db", "assignment_group: null");
        let (_root, dir) = setup("bad.yaml", &text);
        let (summary, out) = run(&dir).await;
        assert_eq!(
            summary,
            Summary {
                passed: 1,
                failed: 1
            },
            "{out}"
        );
        assert!(
            out.contains("  FAIL  db alert goes to the db team and resolves after the hold"),
            "{out}"
        );
        assert!(
            out.contains("incidents[0].priority: expected P1, got P2"),
            "{out}"
        );
        assert!(
            out.contains("incidents[0].assignment_group: expected null, got \"team-db\""),
            "{out}"
        );
        // The actual incidents follow, as pasteable expectations.
        assert!(out.contains("got 1 incident:"), "{out}");
        assert!(out.contains("  - {title: \"PgDown on pg-1\""), "{out}");
    }

    #[tokio::test]
    async fn got_lines_paste_back_as_passing_expectations() {
        let case = CASES.split("  - name: db alert").nth(1).unwrap();
        let case = case.split("    expect:").next().unwrap();
        let text = format!(
            "tests:\n  - name: db alert{case}    expect:\n      incidents: [{{title: wrong}}]\n"
        );
        let (root, dir) = setup("a.yaml", &text);
        let (summary, out) = run(&dir).await;
        assert_eq!(summary.failed, 1, "{out}");
        let got: Vec<&str> = out
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("- {"))
            .collect();
        assert_eq!(got.len(), 1, "{out}");
        let pasted = format!(
            "tests:\n  - name: db alert{case}    expect:\n      incidents:\n        - {{{}\n",
            got[0]
        );
        std::fs::write(dir.join("a.yaml"), pasted).unwrap();
        let (summary, out) = run(&dir).await;
        assert_eq!(
            summary,
            Summary {
                passed: 1,
                failed: 0
            },
            "{out}"
        );
        drop(root);
    }

    #[tokio::test]
    async fn count_and_set_differences() {
        let text = r#"
tests:
  - name: two incidents expected
    alerts:
      - labels: {alertname: A, instance: "h1:1", team: db}
        starts_at: "2026-03-02T08:00:00Z"
    expect:
      incidents:
        - rules: [db-team, other]
        - {}
"#;
        let (_root, dir) = setup("count.yaml", text);
        let (summary, out) = run(&dir).await;
        assert_eq!(summary.failed, 1, "{out}");
        assert!(
            out.contains("incidents: expected 2 incidents, got 1"),
            "{out}"
        );
        assert!(
            out.contains(
                "incidents[0].rules: expected [\"db-team\", \"other\"], got [\"db-team\"]; missing [\"other\"]"
            ),
            "{out}"
        );
    }

    #[tokio::test]
    async fn malformed_file_names_file_line_and_field() {
        let text = "tests:\n  - name: typo\n    alerts: []\n    expect:\n      incidents:\n        - priorty: P1\n";
        let (_root, dir) = setup("typo.yaml", text);
        std::fs::write(dir.join("zz-not-yaml.yml"), "tests: [unclosed\n").unwrap();
        let (summary, out) = run(&dir).await;
        assert_eq!(
            summary,
            Summary {
                passed: 0,
                failed: 2
            },
            "{out}"
        );
        assert!(
            out.contains("typo.yaml:6: tests[0].expect.incidents[0]: unknown field `priorty`"),
            "{out}"
        );
        assert!(out.contains("zz-not-yaml.yml:"), "{out}");
        assert!(out.contains("0 passed, 2 failed (2 files)"), "{out}");
    }

    #[tokio::test]
    async fn bad_alerts_fail_the_case_with_their_position() {
        let text = r#"
tests:
  - name: no start time
    alerts:
      - labels: {alertname: A}
    expect: {incidents: []}
  - name: empty label name
    alerts:
      - labels: {"": x}
        starts_at: "2026-03-02T08:00:00Z"
    expect: {incidents: []}
  - name: webhook resolved without end
    alerts:
      - version: "4"
        alerts:
          - {status: resolved, labels: {alertname: A}, startsAt: "2026-03-02T08:00:00Z"}
    expect: {incidents: []}
  - name: typo in an alert field
    alerts:
      - {labels: {alertname: A}, statuz: firing, starts_at: "2026-03-02T08:00:00Z"}
    expect: {incidents: []}
  - name: webhook with a bad label value
    alerts:
      - version: "4"
        alerts:
          - {status: firing, labels: {x: [1]}, startsAt: "2026-03-02T08:00:00Z"}
    expect: {incidents: []}
"#;
        let (_root, dir) = setup("alerts.yaml", text);
        let (summary, out) = run(&dir).await;
        assert_eq!(summary.failed, 5, "{out}");
        assert!(
            out.contains("tests[0].alerts[0].starts_at: required"),
            "{out}"
        );
        assert!(
            out.contains("tests[1].alerts[0].labels: a label name must not be empty"),
            "{out}"
        );
        assert!(
            out.contains("tests[3].alerts[0].statuz: unknown field `statuz`"),
            "{out}"
        );
        assert!(
            out.contains("tests[4].alerts[0].alerts[0].labels.x: invalid type"),
            "{out}"
        );
        assert!(
            out.contains("tests[2].alerts[0].alerts[0].endsAt: required"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn missing_rules_dir_is_a_failure() {
        let text = "rules: nowhere\ntests:\n  - {name: x, alerts: [], expect: {incidents: []}}\n";
        let (_root, dir) = setup("x.yaml", text);
        let (summary, out) = run(&dir).await;
        assert_eq!(summary.failed, 1, "{out}");
        assert!(out.contains("rules: "), "{out}");
        assert!(out.contains("nowhere is not a directory"), "{out}");
    }

    #[test]
    fn default_rules_dir_is_the_parent_of_the_tests_dir() {
        assert_eq!(
            default_rules_dir(Path::new("rules/tests/a.yaml")),
            PathBuf::from("rules")
        );
        assert_eq!(
            default_rules_dir(Path::new("tests/a.yaml")),
            PathBuf::from(".")
        );
        assert_eq!(
            default_rules_dir(Path::new("a.yaml")),
            PathBuf::from("./..")
        );
    }

    #[tokio::test]
    async fn empty_dir_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let e = run_dir(root.path(), None, &mut out).await.unwrap_err();
        assert!(matches!(e, RuleTestError::NoFiles(_)), "{e}");
    }
}
