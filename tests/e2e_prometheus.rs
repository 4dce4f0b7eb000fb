//! End to end with the real monitoring stack: a Prometheus alerting rule
//! fires, the real Alertmanager posts its webhook to `incidentd serve`, an
//! incident opens; the metric drops, Alertmanager posts the resolved alert,
//! the same incident resolves. Prometheus also scrapes incidentd's /metrics.
//! A silence in Alertmanager (which never sends the silenced alert as
//! resolved) resolves the incident and its PagerDuty alert through
//! `incident.alert_timeout`. The same stack once more with incidentd
//! serving HTTPS and demanding client certificates: Alertmanager posts with
//! `http_config.tls_config` (CA, certificate, key) and Prometheus scrapes
//! with `scheme: https`, all signed by a CA made in the test.
//!
//! Runs only with `INCIDENTD_TEST_E2E=1` (as `.ci/run` sets); it then needs
//! the Debian packages `prometheus` and `prometheus-alertmanager`, and fails
//! (rather than skips) when they are missing.
//!
//! Timing seen with Prometheus 2.42 and Alertmanager 0.25 (Debian bookworm)
//! at 1 s scrape/evaluation and 1 s group_wait/group_interval: the first
//! firing webhook arrives about 7 s after Prometheus is ready (its service
//! discovery hands targets over at most every 5 s); a flag flip reaches the
//! webhook receiver, firing or resolved, in about 1-1.5 s. The deadlines
//! below are several times that, and the whole test is bounded by
//! `WHOLE_TEST`.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::TestDaemon;
use support::{Children, alertmanager_fingerprint, free_ports, get_json, poll_until};

const ALERTNAME: &str = "IncidentdE2EFlag";
const EXTERNAL_LABEL: (&str, &str) = ("monitor", "incidentd-e2e");
const FLAG_JOB: &str = "e2e_flag";

const START_TIMEOUT: Duration = Duration::from_secs(20);
const SCRAPE_UP_TIMEOUT: Duration = Duration::from_secs(30);
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
const WHOLE_TEST: Duration = Duration::from_secs(170);

