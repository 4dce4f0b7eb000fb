//! Property tests for every decoder of outside input: Alertmanager webhooks,
//! canonical alerts, PagerDuty events, Kafka messages, CMDB files, rule
//! files and change records.
//!
//! Inputs are valid documents mutated at random places (a value of another
//! type, a missing or unknown field, hostile strings, extreme numbers and
//! times) and then, sometimes, damaged as bytes (cut short, a byte changed).
//! For each: the decoder returns, never panics, and every error it reports
//! names a field that locates the problem in the document (or, for a body
//! that is not JSON or YAML at all, the body and its line).
//!
//! `cargo test` runs a bounded number of cases per decoder; set
//! `INCIDENTD_PROPTEST_CASES` for a long run (BENCHMARKS.md has the
//! command and figures of the million-case run).

use incidentd::cmdb;
use incidentd::domain::Timestamp;
use incidentd::ingest::kafka::parse_message;
use incidentd::ingest::settings::TopicFormat;
use incidentd::normalize::{
    AlertLimits, Batch, Intake, NormalizeError, TimeBounds, parse_alertmanager, parse_canonical,
    parse_pagerduty,
};
use incidentd::rules::RuleSet;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{Value, json};
use std::path::PathBuf;

fn config() -> Config {
    let cases = std::env::var("INCIDENTD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    Config {
        cases,
        // A failure is printed with its minimal input; no files in tests/.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

fn intake() -> Intake {
    Intake {
        now: Timestamp::parse_rfc3339("2026-12-05T12:00:00Z")
            .expect("a valid time")
            .expect("a time"),
        limits: AlertLimits {
            // Small enough that generated values cross them.
            max_labels: 16,
            max_label_name_bytes: 64,
            max_label_value_bytes: 256,
            max_annotation_bytes: 1024,
            max_alerts: 8,
        },
        bounds: Some(TimeBounds::default()),
    }
}

// ---------------------------------------------------------------- inputs

/// Strings a careless or hostile sender sends.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("firing".to_string()),
        Just("resolved".to_string()),
        Just("trigger".to_string()),
        Just("acknowledge".to_string()),
        Just("approved".to_string()),
        Just("4".to_string()),
        Just("2026-12-05T11:59:00Z".to_string()),
        Just("1970-01-01T00:00:01Z".to_string()),
        Just("9999-12-31T23:59:59Z".to_string()),
        Just("0001-01-01T00:00:00Z".to_string()),
        Just("2026-02-30T00:00:00Z".to_string()),
        Just("2026-12-05T12:00:00+14:00".to_string()),
        Just("5m".to_string()),
        Just("-1s".to_string()),
        Just("99999999999999999999d".to_string()),
        Just("a\u{0}b\u{7}c".to_string()),
        Just("ü名\u{202e}".to_string()),
        Just("a=\"b\"".to_string()),
        Just("{{ .Labels }}".to_string()),
        Just("x".repeat(300)),
        Just("é".repeat(2000)),
        any::<String>(),
        "[a-z_]{1,12}",
    ]
}

fn nasty_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1.5)),
        Just(json!(1e308)),
        Just(json!(-1e-308)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

/// Any JSON value, shallow, leaning to the strings and numbers above.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        nasty_number(),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One change to a document: at the node picked by `at` (an index into the
/// document's nodes, taken modulo their number).
#[derive(Debug, Clone)]
enum Mutation {
    /// Put this value there.
    Replace(usize, Value),
    /// Remove the node from its object or array.
    Remove(usize),
    /// Add a field (to an object) or an element (to an array).
    Insert(usize, String, Value),
    /// Repeat an array's elements (more alerts, labels, records).
    Grow(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any_value()).prop_map(|(at, v)| Mutation::Replace(at, v)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        2 => (any::<usize>(), nasty_string(), any_value())
            .prop_map(|(at, k, v)| Mutation::Insert(at, k, v)),
        1 => (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Grow(at, n)),
    ]
}

/// Damage to the serialized bytes.
#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Cut at this fraction (per mille) of the length.
    Cut(u16),
    /// Set the byte at this fraction to this value.
    Byte(u16, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        8 => Just(Damage::None),
        1 => (0u16..1000).prop_map(Damage::Cut),
        1 => (0u16..1000, any::<u8>()).prop_map(|(at, b)| Damage::Byte(at, b)),
    ]
}

