//! The labelled alert-storm scenarios: `incidentd replay` with the CMDB and
//! change records must reproduce `expected.json` exactly (the figures of
//! `shared/tools/score_incidents.py`, re-implemented here), and a running
//! daemon fed the same bodies over HTTP must end with the same incidents.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use incidentd::app::{self, CmdbChoice};
use incidentd::config::{self, Overrides, RawConfig};
use incidentd::domain::SystemClock;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::ServiceExt;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scenarios() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/data/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").exists())
        .collect();
    v.sort();
    assert!(v.len() >= 3, "scenario data missing");
    v
}

#[derive(Debug, PartialEq)]
struct Score {
    expected: usize,
    actual: usize,
    root: f64,
    completeness: f64,
    purity: f64,
    state: f64,
    impact: f64,
    split: usize,
    leaks: usize,
}

/// Same figures as score_incidents.py.
fn score(dir: &Path, got: &[Value]) -> Score {
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let exp_inc = exp["incidents"].as_array().unwrap();
    let mut owner: HashMap<&str, usize> = HashMap::new();
    for (i, e) in exp_inc.iter().enumerate() {
        for f in e["alert_fingerprints"].as_array().unwrap() {
            owner.insert(f.as_str().unwrap(), i);
        }
    }
    let sup: HashSet<&str> = exp["suppressed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let acts: Vec<(&Value, HashSet<&str>)> = got
        .iter()
        .map(|g| {
            (
                g,
                g["alert_fingerprints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap())
                    .collect(),
            )
        })
        .collect();
    let (mut root_ok, mut complete, mut state_ok, mut impact_ok, mut impact_n, mut split) =
        (0.0, 0.0, 0, 0, 0, 0);
    for e in exp_inc {
        let fe: HashSet<&str> = e["alert_fingerprints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        let (mut best, mut best_ov, mut holders) = (None, 0, 0);
        for (g, fps) in &acts {
            let ov = fe.intersection(fps).count();
            if ov > 0 {
                holders += 1;
            }
            if ov > best_ov {
                best = Some(*g);
                best_ov = ov;
            }
        }
        complete += best_ov as f64 / fe.len() as f64;
        if holders > 1 {
            split += 1;
        }
        if let Some(b) = best {
            if b["root_ci"] == e["root_ci"] {
                root_ok += 1.0;
            }
            let done = matches!(b["state"].as_str(), Some("resolved" | "closed"));
            state_ok += usize::from(done == (e["final_state"] == "resolved"));
            impact_n += 1;
            let mut a: Vec<&str> = b["impacted_services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let mut x: Vec<&str> = e["impacted_services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            a.sort();
            x.sort();
            impact_ok += usize::from(a == x);
        }
    }
    let (mut purity, mut counted, mut leaks) = (0.0, 0usize, 0usize);
    for (g, fps) in &acts {
        if fps.iter().any(|f| sup.contains(f))
            && !matches!(
                g["state"].as_str(),
                Some("resolved" | "closed" | "suppressed")
            )
        {
            leaks += 1;
        }
        let known: Vec<usize> = fps.iter().filter_map(|f| owner.get(f).copied()).collect();
        if known.is_empty() {
            continue;
        }
        let dom = known
            .iter()
            .map(|k| known.iter().filter(|x| *x == k).count())
            .max()
            .unwrap();
        purity += dom as f64 / known.len() as f64;
        counted += 1;
    }
    let n = exp_inc.len() as f64;
    Score {
        expected: exp_inc.len(),
        actual: counted,
        root: root_ok / n,
        completeness: complete / n,
        purity: purity / counted.max(1) as f64,
        state: state_ok as f64 / n,
        impact: impact_ok as f64 / impact_n.max(1) as f64,
        split,
        leaks,
    }
}

fn perfect(expected: usize) -> Score {
    Score {
        expected,
        actual: expected,
        root: 1.0,
        completeness: 1.0,
        purity: 1.0,
        state: 1.0,
        impact: 1.0,
        split: 0,
        leaks: 0,
    }
}

async fn replayed(dir: &Path) -> Vec<Value> {
    replayed_bodies(dir, &dir.join("alerts.jsonl")).await
}

/// The scenario's CMDB and changes with other delivered bodies.
async fn replayed_bodies(dir: &Path, bodies: &Path) -> Vec<Value> {
    replayed_summary(dir, bodies).await.0
}

/// [`replayed_bodies`] with the replay's summary (alerts, incidents, pages).
async fn replayed_summary(dir: &Path, bodies: &Path) -> (Vec<Value>, Value) {
    let setup = app::offline_setup(
        None,
        Some(root().join("rules")),
        CmdbChoice::File(dir.join("cmdb.yaml")),
        Some(&dir.join("changes.json")),
    )
    .unwrap();
    let out = app::replay(setup, &[bodies.to_path_buf()]).await.unwrap();
    let incidents = out
        .incidents
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect();
    (incidents, serde_json::to_value(out.summary).unwrap())
}

#[tokio::test]
async fn replay_reproduces_every_scenario() {
    for dir in scenarios() {
        let (got, summary) = replayed_summary(&dir, &dir.join("alerts.jsonl")).await;
        let s = score(&dir, &got);
        assert_eq!(s, perfect(s.expected), "{}: {s:?}", dir.display());
        // One page per cause: with the default settle delay, the incidents
        // merged away before it ended were never announced.
        assert_eq!(
            (summary["pages"].as_u64(), summary["incidents"].as_u64()),
            (Some(s.expected as u64), Some(got.len() as u64)),
            "{}: {summary}",
            dir.display()
        );
        assert_eq!(
            summary["pages"].as_u64().unwrap() + summary["withheld"].as_u64().unwrap(),
            got.len() as u64,
            "{}: every incident was announced or withheld: {summary}",
            dir.display()
        );
        // A root without an alert of its own is marked as inferred, and
        // only such a root.
        let exp: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        for e in exp["incidents"].as_array().unwrap() {
            let first = &e["alert_fingerprints"][0];
            let holder = got
                .iter()
                .find(|i| i["alert_fingerprints"].as_array().unwrap().contains(first))
                .unwrap();
            assert_eq!(
                holder["root_inferred"],
                e["kind"] == "silent-root",
                "{}: {} ({}): {holder}",
                dir.display(),
                e["root_ci"],
                e["kind"]
            );
        }
        // Every incident explains itself: a root cause and an impact.
        for i in got
            .iter()
            .filter(|i| !i["alert_fingerprints"].as_array().unwrap().is_empty())
        {
            assert!(
                i["root_ci"].is_string(),
                "{}: incident without root: {i}",
                dir.display()
            );
            assert!(
                i["assignment_group"].is_string(),
                "{}: unassigned: {i}",
                dir.display()
            );
        }
    }
}

/// (fingerprints, state, root, impacted) per incident holding alerts, sorted.
fn shape(incidents: &[Value]) -> Vec<(BTreeSet<String>, String, String, String)> {
    let mut v: Vec<_> = incidents
        .iter()
        .filter(|i| !i["alert_fingerprints"].as_array().unwrap().is_empty())
        .map(|i| {
            (
                i["alert_fingerprints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .collect(),
                i["state"].as_str().unwrap().to_string(),
                i["root_ci"].to_string(),
                i["impacted_services"].to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn call(r: &axum::Router, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn live_ingest_matches_replay() {
    for dir in scenarios() {
        let want = shape(&replayed(&dir).await);
        let data = tempfile::tempdir().unwrap();
        let cfg = config::validate(
            RawConfig::default(),
            &Overrides {
                data_dir: Some(data.path().to_path_buf()),
                rules_dir: Some(root().join("rules")),
                cmdb: Some(dir.join("cmdb.yaml")),
                ..Overrides::default()
            },
        )
        .unwrap();
        // A recorded storm sent live: its times are kept as recorded, as
        // replay keeps them.
        let mut cfg = cfg;
        cfg.limits.bounds.max_alert_age = std::time::Duration::from_secs(100 * 365 * 86_400);
        let running = app::start(&cfg, Arc::new(SystemClock)).await.unwrap();
        let changes = std::fs::read(dir.join("changes.json")).unwrap();
        let n_changes = serde_json::from_slice::<Vec<Value>>(&changes)
            .unwrap()
            .len();
        if n_changes > 0 {
            let (s, v) = call(&running.router, "POST", "/api/v1/changes", changes).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        for line in std::fs::read_to_string(dir.join("alerts.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let (s, v) = call(
                &running.router,
                "POST",
                "/api/v1/alerts/alertmanager",
                line.as_bytes().to_vec(),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        // The recorded events are months old, so every hold has passed: the
        // engine's next tick (1 s) settles them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let (_, v) = call(
                &running.router,
                "GET",
                "/api/v1/incidents?state=all&limit=10000",
                vec![],
            )
            .await;
            let got = shape(v["incidents"].as_array().unwrap());
            if got == want {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: live ingest differs from replay:\nlive:   {got:?}\nreplay: {want:?}",
                dir.display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        // Every silent root was named by an inference, and counted.
        let exp: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let silent = exp["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "silent-root")
            .count();
        let req = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .unwrap();
        let resp = running.router.clone().oneshot(req).await.unwrap();
        let text = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        let inferred: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("incidentd_root_inferences_total{outcome=\"inferred\"} "))
            .map_or(0.0, |v| v.parse().unwrap());
        assert!(
            inferred >= silent as f64,
            "{}: {silent} silent roots, {inferred} inferences counted",
            dir.display()
        );
        let (s, v) = call(&running.router, "GET", "/api/v1/changes", vec![]).await;
        assert_eq!(
            (s, v["changes"].as_array().map(Vec::len)),
            (StatusCode::OK, Some(n_changes))
        );
        running.shutdown().await;
    }
}

/// The fingerprints of an Alertmanager body.
fn fingerprints(body: &Value) -> HashSet<String> {
    body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["fingerprint"].as_str().unwrap().to_string())
        .collect()
}

/// The same alerts delivered as another Alertmanager would: `split`, one
/// alert per body (`group_by: [...]` fine-grained); `merged`, neighbouring
/// firing bodies in one (coarser grouping); `repeated`, every other firing
/// body sent again (`repeat_interval`, a retry after a timeout); `swapped`,
/// neighbours about different alerts delivered the other way round
/// (groups flushed in another order). Each alert's own bodies keep their
/// order, as Alertmanager keeps it.
fn variant(bodies: &[Value], how: &str) -> Vec<Value> {
    match how {
        "split" => bodies
            .iter()
            .flat_map(|b| {
                b["alerts"].as_array().unwrap().iter().map(|a| {
                    let mut c = b.clone();
                    c["alerts"] = Value::Array(vec![a.clone()]);
                    c["status"] = a["status"].clone();
                    c
                })
            })
            .collect(),
        "merged" => {
            let mut out: Vec<Value> = Vec::new();
            for (i, b) in bodies.iter().enumerate() {
                let joinable = out.last().is_some_and(|last: &Value| {
                    i % 2 == 1
                        && last["status"] == "firing"
                        && b["status"] == "firing"
                        && fingerprints(last).is_disjoint(&fingerprints(b))
                });
                if joinable {
                    let last = out.last_mut().unwrap();
                    let more = b["alerts"].as_array().unwrap().clone();
                    last["alerts"].as_array_mut().unwrap().extend(more);
                } else {
                    out.push(b.clone());
                }
            }
            out
        }
        "repeated" => bodies
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                let again = b["status"] == "firing" && i % 2 == 0;
                std::iter::once(b.clone()).chain(again.then(|| b.clone()))
            })
            .collect(),
        "swapped" => {
            let mut out = bodies.to_vec();
            let mut i = 0;
            while i + 1 < out.len() {
                if fingerprints(&out[i]).is_disjoint(&fingerprints(&out[i + 1])) {
                    out.swap(i, i + 1);
                    i += 2;
                } else {
                    i += 1;
                }
            }
            out
        }
        _ => unreachable!("unknown variant {how}"),
    }
}

/// How Alertmanager is configured to group, repeat and order its
/// notifications must not change the incidents: the same alerts, however
/// delivered, give the same incidents, still scored perfect.
#[tokio::test]
async fn incidents_do_not_depend_on_how_alerts_are_grouped_or_repeated() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in scenarios() {
        let original = shape(&replayed(&dir).await);
        let bodies: Vec<Value> = std::fs::read_to_string(dir.join("alerts.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for how in ["split", "merged", "repeated", "swapped"] {
            let v = variant(&bodies, how);
            assert_ne!(v, bodies, "{how} changed nothing in {}", dir.display());
            let file = tmp.path().join(format!("{how}.jsonl"));
            let text: String = v.iter().map(|b| format!("{b}\n")).collect();
            std::fs::write(&file, text).unwrap();
            let got = replayed_bodies(&dir, &file).await;
            assert_eq!(shape(&got), original, "{} delivered {how}", dir.display());
            let s = score(&dir, &got);
            assert_eq!(
                s,
                perfect(s.expected),
                "{} delivered {how}: {s:?}",
                dir.display()
            );
        }
    }
}
