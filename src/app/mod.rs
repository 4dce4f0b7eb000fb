//! Wiring only: builds the stages from config, connects them with channels,
//! and handles signals and graceful shutdown.

mod connect;
mod reload;

use crate::api::{self, AppState, SourceGate};
use crate::change::ChangeRecord;
use crate::cmdb::{self, SharedCmdb};
use crate::config::{self, Config, Overrides, Secret, StoreBackend};
use crate::domain::{Clock, SystemClock};
use crate::incident::Engine;
use crate::incident::task::{self, PipelineOptions};
use crate::ingest::kafka::{SourceDeps, Windows};
use crate::ingest::{KafkaSource, Publisher};
pub use crate::offline::{
    CmdbChoice, Offline, ReplayResult, load_cmdb, offline_setup, read_changes, replay,
    replay_bodies,
};
use crate::offline::{initial_cmdb, load_rules};
use crate::rules::RuleSet;
use crate::slo::export::SloExporter;
use crate::store::{DynStore, PgStore, SqliteOptions, SqliteStore};
use crate::telemetry::{self, Metrics};
use anyhow::{Context, Result};
use reload::CmdbReloader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn read_secret(s: &Option<Secret>, what: &str) -> Result<Option<String>> {
    s.as_ref()
        .map(|s| connect::read_secret(s, &format!("{what} token")))
        .transpose()
}

/// A started pipeline: the HTTP router plus what shutdown needs.
pub struct Running {
    pub router: axum::Router,
    pub store: DynStore,
    pub engine: task::EngineHandle,
    pub metrics: Metrics,
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
    pub cmdb: SharedCmdb,
}

/// A pipeline dropped without `shutdown` (a failing test, a start error
/// after spawning) still stops its tasks, so the runtime can exit.
impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Running {
    /// Stop the pipeline: flush coalesced state, commit, wait for the tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Open the configured store (SQLite under the data dir, or PostgreSQL).
async fn open_store(cfg: &Config) -> Result<DynStore> {
    Ok(match &cfg.store {
        StoreBackend::Sqlite => Arc::new(
            SqliteStore::open_dir(
                &cfg.data_dir,
                SqliteOptions {
                    synchronous: cfg.sqlite_synchronous,
                    ..SqliteOptions::default()
                },
            )
            .await
            .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?,
        ),
        StoreBackend::Postgres {
            url,
            max_connections,
            password,
        } => Arc::new(
            PgStore::connect_with(
                connect::pg_options(url, password.as_ref())?,
                *max_connections,
            )
            .await
            .with_context(|| {
                format!(
                    "opening the PostgreSQL store at {}",
                    crate::net::redact_url(url)
                )
            })?,
        ),
    })
}

/// With several instances, change records posted to one reach the engines
/// of the others through the store.
async fn refresh_changes(
    store: DynStore,
    engine: task::EngineHandle,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known: rustc_hash::FxHashMap<String, ChangeRecord> = rustc_hash::FxHashMap::default();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.list_changes().await {
            Ok(changes) => {
                // Only what is new or changed since the last read: a large
                // calendar must not be re-learned by the engine every time.
                let fresh: Vec<ChangeRecord> = changes
                    .into_iter()
                    .filter(|c| known.get(&c.id) != Some(c))
                    .collect();
                if fresh.is_empty() {
                    continue;
                }
                for c in &fresh {
                    known.insert(c.id.clone(), c.clone());
                }
                if engine.learn_changes(fresh).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading change records"),
        }
    }
}

/// How a client's proxy is shown in logs (never its password).
fn proxy_summary(p: &config::net::ProxyConfig) -> String {
    match p {
        config::net::ProxyConfig::None => "none".into(),
        config::net::ProxyConfig::Env => "env".into(),
        config::net::ProxyConfig::Url { url, .. } => crate::net::redact_url(url),
    }
}

/// Open the store, restore state, start engine and writer, build the router.
pub async fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Running> {
    let store = open_store(cfg).await?;
    start_with(cfg, clock, store, Metrics::new()).await
}

/// Watch the store's files: a database deleted or replaced under the
/// daemon is found within seconds, said once at ERROR and counted; from
/// then on `/readyz` and ingest answer 503 and nothing is written.
async fn watch_store(store: DynStore, metrics: Metrics, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        let checked = tokio::task::spawn_blocking(move || s.integrity()).await;
        if let Ok(Err(e)) = checked {
            metrics.store_lost.inc();
            tracing::error!(error = %e, "the store is lost: ingest and /readyz answer 503");
            return;
        }
    }
}

