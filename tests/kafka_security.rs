//! What managed Kafka needs from the built librdkafka, proven here: TLS,
//! SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) and every compression
//! codec. Without a server: client creation with each security setting
//! (librdkafka refuses settings its build cannot honour, and loads the
//! certificate files at creation), and a compressed batch per codec
//! produced to the mock cluster and consumed into incidents. With tansu
//! (`INCIDENTD_TEST_KAFKA_BROKERS`, the `tansu` program built with its
//! `libsql` storage, as `.ci/run` builds it): end-to-end consumes over TLS
//! with client certificates, and over SASL_SSL with SCRAM-SHA-512 against
//! a broker that checks the password, tansu behind a TLS terminator as
//! managed brokers sit behind their listeners.

mod support;

use incidentd::app::{self, Running};
use incidentd::config::Config;
use incidentd::domain::SystemClock;
use incidentd::store::{IncidentQuery, StateFilter};
use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::tls::TestCa;

#[test]
fn the_build_has_ssl_sasl_and_every_codec() {
    let native = ClientConfig::new()
        .create_native_config()
        .expect("native config");
    let features = native.get("builtin.features").expect("builtin.features");
    for f in [
        "gzip",
        "snappy",
        "ssl",
        "sasl_plain",
        "sasl_scram",
        "sasl_oauthbearer",
        "zstd",
        "lz4",
    ] {
        assert!(
            features.split(',').any(|x| x == f),
            "librdkafka built without {f}: {features}"
        );
    }
}

/// A consumer with these settings can be created: librdkafka accepts the
/// protocol and mechanism and loads the files.
fn creates(settings: &[(&str, &str)]) -> Result<(), String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", "127.0.0.1:9")
        .set("group.id", "security-check");
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c.create::<BaseConsumer>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn managed_kafka_settings_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("kafka");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let ca_path = ca_file.to_str().expect("path");
    let client = ca.client(dir.path(), "client", "incidentd");
    let cert = client.cert_file.to_str().expect("path");
    let key = client.key_file.to_str().expect("path");
    // Confluent Cloud: SASL_SSL + PLAIN, the system CA store.
    creates(&[
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.username", "API_KEY"),
        ("sasl.password", "API_SECRET"),
    ])
    .expect("SASL_SSL + PLAIN");
    // Amazon MSK: TLS + SCRAM-SHA-512 (and -256), a CA file.
    for mech in ["SCRAM-SHA-512", "SCRAM-SHA-256"] {
        creates(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", mech),
            ("sasl.username", "incidentd"),
            ("sasl.password", "secret"),
            ("ssl.ca.location", ca_path),
        ])
        .unwrap_or_else(|e| panic!("SASL_SSL + {mech}: {e}"));
    }
    // Aiven: mutual TLS.
    creates(&[
        ("security.protocol", "ssl"),
        ("ssl.ca.location", ca_path),
        ("ssl.certificate.location", cert),
        ("ssl.key.location", key),
    ])
    .expect("mutual TLS");
    // OAUTHBEARER with a token the application provides.
    creates(&[
        ("security.protocol", "sasl_ssl"),
        ("sasl.mechanism", "OAUTHBEARER"),
        ("sasl.oauthbearer.config", "principal=incidentd"),
    ])
    .expect("OAUTHBEARER");
    // The files are really read: a key of another certificate is refused
    // at creation, not at the first connection.
    let other = ca.client(dir.path(), "other", "other");
    let err = creates(&[
        ("security.protocol", "ssl"),
        ("ssl.ca.location", ca_path),
        ("ssl.certificate.location", cert),
        ("ssl.key.location", other.key_file.to_str().expect("path")),
    ])
    .expect_err("a mismatched key is refused");
    assert!(err.to_lowercase().contains("key"), "{err}");
}

fn config(dir: &Path, toml: &str) -> Config {
    support::config_in(dir, toml)
}

async fn titles(r: &Running) -> Vec<String> {
    r.store
        .list_incidents(IncidentQuery {
            state: StateFilter::All,
            limit: 1000,
            before: None,
            ..Default::default()
        })
        .await
        .expect("store")
        .into_iter()
        .map(|i| i.title.into())
        .collect()
}

