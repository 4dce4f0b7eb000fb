//! `incidentd serve`: the listener, signals (SIGTERM/Ctrl-C stop, SIGHUP
//! reloads), the answers given while the store is still opening, and the
//! CMDB watchers around a started pipeline.

use super::build::open_store;
use super::connect;
use super::reload::CmdbReloader;
use crate::config::{self, Config, Overrides};
use crate::domain::{SystemClock, format_duration};
use crate::incident::task;
use crate::offline::daemon_rules;
use crate::store::DynStore;
use crate::telemetry::{self, Metrics};
use anyhow::{Context, Result};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the listener answers while the store cannot be opened yet: alive
/// (`/healthz` 200), not ready (`/readyz` 503), everything else a JSON 503
/// with `Retry-After`.
fn starting_router(why: Arc<std::sync::RwLock<String>>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let reason = move || {
        why.read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    };
    let reason2 = reason.clone();
    axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let r = reason();
                async move {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(
                            serde_json::json!({ "ready": false, "store": "opening", "error": r }),
                        ),
                    )
                }
            }),
        )
        .fallback(move || {
            let r = reason2();
            async move {
                let mut resp = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(serde_json::json!({
                        "error": "starting: the store is not open yet",
                        "detail": { "store": "opening", "cause": r },
                    })),
                )
                    .into_response();
                resp.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("5"),
                );
                resp
            }
        })
}

/// A router whose routes can be swapped while it serves (the starting
/// answers, then the pipeline's).
fn swappable(cell: Arc<std::sync::RwLock<axum::Router>>) -> axum::Router {
    use tower::ServiceExt;
    axum::Router::new().fallback_service(tower::service_fn(move |req: axum::extract::Request| {
        let router = match cell.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        router.oneshot(req)
    }))
}

