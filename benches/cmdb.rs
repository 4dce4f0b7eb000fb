//! CMDB scale (issue: "a CMDB of 100k CIs and 300k edges loads in under 2 s
//! and binding plus correlation cost stays under 20 µs per alert").
//!
//! A deterministic generator writes a realistic exchange-format `cmdb.yaml`
//! (`../shared/examples/cmdb.yaml` shape) of exactly 100,000 CIs and 300,000
//! `depends_on` edges, acyclic, to `$INCIDENTD_BENCH_CMDB` or
//! `/tmp/bench/cmdb-100k.yaml` (rewritten on every run; same bytes each time):
//!
//! * 50 business services (10 domains x 5 markets, tiers 1-3, SLA + SLO);
//! * 20,000 hosts, each with a short and a fully qualified hostname;
//! * 10,000 datastores (postgres, mysql, redis, kafka, rabbitmq), `match`
//!   labels `job` + `cluster`, each on 2 or 3 hosts (25,000 edges);
//! * 70,000 application CIs of the 50 services, `match` label `service`,
//!   each depending on 3-5 infrastructure CIs (1-2 datastores + 2-3 hosts;
//!   275,000 edges).
//!
//! Benchmarks (per-alert figures: `Throughput::Elements` = alerts):
//!
//! * `cmdb_load/load_file` — read + YAML parse + validate + build the graph
//!   (`incidentd::cmdb::load_file`); `cmdb_load/parse_yaml_only` and
//!   `cmdb_load/build_only` split it;
//! * `cmdb_bind/{ci_label,match_app,match_datastore,hostname,unbound}` —
//!   `Cmdb::bind` on 1,024 alerts of each binding kind on random CIs;
//! * `cmdb_place/{open,depends_on_root,upstream_of_root,mixed}` — `bind` +
//!   `topology::place` against 200 active incidents spread over the graph
//!   (40 rooted at hosts, 60 at datastores, 100 at applications), 1,024
//!   alerts per iteration: on CIs unrelated to any incident (the alert opens
//!   one; the worst case, every incident's root has to be checked), on
//!   dependents of a root (joins), on dependencies of a root (re-roots), and
//!   a 50/25/25 mix;
//! * `cmdb_engine/{with_cmdb,no_cmdb}` — the whole engine path for new alerts
//!   (events parsed beforehand): an engine holding 200 active incidents on
//!   the CMDB (set up untimed) ingests 400 new alerts in 20 bodies of 20,
//!   `ingest` + `take_batch` per body: 40 % open their own incident, 30 % join
//!   through a dependency on a root, 10 % re-root an incident (upstream of its
//!   root) and 20 % join on the same CI and alert name. `no_cmdb` runs the
//!   same stream on an empty CMDB (every alert unbound) for comparison.
//!
//! Run: `cargo bench --bench cmdb` (a few minutes); `cargo bench --bench cmdb
//! -- none` only writes the YAML file (for timing `incidentd check --cmdb`).

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use incidentd::cmdb::{CiIdx, Cmdb};
use incidentd::correlate::topology::{self, IncidentTopo, Placement};
use incidentd::domain::{IncidentId, LabelSet, Timestamp};
use incidentd::incident::{Engine, EngineConfig};
use incidentd::normalize::{Event, Intake, parse_alertmanager};
use incidentd::rules::RuleSet;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOSTS: usize = 20_000;
const DATASTORES: usize = 10_000;
const APPS: usize = 70_000;
const APP_EDGES: usize = 275_000;
const SERVICES: usize = 50;
const INCIDENTS: usize = 200;
const ALERTS: usize = 1_024;

/// splitmix64: small, deterministic, good enough to spread a graph.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `k` distinct values in `0..n`.
    fn distinct(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let v = self.below(n);
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }
}

const DOMAINS: [&str; 10] = [
    "payments",
    "checkout",
    "catalog",
    "search",
    "accounts",
    "shipping",
    "billing",
    "pricing",
    "inventory",
    "messaging",
];
const MARKETS: [&str; 5] = ["eu", "us", "apac", "latam", "mea"];
const COMPONENTS: [&str; 7] = [
    "api", "worker", "web", "consumer", "gateway", "cron", "grpc",
];
const STORE_KINDS: [(&str, &str); 5] = [
    ("postgres", "database"),
    ("mysql", "database"),
    ("redis", "cache"),
    ("kafka", "queue"),
    ("rabbitmq", "queue"),
];