async fn wait_titles(r: &Running, names: &[String], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let t = titles(r).await;
        if names
            .iter()
            .all(|n| t.iter().any(|x| x.contains(n.as_str())))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: wanted incidents for {names:?}, have {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alert(name: &str) -> String {
    format!(
        r#"{{"labels":{{"alertname":"{name}","instance":"{name}:9100","severity":"critical"}},"startsAt":"2026-12-04T10:00:00Z"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_of_every_codec_are_consumed() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    for c in codecs {
        cluster
            .create_topic(&format!("alerts-{c}"), 1, 1)
            .expect("topic");
    }
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let topics: String = codecs
        .iter()
        .map(|c| format!("[[kafka.topics]]\nname = \"alerts-{c}\"\n"))
        .collect();
    let c = config(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"codecs\"\nbatch_wait = \"2ms\"\n{topics}"
        ),
    );
    let r = app::start(&c, Arc::new(SystemClock)).await.expect("start");
    let mut names = Vec::new();
    for codec in codecs {
        // A batch of several messages, so the codec has something to
        // compress (librdkafka compresses per batch).
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("compression.type", codec)
            .set("linger.ms", "50")
            .create()
            .unwrap_or_else(|e| panic!("{codec} producer: {e}"));
        let batch: Vec<String> = (0..20).map(|i| format!("Compressed{codec}{i}")).collect();
        let topic = format!("alerts-{codec}");
        let mut pending = Vec::new();
        for n in &batch {
            let payload = alert(n);
            let f = p
                .send_result(FutureRecord::to(&topic).key(n.as_str()).payload(&payload))
                .map_err(|(e, _)| e.to_string())
                .unwrap_or_else(|e| panic!("{codec}: {e}"));
            pending.push(f);
        }
        for f in pending {
            f.await
                .expect("delivery report")
                .map_err(|(e, _)| e.to_string())
                .unwrap_or_else(|e| panic!("{codec}: {e}"));
        }
        names.extend(batch);
    }
    wait_titles(&r, &names, 30).await;
    r.shutdown().await;
}

/// What the TLS terminator saw: completed handshakes, and how many of
/// them presented a client certificate.
#[derive(Default)]
struct Terminated {
    handshakes: usize,
    with_client_cert: usize,
    failed: Vec<String>,
}

/// A TLS terminator on 127.0.0.1 in front of `upstream`; with
/// `client_ca`, it requires client certificates that CA signed.
async fn tls_terminator(
    leaf: &support::tls::Issued,
    client_ca: Option<&TestCa>,
    upstream: String,
) -> (u16, Arc<Mutex<Terminated>>) {
    let config = Arc::new(support::tls::server_config(leaf, client_ca));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Terminated::default()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        loop {
            let Ok((s, _)) = tcp.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(s).await {
                    Ok(t) => t,
                    Err(e) => {
                        seen.lock().expect("seen").failed.push(e.to_string());
                        return;
                    }
                };
                {
                    let mut g = seen.lock().expect("seen");
                    g.handshakes += 1;
                    if tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty())
                    {
                        g.with_client_cert += 1;
                    }
                }
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (port, seen)
}

fn tansu_or_skip(test: &str) -> Option<PathBuf> {
    if std::env::var("INCIDENTD_TEST_KAFKA_BROKERS").is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped kafka_security::{test}: needs INCIDENTD_TEST_KAFKA_BROKERS and the tansu program (.ci/run builds and starts it)"
        );
        return None;
    }
    Some(
        support::find_program(&["tansu"])
            .expect("INCIDENTD_TEST_KAFKA_BROKERS is set, so tansu must be on PATH"),
    )
}

/// How the e2e client authenticates.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// TLS with a client certificate (Aiven style).
    ClientCertificate,
    /// SASL_SSL with SCRAM-SHA-512 (Amazon MSK style): tansu with
    /// `--authentication` checks the password against the SCRAM
    /// credentials it stores.
    SaslScram,
}

const SCRAM_USER: &str = "incidentd";
const SCRAM_PASSWORD: &str = "kafka-scram-secret";