/// Paths (as JSON pointers) of every node, in document order.
fn nodes(v: &Value, here: String, out: &mut Vec<String>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                nodes(child, format!("{here}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                nodes(child, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn mutate(doc: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    nodes(doc, String::new(), &mut all);
    let pick = |at: usize| all[at % all.len()].clone();
    match m {
        Mutation::Replace(at, v) => {
            if let Some(node) = doc.pointer_mut(&pick(*at)) {
                *node = v.clone();
            }
        }
        Mutation::Remove(at) => {
            let path = pick(*at);
            let Some(cut) = path.rfind('/') else { return };
            let (parent, key) = (&path[..cut], &path[cut + 1..]);
            let key = key.replace("~1", "/").replace("~0", "~");
            match doc.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&key);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>()
                        && i < a.len()
                    {
                        a.remove(i);
                    }
                }
                _ => {}
            }
        }
        Mutation::Insert(at, k, v) => match doc.pointer_mut(&pick(*at)) {
            Some(Value::Object(m)) => {
                m.insert(k.clone(), v.clone());
            }
            Some(Value::Array(a)) => a.push(v.clone()),
            _ => {}
        },
        Mutation::Grow(at, n) => {
            if let Some(Value::Array(a)) = doc.pointer_mut(&pick(*at))
                && let Some(first) = a.first().cloned()
            {
                for _ in 0..*n {
                    a.push(first.clone());
                }
            }
        }
    }
}

fn damaged(mut bytes: Vec<u8>, d: &Damage) -> Vec<u8> {
    match *d {
        Damage::None => {}
        Damage::Cut(at) => bytes.truncate(bytes.len() * at as usize / 1000),
        Damage::Byte(at, b) => {
            if !bytes.is_empty() {
                let i = (bytes.len() * at as usize / 1000).min(bytes.len() - 1);
                bytes[i] = b;
            }
        }
    }
    bytes
}

/// A document from `seeds`, mutated and perhaps damaged: the value (when
/// the bytes are still that value) and the bytes.
fn input(seeds: Vec<Value>, yaml: bool) -> impl Strategy<Value = (Option<Value>, Vec<u8>)> {
    (
        0..seeds.len(),
        prop::collection::vec(mutation(), 0..5),
        damage(),
    )
        .prop_map(move |(seed, muts, dmg)| {
            let mut doc = seeds[seed].clone();
            for m in &muts {
                mutate(&mut doc, m);
            }
            let bytes = if yaml {
                serde_yaml_ng::to_string(&doc)
                    .expect("a JSON value is YAML")
                    .into_bytes()
            } else {
                serde_json::to_vec(&doc).expect("a JSON value serializes")
            };
            let out = damaged(bytes, &dmg);
            let value = matches!(dmg, Damage::None).then_some(doc);
            (value, out)
        })
}

// ---------------------------------------------------------------- checks

/// Does the path a decoder named (`alerts[3].labels.a.b`, `[2].start`,
/// `services[0].sla`) lead into the document? Keys may hold dots and
/// brackets, so every way of reading the path is tried. The last step may
/// be missing (a required field that is absent).
fn locates(doc: &Value, path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    // A separator, or the start of a key that begins with a dot.
    if let Some(rest) = path.strip_prefix('.')
        && locates(doc, rest)
    {
        return true;
    }
    if let (Some(rest), Value::Array(a)) = (path.strip_prefix('['), doc)
        && let Some(end) = rest.find(']')
        && let Ok(i) = rest[..end].parse::<usize>()
        && a.get(i).is_some_and(|v| locates(v, &rest[end + 1..]))
    {
        return true;
    }
    match doc {
        Value::Object(m) => {
            // A missing field named last.
            if !path.contains(['.', '[']) && !m.contains_key(path) {
                return true;
            }
            m.iter().any(|(k, v)| {
                path.strip_prefix(k.as_str()).is_some_and(|rest| {
                    (rest.is_empty() || rest.starts_with(['.', '['])) && locates(v, rest)
                })
            })
        }
        // serde names a map key it could not read by the key itself.
        _ => false,
    }
}

fn check_normalize_error(e: &NormalizeError, doc: Option<&Value>) -> Result<(), TestCaseError> {
    match e {
        NormalizeError::Syntax { field, line, .. } => {
            prop_assert_eq!(*field, "body");
            prop_assert!(*line >= 1);
            // Bytes that are still a JSON document never fail to parse.
            prop_assert!(doc.is_none(), "syntax error on valid JSON: {e}");
        }
        NormalizeError::Field { field, message, .. } => {
            prop_assert!(!field.is_empty(), "no field: {e}");
            prop_assert!(!message.is_empty(), "no message: {e}");
            if let Some(doc) = doc {
                prop_assert!(
                    field == "body" || locates(doc, field),
                    "field {field:?} is not in the document: {e}\n{doc}"
                );
            }
        }
    }
    Ok(())
}