#[test]
fn alertmanager_fingerprint_matches_real_alertmanager() {
    // Values reported by Alertmanager 0.25's /api/v2/alerts for these labels.
    assert_eq!(alertmanager_fingerprint(&[]), "cbf29ce484222325");
    assert_eq!(
        alertmanager_fingerprint(&[
            ("severity", "critical"),
            ("alertname", "IncidentdE2EFlag"),
            ("job", "e2e_flag"),
            ("monitor", "incidentd-e2e"),
            ("instance", "127.0.0.1:19701"),
        ]),
        "468dfdea8cb6cfbb"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alertmanager_incidentd_end_to_end() {
    const TEST: &str = "prometheus_alertmanager_incidentd_end_to_end";
    let Some(mut s) = Stack::new(TEST) else {
        return;
    };
    time_boxed(TEST, run(s.tmp.path(), &mut s.children, None, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_end_to_end_over_https_with_client_certificates() {
    const TEST: &str = "the_stack_end_to_end_over_https_with_client_certificates";
    let Some(mut s) = Stack::new(TEST) else {
        return;
    };
    time_boxed(TEST, run(s.tmp.path(), &mut s.children, None, true)).await;
}

/// One test's processes and files. Created outside the time-boxed future,
/// so that on a time-out the children are still alive to be killed and their
/// logs (kept in `tmp`, dropped after `children`) are printed by the panic.
struct Stack {
    children: Children,
    tmp: tempfile::TempDir,
}

impl Stack {
    /// `None` (and a note) when the suite does not run.
    fn new(test: &str) -> Option<Stack> {
        e2e_enabled(test).then(|| Stack {
            children: Children::default(),
            tmp: tempfile::tempdir().expect("tempdir"),
        })
    }
}

/// Whether the suite runs (`INCIDENTD_TEST_E2E=1`); says so when it does not.
fn e2e_enabled(test: &str) -> bool {
    if std::env::var("INCIDENTD_TEST_E2E").as_deref() == Ok("1") {
        return true;
    }
    // Straight to stderr, not `eprintln!`: libtest captures the macro's
    // output of a passing test, and the skip must be visible.
    let _ = writeln!(
        std::io::stderr(),
        "skipped e2e_prometheus::{test}: INCIDENTD_TEST_E2E is not 1 (this suite starts real \
         prometheus and prometheus-alertmanager; .ci/run installs them and sets it)"
    );
    false
}

/// Runs `test` for at most [`WHOLE_TEST`].
async fn time_boxed(test: &str, test_run: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(WHOLE_TEST, test_run).await.is_err() {
        panic!("{test} did not finish within {WHOLE_TEST:?}");
    }
}

/// The gap Alertmanager leaves: a silence stops its notifications, and it
/// never sends the silenced alert as resolved. With `incident.alert_timeout`
/// the incident (whose alert Prometheus still fires) ends once Alertmanager
/// stops repeating it, and PagerDuty hears the resolution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_upstream_resolves_the_incident_downstream() {
    const TEST: &str = "a_silence_upstream_resolves_the_incident_downstream";
    let Some(mut s) = Stack::new(TEST) else {
        return;
    };
    let pd = start_pagerduty().await;
    time_boxed(TEST, run(s.tmp.path(), &mut s.children, Some(&pd), false)).await;
}

/// A PagerDuty Events API on 127.0.0.1 recording `event_action`s.
struct Pagerduty {
    url: String,
    actions: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Pagerduty {
    fn actions(&self) -> Vec<String> {
        self.actions.lock().expect("pagerduty log").clone()
    }
}

async fn start_pagerduty() -> Pagerduty {
    use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
    type Log = Arc<std::sync::Mutex<Vec<String>>>;
    async fn enqueue(
        State(log): State<Log>,
        headers: axum::http::HeaderMap,
        raw: axum::body::Bytes,
    ) -> (StatusCode, Json<Value>) {
        if let Err((status, why)) = support::contracts::pagerduty_event(&headers, &raw) {
            return (StatusCode::from_u16(status).expect("status"), Json(why));
        }
        let body: Value = serde_json::from_slice(&raw).unwrap_or_default();
        let action = body["event_action"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        log.lock().expect("pagerduty log").push(action);
        (
            StatusCode::ACCEPTED,
            Json(
                serde_json::json!({"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]}),
            ),
        )
    }
    let log: Log = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind pagerduty");
    let url = format!("http://{}", listener.local_addr().expect("pagerduty addr"));
    let app = Router::new()
        .route("/v2/enqueue", post(enqueue))
        .with_state(log.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("pagerduty");
    });
    Pagerduty { url, actions: log }
}

/// The in-test scrape target: `/metrics` says `e2e_flag 1` or `e2e_flag 0`.
async fn start_flag_server(flag: Arc<AtomicBool>) -> u16 {
    use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

    async fn metrics(State(flag): State<Arc<AtomicBool>>) -> impl IntoResponse {
        let v = u8::from(flag.load(Ordering::SeqCst));
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            format!("# HELP e2e_flag Test switch.\n# TYPE e2e_flag gauge\ne2e_flag {v}\n"),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind flag server");
    let port = listener.local_addr().expect("flag server addr").port();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(flag);
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("flag server");
    });
    port
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Starts Prometheus with `config` on `port`, data under `dir`, and waits
/// until it is ready.
async fn start_prometheus(
    bin: &Path,
    dir: &Path,
    config: &Path,
    port: u16,
    http: &reqwest::Client,
    children: &mut Children,
) {
    let data = dir.join("prometheus-data");
    std::fs::create_dir(&data).expect("mkdir prometheus data");
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // A firing alert is sent again every second, not every minute: the
        // first send, before the notifier has discovered its targets (up
        // to 5 s), is dropped.
        .arg("--rules.alert.resend-delay=1s")
        .current_dir(dir);
    children.spawn("prometheus", cmd, dir);
    support::wait_http_ok(
        "prometheus /-/ready",
        http,
        &format!("http://127.0.0.1:{port}/-/ready"),
        START_TIMEOUT,
        children,
    )
    .await;
}

/// `incidentd serve` on 127.0.0.1:`port` with the config `toml` (and
/// `cmdb`), data under `dir`; waits until it is ready.
/// A real Alertmanager on `config`, listening on `port`, ready.
async fn start_alertmanager(
    bin: &Path,
    dir: &Path,
    config: &Path,
    port: u16,
    http: &reqwest::Client,
    children: &mut Children,
) {
    let data = dir.join("alertmanager-data");
    std::fs::create_dir(&data).expect("mkdir alertmanager data");
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // Empty: no gossip cluster, so no peer wait and no extra port.
        .arg("--cluster.listen-address=")
        .current_dir(dir);
    children.spawn("alertmanager", cmd, dir);
    support::wait_http_ok(
        "alertmanager /-/ready",
        http,
        &format!("http://127.0.0.1:{port}/-/ready"),
        START_TIMEOUT,
        children,
    )
    .await;
}

async fn start_incidentd(
    dir: &Path,
    base: &str,
    port: u16,
    toml: &str,
    cmdb: Option<&Path>,
    http: &reqwest::Client,
    children: &mut Children,
) {
    let data_dir = dir.join("incidentd-data");
    std::fs::create_dir(&data_dir).expect("mkdir data dir");
    let mut d = TestDaemon::new(&data_dir, dir)
        .config(toml)
        .port(port)
        // No ./data or ./deploy/cmdb.yaml of the checkout is picked up.
        .current_dir(dir);
    if let Some(c) = cmdb {
        d = d.cmdb(c);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        d = d.env("RUST_LOG", "info,incidentd=debug");
    }
    let (cmd, _) = d.command();
    children.spawn("incidentd", cmd, dir);
    support::wait_http_ok(
        "incidentd /readyz",
        http,
        &format!("{base}/readyz"),
        START_TIMEOUT,
        children,
    )
    .await;
}

fn incidents_of(body: &Value) -> Result<Vec<Value>, String> {
    body.get("incidents")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| format!("no \"incidents\" array in {body}"))
}

/// The incidents that belong to our alert: by title or by fingerprint.
fn ours(incidents: &[Value], fingerprint: &str) -> Vec<Value> {
    incidents
        .iter()
        .filter(|i| {
            let by_title = i["title"].as_str().is_some_and(|t| t.contains(ALERTNAME));
            let by_fp = i["alert_fingerprints"]
                .as_array()
                .is_some_and(|fps| fps.iter().any(|f| f.as_str() == Some(fingerprint)));
            by_title || by_fp
        })
        .cloned()
        .collect()
}

/// The stack end to end. With `silence` (a PagerDuty to deliver to), the
/// alert is silenced in Alertmanager instead of cleared in Prometheus.
/// With `tls`, incidentd serves HTTPS with client certificates required,
/// and Alertmanager and Prometheus present theirs.
async fn run(dir: &Path, children: &mut Children, silence: Option<&Pagerduty>, tls: bool) {
    let prometheus_bin = support::find_program(&["/usr/bin/prometheus", "prometheus"])
        .unwrap_or_else(|| {
            panic!(
                "INCIDENTD_TEST_E2E=1 but no Prometheus binary (looked for /usr/bin/prometheus \
                 and prometheus on PATH): apt-get install prometheus (.ci/run does)"
            )
        });
    let alertmanager_bin = support::find_program(&[
        "/usr/bin/prometheus-alertmanager",
        "prometheus-alertmanager",
        "alertmanager",
    ])
    .unwrap_or_else(|| {
        panic!(
            "INCIDENTD_TEST_E2E=1 but no Alertmanager binary (looked for \
             /usr/bin/prometheus-alertmanager, prometheus-alertmanager and alertmanager on \
             PATH): apt-get install prometheus-alertmanager (.ci/run does)"
        )
    });

    // A CA of the test's own signs incidentd's certificate and the one the
    // monitoring stack (and this test) presents to it.
    let pki = tls.then(|| {
        let ca = support::tls::TestCa::new("e2e");
        let server = ca.server(dir, "incidentd", &["127.0.0.1"]);
        let client = ca.client(dir, "monitoring", "monitoring");
        let ca_file = ca.write(dir, "ca.pem");
        (ca, server, client, ca_file)
    });
    let mut http = reqwest::Client::builder()
        // Only 127.0.0.1 is ever asked; never through a proxy from the environment.
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Some((ca, _, client, _)) = &pki {
        http = http
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA"))
            .identity(
                reqwest::Identity::from_pem(
                    format!("{}{}", client.cert_pem, client.key_pem).as_bytes(),
                )
                .expect("identity"),
            );
    }
    let http = http.build().expect("http client");

    // 1. The switchable scrape target, and ports for the three servers.
    let flag = Arc::new(AtomicBool::new(true));
    let flag_port = start_flag_server(flag.clone()).await;
    let [inc_port, prom_port, am_port] = free_ports(3)[..] else {
        unreachable!("free_ports(3) returns 3 ports")
    };
    let inc = format!(
        "{}://127.0.0.1:{inc_port}",
        if tls { "https" } else { "http" }
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    let am = format!("http://127.0.0.1:{am_port}");

    // 2. incidentd.
    let mut incidentd_toml = String::new();
    // What Alertmanager's webhook and Prometheus' scrape add for TLS.
    let (mut am_tls, mut prom_tls) = (String::new(), String::new());
    if let Some((_, server, client, ca_file)) = &pki {
        incidentd_toml.push_str(&format!(
            "[http]\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_client_ca_file = {:?}\n",
            server.cert_file.display().to_string(),
            server.key_file.display().to_string(),
            ca_file.display().to_string(),
        ));
        let files = format!(
            "ca_file: {}\n{{indent}}cert_file: {}\n{{indent}}key_file: {}\n",
            ca_file.display(),
            client.cert_file.display(),
            client.key_file.display()
        );
        am_tls = format!(
            "        http_config:\n          tls_config:\n            {}",
            files.replace("{indent}", "            ")
        );
        prom_tls = format!(
            "    scheme: https\n    tls_config:\n      {}",
            files.replace("{indent}", "      ")
        );
    }
    incidentd_toml.push_str("[incident]\nauto_resolve_hold = \"0s\"\n");
    if let Some(pd) = silence {
        // Alertmanager repeats a firing alert every 2 s (below); 8 s
        // without one means it stopped telling.
        incidentd_toml.push_str(&format!(
            "alert_timeout = \"8s\"\n\n[[outbound.destinations]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"{}\"\nrouting_key = \"R0UTINGKEYR0UTINGKEYR0UTINGKEY00\"\n",
            pd.url
        ));
    }
    start_incidentd(dir, &inc, inc_port, &incidentd_toml, None, &http, children).await;
    let (status, _) = support::get_text(&http, &format!("{inc}/healthz"))
        .await
        .expect("incidentd /healthz");
    assert_eq!(status, 200, "incidentd /healthz");

    // 4 (started before Prometheus, so that Prometheus' first alert
    // notification finds it). Alertmanager: one receiver, incidentd.
    let am_config = dir.join("alertmanager.yml");
    write(
        &am_config,
        &format!(
            "route:
  receiver: incidentd
  group_by: ['...']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: {repeat}
receivers:
  - name: incidentd
    webhook_configs:
      - url: {inc}/api/v1/alerts/alertmanager
        send_resolved: true
        max_alerts: 0
{am_tls}",
            repeat = if silence.is_some() { "2s" } else { "1h" },
        ),
    );
    start_alertmanager(&alertmanager_bin, dir, &am_config, am_port, &http, children).await;

    // 3. Prometheus: scrapes the flag and incidentd every second, evaluates
    // the alerting rule every second, notifies Alertmanager.
    let rule_file = dir.join("e2e-rules.yml");
    write(
        &rule_file,
        &format!(
            "groups:
  - name: incidentd-e2e
    interval: 1s
    rules:
      - alert: {ALERTNAME}
        expr: e2e_flag == 1
        for: 0s
        labels:
          severity: critical
        annotations:
          summary: The e2e flag is set.
"
        ),
    );
    let prom_config = dir.join("prometheus.yml");
    write(
        &prom_config,
        &format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
  external_labels:
    {ext_name}: {ext_value}
rule_files:
  - {rules}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{am_port}']
scrape_configs:
  - job_name: {FLAG_JOB}
    static_configs:
      - targets: ['127.0.0.1:{flag_port}']
  - job_name: incidentd
{prom_tls}    static_configs:
      - targets: ['127.0.0.1:{inc_port}']
",
            ext_name = EXTERNAL_LABEL.0,
            ext_value = EXTERNAL_LABEL.1,
            rules = rule_file.display(),
        ),
    );
    start_prometheus(
        &prometheus_bin,
        dir,
        &prom_config,
        prom_port,
        &http,
        children,
    )
    .await;
    let prom_ready = Instant::now();

    // The labels Prometheus sends: alertname, the rule's labels, the series'
    // target labels (instance, job) and the external labels.
    let instance = format!("127.0.0.1:{flag_port}");
    let alert_labels = [
        ("alertname", ALERTNAME),
        ("severity", "critical"),
        ("instance", instance.as_str()),
        ("job", FLAG_JOB),
        EXTERNAL_LABEL,
    ];
    let fingerprint = alertmanager_fingerprint(&alert_labels);
    let incidents_url = format!("{inc}/api/v1/incidents?state=all");

    // 5. The incident opens, carrying exactly our alert's fingerprint.
    let opened: Value = poll_until(
        &format!("an open incident titled with {ALERTNAME}"),
        OPEN_TIMEOUT,
        children,
        async || {
            let all = incidents_of(&get_json(&http, &incidents_url).await?)?;
            ours(&all, &fingerprint)
                .into_iter()
                .find(|i| i["state"] == "open")
                .ok_or_else(|| format!("incidents: {}", Value::Array(all)))
        },
    )
    .await;
    eprintln!(
        "e2e: incident open {:.1}s after Prometheus was ready: {opened}",
        prom_ready.elapsed().as_secs_f64()
    );
    let id = opened["id"].clone();
    assert!(id.is_u64(), "incident id should be an integer: {opened}");
    assert_eq!(
        opened["alert_fingerprints"],
        serde_json::json!([fingerprint]),
        "the incident should carry exactly the fingerprint of {alert_labels:?}: {opened}"
    );

    // Our fingerprint must be the one Alertmanager itself computed, or the
    // check above proves nothing.
    let am_alerts = get_json(&http, &format!("{am}/api/v2/alerts"))
        .await
        .expect("alertmanager /api/v2/alerts");
    let am_fps: Vec<&str> = am_alerts
        .as_array()
        .expect("alertmanager alerts array")
        .iter()
        .filter(|a| a["labels"]["alertname"] == ALERTNAME)
        .filter_map(|a| a["fingerprint"].as_str())
        .collect();
    assert_eq!(
        am_fps,
        [fingerprint.as_str()],
        "Alertmanager's fingerprint of our alert: {am_alerts}"
    );

    // 3 (check). Prometheus scrapes incidentd's /metrics successfully.
    let up_url = format!("{prom}/api/v1/query?query=up%7Bjob%3D%22incidentd%22%7D");
    poll_until(
        "Prometheus to report up{job=\"incidentd\"} == 1",
        SCRAPE_UP_TIMEOUT,
        children,
        async || {
            let body = get_json(&http, &up_url).await?;
            let value = body["data"]["result"][0]["value"][1].as_str();
            match value {
                Some("1") => Ok(()),
                _ => Err(body.to_string()),
            }
        },
    )
    .await;

    if let Some(pd) = silence {
        silenced_upstream(&http, &am, &inc, &id, &fingerprint, pd, children).await;
        return;
    }

    // 6. The flag drops; Prometheus resolves the alert, Alertmanager sends
    // the resolved notification, the same incident resolves.
    flag.store(false, Ordering::SeqCst);
    let flipped = Instant::now();
    let resolved: Value = poll_until(
        &format!("incident {id} to be resolved"),
        RESOLVE_TIMEOUT,
        children,
        async || {
            let all = incidents_of(&get_json(&http, &incidents_url).await?)?;
            all.iter()
                .find(|i| i["id"] == id && i["state"] == "resolved")
                .cloned()
                .ok_or_else(|| format!("incidents: {}", Value::Array(all)))
        },
    )
    .await;
    eprintln!(
        "e2e: incident resolved {:.1}s after the flag dropped: {resolved}",
        flipped.elapsed().as_secs_f64()
    );

    let all = incidents_of(
        &get_json(&http, &incidents_url)
            .await
            .expect("list incidents"),
    )
    .expect("incidents list");
    let mine = ours(&all, &fingerprint);
    assert_eq!(
        mine.len(),
        1,
        "exactly one incident for {ALERTNAME} (no duplicate from the resolved notification): {mine:?}"
    );
    assert_eq!(
        resolved["alert_fingerprints"],
        serde_json::json!([fingerprint]),
        "resolved incident still carries exactly our fingerprint: {resolved}"
    );

    // 7. The caller's `Children` kills everything started here when it goes
    // out of scope, also on panic, printing their logs first.
}

/// The alert keeps firing in Prometheus but is silenced in Alertmanager,
/// which then sends nothing more about it: the incident resolves at the
/// alert's timeout (8 s, checked every 30 s: seen 23-26 s after the
/// silence), its timeline says why, and PagerDuty was triggered once and
/// resolved once. With `alert_timeout` off the incident stays open (tried:
/// this test then times out).
async fn silenced_upstream(
    http: &reqwest::Client,
    am: &str,
    inc: &str,
    id: &Value,
    fingerprint: &str,
    pd: &Pagerduty,
    children: &mut Children,
) {
    poll_until("PagerDuty triggered", OPEN_TIMEOUT, children, async || {
        let a = pd.actions();
        if a.first().is_some_and(|x| x == "trigger") {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
    let now = chrono::Utc::now();
    let silence = serde_json::json!({
        "matchers": [{"name": "alertname", "value": ALERTNAME, "isRegex": false, "isEqual": true}],
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "e2e",
        "comment": "maintenance",
    });
    let resp = http
        .post(format!("{am}/api/v2/silences"))
        .json(&silence)
        .send()
        .await
        .expect("alertmanager answers");
    assert!(
        resp.status().is_success(),
        "silence refused: {}",
        resp.status()
    );
    let silenced = Instant::now();
    let url = format!("{inc}/api/v1/incidents/{id}");
    let resolved: Value = poll_until(
        &format!("incident {id} to resolve after the silence"),
        Duration::from_secs(60),
        children,
        async || {
            let d = get_json(http, &url).await?;
            if d["state"] == "resolved" {
                Ok(d)
            } else {
                Err(d.to_string())
            }
        },
    )
    .await;
    eprintln!(
        "e2e: silenced incident resolved {:.1}s after the silence",
        silenced.elapsed().as_secs_f64()
    );
    // Still firing upstream: Alertmanager holds it, suppressed by the
    // silence, not resolved.
    let am_alerts = get_json(http, &format!("{am}/api/v2/alerts"))
        .await
        .expect("alertmanager /api/v2/alerts");
    let ours = am_alerts
        .as_array()
        .expect("alerts array")
        .iter()
        .find(|a| a["fingerprint"] == fingerprint)
        .unwrap_or_else(|| panic!("our alert is gone from Alertmanager: {am_alerts}"));
    assert_eq!(ours["status"]["state"], "suppressed", "{ours}");
    assert!(
        resolved["timeline"]
            .as_array()
            .is_some_and(|t| t.iter().any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("not delivered for 8s")))),
        "the timeline should say the alert timed out: {resolved}"
    );
    poll_until(
        "PagerDuty resolved",
        Duration::from_secs(20),
        children,
        async || {
            let a = pd.actions();
            if a == ["trigger", "resolve"] {
                Ok(())
            } else {
                Err(format!("{a:?}"))
            }
        },
    )
    .await;
}

const SLO_CMDB: &str = r#"
version: 1
services:
  - id: shop
    name: Shop
    tier: 1
    slo:
      - { name: availability, objective: 99.9, window: 30d }
cis:
  - { id: shop-web, class: app, service: shop }
"#;

/// The Prometheus binary; the suite is on, so its absence is a failure.
fn prometheus_bin() -> std::path::PathBuf {
    support::find_program(&["/usr/bin/prometheus", "prometheus"]).unwrap_or_else(|| {
        panic!("INCIDENTD_TEST_E2E=1 but no Prometheus binary: apt-get install prometheus")
    })
}

/// A client for the local servers (no proxy, short timeouts).
fn local_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// Prometheus on `prom_port` scraping incidentd on `inc_port` and
/// evaluating the shipped `rules` (under `deploy/prometheus/`), both every
/// second; ready when this returns.
async fn prometheus_with_shipped_rules(
    dir: &Path,
    rules: &str,
    inc_port: u16,
    prom_port: u16,
    http: &reqwest::Client,
    children: &mut Children,
) {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/prometheus")
        .join(rules);
    let prom_config = dir.join("prometheus.yml");
    write(
        &prom_config,
        &format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: incidentd
    static_configs:
      - targets: ['127.0.0.1:{inc_port}']
",
            rules = rules.display(),
        ),
    );
    start_prometheus(
        &prometheus_bin(),
        dir,
        &prom_config,
        prom_port,
        http,
        children,
    )
    .await;
}

/// A PromQL instant query; the result vector, or why not.
async fn prom_query(http: &reqwest::Client, prom: &str, q: &str) -> Result<Vec<Value>, String> {
    let resp = http
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .map_err(|e| format!("query {q}: {e}"))?;
    let body: Value = resp
        .json()
        .await
        .map_err(|e| format!("query {q}: bad JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("query {q}: {body}"));
    }
    body["data"]["result"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("query {q}: no result vector: {body}"))
}

/// (timestamp in ms, value) of a vector sample.
fn sample(v: &Value) -> (i64, f64) {
    let ts = v["value"][0].as_f64().expect("sample timestamp");
    let val = v["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .expect("sample value");
    ((ts * 1000.0).round() as i64, val)
}

fn ms_of(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .timestamp_millis()
}

/// The issue's scripted outage, read back through real Prometheus: a
/// 30-minute P1 outage on a 99.9 %/30d service leaves 1 - 1800/2592 of the
/// error budget, the burn rate of each window is the outage's share of it
/// over the budget, and the shipped recording rules (loaded into this
/// Prometheus) carry the same figures under Sloth's names. Every query of
/// the shipped Grafana dashboard is also run, and must be valid PromQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_error_budget_through_prometheus() {
    const TEST: &str = "slo_error_budget_through_prometheus";
    let Some(mut s) = Stack::new(TEST) else {
        return;
    };
    time_boxed(TEST, run_slo(s.tmp.path(), &mut s.children)).await;
}

async fn run_slo(dir: &Path, children: &mut Children) {
    // Found before anything starts: its absence fails at once.
    prometheus_bin();
    let http = local_http();
    let [inc_port, prom_port] = free_ports(2)[..] else {
        unreachable!("free_ports(2) returns 2 ports")
    };
    let inc = format!("http://127.0.0.1:{inc_port}");
    let prom = format!("http://127.0.0.1:{prom_port}");

    let cmdb = dir.join("cmdb.yaml");
    write(&cmdb, SLO_CMDB);
    start_incidentd(
        dir,
        &inc,
        inc_port,
        "[slo]\nrefresh = \"1s\"\n",
        Some(&cmdb),
        &http,
        children,
    )
    .await;

    // The outage: down from 40 to 10 minutes ago, on the alert's event time.
    let now = chrono::Utc::now();
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (down, up) = (
        fmt(now - chrono::Duration::minutes(40)),
        fmt(now - chrono::Duration::minutes(10)),
    );
    let labels =
        serde_json::json!({"alertname": "ShopDown", "ci": "shop-web", "severity": "critical"});
    for body in [
        serde_json::json!([{"labels": labels, "status": "firing", "startsAt": down}]),
        serde_json::json!([{"labels": labels, "status": "resolved", "startsAt": down, "endsAt": up}]),
    ] {
        let resp = http
            .post(format!("{inc}/api/v1/alerts"))
            .json(&body)
            .send()
            .await
            .expect("post alerts");
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    }
    let incident: Value = poll_until(
        "the ShopDown incident to resolve",
        RESOLVE_TIMEOUT,
        children,
        async || {
            let all = incidents_of(
                &get_json(&http, &format!("{inc}/api/v1/incidents?state=all")).await?,
            )?;
            all.into_iter()
                .find(|i| i["state"] == "resolved")
                .ok_or_else(|| "not resolved yet".to_string())
        },
    )
    .await;
    assert_eq!(incident["priority"], "P1", "{incident}");
    assert_eq!(incident["impacted_services"], serde_json::json!(["shop"]));
    let (opened, resolved) = (
        ms_of(&incident["opened_at"]),
        ms_of(&incident["resolved_at"]),
    );
    assert_eq!(
        (opened, resolved),
        (
            ms_of(&Value::from(down.clone())),
            ms_of(&Value::from(up.clone()))
        ),
        "the incident spans the alert's event times: {incident}"
    );

    // Prometheus scrapes incidentd every second and evaluates the shipped
    // SLO rules every second.
    prometheus_with_shipped_rules(
        dir,
        "incidentd-slo.rules.yml",
        inc_port,
        prom_port,
        &http,
        children,
    )
    .await;

    let expected_budget = 1.0 - 1800.0 / 2592.0;
    let budget_q =
        r#"incidentd_slo_error_budget_remaining_ratio{service="shop",slo="availability"}"#;
    let budget = poll_until(
        "Prometheus to hold the shop's error budget",
        SCRAPE_UP_TIMEOUT,
        children,
        async || {
            let r = prom_query(&http, &prom, budget_q).await?;
            r.first()
                .map(sample)
                .ok_or_else(|| "no sample yet".to_string())
        },
    )
    .await;
    eprintln!("e2e: {budget_q} = {}", budget.1);
    assert!(
        (budget.1 - expected_budget).abs() < 0.001,
        "error budget remaining {} (expected {expected_budget:.4})",
        budget.1
    );

    // Each window's burn rate: the outage's share of the window over the
    // budget, at the instant Prometheus scraped it.
    let burn = prom_query(
        &http,
        &prom,
        r#"incidentd_slo_burn_rate{service="shop",slo="availability"}"#,
    )
    .await
    .expect("burn rates");
    let windows: Vec<(&str, i64)> = vec![
        ("5m", 300),
        ("30m", 1800),
        ("1h", 3600),
        ("2h", 7200),
        ("6h", 21_600),
        ("1d", 86_400),
        ("3d", 259_200),
        ("slo", 2_592_000),
    ];
    assert_eq!(burn.len(), windows.len(), "one series per window: {burn:?}");
    let budget_ratio = 1.0 - 0.999;
    for (w, secs) in windows {
        let s = burn
            .iter()
            .find(|s| s["metric"]["window"] == w)
            .unwrap_or_else(|| panic!("no burn rate for window {w}: {burn:?}"));
        let (ts, v) = sample(s);
        let from = ts - secs * 1000;
        let overlap = (resolved.min(ts) - opened.max(from)).max(0) as f64 / 1000.0;
        let expected = overlap / secs as f64 / budget_ratio;
        eprintln!("e2e: burn rate {w} = {v} (expected {expected:.3})");
        assert!(
            (v - expected).abs() <= expected * 0.002 + 0.01,
            "burn rate over {w}: {v}, expected {expected}"
        );
    }

    // The shipped recording rules carry the daemon's figures under Sloth's names.
    let recorded = poll_until(
        "the recording rules to evaluate",
        SCRAPE_UP_TIMEOUT,
        children,
        async || {
            let r = prom_query(
                &http,
                &prom,
                r#"slo:period_error_budget_remaining:ratio{sloth_service="shop",sloth_slo="availability"}"#,
            )
            .await?;
            r.first().cloned().ok_or_else(|| "not recorded yet".to_string())
        },
    )
    .await;
    assert_eq!(
        recorded["metric"]["sloth_id"], "shop-availability",
        "{recorded}"
    );
    assert!(
        (sample(&recorded).1 - expected_budget).abs() < 0.001,
        "{recorded}"
    );
    let objective = prom_query(&http, &prom, r#"slo:objective:ratio{sloth_service="shop"}"#)
        .await
        .expect("objective");
    assert_eq!(objective.first().map(sample).map(|s| s.1), Some(0.999));

    // Every query of the Grafana dashboard is valid PromQL to this
    // Prometheus (Grafana's variables replaced as Grafana would).
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/incidentd-dashboard.json"),
        )
        .expect("dashboard file"),
    )
    .expect("dashboard JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                exprs.push(e.to_string());
            }
        }
    }
    assert!(exprs.len() >= 20, "{exprs:?}");
    for e in &exprs {
        let q = e
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1h")
            .replace("$service", ".*")
            .replace("$slo", ".*")
            .replace("$window", "1h");
        let r = prom_query(&http, &prom, &q)
            .await
            .unwrap_or_else(|err| panic!("dashboard query fails: {err}"));
        // KPI series legitimately absent without data; a KPI end-to-end test checks them with data.
        let needs_data = [
            "incidentd_change_failure_ratio",
            "incidentd_changes_total",
            "incidentd_noise_suppressed_alerts",
            "incidentd_noise_reduction_ratio",
            "incidentd_service_noise_reduction_ratio",
            "incidentd_service_mtta_seconds",
            "incidentd_service_mttr_seconds",
            "incidentd_service_sla_compliance_ratio",
        ];
        // Gauges are there from the first scrape (Kafka lag only with a
        // Kafka source, outbound series only with destinations); rates need
        // a minute of scrapes, and `> 0` filters.
        let needs_history = ["rate(", "increase(", "> 0", "kafka", "outbound"]
            .iter()
            .chain(&needs_data)
            .any(|x| q.contains(x));
        assert!(
            needs_history || !r.is_empty(),
            "dashboard query returned nothing: {q}"
        );
    }
}

/// The ITSM KPIs of a scripted stretch of weeks (backdated event times),
/// read through a real Prometheus with the shipped KPI rules: the change
/// failure rate per service, the noise a 40-alert storm became, MTTR from
/// the incidents' event times, MTTA as the API reports it, and the change
/// failure alert pending. The dashboard's KPI row returns data for each of
/// its queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn itsm_kpis_through_prometheus() {
    const TEST: &str = "itsm_kpis_through_prometheus";
    let Some(mut s) = Stack::new(TEST) else {
        return;
    };
    time_boxed(TEST, run_kpi(s.tmp.path(), &mut s.children)).await;
}

async fn run_kpi(dir: &Path, children: &mut Children) {
    prometheus_bin();
    let http = local_http();
    let [inc_port, prom_port] = free_ports(2)[..] else {
        unreachable!("free_ports(2) returns 2 ports")
    };
    let inc = format!("http://127.0.0.1:{inc_port}");
    let prom = format!("http://127.0.0.1:{prom_port}");
    let mut cmdb_text = String::from(
        "version: 1
services:
  - { id: shop, tier: 1, sla: { response: { P1: 15m }, resolution: { P1: 4h } } }
  - { id: blog, tier: 1 }
cis:
  - { id: db, class: database }
  - { id: web, class: application, service: shop, depends_on: [db] }
  - { id: cms, class: application, service: blog, depends_on: [db] }
  - { id: cdn, class: cdn, service: blog }
",
    );
    for i in 1..=39 {
        cmdb_text.push_str(&format!(
            "  - {{ id: app-{i:02}, class: application, service: shop, depends_on: [db] }}\n"
        ));
    }
    let cmdb = dir.join("cmdb.yaml");
    write(&cmdb, &cmdb_text);
    start_incidentd(
        dir,
        &inc,
        inc_port,
        "[kpi]\nrefresh = \"1s\"\n[limits]\nmax_alert_age = \"40d\"\n",
        Some(&cmdb),
        &http,
        children,
    )
    .await;

    let now = chrono::Utc::now();
    let ago = |m: i64| {
        (now - chrono::Duration::minutes(m)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    const DAY: i64 = 24 * 60;
    let post = async |path: &str, body: Value, want: u16| {
        let resp = http
            .post(format!("{inc}{path}"))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), want, "{path}: {:?}", resp.text().await);
    };
    let alert = |name: &str, ci: Option<&str>, severity: &str, start: i64, end: Option<i64>| {
        let mut labels = serde_json::json!({"alertname": name, "severity": severity});
        if let Some(ci) = ci {
            labels["ci"] = serde_json::json!(ci);
        }
        match end {
            None => {
                serde_json::json!({"labels": labels, "status": "firing", "startsAt": ago(start)})
            }
            Some(e) => serde_json::json!({"labels": labels, "status": "resolved",
                                          "startsAt": ago(start), "endsAt": ago(e)}),
        }
    };
    // Ten days ago a change on the database, and an hour after it the
    // shop's web tier failed for an hour; five days ago a CDN change that
    // nothing followed.
    post(
        "/api/v1/changes",
        serde_json::json!([
            {"id": "CHG-1", "ci": "db", "state": "completed", "start": ago(10 * DAY), "end": ago(10 * DAY - 60)},
            {"id": "CHG-2", "ci": "cdn", "state": "approved", "start": ago(5 * DAY), "end": ago(5 * DAY - 60)}
        ]),
        201,
    )
    .await;
    let web = 10 * DAY - 120;
    post(
        "/api/v1/alerts",
        serde_json::json!([alert("HighErrorRate", Some("web"), "critical", web, None)]),
        200,
    )
    .await;
    post(
        "/api/v1/alerts",
        serde_json::json!([alert(
            "HighErrorRate",
            Some("web"),
            "critical",
            web,
            Some(web - 60)
        )]),
        200,
    )
    .await;
    // Two hours ago the database and 39 applications on it: 40 alerts,
    // resolved an hour later.
    let mut storm = vec![alert("PostgresDown", Some("db"), "critical", 120, None)];
    storm.extend((1..=39).map(|i| {
        alert(
            "HighErrorRate",
            Some(&format!("app-{i:02}")),
            "critical",
            120,
            None,
        )
    }));
    for a in &storm {
        post("/api/v1/alerts", serde_json::json!([a]), 200).await;
    }
    let mut cleared = vec![alert("PostgresDown", Some("db"), "critical", 120, Some(60))];
    cleared.extend((1..=39).map(|i| {
        alert(
            "HighErrorRate",
            Some(&format!("app-{i:02}")),
            "critical",
            120,
            Some(60),
        )
    }));
    post("/api/v1/alerts", Value::Array(cleared), 200).await;
    // In the last hour: a heartbeat (suppressed) and a CDN warning, which
    // someone acknowledges.
    post(
        "/api/v1/alerts",
        serde_json::json!([
            alert("Watchdog", None, "none", 5, None),
            alert("CdnLatency", Some("cdn"), "warning", 10, None)
        ]),
        200,
    )
    .await;
    let cdn = poll_until("the CDN incident", OPEN_TIMEOUT, children, async || {
        let all =
            incidents_of(&get_json(&http, &format!("{inc}/api/v1/incidents?state=all")).await?)?;
        all.into_iter()
            .find(|i| i["root_ci"] == "cdn")
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    post(
        &format!("/api/v1/incidents/{}/ack", cdn["id"]),
        serde_json::json!({"by": "e2e"}),
        200,
    )
    .await;

    // The daemon's own figures, once its book has seen all of it.
    let services = poll_until(
        "the KPI book with the storm and the acknowledgement",
        RESOLVE_TIMEOUT,
        children,
        async || {
            let v = get_json(&http, &format!("{inc}/api/v1/services")).await?;
            let blog = v["services"]
                .as_array()
                .and_then(|l| l.iter().find(|s| s["id"] == "blog"))
                .cloned()
                .unwrap_or_default();
            let acked =
                blog["kpis"]["incidents"]["30d"]["by_priority"]["P2"]["mtta_seconds"].is_number();
            let storm_done = v["overall"]["incidents"]["30d"]["mttr_seconds"].is_number()
                && v["overall"]["noise"]["1d"]["alerts"] == 42;
            (acked && storm_done)
                .then_some(())
                .map(|()| v.clone())
                .ok_or_else(|| format!("not yet: {}", v["overall"]))
        },
    )
    .await;
    let all = &services["overall"];
    assert_eq!(all["noise"]["1d"]["correlated"], 39, "{all}");
    assert_eq!(all["noise"]["1d"]["incidents"], 2, "{all}");
    assert_eq!(all["noise"]["1h"]["reduction_ratio"], 0.0, "{all}");
    let mtta = services["services"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["id"] == "blog"))
        .and_then(|b| b["kpis"]["incidents"]["30d"]["by_priority"]["P2"]["mtta_seconds"].as_f64())
        .expect("the blog's P2 MTTA");
    assert!(
        mtta >= 600.0,
        "acknowledged at least 10 minutes after the CDN alert began: {mtta}"
    );

    prometheus_with_shipped_rules(
        dir,
        "incidentd-kpi.rules.yml",
        inc_port,
        prom_port,
        &http,
        children,
    )
    .await;

    // The shipped recordings carry the daemon's figures.
    let expect = [
        (
            r#"service:incidentd_change_failure:ratio_30d{service="shop"}"#,
            1.0,
        ),
        (
            r#"service:incidentd_change_failure:ratio_30d{service="blog"}"#,
            0.5,
        ),
        ("incidentd:noise_reduction:ratio_1d", 1.0 - 2.0 / 41.0),
        ("incidentd:noise_reduction:ratio_1h", 0.0),
        (
            r#"service:incidentd_mttr_seconds:mean_30d{service="shop",priority="P1"}"#,
            3600.0,
        ),
        (
            r#"service:incidentd_mtta_seconds:mean_30d{service="blog",priority="P2"}"#,
            mtta,
        ),
        (
            r#"service:incidentd_sla_compliance:ratio{service="shop",sla="response"}"#,
            0.0,
        ),
        (
            r#"service:incidentd_sla_compliance:ratio{service="shop",sla="resolution"}"#,
            1.0,
        ),
        (
            r#"incidentd_noise_alerts{window="1d",kind="received"}"#,
            42.0,
        ),
        (
            r#"incidentd_noise_suppressed_alerts{window="1h",rule="suppress-heartbeats"}"#,
            1.0,
        ),
    ];
    for (q, want) in expect {
        let got = poll_until(
            &format!("Prometheus to hold {q}"),
            SCRAPE_UP_TIMEOUT,
            children,
            async || {
                let r = prom_query(&http, &prom, q).await?;
                r.first()
                    .map(sample)
                    .ok_or_else(|| "no sample yet".to_string())
            },
        )
        .await;
        eprintln!("e2e: {q} = {}", got.1);
        assert!(
            (got.1 - want).abs() < 1e-6,
            "{q}: {} (expected {want})",
            got.1
        );
    }
    // Both services are above 15 %: the ticket alert is pending (for 1h).
    let pending = poll_until(
        "IncidentdChangeFailureRateHigh pending",
        SCRAPE_UP_TIMEOUT,
        children,
        async || {
            let r = prom_query(
                &http,
                &prom,
                r#"ALERTS{alertname="IncidentdChangeFailureRateHigh",alertstate="pending"}"#,
            )
            .await?;
            if r.len() == 2 {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .await;
    let mut services: Vec<&str> = pending
        .iter()
        .filter_map(|a| a["metric"]["service"].as_str())
        .collect();
    services.sort_unstable();
    assert_eq!(services, ["blog", "shop"]);

    // The dashboard's KPI row, run as Grafana would: data for every query
    // (counter increases and `> 0` filters need more than one scrape).
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/incidentd-dashboard.json"),
        )
        .expect("dashboard file"),
    )
    .expect("dashboard JSON");
    let mut in_row = false;
    let mut checked = 0;
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            in_row = p["title"] == "ITSM KPIs";
            continue;
        }
        if !in_row {
            continue;
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let Some(e) = t["expr"].as_str() else {
                continue;
            };
            let q = e.replace("$__range", "1h").replace("$service", ".*");
            let r = prom_query(&http, &prom, &q)
                .await
                .unwrap_or_else(|err| panic!("dashboard query fails: {err}"));
            if !q.contains("increase(") && !q.contains("> 0") {
                assert!(!r.is_empty(), "KPI dashboard query returned nothing: {q}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "the ITSM KPIs row: {checked} queries");
}

/// Prometheus (like vmalert and every Alertmanager API client) sending its
/// alerts straight to incidentd, as to an Alertmanager: it posts to
/// `/api/v2/alerts`, and the incident opens with the rule's labels and
/// annotations and Prometheus's own generator URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_posts_straight_to_incidentd() {
    const TEST: &str = "prometheus_posts_straight_to_incidentd";
    let Some(mut s) = Stack::new(TEST) else {
        return;
    };
    time_boxed(TEST, run_direct(s.tmp.path(), &mut s.children)).await;
}

async fn run_direct(dir: &Path, children: &mut Children) {
    let prometheus_bin = support::find_program(&["/usr/bin/prometheus", "prometheus"])
        .unwrap_or_else(|| panic!("prometheus is not installed (.ci/run installs it)"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let [inc_port, prom_port] = free_ports(2)[..] else {
        unreachable!("free_ports(2) returns 2 ports")
    };
    let inc = format!("http://127.0.0.1:{inc_port}");
    start_incidentd(dir, &inc, inc_port, "", None, &http, children).await;
    let rules = dir.join("direct.rules.yml");
    write(
        &rules,
        "groups:
  - name: direct
    interval: 1s
    rules:
      - alert: DirectFromPrometheus
        expr: vector(1)
        labels:
          severity: critical
          instance: direct-1:9100
        annotations:
          summary: Sent by Prometheus itself.
",
    );
    let config = dir.join("prometheus.yml");
    write(
        &config,
        &format!(
            "global:
  evaluation_interval: 1s
rule_files:
  - {rules}
alerting:
  alertmanagers:
    - api_version: v2
      static_configs:
        - targets: ['127.0.0.1:{inc_port}']
",
            rules = rules.display()
        ),
    );
    start_prometheus(&prometheus_bin, dir, &config, prom_port, &http, children).await;
    let incident = poll_until(
        "Prometheus's alert to open an incident",
        Duration::from_secs(60),
        children,
        async || {
            let all = incidents_of(&get_json(&http, &format!("{inc}/api/v1/incidents")).await?)?;
            let titles: Vec<String> = all.iter().map(|i| i["title"].to_string()).collect();
            all.into_iter()
                .find(|i| {
                    i["title"]
                        .as_str()
                        .unwrap_or("")
                        .contains("DirectFromPrometheus")
                })
                .ok_or_else(|| format!("incidents: {titles:?}"))
        },
    )
    .await;
    let id = incident["id"].as_i64().expect("id");
    let alerts = get_json(&http, &format!("{inc}/api/v1/incidents/{id}/alerts")).await;
    let alerts = alerts.expect("alerts");
    let alert = &alerts["alerts"][0];
    assert_eq!(alert["labels"]["severity"], "critical", "{alerts}");
    assert_eq!(
        alert["annotations"]["summary"],
        "Sent by Prometheus itself."
    );
    assert!(
        alert["generator_url"]
            .as_str()
            .is_some_and(|u| u.contains(&format!(":{prom_port}/graph?g0.expr=vector"))),
        "Prometheus's own link: {alerts}"
    );
}

/// `deploy/alertmanager.yml` works as shipped: a real Alertmanager started
/// with it (only the daemon's port put in place of the default 9797)
/// delivers an alert posted to it to incidentd, which opens the incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_alertmanager_config_delivers() {
    const TEST: &str = "the_shipped_alertmanager_config_delivers";
    let Some(mut s) = Stack::new(TEST) else {
        return;
    };
    time_boxed(TEST, run_shipped(s.tmp.path(), &mut s.children)).await;
}

async fn run_shipped(dir: &Path, children: &mut Children) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let [inc_port, am_port] = free_ports(2)[..] else {
        unreachable!("free_ports(2) returns 2 ports")
    };
    let inc = format!("http://127.0.0.1:{inc_port}");
    let am = format!("http://127.0.0.1:{am_port}");
    start_incidentd(dir, &inc, inc_port, "", None, &http, children).await;
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/alertmanager.yml"),
    )
    .expect("deploy/alertmanager.yml");
    assert!(
        shipped.contains("url: http://127.0.0.1:9797/api/v1/alerts/alertmanager"),
        "the shipped receiver points at a local daemon's default address"
    );
    let config = dir.join("alertmanager.yml");
    write(
        &config,
        &shipped.replace("127.0.0.1:9797", &format!("127.0.0.1:{inc_port}")),
    );
    let alertmanager_bin = support::find_program(&[
        "/usr/bin/prometheus-alertmanager",
        "prometheus-alertmanager",
        "alertmanager",
    ])
    .unwrap_or_else(|| panic!("prometheus-alertmanager is not installed (.ci/run installs it)"));
    start_alertmanager(&alertmanager_bin, dir, &config, am_port, &http, children).await;
    // As `amtool alert add` posts it.
    let posted = http
        .post(format!("{am}/api/v2/alerts"))
        .json(&serde_json::json!([{
            "labels": {"alertname": "ShippedConfigCheck", "instance": "db-7:9100", "severity": "critical"},
            "annotations": {"summary": "Posted to Alertmanager."}
        }]))
        .send()
        .await
        .expect("post to alertmanager");
    assert!(posted.status().is_success(), "{}", posted.status());
    // The shipped group_wait is 10 s.
    poll_until(
        "the alert through the shipped receiver",
        Duration::from_secs(45),
        children,
        async || {
            let all = incidents_of(&get_json(&http, &format!("{inc}/api/v1/incidents")).await?)?;
            all.into_iter()
                .find(|i| {
                    i["title"]
                        .as_str()
                        .is_some_and(|t| t.contains("ShippedConfigCheck"))
                })
                .ok_or_else(|| "no incident yet".to_string())
        },
    )
    .await;
}
