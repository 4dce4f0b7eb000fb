use super::*;
use crate::domain::{AlertStatus, Fingerprint, LabelSet, Source, Timestamp};

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn alert(pairs: &[(&str, &str)]) -> Alert {
    let labels = labels(pairs);
    Alert {
        fingerprint: Fingerprint::of_labels(&labels),
        status: AlertStatus::Firing,
        labels,
        annotations: LabelSet::new(),
        starts_at: Timestamp(1_772_438_401_000),
        ends_at: None,
        source: Source::Alertmanager,
        generator_url: String::new(),
    }
}

fn load(yaml: &str) -> RuleSet {
    match RuleSet::from_sources(&[(PathBuf::from("rules/test.yaml"), yaml.to_string())]) {
        Ok(set) => set,
        Err(errs) => panic!("unexpected errors:\n{}", shown(&errs)),
    }
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    match RuleSet::from_sources(&sources) {
        Ok(set) => panic!(
            "expected errors, got rules {:?}",
            set.names().collect::<Vec<_>>()
        ),
        Err(errs) => errs.iter().map(ToString::to_string).collect(),
    }
}

fn shown(errs: &[RuleError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn eval(set: &RuleSet, a: &Alert) -> Decision {
    set.evaluate(&RuleInput::new(a))
}

fn names(d: &Decision) -> Vec<&str> {
    d.matched.iter().map(|n| &**n).collect()
}

/// A set of one rule per matcher, so each can be checked on its own.
fn matcher_hits(matchers: &[&str], a: &Alert) -> Vec<bool> {
    let mut yaml = String::from("rules:\n");
    for (i, m) in matchers.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: m{i}\n    matchers: ['{}']\n    actions: {{ assign: x }}\n",
            m.replace('\'', "''")
        ));
    }
    let set = load(&yaml);
    let d = eval(&set, a);
    (0..matchers.len())
        .map(|i| d.matched.iter().any(|n| **n == *format!("m{i}")))
        .collect()
}

#[test]
fn equality_matchers_and_spacing() {
    let a = alert(&[("alertname", "PostgresDown"), ("severity", "critical")]);
    let hits = matcher_hits(
        &[
            "severity=critical",
            "severity=\"critical\"",
            "severity = \"critical\"",
            "  severity!=warning ",
            "severity!=\"critical\"",
            "severity=crit",
        ],
        &a,
    );
    assert_eq!(hits, [true, true, true, true, false, false]);
}

#[test]
fn regex_matchers_are_fully_anchored() {
    let a = alert(&[("cluster", "db-replica"), ("code", "503")]);
    let hits = matcher_hits(
        &[
            "cluster=~\"db\"",
            "cluster=~\"db.*\"",
            "cluster=~\"replica\"",
            "cluster!~\"db\"",
            "cluster!~\"db-.*\"",
            "code=~5\\d\\d",
            "cluster=~\"web|db-replica\"",
        ],
        &a,
    );
    assert_eq!(hits, [false, true, false, true, false, true, true]);
}

#[test]
fn missing_label_has_the_empty_value() {
    let a = alert(&[("alertname", "X")]);
    let hits = matcher_hits(
        &[
            "team=\"\"",
            "team=",
            "team!=\"\"",
            "team=~\".*\"",
            "team=~\".+\"",
            "team!~\".+\"",
            "team!=platform",
        ],
        &a,
    );
    assert_eq!(hits, [true, true, false, true, false, true, true]);
}

#[test]
fn quoted_values_support_escapes() {
    let a = alert(&[("msg", "say \"hi\" \\ ok"), ("path", "C:\\tmp")]);
    let hits = matcher_hits(
        &[
            r#"msg="say \"hi\" \\ ok""#,
            r#"msg=~"say \"hi\" \\\\ ok""#,
            r#"path="C:\\tmp""#,
            r#"path="C:\tmp""#,
        ],
        &a,
    );
    // `\t` is a tab, so the last one does not match a literal backslash-t.
    assert_eq!(hits, [true, true, true, false]);
}

