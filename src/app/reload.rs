//! Keeping the CMDB and the rules current: re-read the CMDB file and the
//! rule directory when they change (or on SIGHUP), pull CIs from a
//! ServiceNow-style API on an interval, merge the sources and swap the new
//! graph into the engine and the API. A source that fails keeps the last
//! good CMDB (or rules) and says why.

use crate::cmdb::{self, Cmdb, CmdbFile, SharedCmdb, servicenow};
use crate::config::{Config, Secret, ServiceNowAuth, ServiceNowConfig};
use crate::incident::task::EngineHandle;
use crate::offline::daemon_rules;
use crate::telemetry::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct CmdbReloader {
    inner: Arc<Inner>,
}

struct Inner {
    path: Option<PathBuf>,
    cell: SharedCmdb,
    engine: EngineHandle,
    metrics: Metrics,
    state: tokio::sync::Mutex<Sources>,
}

#[derive(Default)]
struct Sources {
    file_stamp: Option<Stamp>,
    file: Option<CmdbFile>,
    servicenow: Option<CmdbFile>,
}

/// What tells a changed file from the same one: time, size and inode of
/// what the path resolves to. The inode catches a Kubernetes ConfigMap
/// update, which points the path at a new file through a `..data` link
/// swap, even when the new file's time equals the old one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The stamp of what `path` resolves to (symlinks followed); `None` when
/// it does not exist.
fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

/// How long a changed file must hold still before it is read: a file
/// rewritten in place (truncated, then written, as `cp`, `echo >` and most
/// editors do) is empty or half-written for a moment, and reading it then
/// would swap in a CMDB with CIs missing. A Kubernetes ConfigMap swap is
/// atomic and only waits this long.
fn settle(every: Duration) -> Duration {
    every.min(Duration::from_secs(1)) / 2
}

/// The stamps of a rule directory's visible entries (names starting with
/// `.`, such as a ConfigMap's `..data`, are not rule files), sorted by
/// name: any file written, added, removed or re-pointed changes it.
fn dir_stamp(dir: &std::path::Path) -> Option<Vec<(std::ffi::OsString, Stamp)>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.file_name(), stamp(&e.path())?)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Some(v)
}

/// Load the rule directory again and swap it in atomically; a bad file
/// keeps the previous rules.
pub(super) async fn reload_rules(cfg: &Config, engine: &EngineHandle, metrics: &Metrics) {
    let c = cfg.clone();
    let loaded = tokio::task::spawn_blocking(move || daemon_rules(&c)).await;
    match loaded {
        Ok(Ok(rules)) => {
            let n = rules.len();
            if engine.set_rules(Arc::new(rules)).await.is_ok() {
                metrics.rules_loaded.set(i64::try_from(n).unwrap_or(0));
                metrics.rule_reloads.with_label_values(&["success"]).inc();
                tracing::info!(rules = n, "rules reloaded");
            }
        }
        Ok(Err(e)) => {
            metrics.rule_reloads.with_label_values(&["failure"]).inc();
            tracing::error!(error = %e, "rule reload failed; keeping the previous rules");
        }
        Err(e) => tracing::error!(error = %e, "rule reload task failed"),
    }
}

/// Reload the rules when the rule directory changes: a file written,
/// added or removed, or a Kubernetes ConfigMap update, which keeps the
/// names and swaps the `..data` link they resolve through (so the
/// directory's own time does not change; each file's stamp does).
pub(super) async fn watch_rules(
    cfg: Config,
    engine: EngineHandle,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let stamp_of = async |dir: &std::path::Path| {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || dir_stamp(&dir))
            .await
            .ok()
            .flatten()
    };
    let mut every = Every::new(cfg.rules_reload_interval);
    let mut seen = stamp_of(&cfg.rules_dir).await;
    while every.tick(&cancel).await {
        let now = stamp_of(&cfg.rules_dir).await;
        // A directory that cannot be read (being replaced) is not a change:
        // the next tick sees what it became.
        if now.is_none() || now == seen {
            continue;
        }
        // Still being written: the next tick looks again.
        tokio::time::sleep(settle(cfg.rules_reload_interval)).await;
        if stamp_of(&cfg.rules_dir).await != now {
            continue;
        }
        seen = now;
        reload_rules(&cfg, &engine, &metrics).await;
    }
}