/// [`start`] on a store already open, reporting into `metrics`.
pub async fn start_with(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    store: DynStore,
    metrics: Metrics,
) -> Result<Running> {
    let rules = Arc::new(load_rules(&cfg.rules_dir)?);
    metrics
        .rules_loaded
        .set(i64::try_from(rules.len()).unwrap_or(0));
    let cmdb = Arc::new(initial_cmdb(cfg)?);
    metrics.cmdb_cis.set(i64::try_from(cmdb.len()).unwrap_or(0));
    let now = clock.now();
    // Without Kafka one engine owns everything (shard 0); with Kafka the
    // consumer group assigns shards and each is loaded when assigned.
    let mut engines = Vec::new();
    if cfg.kafka.is_none() {
        let mut engine = Engine::new(cfg.engine.clone(), rules.clone());
        engine.set_cmdb(cmdb.clone());
        let snapshot = store
            .load_state(
                None,
                now.saturating_sub(cfg.engine.reopen_window),
                now.saturating_sub(cfg.engine.alert_retention),
                now.saturating_sub(cfg.engine.problems.period),
            )
            .await
            .context("loading state from the store")?;
        tracing::info!(
            incidents = snapshot.incidents.len(),
            alerts = snapshot.alerts.len(),
            rules = rules.len(),
            "state restored"
        );
        engine.restore(snapshot, now);
        engines.push(engine);
        metrics.shards_owned.set(1);
    }

    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    tracker.spawn(watch_store(store.clone(), metrics.clone(), cancel.clone()));
    let handle = task::spawn(
        engines,
        task::EngineProto {
            cfg: cfg.engine.clone(),
            rules: rules.clone(),
            cmdb: cmdb.clone(),
            stride: if cfg.kafka.is_some() {
                config::MAX_SHARDS
            } else {
                1
            },
        },
        store.clone(),
        clock.clone(),
        metrics.clone(),
        PipelineOptions {
            queue_capacity: cfg.queue_capacity,
            flush_interval: cfg.flush_interval,
            tick_interval: Duration::from_secs(1),
            durable_timeout: cfg.request_timeout,
        },
        &tracker,
        cancel.clone(),
    );
    let ownership = if cfg.kafka.is_some() {
        crate::outbound::owned::Ownership::assigned()
    } else {
        crate::outbound::owned::Ownership::everything()
    };
    // A ServiceNow or Jira delivery makes up to four calls.
    let outbox_drain = cfg
        .outbound
        .iter()
        .map(|d| d.timeout * 4)
        .max()
        .unwrap_or_default()
        + Duration::from_secs(1);
    let quarantine = Arc::new(crate::ingest::Quarantine::new(cfg.limits.quarantine_size));
    let kafka = cfg
        .kafka
        .as_ref()
        .map(connect::kafka_with_secrets)
        .transpose()?;
    let (kafka_source, publisher, forwarder) = match &kafka {
        None => (None, None, None),
        Some(k) => {
            let source = KafkaSource::spawn(
                k,
                SourceDeps {
                    engine: handle.clone(),
                    store: store.clone(),
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                    windows: Windows {
                        reopen: cfg.engine.reopen_window,
                        retention: cfg.engine.alert_retention,
                        problems: cfg.engine.problems.period,
                    },
                    outbox: ownership.clone(),
                    outbox_drain,
                    alert_limits: cfg.limits.alert,
                    time_bounds: cfg.limits.bounds,
                    quarantine: quarantine.clone(),
                },
                &tracker,
                cancel.clone(),
            )
            .context("starting the Kafka consumer")?;
            let publisher = match &k.ingest_topic {
                Some(t) => Some(Arc::new(
                    Publisher::new(k, t, metrics.clone())
                        .context("starting the Kafka publisher")?,
                )),
                None => None,
            };
            tracker.spawn(refresh_changes(
                store.clone(),
                handle.clone(),
                cfg.changes_refresh,
                cancel.clone(),
            ));
            tracing::info!(brokers = %k.brokers, group = %k.group_id, topics = ?k.topics.iter().map(|t| &t.name).collect::<Vec<_>>(), distributed = publisher.is_some(), "kafka source started");
            let forwarder = Arc::new(
                crate::ingest::Forwarder::new(k, publisher.as_deref(), metrics.clone())
                    .context("starting the Kafka command producer")?,
            );
            (Some(source), publisher, Some(forwarder))
        }
    };
    metrics.known_destinations(cfg.outbound.iter().map(|d| d.name.as_str()));
    for d in &cfg.outbound {
        use crate::config::outbound::DestinationKind;
        use crate::outbound::sender::Credential;
        let secret = |s: &Secret| -> Result<String> {
            Ok(read_secret(&Some(s.clone()), &d.name)?.unwrap_or_default())
        };
        let credential = match &d.kind {
            DestinationKind::PagerDuty { routing_key: s }
            | DestinationKind::Opsgenie { api_key: s }
            | DestinationKind::Webhook { secret: s } => Credential::Key(secret(s)?),
            DestinationKind::Slack => Credential::None,
            DestinationKind::ServiceNow { auth, .. } | DestinationKind::Jira { auth, .. } => {
                match auth {
                    config::ServiceNowAuth::Basic { user, password } => Credential::Basic {
                        user: user.clone(),
                        password: secret(password)?,
                    },
                    config::ServiceNowAuth::Bearer(t) => Credential::Bearer(secret(t)?),
                }
            }
        };
        let sender = crate::outbound::sender::Sender::new(
            d.clone(),
            connect::destination_client(d)?,
            credential,
            store.clone(),
            clock.clone(),
            metrics.outbound.clone(),
            ownership.clone(),
            handle.clone(),
        );
        if d.url.starts_with("https://")
            && let Some(e) = crate::net::tls::trust_problem(&d.net.tls)
        {
            tracing::warn!(destination = %d.name, error = %e, "no server certificate can be verified: every call will fail");
        }
        tracker.spawn(sender.run(handle.commits(), cancel.clone()));
        tracing::info!(
            destination = %d.name,
            kind = d.kind.as_str(),
            url = %d.display_url(),
            ca_file = ?d.net.tls.ca_file,
            client_cert = d.net.tls.client_cert.is_some(),
            proxy = %proxy_summary(&d.net.proxy),
            "outbound destination started"
        );
    }
    tracker.spawn(crate::outbound::sender::prune(
        store.clone(),
        clock.clone(),
        cfg.outbound_retention,
        cancel.clone(),
    ));
    let mut inbound = Vec::new();
    for d in &cfg.outbound {
        if let Some(t) = &d.inbound_token {
            inbound.push(api::InboundDestination {
                name: d.name.clone(),
                kind: d.kind.as_str(),
                token: read_secret(&Some(t.clone()), &d.name)?
                    .unwrap_or_default()
                    .into_bytes(),
            });
        }
    }
    let shared_cmdb: SharedCmdb = Arc::new(std::sync::RwLock::new(cmdb));
    let slo = Arc::new(SloExporter::new(now, metrics.slo.clone()));
    if let Err(e) = slo
        .refresh(&store, &shared_cmdb, &cfg.slo.priorities, now)
        .await
    {
        metrics.slo.refresh_failures.inc();
        tracing::warn!(error = %e, "reading SLO downtime from the store");
    }
    tracker.spawn(slo.clone().run(
        store.clone(),
        shared_cmdb.clone(),
        cfg.slo.clone(),
        clock.clone(),
        cancel.clone(),
    ));
    let state = Arc::new(AppState {
        cmdb: shared_cmdb.clone(),
        engine: handle.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        alertmanager: SourceGate::new(
            read_secret(&cfg.alertmanager.token, "alertmanager")?,
            cfg.alertmanager.rate_limit,
        ),
        api_source: SourceGate::new(
            read_secret(&cfg.api_source.token, "api")?,
            cfg.api_source.rate_limit,
        ),
        pagerduty: SourceGate::new(
            read_secret(&cfg.pagerduty.token, "pagerduty")?,
            cfg.pagerduty.rate_limit,
        ),
        api_tokens: cfg
            .api_tokens
            .iter()
            .map(|t| {
                Ok(api::ApiToken {
                    name: t.name.clone(),
                    secret: connect::read_secret(&t.secret, &format!("API token {}", t.name))?
                        .into_bytes(),
                    operator: t.operator,
                })
            })
            .collect::<Result<Vec<_>>>()?,
        max_body_bytes: cfg.max_body_bytes,
        clock,
        ingress: match (&cfg.kafka, publisher) {
            (None, _) => api::Ingress::Local,
            (Some(_), Some(p)) => api::Ingress::Publish(p),
            (Some(_), None) => api::Ingress::Disabled,
        },
        kafka: kafka_source,
        forwarder,
        forward_wait: cfg.request_timeout,
        slo,
        sla_pause_on: cfg.engine.sla_pause_on.clone(),
        inbound,
        alert_limits: cfg.limits.alert,
        time_bounds: cfg.limits.bounds,
        max_text_bytes: cfg.limits.max_text_bytes,
        quarantine,
        max_changes: cfg.limits.max_changes_per_request,
        changes_lock: tokio::sync::Mutex::new(()),
    });
    let router = api::guarded(
        api::router(state),
        cfg.request_timeout + Duration::from_secs(1),
    );
    Ok(Running {
        router,
        store,
        engine: handle,
        metrics,
        tracker,
        cancel,
        cmdb: shared_cmdb,
    })
}

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