#[test]
fn invalid_matchers_are_load_errors_naming_the_item() {
    let errs = errors(&[(
        "rules/m.yaml",
        r#"rules:
  - name: bad
    matchers:
      - '1team=x'
      - 'team=~"("'
      - 'team~x'
      - 'team=="x"'
      - 'team="x", env="y"'
      - 'team="a\d"'
      - 'team="open'
      - alertname: X
"#,
    )]);
    assert_eq!(errs.len(), 8, "{errs:#?}");
    assert!(
        errs[0]
            .starts_with("rules/m.yaml:4: rule \"bad\": matchers[0]: invalid matcher \"1team=x\"")
    );
    assert!(
        errs[0].contains("invalid label name \"1team\""),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("matchers[1]: invalid matcher \"team=~\\\"(\\\"\": invalid regex \"(\""),
        "{}",
        errs[1]
    );
    assert!(errs[2].contains("expected =, !=, =~ or !~"), "{}", errs[2]);
    assert!(
        errs[3].contains("use = for equality, not =="),
        "{}",
        errs[3]
    );
    assert!(errs[4].contains("one matcher per list item"), "{}", errs[4]);
    assert!(errs[5].contains("unknown escape \\d"), "{}", errs[5]);
    assert!(errs[6].contains("missing closing quote"), "{}", errs[6]);
    assert!(
        errs[7].starts_with("rules/m.yaml:11: rule \"bad\": matchers[7]:"),
        "{}",
        errs[7]
    );
    assert!(errs[7].contains("use `match:`"), "{}", errs[7]);
}

#[test]
fn match_shorthand_is_equality_and_accepts_numbers() {
    let set = load(
        "rules:\n  - name: five-hundred\n    match: { env: prod, code: 500 }\n    actions: { priority: P2 }\n",
    );
    let hit = eval(&set, &alert(&[("env", "prod"), ("code", "500")]));
    assert_eq!(names(&hit), ["five-hundred"]);
    let miss = eval(&set, &alert(&[("env", "prod"), ("code", "5000")]));
    assert!(miss.matched.is_empty());
    let errs = errors(&[(
        "r.yaml",
        "rules:\n  - name: x\n    match: { 9lives: a, env: [a] }\n",
    )]);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("r.yaml:3: rule \"x\": match.9lives: invalid label name"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("match.env: expected a label value (a string), got a list"),
        "{}",
        errs[1]
    );
}

const PRECEDENCE: &str = r#"
rules:
  - name: heartbeat
    matchers: ['alertname=~"Watchdog|InfoInhibitor"']
    actions: { suppress: "heartbeat alerts are not incidents" }
  - name: all-suppressed-too
    actions:
      suppress: "second reason"
      priority: P4
      notify: [slack-all]
      runbook: https://runbooks.example.com/general
  - name: db
    match: { team: db }
    actions:
      priority: P2
      impact: 1
      urgency: high
      assign: team-db
      notify: [slack-db, slack-all]
      runbook: https://runbooks.example.com/general
  - name: db-stop
    matchers: ['severity="critical"', 'team="db"']
    actions: { priority: 1, assign: dba-oncall }
    stop: true
  - name: never-after-stop
    match: { team: db }
    actions: { priority: P5 }
"#;