fn service_id(s: usize) -> String {
    format!("{}-{}", DOMAINS[s % 10], MARKETS[s / 10])
}
fn host_id(h: usize) -> String {
    format!("host-{h:05}")
}
fn host_name(h: usize) -> String {
    format!("node-{h:05}")
}
fn store_id(d: usize) -> String {
    format!("{}-{d:05}", STORE_KINDS[d % 5].0)
}
fn app_service(a: usize) -> usize {
    a % SERVICES
}
fn app_id(a: usize) -> String {
    format!(
        "{}-{}-{a:05}",
        service_id(app_service(a)),
        COMPONENTS[(a / SERVICES) % COMPONENTS.len()]
    )
}

/// Which infrastructure CIs application `a` depends on (datastores, hosts).
struct AppDeps {
    stores: Vec<usize>,
    hosts: Vec<usize>,
}

/// The whole graph, as indexes, so the alert generators know the shape.
struct Shape {
    store_hosts: Vec<Vec<usize>>,
    apps: Vec<AppDeps>,
}

fn shape() -> Shape {
    let mut rng = Rng(0x00c0_ffee_1234_5678);
    let store_hosts: Vec<Vec<usize>> = (0..DATASTORES)
        .map(|d| rng.distinct(2 + d % 2, HOSTS))
        .collect();
    // 3..=5 dependencies each, 275,000 in all: draw, then even out.
    let mut counts: Vec<usize> = (0..APPS).map(|_| 3 + rng.below(3)).collect();
    let mut total: usize = counts.iter().sum();
    let mut i = 0;
    while total != APP_EDGES {
        let c = &mut counts[i % APPS];
        if total > APP_EDGES && *c > 3 {
            *c -= 1;
            total -= 1;
        } else if total < APP_EDGES && *c < 5 {
            *c += 1;
            total += 1;
        }
        i += 7;
    }
    let apps = counts
        .iter()
        .map(|&k| {
            // One or two datastores (two when there are five dependencies or
            // at random), the rest hosts it runs on.
            let n_stores = if k == 5 || (k == 4 && rng.below(2) == 0) {
                2
            } else {
                1
            };
            AppDeps {
                stores: rng.distinct(n_stores, DATASTORES),
                hosts: rng.distinct(k - n_stores, HOSTS),
            }
        })
        .collect();
    Shape { store_hosts, apps }
}

