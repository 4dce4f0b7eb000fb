//! Reading tickets back, for a ServiceNow or Jira that cannot send
//! webhooks: every `poll_interval`, the tickets of active incidents are
//! read in batches and what changed there acts on the incident through the
//! action service. Its own task, sharing the destination's limiter and
//! breaker with the outbox sender (both are load on the same API).

use super::inbound::Action as Ticketed;
use super::link::Link;
use super::owned::Ownership;
use super::retry::{self, Backoff, Breaker, Outcome};
use crate::domain::Clock;
use crate::incident::actions::{ActError, Action, Actions, Outcome as Acted};
use crate::incident::task::Operation;
use crate::store::Outbox;
use crate::telemetry::OutboundMetrics;
use governor::DefaultDirectRateLimiter;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Tickets listed per poll at most (their batches are read one by one).
const MAX_TICKETS: u32 = 5_000;

pub struct Poller {
    pub(super) link: Arc<Link>,
    pub(super) every: Duration,
    pub(super) backoff: Backoff,
    pub(super) retry_unauthorized: bool,
    pub(super) store: Arc<dyn Outbox>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) metrics: OutboundMetrics,
    pub(super) ownership: Arc<Ownership>,
    pub(super) limiter: Arc<DefaultDirectRateLimiter>,
    pub(super) breaker: Arc<Mutex<Breaker>>,
    pub(super) actions: Actions,
}

impl Poller {
    /// Poll until cancelled; paced in real time (it is load on the
    /// destination, not a matter of event time).
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.poll(&cancel).await;
        }
    }

    fn breaker_open(&self) -> bool {
        let b = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.allow(self.clock.now()).is_err()
    }

    /// One pass: a resolution there resolves the incident, an
    /// acknowledgement acknowledges it. Only tickets with no update of ours
    /// still on its way are read (theirs would be stale), only of the
    /// shards this instance owns, and not while the breaker is open.
    async fn poll(&self, cancel: &CancellationToken) {
        let name = self.link.name.as_str();
        let Some(reader) = self.link.destination().reader() else {
            return;
        };
        let shards = self.ownership.shards();
        let refs = match self
            .store
            .outbound_poll_refs(name, shards.as_deref(), MAX_TICKETS)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(destination = %name, error = %e, "listing tickets to read back");
                return;
            }
        };
        for batch in refs.chunks(reader.batch().max(1)) {
            if cancel.is_cancelled() || self.breaker_open() {
                return;
            }
            self.limiter.until_ready().await;
            let answer = self
                .link
                .call(&reader.query(batch, self.clock.now()), 0)
                .await;
            // Labelled as a delivery's answer would be (the next poll is
            // the retry).
            let outcome = match retry::classify(
                answer.status,
                None,
                0,
                &self.backoff,
                self.retry_unauthorized,
                0.0,
            ) {
                Outcome::Delivered => "success",
                Outcome::Retry(_) => "retry",
                Outcome::GiveUp(_) => "rejected",
            };
            self.metrics
                .requests
                .with_label_values(&[name, "poll", outcome])
                .inc();
            if !answer.ok() {
                self.metrics
                    .failures
                    .with_label_values(&[name, answer.reason.as_str()])
                    .inc();
                tracing::warn!(destination = %name, status = ?answer.status, reason = answer.reason.as_str(), error = %answer.detail, "reading tickets back failed; next poll tries again");
                return;
            }
            for u in reader.updates(batch, &answer.json) {
                // Only the incidents asked about: an answer naming others
                // does not act on them.
                if !batch.iter().any(|(i, _)| *i == u.incident) {
                    continue;
                }
                let (op, done) = match u.action {
                    Ticketed::Resolve => (Operation::Resolve, "resolved"),
                    Ticketed::Acknowledge => (Operation::Acknowledge, "acknowledged"),
                    Ticketed::None => continue,
                };
                let action = Action {
                    id: u.incident,
                    actor: u.actor.clone(),
                    op,
                    reason: None,
                };
                match self.actions.act(action).await {
                    Ok(Acted::Applied(_) | Acted::Forwarded { .. }) => {
                        self.metrics
                            .inbound
                            .with_label_values(&[name, "poll", done])
                            .inc();
                        tracing::info!(destination = %name, incident = u.incident.0, by = %u.actor, action = done, "ticket changed downstream; incident follows");
                    }
                    // Already there, or gone meanwhile.
                    Ok(Acted::Unchanged(_)) | Err(ActError::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(destination = %name, incident = u.incident.0, error = %e, "applying a ticket read back");
                    }
                }
            }
        }
    }
}