#[test]
fn suppress_first_wins_overrides_last_wins_lists_accumulate() {
    let set = load(PRECEDENCE);
    let d = eval(&set, &alert(&[("alertname", "Watchdog"), ("team", "db")]));
    assert_eq!(
        names(&d),
        ["heartbeat", "all-suppressed-too", "db", "never-after-stop"]
    );
    let s = d.suppress.as_ref().map(|s| (&*s.rule, s.reason.as_str()));
    assert_eq!(s, Some(("heartbeat", "heartbeat alerts are not incidents")));
    assert_eq!(
        d.priority.as_ref().map(|(p, r)| (p.as_str(), &**r)),
        Some(("P5", "never-after-stop"))
    );
    assert_eq!(
        d.impact.as_ref().map(|(l, r)| (l.get(), &**r)),
        Some((1, "db"))
    );
    assert_eq!(d.urgency.as_ref().map(|(l, _)| l.get()), Some(1));
    assert_eq!(d.assign.as_ref().map(|(g, _)| g.as_str()), Some("team-db"));
    assert_eq!(d.notify, ["slack-all", "slack-db"]);
    assert_eq!(d.runbooks, ["https://runbooks.example.com/general"]);
    assert!(d.open);
    assert!(d.errors.is_empty());
}

#[test]
fn stop_ends_evaluation_after_a_match() {
    let set = load(PRECEDENCE);
    let d = eval(&set, &alert(&[("severity", "critical"), ("team", "db")]));
    assert_eq!(names(&d), ["all-suppressed-too", "db", "db-stop"]);
    assert_eq!(
        d.priority.as_ref().map(|(p, r)| (p.get(), &**r)),
        Some((1, "db-stop"))
    );
    assert_eq!(
        d.assign.as_ref().map(|(g, _)| g.as_str()),
        Some("dba-oncall")
    );
    assert_eq!(
        d.suppress.as_ref().map(|s| &*s.rule),
        Some("all-suppressed-too")
    );
}

#[test]
fn open_false_records_without_opening_and_later_rules_can_reopen() {
    let set = load(
        r#"rules:
  - name: dev-quiet
    matchers: ['env=~"dev|test"']
    actions: { open: false }
  - name: dev-payments-matter
    match: { env: dev, team: payments }
    actions: { open: true }
"#,
    );
    assert!(!eval(&set, &alert(&[("env", "dev")])).open);
    assert!(eval(&set, &alert(&[("env", "dev"), ("team", "payments")])).open);
    assert!(eval(&set, &alert(&[("env", "prod")])).open);
}

#[test]
fn empty_rule_set_and_default_decision_agree() {
    let d = RuleSet::empty().evaluate(&RuleInput::new(&alert(&[("a", "b")])));
    assert_eq!(d, Decision::default());
    assert!(d.open);
    assert!(RuleSet::empty().is_empty());
}

#[test]
fn cel_conditions_over_labels() {
    let set = load(
        r#"rules:
  - name: big
    when: 'alert.labels.env == "prod" && int(alert.labels.replicas) > 3'
    actions: { priority: P1 }
  - name: fields
    when: >-
      alert.severity == "critical" && alert.alertname == "KubeDown" &&
      alert.status == "firing" && alert.source == "alertmanager" &&
      size(alert.fingerprint) == 16 && alert.starts_at > timestamp("2020-01-01T00:00:00Z")
    actions: { assign: k8s }
  - name: optional-label
    when: 'alert.labels.?team.orValue("none") == "none" && alert.labels.env.upperAscii() == "PROD"'
    actions: { notify: [catch-all] }
"#,
    );
    let d = eval(
        &set,
        &alert(&[
            ("alertname", "KubeDown"),
            ("env", "prod"),
            ("replicas", "5"),
            ("severity", "critical"),
        ]),
    );
    assert_eq!(
        names(&d),
        ["big", "fields", "optional-label"],
        "{:?}",
        d.errors
    );
    let d = eval(
        &set,
        &alert(&[("env", "prod"), ("replicas", "2"), ("team", "a")]),
    );
    assert!(d.matched.is_empty(), "{d:?}");
    assert!(d.errors.is_empty(), "{:?}", d.errors);
}

