//! Several instances on one topic with PostgreSQL, as in production: the
//! mock Kafka cluster runs in a process of its own (`incidentd-kafka-mock`),
//! each incidentd is a real process, and we SIGKILL one mid-stream or stop
//! PostgreSQL mid-stream. At the end every fingerprint is in exactly one
//! incident, no incident is doubled, no alert is lost and the group has no
//! lag. With an outbound destination, the shared outbox follows partition
//! ownership: each update reaches PagerDuty once, from one instance.
//!
//! Needs `INCIDENTD_TEST_POSTGRES_URL`; the PostgreSQL outage test also needs
//! `INCIDENTD_TEST_POSTGRES_CTL` (a command that takes `stop` / `start`,
//! e.g. `pg_ctlcluster --skip-systemctl-redirect 15 main`), since it stops
//! the server. `.ci/run` sets both.

mod support;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Row;
use std::io::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::Children;
use support::daemon::TestDaemon;
use support::pg::ScratchDb;

const TOPIC: &str = "alerts";
const GROUP: &str = "incidentd-cluster-test";
const PARTITIONS: i32 = 6;
const FINGERPRINTS: u32 = 5_000;
/// Fingerprints per correlation key (one incident each).
const PER_KEY: u32 = 5;
const ROUNDS: u32 = 10;

/// One suite at a time: the outage test stops the shared server.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pg_url() -> Option<String> {
    let v = std::env::var("INCIDENTD_TEST_POSTGRES_URL").ok();
    if v.is_none() {
        // Straight to stderr: libtest captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the multi-instance Kafka + PostgreSQL tests need INCIDENTD_TEST_POSTGRES_URL (set by .ci/run)"
        );
    }
    v
}

