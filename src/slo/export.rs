//! The SLO series on `/metrics`: the book of downtime intervals is rebuilt
//! from the store every `slo.refresh` (so restarts, reloads of the catalog
//! and backdated incidents all show), and the figures are computed from it
//! at each scrape, so an outage in progress is counted to the second.

use super::SloConfig;
use super::{SloBook, horizon, seconds_between};
use crate::cmdb::SharedCmdb;
use crate::domain::{Clock, Priority, Timestamp};
use crate::store::{DynStore, StoreError};
use crate::telemetry::SloMetrics;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio_util::sync::CancellationToken;

/// Keeps the current [`SloBook`] and writes its figures into the metrics.
pub struct SloExporter {
    /// Where the `_seconds_total` counters start counting: the process's
    /// start, so that they only ever grow while it runs (Prometheus'
    /// `rate()` handles the reset of a restart).
    started: Timestamp,
    book: RwLock<Arc<SloBook>>,
    /// (service, slo) pairs exported by the last scrape, so that the series
    /// of an SLO removed from the catalog are dropped. The lock also keeps
    /// two concurrent scrapes from racing on the counters.
    exported: Mutex<BTreeSet<(String, String)>>,
    metrics: SloMetrics,
}

impl SloExporter {
    pub fn new(started: Timestamp, metrics: SloMetrics) -> SloExporter {
        SloExporter {
            started,
            book: RwLock::new(Arc::new(SloBook::default())),
            exported: Mutex::new(BTreeSet::new()),
            metrics,
        }
    }

    pub fn set_book(&self, book: SloBook) {
        *self.book.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(book);
    }

    pub fn book(&self) -> Arc<SloBook> {
        self.book
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Set every SLO series to its value at `now`.
    pub fn export(&self, now: Timestamp) {
        let book = self.book();
        let m = &self.metrics;
        let mut exported = self.exported.lock().unwrap_or_else(PoisonError::into_inner);
        let current: BTreeSet<(String, String)> = book
            .series
            .iter()
            .map(|s| (s.service.clone(), s.slo.clone()))
            .collect();
        for (service, slo) in exported.difference(&current) {
            let l = [service.as_str(), slo.as_str()];
            let _ = m.objective.remove_label_values(&l);
            let _ = m.window.remove_label_values(&l);
            let _ = m.sli.remove_label_values(&l);
            let _ = m.budget_remaining.remove_label_values(&l);
            let _ = m.bad_seconds.remove_label_values(&l);
            let _ = m.valid_seconds.remove_label_values(&l);
            for (w, _) in super::BURN_WINDOWS {
                let _ = m.burn_rate.remove_label_values(&[service, slo, w]);
            }
            let _ = m.burn_rate.remove_label_values(&[service, slo, "slo"]);
        }
        for s in &book.series {
            let l = [s.service.as_str(), s.slo.as_str()];
            let f = s.figures(now);
            m.objective.with_label_values(&l).set(s.objective);
            m.window.with_label_values(&l).set(s.window.as_secs_f64());
            m.sli.with_label_values(&l).set(f.sli);
            m.budget_remaining
                .with_label_values(&l)
                .set(f.budget_remaining);
            for (w, v) in &f.burn_rates {
                m.burn_rate.with_label_values(&[l[0], l[1], w]).set(*v);
            }
            let (bad, valid) = seconds_between(self.started, now, &s.downtime, &s.maintenance);
            // Counters never go back: when an incident's end moves earlier
            // than a scrape already counted, the excess stays (the gauges
            // above are exact either way).
            for (c, v) in [(&m.bad_seconds, bad), (&m.valid_seconds, valid)] {
                let c = c.with_label_values(&l);
                let grow = v - c.get();
                if grow > 0.0 {
                    c.inc_by(grow);
                }
            }
        }
        *exported = current;
    }

    /// Rebuild the book from the store and the catalog in force.
    pub async fn refresh(
        &self,
        store: &DynStore,
        cmdb: &SharedCmdb,
        priorities: &[Priority],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let cmdb = cmdb.read().unwrap_or_else(PoisonError::into_inner).clone();
        // Without a service that has an SLO nothing read would be used:
        // reading every qualifying incident every refresh cost 100k
        // incidents' worth of transient memory, which the allocator then
        // keeps (BENCHMARKS.md entry 17).
        let any_slo = cmdb.services().iter().any(|s| !s.slos.is_empty());
        let Some(worst) = priorities.iter().max().copied().filter(|_| any_slo) else {
            self.set_book(SloBook::build(&cmdb, &[], &[], priorities));
            return Ok(());
        };
        let since = now.saturating_sub(horizon(&cmdb));
        let incidents = store.slo_incidents(since, worst).await?;
        let changes = store.list_changes().await?;
        self.set_book(SloBook::build(&cmdb, &incidents, &changes, priorities));
        Ok(())
    }

    /// Refresh every `cfg.refresh` until cancelled; a failed read keeps the
    /// last book (and is counted), so a store outage freezes the downtime
    /// intervals but not the clock.
    pub async fn run(
        self: Arc<Self>,
        store: DynStore,
        cmdb: SharedCmdb,
        cfg: SloConfig,
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
                .refresh(&store, &cmdb, &cfg.priorities, clock.now())
                .await
            {
                self.metrics.refresh_failures.inc();
                tracing::warn!(error = %e, "reading SLO downtime from the store");
            }
        }
    }
}
