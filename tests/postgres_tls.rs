//! PostgreSQL over TLS, the way a managed database is reached, against the
//! machine's own server (`INCIDENTD_TEST_POSTGRES_URL`; Debian runs it with
//! `ssl = on` and the snakeoil certificate, and `.ci/run` makes sure of
//! it). The real binary is started with each `sslmode` and the server is
//! asked whether the daemon's connections are encrypted. A private server
//! with a CA made in the test adds what the machine's cannot show: client
//! certificates, and libpq's `require` + `sslrootcert` verifying the chain.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::daemon::{Running, TestDaemon};
use support::pg::{PG_URL_VAR, ScratchDb};

fn admin_url() -> Option<String> {
    let v = std::env::var(PG_URL_VAR).ok();
    if v.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the PostgreSQL TLS tests need {PG_URL_VAR} (a PostgreSQL server with ssl = on)"
        );
    }
    v
}

/// The server's certificate (it must serve TLS), copied where the test
/// can name it as `sslrootcert`, and the DNS names it carries.
async fn server_certificate(admin: &str, dir: &Path) -> (PathBuf, Vec<String>) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(admin).await.expect("connect");
    let (ssl,): (String,) = sqlx::query_as("SHOW ssl")
        .fetch_one(&mut c)
        .await
        .expect("SHOW ssl");
    assert_eq!(
        ssl, "on",
        "the PostgreSQL server must serve TLS (ssl = on): .ci/run enables it"
    );
    let (file,): (String,) = sqlx::query_as("SHOW ssl_cert_file")
        .fetch_one(&mut c)
        .await
        .expect("SHOW ssl_cert_file");
    let _ = c.close().await;
    let copy = dir.join("server.crt");
    std::fs::copy(&file, &copy).unwrap_or_else(|e| panic!("reading {file}: {e}"));
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&copy)
        .output()
        .expect("openssl x509");
    let names = String::from_utf8_lossy(&out.stdout)
        .split([',', '\n'])
        .filter_map(|p| p.trim().strip_prefix("DNS:").map(str::to_string))
        .collect();
    (copy, names)
}

/// The daemon on `store`, none of libpq's variables or files in its way.
fn daemon(dir: &Path, store: &str) -> TestDaemon {
    [
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "HOME",
    ]
    .into_iter()
    .fold(
        TestDaemon::new(&dir.join("data"), dir),
        TestDaemon::env_remove,
    )
    .arg("--store")
    .arg(store)
}

/// Start the daemon on `store`; wait until it is ready.
async fn start(dir: &Path, store: &str) -> Running {
    let mut d = daemon(dir, store).start();
    d.wait_ready(Duration::from_secs(30)).await;
    d
}

/// Run the daemon on `store` expecting it to refuse to start; its exit
/// code and what it printed.
fn refused(dir: &Path, store: &str) -> (Option<i32>, String) {
    let (mut cmd, _) = daemon(dir, store).command();
    let out = cmd.output().expect("run incidentd");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The daemon's connections to `db`, and how many of them are encrypted.
async fn connections(admin: &str, db: &str) -> (i64, i64) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(admin).await.expect("connect");
    let row: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
    )
    .bind(db)
    .fetch_one(&mut c)
    .await
    .expect("pg_stat_ssl");
    let _ = c.close().await;
    row
}

fn with_params(url: &str, params: &str) -> String {
    format!("{url}{}{params}", if url.contains('?') { '&' } else { '?' })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_verify_ca_encrypt_every_connection() {
    let Some(admin) = admin_url() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = server_certificate(&admin, dir.path()).await;
    for params in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={}", root.display()),
    ] {
        let db = ScratchDb::create(&admin, "incidentd_tls").await;
        let d = start(dir.path(), &with_params(&db.url, &params)).await;
        let (all, encrypted) = connections(&admin, &db.name).await;
        assert!(all > 0, "{params}: the daemon holds connections");
        assert_eq!(encrypted, all, "{params}: every connection is TLS");
        drop(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_host_name() {
    let Some(admin) = admin_url() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, names) = server_certificate(&admin, dir.path()).await;
    let db = ScratchDb::create(&admin, "incidentd_tls").await;
    // The snakeoil certificate names a host, never an IP address.
    let params = format!("sslmode=verify-full&sslrootcert={}", root.display());
    let (code, text) = refused(dir.path(), &with_params(&db.url, &params));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("invalid peer certificate")
            && text.contains("not valid for name \"127.0.0.1\""),
        "the cause is named: {text}"
    );
    // Under a name the certificate carries (and that resolves here), it
    // connects.
    let Some(name) = names.iter().find(|n| *n == "localhost").or(names.first()) else {
        panic!("the server certificate carries no DNS name");
    };
    let url = with_params(&db.url.replace("127.0.0.1", name), &params);
    let d = start(dir.path(), &url).await;
    let (all, encrypted) = connections(&admin, &db.name).await;
    assert!(
        all > 0 && encrypted == all,
        "{all} connections, {encrypted} encrypted"
    );
    drop(d);
}

/// A PostgreSQL server of the test's own (the machine's binaries, a data
/// directory in a temp dir), serving TLS with a certificate from a CA made
/// in the test, and demanding client certificates (`hostssl … cert`): what
/// the machine's server (its snakeoil certificate is in the system trust
/// store here) cannot show. Runs as the `postgres` user when the test runs
/// as root. Stopped (by its PID) when dropped.
struct PrivatePg {
    children: support::Children,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name}: no PostgreSQL binaries under /usr/lib/postgresql"))
}