/// A poll interval: ticks every `every` until `cancel` fires; a zero
/// `every` never ticks (SIGHUP still reloads).
struct Every(Option<tokio::time::Interval>);

impl Every {
    fn new(every: Duration) -> Every {
        Every((!every.is_zero()).then(|| {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        }))
    }

    /// Wait for the next tick; false once polling is over.
    async fn tick(&mut self, cancel: &CancellationToken) -> bool {
        let Some(t) = &mut self.0 else { return false };
        tokio::select! {
            () = cancel.cancelled() => false,
            _ = t.tick() => true,
        }
    }
}

impl CmdbReloader {
    pub fn new(
        cfg: &Config,
        cell: SharedCmdb,
        engine: EngineHandle,
        metrics: Metrics,
    ) -> CmdbReloader {
        let path = cfg.cmdb.clone();
        // The file was loaded at start; remember its content and time so
        // that only a real change triggers a reload.
        let mut sources = Sources::default();
        if let Some(p) = &path {
            sources.file_stamp = stamp(p);
            sources.file = std::fs::read_to_string(p)
                .ok()
                .and_then(|t| cmdb::load_text(&p.display().to_string(), &t).ok())
                .map(|(file, _)| file);
        }
        CmdbReloader {
            inner: Arc::new(Inner {
                path,
                cell,
                engine,
                metrics,
                state: tokio::sync::Mutex::new(sources),
            }),
        }
    }

    /// Re-read the file if it changed (or always, with `force`). A change
    /// is read only once the file has held still for `settle` (zero: at
    /// once, as on SIGHUP); one still moving is looked at again on the
    /// next call.
    pub async fn reload_file(&self, force: bool, settle: Duration) {
        let Some(path) = self.inner.path.clone() else {
            return;
        };
        let mut st = self.inner.state.lock().await;
        let now = stamp(&path);
        if !force && now == st.file_stamp {
            return;
        }
        if !settle.is_zero() {
            tokio::time::sleep(settle).await;
            if stamp(&path) != now {
                return;
            }
        }
        st.file_stamp = now;
        let Some(now) = now else {
            if st.file.is_some() {
                tracing::warn!(file = %path.display(), "CMDB file is gone; keeping the last good CMDB");
            }
            return;
        };
        // Truncated and not yet written (or emptied by mistake): dropping
        // every CI would unbind every alert. An intended empty CMDB is
        // written as `cis: []`.
        if now.len == 0 && st.file.is_some() {
            tracing::warn!(file = %path.display(), "CMDB file is empty; keeping the last good CMDB (write `cis: []` for none)");
            return;
        }
        let name = path.display().to_string();
        let shown = name.clone();
        // Validated alone, exactly as at start and by `check` (duplicate
        // ids included): merging with other sources would otherwise let a
        // second entry of an id silently replace the first.
        let parsed = tokio::task::spawn_blocking(move || {
            std::fs::read_to_string(&path)
                .map_err(|e| vec![format!("{name}: {e}")])
                .and_then(|t| {
                    cmdb::load_text(&name, &t)
                        .map(|(file, _)| file)
                        .map_err(|es| es.iter().map(ToString::to_string).collect())
                })
        })
        .await;
        match parsed {
            Ok(Ok(file)) => {
                let previous = st.file.replace(file);
                if !self.rebuild(&st, "file").await {
                    st.file = previous;
                }
            }
            Ok(Err(errs)) => {
                self.inner
                    .metrics
                    .cmdb_reloads
                    .with_label_values(&["file", "failure"])
                    .inc();
                tracing::error!(
                    file = %shown,
                    errors = errs.len(),
                    "CMDB reload failed; keeping the last good CMDB: {}",
                    errs.join("; ")
                );
            }
            Err(e) => tracing::error!(error = %e, "CMDB reload task failed"),
        }
    }