fn generate_yaml(shape: &Shape) -> String {
    let mut y = String::with_capacity(40 << 20);
    y.push_str("# CMDB exchange format v1: generated by benches/cmdb.rs\nversion: 1\nservices:\n");
    for s in 0..SERVICES {
        let id = service_id(s);
        let tier = 1 + s % 3;
        let (resp, resol, objective) = match tier {
            1 => (
                ["15m", "30m", "4h", "1d", "3d"],
                ["4h", "8h", "3d", "10d", "30d"],
                "99.9",
            ),
            _ => (
                ["30m", "1h", "8h", "2d", "5d"],
                ["8h", "1d", "5d", "15d", "30d"],
                "99.5",
            ),
        };
        let _ = write!(
            y,
            "  - id: \"{id}\"\n    name: \"{} ({})\"\n    tier: {tier}\n    owner: \"team-{}\"\n    sla:\n      response:\n",
            DOMAINS[s % 10],
            MARKETS[s / 10].to_uppercase(),
            DOMAINS[s % 10]
        );
        for (p, d) in resp.iter().enumerate() {
            let _ = writeln!(y, "        P{}: \"{d}\"", p + 1);
        }
        y.push_str("      resolution:\n");
        for (p, d) in resol.iter().enumerate() {
            let _ = writeln!(y, "        P{}: \"{d}\"", p + 1);
        }
        let _ = write!(
            y,
            "    slo:\n      - name: \"availability\"\n        objective: {objective}\n        window: \"30d\"\n"
        );
    }
    y.push_str("cis:\n");
    for h in 0..HOSTS {
        let _ = write!(
            y,
            "  - id: \"{}\"\n    class: \"host\"\n    hostnames:\n      - \"{n}\"\n      - \"{n}.prod.example.net\"\n    owner: \"team-platform\"\n    match: {{}}\n    depends_on: []\n",
            host_id(h),
            n = host_name(h)
        );
    }
    for (d, hosts) in shape.store_hosts.iter().enumerate() {
        let (job, class) = STORE_KINDS[d % 5];
        let id = store_id(d);
        let _ = write!(
            y,
            "  - id: \"{id}\"\n    class: \"{class}\"\n    match:\n      job: \"{job}\"\n      cluster: \"{id}\"\n    depends_on:\n"
        );
        for &h in hosts {
            let _ = writeln!(y, "      - \"{}\"", host_id(h));
        }
        y.push_str("    owner: \"team-data\"\n");
    }
    for (a, deps) in shape.apps.iter().enumerate() {
        let id = app_id(a);
        let s = app_service(a);
        let _ = write!(
            y,
            "  - id: \"{id}\"\n    class: \"application\"\n    service: \"{}\"\n    owner: \"team-{}\"\n    match:\n      service: \"{id}\"\n    depends_on:\n",
            service_id(s),
            DOMAINS[s % 10]
        );
        for &d in &deps.stores {
            let _ = writeln!(y, "      - \"{}\"", store_id(d));
        }
        for &h in &deps.hosts {
            let _ = writeln!(y, "      - \"{}\"", host_id(h));
        }
    }
    y
}

fn cmdb_path() -> PathBuf {
    std::env::var_os("INCIDENTD_BENCH_CMDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/bench/cmdb-100k.yaml"))
}

fn write_cmdb(shape: &Shape) -> PathBuf {
    let path = cmdb_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("creating the bench directory");
    }
    let yaml = generate_yaml(shape);
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, &yaml).expect("writing the CMDB");
    std::fs::rename(&tmp, &path).expect("renaming the CMDB");
    path
}

// ---- alerts ----------------------------------------------------------------

/// One CI of the generated graph, by kind and number.
#[derive(Clone, Copy, Debug)]
enum Node {
    Host(usize),
    Store(usize),
    App(usize),
}

impl Node {
    fn id(self) -> String {
        match self {
            Node::Host(h) => host_id(h),
            Node::Store(d) => store_id(d),
            Node::App(a) => app_id(a),
        }
    }
}

