//! Connections as operators deploy them, with real TLS: a CA made in the
//! test signs the certificates of an HTTPS PagerDuty-shaped server, of a
//! server that demands client certificates, and of the daemon's own
//! listener; an HTTP CONNECT proxy stands between the daemon and a
//! destination. Runs the real binary (trust through `SSL_CERT_FILE`, proxy
//! variables and restarts are per process), and checks what a user would:
//! the pages arrive once each, an untrusted certificate is named as the
//! cause on the incident and in the log, the backlog goes out after the fix,
//! the proxy sees only `CONNECT host:port`, and no configured secret shows
//! up in logs, `check` output, `/metrics` or the database.

mod support;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::daemon::{Running, TestDaemon};
use support::tls::{ConnectProxy, HandshakeLog, TestCa, serve_https, server_config};

/// A 32-character integration key, as PagerDuty issues them.
const ROUTING_KEY: &str = "R0UTINGKEYR0UTINGKEYR0UTINGKEY00";

/// Events PagerDuty accepted: (event_action, dedup_key).
type Accepted = Arc<Mutex<Vec<(String, String)>>>;

/// PagerDuty's Events API v2 (`support::contracts::pagerduty_event` holds
/// its documented contract): 202 with `status`, `message` and `dedup_key`.
fn pagerduty_router(accepted: Accepted) -> axum::Router {
    axum::Router::new().route(
        "/v2/enqueue",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let accepted = accepted.clone();
            async move {
                if let Err((status, why)) = support::contracts::pagerduty_event(&headers, &body) {
                    let status = StatusCode::from_u16(status).expect("status");
                    return (status, axum::Json(why));
                }
                let b: Value = serde_json::from_slice(&body).unwrap_or_default();
                let action = b["event_action"].as_str().unwrap_or_default().to_string();
                let key = b["dedup_key"].as_str().unwrap_or_default().to_string();
                accepted.lock().expect("accepted").push((action, key.clone()));
                (
                    StatusCode::ACCEPTED,
                    axum::Json(json!({"status": "success", "message": "Event processed", "dedup_key": key})),
                )
            }
        }),
    )
}

/// A PagerDuty-shaped HTTPS server with a certificate `ca` signed for
/// 127.0.0.1 and localhost, optionally demanding client certificates.
async fn pagerduty_https(
    ca: &TestCa,
    dir: &Path,
    client_ca: Option<&TestCa>,
) -> (String, Accepted, Arc<Mutex<HandshakeLog>>) {
    let leaf = ca.server(dir, "pagerduty", &["127.0.0.1", "localhost"]);
    let accepted = Accepted::default();
    let (url, log) = serve_https(
        pagerduty_router(accepted.clone()),
        server_config(&leaf, client_ca),
        "127.0.0.1",
    )
    .await;
    (url, accepted, log)
}

/// The daemon as a child process, with the client that trusts its listener.
struct Daemon {
    run: Running,
    client: reqwest::Client,
    /// Its SQLite store, read by the test to see the outbox drained.
    data_dir: PathBuf,
}

impl std::ops::Deref for Daemon {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.run
    }
}

/// The config file the daemon runs with (`dir/incidentd.toml`).
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("incidentd.toml");
    std::fs::write(
        &file,
        format!("log_format = \"json\"\n[incident]\nauto_resolve_hold = \"0s\"\n\n{text}"),
    )
    .expect("write config");
    file
}

