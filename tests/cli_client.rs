//! `incidentd incidents|services|cis|alerts` as an on-call engineer runs
//! them against a running daemon (the real binary on both sides): what the
//! tables show, what `-o json` gives scripts, what acting changes, and the
//! exit codes (0 ok, 1 the server said no, 2 usage, 3 unreachable, 4 not
//! found).

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::daemon::{AMBIENT, Running, TestDaemon};

const CMDB: &str = r#"
version: 1
services:
  - id: shop
    name: Shop
    tier: 1
    owner: team-shop
    sla: { response: { P1: 15m }, resolution: { P1: 4h } }
    slo: [{ name: availability, objective: 99.9, window: 30d }]
  - { id: blog, tier: 3 }
cis:
  - { id: shop-db, class: database, service: shop, owner: dba, match: { job: postgres } }
  - { id: shop-web, class: application, service: shop, depends_on: [shop-db] }
  - { id: blog-web, class: application, service: blog }
"#;

fn cmdb(dir: &Path) -> PathBuf {
    let f = dir.join("cmdb.yaml");
    std::fs::write(&f, CMDB).expect("write cmdb");
    f
}

async fn daemon(dir: &Path, config: Option<&str>) -> Running {
    let mut d = TestDaemon::new(&dir.join("data"), dir).cmdb(&cmdb(dir));
    if let Some(toml) = config {
        d = d.config(toml);
    }
    let mut r = d.start();
    r.wait_ready(Duration::from_secs(30)).await;
    r
}