/// Labels Prometheus would send for an alert on `node` (bound the usual way
/// for its kind: hostname, job + cluster, service).
fn labels_for(node: Node, alertname: &str, salt: usize) -> Vec<(String, String)> {
    let mut l: Vec<(&str, String)> = vec![
        ("alertname", alertname.to_string()),
        ("env", "prod".into()),
        ("prometheus", "monitoring/k8s".into()),
    ];
    match node {
        Node::Host(h) => {
            l.push(("severity", "critical".into()));
            l.push(("job", "node-exporter".into()));
            l.push((
                "instance",
                format!("{}.prod.example.net:9100", host_name(h)),
            ));
            l.push(("device", format!("/dev/nvme{salt}n1")));
            l.push(("mountpoint", "/var/lib".into()));
        }
        Node::Store(d) => {
            let (job, _) = STORE_KINDS[d % 5];
            l.push(("severity", "critical".into()));
            l.push(("job", job.into()));
            l.push(("cluster", store_id(d)));
            l.push(("instance", format!("{}-0:9187", store_id(d))));
            l.push(("replica", salt.to_string()));
        }
        Node::App(a) => {
            let id = app_id(a);
            l.push(("severity", "warning".into()));
            l.push(("job", "kube-state-metrics".into()));
            l.push(("namespace", service_id(app_service(a))));
            l.push(("service", id.clone()));
            l.push(("pod", format!("{id}-7f9c{salt:04x}")));
            l.push(("container", "main".into()));
            l.push((
                "instance",
                format!("10.{}.{}.{}:8080", a % 200, salt % 250, a % 250),
            ));
        }
    }
    l.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Makes the labels of one alert of a binding kind.
type AlertMaker = Box<dyn Fn(&mut Rng) -> LabelSet>;

fn label_set(pairs: Vec<(String, String)>) -> LabelSet {
    pairs.into_iter().collect()
}

fn random_node(rng: &mut Rng) -> Node {
    match rng.below(10) {
        0..=1 => Node::Host(rng.below(HOSTS)),
        2 => Node::Store(rng.below(DATASTORES)),
        _ => Node::App(rng.below(APPS)),
    }
}

/// The 200 active incidents: roots spread over the graph, each with its root
/// and up to three CIs that depend on it.
struct Incidents {
    roots: Vec<Node>,
    idx_roots: Vec<CiIdx>,
    cis: Vec<Vec<CiIdx>>,
}

fn incidents(cmdb: &Cmdb, rng: &mut Rng) -> Incidents {
    let mut roots = Vec::with_capacity(INCIDENTS);
    for i in 0..INCIDENTS {
        roots.push(match i % 10 {
            0..=1 => Node::Host(rng.below(HOSTS)),
            2..=4 => Node::Store(rng.below(DATASTORES)),
            _ => Node::App(rng.below(APPS)),
        });
    }
    let idx_roots: Vec<CiIdx> = roots
        .iter()
        .map(|n| cmdb.ci_by_id(&n.id()).expect("root CI exists"))
        .collect();
    let cis = idx_roots
        .iter()
        .map(|&r| {
            let mut v = vec![r];
            v.extend(cmdb.dependents(r).iter().take(3));
            v
        })
        .collect();
    Incidents {
        roots,
        idx_roots,
        cis,
    }
}

/// A CI unrelated to every incident (neither up- nor downstream of a root).
fn unrelated(cmdb: &Cmdb, inc: &Incidents, rng: &mut Rng) -> Node {
    loop {
        let n = random_node(rng);
        let c = cmdb.ci_by_id(&n.id()).expect("CI exists");
        if inc
            .idx_roots
            .iter()
            .all(|&r| r != c && !cmdb.is_upstream(r, c) && !cmdb.is_upstream(c, r))
        {
            return n;
        }
    }
}

/// A CI that depends (transitively) on the root of a random incident.
fn dependent_of_root(cmdb: &Cmdb, inc: &Incidents, rng: &mut Rng) -> Option<CiIdx> {
    for _ in 0..100 {
        let i = rng.below(INCIDENTS);
        let down = cmdb.downstream(inc.idx_roots[i]);
        let cands: Vec<CiIdx> = down
            .into_iter()
            .filter(|c| !inc.cis.iter().any(|cs| cs.contains(c)))
            .collect();
        if !cands.is_empty() {
            return Some(cands[rng.below(cands.len())]);
        }
    }
    None
}

/// A CI the root of a random incident depends on.
fn dependency_of_root(cmdb: &Cmdb, inc: &Incidents, rng: &mut Rng) -> Option<CiIdx> {
    for _ in 0..100 {
        let i = rng.below(INCIDENTS);
        let up = cmdb.upstream(inc.idx_roots[i]);
        let cands: Vec<CiIdx> = up
            .into_iter()
            .filter(|c| !inc.cis.iter().any(|cs| cs.contains(c)))
            .collect();
        if !cands.is_empty() {
            return Some(cands[rng.below(cands.len())]);
        }
    }
    None
}

/// Back from a CI index to the generator's node (ids are unambiguous).
fn node_of(cmdb: &Cmdb, c: CiIdx) -> Node {
    let id = &cmdb.ci(c).id;
    let num = |s: &str| s.rsplit('-').next().unwrap().parse::<usize>().unwrap();
    if id.starts_with("host-") {
        Node::Host(num(id))
    } else if STORE_KINDS
        .iter()
        .any(|(k, _)| id.starts_with(&format!("{k}-")))
    {
        Node::Store(num(id))
    } else {
        Node::App(num(id))
    }
}

fn rules() -> Arc<RuleSet> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    Arc::new(RuleSet::load_dir(&dir).unwrap_or_else(|e| panic!("loading rules: {e:?}")))
}

const T0: i64 = 1_795_860_000_000; // 2026-11-22T10:00:00Z