/// A batch's rejections name the alert (index) and a field inside it.
fn check_batch(batch: &Batch, doc: Option<&Value>, list: &str) -> Result<(), TestCaseError> {
    let alerts = doc.and_then(|d| {
        if list.is_empty() {
            d.as_array().map(Vec::len)
        } else {
            d.get(list).and_then(Value::as_array).map(Vec::len)
        }
    });
    for r in &batch.rejected {
        prop_assert!(!r.field.is_empty(), "rejected without a field: {r:?}");
        prop_assert!(!r.error.is_empty(), "rejected without a reason: {r:?}");
        if let Some(n) = alerts {
            prop_assert!(r.index < n, "index {} of {n} alerts", r.index);
        }
        if let Some(doc) = doc {
            prop_assert!(
                locates(doc, &r.field),
                "field {:?} is not in the document\n{doc}",
                r.field
            );
        }
    }
    Ok(())
}

fn check_decode(
    got: Result<Batch, NormalizeError>,
    doc: Option<&Value>,
    list: &str,
) -> Result<(), TestCaseError> {
    match got {
        Ok(batch) => check_batch(&batch, doc, list),
        Err(e) => check_normalize_error(&e, doc),
    }
}

// ---------------------------------------------------------------- seeds

fn am_alert(i: usize, status: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": "HighLatency", "instance": format!("host-{i}:9100"),
                   "severity": "critical", "service": "checkout"},
        "annotations": {"summary": "p99 over 2s", "runbook_url": "https://runbooks/x"},
        "startsAt": "2026-12-05T11:58:00Z",
        "endsAt": if status == "resolved" { "2026-12-05T11:59:30Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": format!("{i:016x}")
    })
}

fn alertmanager_seeds() -> Vec<Value> {
    let body = |alerts: Vec<Value>| {
        json!({
            "version": "4", "groupKey": "{}:{alertname=\"HighLatency\"}", "truncatedAlerts": 0,
            "status": "firing", "receiver": "incidentd",
            "groupLabels": {"alertname": "HighLatency"},
            "commonLabels": {"alertname": "HighLatency"}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "alerts": alerts
        })
    };
    vec![
        body(vec![am_alert(1, "firing")]),
        body(vec![
            am_alert(1, "firing"),
            am_alert(2, "resolved"),
            am_alert(3, "firing"),
        ]),
    ]
}

fn canonical_seeds() -> Vec<Value> {
    let one = |i: usize| {
        json!({
            "labels": {"alertname": "DiskFull", "host": format!("db-{i}"), "severity": "warning"},
            "annotations": {"summary": "disk 95% full"},
            "status": "firing",
            "starts_at": "2026-12-05T11:50:00Z",
            "generator_url": "http://prometheus:9090/",
            "source": "zabbix"
        })
    };
    vec![
        one(1),
        json!([one(1), one(2)]),
        json!([{"labels": {"alertname": "Up"}, "startsAt": "2026-12-05T11:00:00Z",
                "endsAt": "2026-12-05T11:10:00Z"}]),
    ]
}

fn pagerduty_seeds() -> Vec<Value> {
    vec![
        json!({
            "routing_key": "R0123456789abcdef0123456789abcd", "event_action": "trigger",
            "dedup_key": "srv01/disk",
            "payload": {"summary": "disk full on srv01", "source": "srv01", "severity": "critical",
                        "timestamp": "2026-12-05T11:55:00Z", "component": "mysql",
                        "group": "prod-datapipe", "class": "disk",
                        "custom_details": {"free space": "1%", "ping time": "1500ms"}},
            "client": "Sample Monitoring Service", "client_url": "https://monitoring.example.com"
        }),
        json!({"routing_key": "R0123456789abcdef0123456789abcd", "event_action": "acknowledge",
               "dedup_key": "srv01/disk"}),
        json!({"routing_key": "R0123456789abcdef0123456789abcd", "event_action": "resolve",
               "dedup_key": "srv01/disk"}),
    ]
}

