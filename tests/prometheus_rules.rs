//! The Prometheus rules shipped in `deploy/prometheus/` are valid and do
//! what their promtool unit tests say: `promtool check rules` accepts every
//! rule file, and `promtool test rules` passes every test file in
//! `deploy/prometheus/tests/` (SLO error ratios, Sloth-compatible labels,
//! and when the burn-rate alerts fire and resolve).
//!
//! Needs `promtool` (Debian package `prometheus`). Without it the tests skip
//! with one line on stderr, unless `INCIDENTD_TEST_E2E=1` (as `.ci/run`
//! sets, after installing it): then a missing promtool is a failure, so CI
//! cannot pass without checking the rules.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The promtool binary, or `None` (after printing why) if the test should
/// skip.
fn promtool(test: &str) -> Option<PathBuf> {
    if let Some(p) = support::find_program(&["/usr/bin/promtool", "promtool"]) {
        return Some(p);
    }
    if std::env::var("INCIDENTD_TEST_E2E").as_deref() == Ok("1") {
        panic!(
            "INCIDENTD_TEST_E2E=1 but no promtool (looked for /usr/bin/promtool and promtool on \
             PATH): apt-get install prometheus (.ci/run does)"
        );
    }
    // Straight to stderr: libtest captures `eprintln!` of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "skipped prometheus_rules::{test}: promtool not found (apt-get install prometheus)"
    );
    None
}

/// The `*.yml`/`*.yaml` files directly in `dir`, sorted; panics if none, so
/// a moved directory cannot turn the suite into a silent no-op.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yml" || ext == "yaml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .yml files in {}", dir.display());
    files
}

/// Runs `promtool <args> <file>` from the crate root and panics with its
/// output unless it exits successfully.
fn run_promtool(promtool: &Path, args: &[&str], file: &Path) {
    let out = Command::new(promtool)
        .args(args)
        .arg(file)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    assert!(
        out.status.success(),
        "promtool {} {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

#[test]
fn promtool_checks_the_rules() {
    let Some(promtool) = promtool("promtool_checks_the_rules") else {
        return;
    };
    for file in yaml_files(&rules_dir()) {
        run_promtool(&promtool, &["check", "rules"], &file);
    }
}

#[test]
fn promtool_unit_tests_pass() {
    let Some(promtool) = promtool("promtool_unit_tests_pass") else {
        return;
    };
    for file in yaml_files(&rules_dir().join("tests")) {
        run_promtool(&promtool, &["test", "rules"], &file);
    }
}