#[test]
fn cel_conditions_over_ci_service_and_incident() {
    let set = load(
        r#"rules:
  - name: change-window
    when: 'has(ci.id) && ci.in_change_window && ci.class == "database"'
    actions: { suppress: "inside an approved change window" }
  - name: tier1
    when: 'has(service.tier) && service.tier == 1 && ci.owner == ""'
    actions: { impact: 1 }
  - name: noisy-incident
    when: 'has(incident.state) && incident.alert_count > 10 && incident.priority == "P3" && !incident.flapping'
    actions: { urgency: 3 }
"#,
    );
    let a = alert(&[("alertname", "PostgresDown")]);
    let ci = CiFacts {
        id: "pg-3".into(),
        class: "database".into(),
        service: Some("payments".into()),
        owner: None,
        in_change_window: true,
        change_id: Some("CHG0001".into()),
    };
    let svc = ServiceFacts {
        id: "payments".into(),
        name: "Payments".into(),
        tier: 1,
        owner: None,
    };
    let inc = IncidentFacts {
        state: "open".into(),
        priority: Priority::new(3).unwrap(),
        alert_count: 11,
        flapping: false,
    };
    let full = RuleInput {
        alert: &a,
        ci: Some(&ci),
        service: Some(&svc),
        incident: Some(&inc),
    };
    let d = set.evaluate(&full);
    assert_eq!(
        names(&d),
        ["change-window", "tier1", "noisy-incident"],
        "{:?}",
        d.errors
    );
    assert_eq!(
        d.suppress.map(|s| s.reason),
        Some("inside an approved change window".to_string())
    );
    // No facts: the `has()` guards make the rules simply not match.
    let d = eval(&set, &a);
    assert!(d.matched.is_empty());
    assert!(d.errors.is_empty(), "{:?}", d.errors);
}

#[test]
fn cel_runtime_errors_do_not_match_and_are_recorded() {
    let set = load(
        r#"rules:
  - name: reads-missing-label
    when: 'alert.labels.team == "db"'
    actions: { priority: P1 }
  - name: not-a-bool
    when: 'alert.alertname'
    actions: { priority: P2 }
  - name: bad-int
    when: 'int(alert.labels.alertname) > 1'
    actions: { priority: P3 }
    stop: true
  - name: still-runs
    actions: { assign: fallback }
"#,
    );
    let d = eval(&set, &alert(&[("alertname", "X")]));
    assert_eq!(names(&d), ["still-runs"]);
    assert_eq!(d.priority, None);
    let failed: Vec<&str> = d.errors.iter().map(|(r, _)| &**r).collect();
    assert_eq!(failed, ["reads-missing-label", "not-a-bool", "bad-int"]);
    assert!(d.errors[0].1.contains("team"), "{}", d.errors[0].1);
    assert!(d.errors[1].1.contains("not a bool"), "{}", d.errors[1].1);
}

#[test]
fn cel_compile_errors_name_the_rule_and_field() {
    let errs = errors(&[(
        "rules/c.yaml",
        r#"rules:
  - name: syntax
    when: 'alert.labels.env == '
  - name: typo
    when: 'alerts.labels.env == "prod"'
  - name: blank
    when: "  "
"#,
    )]);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules/c.yaml:3: rule \"syntax\": when: syntax error"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with(
            "rules/c.yaml:5: rule \"typo\": when: unknown variable or function \"alerts\""
        ),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("rule \"blank\": when: empty condition"),
        "{}",
        errs[2]
    );
}