impl Daemon {
    /// Start `incidentd serve` with `dir/incidentd.toml`, the environment
    /// cleared of proxy and CA variables except those in `env`; wait until
    /// `/readyz` answers (over `client`, which must trust the listener when
    /// it serves https).
    async fn start(
        dir: &Path,
        env: &[(&str, &str)],
        scheme: &str,
        client: reqwest::Client,
        run: &str,
    ) -> Daemon {
        let mut d = support::daemon::AMBIENT
            .iter()
            .fold(TestDaemon::new(&dir.join("data"), dir), |d, v| {
                d.env_remove(v)
            })
            .name(&format!("incidentd-{run}"))
            .arg("--config")
            .arg(dir.join("incidentd.toml"))
            .cmdb(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/cmdb.yaml"
            )));
        for (k, v) in env {
            d = d.env(k, v);
        }
        if scheme == "https" {
            d = d.https();
        }
        let mut run = d.start();
        run.wait_ready_via(&client, Duration::from_secs(30)).await;
        Daemon {
            run,
            client,
            data_dir: dir.join("data"),
        }
    }

    /// SIGTERM and wait: a clean stop, as systemd does it.
    fn stop(mut self) {
        self.run.stop();
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.client.get(&url),
            _ => self.client.post(&url).json(&body),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// Open an incident with one critical alert named `name`; its id.
    async fn open(&self, name: &str) -> i64 {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/alerts",
                json!([{"labels": {"alertname": name, "instance": format!("{name}:9100"), "severity": "critical"},
                        "status": "firing"}]),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (_, list) = self
            .call("GET", "/api/v1/incidents?state=all", Value::Null)
            .await;
        list["incidents"]
            .as_array()
            .expect("incidents")
            .iter()
            .find(|i| i["title"].as_str().is_some_and(|t| t.contains(name)))
            .and_then(|i| i["id"].as_i64())
            .unwrap_or_else(|| panic!("no incident for {name}: {list}"))
    }

    async fn incident(&self, id: i64) -> Value {
        self.call("GET", &format!("/api/v1/incidents/{id}"), Value::Null)
            .await
            .1
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// A plain client for a plain-HTTP daemon (no proxy from the environment).
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn pagerduty_destination(url: &str, extra: &str) -> String {
    format!(
        "[[outbound.destinations]]\nname = \"pd\"\nkind = \"pagerduty\"\nurl = \"{url}\"\nrouting_key = \"{ROUTING_KEY}\"\nbackoff_base = \"100ms\"\nbackoff_max = \"1s\"\nbreaker_cool_down = \"1s\"\n{extra}\n"
    )
}

/// Trigger, acknowledge and resolve one incident; wait until PagerDuty
/// accepted the three events, then, with the outbox drained, that no fourth came.
async fn lifecycle_once_each(d: &Daemon, accepted: &Accepted, name: &str) {
    let id = d.open(name).await;
    let key = format!("incidentd-{id}");
    support::wait_until("the trigger", Duration::from_secs(20), async || {
        !accepted.lock().expect("accepted").is_empty()
    })
    .await;
    let (s, v) = d
        .call(
            "POST",
            &format!("/api/v1/incidents/{id}/ack"),
            json!({"by": "alice"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    support::wait_until("the acknowledgement", Duration::from_secs(20), async || {
        accepted.lock().expect("accepted").len() >= 2
    })
    .await;
    let (s, v) = d
        .call(
            "POST",
            &format!("/api/v1/incidents/{id}/resolve"),
            json!({"by": "alice"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    support::wait_until("the resolution", Duration::from_secs(20), async || {
        accepted.lock().expect("accepted").len() >= 3
    })
    .await;
    support::drain::sqlite_outbox_drained(&d.data_dir).await;
    let got = accepted.lock().expect("accepted").clone();
    assert_eq!(
        got,
        [
            ("trigger".to_string(), key.clone()),
            ("acknowledge".to_string(), key.clone()),
            ("resolve".to_string(), key)
        ],
        "each event once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_pagerduty_trusted_through_ssl_cert_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("corporate");
    let ca_file = ca.write(dir.path(), "corporate-ca.pem");
    let (url, accepted, _) = pagerduty_https(&ca, dir.path(), None).await;
    write_config(dir.path(), &pagerduty_destination(&url, ""));
    // The way a corporate CA is installed for curl and OpenSSL.
    let d = Daemon::start(
        dir.path(),
        &[("SSL_CERT_FILE", ca_file.to_str().expect("path"))],
        "http",
        plain_client(),
        "a",
    )
    .await;
    lifecycle_once_each(&d, &accepted, "CertFileTrusted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_pagerduty_trusted_through_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("private");
    let ca_file = ca.write(dir.path(), "private-ca.pem");
    let (url, accepted, _) = pagerduty_https(&ca, dir.path(), None).await;
    write_config(
        dir.path(),
        &pagerduty_destination(
            &url,
            &format!("ca_file = {:?}", ca_file.display().to_string()),
        ),
    );
    let d = Daemon::start(dir.path(), &[], "http", plain_client(), "a").await;
    lifecycle_once_each(&d, &accepted, "CaFileTrusted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_named_and_the_backlog_goes_once_after_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("unknown");
    let ca_file = ca.write(dir.path(), "unknown-ca.pem");
    let (url, accepted, handshakes) = pagerduty_https(&ca, dir.path(), None).await;
    write_config(dir.path(), &pagerduty_destination(&url, ""));
    let d = Daemon::start(dir.path(), &[], "http", plain_client(), "untrusted").await;
    let id = d.open("UntrustedCert").await;
    // The cause is on the incident's timeline.
    let mut timeline = Value::Null;
    support::wait_until(
        "a timeline entry naming the cause",
        Duration::from_secs(20),
        async || {
            timeline = d.incident(id).await["timeline"].clone();
            timeline.as_array().is_some_and(|t| {
                t.iter().any(|e| {
                    e["kind"] == "outbound_retrying"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("UnknownIssuer"))
                })
            })
        },
    )
    .await;
    // Retried, but the timeline says it once per cause.
    support::wait_until(
        "three failed handshakes",
        Duration::from_secs(20),
        async || handshakes.lock().expect("log").failed.len() >= 3,
    )
    .await;
    let entries = d.incident(id).await["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["kind"] == "outbound_retrying")
        .count();
    assert_eq!(entries, 1, "one entry for one cause: {timeline}");
    assert!(
        accepted.lock().expect("accepted").is_empty(),
        "nothing delivered"
    );
    let m = d.metrics().await;
    assert!(
        m.lines().any(|l| l
            .starts_with("incidentd_outbound_failures_total{destination=\"pd\",reason=\"tls\"}")
            && !l.ends_with(" 0")),
        "failures counted with reason tls:\n{}",
        m.lines()
            .filter(|l| l.contains("failures"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("\"level\":\"WARN\"") && l.contains("UnknownIssuer")),
        "a WARN log line names the cause:\n{log}"
    );
    d.stop();
    assert!(accepted.lock().expect("accepted").is_empty());

    // The operator configures the CA and restarts: the backlog goes, once.
    write_config(
        dir.path(),
        &pagerduty_destination(
            &url,
            &format!("ca_file = {:?}", ca_file.display().to_string()),
        ),
    );
    let d = Daemon::start(dir.path(), &[], "http", plain_client(), "trusted").await;
    let key = format!("incidentd-{id}");
    support::wait_until("the backlog", Duration::from_secs(20), async || {
        !accepted.lock().expect("accepted").is_empty()
    })
    .await;
    support::drain::sqlite_outbox_drained(&d.data_dir).await;
    assert_eq!(
        accepted.lock().expect("accepted").clone(),
        [("trigger".to_string(), key)],
        "the queued trigger, once"
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_a_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = TestCa::new("server");
    let client_ca = TestCa::new("clients");
    let ca_file = server_ca.write(dir.path(), "server-ca.pem");
    let (url, accepted, handshakes) =
        pagerduty_https(&server_ca, dir.path(), Some(&client_ca)).await;
    let ca = format!("ca_file = {:?}", ca_file.display().to_string());

    // Without a client certificate: refused at the handshake.
    write_config(dir.path(), &pagerduty_destination(&url, &ca));
    let d = Daemon::start(dir.path(), &[], "http", plain_client(), "nocert").await;
    let id = d.open("NoClientCert").await;
    support::wait_until("refused handshakes", Duration::from_secs(20), async || {
        !handshakes.lock().expect("log").failed.is_empty()
    })
    .await;
    let mut last = Value::Null;
    support::wait_until(
        "the refusal on the timeline",
        Duration::from_secs(20),
        async || {
            last = d.incident(id).await["timeline"].clone();
            last.as_array().is_some_and(|t| {
                t.iter().any(|e| {
                    e["kind"] == "outbound_retrying"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.to_ascii_lowercase().contains("certificate"))
                })
            })
        },
    )
    .await;
    assert!(
        accepted.lock().expect("accepted").is_empty(),
        "nothing delivered without a certificate"
    );
    d.stop();

    // With one signed by the CA the server trusts: delivered.
    let cert = client_ca.client(dir.path(), "incidentd-client", "incidentd");
    write_config(
        dir.path(),
        &pagerduty_destination(
            &url,
            &format!(
                "{ca}\nclient_cert_file = {:?}\nclient_key_file = {:?}",
                cert.cert_file.display().to_string(),
                cert.key_file.display().to_string()
            ),
        ),
    );
    let d = Daemon::start(dir.path(), &[], "http", plain_client(), "cert").await;
    support::wait_until(
        "delivery with the client certificate",
        Duration::from_secs(20),
        async || !accepted.lock().expect("accepted").is_empty(),
    )
    .await;
    assert_eq!(
        accepted.lock().expect("accepted")[0],
        ("trigger".to_string(), format!("incidentd-{id}"))
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_a_connect_proxy_and_environment_proxies_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("proxied");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (url, accepted, _) = pagerduty_https(&ca, dir.path(), None).await;
    let ca_for_proxy = ca;
    let ca = format!("ca_file = {:?}", ca_file.display().to_string());
    // "proxyuser:proxy-pass-9f2"
    let proxy = ConnectProxy::start(Some("Basic cHJveHl1c2VyOnByb3h5LXBhc3MtOWYy")).await;
    let pw = dir.path().join("proxy-password");
    std::fs::write(&pw, "proxy-pass-9f2\n").expect("write password");

    // 1. Configured: reached through the proxy, which sees CONNECT only.
    write_config(
        dir.path(),
        &format!(
            "[outbound]\nproxy = \"{}\"\nproxy_user = \"proxyuser\"\nproxy_password_file = {:?}\n\n{}",
            proxy.url,
            pw.display().to_string(),
            pagerduty_destination(&url, &ca)
        ),
    );
    let d = Daemon::start(dir.path(), &[], "http", plain_client(), "proxy").await;
    lifecycle_once_each(&d, &accepted, "ThroughProxy").await;
    d.stop();
    let seen = proxy.requests();
    let hostport = url.trim_start_matches("https://");
    assert!(!seen.is_empty(), "the proxy was used");
    for head in &seen {
        let first = head.lines().next().unwrap_or_default();
        assert_eq!(first, format!("CONNECT {hostport} HTTP/1.1"), "{head}");
        assert!(
            !head.contains(ROUTING_KEY),
            "the proxy never sees the key: {head}"
        );
        assert!(!head.contains("/v2/enqueue"), "nor the path: {head}");
    }

    // 2. Not configured, proxy variables in the environment: ignored.
    accepted.lock().expect("accepted").clear();
    let before = proxy.requests().len();
    write_config(dir.path(), &pagerduty_destination(&url, &ca));
    let env = [
        ("HTTPS_PROXY", proxy.url.as_str()),
        ("HTTP_PROXY", proxy.url.as_str()),
        ("ALL_PROXY", proxy.url.as_str()),
    ];
    let d = Daemon::start(dir.path(), &env, "http", plain_client(), "env-ignored").await;
    lifecycle_once_each(&d, &accepted, "EnvIgnored").await;
    d.stop();
    assert_eq!(proxy.requests().len(), before, "the proxy saw nothing");

    // 3. proxy = "env": the environment's proxy is used (with its
    // credentials in the URL, as curl takes them).
    accepted.lock().expect("accepted").clear();
    let with_auth = proxy
        .url
        .replace("http://", "http://proxyuser:proxy-pass-9f2@");
    write_config(
        dir.path(),
        &format!(
            "[outbound]\nproxy = \"env\"\n\n{}",
            pagerduty_destination(&url, &ca)
        ),
    );
    let env = [("HTTPS_PROXY", with_auth.as_str())];
    let d = Daemon::start(dir.path(), &env, "http", plain_client(), "env").await;
    lifecycle_once_each(&d, &accepted, "EnvProxy").await;
    assert!(
        !d.log_text().contains("proxy-pass-9f2"),
        "the proxy password is not logged"
    );
    d.stop();
    assert!(proxy.requests().len() > before, "the proxy was used");

    // 4. An https:// proxy (TLS to the proxy, then CONNECT inside it),
    // its certificate from the same private CA the destination trusts.
    accepted.lock().expect("accepted").clear();
    let before = proxy.requests().len();
    let proxy_leaf = ca_for_proxy.server(dir.path(), "proxy", &["127.0.0.1"]);
    let https_proxy = tls_front(&proxy_leaf, proxy.url.trim_start_matches("http://")).await;
    write_config(
        dir.path(),
        &format!(
            "[outbound]\nproxy = \"{https_proxy}\"\nproxy_user = \"proxyuser\"\nproxy_password_file = {:?}\n\n{}",
            pw.display().to_string(),
            pagerduty_destination(&url, &ca)
        ),
    );
    let d = Daemon::start(dir.path(), &[], "http", plain_client(), "https-proxy").await;
    lifecycle_once_each(&d, &accepted, "HttpsProxy").await;
    d.stop();
    let seen = proxy.requests();
    assert!(seen.len() > before, "the https proxy was used");
    assert!(
        seen[before..]
            .iter()
            .all(|h| h.starts_with(&format!("CONNECT {hostport} HTTP/1.1"))),
        "{seen:?}"
    );
}

/// A TLS front for a plain TCP service on 127.0.0.1 (makes the CONNECT
/// proxy an https:// proxy); its URL.
async fn tls_front(leaf: &support::tls::Issued, upstream: &str) -> String {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(support::tls::server_config(leaf, None)));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("https://{}", tcp.local_addr().expect("addr"));
    let upstream = upstream.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    url
}

/// Every configured secret, each made of parts no log line would contain
/// by chance.
const SECRETS: [&str; 10] = [
    "PdS3cretRoutingKey00000000000042",
    "T0SECRETWS/B0SECRETWS/slackHookPathS3cret",
    "SnPassw0rdS3cret",
    "WebhookSigningS3cret",
    "OpsgenieApiKeyS3cret",
    "ApiKeyInQueryS3cret",
    "ProxyPassS3cret",
    "IngestTokenS3cret",
    "UrlUserinfoS3cret",
    "xoxb-SlackBotTokenS3cret",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_check_metrics_or_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("untrusted");
    // Every destination fails, so every error path runs: an untrusted
    // certificate, a closed port, a proxy that refuses, redirects.
    let (tls_url, _, _) = pagerduty_https(&ca, dir.path(), None).await;
    let closed = format!("127.0.0.1:{}", support::free_ports(1)[0]);
    let proxy = ConnectProxy::start(Some("Basic bm90OnRoaXM=")).await;
    let pw_file = dir.path().join("proxy-password");
    std::fs::write(&pw_file, SECRETS[6]).expect("write");
    let token_file = dir.path().join("ingest-token");
    std::fs::write(&token_file, SECRETS[7]).expect("write");
    let slack_path = SECRETS[1];
    write_config(
        dir.path(),
        &format!(
            r#"[sources.api]
token_file = {token:?}

[[outbound.destinations]]
name = "pd"
kind = "pagerduty"
url = "{tls_url}"
routing_key = "{pd}"
backoff_base = "100ms"
backoff_max = "500ms"

[[outbound.destinations]]
name = "slack"
kind = "slack"
url = "http://{closed}/services/{slack_path}"
backoff_base = "100ms"
backoff_max = "500ms"

[[outbound.destinations]]
name = "slackapp"
kind = "slack"
url = "http://{closed}/api"
bot_token = "{bot}"
channel = "C0SECRETS1"
backoff_base = "100ms"
backoff_max = "500ms"

[[outbound.destinations]]
name = "snow"
kind = "servicenow"
url = "https://snow.invalid"
user = "integration"
password = "{sn}"
proxy = "{proxy}"
proxy_user = "incidentd"
proxy_password_file = {pw:?}
backoff_base = "100ms"
backoff_max = "500ms"

[[outbound.destinations]]
name = "hook"
kind = "webhook"
url = "http://robot:{userinfo}@{closed}/hook?apikey={query}&page=1"
secret = "{wh}"
backoff_base = "100ms"
backoff_max = "500ms"

[[outbound.destinations]]
name = "genie"
kind = "opsgenie"
url = "{tls_url}"
api_key = "{og}"
backoff_base = "100ms"
backoff_max = "500ms"
"#,
            token = token_file.display().to_string(),
            pd = SECRETS[0],
            sn = SECRETS[2],
            proxy = proxy.url,
            pw = pw_file.display().to_string(),
            userinfo = SECRETS[8],
            query = SECRETS[5],
            wh = SECRETS[3],
            og = SECRETS[4],
            bot = SECRETS[9],
        ),
    );
    let auth_client = reqwest::Client::builder()
        .no_proxy()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", SECRETS[7]).parse().expect("header"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client");
    let d = Daemon::start(
        dir.path(),
        &[("RUST_LOG", "debug")],
        "http",
        auth_client,
        "secrets",
    )
    .await;
    let id = d.open("SecretsStayHidden").await;
    // Every destination has failed at least twice (so retries logged).
    let mut m = String::new();
    support::wait_until("failures at every destination", Duration::from_secs(30), async || {
        m = d.metrics().await;
        ["pd", "slack", "slackapp", "snow", "hook", "genie"].iter().all(|dest| {
            m.lines()
                .filter(|l| {
                    l.starts_with(&format!(
                        "incidentd_outbound_requests_total{{destination=\"{dest}\",operation=\"opened\",outcome=\"retry\"}}"
                    ))
                })
                .any(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) >= 2.0)
        })
    })
    .await;
    let incident = d.incident(id).await.to_string();
    let check = Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(["check", "--config"])
        .arg(dir.path().join("incidentd.toml"))
        .arg("--rules")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
        .output()
        .expect("run check");
    let check_out = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    d.stop();
    let log = std::fs::read_to_string(dir.path().join("incidentd-secrets.log")).expect("log");
    assert!(
        log.contains("failed, will retry"),
        "the failures were logged:\n{log}"
    );
    assert!(incident.contains("outbound_retrying"), "{incident}");
    // The database, its WAL and the journal's segments.
    let mut db = Vec::new();
    let mut dirs = vec![dir.path().join("data")];
    while let Some(d) = dirs.pop() {
        for f in std::fs::read_dir(&d).expect("data dir") {
            let p = f.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                db.extend(std::fs::read(&p).expect("read db file"));
            }
        }
    }
    let db = String::from_utf8_lossy(&db);
    assert!(db.contains("will retry"), "the database holds the errors");
    for (what, text) in [
        ("the log", log.as_str()),
        ("check", check_out.as_str()),
        ("/metrics", m.as_str()),
        ("the incident", incident.as_str()),
        ("the database", &db),
    ] {
        for s in SECRETS {
            // The Slack path as a whole and its last part alone.
            let needle = s.rsplit('/').next().unwrap_or(s);
            assert!(
                !text.contains(needle),
                "{what} shows the secret {needle:?}:\n{text}"
            );
        }
    }
    // Redacted, not removed: the operator still sees where it went.
    assert!(
        log.contains("http://robot:***@"),
        "userinfo masked in place"
    );
    assert!(
        log.contains("apikey=***&page=1"),
        "query value masked in place"
    );
    assert!(
        log.contains("/services/***") || log.contains("/***"),
        "hook path masked"
    );
}

#[test]
fn the_store_password_never_shows_in_a_failed_start() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let port = support::free_ports(1)[0];
    // Nothing listens at the store's address: the daemon keeps retrying,
    // saying why in its log and on /readyz, and neither shows a password.
    let d = TestDaemon::new(dir.path(), dir.path())
        .arg("--store")
        .arg(format!("postgres://incidentd:PgPassw0rdS3cret@127.0.0.1:{port}/incidentd?sslmode=disable&password=PgQueryS3cret"))
        .start();
    let (listen, log) = (format!("127.0.0.1:{}", d.port), d.log.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let readyz = loop {
        let answer = std::net::TcpStream::connect(&listen)
            .ok()
            .and_then(|mut c| {
                c.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    .ok()?;
                let mut text = String::new();
                c.read_to_string(&mut text).ok()?;
                Some(text)
            });
        match answer {
            Some(t) if t.contains("refused") => break t,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never named the cause"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    let logged = std::fs::read_to_string(&log).expect("read log");
    for text in [&readyz, &logged] {
        assert!(
            text.contains("Connection refused") || text.contains("connection refused"),
            "{text}"
        );
        assert!(
            text.contains("postgres://incidentd:***@127.0.0.1"),
            "{text}"
        );
        assert!(
            !text.contains("PgPassw0rdS3cret") && !text.contains("PgQueryS3cret"),
            "{text}"
        );
    }
}

/// One HTTP/1.1 request on an open TLS stream; the status code.
async fn request_on(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read answer");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text[9..12].parse().expect("status");
            }
        }
    }
}

#[allow(deprecated)]
fn client_tls(ca: &TestCa, identity: Option<&support::tls::Issued>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("CA"))
        .expect("root");
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    Arc::new(match identity {
        Some(i) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(i.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert"),
                PrivateKeyDer::from_pem_slice(i.key_pem.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => b.with_no_client_auth(),
    })
}

async fn tls_connect(
    base: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let addr = base.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
        .expect("name")
        .to_owned();
    let mut s = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    // TLS 1.3 reports a refused client certificate after the handshake:
    // a first request shows it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut b = [0u8; 12];
    s.read_exact(&mut b).await?;
    let mut rest = [0u8; 512];
    let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut rest)).await;
    Ok(s)
}

fn reqwest_https(ca: &TestCa, identity: Option<&support::tls::Issued>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA"));
    if let Some(i) = identity {
        b = b.identity(
            reqwest::Identity::from_pem(format!("{}{}", i.cert_pem, i.key_pem).as_bytes())
                .expect("identity"),
        );
    }
    b.build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_serves_https_demands_client_certificates_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca1 = TestCa::new("listener-1");
    let ca2 = TestCa::new("listener-2");
    let clients = TestCa::new("alertmanagers");
    let leaf = ca1.server(dir.path(), "listener", &["127.0.0.1", "localhost"]);
    let client_ca = clients.write(dir.path(), "clients-ca.pem");
    let alertmanager = clients.client(dir.path(), "alertmanager", "alertmanager");
    write_config(
        dir.path(),
        &format!(
            "[http]\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_client_ca_file = {:?}\n",
            leaf.cert_file.display().to_string(),
            leaf.key_file.display().to_string(),
            client_ca.display().to_string()
        ),
    );
    let d = Daemon::start(
        dir.path(),
        &[],
        "https",
        reqwest_https(&ca1, Some(&alertmanager)),
        "listener",
    )
    .await;
    assert!(
        d.log_text().contains("\"scheme\":\"https\""),
        "{}",
        d.log_text()
    );
    let (s, v) = d
        .call(
            "POST",
            "/api/v1/alerts/alertmanager",
            json!({"version": "4", "status": "firing", "receiver": "incidentd", "groupKey": "{}:{}",
                   "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
                   "alerts": [{"status": "firing", "labels": {"alertname": "OverHttps", "instance": "h:1"},
                               "annotations": {}, "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                               "generatorURL": "http://prom", "fingerprint": "0"}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Without a client certificate: refused.
    let anonymous = reqwest_https(&ca1, None);
    assert!(
        anonymous
            .get(format!("{}/healthz", d.base))
            .send()
            .await
            .is_err(),
        "a client without a certificate is refused"
    );
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    assert!(
        plain_client()
            .get(d.base.replace("https://", "http://") + "/healthz")
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );
    // A connection opened before the rotation.
    let mut open = tls_connect(&d.base, client_tls(&ca1, Some(&alertmanager)))
        .await
        .expect("connect with the first certificate");
    assert_eq!(request_on(&mut open, "/healthz").await, 200);

    // Rotate: a certificate from another CA, written over the same files.
    let rotated = ca2.server(dir.path(), "rotated", &["127.0.0.1"]);
    std::fs::write(&leaf.cert_file, &rotated.cert_pem).expect("write cert");
    std::fs::write(&leaf.key_file, &rotated.key_pem).expect("write key");
    support::daemon::signal(d.pid(), "HUP");
    let new_clients = reqwest_https(&ca2, Some(&alertmanager));
    support::wait_until(
        "the rotated certificate served",
        Duration::from_secs(10),
        async || {
            new_clients
                .get(format!("{}/healthz", d.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;
    assert!(
        tls_connect(&d.base, client_tls(&ca1, Some(&alertmanager)))
            .await
            .is_err(),
        "new connections get the new certificate"
    );
    assert_eq!(
        request_on(&mut open, "/healthz").await,
        200,
        "the connection opened before the reload carries on"
    );
    assert!(
        d.metrics_with(&new_clients)
            .await
            .contains("incidentd_tls_reloads_total{outcome=\"success\"} 1")
    );

    // A broken file: the reload fails and the certificate in use stays.
    std::fs::write(&leaf.cert_file, "not a certificate").expect("write");
    support::daemon::signal(d.pid(), "HUP");
    support::wait_until(
        "the failed reload counted",
        Duration::from_secs(10),
        async || {
            d.metrics_with(&new_clients)
                .await
                .contains("incidentd_tls_reloads_total{outcome=\"failure\"} 1")
        },
    )
    .await;
    let r = new_clients
        .get(format!("{}/healthz", d.base))
        .send()
        .await
        .expect("still served with the last good certificate");
    assert!(r.status().is_success());
    assert!(d.log_text().contains("keeping the previous certificate"));
}

impl Daemon {
    async fn metrics_with(&self, client: &reqwest::Client) -> String {
        client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics")
    }
}

#[test]
fn check_loads_every_certificate_and_key_and_warns_of_clear_text_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("check");
    let a = ca.client(dir.path(), "a", "a");
    let b = ca.client(dir.path(), "b", "b");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").expect("write");
    let missing = dir.path().join("missing-ca.pem");
    let p = |p: &Path| format!("{:?}", p.display().to_string());
    write_config(
        dir.path(),
        &format!(
            r#"[http]
tls_cert_file = {garbage}
tls_key_file = {akey}

[[outbound.destinations]]
name = "mismatch"
kind = "pagerduty"
routing_key = "k"
client_cert_file = {acert}
client_key_file = {bkey}

[[outbound.destinations]]
name = "missing"
kind = "webhook"
url = "https://hooks.example.com/x"
secret = "s"
ca_file = {missing}

[[outbound.destinations]]
name = "cleartext"
kind = "servicenow"
url = "http://snow.example.com"
user = "u"
password = "p"
"#,
            garbage = p(&garbage),
            akey = p(&a.key_file),
            acert = p(&a.cert_file),
            bkey = p(&b.key_file),
            missing = p(&missing),
        ),
    );
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_incidentd"))
            .args(["check", "--config"])
            .arg(dir.path().join("incidentd.toml"))
            .arg("--rules")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
            .output()
            .expect("run check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run();
    assert_eq!(code, Some(1), "{err}");
    for want in [
        "http.tls",
        "garbage.pem",
        "(mismatch)",
        "does not belong to the certificate",
        "(missing)",
        "missing-ca.pem",
        "warning: outbound.destinations[2] (cleartext): http://snow.example.com is plain http://",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    // Fixed: only the warning remains, and check passes.
    write_config(
        dir.path(),
        &format!(
            r#"[[outbound.destinations]]
name = "mtls"
kind = "pagerduty"
routing_key = "k"
client_cert_file = {acert}
client_key_file = {akey}
ca_file = {ca}

[[outbound.destinations]]
name = "cleartext"
kind = "servicenow"
url = "http://snow.example.com"
user = "u"
password = "p"

[kafka]
brokers = "kafka-1.example.com:9092"
[[kafka.topics]]
name = "alerts"
[kafka.librdkafka]
"security.protocol" = "SASL_PLAINTEXT"
"#,
            acert = p(&a.cert_file),
            akey = p(&a.key_file),
            ca = p(&ca.write(dir.path(), "ca.pem")),
        ),
    );
    let (code, err) = run();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("warning: outbound.destinations[1] (cleartext)"),
        "{err}"
    );
    assert!(
        !err.contains("no API token"),
        "listening on 127.0.0.1: {err}"
    );
    assert!(
        err.contains("warning: kafka: security.protocol = sasl_plaintext"),
        "{err}"
    );
}
