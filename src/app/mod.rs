//! Wiring only: [`build`] reads and checks what the configuration names,
//! [`spawn`] runs it; [`serve`] adds the listener and signals, [`check`]
//! validates without starting anything, [`backup`] copies the SQLite
//! record, and [`commands`] is one function per CLI command.

pub mod backup;
mod build;
mod check;
pub mod commands;
mod connect;
mod reload;
mod serve;
mod spawn;

pub use crate::offline::{
    CmdbChoice, Offline, ReplayResult, load_cmdb, offline_setup, read_changes, replay,
    replay_bodies,
};
pub use check::{CheckReport, check};
pub use serve::serve;

use crate::cmdb::SharedCmdb;
use crate::config::Config;
use crate::domain::Clock;
use crate::incident::task;
use crate::store::DynStore;
use crate::telemetry::Metrics;
use anyhow::Result;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A started pipeline: the HTTP router plus what shutdown needs.
pub struct Running {
    pub router: axum::Router,
    pub store: DynStore,
    pub engine: task::EngineHandle,
    pub metrics: Metrics,
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
    pub cmdb: SharedCmdb,
    /// Ends the web board's event streams (a child of `cancel`): the
    /// server cancels it when it starts to drain, so that open browsers
    /// do not hold a graceful stop for the whole drain time.
    pub streams: CancellationToken,
    /// Cancelled when a stop is asked with `http.shutdown_delay` to wait
    /// out: `/readyz` answers 503 (`"stopping": true`) while everything
    /// else is still served.
    pub stop_asked: CancellationToken,
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
        // A stopped daemon leaves every table complete (a copy of the
        // database taken now holds everything); if this fails, the next
        // start projects the rest from the journal.
        if let Err(e) = self.store.settle().await {
            tracing::warn!(error = %e, "stopping with journal records not yet in the tables; the next start applies them");
        }
    }
}

/// Open the store, restore state, start engine and writer, build the router.
pub async fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Running> {
    let store = build::open_store(cfg).await?;
    start_with(cfg, clock, store, Metrics::new()).await
}

/// [`start`] on a store already open, reporting into `metrics`.
pub async fn start_with(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    store: DynStore,
    metrics: Metrics,
) -> Result<Running> {
    let parts = build::build(cfg, &store, &metrics, clock.now()).await?;
    spawn::spawn(cfg, clock, store, metrics, parts).await
}
