//! The KPI series on `/metrics` and the book the API reads: rebuilt from
//! the store every `kpi.refresh`, so every instance shows the same figures
//! and a restart loses none.

use super::KpiError;
use super::{
    ChangeOutcome, Inputs, KpiBook, KpiBuilder, KpiConfig, Kpis, NOISE_WINDOWS, SLA_KINDS,
    TREND_WINDOWS, band_starts, incident_horizon,
};
use crate::cmdb::SharedCmdb;
use crate::domain::{Clock, Priority, Timestamp};
use crate::store::{DynStore, IncidentCursor};

/// Incidents read per page: a month of them is never held at once.
const PAGE: u32 = 1000;
use crate::telemetry::KpiMetrics;
use prometheus::GaugeVec;
use rustc_hash::FxHashSet;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio_util::sync::CancellationToken;

/// Label values of one series.
type Labels = Vec<String>;

/// Keeps the current [`KpiBook`] and writes its figures into the metrics.
pub struct KpiExporter {
    book: RwLock<Arc<KpiBook>>,
    state: Mutex<Published>,
    metrics: KpiMetrics,
}

/// What the last refresh exported, so that series which lost their data
/// (a service removed from the catalog, a rule renamed) are dropped.
#[derive(Default)]
struct Published {
    /// Change ids decided at the first refresh: `incidentd_changes_total`
    /// counts the decisions seen since the process started, so a restart
    /// does not count the same change again (Prometheus' `increase()`
    /// takes the restart as a reset).
    baseline: Option<FxHashSet<String>>,
    counted: FxHashSet<String>,
    shown: Vec<BTreeSet<Labels>>,
}

impl KpiExporter {
    pub fn new(metrics: KpiMetrics) -> KpiExporter {
        KpiExporter {
            book: RwLock::new(Arc::new(KpiBook::default())),
            state: Mutex::new(Published::default()),
            metrics,
        }
    }

    pub fn book(&self) -> Arc<KpiBook> {
        self.book
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Make `book` current and export it.
    pub fn set_book(&self, book: KpiBook) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.count_changes(&mut st, &book);
        let m = &self.metrics;
        let gauges = [
            (&m.change_failure, change_failure(&book)),
            (&m.noise_alerts, noise_alerts(&book.overall, &[])),
            (&m.noise_suppressed, noise_suppressed(&book.overall)),
            (
                &m.noise_incidents,
                noise_of(&book.overall, &[], |n| Some(n.incidents as f64)),
            ),
            (
                &m.noise_reduction,
                noise_of(&book.overall, &[], |n| n.reduction_ratio),
            ),
            (&m.service_noise_alerts, per_service(&book, noise_alerts)),
            (
                &m.service_noise_incidents,
                per_service(&book, |k, l| noise_of(k, l, |n| Some(n.incidents as f64))),
            ),
            (
                &m.service_noise_reduction,
                per_service(&book, |k, l| noise_of(k, l, |n| n.reduction_ratio)),
            ),
            (
                &m.service_incidents,
                per_service(&book, |k, l| incidents_of(k, l, |f| Some(f.opened as f64))),
            ),
            (
                &m.service_mtta,
                per_service(&book, |k, l| incidents_of(k, l, |f| f.mtta_seconds)),
            ),
            (
                &m.service_mttr,
                per_service(&book, |k, l| incidents_of(k, l, |f| f.mttr_seconds)),
            ),
            (
                &m.service_sla_compliance,
                per_service(&book, sla_compliance),
            ),
        ];
        st.shown.resize_with(gauges.len(), BTreeSet::new);
        for ((vec, series), shown) in gauges.into_iter().zip(st.shown.iter_mut()) {
            publish(vec, shown, series);
        }
        drop(st);
        *self.book.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(book);
    }

    /// Count the changes decided since the first refresh, once each.
    fn count_changes(&self, st: &mut Published, book: &KpiBook) {
        let decided = book
            .changes
            .iter()
            .filter(|v| matches!(v.outcome, ChangeOutcome::Successful | ChangeOutcome::Failed));
        let Some(baseline) = &st.baseline else {
            // Every service's series from the start, at 0.
            for s in book.services.keys() {
                for o in [ChangeOutcome::Successful, ChangeOutcome::Failed] {
                    self.metrics.changes.with_label_values(&[s, o.as_str()]);
                }
            }
            st.baseline = Some(decided.map(|v| v.change.id.clone()).collect());
            return;
        };
        let fresh: Vec<_> = decided
            .filter(|v| !baseline.contains(&v.change.id) && !st.counted.contains(&v.change.id))
            .collect();
        for v in fresh {
            st.counted.insert(v.change.id.clone());
            for s in &v.services {
                self.metrics
                    .changes
                    .with_label_values(&[s, v.outcome.as_str()])
                    .inc();
            }
        }
    }

