//! Runs the built parts: the engine and its writer, the Kafka source, one
//! sender per destination, outbox pruning, the SLO exporter and the store
//! watch, all on one task tracker, and the router over them. Everything
//! stops when [`Running::cancel`] fires.

use super::Running;
use super::build::{Destination, Parts};
use crate::api::{self, AppState, SourceGate};
use crate::change::ChangeRecord;
use crate::cmdb::SharedCmdb;
use crate::config::{self, Config, KafkaConfig};
use crate::domain::Clock;
use crate::incident::actions::{Actions, Forward};
use crate::incident::task::{self, PipelineOptions};
use crate::ingest::kafka::{SourceDeps, Windows};
use crate::ingest::{KafkaSource, Publisher};
use crate::kpi::export::KpiExporter;
use crate::outbound::owned::Ownership;
use crate::slo::export::SloExporter;
use crate::store::DynStore;
use crate::telemetry::Metrics;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Start every task of `parts`; the router serves them.
pub(super) async fn spawn(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    store: DynStore,
    metrics: Metrics,
    parts: Parts,
) -> Result<Running> {
    let now = clock.now();
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    tracker.spawn(watch_store(store.clone(), metrics.clone(), cancel.clone()));
    let handle = task::spawn(
        parts.engines,
        task::EngineProto {
            cfg: cfg.engine.clone(),
            rules: parts.rules,
            cmdb: parts.cmdb.clone(),
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
        Ownership::assigned()
    } else {
        Ownership::everything()
    };
    let quarantine = Arc::new(crate::ingest::Quarantine::new(cfg.limits.quarantine_size));
    let run = Ctx {
        cfg,
        clock: &clock,
        store: &store,
        metrics: &metrics,
        engine: &handle,
        tracker: &tracker,
        cancel: &cancel,
    };
    let kafka = match &parts.kafka {
        Some(k) => Some(run.kafka(k, &ownership, &quarantine)?),
        None => None,
    };
    let (kafka_source, publisher, forwarder) = match kafka {
        Some(k) => (Some(k.source), k.publisher, Some(k.forwarder)),
        None => (None, None, None),
    };
    metrics.known_destinations(cfg.outbound.iter().map(|d| d.name.as_str()));
    let forward = forwarder.map(|f| f as Arc<dyn Forward>);
    let actions = Actions::new(handle.clone(), store.clone(), forward, cfg.request_timeout);
    for d in parts.destinations {
        run.sender(d, &ownership, &actions);
    }
    tracker.spawn(crate::outbound::retention::prune(
        store.clone(),
        clock.clone(),
        cfg.outbound_retention,
        cancel.clone(),
    ));
    let shared_cmdb: SharedCmdb = Arc::new(std::sync::RwLock::new(parts.cmdb));
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
    let kpi = Arc::new(KpiExporter::new(metrics.kpi.clone()));
    if let Err(e) = kpi
        .refresh(
            &store,
            &shared_cmdb,
            &cfg.kpi,
            &cfg.engine.sla_pause_on,
            now,
        )
        .await
    {
        metrics.kpi.refresh_failures.inc();
        tracing::warn!(error = %e, "reading the KPI figures from the store");
    }
    tracker.spawn(kpi.clone().run(
        store.clone(),
        shared_cmdb.clone(),
        cfg.kpi.clone(),
        cfg.engine.sla_pause_on.to_vec(),
        clock.clone(),
        cancel.clone(),
    ));
    let streams = cancel.child_token();
    let stop_asked = CancellationToken::new();
    let state = Arc::new(AppState {
        cmdb: shared_cmdb.clone(),
        engine: handle.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        alertmanager: SourceGate::new(parts.tokens.alertmanager, cfg.alertmanager.rate_limit),
        api_source: SourceGate::new(parts.tokens.api_source, cfg.api_source.rate_limit),
        pagerduty: SourceGate::new(parts.tokens.pagerduty, cfg.pagerduty.rate_limit),
        api_tokens: parts.tokens.api,
        max_body_bytes: cfg.max_body_bytes,
        clock,
        ingress: match (&cfg.kafka, publisher) {
            (None, _) => api::Ingress::Local,
            (Some(_), Some(p)) => api::Ingress::Publish(p),
            (Some(_), None) => api::Ingress::Disabled,
        },
        kafka: kafka_source,
        actions,
        slo,
        kpi,
        kpi_failure_window: cfg.kpi.failure_window,
        sla_pause_on: cfg.engine.sla_pause_on.clone(),
        inbound: parts.inbound,
        alert_limits: cfg.limits.alert,
        time_bounds: cfg.limits.bounds,
        max_text_bytes: cfg.limits.max_text_bytes,
        quarantine,
        max_changes: cfg.limits.max_changes_per_request,
        changes_lock: tokio::sync::Mutex::new(()),
        stop_asked: stop_asked.clone(),
    });
    let ui = crate::ui::UiSettings::new(
        cfg.ui.clone(),
        cfg.listen_tls.is_some(),
        cfg.outbound
            .iter()
            .map(|d| crate::ui::TicketTarget {
                name: d.name.clone(),
                kind: d.kind.as_str(),
                url: d.url.clone(),
            })
            .collect(),
        // Other instances' changes reach this one's store, not its
        // engine: live pages refresh every 2 s as well.
        cfg.kafka.as_ref().map(|_| Duration::from_secs(2)),
        streams.clone(),
    );
    // The web board's pages beside the API (whose fallback answers the
    // rest in JSON).
    let routes = if cfg.ui.enabled {
        crate::ui::router(state.clone(), ui).merge(api::router(state))
    } else {
        api::router(state)
    };
    let router = api::guarded(routes, cfg.request_timeout + Duration::from_secs(1));
    Ok(Running {
        router,
        store,
        engine: handle,
        metrics,
        tracker,
        cancel,
        cmdb: shared_cmdb,
        streams,
        stop_asked,
    })
}

/// What every task is started with.
struct Ctx<'a> {
    cfg: &'a Config,
    clock: &'a Arc<dyn Clock>,
    store: &'a DynStore,
    metrics: &'a Metrics,
    engine: &'a task::EngineHandle,
    tracker: &'a TaskTracker,
    cancel: &'a CancellationToken,
}