fn ts(ms: i64) -> String {
    Timestamp::from_millis(T0 + ms).to_rfc3339()
}

fn body(alerts: &[(Vec<(String, String)>, i64)]) -> Vec<u8> {
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .map(|(labels, at)| {
            let labels: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::json!({
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "generated by benches/cmdb.rs"},
                "startsAt": ts(*at),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "version": "4",
        "status": "firing",
        "receiver": "incidentd",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": alerts,
    }))
    .expect("json")
}

fn parse(b: &[u8]) -> Vec<Event> {
    parse_alertmanager(b, &Intake::offline(Timestamp::from_millis(T0)))
        .expect("valid body")
        .events
}

/// The engine stream: the 200 preloaded incidents' first alerts (one body
/// each of 20) and the 400 measured alerts (20 bodies of 20).
struct EngineStream {
    preload: Vec<Vec<Event>>,
    measured: Vec<Vec<Event>>,
    alerts: u64,
}

fn engine_stream(cmdb: &Cmdb, inc: &Incidents, rng: &mut Rng) -> EngineStream {
    let alertname = |n: Node| match n {
        Node::Host(_) => "NodeFilesystemAlmostFull",
        Node::Store(d) => match STORE_KINDS[d % 5].0 {
            "postgres" => "PostgresReplicationLag",
            "mysql" => "MySQLSlowQueries",
            "redis" => "RedisMemoryHigh",
            "kafka" => "KafkaUnderReplicatedPartitions",
            _ => "RabbitmqQueueBacklog",
        },
        Node::App(_) => "HighErrorRate",
    };
    let pre: Vec<(Vec<(String, String)>, i64)> = inc
        .roots
        .iter()
        .enumerate()
        .map(|(i, &n)| (labels_for(n, alertname(n), i), (i as i64) * 200))
        .collect();
    let mut measured = Vec::with_capacity(400);
    for j in 0..400usize {
        let at = 60_000 + (j as i64) * 100;
        let node = match j % 10 {
            // 40 %: unrelated, opens its own incident.
            0..=3 => unrelated(cmdb, inc, rng),
            // 30 %: depends on a root: joins.
            4..=6 => node_of(cmdb, dependent_of_root(cmdb, inc, rng).expect("dependent")),
            // 10 %: upstream of a root: re-roots.
            7 => node_of(
                cmdb,
                dependency_of_root(cmdb, inc, rng).expect("dependency"),
            ),
            // 20 %: same CI and alert name as an incident, another series.
            _ => inc.roots[rng.below(INCIDENTS)],
        };
        measured.push((labels_for(node, alertname(node), 1000 + j), at));
    }
    EngineStream {
        preload: pre.chunks(20).map(|c| parse(&body(c))).collect(),
        measured: measured.chunks(20).map(|c| parse(&body(c))).collect(),
        alerts: measured.len() as u64,
    }
}