#[test]
fn load_dir_reports_errors_of_every_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("10-db.yaml"),
        "rules:\n  - name: db-down\n    match: { team: db }\n    actions:\n      priority: P9\n      impact: 7\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("20-web.yml"),
        "rules:\n  - name: web\n    actions: { suppress: \"\" }\n  - description: no name\n    actions: { urgency: 0 }\n",
    )
    .unwrap();
    let errs = RuleSet::load_dir(dir.path()).unwrap_err();
    let shown: Vec<String> = errs
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "rules")
        })
        .collect();
    assert_eq!(
        shown,
        [
            "rules/10-db.yaml:5: rule \"db-down\": actions.priority: priority must be P1..P5, got \"P9\"",
            "rules/10-db.yaml:6: rule \"db-down\": actions.impact: impact must be 1 (high), 2 (medium) or 3 (low), got \"7\"",
            "rules/20-web.yml:3: rule \"web\": actions.suppress: the suppression reason must not be empty",
            "rules/20-web.yml:4: rules[1].name: missing required field \"name\"",
            "rules/20-web.yml:5: rules[1].actions.urgency: urgency must be 1 (high), 2 (medium) or 3 (low), got \"0\"",
        ]
    );
    assert_eq!(errs[0].rule.as_deref(), Some("db-down"));
    assert_eq!(errs[0].field, "actions.priority");
    assert_eq!(errs[0].line, Some(5));
    assert_eq!(errs[3].rule, None);
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let errs = errors(&[(
        "r.yaml",
        "rules:\n  - name: a\n    matcher: ['x=y']\n    actions:\n      prio: P1\n      assign: team\ngroups: []\n",
    )]);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "r.yaml:3: rule \"a\": matcher: unknown field \"matcher\", expected one of: name,"
        ),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with(
            "r.yaml:5: rule \"a\": actions.prio: unknown field \"prio\", expected one of: suppress,"
        ),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("r.yaml:7: groups: unknown field \"groups\""),
        "{}",
        errs[2]
    );
}

#[test]
fn yaml_syntax_errors_carry_the_line() {
    let errs = errors(&[
        (
            "a.yaml",
            "rules:\n  - name: a\n    actions: {priority: P1\n",
        ),
        ("b.yaml", "rules:\n  - name: b\n  - name: [\n"),
    ]);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].starts_with("a.yaml:"), "{}", errs[0]);
    assert!(errs[0].contains("invalid YAML"), "{}", errs[0]);
    assert!(errs[1].starts_with("b.yaml:"), "{}", errs[1]);
}

#[test]
fn duplicate_names_across_files_are_errors() {
    let errs = errors(&[
        (
            "rules/00-a.yaml",
            "rules:\n  - name: one\n    actions: {priority: P1}\n  - name: dup\n    actions: {priority: P1}\n",
        ),
        (
            "rules/10-b.yaml",
            "rules:\n\n  - name: dup\n    actions: {priority: P2}\n",
        ),
    ]);
    assert_eq!(
        errs,
        [
            "rules/10-b.yaml:3: rule \"dup\": name: duplicate rule name, first defined at rules/00-a.yaml:4"
        ]
    );
    // Also reported next to other errors, within one file.
    let errs = errors(&[(
        "r.yaml",
        "rules:\n  - name: x\n    actions: {priority: P0}\n  - name: x\n",
    )]);
    assert_eq!(
        errs,
        [
            "r.yaml:3: rule \"x\": actions.priority: priority must be P1..P5, got \"P0\"",
            "r.yaml:4: rule \"x\": name: duplicate rule name, first defined at r.yaml:2",
        ]
    );
}

#[test]
fn other_validation_errors() {
    let errs = errors(&[(
        "v.yaml",
        r#"rules:
  - name: ""
  - name: a
    stop: yes
    actions:
      suppress: true
      open: "no"
      assign: ""
      notify: ["", ok]
      runbook: ["ftp://x", "https://x/{{ .Labels.job }}", "{{ $annotations.runbook_url }}"]
"#,
    )]);
    let expected = [
        "v.yaml:2: rules[0].name: rule name must not be empty",
        "v.yaml:4: rule \"a\": stop: expected true or false, got a string",
        "v.yaml:6: rule \"a\": actions.suppress: expected the reason for suppressing, as a string, got a boolean",
        "v.yaml:7: rule \"a\": actions.open: expected true or false, got a string",
        "v.yaml:8: rule \"a\": actions.assign: the assignment group must not be empty",
        "v.yaml:9: rule \"a\": actions.notify[0]: destination name must not be empty",
        "v.yaml:10: rule \"a\": actions.runbook[0]: runbook must be an http:// or https:// URL (placeholders aside), got \"ftp://x\"",
        "v.yaml:10: rule \"a\": actions.runbook[1]: unsupported placeholder \"{{ .Labels.job }}\": only {{ $labels.NAME }} and {{ $annotations.NAME }} are supported",
        "v.yaml:10: rule \"a\": actions.runbook[2]: runbook must be an http:// or https:// URL (placeholders aside), got \"\"",
    ];
    assert_eq!(errs, expected);
}