struct Mock {
    child: Child,
    bootstrap: String,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mock() -> Mock {
    let mut child = Command::new(env!("CARGO_BIN_EXE_incidentd-kafka-mock"))
        .args([
            "--brokers",
            "1",
            "--topic",
            &format!("{TOPIC}:{PARTITIONS}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("mock cluster starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("mock prints its address");
    let bootstrap = line
        .trim()
        .strip_prefix("bootstrap=")
        .unwrap_or_else(|| panic!("unexpected mock output {line:?}"))
        .to_string();
    Mock { child, bootstrap }
}

/// What every cluster test runs on: a mock Kafka cluster, a scratch
/// database and a directory for the instances' files.
struct Site {
    mock: Mock,
    db: String,
    dir: tempfile::TempDir,
    _scratch: ScratchDb,
}

impl Site {
    async fn new(admin_url: &str, db_prefix: &str) -> Site {
        let mock = start_mock();
        let scratch = ScratchDb::create(admin_url, db_prefix).await;
        Site {
            mock,
            db: scratch.url.clone(),
            dir: tempfile::tempdir().expect("tempdir"),
            _scratch: scratch,
        }
    }

    /// Starts `members` and waits until each is ready.
    async fn start(&self, children: &mut Children, members: &[Member<'_>]) {
        start_members(
            children,
            self.dir.path(),
            &self.mock.bootstrap,
            &self.db,
            members,
        )
        .await;
    }
}

fn spawn_instance(
    children: &mut Children,
    name: &str,
    dir: &Path,
    bootstrap: &str,
    db: &str,
    port: u16,
) {
    spawn_instance_with(children, name, dir, bootstrap, db, port, "");
}

/// An instance whose configuration ends with `extra` (TOML).
fn spawn_instance_with(
    children: &mut Children,
    name: &str,
    dir: &Path,
    bootstrap: &str,
    db: &str,
    port: u16,
    extra: &str,
) {
    let config = format!(
        r#"
[store]
url = "{db}"
[kafka]
brokers = "{bootstrap}"
group_id = "{GROUP}"
batch_wait = "5ms"
[[kafka.topics]]
name = "{TOPIC}"
[kafka.librdkafka]
"session.timeout.ms" = "6000"
"statistics.interval.ms" = "1000"

{extra}
"#
    );
    let (cmd, _) = TestDaemon::new(&dir.join(name), dir)
        .name(name)
        .config(&config)
        .port(port)
        .env("RUST_LOG", "incidentd=info")
        .command();
    children.spawn(name, cmd, dir);
}

/// A cluster member: its name and configuration tail (TOML, may be empty).
struct Member<'a> {
    name: String,
    port: u16,
    extra: &'a str,
}

/// Start the members and wait until each is ready.
async fn start_members(
    children: &mut Children,
    dir: &Path,
    bootstrap: &str,
    db: &str,
    members: &[Member<'_>],
) {
    for m in members {
        spawn_instance_with(children, &m.name, dir, bootstrap, db, m.port, m.extra);
    }
    let client = reqwest::Client::new();
    for m in members {
        support::wait_http_ok(
            &format!("{} ready", m.name),
            &client,
            &format!("http://127.0.0.1:{}/readyz", m.port),
            Duration::from_secs(60),
            children,
        )
        .await;
    }
}

/// Members named `{prefix}0…` on `ports`, all with the same `extra`.
fn members<'a>(prefix: &str, ports: &[u16], extra: &'a str) -> Vec<Member<'a>> {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| Member {
            name: format!("{prefix}{i}"),
            port: *port,
            extra,
        })
        .collect()
}

fn alert(fp: u32) -> (String, String) {
    let key = fp / PER_KEY;
    let name = format!("ClusterLoad{}", key % 7);
    let value = format!(
        r#"{{"labels":{{"alertname":"{name}","instance":"kc-{key}:9100","path":"/p{}","severity":"warning"}},"startsAt":"2026-11-22T03:00:00Z"}}"#,
        fp % PER_KEY
    );
    (format!("{name}|host:kc-{key}"), value)
}

/// Produce rounds `from..to` (every fingerprint once per round).
async fn produce_rounds(p: &FutureProducer, from: u32, to: u32) {
    for _round in from..to {
        let mut pending = Vec::with_capacity(FINGERPRINTS as usize);
        for fp in 0..FINGERPRINTS {
            let (key, value) = alert(fp);
            loop {
                match p.send_result(FutureRecord::to(TOPIC).key(&key).payload(&value)) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    // Local queue full: let deliveries drain.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        for f in pending {
            f.await
                .expect("delivery future")
                .expect("broker acknowledges");
        }
    }
}

/// What a user checks at the end: lag zero, every fingerprint in exactly
/// one incident, one incident per key, nothing lost.
async fn assert_exactly_once(bootstrap: &str, db: &str, children: &mut Children) {
    let bootstrap = bootstrap.to_string();
    support::poll_until(
        "consumer group lag 0",
        Duration::from_secs(180),
        children,
        async || {
            let b = bootstrap.clone();
            let lag = tokio::task::spawn_blocking(move || {
                support::kafka_group_lag(&b, GROUP, TOPIC, PARTITIONS)
            })
            .await
            .unwrap();
            if lag == 0 {
                Ok(())
            } else {
                Err(format!("lag {lag}"))
            }
        },
    )
    .await;
    let pool = sqlx::PgPool::connect(db).await.expect("test database");
    let one = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql)
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<i64, _>(0)
        }
    };
    assert_eq!(
        one("SELECT COUNT(*) FROM alerts").await,
        i64::from(FINGERPRINTS),
        "every fingerprint stored"
    );
    assert_eq!(
        one("SELECT COUNT(DISTINCT fingerprint) FROM incident_alerts").await,
        i64::from(FINGERPRINTS),
        "every fingerprint in an incident"
    );
    assert_eq!(
        one("SELECT COUNT(*) FROM (SELECT fingerprint FROM incident_alerts GROUP BY fingerprint HAVING COUNT(*) > 1) d").await,
        0,
        "no fingerprint in two incidents"
    );
    assert_eq!(
        one("SELECT COUNT(*) FROM incidents").await,
        i64::from(FINGERPRINTS / PER_KEY),
        "one incident per correlation key, none doubled"
    );
    assert_eq!(
        one("SELECT COUNT(*) FROM incidents WHERE state <> 'resolved'").await,
        i64::from(FINGERPRINTS / PER_KEY)
    );
    assert_eq!(
        one("SELECT COUNT(*) FROM alerts WHERE status <> 'firing' OR incident_id IS NULL").await,
        0,
        "every alert firing and linked"
    );
    assert_eq!(
        one("SELECT COUNT(*) FROM (SELECT incident_id FROM incident_alerts GROUP BY incident_id HAVING COUNT(*) <> 5) d").await,
        0,
        "each incident holds its key's 5 fingerprints"
    );
    pool.close().await;
}

