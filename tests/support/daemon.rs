//! The real `incidentd serve`, for every suite that drives the binary: a
//! free port (or one chosen ahead, when another server's configuration
//! must name it), the repo's rules unless told otherwise, stdout and stderr
//! in a log file that is printed when the test fails, and a kill when
//! dropped. Suites that run several servers take the [`Command`] into their
//! [`super::Children`] instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start one daemon; `start` runs it.
pub struct TestDaemon {
    data_dir: PathBuf,
    log_dir: PathBuf,
    name: String,
    rules: PathBuf,
    port: Option<u16>,
    scheme: &'static str,
    fd_limit: Option<u32>,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(String, String)>,
    env_removed: Vec<String>,
    cwd: Option<PathBuf>,
}

/// A started daemon.
pub struct Running {
    child: Child,
    /// `http://127.0.0.1:PORT` (`https://` with [`TestDaemon::https`]).
    pub base: String,
    pub port: u16,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

/// Overrides `[outbound] settle` (the configuration's environment layer).
const SETTLE_VAR: &str = "INCIDENTD_CONFIG__OUTBOUND__SETTLE";

/// The variables through which a test machine's own settings would reach
/// the daemon (proxies, CA bundles, log filters): suites that test those
/// settings start from none of them.
pub const AMBIENT: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "RUST_LOG",
];

impl TestDaemon {
    /// A daemon keeping its record in `data_dir`, logging into `log_dir`.
    pub fn new(data_dir: &Path, log_dir: &Path) -> Self {
        TestDaemon {
            data_dir: data_dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            name: "incidentd".into(),
            rules: Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
            port: None,
            scheme: "http",
            fd_limit: None,
            args: Vec::new(),
            // Destinations hear of new incidents at once: the suites about
            // delivery are not about the settle delay, which has tests of
            // its own (see `super::announce_at_once`; `settle_default`).
            envs: vec![(SETTLE_VAR.into(), "0s".into())],
            env_removed: Vec::new(),
            cwd: None,
        }
    }

    /// Names its log (`<name>.log`) and configuration file (`<name>.toml`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    pub fn rules(mut self, dir: &Path) -> Self {
        self.rules = dir.to_path_buf();
        self
    }

    /// Runs with `toml` as its configuration file (written beside the log).
    pub fn config(self, toml: &str) -> Self {
        let file = self.log_dir.join(format!("{}.toml", self.name));
        std::fs::write(&file, toml).expect("write config");
        self.arg("--config").arg(file)
    }

    pub fn cmdb(self, file: &Path) -> Self {
        self.arg("--cmdb").arg(file)
    }

    /// Listens on `port` rather than a free one chosen at start.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Its listener serves TLS (configured by the suite): `base` is https.
    pub fn https(mut self) -> Self {
        self.scheme = "https";
        self
    }

    /// Started under `ulimit -n limit`, as in a small container.
    pub fn fd_limit(mut self, limit: u32) -> Self {
        self.fd_limit = Some(limit);
        self
    }

    pub fn arg(mut self, a: impl Into<std::ffi::OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Keeps the configured settle delay (by default the suite's daemons
    /// announce new incidents at once).
    pub fn settle_default(mut self) -> Self {
        self.envs.retain(|(k, _)| k != SETTLE_VAR);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Starts it without `k` in its environment.
    pub fn env_remove(mut self, k: &str) -> Self {
        self.env_removed.push(k.into());
        self
    }

    /// Where relative paths of its configuration are taken from.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// The command line, for a suite that manages its processes itself,
    /// and the base URL it will serve.
    pub fn command(self) -> (Command, String) {
        let (cmd, port) = self.build();
        (cmd, format!("{}://127.0.0.1:{port}", self.scheme))
    }

    fn build(&self) -> (Command, u16) {
        let port = self.port.unwrap_or_else(|| super::free_ports(1)[0]);
        let mut cmd = match self.fd_limit {
            Some(n) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_incidentd"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_incidentd")),
        };
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&self.data_dir)
        .arg("--rules")
        .arg(&self.rules)
        .args(&self.args)
        .env("NO_COLOR", "1");
        for k in &self.env_removed {
            cmd.env_remove(k);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        (cmd, port)
    }

    /// Spawns it; does not wait for it to be ready (see [`Running::wait_ready`]).
    pub fn start(self) -> Running {
        let (mut cmd, port) = self.build();
        let log = self.log_dir.join(format!("{}.log", self.name));
        // Appended: a suite that restarts the daemon keeps every run's log.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out);
        let child = cmd.spawn().expect("spawn incidentd");
        Running {
            child,
            base: format!("{}://127.0.0.1:{port}", self.scheme),
            port,
            log,
        }
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Until `/readyz` answers 200 (a failure names the log).
    pub async fn wait_ready(&mut self, within: Duration) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        self.wait_ready_via(&client, within).await;
    }

    /// Until `/readyz` answers 200 over `client` (one that trusts an https
    /// listener); an exit before that fails at once, with the log.
    pub async fn wait_ready_via(&mut self, client: &reqwest::Client, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("incidentd exited at start ({status}):\n{}", self.log_text());
            }
            let ok = client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "incidentd not ready within {within:?}; log: {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, and wait for the exit: a clean stop, as systemd does it.
    pub fn stop(&mut self) {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("incidentd did not stop on SIGTERM");
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Sends `SIG<name>` to the process `pid` (one this test started).
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid}");
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- incidentd log ({}) ---\n{}\n--- end ---",
                self.log.display(),
                self.log_text()
            );
        }
    }
}
