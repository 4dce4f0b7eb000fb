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

/// A directory of rule files written from `(name, yaml)` pairs.
fn rules_dir(dir: &std::path::Path, files: &[(&str, &str)]) -> String {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for (name, yaml) in files {
        std::fs::write(rules.join(name), yaml).unwrap();
    }
    rules.display().to_string()
}

#[test]
fn check_refuses_a_rule_notifying_a_destination_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.toml");
    std::fs::write(
        &c,
        "[[outbound.destinations]]\nname = \"slack-ops\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"s\"\n",
    )
    .unwrap();
    let rules = rules_dir(
        dir.path(),
        &[(
            "n.yaml",
            "rules:\n  - name: ops\n    matchers: ['team=\"ops\"']\n    actions:\n      notify: [slack-ops, slak-ops]\n",
        )],
    );
    let (code, out, err) =
        incidentd(&["check", "--config", c.to_str().unwrap(), "--rules", &rules]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("n.yaml:5: rule \"ops\": actions.notify[1]: unknown destination \"slak-ops\": no [[outbound.destinations]] has this name (configured: slack-ops)"),
        "{err}"
    );
    assert!(err.contains("1 error(s)"), "{err}");
}

#[test]
fn check_warns_of_a_rule_that_suppresses_every_alert() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(
        dir.path(),
        &[(
            "m.yaml",
            "rules:\n  - name: mute-all\n    actions:\n      suppress: \"maintenance\"\n",
        )],
    );
    let (code, out, err) = incidentd(&["check", "--rules", &rules]);
    assert_eq!(code, 0, "a warning, not an error: {out}{err}");
    assert!(
        err.contains("warning: ") && err.contains("m.yaml:2: rule \"mute-all\": has no matchers and no condition: it suppresses every alert"),
        "{err}"
    );
}

/// "ok" says what it vouches for: the config file, how many rules where,
/// the CMDB with its counts, the change records.
#[test]
fn check_says_what_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let changes = dir.path().join("changes.json");
    std::fs::write(
        &changes,
        r#"[{"id":"CHG1","ci":"pg-0","state":"approved","start":"2026-03-02T08:00:00Z","end":"2026-03-02T09:00:00Z"}]"#,
    )
    .unwrap();
    let (code, out, err) = incidentd(&[
        "check",
        "--config",
        "deploy/incidentd.toml",
        "--changes",
        changes.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ok: config deploy/incidentd.toml", "{out}");
    assert!(
        lines[1].starts_with("ok: ") && lines[1].ends_with(" rules in ./rules"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("ok: CMDB deploy/cmdb.yaml: ")
            && lines[2].ends_with(" CIs, 20 services"),
        "{out}"
    );
    assert_eq!(
        lines[3],
        format!("ok: 1 change records in {}", changes.display()),
        "{out}"
    );
}

/// CMDB errors name the CI's id and line, an unknown key hides none of the
/// others, and change records report every problem and each CI the CMDB
/// does not have.
#[test]
fn check_reports_every_cmdb_and_change_error_with_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let cmdb = dir.path().join("cmdb.yaml");
    std::fs::write(
        &cmdb,
        "cis:\n  - id: pg-0\n    colour: blue\n  - id: pg-1\n    depends_on: [pg-9]\n  - id: pg-0\n",
    )
    .unwrap();
    let (code, _, err) = incidentd(&["check", "--rules", rules, "--cmdb", cmdb.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let shown = cmdb.display();
    for want in [
        format!("error: {shown}:3: cis[0] (pg-0).colour: unknown field `colour`"),
        format!("error: {shown}:5: cis[1] (pg-1).depends_on[0]: unknown CI \"pg-9\""),
        format!("error: {shown}:6: cis[2] (pg-0).id: duplicate CI id \"pg-0\" (first at cis[0])"),
    ] {
        assert!(err.contains(&want), "{want}\n{err}");
    }
    assert!(err.contains("3 error(s)"), "{err}");

    std::fs::write(&cmdb, "cis:\n  - id: pg-0\n").unwrap();
    let changes = dir.path().join("changes.json");
    std::fs::write(
        &changes,
        r#"[{"id":"CHG1","ci":"pg-0","state":"someday","start":"2026-03-02T10:00:00Z","end":"2026-03-02T09:00:00Z"},
            {"id":"CHG2","ci":"pg-9","state":"approved","start":"2026-03-02T08:00:00Z","end":"2026-03-02T09:00:00Z"}]"#,
    )
    .unwrap();
    let (code, _, err) = incidentd(&[
        "check",
        "--rules",
        rules,
        "--cmdb",
        cmdb.to_str().unwrap(),
        "--changes",
        changes.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    let shown = changes.display();
    assert!(
        err.contains(&format!(
            "error: {shown}: [0] (CHG1).state: unknown variant `someday`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "error: {shown}: [0] (CHG1).end: ends before it starts"
        )),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
    // Once the records themselves are valid, the unknown CI is named.
    std::fs::write(
        &changes,
        r#"[{"id":"CHG1","ci":"pg-0","state":"approved","start":"2026-03-02T08:00:00Z","end":"2026-03-02T09:00:00Z"},
            {"id":"CHG2","ci":"pg-9","state":"approved","start":"2026-03-02T08:00:00Z","end":"2026-03-02T09:00:00Z"}]"#,
    )
    .unwrap();
    let (code, _, err) = incidentd(&[
        "check",
        "--rules",
        rules,
        "--cmdb",
        cmdb.to_str().unwrap(),
        "--changes",
        changes.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: {shown}: [1] (CHG2).ci: unknown CI \"pg-9\": no CI of the CMDB has this id"
        )),
        "{err}"
    );
}