/// The client as a user runs it: (exit code, stdout, stderr). Nothing of
/// the test machine's environment reaches it but what is set here.
fn client(server: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_incidentd"));
    cmd.args(args)
        .env("INCIDENTD_SERVER", server)
        .env("USER", "oncall")
        .env("COLUMNS", "200")
        .env_remove("INCIDENTD_TOKEN");
    for k in AMBIENT {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run incidentd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs the client and requires exit 0; its stdout.
fn ok(server: &str, args: &[&str]) -> String {
    let (code, out, err) = client(server, args, &[]);
    assert_eq!(code, 0, "incidentd {args:?}: {err}{out}");
    out
}

async fn post(base: &str, token: Option<&str>, alerts: Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/api/v1/alerts"))
        .json(&alerts);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("post alerts");
    assert!(r.status().is_success(), "{}", r.status());
}

async fn api(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

fn minutes_ago(m: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(m))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The table row of incident `id`.
fn row(table: &str, id: i64) -> String {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id.to_string().as_str()))
        .unwrap_or_else(|| panic!("no row for incident {id}:\n{table}"))
        .to_string()
}

#[tokio::test]
async fn the_on_call_engineer_reads_and_acts_from_the_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path(), None).await;
    let base = d.base.as_str();
    post(
        base,
        None,
        json!([
            {"labels": {"alertname": "PostgresDown", "job": "postgres", "severity": "critical"},
             "annotations": {"summary": "shop-db primary is down"}, "status": "firing", "startsAt": minutes_ago(3)},
            {"labels": {"alertname": "Watchdog"}, "status": "firing", "startsAt": minutes_ago(1)}
        ]),
    )
    .await;
    let listed = api(base, "/api/v1/incidents").await;
    let id = listed["incidents"][0]["id"].as_i64().expect("an incident");

    // The table: the incident's row with its priority, title, root CI,
    // service and the SLA clock that runs.
    let table = ok(base, &["incidents"]);
    assert!(table.starts_with("ID  PRI  STATE"), "{table}");
    let r = row(&table, id);
    for want in [
        "P1",
        "open",
        "PostgresDown: shop-db primary is down",
        "shop-db",
        "shop",
        "response 1",
    ] {
        assert!(r.contains(want), "{want:?} missing: {r}");
    }
    // `list` is the same; filters narrow it.
    assert_eq!(ok(base, &["incidents", "list"]), table);
    assert!(ok(base, &["incidents", "--priority", "P2"]).contains("no incidents"));
    assert!(ok(base, &["incidents", "--service", "shop"]).contains("PostgresDown"));

    // For scripts: the API's JSON.
    let json: Value =
        serde_json::from_str(&ok(base, &["incidents", "-o", "json"])).expect("JSON output");
    let same = |v: &Value| -> Vec<(i64, String, String)> {
        v["incidents"]
            .as_array()
            .expect("incidents")
            .iter()
            .map(|i| {
                (
                    i["id"].as_i64().unwrap_or(0),
                    i["title"].to_string(),
                    i["state"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(same(&json), same(&listed));
    assert!(json["incidents"][0]["sla"]["response"].is_object());

    // One incident: timers, alerts, a readable timeline.
    let show = ok(base, &["incidents", "show", &id.to_string()]);
    for want in [
        &format!("Incident {id}  P1  open"),
        "Services:     shop (tier 1)",
        "Assignment group: dba",
        "response    1",
        "resolution  3h5",
        "Alerts (1 firing, 0 resolved)",
        "shop-db primary is down",
        "opened by alert PostgresDown",
    ] {
        assert!(show.contains(want), "{want:?} missing:\n{show}");
    }
    let shown: Value = serde_json::from_str(&ok(
        base,
        &["incidents", "show", &id.to_string(), "-o", "json"],
    ))
    .expect("JSON");
    assert_eq!(shown["timeline"][0]["kind"], "opened");
    // Options go before or after the subcommand alike.
    let before: Value = serde_json::from_str(&ok(
        base,
        &["incidents", "-o", "json", "show", &id.to_string()],
    ))
    .expect("JSON");
    assert_eq!(before["id"], id);
    assert_eq!(
        ok(
            base,
            &["incidents", "--priority", "P1", "list", "--state", "all"]
        ),
        ok(
            base,
            &["incidents", "list", "--state", "all", "--priority", "P1"]
        )
    );

    // Acknowledge: $USER acts; the table shows the new state.
    let acked = ok(base, &["incidents", "ack", &id.to_string()]);
    assert!(
        acked.contains(&format!("incident {id} acknowledged")) && acked.contains("SLA: resolution"),
        "{acked}"
    );
    let detail = api(base, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(detail["acknowledged_by"], "oncall");
    assert!(row(&ok(base, &["incidents"]), id).contains("acknowledged"));
    // Again: the server says why not (exit 1).
    let (code, _, err) = client(base, &["incidents", "ack", &id.to_string()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already acknowledged"), "{err}");
    // Hold and resume, with who acted.
    let held = ok(
        base,
        &[
            "incidents",
            "hold",
            &id.to_string(),
            "--reason",
            "awaiting_vendor",
            "--by",
            "bob",
        ],
    );
    assert!(
        held.contains("(on hold)") && held.contains("(paused)"),
        "{held}"
    );
    assert!(row(&ok(base, &["incidents"]), id).contains("acknowledged (on hold)"));
    ok(base, &["incidents", "resume", &id.to_string()]);
    let timeline = ok(base, &["incidents", "show", &id.to_string()]);
    assert!(timeline.contains("bob"), "{timeline}");

    // Unknown ids: exit 4 with the server's message.
    let (code, out, err) = client(base, &["incidents", "show", "987654"], &[]);
    assert_eq!((code, out.as_str()), (4, ""), "{err}");
    assert!(err.contains("incident 987654 not found"), "{err}");
    let (code, _, err) = client(base, &["cis", "show", "no-such-ci"], &[]);
    assert_eq!(code, 4, "{err}");
    // A usage error is clap's: exit 2.
    let (code, _, err) = client(base, &["incidents", "show", "twelve"], &[]);
    assert_eq!(code, 2, "{err}");

    // Services, CIs, alerts.
    let services = ok(base, &["services"]);
    let shop = services
        .lines()
        .find(|l| l.starts_with("shop "))
        .unwrap_or_else(|| panic!("no shop row:\n{services}"));
    for want in ["availability", "99.90%", "1 ", "P1"] {
        assert!(shop.contains(want), "{want:?} missing: {shop}");
    }
    let cis = ok(base, &["cis", "--class", "application"]);
    assert!(
        cis.contains("shop-web") && cis.contains("blog-web") && !cis.contains("shop-db "),
        "{cis}"
    );
    assert!(!ok(base, &["cis", "--service", "blog"]).contains("shop-web"));
    let ci = ok(base, &["cis", "show", "shop-db"]);
    assert!(
        ci.contains("Dependents:        shop-web")
            && ci.contains("Its failure hurts: shop (tier 1)"),
        "{ci}"
    );
    let alerts = ok(base, &["alerts"]);
    assert!(
        alerts.contains("PostgresDown")
            && alerts.contains(&id.to_string())
            && !alerts.contains("Watchdog"),
        "{alerts}"
    );
    let suppressed = ok(base, &["alerts", "--suppressed"]);
    assert!(
        suppressed.contains("Watchdog") && suppressed.contains("suppress-heartbeats"),
        "{suppressed}"
    );
    let as_json: Value =
        serde_json::from_str(&ok(base, &["alerts", "-o", "json", "--ci", "shop-db"]))
            .expect("JSON");
    assert_eq!(as_json["alerts"][0]["alertname"], "PostgresDown");

    // Resolved: gone from the active list, there with --state all.
    ok(base, &["incidents", "resolve", &id.to_string()]);
    assert!(ok(base, &["incidents"]).contains("no incidents"));
    assert!(row(&ok(base, &["incidents", "--state", "all"]), id).contains("resolved"));
}

#[tokio::test]
async fn tokens_come_from_the_environment_or_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (reader, operator) = (dir.path().join("reader"), dir.path().join("operator"));
    std::fs::write(&reader, "read-secret\n").expect("write");
    std::fs::write(&operator, "ops-secret\n").expect("write");
    let toml = format!(
        "[api.read_tokens]\nviewer = {reader:?}\n[api.operator_tokens]\nops = {operator:?}\n"
    );
    let d = daemon(dir.path(), Some(&toml)).await;
    let base = d.base.as_str();
    post(
        base,
        None,
        json!([{"labels": {"alertname": "PostgresDown", "job": "postgres", "severity": "critical"},
                "status": "firing", "startsAt": minutes_ago(1)}]),
    )
    .await;
    // No token: the server refuses, and the message says how to give one.
    let (code, _, err) = client(base, &["incidents"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("INCIDENTD_TOKEN"), "{err}");
    let (code, out, err) = client(base, &["incidents"], &[("INCIDENTD_TOKEN", "read-secret")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PostgresDown"), "{out}");
    // A reader may not act.
    let id = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a row")
        .to_string();
    let (code, _, err) = client(
        base,
        &["incidents", "ack", &id],
        &[("INCIDENTD_TOKEN", "read-secret")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("403"), "{err}");
    // The file wins over the environment; the token's name is who acted.
    let file = operator.to_str().expect("utf-8 path");
    let (code, out, err) = client(
        base,
        &["incidents", "ack", &id, "--token-file", file],
        &[("INCIDENTD_TOKEN", "read-secret")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acknowledged"), "{out}");
    let (_, shown, _) = client(base, &["incidents", "show", &id, "--token-file", file], &[]);
    assert!(shown.contains("by ops"), "{shown}");
    // A token file that cannot be read is a usage error.
    let (code, _, err) = client(
        base,
        &["incidents", "--token-file", "/nonexistent/token"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/token"), "{err}");
}

#[test]
fn a_server_that_is_not_there_is_exit_3_naming_its_url() {
    let port = support::free_ports(1)[0];
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["incidents"],
        vec!["services"],
        vec!["alerts", "--suppressed"],
    ] {
        let (code, out, err) = client(&url, &args, &[]);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(out.is_empty());
        assert!(
            err.contains(&format!("cannot reach incidentd at {url}")),
            "{args:?}: {err}"
        );
    }
    // --server wins over the environment.
    let (code, _, err) = client("http://127.0.0.1:9", &["incidents", "--server", &url], &[]);
    assert_eq!(code, 3);
    assert!(err.contains(&url), "{err}");
}

#[test]
fn completions_cover_the_client_commands() {
    let (code, bash, err) = client("http://127.0.0.1:9", &["completions", "bash"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        bash.contains("_incidentd()"),
        "not a bash completion script"
    );
    for word in [
        "incidents",
        "services",
        "cis",
        "alerts",
        "ack",
        "--suppressed",
    ] {
        assert!(bash.contains(word), "{word} missing from the bash script");
    }
    for shell in ["zsh", "fish"] {
        let (code, script, err) = client("http://127.0.0.1:9", &["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(script.contains("incidents"), "{shell}");
    }
}

/// An https listener that demands client certificates: the client trusts
/// it with `--ca-file` and shows `--client-cert`/`--client-key`; without
/// the CA, the certificate is not trusted and the server is unreachable
/// (exit 3, saying why).
#[tokio::test]
async fn an_https_listener_with_client_certificates() {
    use support::tls::TestCa;
    let dir = tempfile::tempdir().expect("tempdir");
    let (server_ca, clients) = (TestCa::new("listener"), TestCa::new("operators"));
    let leaf = server_ca.server(dir.path(), "listener", &["127.0.0.1"]);
    let ca_file = server_ca.write(dir.path(), "ca.pem");
    let client_ca = clients.write(dir.path(), "clients-ca.pem");
    let me = clients.client(dir.path(), "oncall", "oncall");
    let toml = format!(
        "[http]\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_client_ca_file = {:?}\n",
        leaf.cert_file, leaf.key_file, client_ca
    );
    let mut d = TestDaemon::new(&dir.path().join("data"), dir.path())
        .cmdb(&cmdb(dir.path()))
        .config(&toml)
        .https()
        .start();
    let base = d.base.clone();
    let (ca, cert, key) = (
        ca_file.to_str().expect("path"),
        me.cert_file.to_str().expect("path"),
        me.key_file.to_str().expect("path"),
    );
    let args = [
        "services",
        "--ca-file",
        ca,
        "--client-cert",
        cert,
        "--client-key",
        key,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let out = loop {
        assert!(d.exited().is_none(), "the daemon exited: {}", d.log_text());
        let (code, out, err) = client(&base, &args, &[]);
        if code == 0 {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not served over https: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(out.contains("availability"), "{out}");
    let (code, _, err) = client(
        &base,
        &["services", "--client-cert", cert, "--client-key", key],
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!("cannot reach incidentd at {base}")) && err.contains("certificate"),
        "{err}"
    );
}