fn kill9(children: &mut Children, name: &str) {
    let pid = children.pid(name).expect("instance running");
    support::daemon::signal(pid, "9");
    children.forget(name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_rebalance_lose_and_double_nothing() {
    let _serial = SERIAL.lock().await;
    let Some(url) = pg_url() else { return };
    let site = Site::new(&url, "incidentd_kc").await;
    let (mock, db, dir) = (&site.mock, &site.db, &site.dir);
    let mut children = Children::default();
    let ports = support::free_ports(4);
    site.start(&mut children, &members("i", &ports[..3], ""))
        .await;
    let client = reqwest::Client::new();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &mock.bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let started = Instant::now();
    produce_rounds(&producer, 0, 4).await;
    // Mid-stream: one instance dies without leaving the group; another
    // joins. Its partitions move once the session times out.
    kill9(&mut children, "i0");
    spawn_instance(
        &mut children,
        "i3",
        dir.path(),
        &mock.bootstrap,
        db,
        ports[3],
    );
    produce_rounds(&producer, 4, ROUNDS).await;
    assert_exactly_once(&mock.bootstrap, db, &mut children).await;
    println!(
        "50,000 alerts through 3 instances with a SIGKILL: settled in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // The instances that lived say who owns what.
    let mut owned = 0.0;
    for port in &ports[1..] {
        let (_, text) = support::get_text(&client, &format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap();
        owned += text
            .lines()
            .find_map(|l| l.strip_prefix("incidentd_shards_owned "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert_eq!(
        owned,
        f64::from(PARTITIONS),
        "every partition owned by a live instance"
    );
    acks_reach_the_owner(&client, db, ports[1], ports[2]).await;
    children.assert_alive();
}

/// An on-call engineer acknowledges and resolves through whichever instance
/// the load balancer picked: one incident per partition, so most belong to
/// another instance, which applies the forwarded command.
async fn acks_reach_the_owner(client: &reqwest::Client, db: &str, ack_via: u16, resolve_via: u16) {
    let pool = sqlx::PgPool::connect(db).await.expect("test database");
    let picked: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT DISTINCT ON (shard) id, shard FROM incidents WHERE state = 'open' ORDER BY shard, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(
        picked.len(),
        PARTITIONS as usize,
        "an open incident per partition"
    );
    let action_with = async |port: u16, id: i64, what: &str, body: serde_json::Value| {
        let resp = client
            .post(format!(
                "http://127.0.0.1:{port}/api/v1/incidents/{id}/{what}"
            ))
            .json(&body)
            .send()
            .await
            .expect("instance answers");
        let status = resp.status().as_u16();
        (
            status,
            resp.json::<serde_json::Value>().await.unwrap_or_default(),
        )
    };
    let action = async |port: u16, id: i64, what: &str| {
        action_with(port, id, what, serde_json::json!({ "by": "alice" })).await
    };
    for (id, shard) in &picked {
        let (status, body) = action(ack_via, *id, "ack").await;
        assert_eq!(status, 200, "ack of incident {id} (shard {shard}): {body}");
        assert_eq!(body["state"], "acknowledged", "{body}");
        assert_eq!(body["acknowledged_by"], "alice", "{body}");
        let (status, body) = action(ack_via, *id, "ack").await;
        assert_eq!(status, 409, "a second ack is refused: {body}");
        // On hold and back, each through either instance.
        let (status, body) = action_with(
            ack_via,
            *id,
            "hold",
            serde_json::json!({ "by": "alice", "reason": "awaiting_vendor" }),
        )
        .await;
        assert_eq!(status, 200, "hold of incident {id} (shard {shard}): {body}");
        assert_eq!(body["holds"][0]["reason"], "awaiting_vendor", "{body}");
        let (status, body) = action(resolve_via, *id, "resume").await;
        assert_eq!(
            status, 200,
            "resume of incident {id} (shard {shard}): {body}"
        );
        assert!(body["holds"][0]["end"].is_string(), "{body}");
        let (status, body) = action(resolve_via, *id, "resolve").await;
        assert_eq!(
            status, 200,
            "resolve of incident {id} (shard {shard}): {body}"
        );
        assert_eq!(body["state"], "resolved", "{body}");
    }
    // Some of those were another instance's: they went as commands.
    let (_, text) = support::get_text(client, &format!("http://127.0.0.1:{ack_via}/metrics"))
        .await
        .unwrap();
    let forwarded = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"incidentd_kafka_published_total{outcome="success"} "#))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(forwarded >= 1.0, "no command was forwarded:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_pauses_and_recovers_without_loss() {
    let _serial = SERIAL.lock().await;
    let Some(url) = pg_url() else { return };
    let Ok(ctl) = std::env::var("INCIDENTD_TEST_POSTGRES_CTL") else {
        // Straight to stderr: libtest captures eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the PostgreSQL outage test needs INCIDENTD_TEST_POSTGRES_CTL (a command taking stop/start; set by .ci/run)"
        );
        return;
    };
    let pg = |action: &str| {
        let status = Command::new("sh")
            .args(["-c", &format!("{ctl} {action}")])
            .status()
            .expect("postgres control command runs");
        assert!(status.success(), "{ctl} {action} failed");
    };
    let site = Site::new(&url, "incidentd_kc").await;
    let (mock, db) = (&site.mock, &site.db);
    let mut children = Children::default();
    let ports = support::free_ports(3);
    site.start(&mut children, &members("p", &ports, "")).await;
    let client = reqwest::Client::new();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &mock.bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    produce_rounds(&producer, 0, 5).await;
    pg("stop");
    // Down: the daemons report not ready and stop acknowledging offsets.
    let ready_url = format!("http://127.0.0.1:{}/readyz", ports[0]);
    let outage = async {
        support::poll_until(
            "readyz 503 while PostgreSQL is down",
            Duration::from_secs(30),
            &mut children,
            async || match support::get_text(&client, &ready_url).await? {
                (503, body) => Ok(body),
                (s, body) => Err(format!("HTTP {s}: {body}")),
            },
        )
        .await
    };
    let produced_meanwhile = produce_rounds(&producer, 5, ROUNDS);
    let (body, ()) = tokio::join!(outage, produced_meanwhile);
    assert!(body.contains("\"store\":\"failing\""), "{body}");
    let lag_down = tokio::task::spawn_blocking({
        let b = mock.bootstrap.clone();
        move || support::kafka_group_lag(&b, GROUP, TOPIC, PARTITIONS)
    })
    .await
    .unwrap();
    assert!(
        lag_down > 0,
        "offsets must not advance while the store is down"
    );
    pg("start");
    assert_exactly_once(&mock.bootstrap, db, &mut children).await;
    for port in &ports {
        support::wait_http_ok(
            "ready again",
            &client,
            &format!("http://127.0.0.1:{port}/readyz"),
            Duration::from_secs(60),
            &mut children,
        )
        .await;
    }
}

/// What the fake PagerDuty saw of one incident (`dedup_key`).
#[derive(Default)]
struct PdLog {
    /// `event_action`s in arrival order.
    actions: std::collections::BTreeMap<String, Vec<String>>,
    /// Requests per key being answered right now.
    in_flight: std::collections::HashMap<String, u32>,
    /// A request arrived while another about the same incident was still
    /// being answered: two instances delivered one incident at once.
    overlaps: Vec<String>,
    total: usize,
    /// Answer in 6 s instead of 20 ms.
    slow: bool,
    /// Events PagerDuty's contract refuses (must stay empty).
    refused: Vec<String>,
}

/// PagerDuty's Events API on 127.0.0.1, answering 202 after 20 ms, or
/// after 6 s while `slow` (so deliveries are in flight when partitions
/// move).
async fn fake_pagerduty() -> (String, std::sync::Arc<std::sync::Mutex<PdLog>>) {
    let log = std::sync::Arc::new(std::sync::Mutex::new(PdLog::default()));
    let l = log.clone();
    let app = axum::Router::new().route(
        "/v2/enqueue",
        axum::routing::post(move |headers: axum::http::HeaderMap, raw: axum::body::Bytes| {
            let l = l.clone();
            async move {
                if let Err((status, why)) = support::contracts::pagerduty_event(&headers, &raw) {
                    l.lock().unwrap().refused.push(why.to_string());
                    return (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        axum::Json(why),
                    );
                }
                let body: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
                let key = body["dedup_key"].as_str().unwrap_or_default().to_string();
                let action = body["event_action"].as_str().unwrap_or_default().to_string();
                let delay = {
                    let mut g = l.lock().unwrap();
                    g.total += 1;
                    g.actions.entry(key.clone()).or_default().push(action);
                    let n = g.in_flight.entry(key.clone()).or_insert(0);
                    *n += 1;
                    if *n > 1 {
                        g.overlaps.push(key.clone());
                    }
                    if g.slow {
                        Duration::from_secs(6)
                    } else {
                        Duration::from_millis(20)
                    }
                };
                tokio::time::sleep(delay).await;
                *l.lock().unwrap().in_flight.get_mut(&key).unwrap() -= 1;
                (
                    axum::http::StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({"status": "success", "message": "Event processed", "dedup_key": key})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, log)
}

/// Several instances share one outbox: each delivers the incidents of the
/// partitions it owns, a partition changes hands (an instance joins) while
/// deliveries are in flight, and ServiceNow's webhook and the API resolve
/// incidents through instances that do not own them. PagerDuty hears of
/// every incident exactly once opened and once resolved, in that order,
/// and never from two instances at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_follows_partition_ownership() {
    const INCIDENTS: u32 = 60;
    let _serial = SERIAL.lock().await;
    let Some(url) = pg_url() else { return };
    let site = Site::new(&url, "incidentd_kob").await;
    let (mock, db, dir) = (&site.mock, &site.db, &site.dir);
    let (pd_url, pd) = fake_pagerduty().await;
    let extra = format!(
        r#"
[[outbound.destinations]]
name = "pd"
kind = "pagerduty"
url = "{pd_url}"
routing_key = "R0UTINGKEYR0UTINGKEYR0UTINGKEY00"
rate_limit = 500.0
burst = 100

[[outbound.destinations]]
name = "snow"
kind = "servicenow"
url = "http://127.0.0.1:9"
user = "incidentd"
password = "unused"
rules_only = true
inbound_token = "sn-t0ken"
"#
    );
    let mut children = Children::default();
    let ports = support::free_ports(3);
    site.start(&mut children, &members("i", &ports[..2], &extra))
        .await;
    let client = reqwest::Client::new();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &mock.bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    for k in 0..INCIDENTS {
        let name = "OutboundLoad";
        let value = format!(
            r#"{{"labels":{{"alertname":"{name}","instance":"ob-{k}:9100","severity":"critical"}},"startsAt":"2026-11-22T03:00:00Z"}}"#
        );
        producer
            .send(
                FutureRecord::to(TOPIC)
                    .key(&format!("{name}|host:ob-{k}"))
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .expect("broker acknowledges");
    }
    // Partitions move while both instances are in the middle of a call.
    support::poll_until(
        "the first triggers",
        Duration::from_secs(60),
        &mut children,
        async || {
            let n = pd.lock().unwrap().total;
            if n >= 4 {
                Ok(())
            } else {
                Err(format!("{n} calls"))
            }
        },
    )
    .await;
    pd.lock().unwrap().slow = true;
    support::poll_until(
        "a slow call in flight from each instance",
        Duration::from_secs(60),
        &mut children,
        async || {
            let n: u32 = pd.lock().unwrap().in_flight.values().sum();
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{n} in flight"))
            }
        },
    )
    .await;
    start_members(
        &mut children,
        dir.path(),
        &mock.bootstrap,
        db,
        &[Member {
            name: "i2".into(),
            port: ports[2],
            extra: &extra,
        }],
    )
    .await;
    support::poll_until(
        "the third instance owning partitions",
        Duration::from_secs(60),
        &mut children,
        async || {
            let (_, text) =
                support::get_text(&client, &format!("http://127.0.0.1:{}/metrics", ports[2]))
                    .await?;
            let owned = text
                .lines()
                .find_map(|l| l.strip_prefix("incidentd_shards_owned "))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if owned > 0.0 {
                Ok(())
            } else {
                Err("no partition yet".to_string())
            }
        },
    )
    .await;
    pd.lock().unwrap().slow = false;
    support::poll_until(
        "every incident triggered",
        Duration::from_secs(120),
        &mut children,
        async || {
            let g = pd.lock().unwrap();
            if g.actions.len() as u32 >= INCIDENTS && g.in_flight.values().all(|n| *n == 0) {
                Ok(())
            } else {
                Err(format!("{} of {INCIDENTS} incidents", g.actions.len()))
            }
        },
    )
    .await;
    // Every instance delivered some: the outbox followed the partitions.
    let mut senders = 0;
    for port in &ports {
        let (_, text) = support::get_text(&client, &format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap();
        let sent: f64 = text
            .lines()
            .filter(|l| l.starts_with(r#"incidentd_outbound_requests_total{destination="pd""#))
            .filter(|l| l.contains(r#"outcome="success""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        senders += usize::from(sent > 0.0);
    }
    assert!(senders >= 2, "only {senders} instance(s) delivered");

    // Resolve: half through the API of i0, half through ServiceNow's
    // webhook to i1; most incidents belong to another instance.
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM incidents ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(ids.len(), INCIDENTS as usize);
    for (n, id) in ids.iter().enumerate() {
        let resp = if n % 2 == 0 {
            client
                .post(format!("http://127.0.0.1:{}/api/v1/incidents/{id}/resolve", ports[0]))
                .json(&serde_json::json!({"by": "alice"}))
                .send()
                .await
        } else {
            client
                .post(format!("http://127.0.0.1:{}/api/v1/webhooks/snow", ports[1]))
                .bearer_auth("sn-t0ken")
                .json(&serde_json::json!({"correlation_id": format!("incidentd-{id}"), "state": "6", "sys_updated_by": "bob"}))
                .send()
                .await
        }
        .expect("instance answers");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert!(
            status == 200 || status == 202,
            "resolve of {id}: {status} {body}"
        );
        if n % 2 == 1 {
            assert_eq!(body["action"], "resolved", "{body}");
        }
    }
    support::poll_until(
        "every incident resolved downstream",
        Duration::from_secs(120),
        &mut children,
        async || {
            let g = pd.lock().unwrap();
            let done = g
                .actions
                .values()
                .filter(|a| a.iter().any(|x| x == "resolve"))
                .count();
            if done as u32 >= INCIDENTS {
                Ok(())
            } else {
                Err(format!("{done} of {INCIDENTS} resolved"))
            }
        },
    )
    .await;
    // Nothing late trickles in: every instance's outbox is drained.
    support::drain::pg_outbox_drained(db).await;
    let g = pd.lock().unwrap();
    assert!(
        g.refused.is_empty(),
        "refused by PagerDuty: {:?}",
        g.refused
    );
    assert!(
        g.overlaps.is_empty(),
        "delivered at once by two instances: {:?}",
        g.overlaps
    );
    for id in &ids {
        let key = format!("incidentd-{id}");
        assert_eq!(
            g.actions.get(&key).map(Vec::as_slice),
            Some(&["trigger".to_string(), "resolve".to_string()][..]),
            "{key}"
        );
    }
    assert_eq!(g.total, 2 * INCIDENTS as usize, "nothing sent twice");
    drop(g);
    children.assert_alive();
}