fn benches(c: &mut Criterion) {
    let started = Instant::now();
    let shape = shape();
    let path = write_cmdb(&shape);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let cmdb = Arc::new(incidentd::cmdb::load_file(&path).unwrap_or_else(|e| {
        panic!("generated CMDB invalid: {:?}", &e[..e.len().min(5)]);
    }));
    assert_eq!(cmdb.len(), HOSTS + DATASTORES + APPS);
    assert_eq!(cmdb.edge_count(), 300_000);
    eprintln!(
        "cmdb: {} ({:.1} MB), {} CIs, {} edges, {} warnings; generated + loaded in {:.2?}",
        path.display(),
        size as f64 / 1e6,
        cmdb.len(),
        cmdb.edge_count(),
        cmdb.warnings().len(),
        started.elapsed()
    );

    // -- load --------------------------------------------------------------
    let mut g = c.benchmark_group("cmdb_load");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    // Dropping the result (freeing ~1M strings) is not timed; `incidentd
    // check` pays it, see BENCHMARKS.md.
    g.bench_function("load_file", |b| {
        b.iter_with_large_drop(|| incidentd::cmdb::load_file(&path).expect("valid"))
    });
    let text = std::fs::read_to_string(&path).expect("read");
    g.bench_function("parse_yaml_only", |b| {
        b.iter_with_large_drop(|| incidentd::cmdb::parse_file("bench", &text).expect("valid"))
    });
    g.bench_function("build_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let file = incidentd::cmdb::parse_file("bench", &text).expect("valid");
                let t = Instant::now();
                let built = Cmdb::build("bench", black_box(file)).expect("valid");
                total += t.elapsed();
                drop(black_box(built));
            }
            total
        })
    });
    g.finish();
    drop(text);

    // -- bind ----------------------------------------------------------------
    let mut rng = Rng(42);
    let kinds: [(&str, AlertMaker); 5] = [
        (
            "ci_label",
            Box::new(|r: &mut Rng| {
                let n = random_node(r);
                let mut l = labels_for(n, "SyntheticCheckFailed", r.below(1000));
                l.push(("ci".into(), n.id()));
                label_set(l)
            }),
        ),
        (
            "match_app",
            Box::new(|r: &mut Rng| {
                label_set(labels_for(
                    Node::App(r.below(APPS)),
                    "HighErrorRate",
                    r.below(1000),
                ))
            }),
        ),
        (
            "match_datastore",
            Box::new(|r: &mut Rng| {
                label_set(labels_for(
                    Node::Store(r.below(DATASTORES)),
                    "PostgresReplicationLag",
                    r.below(1000),
                ))
            }),
        ),
        (
            "hostname",
            Box::new(|r: &mut Rng| {
                label_set(labels_for(
                    Node::Host(r.below(HOSTS)),
                    "NodeDown",
                    r.below(1000),
                ))
            }),
        ),
        (
            "unbound",
            Box::new(|r: &mut Rng| {
                let mut l = labels_for(Node::Host(r.below(HOSTS)), "ProbeFailed", r.below(1000));
                for (k, v) in &mut l {
                    if k == "instance" {
                        *v = format!("https://shop-{}.example.com/health", r.below(1000));
                    }
                    if k == "job" {
                        *v = "blackbox".into();
                    }
                }
                label_set(l)
            }),
        ),
    ];
    let mut g = c.benchmark_group("cmdb_bind");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(ALERTS as u64));
    for (name, make) in &kinds {
        let alerts: Vec<LabelSet> = (0..ALERTS).map(|_| make(&mut rng)).collect();
        let expect = match *name {
            "ci_label" => Some(incidentd::cmdb::BindingHow::CiLabel),
            "hostname" => Some(incidentd::cmdb::BindingHow::Hostname),
            "unbound" => None,
            _ => Some(incidentd::cmdb::BindingHow::Match),
        };
        for a in &alerts {
            assert_eq!(cmdb.bind(a).map(|b| b.how), expect, "{name}: {a:?}");
        }
        g.bench_function(*name, |b| {
            b.iter(|| {
                for a in &alerts {
                    black_box(cmdb.bind(black_box(a)));
                }
            })
        });
    }
    g.finish();

    // -- bind + place ----------------------------------------------------------
    let inc = incidents(&cmdb, &mut rng);
    let now = Timestamp::from_millis(T0 + 120_000);
    let window = EngineConfig::default().correlation_window;
    let topos: Vec<IncidentTopo<'_>> = (0..INCIDENTS)
        .map(|i| IncidentTopo {
            id: IncidentId(i as i64 + 1),
            root: Some(inc.idx_roots[i]),
            cis: &inc.cis[i],
            first: Timestamp::from_millis(T0 + (i as i64) * 200),
            last: Timestamp::from_millis(T0 + (i as i64) * 200 + 30_000),
        })
        .collect();
    let alert_on = |n: Node, salt: usize| label_set(labels_for(n, "HighLatency", salt));
    let open: Vec<LabelSet> = (0..ALERTS)
        .map(|i| alert_on(unrelated(&cmdb, &inc, &mut rng), i))
        .collect();
    let below: Vec<LabelSet> = (0..ALERTS)
        .map(|i| {
            let c = dependent_of_root(&cmdb, &inc, &mut rng).expect("dependent");
            alert_on(node_of(&cmdb, c), i)
        })
        .collect();
    let above: Vec<LabelSet> = (0..ALERTS)
        .map(|i| {
            let c = dependency_of_root(&cmdb, &inc, &mut rng).expect("dependency");
            alert_on(node_of(&cmdb, c), i)
        })
        .collect();
    let mixed: Vec<LabelSet> = (0..ALERTS)
        .map(|i| match i % 4 {
            0 | 1 => open[i].clone(),
            2 => below[i].clone(),
            _ => above[i].clone(),
        })
        .collect();
    let place_one = |labels: &LabelSet| -> Option<Placement> {
        let b = cmdb.bind(labels)?;
        Some(topology::place(
            &cmdb,
            b.ci,
            now,
            window,
            topos.iter().cloned(),
        ))
    };
    // Sanity: the sets do what they say.
    let count = |set: &[LabelSet], f: &dyn Fn(&Placement) -> bool| {
        set.iter()
            .filter(|l| place_one(l).is_some_and(|p| f(&p)))
            .count()
    };
    let opens = count(&open, &|p| *p == Placement::Open);
    let joins = count(&below, &|p| {
        matches!(p, Placement::Join { reroot: false, .. })
    });
    let reroots = count(&above, &|p| {
        matches!(p, Placement::Join { reroot: true, .. })
    });
    eprintln!(
        "place: {INCIDENTS} incidents; open {opens}/{ALERTS} open, depends_on_root {joins}/{ALERTS} join, upstream_of_root {reroots}/{ALERTS} re-root"
    );
    assert_eq!(opens, ALERTS);
    assert_eq!(joins, ALERTS);
    assert_eq!(reroots, ALERTS);
    let mut g = c.benchmark_group("cmdb_place");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(ALERTS as u64));
    for (name, set) in [
        ("open", &open),
        ("depends_on_root", &below),
        ("upstream_of_root", &above),
        ("mixed", &mixed),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for a in set.iter() {
                    black_box(place_one(black_box(a)));
                }
            })
        });
    }
    g.finish();

    // -- engine ----------------------------------------------------------------
    let rules = rules();
    let stream = engine_stream(&cmdb, &inc, &mut rng);
    let engine_now = Timestamp::from_millis(T0 + 120_000);
    let setup_with = |cmdb: &Arc<Cmdb>, cfg: EngineConfig| -> Engine {
        let mut e = Engine::new(cfg, rules.clone());
        e.set_cmdb(cmdb.clone());
        for evs in stream.preload.clone() {
            e.ingest(evs, Timestamp::from_millis(T0 + 50_000));
            e.take_batch();
        }
        e
    };
    let setup = |cmdb: &Arc<Cmdb>| setup_with(cmdb, EngineConfig::default());
    // Root inference off: the engine path as before issue 21, for the cost
    // of inference in one build.
    let no_inference = || EngineConfig {
        infer: incidentd::correlate::topology::InferSettings {
            min_dependents: 0,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    {
        let mut e = setup(&cmdb);
        let before = e.stats.clone();
        let active_before = e.active_incidents().count();
        for evs in stream.measured.clone() {
            e.ingest(evs, engine_now);
            e.take_batch();
        }
        let s = &e.stats;
        eprintln!(
            "engine: {active_before} active incidents before, {} after; measured alerts {}: new {}, incidents opened {}, merged {}, bound {:?}",
            e.active_incidents().count(),
            stream.alerts,
            s.new_alerts - before.new_alerts,
            s.incidents_created - before.incidents_created,
            s.incidents_merged - before.incidents_merged,
            [0, 1, 2, 3].map(|i| s.bound[i] - before.bound[i]),
        );
    }
    let empty = Arc::new(Cmdb::empty());
    let mut g = c.benchmark_group("cmdb_engine");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(stream.alerts));
    for (name, graph, cfg) in [
        ("with_cmdb", &cmdb, EngineConfig::default()),
        ("with_cmdb_no_inference", &cmdb, no_inference()),
        ("no_cmdb", &empty, EngineConfig::default()),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut e = setup_with(graph, cfg.clone());
                    let input = stream.measured.clone();
                    let t = Instant::now();
                    for evs in input {
                        black_box(e.ingest(evs, engine_now));
                        black_box(e.take_batch());
                    }
                    total += t.elapsed();
                    drop(e);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(cmdb, benches);
criterion_main!(cmdb);
