//! Helpers shared by the integration suites that start real servers:
//! free ports, child processes that always die with the test, poll loops
//! with deadlines, and an independent Alertmanager fingerprint.
//!
//! Each test file that needs them says `mod support;`; not every file uses
//! every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod browser;
pub mod contracts;
pub mod daemon;
pub mod drain;
pub mod freshservice;
pub mod pg;
pub mod servicedeskplus;
pub mod servicenow;
pub mod stackstorm;
pub mod teamdynamix;
pub mod tls;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `n` distinct free TCP ports on 127.0.0.1. All listeners are held until
/// every port is chosen, so the ports differ from each other; they are free
/// again when this returns, for the child processes to bind.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// Alertmanager's alert fingerprint, written here from its definition rather
/// than taken from the crate, so the e2e test checks the daemon against an
/// independent implementation: FNV-1a 64 over the label names sorted
/// bytewise, each name and each value followed by the byte 0xFF, `%016x`.
pub fn alertmanager_fingerprint(labels: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(&str, &str)> = labels.to_vec();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, value) in sorted {
        feed(name.as_bytes());
        feed(&[0xff]);
        feed(value.as_bytes());
        feed(&[0xff]);
    }
    format!("{hash:016x}")
}

/// Finds a program: the first of `candidates` that is an existing file
/// (absolute paths as given, bare names looked up on `PATH`).
pub fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    candidates.iter().find_map(|c| {
        let c = Path::new(c);
        if c.is_absolute() {
            c.is_file().then(|| c.to_path_buf())
        } else {
            path_dirs.iter().map(|d| d.join(c)).find(|p| p.is_file())
        }
    })
}