/// tansu behind a TLS terminator; incidentd consumes a topic through it
/// with `auth`; an alert produced through it (zstd) becomes an incident.
async fn end_to_end(tansu: &Path, auth: Auth) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("kafka-brokers");
    let clients = TestCa::new("kafka-clients");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let leaf = ca.server(dir.path(), "broker", &["localhost", "127.0.0.1"]);
    let client = clients.client(dir.path(), "incidentd", "incidentd");
    // tansu listens in plain text on one port and advertises the
    // terminator's: every client connection, bootstrap and partition
    // leader alike, goes through TLS.
    let ports = support::free_ports(1);
    let plain = format!("127.0.0.1:{}", ports[0]);
    let need_cert = (auth == Auth::ClientCertificate).then_some(&clients);
    let (tls_port, seen) = tls_terminator(&leaf, need_cert, plain.clone()).await;
    let mut children = support::Children::default();
    // SCRAM credentials live in the broker's storage: a file, so that the
    // user made before authentication is switched on is still there after.
    // (tansu takes the path of a sqlite URL relative to its working
    // directory, which is the temp dir.)
    let storage = "sqlite://tansu.db".to_string();
    let broker = |children: &mut support::Children, name: &str, authenticate: bool| {
        let mut cmd = std::process::Command::new(tansu);
        cmd.args([
            "broker",
            "--storage-engine",
            &storage,
            "--listener-url",
            &format!("tcp://{plain}"),
            "--advertised-listener-url",
            &format!("tcp://localhost:{tls_port}"),
        ]);
        if authenticate {
            cmd.arg("--authentication");
        }
        cmd.current_dir(dir.path());
        children.spawn(name, cmd, dir.path());
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&plain).is_err() {
            children.assert_alive();
            assert!(Instant::now() < deadline, "tansu did not listen on {plain}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    if auth == Auth::SaslScram {
        broker(&mut children, "tansu-setup", false);
        let out = std::process::Command::new(tansu)
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://{plain}"),
                "--mechanism",
                "scram512",
                SCRAM_USER,
                SCRAM_PASSWORD,
            ])
            .output()
            .expect("tansu user create");
        assert!(
            out.status.success(),
            "tansu user create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        children.forget_killed("tansu-setup");
        while std::net::TcpStream::connect(&plain).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    broker(&mut children, "tansu-secured", auth == Auth::SaslScram);
    let brokers = format!("localhost:{tls_port}");
    let ca_path = ca_file.to_str().expect("path").to_string();
    let mut security: Vec<(&str, String)> = vec![("ssl.ca.location", ca_path)];
    match auth {
        Auth::ClientCertificate => {
            security.push(("security.protocol", "ssl".into()));
            security.push((
                "ssl.certificate.location",
                client.cert_file.to_str().expect("path").into(),
            ));
            security.push((
                "ssl.key.location",
                client.key_file.to_str().expect("path").into(),
            ));
        }
        Auth::SaslScram => {
            security.push(("security.protocol", "sasl_ssl".into()));
            security.push(("sasl.mechanism", "SCRAM-SHA-512".into()));
            security.push(("sasl.username", SCRAM_USER.into()));
            security.push(("sasl.password", SCRAM_PASSWORD.into()));
        }
    }
    let client_config = |extra: &[(&str, &str)]| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &brokers);
        for (k, v) in &security {
            c.set(*k, v.as_str());
        }
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    };
    if auth == Auth::SaslScram {
        // The broker really checks: TLS alone, or a wrong password, gets
        // nowhere.
        let ca = ca_file.to_str().expect("path");
        for (what, extra) in [
            ("without SASL", vec![("security.protocol", "ssl")]),
            (
                "with a wrong password",
                vec![
                    ("security.protocol", "sasl_ssl"),
                    ("sasl.mechanism", "SCRAM-SHA-512"),
                    ("sasl.username", SCRAM_USER),
                    ("sasl.password", "wrong-password"),
                ],
            ),
        ] {
            let mut bare = ClientConfig::new();
            bare.set("bootstrap.servers", &brokers)
                .set("ssl.ca.location", ca);
            for (k, v) in extra {
                bare.set(k, v);
            }
            let c: BaseConsumer = bare.create().expect("consumer");
            assert!(
                rdkafka::consumer::Consumer::fetch_metadata(&c, None, Duration::from_secs(5))
                    .is_err(),
                "a client {what} must not read metadata"
            );
        }
    }
    // The topic, made through the same secured connection.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(&[]).create().expect("admin client");
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                "secure-alerts",
                1,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic")
        .into_iter()
        .for_each(|r| {
            r.unwrap_or_else(|(t, e)| panic!("topic {t}: {e}"));
        });
    let mut toml = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"secured-e2e\"\nbatch_wait = \"2ms\"\n[[kafka.topics]]\nname = \"secure-alerts\"\n[kafka.librdkafka]\n"
    );
    let password_file = dir.path().join("kafka-password");
    for (k, v) in &security {
        // The SASL password the way an operator keeps it: in a file.
        if *k == "sasl.password" {
            std::fs::write(&password_file, v).expect("write password");
            continue;
        }
        toml.push_str(&format!("{k:?} = {v:?}\n"));
    }
    if auth == Auth::SaslScram {
        toml.push_str(&format!(
            "[kafka.librdkafka_secret_files]\n\"sasl.password\" = {:?}\n",
            password_file.display().to_string()
        ));
    }
    let c = config(dir.path(), &toml);
    let r = app::start(&c, Arc::new(SystemClock)).await.expect("start");
    let p: FutureProducer = client_config(&[("compression.type", "zstd")])
        .create()
        .expect("producer");
    p.send(
        FutureRecord::to("secure-alerts")
            .key("k")
            .payload(&alert("SecuredKafka")),
        Duration::from_secs(15),
    )
    .await
    .map_err(|(e, _)| e.to_string())
    .expect("produced");
    wait_titles(&r, &["SecuredKafka".to_string()], 60).await;
    r.shutdown().await;
    let s = seen.lock().expect("seen");
    assert!(
        s.handshakes >= 2,
        "clients connected through TLS: {}",
        s.handshakes
    );
    if auth == Auth::ClientCertificate {
        assert_eq!(
            s.with_client_cert, s.handshakes,
            "every connection presented its client certificate"
        );
        assert!(s.failed.is_empty(), "no handshake failed: {:?}", s.failed);
    }
    drop(children);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_end_to_end_over_tls_with_client_certificates() {
    let Some(tansu) = tansu_or_skip("consumed_end_to_end_over_tls_with_client_certificates") else {
        return;
    };
    end_to_end(&tansu, Auth::ClientCertificate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumed_end_to_end_over_sasl_ssl_with_scram_sha_512() {
    let Some(tansu) = tansu_or_skip("consumed_end_to_end_over_sasl_ssl_with_scram_sha_512") else {
        return;
    };
    end_to_end(&tansu, Auth::SaslScram).await;
}
