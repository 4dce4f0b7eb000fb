//! The README's metrics table is the metrics' documentation: every metric
//! family the daemon exports must be in it, so a new metric cannot ship
//! undocumented.

mod support;

use incidentd::app;
use incidentd::config::{self, Overrides};
use incidentd::domain::SystemClock;
use std::path::Path;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exported_metric_is_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    // A destination (never called: rules_only) so the outbound families
    // have series; the shipped CMDB so the SLO and service ones do.
    let file = dir.path().join("incidentd.toml");
    std::fs::write(
        &file,
        "[[outbound.destinations]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"http://127.0.0.1:9\"\nrouting_key = \"k\"\nrules_only = true\n",
    )
    .expect("write config");
    let cfg = config::load(
        Some(&file),
        &Overrides {
            data_dir: Some(dir.path().join("data")),
            rules_dir: Some(root.join("rules")),
            cmdb: Some(root.join("deploy/cmdb.yaml")),
            ..Overrides::default()
        },
    )
    .expect("valid config");
    let r = app::start(&cfg, Arc::new(SystemClock))
        .await
        .expect("daemon starts");
    let (_, bytes) = support::oneshot(&r.router, "GET", "/metrics", &[], Vec::new()).await;
    let text = String::from_utf8(bytes).expect("utf-8");
    r.shutdown().await;
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("incidentd_"))
        .collect();
    assert!(families.len() > 30, "too few families: {families:?}");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let missing: Vec<&&str> = families
        .iter()
        .filter(|f| !readme.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "exported but not in the README: {missing:?}"
    );
}
