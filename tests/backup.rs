//! `incidentd backup` as an operator runs it: beside a running daemon,
//! into a file and onto stdout; a second daemon starts from the copy with
//! the incidents; what it refuses, it refuses with exit 1 and the path or
//! setting at fault.

use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::Duration;

mod support;

use support::daemon::TestDaemon;

/// `incidentd backup ARGS` with none of the operator's settings from the
/// environment.
fn backup(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .arg("backup")
        .args(args)
        .env_remove("INCIDENTD_CONFIG")
        .env_remove("INCIDENTD_STORE")
        .output()
        .expect("run incidentd backup")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The titles of every incident the daemon at `base` holds.
async fn titles(base: &str) -> Vec<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let v = support::get_json(
        &client,
        &format!("{base}/api/v1/incidents?state=all&limit=1000"),
    )
    .await
    .expect("incidents");
    let mut t: Vec<String> = v["incidents"]
        .as_array()
        .expect("incidents array")
        .iter()
        .map(|i| i["title"].as_str().expect("title").to_string())
        .collect();
    t.sort();
    t
}

fn host_down(host: &str) -> Value {
    json!({"alertname": "HostDown", "instance": format!("{host}:9100"), "severity": "critical"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_taken_beside_a_running_daemon_starts_a_daemon_with_its_incidents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut first = TestDaemon::new(&data, dir.path())
        .name("first")
        .env("RUST_LOG", "warn")
        .start();
    first.wait_ready(Duration::from_secs(20)).await;
    for host in ["db-1", "db-2", "web-1"] {
        support::post_alert(&first.base, host_down(host)).await;
    }
    let expected = titles(&first.base).await;
    assert_eq!(expected.len(), 3, "{expected:?}");

    // Into a file, the daemon running.
    let copy = dir.path().join("copy.db");
    let o = backup(&["--data-dir".as_ref(), data.as_os_str(), copy.as_os_str()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(o.stdout.is_empty(), "nothing on stdout with a file");
    let size = std::fs::metadata(&copy).expect("the copy").len();
    assert!(
        err.contains(&format!("{}", data.join("incidentd.db").display()))
            && err.contains("3 incidents")
            && err.contains(&format!("{size} bytes"))
            && err.contains(&copy.display().to_string()),
        "one summary line: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // Onto stdout: the database's bytes, the summary on stderr only.
    let o = backup(&["--data-dir".as_ref(), data.as_os_str(), "-".as_ref()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("3 incidents") && err.contains(&format!("{} bytes", o.stdout.len())),
        "{err}"
    );
    assert!(o.stdout.starts_with(b"SQLite format 3\0"));
    // The staged copy is gone from the data directory.
    let names: Vec<String> = std::fs::read_dir(&data)
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("incidentd-backup")),
        "{names:?}"
    );
    let piped = dir.path().join("piped.db");
    std::fs::write(&piped, &o.stdout).expect("write");
    let mut conn = {
        use sqlx::ConnectOptions;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&piped)
            .read_only(true)
            .connect()
            .await
            .expect("the bytes from stdout open as a database")
    };
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM incidents")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(n, 3);

    // The daemon went on undisturbed.
    support::post_alert(&first.base, host_down("web-2")).await;
    assert_eq!(titles(&first.base).await.len(), 4);

    // Restored on its own data directory, a second daemon serves the
    // incidents the copy held.
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).expect("mkdir");
    std::fs::copy(&copy, restored.join("incidentd.db")).expect("restore");
    let mut second = TestDaemon::new(&restored, dir.path())
        .name("second")
        .env("RUST_LOG", "warn")
        .start();
    second.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(titles(&second.base).await, expected);
    first.stop();
    second.stop();
}

#[tokio::test]
async fn refusals_exit_1_naming_the_path_or_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("copy.db");

    // No database in the data directory.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let o = backup(&["--data-dir".as_ref(), empty.as_os_str(), out.as_os_str()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&empty.join("incidentd.db").display().to_string()),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    assert_eq!(
        std::fs::read_dir(&empty).expect("dir").count(),
        0,
        "no database created"
    );

    let data = dir.path().join("data");
    drop(
        incidentd::store::SqliteStore::open_dir(&data, Default::default())
            .await
            .expect("a database"),
    );

    // OUT exists: never overwritten.
    std::fs::write(&out, b"an older backup").expect("write");
    let o = backup(&["--data-dir".as_ref(), data.as_os_str(), out.as_os_str()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&out.display().to_string()) && err.contains("exists"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).expect("read"), b"an older backup");

    // OUT's directory is missing.
    let nowhere = dir.path().join("missing");
    let o = backup(&[
        "--data-dir".as_ref(),
        data.as_os_str(),
        nowhere.join("copy.db").as_os_str(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&nowhere.display().to_string()), "{err}");
    assert!(!nowhere.exists());

    // A PostgreSQL store, in the config file or as serve's variable.
    let cfg = dir.path().join("pg.toml");
    std::fs::write(
        &cfg,
        "[store]\nurl = \"postgres://incidentd:s3cret@db.example:5432/incidentd\"\n",
    )
    .expect("write config");
    let fresh = dir.path().join("fresh.db");
    let o = backup(&[
        "--config".as_ref(),
        cfg.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        fresh.as_os_str(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("store.url in {}", cfg.display())) && err.contains("pg_dump"),
        "{err}"
    );
    assert!(
        !err.contains("s3cret"),
        "the password is not printed: {err}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg(&fresh)
        .env_remove("INCIDENTD_CONFIG")
        .env(
            "INCIDENTD_STORE",
            "postgres://incidentd@db.example/incidentd",
        )
        .output()
        .expect("run");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("INCIDENTD_STORE") && err.contains("pg_dump"),
        "{err}"
    );
    assert!(!fresh.exists());
}
