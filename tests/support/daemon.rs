//! The real `incidentd serve`, for suites that drive the binary: one free
//! port, the repo's rules unless told otherwise, stdout and stderr in a log
//! file that is printed when the test fails, and a kill when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start one daemon; `start` runs it.
pub struct TestDaemon {
    data_dir: PathBuf,
    log_dir: PathBuf,
    rules: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

/// A started daemon.
pub struct Running {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl TestDaemon {
    /// A daemon keeping its record in `data_dir`, logging into `log_dir`.
    pub fn new(data_dir: &Path, log_dir: &Path) -> Self {
        TestDaemon {
            data_dir: data_dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            rules: Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
        }
    }

    pub fn rules(mut self, dir: &Path) -> Self {
        self.rules = dir.to_path_buf();
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Where relative paths of its configuration are taken from.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Spawns it; does not wait for it to be ready (see [`Running::wait_ready`]).
    pub fn start(self) -> Running {
        let port = super::free_ports(1)[0];
        let log = self.log_dir.join("incidentd.log");
        // Appended: a suite that restarts the daemon keeps every run's log.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_incidentd"));
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
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().expect("spawn incidentd");
        Running {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Until `/readyz` answers 200 (a failure names the log).
    pub async fn wait_ready(&self, within: Duration) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let deadline = Instant::now() + within;
        loop {
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- incidentd log ---\n{}", self.log_text());
        }
    }
}
