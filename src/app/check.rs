//! `incidentd check`: configuration, rules, CMDB and connection files
//! validated at once, every problem reported.

use super::connect;
use crate::cmdb;
use crate::config::{self, Overrides};
use crate::rules::RuleSet;
use anyhow::Result;
use std::path::PathBuf;

/// `incidentd check`: every problem in config, rules, CMDB and the files
/// connections need (certificates, keys, credentials), at once; warnings
/// (a credential that would travel in clear) are printed, not failed.
pub fn check(config_file: Option<PathBuf>, overrides: Overrides) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let cfg = match config::load(config_file.as_deref(), &overrides) {
        Ok(c) => Some(c),
        Err(config::ConfigError::Invalid(errs)) => {
            let file = config_file
                .as_ref()
                .map_or("config".into(), |f| f.display().to_string());
            problems.extend(errs.iter().map(|e| format!("{file}: {e}")));
            None
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    if let Some(c) = &cfg {
        let report = connect::check_connections(c);
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        problems.extend(report.errors);
    }
    let rules_dir = cfg
        .as_ref()
        .map(|c| c.rules_dir.clone())
        .or(overrides.rules_dir.clone())
        .unwrap_or_else(|| PathBuf::from("./rules"));
    if rules_dir.exists() {
        match RuleSet::load_dir(&rules_dir) {
            Ok(rs) => {
                for w in rs.warnings() {
                    eprintln!("warning: {w}");
                }
            }
            Err(errs) => problems.extend(errs.iter().map(ToString::to_string)),
        }
    } else {
        problems.push(format!(
            "{}: rules directory does not exist",
            rules_dir.display()
        ));
    }
    let (cmdb_path, required) = match (&overrides.cmdb, &cfg) {
        (Some(p), _) => (Some(p.clone()), true),
        (None, Some(c)) => (c.cmdb.clone(), c.cmdb_required),
        (None, None) => (Some(PathBuf::from("deploy/cmdb.yaml")), false),
    };
    match cmdb_path {
        Some(p) if p.exists() => match cmdb::load_file(&p) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("warning: {w}");
                }
            }
            Err(errs) => problems.extend(errs.iter().map(ToString::to_string)),
        },
        Some(p) if required => problems.push(format!("{}: CMDB file does not exist", p.display())),
        _ => {}
    }
    Ok(problems)
}