/// `cmd` as the postgres user when we are root (initdb refuses root).
fn as_server_user(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PrivatePg {
    async fn start(dir: &Path, server: &support::tls::Issued, client_ca: &Path) -> PrivatePg {
        let base = dir.join("pg");
        std::fs::create_dir_all(&base).expect("mkdir");
        let data = base.join("data");
        let owner = |p: &Path| {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(p)
                .status();
        };
        // The temp dir must be traversable by the server's user.
        let _ = Command::new("chmod").args(["755"]).arg(dir).status();
        owner(&base);
        let out = as_server_user(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for (from, to) in [
            (&server.cert_file, "server.crt"),
            (&server.key_file, "server.key"),
            (&client_ca.to_path_buf(), "clients-ca.crt"),
        ] {
            std::fs::copy(from, data.join(to)).expect("copy TLS file");
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\n",
        )
        .expect("pg_hba.conf");
        owner(&base);
        let _ = Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key"))
            .status();
        let port = support::free_ports(1)[0];
        let mut cmd = as_server_user(&pg_bin("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", base.display()))
            .args([
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
                "-c",
                "ssl_ca_file=clients-ca.crt",
                "-c",
                "fsync=off",
            ]);
        let mut children = support::Children::default();
        children.spawn("private-postgres", cmd, dir);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            children.assert_alive();
            assert!(
                Instant::now() < deadline,
                "the private PostgreSQL did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        PrivatePg { children, port }
    }
}

/// Connect as the daemon's store would (its URL rules, sqlx, rustls).
async fn try_connect(url: &str) -> Result<bool, String> {
    use sqlx::ConnectOptions;
    let options = incidentd::store::pg_connect_options(url, None).map_err(|e| e.to_string())?;
    let mut c = options.connect().await.map_err(|e| {
        let e: &(dyn std::error::Error + 'static) = &e;
        incidentd::net::chain(e)
    })?;
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut c)
            .await
            .map_err(|e| e.to_string())?;
    Ok(ssl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_client_certificates_and_libpq_require_semantics() {
    let Some(_) = admin_url() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = support::tls::TestCa::new("database");
    let clients = support::tls::TestCa::new("database-clients");
    let server = ca.server(dir.path(), "db", &["127.0.0.1", "db.internal"]);
    let clients_ca = clients.write(dir.path(), "clients-ca.pem");
    let pg = PrivatePg::start(dir.path(), &server, &clients_ca).await;
    let ca_file = ca.write(dir.path(), "db-ca.pem");
    // The server wants a certificate whose CN is the user.
    let user_cert = clients.client(dir.path(), "postgres-user", "postgres");
    let base = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    let cert = format!(
        "sslcert={}&sslkey={}",
        user_cert.cert_file.display(),
        user_cert.key_file.display()
    );

    // verify-full against the private CA, with a client certificate.
    let url = with_params(
        &base,
        &format!(
            "sslmode=verify-full&sslrootcert={}&{cert}",
            ca_file.display()
        ),
    );
    assert_eq!(try_connect(&url).await, Ok(true), "{url}");

    // The same without the client certificate: refused by the server.
    let url = with_params(
        &base,
        &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
    );
    let err = try_connect(&url).await.expect_err("no client certificate");
    assert!(err.contains("certificate"), "{err}");

    // Without a root certificate, verification has nothing to trust.
    let err = try_connect(&with_params(&base, &format!("sslmode=verify-ca&{cert}")))
        .await
        .expect_err("a private CA is not in the system store");
    assert!(err.contains("UnknownIssuer"), "{err}");

    // libpq: require encrypts without verifying...
    assert_eq!(
        try_connect(&with_params(&base, &format!("sslmode=require&{cert}"))).await,
        Ok(true)
    );
    // ...but with a root certificate it verifies the chain: a foreign CA
    // is refused, where sqlx alone would have accepted anything.
    let foreign = support::tls::TestCa::new("foreign").write(dir.path(), "foreign-ca.pem");
    let err = try_connect(&with_params(
        &base,
        &format!("sslmode=require&sslrootcert={}&{cert}", foreign.display()),
    ))
    .await
    .expect_err("require with a foreign root certificate");
    assert!(err.contains("UnknownIssuer"), "{err}");
    drop(pg.children);
}
