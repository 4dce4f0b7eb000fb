use super::*;
use crate::domain::LabelSet;

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const SMALL: &str = r#"
version: 1
services:
  - id: shop
    name: Shop
    tier: 1
    owner: team-shop
    sla:
      response: { P1: "15m" }
      resolution: { P1: "4h" }
    slo:
      - { name: availability, objective: 99.9, window: "30d" }
  - id: reports
    tier: 3
cis:
  - id: host-db-1
    class: host
    hostnames: [db-1, db-1.example.com]
    owner: team-platform
  - id: db
    class: database
    match: { job: postgres, cluster: db }
    depends_on: [host-db-1]
    owner: team-dba
  - id: shop-api
    class: application
    service: shop
    match: { service: shop-api }
    depends_on: [db]
  - id: shop-api-canary
    class: application
    service: shop
    match: { service: shop-api, track: canary }
    depends_on: [db]
  - id: report-job
    class: application
    service: reports
    match: { service: report-job }
    depends_on: [db]
"#;

#[test]
fn loads_and_answers_graph_questions() {
    let c = parse_yaml("t", SMALL).unwrap();
    assert_eq!(c.len(), 5);
    let host = c.ci_by_id("host-db-1").unwrap();
    let db = c.ci_by_id("db").unwrap();
    let api = c.ci_by_id("shop-api").unwrap();
    assert!(c.is_upstream(host, api));
    assert!(c.is_upstream(db, api));
    assert!(!c.is_upstream(api, db));
    assert!(!c.is_upstream(db, db));
    let ids = |v: Vec<CiIdx>| {
        v.into_iter()
            .map(|i| c.ci(i).id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(c.upstream(api)), vec!["db", "host-db-1"]);
    let impacted = c.impacted_services(host);
    assert_eq!(
        impacted,
        vec![
            ImpactedService {
                id: "reports".into(),
                tier: 3
            },
            ImpactedService {
                id: "shop".into(),
                tier: 1
            }
        ]
    );
    assert!(c.impacted_services(api).iter().all(|s| s.id == "shop"));
    let shop = c.service_by_id("shop").unwrap();
    assert_eq!(shop.response[0], Some(std::time::Duration::from_secs(900)));
    assert!((shop.slos[0].objective - 0.999).abs() < 1e-9);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn binding_prefers_ci_label_then_most_match_labels_then_hostname() {
    let c = parse_yaml("t", SMALL).unwrap();
    let bound = |pairs: &[(&str, &str)]| {
        c.bind(&labels(pairs))
            .map(|b| (c.ci(b.ci).id.clone(), b.how))
    };
    assert_eq!(
        bound(&[
            ("ci", "db"),
            ("service", "shop-api"),
            ("instance", "db-1:9100")
        ]),
        Some(("db".into(), BindingHow::CiLabel))
    );
    assert_eq!(
        bound(&[("service", "shop-api"), ("pod", "x")]),
        Some(("shop-api".into(), BindingHow::Match))
    );
    assert_eq!(
        bound(&[("service", "shop-api"), ("track", "canary")]),
        Some(("shop-api-canary".into(), BindingHow::Match)),
        "the CI with more matching labels wins"
    );
    assert_eq!(
        bound(&[("job", "postgres")]),
        None,
        "all match labels must be present"
    );
    assert_eq!(
        bound(&[("instance", "db-1:9187")]),
        Some(("host-db-1".into(), BindingHow::Hostname))
    );
    assert_eq!(
        bound(&[("host", "db-1.example.com")]),
        Some(("host-db-1".into(), BindingHow::Hostname))
    );
    assert_eq!(
        bound(&[("ci", "unknown"), ("instance", "nowhere:1")]),
        None,
        "unknown ci label falls through"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let bad = r#"
version: 1
services:
  - { id: a, tier: 9 }
  - { id: a }
cis:
  - { id: x, service: nope, depends_on: [y, ghost] }
  - { id: y, depends_on: [z] }
  - { id: z, depends_on: [x] }
  - { id: x }
  - { id: w, depends_on: [w] }
"#;
    let errs = parse_yaml("bad.yaml", bad).unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let has = |needle: &str| shown.iter().any(|e| e.contains(needle));
    // Each names its line and the id of its entry.
    assert!(
        has("bad.yaml:4: services[0] (a).tier: must be 1..=5, got 9"),
        "{shown:#?}"
    );
    assert!(
        has("bad.yaml:5: services[1] (a).id: duplicate service id \"a\" (first at services[0])"),
        "{shown:#?}"
    );
    assert!(
        has("bad.yaml:7: cis[0] (x).service: unknown service \"nope\""),
        "{shown:#?}"
    );
    assert!(
        has("bad.yaml:7: cis[0] (x).depends_on[1]: unknown CI \"ghost\""),
        "{shown:#?}"
    );
    assert!(
        has("bad.yaml:10: cis[3] (x).id: duplicate CI id \"x\" (first at cis[0])"),
        "{shown:#?}"
    );
    assert!(
        has("bad.yaml:11: cis[4] (w).depends_on[0]: CI \"w\" depends on itself"),
        "{shown:#?}"
    );
    assert!(has("depends_on cycle: x → y → z → x"), "{shown:#?}");
    assert!(shown.len() >= 7);
    // The fields themselves stay paths into the document.
    assert!(errs.iter().any(|e| e.field == "cis[0].depends_on[1]"));
}

/// An unknown key used to end validation (serde stops at the first
/// problem): every error of the file is reported, whatever its kind.
#[test]
fn an_unknown_key_does_not_hide_the_other_errors() {
    let bad = "version: 1
services:
  - id: shop
    tier: 1
cis:
  - id: pg-0
    class: database
    colour: blue
  - id: pg-1
    depends_on: [pg-9]
  - id: pg-2
    service: nope
    hostnames: pg-2-a
  - id: pg-0
  - class: orphan
";
    let errs = parse_yaml("cmdb.yaml", bad).unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let has = |needle: &str| shown.iter().any(|e| e.contains(needle));
    assert!(
        has("cmdb.yaml:8: cis[0] (pg-0).colour: unknown field `colour`"),
        "{shown:#?}"
    );
    assert!(
        has("cmdb.yaml:10: cis[1] (pg-1).depends_on[0]: unknown CI \"pg-9\""),
        "{shown:#?}"
    );
    assert!(
        has("cmdb.yaml:12: cis[2] (pg-2).service: unknown service \"nope\""),
        "{shown:#?}"
    );
    assert!(has("cmdb.yaml:13: cis[2] (pg-2).hostnames:"), "{shown:#?}");
    assert!(
        has("cmdb.yaml:14: cis[3] (pg-0).id: duplicate CI id \"pg-0\" (first at cis[0])"),
        "{shown:#?}"
    );
    assert!(
        has("cmdb.yaml:15: cis[4]: missing field `id`"),
        "{shown:#?}"
    );
    assert_eq!(shown.len(), 6, "{shown:#?}");
}

#[test]
fn unknown_fields_and_bad_yaml_are_errors() {
    let e = parse_yaml("t", "cis:\n  - id: a\n    depend_on: [b]\n").unwrap_err();
    assert!(e[0].to_string().contains("depend_on"), "{e:?}");
    // Cut short inside a list: the list is named, and the message says where.
    let e = parse_yaml("t", "cis: [").unwrap_err();
    assert_eq!(e[0].field, "cis", "{e:?}");
    assert!(e[0].message.contains("at line 2"), "{e:?}");
    let e = parse_yaml("t", "cis: [{id: a}]\n  : :\n").unwrap_err();
    assert!(e[0].field.starts_with("line "), "{e:?}");
    let e = parse_yaml("t", "cis:\n  - id: a\n    depends_on: 5\n").unwrap_err();
    assert_eq!(e[0].field, "cis[0].depends_on", "{e:?}");
}

#[test]
fn ambiguous_match_and_shared_hostnames_are_warnings() {
    let c = parse_yaml(
        "t",
        "cis:\n  - { id: b, match: { job: x } }\n  - { id: a, match: { job: x } }\n  - { id: h1, hostnames: [n1] }\n  - { id: h2, hostnames: [n1] }\n",
    )
    .unwrap();
    let w: Vec<String> = c.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("same match labels as CI \"b\": alerts bind to \"a\""),
        "{w:?}"
    );
    // The tie is broken deterministically: the smaller id.
    let b = c.bind(&labels(&[("job", "x")])).unwrap();
    assert_eq!(c.ci(b.ci).id, "a");
    assert!(
        w[1].contains("hostname \"n1\" also belongs to CI \"h1\""),
        "{w:?}"
    );
}

#[test]
fn merge_lets_later_sources_win() {
    let (a, _) = load_text(
        "a",
        "services: [{ id: s, tier: 2 }]\ncis: [{ id: x, class: host }, { id: y }]\n",
    )
    .unwrap();
    let (b, _) = load_text(
        "b",
        "services: [{ id: s, tier: 1 }]\ncis: [{ id: x, class: database, service: s }]\n",
    )
    .unwrap();
    let m = merge(vec![a, b]);
    assert_eq!(m.cis.len(), 2);
    assert_eq!(m.cis[0].class.as_deref(), Some("database"));
    let c = Cmdb::build("m", m).unwrap();
    assert_eq!(c.ci(c.ci_by_id("x").unwrap()).class, "database");
}

#[test]
fn the_shipped_example_cmdb_loads() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/cmdb.yaml"));
    let c = load_file(path).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(c.len() > 50);
    assert!(c.edge_count() > 50);
}