/// Open the store, retrying until it opens (a database that is read-only,
/// or a PostgreSQL server that is down, at start should not need a restart
/// once fixed), or until `stop`.
/// A failure that waiting cannot mend is returned instead: a server
/// certificate that does not verify, or settings the driver refuses, need
/// the operator (exit 1 with the cause), not an endless retry.
async fn open_store_patiently(
    cfg: &Config,
    why: &std::sync::RwLock<String>,
    stop: &CancellationToken,
) -> Result<Option<DynStore>> {
    let mut wait = Duration::from_secs(1);
    loop {
        match open_store(cfg).await {
            Ok(s) => return Ok(Some(s)),
            Err(e) if retry_cannot_fix(&e) => return Err(e),
            Err(e) => {
                let err: &(dyn std::error::Error + 'static) = e.as_ref();
                let text = crate::net::chain(err);
                tracing::error!(error = %text, retry_in = ?wait, "cannot open the store; /healthz answers, /readyz says why, retrying");
                match why.write() {
                    Ok(mut g) => *g = text,
                    Err(p) => *p.into_inner() = text,
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// TLS verification and driver configuration errors, anywhere in the chain.
fn retry_cannot_fix(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<rustls::Error>()
            // An io::Error's source() skips the error it wraps.
            || c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<rustls::Error>())
            || matches!(
                c.downcast_ref::<sqlx::Error>(),
                Some(sqlx::Error::Tls(_) | sqlx::Error::Configuration(_))
            )
    })
}

/// `incidentd serve`: the configuration read, logging set up, SIGHUP
/// taken over and the listener bound, the daemon runs until SIGTERM or
/// Ctrl-C.
pub async fn serve(config_file: Option<PathBuf>, overrides: Overrides) -> Result<()> {
    let cfg = config::load(config_file.as_deref(), &overrides)?;
    telemetry::init_tracing(&cfg.log_level, cfg.log_format == config::LogFormat::Json);
    let hangups = take_hangups();
    let stops = listen_for_stops();
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    run(cfg, listener, hangups, stops).await
}

/// The daemon on a bound listener until a stop request (or the pipeline
/// stopping by itself): answers at once, opens the store (retrying),
/// starts the pipeline and swaps its routes in; then, after
/// `http.shutdown_delay`, drains and stops.
pub(super) async fn run(
    cfg: Config,
    listener: tokio::net::TcpListener,
    hangups: Hangups,
    stops: Stops,
) -> Result<()> {
    // The certificate is loaded before anything is served: a broken one
    // stops the start with its cause instead of failing every handshake.
    let tls = cfg
        .listen_tls
        .clone()
        .map(crate::net::listener::TlsCell::load)
        .transpose()
        .context("loading the listener's TLS certificate")?;
    if let Some(w) = connect::open_api_warning(&cfg) {
        tracing::warn!("{w}");
    }
    // Rules are checked before anything is served: their errors need the
    // operator, not a retry (the CMDB is checked when the pipeline starts).
    let rule_count = daemon_rules(&cfg)?.len();
    let local = listener.local_addr().unwrap_or(cfg.listen);
    let metrics = Metrics::new();
    // Cancelled when the listener is to stop taking connections and drain.
    let stopping = CancellationToken::new();
    // Set once the pipeline's routes serve: from then on a stop request
    // waits out `http.shutdown_delay` first.
    let serving: Arc<OnceLock<CancellationToken>> = Arc::default();
    tokio::spawn(stop_on_request(
        stops,
        cfg.shutdown_delay,
        serving.clone(),
        stopping.clone(),
        tokio::time::sleep,
    ));
    let why = Arc::new(std::sync::RwLock::new(String::new()));
    let routes = Arc::new(std::sync::RwLock::new(starting_router(why.clone())));
    let settings = crate::net::server::ServerSettings {
        max_connections: connect::max_connections(cfg.max_connections),
        header_read_timeout: cfg.header_read_timeout,
        idle_timeout: cfg.idle_timeout,
        drain: cfg.request_timeout + Duration::from_secs(2),
    };
    let server = {
        let stop = stopping.clone();
        tokio::spawn(crate::net::server::serve(
            listener,
            tls.clone(),
            swappable(routes.clone()),
            settings,
            Arc::new(telemetry::ConnMetrics::new(&metrics)),
            async move { stop.cancelled().await },
        ))
    };
    tracing::info!(
        listen = %cfg.listen,
        scheme = if tls.is_some() { "https" } else { "http" },
        client_certificates = cfg.listen_tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
        data_dir = %cfg.data_dir.display(),
        "incidentd serving"
    );
    let opened = match open_store_patiently(&cfg, &why, &stopping).await {
        Ok(opened) => opened,
        Err(e) => {
            stopping.cancel();
            let _ = server.await;
            return Err(e);
        }
    };
    let Some(store) = opened else {
        let _ = server.await;
        return Ok(());
    };
    let running = super::start_with(&cfg, Arc::new(SystemClock), store, metrics).await?;
    let cmdb = match running.cmdb.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    log_summary(&cfg, local, tls.is_some(), &cmdb, rule_count);
    // Before the swap: once /readyz can answer 200, a stop request waits
    // out the delay (the cell is set only here, so it cannot be full).
    let _ = serving.set(running.stop_asked.clone());
    match routes.write() {
        Ok(mut g) => *g = running.router.clone(),
        Err(p) => *p.into_inner() = running.router.clone(),
    }
    let reloader = CmdbReloader::new(
        &cfg,
        running.cmdb.clone(),
        running.engine.clone(),
        running.metrics.clone(),
    );
    running.tracker.spawn(reload_on_sighup(
        cfg.clone(),
        running.engine.clone(),
        running.metrics.clone(),
        reloader.clone(),
        tls.clone(),
        hangups,
        running.cancel.clone(),
    ));
    running.tracker.spawn(
        reloader
            .clone()
            .watch_file(cfg.cmdb_reload_interval, running.cancel.clone()),
    );
    running.tracker.spawn(super::reload::watch_rules(
        cfg.clone(),
        running.engine.clone(),
        running.metrics.clone(),
        running.cancel.clone(),
    ));
    if let Some(sn) = cfg.servicenow.clone() {
        running
            .tracker
            .spawn(reloader.sync_servicenow(sn, running.cancel.clone()));
    }
    {
        // A stop ends the board's event streams first: they never finish
        // by themselves, and the server waits for open requests.
        let (stop, streams) = (stopping.clone(), running.streams.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            streams.cancel();
        });
    }
    {
        // The pipeline stopping by itself (a fatal error) stops the server.
        let (stop, cancel) = (stopping.clone(), running.cancel.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.cancel();
        });
    }
    let served = match server.await {
        Ok(r) => r.context("HTTP server failed"),
        Err(e) => Err(anyhow::anyhow!("HTTP server task failed: {e}")),
    };
    running.shutdown().await;
    tracing::info!("stopped");
    served
}

/// What an operator needs from the first screen of the log: where to
/// point Alertmanager (the exact URL), where the record is, what the CMDB,
/// the rules and the destinations are, whether Kafka is on. INFO lines,
/// one topic each, so they read as a block and grep one by one.
fn log_summary(
    cfg: &Config,
    local: std::net::SocketAddr,
    tls: bool,
    cmdb: &crate::cmdb::Cmdb,
    rules: usize,
) {
    let base = base_url(local, tls, host_name().as_deref());
    let webhooks_off = cfg.kafka.as_ref().is_some_and(|k| k.ingest_topic.is_none());
    tracing::info!(listen = %local, "incidentd ready: listening on {base}");
    if webhooks_off {
        tracing::info!(
            "  webhooks: off ([kafka] consumes external topics only; set kafka.ingest_topic to take them)"
        );
    } else {
        let url = format!("{base}/api/v1/alerts/alertmanager");
        tracing::info!(webhook_url = %url, "  Alertmanager webhook URL: {url}");
    }
    let store = match &cfg.store {
        config::StoreBackend::Sqlite => {
            format!("sqlite {}", cfg.data_dir.join("incidentd.db").display())
        }
        config::StoreBackend::Postgres { url, .. } => {
            format!("postgres {}", crate::net::redact_url(url))
        }
    };
    tracing::info!("  store: {store}");
    let (cis, services) = (cmdb.len(), cmdb.services().len());
    match cfg.cmdb.as_ref().filter(|p| p.exists()) {
        Some(p) => tracing::info!(
            cis,
            services,
            "  CMDB: {} ({cis} CIs, {services} services{})",
            p.display(),
            if cfg.servicenow.is_some() {
                ", with ServiceNow sync"
            } else {
                ""
            }
        ),
        None if cfg.servicenow.is_some() => tracing::info!(
            cis,
            services,
            "  CMDB: from ServiceNow sync only ({cis} CIs, {services} services so far)"
        ),
        None => tracing::info!(
            cis = 0,
            "  CMDB: none (alerts bind to no CI; pass --cmdb or set cmdb.file)"
        ),
    }
    tracing::info!(rules, "  rules: {rules} from {}", cfg.rules_dir.display());
    let destinations: Vec<String> = cfg
        .outbound
        .iter()
        .map(|d| format!("{} ({})", d.name, d.kind.as_str()))
        .collect();
    if destinations.is_empty() {
        tracing::info!(
            destinations = 0,
            "  destinations: none (incidents are kept here only)"
        );
    } else {
        tracing::info!(
            destinations = destinations.len(),
            "  destinations: {}",
            destinations.join(", ")
        );
    }
    match &cfg.kafka {
        None => tracing::info!(kafka = false, "  kafka: off"),
        Some(k) => {
            let topics: Vec<&str> = k
                .ingest_topic
                .iter()
                .map(String::as_str)
                .chain(k.topics.iter().map(|t| t.name.as_str()))
                .collect();
            tracing::info!(
                kafka = true, brokers = %k.brokers, group = %k.group_id,
                "  kafka: on, brokers {}, group {}, topics {}{}",
                k.brokers,
                k.group_id,
                topics.join(", "),
                if k.ingest_topic.is_some() { " (distributed: webhooks go through the ingest topic)" } else { "" }
            );
        }
    }
}

/// The base URL clients use: the bound address, or this host's name when
/// bound to every address (0.0.0.0 is no address to paste elsewhere).
fn base_url(local: std::net::SocketAddr, tls: bool, host: Option<&str>) -> String {
    let scheme = if tls { "https" } else { "http" };
    let port = local.port();
    match (local.ip().is_unspecified(), host) {
        (true, Some(h)) => format!("{scheme}://{h}:{port}"),
        (true, None) => format!("{scheme}://<this host>:{port}"),
        (false, _) => match local {
            std::net::SocketAddr::V4(a) => format!("{scheme}://{}:{port}", a.ip()),
            std::net::SocketAddr::V6(a) => format!("{scheme}://[{}]:{port}", a.ip()),
        },
    }
}

/// The kernel's host name (Linux), read once at start.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Stop requests (SIGTERM, Ctrl-C), one message each; closed when none
/// can come.
pub(super) type Stops = tokio::sync::mpsc::Receiver<()>;

/// SIGTERM and SIGINT, taken over before anything is served and passed on
/// one by one: the first stops the daemon, a second one cuts
/// `http.shutdown_delay` short.
pub(super) fn listen_for_stops() -> Stops {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (term, int) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        if let Err(e) = &term {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C (SIGINT) still stops");
        }
        if let Err(e) = &int {
            tracing::warn!(error = %e, "cannot listen for SIGINT; SIGTERM still stops");
        }
        let (mut term, mut int) = (term.ok(), int.ok());
        if term.is_none() && int.is_none() {
            // `tx` dropped: the channel is closed, no stop request comes.
            return rx;
        }
        tokio::spawn(async move {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
                match s {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            }
            loop {
                tokio::select! {
                    Some(()) = next(&mut term) => {}
                    Some(()) = next(&mut int) => {}
                    else => return,
                }
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The stop, as requests come: the first one, once the pipeline serves
/// (`serving` holds its `stop_asked`), marks it stopping (`/readyz`
/// answers 503, everything else is still served) and waits `delay`, cut
/// short by a second request; then `stopping` is cancelled (the listener
/// stops taking connections and drains). While the store is still opening
/// nothing is ready to leave a load balancer gracefully: it stops at once,
/// as it does with a zero delay. `sleep` is the clock (tests pass one they
/// control). Ends early if `stopping` is cancelled otherwise (the pipeline
/// failed).
async fn stop_on_request<S, F>(
    mut stops: Stops,
    delay: Duration,
    serving: Arc<OnceLock<CancellationToken>>,
    stopping: CancellationToken,
    sleep: S,
) where
    S: FnOnce(Duration) -> F,
    F: Future<Output = ()>,
{
    tokio::select! {
        () = stopping.cancelled() => return,
        asked = stops.recv() => if asked.is_none() {
            // No stop request can come: only the pipeline stops it.
            return;
        },
    }
    if let Some(asked) = serving.get().filter(|_| !delay.is_zero()) {
        asked.cancel();
        tracing::info!(
            delay = %format_duration(delay),
            "stopping in {}: /readyz answers 503 meanwhile, everything else is served (a second SIGTERM or Ctrl-C stops now)",
            format_duration(delay)
        );
        tokio::select! {
            () = sleep(delay) => {}
            Some(()) = stops.recv() => {
                tracing::info!("second stop request: not waiting for the rest of the delay");
            }
            () = stopping.cancelled() => return,
        }
    }
    tracing::info!("shutting down: finishing requests, flushing state");
    stopping.cancel();
}

/// SIGHUP, taken over before anything is served: until then its default
/// action ends the process, so a reload sent as soon as `/readyz` answers
/// would kill the daemon. One sent while the store is opening waits.
#[cfg(unix)]
pub(super) type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(super) type Hangups = ();

fn take_hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup()).ok()
    }
}

/// SIGHUP: reload rules atomically (a bad file keeps the old rules), the
/// CMDB, and the listener's certificate (a bad one keeps the old; open
/// connections are not touched either way).
async fn reload_on_sighup(
    cfg: Config,
    engine: task::EngineHandle,
    metrics: Metrics,
    cmdb: CmdbReloader,
    tls: Option<crate::net::listener::TlsCell>,
    hangups: Hangups,
    cancel: CancellationToken,
) {
    #[cfg(unix)]
    {
        let Some(mut hup) = hangups else {
            tracing::warn!("cannot listen for SIGHUP; rule reload disabled");
            return;
        };
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            super::reload::reload_rules(&cfg, &engine, &metrics).await;
            cmdb.reload_file(true, Duration::ZERO).await;
            if let Some(cell) = &tls {
                let cell = cell.clone();
                match tokio::task::spawn_blocking(move || cell.reload()).await {
                    Ok(Ok(())) => {
                        metrics.tls_reloads.with_label_values(&["success"]).inc();
                        tracing::info!("listener certificate reloaded");
                    }
                    Ok(Err(e)) => {
                        metrics.tls_reloads.with_label_values(&["failure"]).inc();
                        tracing::error!(error = %e, "listener certificate reload failed; keeping the previous certificate");
                    }
                    Err(e) => tracing::error!(error = %e, "certificate reload task failed"),
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (cfg, engine, metrics, cmdb, tls, cancel);
    }
}

#[cfg(test)]
mod tests {
    use super::{base_url, stop_on_request};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;
    use tokio::sync::{Notify, mpsc, oneshot};
    use tokio_util::sync::CancellationToken;

    /// One stop driven by the test: its requests, the pipeline's
    /// `stop_asked`, the listener's `stopping`, and a clock that moves only
    /// when `wake` is sent (or dropped).
    struct Stop {
        requests: mpsc::Sender<()>,
        asked: CancellationToken,
        stopping: CancellationToken,
        /// Notified when the delay starts.
        sleeping: Arc<Notify>,
        slept: Arc<Mutex<Option<Duration>>>,
        wake: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    fn stop(delay: Duration, serving: bool) -> Stop {
        let (requests, rx) = mpsc::channel(4);
        let asked = CancellationToken::new();
        let cell = Arc::new(OnceLock::new());
        if serving {
            cell.set(asked.clone()).expect("a fresh cell");
        }
        let stopping = CancellationToken::new();
        let sleeping = Arc::new(Notify::new());
        let slept = Arc::new(Mutex::new(None));
        let (wake, woken) = oneshot::channel::<()>();
        let clock = {
            let (sleeping, slept) = (sleeping.clone(), slept.clone());
            move |d: Duration| {
                *slept.lock().expect("not poisoned") = Some(d);
                sleeping.notify_one();
                async move {
                    let _ = woken.await;
                }
            }
        };
        let task = tokio::spawn(stop_on_request(rx, delay, cell, stopping.clone(), clock));
        Stop {
            requests,
            asked,
            stopping,
            sleeping,
            slept,
            wake,
            task,
        }
    }

    impl Stop {
        async fn request(&self) {
            self.requests.send(()).await.expect("the stop task listens");
        }

        fn slept(&self) -> Option<Duration> {
            *self.slept.lock().expect("not poisoned")
        }

        /// The task's end (a guard against a hang, not a clock).
        async fn ended(task: tokio::task::JoinHandle<()>) {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the stop task ended")
                .expect("the stop task did not panic");
        }
    }

    #[tokio::test]
    async fn a_stop_is_announced_on_readyz_for_the_delay_then_closes_the_listener() {
        let s = stop(Duration::from_secs(3), true);
        s.request().await;
        s.sleeping.notified().await;
        assert!(s.asked.is_cancelled(), "/readyz says stopping");
        assert!(!s.stopping.is_cancelled(), "still serving during the delay");
        assert_eq!(s.slept(), Some(Duration::from_secs(3)));
        s.wake.send(()).expect("the delay is running");
        Stop::ended(s.task).await;
        assert!(s.stopping.is_cancelled());
    }

    #[tokio::test]
    async fn a_second_request_cuts_the_delay_short() {
        let s = stop(Duration::from_secs(60), true);
        s.request().await;
        s.sleeping.notified().await;
        assert!(!s.stopping.is_cancelled());
        s.request().await;
        // The clock never moves: only the second request can end it.
        Stop::ended(s.task).await;
        assert!(s.stopping.is_cancelled());
        drop(s.wake);
    }

    #[tokio::test]
    async fn without_a_delay_or_before_the_pipeline_serves_it_stops_at_once() {
        for (delay, serving) in [(Duration::ZERO, true), (Duration::from_secs(3), false)] {
            let s = stop(delay, serving);
            s.request().await;
            let slept = s.slept.clone();
            Stop::ended(s.task).await;
            assert!(s.stopping.is_cancelled(), "{delay:?} {serving}");
            assert!(
                !s.asked.is_cancelled(),
                "no 503 window: {delay:?} {serving}"
            );
            assert_eq!(
                *slept.lock().expect("not poisoned"),
                None,
                "{delay:?} {serving}"
            );
            drop(s.wake);
        }
    }

    #[tokio::test]
    async fn a_pipeline_that_stops_by_itself_ends_the_wait() {
        let s = stop(Duration::from_secs(60), true);
        s.request().await;
        s.sleeping.notified().await;
        s.stopping.cancel();
        Stop::ended(s.task).await;
        drop(s.wake);
        // With no stop request possible, only the pipeline stops it.
        let s = stop(Duration::from_secs(60), true);
        drop(s.requests);
        Stop::ended(s.task).await;
        assert!(!s.stopping.is_cancelled() && !s.asked.is_cancelled());
    }

    #[test]
    fn the_base_url_is_one_to_paste() {
        let a = |s: &str| s.parse().unwrap();
        assert_eq!(
            base_url(a("127.0.0.1:9797"), false, Some("h")),
            "http://127.0.0.1:9797"
        );
        assert_eq!(
            base_url(a("0.0.0.0:9797"), true, Some("incidents-1")),
            "https://incidents-1:9797"
        );
        assert_eq!(base_url(a("[::]:80"), false, None), "http://<this host>:80");
        assert_eq!(base_url(a("[::1]:9797"), false, None), "http://[::1]:9797");
    }
}