    /// Poll the file's [`Stamp`] every `every` (zero: never; SIGHUP still
    /// reloads).
    pub async fn watch_file(self, every: Duration, cancel: CancellationToken) {
        if self.inner.path.is_none() {
            return;
        }
        let settle = settle(every);
        let mut every = Every::new(every);
        while every.tick(&cancel).await {
            self.reload_file(false, settle).await;
        }
    }

    /// Pull from the ServiceNow-style API now and then every `interval`.
    pub async fn sync_servicenow(self, sn: ServiceNowConfig, cancel: CancellationToken) {
        let secret = |s: &Secret| match s {
            Secret::Inline(v) => Ok(v.clone()),
            Secret::File(p) => std::fs::read_to_string(p).map(|t| t.trim().to_string()),
        };
        let auth = match &sn.auth {
            ServiceNowAuth::Basic { user, password } => {
                secret(password).map(|password| servicenow::Auth::Basic {
                    user: user.clone(),
                    password,
                })
            }
            ServiceNowAuth::Bearer(t) => secret(t).map(servicenow::Auth::Bearer),
        };
        let auth = match auth {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the ServiceNow credentials; CMDB sync disabled");
                return;
            }
        };
        let ep = servicenow::Endpoint {
            base_url: sn.url.clone(),
            auth,
            page_size: sn.page_size,
            ci_query: sn.ci_query.clone(),
            timeout: sn.timeout,
        };
        // Only the configured host (no redirects), with the configured
        // TLS trust and proxy.
        let client = match super::connect::client_options(&sn.net, sn.timeout, "cmdb.servicenow")
            .and_then(|o| crate::net::http_client(&o).map_err(anyhow::Error::from))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot build the HTTP client; CMDB sync disabled");
                return;
            }
        };
        let mut tick = tokio::time::interval(sn.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            match servicenow::fetch(&client, &ep).await {
                Ok(file) => {
                    let (n_ci, n_svc) = (file.cis.len(), file.services.len());
                    let mut st = self.inner.state.lock().await;
                    let previous = st.servicenow.replace(file);
                    if self.rebuild(&st, "servicenow").await {
                        tracing::info!(cis = n_ci, services = n_svc, "CMDB synced from ServiceNow");
                    } else {
                        st.servicenow = previous;
                    }
                }
                Err(e) => {
                    self.inner
                        .metrics
                        .cmdb_reloads
                        .with_label_values(&["servicenow", "failure"])
                        .inc();
                    tracing::error!(error = %crate::net::chain(&e), "ServiceNow CMDB sync failed; keeping the last good CMDB");
                }
            }
        }
    }

    /// Merge the sources and swap the result in; false if it is invalid.
    async fn rebuild(&self, st: &Sources, source: &'static str) -> bool {
        let parts: Vec<CmdbFile> = st
            .file
            .iter()
            .chain(st.servicenow.iter())
            .cloned()
            .collect();
        let built =
            tokio::task::spawn_blocking(move || Cmdb::build("cmdb", cmdb::merge(parts))).await;
        let m = &self.inner.metrics;
        match built {
            Ok(Ok(new)) => {
                let new = Arc::new(new);
                let n = new.len();
                if self.inner.engine.set_cmdb(new.clone()).await.is_err() {
                    return false;
                }
                match self.inner.cell.write() {
                    Ok(mut g) => *g = new,
                    Err(poisoned) => *poisoned.into_inner() = new,
                }
                m.cmdb_cis.set(i64::try_from(n).unwrap_or(0));
                m.cmdb_reloads.with_label_values(&[source, "success"]).inc();
                tracing::info!(source, cis = n, "CMDB reloaded");
                true
            }
            Ok(Err(errs)) => {
                m.cmdb_reloads.with_label_values(&[source, "failure"]).inc();
                let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
                tracing::error!(source, errors = %list.join("; "), "CMDB invalid after reload; keeping the last good CMDB");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "CMDB build task failed");
                false
            }
        }
    }
}