#[test]
fn runbooks_are_templated_from_labels_and_annotations() {
    let set = load(
        r#"rules:
  - name: rb
    actions:
      runbook:
        - "https://runbooks.example.com/{{ $labels.alertname }}?ns={{$labels.namespace}}"
        - "https://wiki.example.com/{{ $annotations.summary_id }}/{{ $labels.missing }}"
  - name: rb-again
    actions:
      runbook: "https://runbooks.example.com/{{ $labels.alertname }}?ns={{$labels.namespace}}"
"#,
    );
    let mut a = alert(&[("alertname", "KubePodCrashLooping"), ("namespace", "web")]);
    a.annotations = labels(&[("summary_id", "crash")]);
    let d = eval(&set, &a);
    assert_eq!(
        d.runbooks,
        [
            "https://runbooks.example.com/KubePodCrashLooping?ns=web",
            "https://wiki.example.com/crash/",
        ]
    );
}

#[test]
fn load_dir_ignores_subdirectories_and_other_files_and_sorts_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let rule =
        |name: &str| format!("rules:\n  - name: {name}\n    actions: {{ assign: {name} }}\n");
    std::fs::write(dir.path().join("20-b.yml"), rule("b")).unwrap();
    std::fs::write(dir.path().join("10-a.yaml"), rule("a")).unwrap();
    std::fs::write(dir.path().join("README.md"), "not: [yaml").unwrap();
    std::fs::write(dir.path().join(".10-a.yaml.swp"), "garbage: [").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests").join("cases.yaml"), "tests: [oops").unwrap();
    let set = RuleSet::load_dir(dir.path()).unwrap();
    assert_eq!(set.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(set.len(), 2);
    assert_eq!(set.description("a"), None);
    let d = eval(&set, &alert(&[]));
    assert_eq!(
        d.assign.map(|(g, r)| (g, r.to_string())),
        Some(("b".into(), "b".into()))
    );
}

#[test]
fn load_dir_of_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let errs = RuleSet::load_dir(&dir.path().join("nope")).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].to_string().contains("cannot read rules directory"));
}

#[test]
fn warnings_for_rules_that_can_never_match_or_do_nothing() {
    let set = RuleSet::from_sources(&[
        (
            PathBuf::from("00-a.yaml"),
            r#"rules:
  - name: contradiction
    matchers: ['env="prod"']
    match: { env: dev }
    actions: { priority: P1 }
  - name: noop
    match: { env: dev }
  - name: catch-all
    actions: { assign: everyone }
    stop: true
"#
            .to_string(),
        ),
        (
            PathBuf::from("10-b.yaml"),
            "rules:\n  - name: shadowed\n    actions: { priority: P1 }\n".to_string(),
        ),
        (
            PathBuf::from("20-empty.yaml"),
            "# nothing yet\n".to_string(),
        ),
    ])
    .unwrap();
    let w: Vec<String> = set.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "20-empty.yaml: file defines no rules",
            "00-a.yaml:2: rule \"contradiction\": can never match: env=\"prod\" and env=\"dev\" cannot both hold",
            "00-a.yaml:6: rule \"noop\": has no actions and no stop: it only records that it matched",
            "10-b.yaml:2: rule \"shadowed\": can never match: rule \"catch-all\" (00-a.yaml) before it matches every alert and has stop: true",
        ]
    );
}

