//! `incidentd check`: configuration, rules, CMDB, change records and
//! connection files validated at once, every problem reported.

use super::connect;
use crate::change;
use crate::cmdb::{self, Cmdb};
use crate::config::{self, Overrides};
use crate::offline::destination_names;
use crate::rules::RuleSet;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Each makes the check fail.
    pub errors: Vec<String>,
    /// Printed, not failed: risky but possibly meant.
    pub warnings: Vec<String>,
    /// What was read and found valid, one line each (`6 rules in ./rules`),
    /// so that "ok" says what it vouches for.
    pub checked: Vec<String>,
}

/// `incidentd check`: every problem in config, rules, CMDB, change records
/// (`changes`, when given) and the files connections need (certificates,
/// keys, credentials), at once. Warnings (a credential that would travel
/// in clear, a rule that suppresses everything) do not fail it.
pub fn check(
    config_file: Option<PathBuf>,
    overrides: Overrides,
    changes: Option<&Path>,
) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let cfg = match config::load(config_file.as_deref(), &overrides) {
        Ok(c) => Some(c),
        Err(config::ConfigError::Invalid(errs)) => {
            let file = config_file
                .as_ref()
                .map_or("config".into(), |f| f.display().to_string());
            r.errors.extend(errs.iter().map(|e| format!("{file}: {e}")));
            None
        }
        Err(e) => {
            r.errors.push(e.to_string());
            None
        }
    };
    if let Some(c) = &cfg {
        let report = connect::check_connections(c);
        r.warnings.extend(report.warnings);
        r.errors.extend(report.errors);
        let what = match &config_file {
            Some(f) => format!("config {}", f.display()),
            None => "config: the defaults (no --config file)".to_string(),
        };
        r.checked.push(match c.outbound.len() {
            0 => what,
            n => format!(
                "{what}, {n} outbound destination(s): {}",
                destination_names(c).join(", ")
            ),
        });
    }
    check_rules(&mut r, cfg.as_ref(), &overrides);
    let cmdb = check_cmdb(&mut r, cfg.as_ref(), &overrides);
    if let Some(file) = changes {
        check_changes(&mut r, file, cmdb.as_ref());
    }
    Ok(r)
}

/// The rules directory; with a valid config, `notify` must name one of
/// its destinations.
fn check_rules(r: &mut CheckReport, cfg: Option<&config::Config>, overrides: &Overrides) {
    let rules_dir = cfg
        .map(|c| c.rules_dir.clone())
        .or(overrides.rules_dir.clone())
        .unwrap_or_else(|| PathBuf::from("./rules"));
    if !rules_dir.exists() {
        r.errors.push(format!(
            "{}: rules directory does not exist",
            rules_dir.display()
        ));
        return;
    }
    let names = cfg.map(destination_names);
    match RuleSet::load_dir_for(&rules_dir, names.as_deref()) {
        Ok(rs) => {
            r.warnings
                .extend(rs.warnings().iter().map(ToString::to_string));
            r.checked
                .push(format!("{} rules in {}", rs.len(), rules_dir.display()));
        }
        Err(errs) => r.errors.extend(errs.iter().map(ToString::to_string)),
    }
}

/// The CMDB file, if one is configured or `deploy/cmdb.yaml` exists; the
/// CMDB when it is valid (no file: an empty one, which knows no CI).
fn check_cmdb(
    r: &mut CheckReport,
    cfg: Option<&config::Config>,
    overrides: &Overrides,
) -> Option<Cmdb> {
    let (path, required) = match (&overrides.cmdb, cfg) {
        (Some(p), _) => (Some(p.clone()), true),
        (None, Some(c)) => (c.cmdb.clone(), c.cmdb_required),
        (None, None) => (Some(PathBuf::from("deploy/cmdb.yaml")), false),
    };
    match path {
        Some(p) if p.exists() => match cmdb::load_file(&p) {
            Ok(c) => {
                r.warnings
                    .extend(c.warnings().iter().map(ToString::to_string));
                r.checked.push(format!(
                    "CMDB {}: {} CIs, {} services",
                    p.display(),
                    c.len(),
                    c.services().len()
                ));
                Some(c)
            }
            Err(errs) => {
                r.errors.extend(errs.iter().map(ToString::to_string));
                None
            }
        },
        Some(p) if required => {
            r.errors
                .push(format!("{}: CMDB file does not exist", p.display()));
            None
        }
        _ => {
            r.checked
                .push("no CMDB: alerts will bind to no CI".to_string());
            Some(Cmdb::empty())
        }
    }
}

/// Change records: every problem of every record, and each CI the CMDB
/// does not have (unless the CMDB itself is broken: its errors come first).
fn check_changes(r: &mut CheckReport, file: &Path, cmdb: Option<&Cmdb>) {
    let shown = file.display();
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) => {
            r.errors.push(format!("{shown}: {e}"));
            return;
        }
    };
    let records = match change::parse_changes(&text) {
        Ok(c) => c,
        Err(errs) => {
            r.errors
                .extend(errs.iter().map(|e| format!("{shown}: {e}")));
            return;
        }
    };
    let Some(cmdb) = cmdb else { return };
    let unknown = change::unknown_cis(&records, |ci| cmdb.ci_by_id(ci).is_some());
    if unknown.is_empty() {
        r.checked
            .push(format!("{} change records in {shown}", records.len()));
    } else {
        r.errors
            .extend(unknown.iter().map(|e| format!("{shown}: {e}")));
    }
}