fn change_seeds() -> Vec<Value> {
    let one = |i: usize, state: &str| {
        json!({"id": format!("CHG{i:07}"), "ci": "host-pg-1-a", "state": state,
               "start": "2026-12-05T08:43:00Z", "end": "2026-12-05T09:23:00Z",
               "summary": "kernel patching"})
    };
    vec![
        one(1, "approved"),
        json!([
            one(1, "approved"),
            one(2, "implementing"),
            one(3, "cancelled")
        ]),
    ]
}

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_seed(rel: &str) -> Value {
    serde_yaml_ng::from_str(&repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn cmdb_seeds() -> Vec<Value> {
    vec![
        yaml_seed("deploy/cmdb.yaml"),
        json!({"version": 1,
               "services": [{"id": "shop", "name": "Shop", "tier": 1}],
               "cis": [{"id": "db-1", "type": "database", "services": ["shop"],
                        "match": {"instance": "db-1:9187"}},
                       {"id": "app-1", "type": "app", "depends_on": ["db-1"],
                        "match": {"job": "app"}}]}),
    ]
}

fn rule_seeds() -> Vec<Value> {
    [
        "rules/00-noise.yaml",
        "rules/05-changes.yaml",
        "rules/10-severity.yaml",
        "rules/20-environment.yaml",
    ]
    .iter()
    .map(|f| yaml_seed(f))
    .collect()
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config())]

    #[test]
    fn alertmanager_webhooks((doc, bytes) in input(alertmanager_seeds(), false)) {
        check_decode(parse_alertmanager(&bytes, &intake()), doc.as_ref(), "alerts")?;
    }

    #[test]
    fn canonical_alerts((doc, bytes) in input(canonical_seeds(), false)) {
        let list = if doc.as_ref().is_some_and(Value::is_array) { "" } else { "-" };
        check_decode(parse_canonical(&bytes, &intake()), doc.as_ref(), list)?;
    }

    #[test]
    fn pagerduty_events((doc, bytes) in input(pagerduty_seeds(), false)) {
        if let Err(e) = parse_pagerduty(&bytes, &intake()) {
            check_normalize_error(&e, doc.as_ref())?;
        }
    }

    #[test]
    fn kafka_messages(
        (doc, bytes) in input(
            alertmanager_seeds().into_iter().chain(canonical_seeds()).chain(pagerduty_seeds()).collect(),
            false,
        ),
        format in prop_oneof![
            Just(TopicFormat::Auto), Just(TopicFormat::Canonical), Just(TopicFormat::Alertmanager)
        ],
        header in prop_oneof![
            Just(None), Just(Some(&b"canonical"[..])), Just(Some(&b"pagerduty"[..])),
            Just(Some(&b"\xff\x00"[..]))
        ],
    ) {
        let list = match &doc {
            Some(Value::Object(m)) if m.contains_key("alerts") => "alerts",
            Some(Value::Array(_)) => "",
            _ => "-",
        };
        check_decode(parse_message(format, header, &bytes, &intake()), doc.as_ref(), list)?;
    }

    #[test]
    fn change_records((doc, bytes) in input(change_seeds(), false)) {
        if let Err(errors) = incidentd::change::parse_changes(&bytes) {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert!(!e.field.is_empty(), "no field: {e}");
                if let Some(doc) = &doc {
                    // A lone record is read as a list of one.
                    let list = if doc.is_object() { json!([doc]) } else { doc.clone() };
                    prop_assert!(
                        e.field == "body" || locates(&list, &e.field),
                        "field {:?} is not in the document: {e}\n{doc}", e.field
                    );
                }
            }
        }
    }

    #[test]
    fn cmdb_files((doc, bytes) in input(cmdb_seeds(), true)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(errors) = cmdb::parse_yaml("cmdb.yaml", &text) {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert!(!e.field.is_empty(), "no field: {}: {}", e.field, e.message);
                prop_assert!(!e.message.is_empty());
                if let Some(doc) = &doc {
                    prop_assert!(
                        e.field.starts_with("line ") || e.field == "document" || locates(doc, &e.field),
                        "field {:?} is not in the document: {}\n{doc}", e.field, e.message
                    );
                }
            }
        }
    }

    #[test]
    fn rule_files((doc, bytes) in input(rule_seeds(), true)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let files = vec![(PathBuf::from("rules/fuzz.yaml"), text)];
        if let Err(errors) = RuleSet::from_sources(&files) {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert!(!e.message.is_empty());
                prop_assert!(
                    !e.field.is_empty() || e.line.is_some(),
                    "neither field nor line: {e}"
                );
                // Outside a named rule the field is a path in the file.
                if let (Some(doc), None, false) = (&doc, &e.rule, e.field.is_empty()) {
                    prop_assert!(
                        locates(doc, &e.field),
                        "field {:?} is not in the document: {e}\n{doc}", e.field
                    );
                }
            }
        }
    }
}