#[test]
fn shipped_default_rules_load_and_behave() {
    let set = match RuleSet::load_dir(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))) {
        Ok(set) => set,
        Err(errs) => panic!("{}", shown(&errs)),
    };
    assert!(set.warnings().is_empty(), "{}", shown(set.warnings()));
    assert!(
        set.names()
            .all(|n| set.description(n).is_some_and(|d| !d.is_empty()))
    );
    let d = eval(
        &set,
        &alert(&[("alertname", "Watchdog"), ("severity", "none")]),
    );
    assert!(d.suppress.is_some());
    let d = eval(
        &set,
        &alert(&[("alertname", "CPUThrottlingHigh"), ("severity", "info")]),
    );
    assert_eq!(d.suppress, None, "info alerts are recorded, not suppressed");
    assert_eq!(d.urgency.map(|(l, _)| l.get()), Some(3));
    let d = eval(
        &set,
        &alert(&[
            ("alertname", "PostgresDown"),
            ("severity", "critical"),
            ("env", "staging"),
        ]),
    );
    assert_eq!(d.suppress, None);
    assert_eq!(d.urgency.map(|(l, _)| l.get()), Some(1));
    assert_eq!(d.impact.map(|(l, _)| l.get()), Some(3));
    let d = eval(
        &set,
        &alert(&[
            ("alertname", "DiskFilling"),
            ("severity", "warning"),
            ("env", "prod"),
        ]),
    );
    assert_eq!(d.urgency.map(|(l, _)| l.get()), Some(2));
    assert_eq!(d.impact, None);
    assert!(d.open);
}

#[test]
fn rule_sets_can_be_shared_across_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleSet>();
    assert_send_sync::<Decision>();
}

/// A `notify` naming no configured destination would notify nobody: with
/// the destinations known (serve, check), it is an error at its line.
#[test]
fn notify_must_name_a_configured_destination() {
    let yaml = r#"rules:
  - name: dba
    matchers: ['team="dba"']
    actions:
      notify: [slack-dba, pagerduty-dba]
  - name: single
    actions:
      priority: P3
      notify: slak-ops
"#;
    let files = [(PathBuf::from("rules/n.yaml"), yaml.to_string())];
    // Offline (replay, rule tests) nothing is sent: not checked.
    assert!(RuleSet::from_sources(&files).is_ok());
    let known = vec!["slack-dba".to_string(), "slack-ops".to_string()];
    let errs = RuleSet::from_sources_for(&files, Some(&known)).unwrap_err();
    assert_eq!(
        shown(&errs),
        "rules/n.yaml:5: rule \"dba\": actions.notify[1]: unknown destination \"pagerduty-dba\": no [[outbound.destinations]] has this name (configured: slack-dba, slack-ops), so it would notify nobody\n\
         rules/n.yaml:9: rule \"single\": actions.notify[0]: unknown destination \"slak-ops\": no [[outbound.destinations]] has this name (configured: slack-dba, slack-ops), so it would notify nobody"
    );
    let known = vec![
        "slack-dba".to_string(),
        "pagerduty-dba".to_string(),
        "slak-ops".to_string(),
    ];
    assert!(RuleSet::from_sources_for(&files, Some(&known)).is_ok());
}

#[test]
fn a_rule_that_suppresses_everything_is_a_warning() {
    let set = load(
        r#"rules:
  - name: mute
    actions:
      suppress: "maintenance"
  - name: mute-heartbeats
    matchers: ['alertname="Watchdog"']
    actions:
      suppress: "heartbeat"
"#,
    );
    let w: Vec<String> = set.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "rules/test.yaml:2: rule \"mute\": has no matchers and no condition: it suppresses every alert (\"maintenance\"), so no incident will ever open"
        ]
    );
}