struct Managed {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The child processes a test started. Dropping it kills each of them by its
/// own PID (and reaps it); when the drop happens because the test panicked,
/// it first prints the tail of every child's combined stdout/stderr log.
#[derive(Default)]
pub struct Children {
    procs: Vec<Managed>,
}

impl Children {
    /// Spawns `cmd` with stdin closed and stdout+stderr appended to
    /// `<log_dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log_dir: &Path) {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        self.procs.push(Managed {
            name: name.to_owned(),
            child,
            log,
        });
    }

    /// PID of the named child.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.child.id())
    }

    /// Kill a child by its PID, reap it and stop watching it.
    pub fn forget_killed(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|p| p.name == name) {
            let mut p = self.procs.remove(i);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// Reap a child the test killed on purpose and stop watching it.
    pub fn forget(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|p| p.name == name) {
            let mut p = self.procs.remove(i);
            let _ = p.child.wait();
        }
    }

    /// Panics, naming the process, if any child has already exited: a dead
    /// server is reported at once instead of as a time-out later.
    pub fn assert_alive(&mut self) {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{} (pid {}) exited early: {status}", p.name, p.child.id());
            }
        }
    }

    fn dump_logs(&self) {
        const TAIL: usize = 24 * 1024;
        for p in &self.procs {
            let text = std::fs::read(&p.log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| format!("<cannot read {}: {e}>", p.log.display()));
            let start = text.len().saturating_sub(TAIL);
            let start = (start..text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            eprintln!(
                "----- {} (pid {}) log, last {} bytes -----\n{}\n----- end of {} log -----",
                p.name,
                p.child.id(),
                text.len() - start,
                &text[start..],
                p.name
            );
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for p in &mut self.procs {
            // SIGKILL by this child's PID; an already-exited child is fine.
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if failed {
            self.dump_logs();
        }
    }
}

/// Calls `probe` every `every` until it returns `Ok`, checking meanwhile that
/// the children are alive. Panics after `timeout` with `what` and the last
/// `Err` the probe gave, so a failure says what was seen, not only "timeout".
pub async fn poll_until<T>(
    what: &str,
    timeout: Duration,
    children: &mut Children,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let every = Duration::from_millis(200);
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        children.assert_alive();
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!(
                "timed out after {:.1}s waiting for {what}; last seen: {last}",
                start.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `probe` until it answers `Ok`; fails the test with the last
/// answer after `within`.
pub async fn wait_ok<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `found` until it gives a value; fails the test after `secs`.
pub async fn eventually<T>(what: &str, secs: u64, mut found: impl AsyncFnMut() -> Option<T>) -> T {
    wait_ok(what, Duration::from_secs(secs), async || {
        found().await.ok_or_else(|| "nothing yet".to_string())
    })
    .await
}

/// Polls `done` until it is true; fails the test after `within`.
pub async fn wait_until(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    wait_ok(what, within, async || {
        if done().await {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
}

/// One firing Alertmanager alert with `labels`, posted over HTTP to the
/// daemon at `base`, which must accept it; its answer.
pub async fn post_alert(base: &str, labels: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({"version": "4", "alerts": [
        {"status": "firing", "labels": labels, "startsAt": "2026-03-02T08:00:00Z"}]});
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/alerts/alertmanager"))
        .json(&body)
        .send()
        .await
        .expect("post alert");
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.expect("json answer")
}

/// GET `url` and return (status, body); any transport error becomes `Err`.
pub async fn get_text(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("GET {url}: reading body: {e}"))?;
    Ok((status, body))
}

/// GET `url`, require 200, parse the body as JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    let (status, body) = get_text(client, url).await?;
    if status != 200 {
        return Err(format!("GET {url}: HTTP {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url}: bad JSON ({e}): {body}"))
}

/// GET `url` until it answers 200.
pub async fn wait_http_ok(
    what: &str,
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    children: &mut Children,
) {
    poll_until(what, timeout, children, async || {
        match get_text(client, url).await? {
            (200, _) => Ok(()),
            (s, body) => Err(format!("HTTP {s}: {body}")),
        }
    })
    .await
}

/// Creates topic `name` with `partitions` partitions (replication 1) on
/// the brokers, which must accept it.
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("admin client");
    let res = admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                name,
                partitions,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics request");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// A consumer group's position on a topic: the sum over its partitions of
/// the committed offsets and of the high watermarks (`None` if the broker
/// does not answer). Lag is their difference.
pub fn kafka_group_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Option<(i64, i64)> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let list = c.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
    let (mut committed, mut high) = (0, 0);
    for p in 0..partitions {
        high += c.fetch_watermarks(topic, p, Duration::from_secs(5)).ok()?.1;
        if let Some(Offset::Offset(o)) = list.find_partition(topic, p).map(|e| e.offset()) {
            committed += o;
        }
    }
    Some((committed, high))
}

/// Messages the group has not committed yet (`i64::MAX` if unknown).
pub fn kafka_group_lag(brokers: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    kafka_group_offsets(brokers, group, topic, partitions).map_or(i64::MAX, |(c, h)| h - c)
}

/// The pipeline in this process on the wall clock (suites that drive the
/// router directly, without a listener).
pub async fn start(c: &incidentd::config::Config) -> incidentd::app::Running {
    start_on(c, std::sync::Arc::new(incidentd::domain::SystemClock)).await
}

/// The same on a clock the test chooses (a `ManualClock` it moves).
pub async fn start_on(
    c: &incidentd::config::Config,
    clock: std::sync::Arc<dyn incidentd::domain::Clock>,
) -> incidentd::app::Running {
    incidentd::app::start(c, clock)
        .await
        .expect("the pipeline starts")
}

/// A JSON request to the in-process router: the status and the JSON
/// answer (`null` when there is none).
pub async fn call(
    r: &incidentd::app::Running,
    method: &str,
    uri: &str,
    body: serde_json::Value,
) -> (axum::http::StatusCode, serde_json::Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, bytes) = oneshot(&r.router, method, uri, &[], body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// `POST /api/v1/incidents/{id}/{action}` without a body (ack, resolve,
/// resume), which must succeed.
pub async fn act(r: &incidentd::app::Running, id: i64, action: &str) {
    let (status, body) = call(
        r,
        "POST",
        &format!("/api/v1/incidents/{id}/{action}"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, axum::http::StatusCode::OK, "{action} #{id}: {body}");
}

/// One request to an in-process router (no socket): the status and the
/// body. `headers` are added as given; a body is sent as JSON.
pub async fn oneshot(
    router: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (axum::http::StatusCode, Vec<u8>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if !body.is_empty() {
        req = req.header(axum::http::header::CONTENT_TYPE, "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(axum::body::Body::from(body)).expect("request");
    let resp = router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes.to_vec())
}

/// A daemon config from `toml` (written to `dir/incidentd.toml`): data
/// under `dir/data`, the repository's rules, incidents resolving as soon as
/// their alerts do.
pub fn config_in(dir: &Path, toml: &str) -> incidentd::config::Config {
    let file = dir.join("incidentd.toml");
    std::fs::write(&file, toml).expect("write config");
    let mut c = incidentd::config::load(
        Some(&file),
        &incidentd::config::Overrides {
            data_dir: Some(dir.join("data")),
            rules_dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")),
            ..incidentd::config::Overrides::default()
        },
    )
    .expect("config is valid");
    c.engine.auto_resolve_hold = Duration::ZERO;
    announce_at_once(&mut c);
    c
}

/// Destinations hear of new incidents at once: the suites about delivery
/// (retries, order, contracts) are not about the settle delay, which has
/// tests of its own (`tests/settle.rs`, the engine's unit tests).
pub fn announce_at_once(c: &mut incidentd::config::Config) {
    use incidentd::domain::outbox::{Destination, Settle};
    c.engine.settle = Settle::default();
    c.engine.outbound = c
        .engine
        .outbound
        .iter()
        .map(|d| Destination {
            settle: Settle::default(),
            ..d.clone()
        })
        .collect();
}

/// A CMDB where one database carries 40 business services (each an
/// application depending on it): the widest outage a destination meets
/// (alerts with `job="postgres"` bind to it).
pub fn wide_cmdb(dir: &Path) -> PathBuf {
    let mut y = String::from("version: 1\nservices:\n");
    for i in 0..40 {
        y.push_str(&format!(
            "  - {{ id: business-service-number-{i:02}-of-the-catalog, tier: 1 }}\n"
        ));
    }
    y.push_str("cis:\n  - { id: main-db, class: database, match: { job: postgres } }\n");
    for i in 0..40 {
        y.push_str(&format!(
            "  - {{ id: app-{i:02}, class: application, service: business-service-number-{i:02}-of-the-catalog, depends_on: [main-db] }}\n"
        ));
    }
    let file = dir.join("cmdb.yaml");
    std::fs::write(&file, y).expect("write cmdb");
    file
}

/// Serve `app` (a fake of some API) on a free 127.0.0.1 port for the rest
/// of the test; its `http://` base URL.
pub async fn serve(app: axum::Router, what: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    });
    url
}

/// Post one firing alert `name` on `instance` (started at a fixed time) to
/// the daemon's router; the id of the incident whose title names it.
pub async fn open_incident(
    r: &incidentd::app::Running,
    name: &str,
    instance: &str,
    severity: &str,
) -> i64 {
    let (s, v) = call(
        r,
        "POST",
        "/api/v1/alerts",
        serde_json::json!([{"labels": {"alertname": name, "instance": instance, "severity": severity},
                "status": "firing", "startsAt": "2026-11-30T10:00:00Z"}]),
    )
    .await;
    assert_eq!(s, axum::http::StatusCode::OK, "{v}");
    let (_, list) = call(
        r,
        "GET",
        "/api/v1/incidents?state=all",
        serde_json::Value::Null,
    )
    .await;
    list["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .find(|i| i["title"].as_str().is_some_and(|t| t.contains(name)))
        .and_then(|i| i["id"].as_i64())
        .unwrap_or_else(|| panic!("no incident for {name}: {list}"))
}

/// The widest outage a destination meets, on a daemon started with
/// [`wide_cmdb`]: the database alert with a 2,000-character summary
/// (line breaks and the characters chat formats treat specially),
/// acknowledged and resolved, every message delivered or refused. Its
/// incident (as the API shows it).
pub async fn wide_outage(r: &incidentd::app::Running) -> serde_json::Value {
    let long: String = "Primary <db> & replicas > lag;\n"
        .chars()
        .cycle()
        .take(2_000)
        .collect();
    let (s, v) = call(
        r,
        "POST",
        "/api/v1/alerts",
        serde_json::json!([{"labels": {"alertname": "PostgresDown", "job": "postgres", "severity": "critical"},
                "annotations": {"summary": long, "runbook_url": "https://runbooks.example.com/pg"},
                "status": "firing", "startsAt": "2026-11-30T10:00:00Z"}]),
    )
    .await;
    assert_eq!(s, axum::http::StatusCode::OK, "{v}");
    let (_, list) = call(r, "GET", "/api/v1/incidents", serde_json::Value::Null).await;
    let inc = &list["incidents"][0];
    assert_eq!(
        inc["impacted_services"].as_array().map(Vec::len),
        Some(40),
        "{inc}"
    );
    let id = inc["id"].as_i64().expect("id");
    act(r, id, "ack").await;
    act(r, id, "resolve").await;
    drain::outbox_drained(&*r.store).await;
    let (_, d) = call(
        r,
        "GET",
        &format!("/api/v1/incidents/{id}"),
        serde_json::Value::Null,
    )
    .await;
    assert!(
        !d["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["kind"] == "outbound_failed"),
        "a destination refused part of the outage: {d}"
    );
    d
}

/// Deliveries the alerts of incident `id` received, repeats included (the
/// incident's `alert_count` counts distinct alerts).
pub async fn deliveries(r: &incidentd::app::Running, id: incidentd::domain::IncidentId) -> u64 {
    r.store
        .incident_alerts(id, incidentd::store::Page::ALL)
        .await
        .expect("store readable")
        .iter()
        .map(|a| a.deliveries)
        .sum()
}