    /// Rebuild the book from the store and the catalog in force.
    pub async fn refresh(
        &self,
        store: &DynStore,
        cmdb: &SharedCmdb,
        cfg: &KpiConfig,
        pause_on: &[String],
        now: Timestamp,
    ) -> Result<(), KpiError> {
        let started = std::time::Instant::now();
        let cmdb = cmdb.read().unwrap_or_else(PoisonError::into_inner).clone();
        let changes = store.list_changes().await?;
        let alerts = store.alert_tallies(band_starts(now)).await?;
        let inputs = Inputs {
            cmdb: &cmdb,
            changes: &changes,
            alerts: &alerts,
            pause_on,
            failure_window: cfg.failure_window,
            now,
        };
        let since = incident_horizon(&changes, now);
        let mut b = KpiBuilder::new(&inputs);
        let mut after = IncidentCursor::Start;
        loop {
            let page = store.incidents_since_page(since, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = IncidentCursor::after(last);
            // A page of incidents against every service they impact: a
            // few milliseconds of CPU, between two awaits.
            page.iter().for_each(|inc| b.add(inc));
            if page.len() < PAGE as usize {
                break;
            }
        }
        let book = b.finish();
        self.set_book(book);
        let took = started.elapsed();
        self.metrics.refresh_seconds.set(took.as_secs_f64());
        tracing::debug!(took_ms = took.as_millis(), "KPI figures refreshed");
        Ok(())
    }

    /// Refresh every `cfg.refresh` until cancelled; a failed read keeps the
    /// last figures (and is counted).
    pub async fn run(
        self: Arc<Self>,
        store: DynStore,
        cmdb: SharedCmdb,
        cfg: KpiConfig,
        pause_on: Vec<String>,
        clock: Arc<dyn Clock>,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(cfg.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the caller has just refreshed.
        tick.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self
                .refresh(&store, &cmdb, &cfg, &pause_on, clock.now())
                .await
            {
                self.metrics.refresh_failures.inc();
                tracing::warn!(error = %e, "reading the KPI figures from the store");
            }
        }
    }
}

/// Set `series` on `vec`, removing what `shown` had that it lacks.
fn publish(vec: &GaugeVec, shown: &mut BTreeSet<Labels>, series: Vec<(Labels, f64)>) {
    let now: BTreeSet<Labels> = series.iter().map(|(l, _)| l.clone()).collect();
    for gone in shown.difference(&now) {
        let l: Vec<&str> = gone.iter().map(String::as_str).collect();
        let _ = vec.remove_label_values(&l);
    }
    for (l, v) in series {
        let l: Vec<&str> = l.iter().map(String::as_str).collect();
        vec.with_label_values(&l).set(v);
    }
    *shown = now;
}

fn labels(prefix: &[&str], rest: &[&str]) -> Labels {
    prefix
        .iter()
        .chain(rest)
        .map(|s| (*s).to_string())
        .collect()
}

/// Each service's series, its id as the first label.
fn per_service(
    book: &KpiBook,
    f: impl Fn(&Kpis, &[&str]) -> Vec<(Labels, f64)>,
) -> Vec<(Labels, f64)> {
    book.services
        .iter()
        .flat_map(|(s, k)| f(k, &[s.as_str()]))
        .collect()
}

fn noise_alerts(k: &Kpis, prefix: &[&str]) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for (w, _) in NOISE_WINDOWS {
        if let Some(n) = k.noise.get(w) {
            for (kind, v) in [
                ("received", n.alerts),
                ("suppressed", n.suppressed),
                ("correlated", n.correlated),
            ] {
                out.push((labels(prefix, &[w, kind]), v as f64));
            }
        }
    }
    out
}

fn noise_suppressed(k: &Kpis) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for (w, _) in NOISE_WINDOWS {
        if let Some(n) = k.noise.get(w) {
            for (rule, v) in &n.suppressed_by_rule {
                out.push((labels(&[], &[w, rule]), *v as f64));
            }
        }
    }
    out
}

fn noise_of(
    k: &Kpis,
    prefix: &[&str],
    f: impl Fn(&super::Noise) -> Option<f64>,
) -> Vec<(Labels, f64)> {
    NOISE_WINDOWS
        .iter()
        .filter_map(|(w, _)| {
            let v = f(k.noise.get(w)?)?;
            Some((labels(prefix, &[w]), v))
        })
        .collect()
}

fn incidents_of(
    k: &Kpis,
    prefix: &[&str],
    f: impl Fn(&super::IncidentFigures) -> Option<f64>,
) -> Vec<(Labels, f64)> {
    let mut out = Vec::new();
    for (w, _) in TREND_WINDOWS {
        let Some(all) = k.incidents.get(w) else {
            continue;
        };
        for p in Priority::ALL {
            if let Some(v) = all.by_priority.get(p.as_str()).and_then(&f) {
                out.push((labels(prefix, &[p.as_str(), w]), v));
            }
        }
    }
    out
}

fn sla_compliance(k: &Kpis, prefix: &[&str]) -> Vec<(Labels, f64)> {
    SLA_KINDS
        .iter()
        .filter_map(|kind| Some((labels(prefix, &[kind]), *k.sla_compliance.get(kind)?)))
        .collect()
}

fn change_failure(book: &KpiBook) -> Vec<(Labels, f64)> {
    per_service(book, |k, prefix| {
        TREND_WINDOWS
            .iter()
            .filter_map(|(w, _)| {
                let r = k.changes.get(w)?.failure_ratio?;
                Some((labels(prefix, &[w]), r))
            })
            .collect()
    })
}
