//! The outbox sender of one destination (thin async wrapper around the
//! pure request builders): reads undelivered messages in write order,
//! delivers each incident's messages strictly in order (an incident whose
//! oldest message waits on a retry holds its later ones; other incidents
//! go on), paces requests with a `governor` limiter, retries by
//! [`retry::classify`], and marks each message finished only after the
//! destination answered. A crash between the call and the mark sends the
//! message again after the restart: the requests are idempotent
//! downstream (dedup keys, aliases, delivery ids), so the effect is once.

use super::owned::Ownership;
use super::retry::{self, Breaker, BreakerState, Outcome};
use super::settings::{DestinationConfig, DestinationKind};
use super::{EventKind, Method, Request};
use crate::domain::{Clock, IncidentId, TimelineEntry, TimelineKind, Timestamp};
use crate::incident::actions::{ActError, Action, Actions, Outcome as Acted};
use crate::incident::task::Operation;
use crate::net::FailureReason;
use crate::store::{Delivery, DynStore, OutboxRow, StoreError};
use crate::telemetry::OutboundMetrics;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
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
    credential: Credential,
    client: reqwest::Client,
    store: DynStore,
    clock: Arc<dyn Clock>,
    metrics: OutboundMetrics,
    /// The shards whose messages are ours to deliver.
    ownership: Arc<Ownership>,
    /// Where tickets read back act (polling).
    actions: Actions,
    limiter: DefaultDirectRateLimiter,
    breaker: Breaker,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: DestinationConfig,
        client: reqwest::Client,
        credential: Credential,
        store: DynStore,
        clock: Arc<dyn Clock>,
        metrics: OutboundMetrics,
        ownership: Arc<Ownership>,
        actions: Actions,
    ) -> Sender {
        let burst = NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs_f64(1.0 / cfg.rate_limit.max(1e-6));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let breaker = Breaker::new(cfg.breaker_failures, cfg.breaker_cool_down);
        let seed = clock.now().0 as u64 ^ 0x9e37_79b9_7f4a_7c15;
        Sender {
            cfg,
            credential,
            client,
            store,
            clock,
            metrics,
            ownership,
            actions,
            limiter: RateLimiter::direct(quota),
            breaker,
            seed,
            depth_at: None,
            pause_until: None,
        }
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
        // Polling is paced in real time: it is load on the destination.
        let mut next_poll = self
            .cfg
            .poll_interval
            .map(|p| tokio::time::Instant::now() + p);
        loop {
            if let (Some(at), Some(every)) = (next_poll, self.cfg.poll_interval)
                && tokio::time::Instant::now() >= at
            {
                self.poll(&cancel).await;
                next_poll = Some(tokio::time::Instant::now() + every);
            }
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
            let until_poll = async move {
                match next_poll {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                r = commits.changed() => if r.is_err() { return },
                _ = gained.changed() => {}
                () = until_due => {}
                () = until_poll => {}
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

    /// Read the tickets of active incidents back (ServiceNow, Jira) and
    /// apply what changed there: a resolution resolves the incident, an
    /// acknowledgement acknowledges it. Only tickets with no update of
    /// ours still on its way are read (theirs would be stale), only of the
    /// shards this instance owns, and not while the breaker is open.
    async fn poll(&mut self, cancel: &CancellationToken) {
        use super::poll;
        let shards = self.ownership.shards();
        let refs = match self
            .store
            .outbound_poll_refs(&self.cfg.name, shards.as_deref(), 5_000)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(destination = %self.cfg.name, error = %e, "listing tickets to read back");
                return;
            }
        };
        let ours = match &self.credential {
            Credential::Basic { user, .. } => Some(user.clone()),
            _ => None,
        };
        for batch in refs.chunks(poll::BATCH) {
            if cancel.is_cancelled() || self.breaker.allow(self.clock.now()).is_err() {
                return;
            }
            let req = match self.cfg.kind {
                DestinationKind::ServiceNow { .. } => {
                    let ids: Vec<String> = batch.iter().map(|(_, e)| e.clone()).collect();
                    poll::servicenow(&ids)
                }
                DestinationKind::Jira { .. } => {
                    let ids: Vec<IncidentId> = batch.iter().map(|(i, _)| *i).collect();
                    poll::jira(&ids)
                }
                _ => return,
            };
            self.limiter.until_ready().await;
            let answer = self.call(&req, 0).await;
            // Labelled as a delivery's answer would be (the next poll is
            // the retry).
            let outcome = match retry::classify(
                answer.status,
                None,
                0,
                &self.cfg.backoff,
                self.cfg.retry_unauthorized,
                0.0,
            ) {
                Outcome::Delivered => "success",
                Outcome::Retry(_) => "retry",
                Outcome::GiveUp(_) => "rejected",
            };
            self.metrics
                .requests
                .with_label_values(&[self.cfg.name.as_str(), "poll", outcome])
                .inc();
            if !answer.ok() {
                self.count_failure(answer.reason);
                tracing::warn!(destination = %self.cfg.name, status = ?answer.status, reason = answer.reason.as_str(), error = %answer.detail, "reading tickets back failed; next poll tries again");
                return;
            }
            let updates = match self.cfg.kind {
                DestinationKind::ServiceNow { .. } => {
                    poll::servicenow_updates(&answer.json, ours.as_deref())
                }
                _ => poll::jira_updates(&answer.json),
            };
            for u in updates {
                // Only the incidents asked about: an answer naming others
                // does not act on them.
                if !batch.iter().any(|(i, _)| *i == u.incident) {
                    continue;
                }
                let op = match u.action {
                    super::inbound::Action::Resolve => Operation::Resolve,
                    super::inbound::Action::Acknowledge => Operation::Acknowledge,
                    super::inbound::Action::None => continue,
                };
                let action = Action {
                    id: u.incident,
                    actor: u.actor.clone(),
                    op,
                    reason: None,
                };
                match self.actions.act(action).await {
                    Ok(Acted::Applied(_) | Acted::Forwarded { .. }) => {
                        let action = match op {
                            Operation::Acknowledge => "acknowledged",
                            _ => "resolved",
                        };
                        self.metrics
                            .inbound
                            .with_label_values(&[self.cfg.name.as_str(), "poll", action])
                            .inc();
                        tracing::info!(destination = %self.cfg.name, incident = u.incident.0, by = %u.actor, action, "ticket changed downstream; incident follows");
                    }
                    // Already there, or gone meanwhile.
                    Ok(Acted::Unchanged(_)) | Err(ActError::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(destination = %self.cfg.name, incident = u.incident.0, error = %e, "applying a ticket read back");
                    }
                }
            }
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
                    Some(probe) if self.breaker.state(now) == BreakerState::HalfOpen => {
                        due.push(probe);
                        next = None;
                    }
                    // While the breaker is open, wake for its probe too.
                    Some(n) => {
                        let wake = match self.breaker.allow(now) {
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
                if let Err(until) = self.breaker.allow(self.clock.now()) {
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
        let v = match self.breaker.state(self.clock.now()) {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.metrics
            .breaker
            .with_label_values(&[&self.cfg.name])
            .set(v);
    }

    /// The request for `row`, or `None` when this destination has nothing
    /// to do for its event (e.g. Slack is not told of acknowledgements).
    /// ServiceNow takes several calls: see [`Sender::servicenow`].
    fn request(&self, row: &OutboxRow) -> Option<Request> {
        let inc = &row.message.incident;
        let kind = row.message.kind;
        match &self.cfg.kind {
            DestinationKind::PagerDuty { .. } => {
                let key = match &self.credential {
                    Credential::Key(k) => k.as_str(),
                    _ => "",
                };
                super::pagerduty::event(key, inc, kind)
            }
            DestinationKind::Opsgenie { .. } => {
                let actor = match kind {
                    EventKind::Acknowledged => inc.acknowledged_by.as_deref(),
                    EventKind::OnHold => inc.current_hold().and_then(|h| h.by.as_deref()),
                    _ => None,
                };
                Some(super::opsgenie::request(inc, kind, actor))
            }
            DestinationKind::Slack => {
                let link = self
                    .cfg
                    .incident_url
                    .as_ref()
                    .map(|u| u.replace("{id}", &inc.id.0.to_string()));
                super::slack::message(inc, kind, link.as_deref())
            }
            DestinationKind::Webhook { .. } => Some(super::webhook::body(inc, kind, row.id)),
            DestinationKind::ServiceNow { .. } | DestinationKind::Jira { .. } => None,
        }
    }

    /// One HTTP call to the destination (`delivery` names the outbox row
    /// for webhooks).
    async fn call(&self, req: &Request, delivery: i64) -> Answer {
        let url = if req.path.is_empty() {
            self.cfg.url.clone()
        } else {
            format!("{}{}", self.cfg.url, req.path)
        };
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
        };
        let body = req
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut rb = self
            .client
            .request(method.clone(), &url)
            .header(reqwest::header::ACCEPT, "application/json");
        rb = match &self.credential {
            Credential::Key(key) => match self.cfg.kind {
                DestinationKind::Opsgenie { .. } => {
                    rb.header(reqwest::header::AUTHORIZATION, format!("GenieKey {key}"))
                }
                DestinationKind::Webhook { .. } => {
                    let sig = super::webhook::signature(
                        key.as_bytes(),
                        body.as_deref().unwrap_or_default(),
                        self.clock.now(),
                    );
                    rb.header(super::webhook::DELIVERY_HEADER, delivery.to_string())
                        .header(super::webhook::SIGNATURE_HEADER, sig)
                }
                _ => rb,
            },
            Credential::Basic { user, password } => rb.basic_auth(user, Some(password)),
            Credential::Bearer(token) => rb.bearer_auth(token),
            Credential::None => rb,
        };
        if let Some(b) = body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let started = std::time::Instant::now();
        let answer = rb.send().await;
        self.metrics
            .duration
            .with_label_values(&[&self.cfg.name])
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry::retry_after(v, self.clock.now()));
                let text = resp.text().await.unwrap_or_default();
                Answer {
                    status: Some(status),
                    retry_after,
                    json: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                    detail: crate::net::redact_text(&super::truncate(text.trim(), 300)),
                    reason: FailureReason::HttpStatus,
                }
            }
            // The cause, not only "error sending request": the chain down
            // to "invalid peer certificate: UnknownIssuer", "Connection
            // refused", "dns error", with the URL's secrets masked.
            Err(e) => Answer {
                status: None,
                retry_after: None,
                json: serde_json::Value::Null,
                reason: FailureReason::of(&e),
                detail: format!(
                    "{} {}: {}",
                    method.as_str(),
                    self.display(&url),
                    crate::net::chain(&e.without_url())
                ),
            },
        }
    }

    /// A URL of this destination as logs may show it.
    fn display(&self, url: &str) -> String {
        match self.cfg.kind {
            DestinationKind::Slack => crate::net::redact::redact_url_path(url),
            _ => crate::net::redact_url(url),
        }
    }

    /// ServiceNow: the ticket's `sys_id` (stored, else looked up by
    /// `correlation_id`, else created: a create whose answer was lost is
    /// found by the lookup of the retry, never made twice), then the
    /// update for the event. The first call that fails is the answer.
    async fn servicenow(&self, row: &OutboxRow) -> Result<Answer, StoreError> {
        use super::servicenow as sn;
        let inc = &row.message.incident;
        let kind = row.message.kind;
        let DestinationKind::ServiceNow {
            assignment_group, ..
        } = &self.cfg.kind
        else {
            return Ok(Answer::refused("not a ServiceNow destination"));
        };
        let ticket = self
            .ticket(
                row,
                || sn::lookup(inc),
                sn::sys_id,
                || sn::create(inc, assignment_group.as_deref()),
                sn::sys_id,
                "the create answered without a sys_id",
            )
            .await?;
        let sys_id = match ticket {
            Ticket::Known(s) => s,
            Ticket::Done(answer) => return Ok(answer),
        };
        let note = work_note(inc, kind);
        Ok(self
            .call(&sn::update(inc, &sys_id, kind, &note), row.id)
            .await)
    }

    /// Jira: the issue key (stored, else searched by label, else created:
    /// a create whose answer was lost is found by the search of the
    /// retry), then the transition the event calls for (looked up on the
    /// issue, picked by the status category it leads to; none available,
    /// e.g. already done: nothing to move) and a comment. The transition
    /// goes first, so a retry after a failed comment finds it done and does
    /// not move the issue twice.
    async fn jira(&self, row: &OutboxRow) -> Result<Answer, StoreError> {
        use super::jira;
        let inc = &row.message.incident;
        let kind = row.message.kind;
        let DestinationKind::Jira {
            target,
            resolve_transition,
            ..
        } = &self.cfg.kind
        else {
            return Ok(Answer::refused("not a Jira destination"));
        };
        let ticket = self
            .ticket(
                row,
                || jira::search(inc),
                jira::found_key,
                || jira::create(inc, target),
                jira::created_key,
                "the create answered without an issue key",
            )
            .await?;
        let key = match ticket {
            Ticket::Known(k) => k,
            Ticket::Done(answer) => return Ok(answer),
        };
        if let Some(category) = jira::category_for(kind) {
            let available = self.call(&jira::transitions(&key), row.id).await;
            if !available.ok() {
                return Ok(available);
            }
            let preferred = (kind == EventKind::Resolved)
                .then_some(resolve_transition.as_deref())
                .flatten();
            if let Some(id) = jira::pick_transition(&available.json, category, preferred) {
                let moved = self.call(&jira::transition(&key, &id), row.id).await;
                if !moved.ok() {
                    return Ok(moved);
                }
            }
        }
        Ok(self
            .call(&jira::comment(&key, &work_note(inc, kind)), row.id)
            .await)
    }

    /// The id of the ticket of `row`'s incident at this destination: the
    /// stored one, else the one `lookup` finds (a create whose answer was
    /// lost), else the one `create` makes; a found or made id is stored.
    /// `Done` when the delivery ends here: a call failed (its answer is the
    /// delivery's), or the event was `opened` and the create was all of it.
    async fn ticket(
        &self,
        row: &OutboxRow,
        lookup: impl FnOnce() -> Request,
        found: fn(&serde_json::Value) -> Option<String>,
        create: impl FnOnce() -> Request,
        created: fn(&serde_json::Value) -> Option<String>,
        no_id: &str,
    ) -> Result<Ticket, StoreError> {
        let inc = row.message.incident.id;
        if let Some(id) = self.store.outbound_ref(&self.cfg.name, inc).await? {
            return Ok(Ticket::Known(id));
        }
        let looked = self.call(&lookup(), row.id).await;
        if !looked.ok() {
            return Ok(Ticket::Done(looked));
        }
        if let Some(id) = found(&looked.json) {
            self.store
                .set_outbound_ref(&self.cfg.name, inc, &id)
                .await?;
            return Ok(Ticket::Known(id));
        }
        let made = self.call(&create(), row.id).await;
        if !made.ok() {
            return Ok(Ticket::Done(made));
        }
        let Some(id) = created(&made.json) else {
            return Ok(Ticket::Done(Answer::refused(no_id)));
        };
        self.store
            .set_outbound_ref(&self.cfg.name, inc, &id)
            .await?;
        if row.message.kind == EventKind::Opened {
            return Ok(Ticket::Done(made));
        }
        Ok(Ticket::Known(id))
    }

    async fn deliver(&mut self, row: OutboxRow) -> Result<(), StoreError> {
        let kind = row.message.kind;
        let answer = match (&self.cfg.kind, self.request(&row)) {
            (DestinationKind::ServiceNow { .. }, _) => self.servicenow(&row).await?,
            (DestinationKind::Jira { .. }, _) => self.jira(&row).await?,
            (_, Some(req)) => self.call(&req, row.id).await,
            (_, None) => {
                return self
                    .store
                    .outbox_finish(row.id, self.clock.now(), Delivery::Delivered, None)
                    .await;
            }
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
                let recovered = self.breaker.tripped();
                self.breaker.on_success();
                self.count(kind, "success");
                self.metrics
                    .last_success
                    .with_label_values(&[&self.cfg.name])
                    .set(now.0 as f64 / 1000.0);
                self.store
                    .outbox_finish(row.id, now, Delivery::Delivered, None)
                    .await?;
                if recovered {
                    // The destination is back: what waits on backoffs from
                    // the outage goes now (still paced by the limiter),
                    // not up to `backoff_max` later.
                    let woken = self.store.outbox_wake(&self.cfg.name, now).await?;
                    tracing::info!(destination = %self.cfg.name, backlog = woken, "destination recovered; sending its backlog");
                }
            }
            Outcome::Retry(after) => {
                self.breaker.on_failure(now);
                if let Some(ra) = answer.retry_after {
                    self.pause_until = Some(now.saturating_add(ra));
                }
                self.count(kind, "retry");
                self.count_failure(answer.reason);
                let error = match answer.status {
                    Some(s) => format!("HTTP {s}: {detail}"),
                    None => detail,
                };
                tracing::warn!(destination = %self.cfg.name, message = row.id, incident = row.message.incident.id.0, attempt = row.attempts + 1, retry_in = ?after, reason = answer.reason.as_str(), %error, "outbound delivery failed; will retry");
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
                tracing::warn!(destination = %self.cfg.name, message = row.id, error = %why, "outbound delivery refused; not retried");
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

/// Where an incident's ticket stands before its update (see
/// [`Sender::ticket`]).
enum Ticket {
    Known(String),
    Done(Answer),
}

/// What a destination answered to one call.
struct Answer {
    /// `None`: no answer (connection failed, timed out).
    status: Option<u16>,
    retry_after: Option<Duration>,
    json: serde_json::Value,
    detail: String,
    /// Why it is not a success (meaningful only then).
    reason: FailureReason,
}

impl Answer {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// A refusal decided here (an answer the API should not have given).
    fn refused(why: &str) -> Answer {
        Answer {
            status: Some(422),
            retry_after: None,
            json: serde_json::Value::Null,
            detail: why.to_string(),
            reason: FailureReason::HttpStatus,
        }
    }
}

/// The credential a destination's calls carry, read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    None,
    /// PagerDuty routing key, Opsgenie API key, webhook signing secret.
    Key(String),
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
}

/// The work note a ServiceNow ticket gets for an event.
fn work_note(inc: &crate::domain::Incident, kind: EventKind) -> String {
    let by = |who: Option<&str>| who.map(|w| format!(" by {w}")).unwrap_or_default();
    match kind {
        EventKind::Opened => format!("incidentd opened incident {}", inc.id.0),
        EventKind::PriorityChanged => format!(
            "incidentd: priority now {} (impact {}, urgency {})",
            inc.priority,
            inc.impact.get(),
            inc.urgency.get()
        ),
        EventKind::Acknowledged => {
            format!(
                "incidentd: acknowledged{}",
                by(inc.acknowledged_by.as_deref())
            )
        }
        EventKind::OnHold => format!(
            "incidentd: on hold ({}){}",
            inc.current_hold().map_or("", |h| h.reason.as_str()),
            by(inc.current_hold().and_then(|h| h.by.as_deref()))
        ),
        EventKind::Resumed => "incidentd: taken off hold".to_string(),
        EventKind::Resolved => "incidentd: resolved".to_string(),
        EventKind::Reopened => "incidentd: reopened (the alerts fired again)".to_string(),
    }
}

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
    store: DynStore,
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
