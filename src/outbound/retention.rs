//! Retention of the outbox: finished messages are a delivery record, not
//! an archive.

use crate::domain::Clock;
use crate::store::Outbox;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Finished messages deleted per statement, so a large first prune does
/// not hold the store's writer for long.
const PRUNE_BATCH: u32 = 5_000;

/// How often finished messages are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Delete finished (delivered or given-up) outbox messages older than
/// `retention`, at start and then hourly: the outbox is a delivery record,
/// not an archive, and without this it grows by every change of every
/// incident times its destinations. Pending messages are never touched.
/// Any number of instances may run this at once (the same DELETE).
pub async fn prune(
    store: Arc<dyn Outbox>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before = clock.now().saturating_sub(retention);
        let mut total = 0u64;
        loop {
            match store.outbox_prune(before, PRUNE_BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < u64::from(PRUNE_BATCH) || cancel.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning finished outbox messages");
                    break;
                }
            }
            // Let ingest's commits in between batches.
            tokio::task::yield_now().await;
        }
        if total > 0 {
            tracing::info!(deleted = total, older_than = %before, "finished outbox messages pruned");
        }
    }
}