/// `incidentd serve`.
pub async fn serve(config_file: Option<PathBuf>, overrides: Overrides) -> Result<()> {
    let cfg = config::load(config_file.as_deref(), &overrides)?;
    telemetry::init_tracing(&cfg.log_level, cfg.log_format == config::LogFormat::Json);
    let hangups = take_hangups();
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
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
    load_rules(&cfg.rules_dir)?;
    let metrics = Metrics::new();
    let stopping = CancellationToken::new();
    {
        let stopping = stopping.clone();
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            tracing::info!("shutting down: finishing requests, flushing state");
            stopping.cancel();
        });
    }
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
    let running = start_with(&cfg, Arc::new(SystemClock), store, metrics).await?;
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
    if let Some(sn) = cfg.servicenow.clone() {
        running
            .tracker
            .spawn(reloader.sync_servicenow(sn, running.cancel.clone()));
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

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUP, taken over before anything is served: until then its default
/// action ends the process, so a reload sent as soon as `/readyz` answers
/// would kill the daemon. One sent while the store is opening waits.
#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

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
            let dir = cfg.rules_dir.clone();
            let loaded = tokio::task::spawn_blocking(move || load_rules(&dir)).await;
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
            cmdb.reload_file(true).await;
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

/// `incidentd check`: every problem in config, rules, CMDB and the files
/// connections need (certificates, keys, credentials), at once; warnings
/// (a credential that would travel in clear) are printed, not failed.
pub fn check(config_file: Option<PathBuf>, overrides: Overrides) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let cfg = match config::load(config_file.as_deref(), &overrides) {
        Ok(c) => Some(c),
        Err(config::ConfigError::Invalid(errs)) => {
            let file = config_file
                .as_ref()
                .map_or("config".into(), |f| f.display().to_string());
            problems.extend(errs.iter().map(|e| format!("{file}: {e}")));
            None
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    if let Some(c) = &cfg {
        let report = connect::check_connections(c);
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        problems.extend(report.errors);
    }
    let rules_dir = cfg
        .as_ref()
        .map(|c| c.rules_dir.clone())
        .or(overrides.rules_dir.clone())
        .unwrap_or_else(|| PathBuf::from("./rules"));
    if rules_dir.exists() {
        match RuleSet::load_dir(&rules_dir) {
            Ok(rs) => {
                for w in rs.warnings() {
                    eprintln!("warning: {w}");
                }
            }
            Err(errs) => problems.extend(errs.iter().map(ToString::to_string)),
        }
    } else {
        problems.push(format!(
            "{}: rules directory does not exist",
            rules_dir.display()
        ));
    }
    let (cmdb_path, required) = match (&overrides.cmdb, &cfg) {
        (Some(p), _) => (Some(p.clone()), true),
        (None, Some(c)) => (c.cmdb.clone(), c.cmdb_required),
        (None, None) => (Some(PathBuf::from("deploy/cmdb.yaml")), false),
    };
    match cmdb_path {
        Some(p) if p.exists() => match cmdb::load_file(&p) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("warning: {w}");
                }
            }
            Err(errs) => problems.extend(errs.iter().map(ToString::to_string)),
        },
        Some(p) if required => problems.push(format!("{}: CMDB file does not exist", p.display())),
        _ => {}
    }
    Ok(problems)
}

/// exit 1 when any test fails.
pub async fn run_rule_tests(dir: &Path, config: Option<&Path>) -> Result<std::process::ExitCode> {
    let summary = crate::ruletest::run_dir(dir, config, &mut std::io::stdout()).await?;
    Ok(if summary.failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}
