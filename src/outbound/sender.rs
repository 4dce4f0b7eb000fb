//! The outbox sender of one destination (thin async wrapper around the
//! pure request builders): reads undelivered messages in write order,
//! delivers each incident's messages strictly in order (an incident whose
//! oldest message waits on a retry holds its later ones; other incidents
//! go on), paces requests with a `governor` limiter, retries by
//! [`retry::classify`], and marks each message finished only after the
//! destination answered. A crash between the call and the mark sends the
//! message again after the restart: the requests are idempotent
//! downstream (dedup keys, aliases, delivery ids), so the effect is once.

use super::EventKind;
use super::destination::Credential;
use super::link::{Bases, Link};
use super::owned::Ownership;
use super::poller::Poller;
use super::retry::{self, Breaker, BreakerState, Outcome, Trip};
use super::settings::DestinationConfig;
use crate::domain::{Clock, IncidentId, TimelineEntry, TimelineKind, Timestamp};
use crate::incident::actions::Actions;
use crate::net::FailureReason;
use crate::store::{Delivery, Outbox, OutboxRow, StoreError};
use crate::telemetry::OutboundMetrics;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Messages read per round; an incident with more queued than this holds
/// the others back until its backlog shrinks (far beyond any real burst).
const ROUND: u32 = 500;

/// Longest sleep between rounds with nothing due (new messages also wake
/// the sender through the store's commit notifications).
const IDLE: Duration = Duration::from_secs(5);

/// Shortest time between two rounds: under an alert storm the store
/// commits many times a second, and each commit need not cost the store
/// an outbox query per destination. Adds at most this to a delivery.
const MIN_GAP: Duration = Duration::from_millis(50);

/// How often the queue-depth gauge is refreshed (a COUNT over the outbox).
const DEPTH_EVERY: Duration = Duration::from_secs(5);

pub struct Sender {
    cfg: DestinationConfig,
    link: Arc<Link>,
    store: Arc<dyn Outbox>,
    clock: Arc<dyn Clock>,
    metrics: OutboundMetrics,
    /// The shards whose messages are ours to deliver.
    ownership: Arc<Ownership>,
    /// Shared with the ticket poller: both are load on the destination.
    limiter: Arc<DefaultDirectRateLimiter>,
    breaker: Arc<Mutex<Breaker>>,
    /// State of the jitter generator.
    seed: u64,
    /// When the queue-depth gauge was last counted.
    depth_at: Option<std::time::Instant>,
    /// No call before this: the destination's last `Retry-After` (a rate
    /// limit holds for the whole API key, not for one message).
    pause_until: Option<Timestamp>,
}

impl Sender {
    /// `client` is built by [`crate::net::http_client`] from the
    /// destination's TLS and proxy settings (never follows redirects).
    pub fn new(
        cfg: DestinationConfig,
        client: reqwest::Client,
        credential: Credential,
        store: Arc<dyn Outbox>,
        clock: Arc<dyn Clock>,
        metrics: OutboundMetrics,
        ownership: Arc<Ownership>,
    ) -> Sender {
        let burst = NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs_f64(1.0 / cfg.rate_limit.max(1e-6));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let breaker = Breaker::new(cfg.breaker_failures, cfg.breaker_cool_down);
        let seed = clock.now().0 as u64 ^ 0x9e37_79b9_7f4a_7c15;
        let link = Arc::new(Link::new(
            cfg.name.clone(),
            Bases {
                url: cfg.url.clone(),
                api: cfg.api_url().map(str::to_string),
            },
            client,
            super::destination::build(&cfg, credential),
            clock.clone(),
            metrics.clone(),
            store.clone(),
        ));
        Sender {
            cfg,
            link,
            store,
            clock,
            metrics,
            ownership,
            limiter: Arc::new(RateLimiter::direct(quota)),
            breaker: Arc::new(Mutex::new(breaker)),
            seed,
            depth_at: None,
            pause_until: None,
        }
    }

    /// The task that reads this destination's tickets back, when it keeps
    /// tickets and `poll_interval` is set; what it reads acts through
    /// `actions`.
    pub fn poller(&self, actions: Actions) -> Option<Poller> {
        let every = self.cfg.poll_interval?;
        self.link.destination().reader()?;
        Some(Poller {
            link: self.link.clone(),
            every,
            backoff: self.cfg.backoff,
            retry_unauthorized: self.cfg.retry_unauthorized,
            store: self.store.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            ownership: self.ownership.clone(),
            limiter: self.limiter.clone(),
            breaker: self.breaker.clone(),
            actions,
        })
    }

