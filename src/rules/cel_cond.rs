//! `when:` conditions in CEL, for what matchers cannot say (numbers, CMDB
//! facts, the current incident).
//!
//! Programs are compiled once at load time. At evaluation the variables are
//! built as CEL maps that *borrow* the alert's strings, once per
//! `RuleSet::evaluate` call and only if a rule with a condition is reached.

use super::RuleInput;
use crate::domain::{LabelSet, Timestamp};
use cel::common::types::{CelBool, CelInt, CelMap, CelMapKey, CelString, CelTimestamp};
use cel::common::value::Val;
use cel::{Context, Env, ExecutionError, Program, Value};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// The top-level variables a condition can use.
pub(crate) const VARIABLES: [&str; 4] = ["alert", "ci", "service", "incident"];

/// The CEL environment: the standard library plus the strings extension
/// (`lowerAscii`, `split`, …), which label conditions often want.
pub(crate) fn new_env() -> Result<Arc<Env>, String> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .map_err(|e| format!("cannot set up the CEL environment: {e}"))?;
    Ok(Arc::new(env))
}

/// A compiled condition and the environment it runs in.
pub(crate) struct Condition {
    program: Program,
    env: Arc<Env>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition").finish_non_exhaustive()
    }
}

impl Condition {
    /// Compiles `source`, then runs it once against an alert with no labels
    /// to catch references to variables or functions that do not exist:
    /// such a condition could never match, so it is a load error.
    pub(crate) fn compile(env: &Arc<Env>, source: &str) -> Result<Condition, String> {
        if source.trim().is_empty() {
            return Err("empty condition (leave `when` out to match every alert)".to_string());
        }
        let program = env.compile(source).map_err(|errs| {
            let msgs: Vec<String> = errs
                .errors
                .iter()
                .map(|e| {
                    // `pos` is (line, column), both 1-based.
                    let msg = e.msg.trim_start_matches("Syntax error: ");
                    if e.pos.0 > 1 {
                        format!(
                            "syntax error at line {}, column {}: {msg}",
                            e.pos.0, e.pos.1
                        )
                    } else {
                        format!("syntax error at column {}: {msg}", e.pos.1)
                    }
                })
                .collect();
            msgs.join("; ")
        })?;
        let cond = Condition {
            program,
            env: Arc::clone(env),
        };
        let probe = crate::domain::Alert {
            fingerprint: crate::domain::Fingerprint(0),
            status: crate::domain::AlertStatus::Firing,
            labels: LabelSet::new(),
            annotations: LabelSet::new(),
            starts_at: Timestamp(0),
            ends_at: None,
            source: crate::domain::Source::Api,
            generator_url: String::new(),
        };
        let vars = cond.activation(&RuleInput::new(&probe));
        if let Err(CondError::Exec(ExecutionError::UndeclaredReference(name))) = cond.run(&vars) {
            return Err(format!(
                "unknown variable or function {name:?} (variables are {})",
                VARIABLES.join(", ")
            ));
        }
        Ok(cond)
    }

    /// The variables for one evaluation. Borrows the input's strings.
    pub(crate) fn activation<'a>(&self, input: &RuleInput<'a>) -> Context<'a, 'a> {
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        let alert = input.alert;
        let mut a: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::with_capacity(8);
        a.insert("labels".into(), string_map(&alert.labels));
        a.insert("annotations".into(), string_map(&alert.annotations));
        a.insert("status".into(), s(alert.status.as_str()));
        a.insert(
            "fingerprint".into(),
            Box::new(CelString::from(alert.fingerprint.to_string())),
        );
        a.insert("source".into(), s(alert.source.as_str()));
        a.insert(
            "severity".into(),
            s(alert.labels.get("severity").unwrap_or("")),
        );
        a.insert("alertname".into(), s(alert.alertname()));
        a.insert("starts_at".into(), timestamp(alert.starts_at));
        ctx.add_variable_as_val("alert", Box::new(CelMap::from(a)));

        let mut ci: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
        if let Some(c) = input.ci {
            ci.insert("id".into(), s(&c.id));
            ci.insert("class".into(), s(&c.class));
            ci.insert("service".into(), opt(&c.service));
            ci.insert("owner".into(), opt(&c.owner));
            ci.insert(
                "in_change_window".into(),
                Box::new(CelBool::from(c.in_change_window)),
            );
            ci.insert("change_id".into(), opt(&c.change_id));
        }
        ctx.add_variable_as_val("ci", Box::new(CelMap::from(ci)));

        let mut svc: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
        if let Some(sv) = input.service {
            svc.insert("id".into(), s(&sv.id));
            svc.insert("name".into(), s(&sv.name));
            svc.insert("tier".into(), Box::new(CelInt::from(i64::from(sv.tier))));
            svc.insert("owner".into(), opt(&sv.owner));
        }
        ctx.add_variable_as_val("service", Box::new(CelMap::from(svc)));

        let mut inc: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::new();
        if let Some(i) = input.incident {
            inc.insert("state".into(), s(&i.state));
            inc.insert("priority".into(), s(i.priority.as_str()));
            inc.insert(
                "alert_count".into(),
                Box::new(CelInt::from(
                    i64::try_from(i.alert_count).unwrap_or(i64::MAX),
                )),
            );
            inc.insert("flapping".into(), Box::new(CelBool::from(i.flapping)));
        }
        ctx.add_variable_as_val("incident", Box::new(CelMap::from(inc)));
        ctx
    }

    /// True or false, or why the condition could not decide.
    pub(crate) fn eval(&self, vars: &Context<'_, '_>) -> Result<bool, String> {
        self.run(vars).map_err(|e| match e {
            CondError::Exec(e) => e.to_string(),
            CondError::NotBool(t) => format!("condition returned a {t}, not a bool"),
            CondError::Panicked => "the CEL interpreter panicked on this condition".to_string(),
        })
    }

    fn run(&self, vars: &Context<'_, '_>) -> Result<bool, CondError> {
        // The interpreter is third-party code running user expressions on the
        // pipeline task: a panic in it must cost one rule, not the daemon.
        let result = catch_unwind(AssertUnwindSafe(|| self.program.execute(vars)))
            .map_err(|_| CondError::Panicked)?;
        match result.map_err(CondError::Exec)? {
            Value::Bool(b) => Ok(b),
            other => Err(CondError::NotBool(other.type_of().to_string())),
        }
    }
}

enum CondError {
    Exec(ExecutionError),
    NotBool(String),
    Panicked,
}

fn s(v: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(v))
}

/// Unknown optional facts read as `""`, like missing labels do, so a
/// condition can compare without guarding with `has()`.
fn opt(v: &Option<String>) -> Box<dyn Val + '_> {
    s(v.as_deref().unwrap_or(""))
}

fn string_map(ls: &LabelSet) -> Box<dyn Val + '_> {
    let mut m: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = HashMap::with_capacity(ls.len());
    for (k, v) in ls.iter() {
        m.insert(k.into(), s(v));
    }
    Box::new(CelMap::from(m))
}

fn timestamp(t: Timestamp) -> Box<dyn Val + 'static> {
    // Out-of-range millis cannot come from a parsed RFC 3339 time; fall back
    // to the epoch rather than fail the whole evaluation.
    let dt = chrono::DateTime::from_timestamp_millis(t.millis())
        .unwrap_or(chrono::DateTime::UNIX_EPOCH)
        .fixed_offset();
    Box::new(CelTimestamp::from(dt))
}
