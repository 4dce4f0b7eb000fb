//! The CLI as a user runs it: `check` and `replay`.

use std::process::Command;

fn incidentd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run incidentd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_accepts_the_shipped_config_and_rules() {
    let (code, out, err) = incidentd(&["check", "--config", "deploy/incidentd.toml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok"));
}

#[test]
fn check_reports_every_error_with_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "listen = \"nowhere\"\n[incident]\nflap_window = \"soon\"\n",
    )
    .unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("a.yaml"),
        "rules:\n  - name: x\n    actions:\n      priority: P9\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("b.yaml"),
        "rules:\n  - name: y\n    matchers: ['severity=~\"(\"']\n    actions:\n      urgency: 1\n",
    )
    .unwrap();
    let (code, _, err) = incidentd(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad.toml: listen:"), "{err}");
    assert!(err.contains("incident.flap_window"), "{err}");
    assert!(err.contains("a.yaml") && err.contains("priority"), "{err}");
    assert!(err.contains("b.yaml") && err.contains("matchers"), "{err}");
    assert!(err.contains("4 error(s)"), "{err}");
}

#[test]
fn replay_prints_incidents_as_json() {
    let (code, out, err) = incidentd(&["replay", "tests/data/scenarios/small-storm/alerts.jsonl"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let incidents = v["incidents"].as_array().unwrap();
    assert!(!incidents.is_empty());
    for i in incidents {
        for field in [
            "id",
            "state",
            "priority",
            "title",
            "alert_fingerprints",
            "opened_at",
            "root_ci",
            "impacted_services",
        ] {
            assert!(i.get(field).is_some(), "incident lacks {field}: {i}");
        }
    }
    // The stream ends with some alerts still firing and all others settled.
    assert!(incidents.iter().any(|i| i["state"] == "open"));
    assert!(incidents.iter().any(|i| i["state"] == "resolved"));
}

#[test]
fn replay_rejects_a_bad_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.jsonl");
    // A line that is no webhook at all stops the replay.
    std::fs::write(
        &f,
        "{\"version\":\"4\",\"alerts\":[]}\n{\"version\":\"4\",\"alerts\":{}}\n",
    )
    .unwrap();
    let (code, _, err) = incidentd(&["replay", f.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("in.jsonl:2") && err.contains("alerts"),
        "{err}"
    );
    // A bad alert in a good line is rejected alone, as live ingest does,
    // and named; the replay goes on.
    std::fs::write(
        &f,
        "{\"version\":\"4\",\"alerts\":[{\"status\":\"firing\"},{\"status\":\"firing\",\"labels\":{\"alertname\":\"Ok\"},\"startsAt\":\"2026-03-02T08:00:00Z\"}]}\n",
    )
    .unwrap();
    let (code, out, err) = incidentd(&["replay", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("in.jsonl:1: alerts[0]: missing field `labels`"),
        "{err}"
    );
    assert!(out.contains("\"Ok\""), "{out}");
}

#[test]
fn shipped_rule_tests_pass() {
    let (code, out, err) = incidentd(&["test", "rules/tests"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn rule_test_failure_exits_1_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("tests");
    std::fs::create_dir(&tests).unwrap();
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    std::fs::write(
        tests.join("t.yaml"),
        format!(
            "rules: {}\ntests:\n  - name: wrong priority\n    alerts:\n      - labels: {{alertname: HostDown, instance: 'h:1', severity: critical}}\n        starts_at: '2026-03-02T08:00:00Z'\n    expect:\n      incidents:\n        - {{priority: P5}}\n",
            rules.display()
        ),
    )
    .unwrap();
    let (code, out, err) = incidentd(&["test", tests.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAIL") && out.contains("incidents[0].priority: expected P5, got P2"),
        "{out}"
    );
}

#[test]
fn check_warns_of_an_open_api_on_a_network_address() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.toml");
    std::fs::write(&c, "listen = \"0.0.0.0:9797\"\n").unwrap();
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let (code, _, err) = incidentd(&["check", "--config", c.to_str().unwrap(), "--rules", rules]);
    assert_eq!(code, 0, "a warning, not an error: {err}");
    assert!(
        err.contains("warning: listening on 0.0.0.0:9797 with no API token"),
        "{err}"
    );
    let token = dir.path().join("alice");
    std::fs::write(&token, "t0ken\n").unwrap();
    std::fs::write(
        &c,
        format!(
            "listen = \"0.0.0.0:9797\"\n[api.operator_tokens]\nalice = {:?}\n",
            token.display().to_string()
        ),
    )
    .unwrap();
    let (code, _, err) = incidentd(&["check", "--config", c.to_str().unwrap(), "--rules", rules]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("no API token"), "{err}");
}