    /// The task that follows a StackStorm destination's executions to
    /// their end; a successful one acts through `actions` when configured.
    pub fn follower(&self, actions: Actions) -> Option<super::stackstorm::Follower> {
        let super::settings::DestinationKind::StackStorm { remediation, .. } = &self.cfg.kind
        else {
            return None;
        };
        Some(super::stackstorm::Follower::new(
            self.link.clone(),
            remediation.as_ref().clone(),
            self.clock.clone(),
            self.ownership.clone(),
            actions,
        ))
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        lock(&self.breaker)
    }

    /// A uniform draw from [0, 1) (splitmix64): jitter needs no more.
    fn unit(&mut self) -> f64 {
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Deliver until cancelled; wakes on commits (`commits`), when a
    /// shard is gained and when a waiting message becomes due.
    pub async fn run(mut self, mut commits: watch::Receiver<u64>, cancel: CancellationToken) {
        let mut gained = self.ownership.subscribe();
        loop {
            // The next message's due time is event time (the injected
            // clock); the cap is real time, a safety net against a clock
            // that jumps.
            let (due, cap) = match self.round(&cancel).await {
                Ok(due) => (due, IDLE),
                Err(e) => {
                    tracing::warn!(destination = %self.cfg.name, error = %e, "outbox unavailable; retrying");
                    (None, Duration::from_secs(1))
                }
            };
            self.update_depth().await;
            let clock = self.clock.clone();
            let until_due = async move {
                match due {
                    Some(t) => clock.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                r = commits.changed() => if r.is_err() { return },
                _ = gained.changed() => {}
                () = until_due => {}
                () = tokio::time::sleep(cap) => {}
            }
            // Commits arriving meanwhile are served by the same round.
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(MIN_GAP) => {}
            }
            commits.borrow_and_update();
            gained.borrow_and_update();
        }
    }

    /// Count the backlog for the gauge, at most every [`DEPTH_EVERY`].
    async fn update_depth(&mut self) {
        if self.depth_at.is_some_and(|t| t.elapsed() < DEPTH_EVERY) {
            return;
        }
        self.depth_at = Some(std::time::Instant::now());
        let shards = self.ownership.shards();
        if let Ok(depths) = self.store.outbox_depth(shards.as_deref()).await {
            let n = depths
                .iter()
                .find(|(d, _)| *d == self.cfg.name)
                .map_or(0, |(_, n)| *n);
            self.metrics
                .queue_depth
                .with_label_values(&[&self.cfg.name])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Deliver everything due now; the instant the next waiting message
    /// is due, if any.
    async fn round(&mut self, cancel: &CancellationToken) -> Result<Option<Timestamp>, StoreError> {
        loop {
            // The destination asked (Retry-After) for no calls until then.
            if let Some(p) = self.pause_until.filter(|p| *p > self.clock.now()) {
                return Ok(Some(p));
            }
            let shards = self.ownership.shards();
            let rows = self
                .store
                .outbox_pending(&self.cfg.name, shards.as_deref(), ROUND)
                .await?;
            let now = self.clock.now();
            let mut seen = rustc_hash::FxHashSet::default();
            // The waiting message due first.
            let mut next: Option<OutboxRow> = None;
            let mut due = Vec::new();
            for r in rows {
                // Only each incident's oldest message may go.
                if !seen.insert(r.message.incident.id) {
                    continue;
                }
                if r.next_at <= now {
                    due.push(r);
                } else if next.as_ref().is_none_or(|n| r.next_at < n.next_at) {
                    next = Some(r);
                }
            }
            if due.is_empty() {
                match next {
                    // The breaker's cool-down is over: probe with the
                    // message due first instead of letting the backoffs
                    // piled up during an outage decide when recovery is
                    // noticed.
                    Some(probe) if self.breaker().state(now) == BreakerState::HalfOpen => {
                        due.push(probe);
                        next = None;
                    }
                    // While the breaker is open, wake for its probe too.
                    Some(n) => {
                        let wake = match self.breaker().allow(now) {
                            Err(until) => n.next_at.min(until),
                            Ok(()) => n.next_at,
                        };
                        return Ok(Some(wake));
                    }
                    None => {
                        // Nothing pending: the gauge needs no query to say so.
                        self.metrics
                            .queue_depth
                            .with_label_values(&[&self.cfg.name])
                            .set(0);
                        return Ok(None);
                    }
                }
            }
            let next = next.map(|n| n.next_at);
            for r in due {
                if cancel.is_cancelled() {
                    return Ok(None);
                }
                // Bound first: the guard must be gone before `set_breaker`.
                let allowed = self.breaker().allow(self.clock.now());
                if let Err(until) = allowed {
                    self.set_breaker();
                    return Ok(Some(next.map_or(until, |n| n.min(until))));
                }
                if self.pause_until.is_some_and(|p| p > self.clock.now()) {
                    break;
                }
                // Given up meanwhile (a rebalance): its new owner sends it.
                let Some(_flight) = self.ownership.begin(r.message.incident.shard) else {
                    continue;
                };
                self.limiter.until_ready().await;
                self.deliver(r).await?;
                // A long backlog keeps this round going: keep the gauge true.
                self.update_depth().await;
            }
        }
    }

    fn count(&self, kind: EventKind, outcome: &str) {
        self.metrics
            .requests
            .with_label_values(&[self.cfg.name.as_str(), kind.as_str(), outcome])
            .inc();
    }

    fn count_failure(&self, reason: FailureReason) {
        self.metrics
            .failures
            .with_label_values(&[self.cfg.name.as_str(), reason.as_str()])
            .inc();
    }

    fn set_breaker(&self) {
        let v = match self.breaker().state(self.clock.now()) {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.metrics
            .breaker
            .with_label_values(&[&self.cfg.name])
            .set(v);
    }

    async fn deliver(&mut self, row: OutboxRow) -> Result<(), StoreError> {
        let kind = row.message.kind;
        let incident = row.message.incident.id.0;
        if self.breaker().state(self.clock.now()) == BreakerState::HalfOpen {
            tracing::info!(destination = %self.cfg.name, outbox_id = row.id, incident, event = kind.as_str(), "circuit breaker half-open: one probe call to {} ({})", self.cfg.name, self.cfg.kind.as_str());
        }
        let Some(answer) = self.link.destination().deliver(&self.link, &row).await? else {
            // Nothing for this destination to hear of the event.
            return self
                .store
                .outbox_finish(row.id, self.clock.now(), Delivery::Delivered, None)
                .await;
        };
        let now = self.clock.now();
        let unit = self.unit();
        let outcome = retry::classify(
            answer.status,
            answer.retry_after,
            row.attempts,
            &self.cfg.backoff,
            self.cfg.retry_unauthorized,
            unit,
        );
        let detail = answer.detail;
        match outcome {
            Outcome::Delivered => {
                let recovered = self.breaker().on_success();
                self.count(kind, "success");
                self.metrics
                    .last_success
                    .with_label_values(&[&self.cfg.name])
                    .set(now.0 as f64 / 1000.0);
                // Delivered, though a follow-up of its own was refused (a
                // PagerDuty priority update): the incident's timeline says
                // so, in the same transaction.
                let note = answer.note.map(|why| {
                    self.count_failure(FailureReason::HttpStatus);
                    tracing::warn!(destination = %self.cfg.name, outbox_id = row.id, incident, event = kind.as_str(), error = %why, "outbound update delivered to {}; its follow-up was refused: {why}", self.cfg.name);
                    (
                        row.message.incident.id,
                        TimelineEntry {
                            at: now,
                            kind: TimelineKind::OutboundFailed,
                            message: format!(
                                "{} ({}): the {} update was delivered, but {why}",
                                self.cfg.name,
                                self.cfg.kind.as_str(),
                                kind.as_str()
                            ),
                            actor: None,
                        },
                    )
                });
                self.store
                    .outbox_finish(row.id, now, Delivery::Delivered, note)
                    .await?;
                if recovered {
                    // The destination is back: what waits on backoffs from
                    // the outage goes now (still paced by the limiter),
                    // not up to `backoff_max` later.
                    let woken = self.store.outbox_wake(&self.cfg.name, now).await?;
                    // The backlog is every message not delivered yet: those
                    // woken from a backoff and those that were due already
                    // (`woken` alone said 0 while messages waited).
                    // A failed count only costs the figure: the delivery
                    // is recorded already.
                    let shards = self.ownership.shards();
                    let backlog = match self.store.outbox_depth(shards.as_deref()).await {
                        Ok(depths) => Some(
                            depths
                                .into_iter()
                                .find(|(d, _)| *d == self.cfg.name)
                                .map_or(0, |(_, n)| n),
                        ),
                        Err(e) => {
                            tracing::warn!(destination = %self.cfg.name, error = %e, "counting the backlog");
                            None
                        }
                    };
                    let left = backlog.map_or_else(
                        || "its backlog goes now".to_string(),
                        |n| format!("{n} message(s) still to send"),
                    );
                    tracing::info!(destination = %self.cfg.name, incident, backlog, woken, "destination {} recovered: the half-open probe succeeded, circuit breaker closed; {left}", self.cfg.name);
                }
            }
            Outcome::Retry(after) => {
                let trip = self.breaker().on_failure(now);
                if let Some(ra) = answer.retry_after {
                    self.pause_until = Some(now.saturating_add(ra));
                }
                self.count(kind, "retry");
                self.count_failure(answer.reason);
                let error = failure_text(answer.status, &detail);
                tracing::warn!(destination = %self.cfg.name, outbox_id = row.id, incident, event = kind.as_str(), status = answer.status, attempt = row.attempts + 1, retry_in = ?after, reason = answer.reason.as_str(), %error, "outbound delivery to {} failed, will retry: {error}", self.cfg.name);
                match trip {
                    Some(Trip::Opened { failures, until }) => {
                        tracing::warn!(destination = %self.cfg.name, failures, cool_down = ?self.cfg.breaker_cool_down, until = %until, "circuit breaker of {} open after {failures} failures in a row: no calls until {until}, then one probe", self.cfg.name)
                    }
                    Some(Trip::ProbeFailed { until }) => {
                        tracing::warn!(destination = %self.cfg.name, incident, until = %until, "circuit breaker of {}: the half-open probe failed ({error}); open again until {until}", self.cfg.name)
                    }
                    None => {}
                }
                // The timeline hears of the first failure and of each new
                // cause, not of every retry of an outage.
                let note = (row.last_error.as_deref() != Some(error.as_str())).then(|| {
                    (
                        row.message.incident.id,
                        TimelineEntry {
                            at: now,
                            kind: TimelineKind::OutboundRetrying,
                            message: format!(
                                "{} ({}): the {} update failed, will retry: {error}",
                                self.cfg.name,
                                self.cfg.kind.as_str(),
                                kind.as_str()
                            ),
                            actor: None,
                        },
                    )
                });
                self.store
                    .outbox_retry(
                        row.id,
                        row.attempts.saturating_add(1),
                        now.saturating_add(after),
                        error,
                        note,
                    )
                    .await?;
            }
            Outcome::GiveUp(why) => {
                self.count(kind, "rejected");
                self.count_failure(answer.reason);
                let why = if detail.is_empty() {
                    why
                } else {
                    format!("{why}: {detail}")
                };
                tracing::warn!(destination = %self.cfg.name, outbox_id = row.id, incident, event = kind.as_str(), status = answer.status, reason = answer.reason.as_str(), error = %why, "outbound delivery to {} refused, not retried: {why}", self.cfg.name);
                let note = TimelineEntry {
                    at: now,
                    kind: TimelineKind::OutboundFailed,
                    message: format!(
                        "{} ({}) refused the {} update: {why}",
                        self.cfg.name,
                        self.cfg.kind.as_str(),
                        kind.as_str()
                    ),
                    actor: None,
                };
                let incident: IncidentId = row.message.incident.id;
                self.store
                    .outbox_finish(row.id, now, Delivery::GaveUp(why), Some((incident, note)))
                    .await?;
            }
        }
        self.set_breaker();
        Ok(())
    }
}

/// A failed call as the log, the outbox and the timeline say it: the HTTP
/// status and what the API answered, or the transport's whole cause.
fn failure_text(status: Option<u16>, detail: &str) -> String {
    match (status, detail.is_empty()) {
        (Some(s), true) => format!("HTTP {s} (empty answer)"),
        (Some(s), false) => format!("HTTP {s}: {detail}"),
        (None, true) => "no answer".to_string(),
        (None, false) => detail.to_string(),
    }
}

/// The breaker, even if a holder panicked (its state is a few counters).
fn lock(b: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