/// The Kafka side of an instance.
struct Kafka {
    source: KafkaSource,
    publisher: Option<Arc<Publisher>>,
    forwarder: Arc<crate::ingest::Forwarder>,
}

impl Ctx<'_> {
    /// The consumer, the publisher of HTTP-received alerts (when the
    /// instances share an ingest topic), the command forwarder, and the
    /// change-record refresh from the shared store.
    fn kafka(
        &self,
        k: &KafkaConfig,
        ownership: &Arc<Ownership>,
        quarantine: &Arc<crate::ingest::Quarantine>,
    ) -> Result<Kafka> {
        // A ServiceNow or Jira delivery makes up to four calls.
        let outbox_drain = self
            .cfg
            .outbound
            .iter()
            .map(|d| d.timeout * 4)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(1);
        let source = KafkaSource::spawn(
            k,
            SourceDeps {
                engine: self.engine.clone(),
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                clock: self.clock.clone(),
                windows: Windows {
                    reopen: self.cfg.engine.reopen_window,
                    retention: self.cfg.engine.alert_retention,
                    problems: self.cfg.engine.problems.period,
                },
                outbox: ownership.clone(),
                outbox_drain,
                alert_limits: self.cfg.limits.alert,
                time_bounds: self.cfg.limits.bounds,
                quarantine: quarantine.clone(),
            },
            self.tracker,
            self.cancel.clone(),
        )
        .context("starting the Kafka consumer")?;
        let publisher = match &k.ingest_topic {
            Some(t) => Some(Arc::new(
                Publisher::new(k, t, self.metrics.clone())
                    .context("starting the Kafka publisher")?,
            )),
            None => None,
        };
        self.tracker.spawn(refresh_changes(
            self.store.clone(),
            self.engine.clone(),
            self.cfg.changes_refresh,
            self.cancel.clone(),
        ));
        tracing::info!(brokers = %k.brokers, group = %k.group_id, topics = ?k.topics.iter().map(|t| &t.name).collect::<Vec<_>>(), distributed = publisher.is_some(), "kafka source started");
        let forwarder = Arc::new(
            crate::ingest::Forwarder::new(k, publisher.as_deref(), self.metrics.clone())
                .context("starting the Kafka command producer")?,
        );
        Ok(Kafka {
            source,
            publisher,
            forwarder,
        })
    }

    /// One destination's outbox sender.
    fn sender(&self, d: Destination, ownership: &Arc<Ownership>, actions: &Actions) {
        let d_cfg = d.cfg.clone();
        let sender = crate::outbound::sender::Sender::new(
            d.cfg,
            d.client,
            d.credential,
            self.store.clone(),
            self.clock.clone(),
            self.metrics.outbound.clone(),
            ownership.clone(),
        );
        if let Some(poller) = sender.poller(actions.clone()) {
            self.tracker.spawn(poller.run(self.cancel.clone()));
        }
        if let Some(follower) = sender.follower(actions.clone()) {
            self.tracker.spawn(follower.run(self.cancel.clone()));
        }
        if d_cfg.url.starts_with("https://")
            && let Some(e) = crate::net::tls::trust_problem(&d_cfg.net.tls)
        {
            tracing::warn!(destination = %d_cfg.name, error = %e, "no server certificate can be verified: every call will fail");
        }
        self.tracker
            .spawn(sender.run(self.engine.commits(), self.cancel.clone()));
        tracing::info!(
            destination = %d_cfg.name,
            kind = d_cfg.kind.as_str(),
            url = %d_cfg.display_url(),
            api_url = ?d_cfg.api_url().map(crate::net::redact_url),
            ca_file = ?d_cfg.net.tls.ca_file,
            client_cert = d_cfg.net.tls.client_cert.is_some(),
            proxy = %proxy_summary(&d_cfg.net.proxy),
            settle = %settle_summary(&d_cfg.settle),
            "outbound destination started"
        );
    }
}

/// Watch the store's files: a database deleted or replaced under the
/// daemon is found within seconds, said once at ERROR and counted; from
/// then on `/readyz` and ingest answer 503 and nothing is written. Also
/// reports how far the tables trail the journal.
async fn watch_store(store: DynStore, metrics: Metrics, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(b) = store.journal_backlog() {
            metrics
                .store_journal_backlog
                .set(i64::try_from(b).unwrap_or(i64::MAX));
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

/// A destination's settle delay for the log: one figure, or P1..P5's.
fn settle_summary(s: &crate::domain::outbox::Settle) -> String {
    use crate::domain::{Priority, format_duration};
    let all: Vec<String> = Priority::ALL
        .iter()
        .map(|p| format_duration(s.of(*p)))
        .collect();
    if all.iter().all(|d| *d == all[0]) {
        all[0].clone()
    } else {
        Priority::ALL
            .iter()
            .zip(&all)
            .map(|(p, d)| format!("{}={d}", p.as_str()))
            .collect::<Vec<_>>()
            .join(",")
    }
}
