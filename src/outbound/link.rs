//! The HTTP side of one destination, shared by its deliveries and its
//! ticket reads: one call with the destination's authorization, its
//! answer classified, and the ticket identity (ServiceNow `sys_id`, Jira
//! issue key, a Slack app's message) found or made once and remembered in
//! the store.

use super::destination::{Call, Destination};
use super::{Base, EventKind, Method, Request, retry};
use crate::domain::Clock;
use crate::net::FailureReason;
use crate::store::{Outbox, OutboxRow, StoreError};
use crate::telemetry::OutboundMetrics;
use std::sync::Arc;
use std::time::Duration;

pub struct Link {
    /// The destination's configured name.
    pub name: String,
    /// The session token and when to fetch a new one.
    session: tokio::sync::Mutex<Option<(String, crate::domain::Timestamp)>>,
    /// The base URLs requests' paths are relative to.
    bases: Bases,
    client: reqwest::Client,
    dest: Arc<dyn Destination>,
    clock: Arc<dyn Clock>,
    metrics: OutboundMetrics,
    store: Arc<dyn Outbox>,
}

/// The configured base URLs of a destination: every request goes to one
/// of them, by its [`Base`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bases {
    /// `url`, for [`Base::Url`].
    pub url: String,
    /// `api_url`, for [`Base::Api`] (PagerDuty's REST API); none for the
    /// kinds that have one API.
    pub api: Option<String>,
}

/// What a destination answered to one call.
pub struct Answer {
    /// `None`: no answer (connection failed, timed out).
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub json: serde_json::Value,
    pub detail: String,
    /// Why it is not a success (meaningful only then).
    pub reason: FailureReason,
    /// A success whose follow-up failed for good (PagerDuty's REST update
    /// after a delivered event): why, for the incident's timeline. The
    /// delivery stays delivered: what the event carried arrived.
    pub note: Option<String>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// A success decided here: nothing left to do at the destination.
    pub fn done(why: &str) -> Answer {
        Answer {
            status: Some(200),
            retry_after: None,
            json: serde_json::Value::Null,
            detail: why.to_string(),
            reason: FailureReason::HttpStatus,
            note: None,
        }
    }

    /// A refusal decided here (an answer the API should not have given).
    pub fn refused(why: &str) -> Answer {
        Answer {
            status: Some(422),
            retry_after: None,
            json: serde_json::Value::Null,
            detail: why.to_string(),
            reason: FailureReason::HttpStatus,
            note: None,
        }
    }

    /// An answer with `status` and a JSON body, as a unit test needs one.
    #[cfg(test)]
    pub fn with_json(status: u16, json: serde_json::Value) -> Answer {
        Answer {
            status: Some(status),
            retry_after: None,
            detail: json.to_string(),
            json,
            reason: FailureReason::HttpStatus,
            note: None,
        }
    }

    /// This (successful) answer, with a follow-up's failure to record.
    pub fn noting(self, why: String) -> Answer {
        Answer {
            note: Some(why),
            ..self
        }
    }
}

/// Where an incident's ticket stands before its update (see
/// [`Link::ticket`]).
pub enum Ticket {
    Known(String),
    /// Made by this delivery's create for an `opened` event: the create is
    /// the update; its answer ends the delivery unless the destination
    /// has more to do to a new ticket.
    Created(String, Answer),
    /// The delivery ends here, with this answer.
    Done(Answer),
}

/// Reads a ticket id from an answer (a closure: a Slack message is found
/// by the incident's key, which the answer does not repeat).
pub type ReadId = Box<dyn Fn(&serde_json::Value) -> Option<String> + Send + Sync>;

/// How a ticket is found by the incident's key, and read from a create's
/// answer.
pub struct TicketCalls {
    pub lookup: Request,
    pub found: ReadId,
    pub create: Request,
    pub created: ReadId,
    /// The refusal when a create answers without an id.
    pub no_id: &'static str,
}

impl Link {
    pub fn new(
        name: String,
        bases: Bases,
        client: reqwest::Client,
        dest: Arc<dyn Destination>,
        clock: Arc<dyn Clock>,
        metrics: OutboundMetrics,
        store: Arc<dyn Outbox>,
    ) -> Link {
        Link {
            name,
            session: tokio::sync::Mutex::new(None),
            bases,
            client,
            dest,
            clock,
            metrics,
            store,
        }
    }

    pub fn destination(&self) -> &dyn Destination {
        self.dest.as_ref()
    }

    /// The clock's now (cache expiry in destinations).
    pub fn now(&self) -> crate::domain::Timestamp {
        self.clock.now()
    }

    /// The stored id of `row`'s incident's ticket here, if one is known.
    pub async fn stored_ticket(&self, row: &OutboxRow) -> Result<Option<String>, StoreError> {
        self.store
            .outbound_ref(&self.name, row.message.incident.id)
            .await
    }

    /// Store `id` as the ticket of `row`'s incident here, replacing one
    /// that can no longer follow it (a ServiceNow ticket closed there, a
    /// Slack message deleted and posted again).
    pub async fn remember(&self, row: &OutboxRow, id: &str) -> Result<(), StoreError> {
        self.store
            .set_outbound_ref(&self.name, row.message.incident.id, id)
            .await
    }

    /// Count a remediation's `outcome` (`incidentd_remediations_total`).
    pub fn count_remediation(&self, outcome: &str) {
        self.metrics
            .remediations
            .with_label_values(&[&self.name, outcome])
            .inc();
    }

    /// Add `message` to `incident`'s timeline as a remediation's progress.
    pub async fn remediation_note(
        &self,
        incident: crate::domain::IncidentId,
        message: String,
    ) -> Result<(), StoreError> {
        let entry = crate::domain::TimelineEntry {
            at: self.clock.now(),
            kind: crate::domain::TimelineKind::Remediation,
            message,
            actor: None,
        };
        self.store.timeline_note(incident, entry).await
    }

    /// The references at this destination starting with `prefix`.
    pub async fn refs_like(
        &self,
        prefix: &str,
        shards: Option<&[u32]>,
        limit: u32,
    ) -> Result<Vec<(crate::domain::IncidentId, String)>, StoreError> {
        self.store
            .outbound_refs_like(&self.name, prefix, shards, limit)
            .await
    }

    /// The labels of `incident`'s first alert.
    pub async fn first_alert_labels(
        &self,
        incident: crate::domain::IncidentId,
    ) -> Result<Option<crate::domain::LabelSet>, StoreError> {
        self.store.first_alert_labels(incident).await
    }

    /// Store `external` as `incident`'s reference here.
    pub async fn set_ref(
        &self,
        incident: crate::domain::IncidentId,
        external: &str,
    ) -> Result<(), StoreError> {
        self.store
            .set_outbound_ref(&self.name, incident, external)
            .await
    }

    /// One HTTP call (`delivery` names the outbox row for webhooks), to
    /// the configured base its request names, with the session token when
    /// the destination has sessions (fetched first if none is held, or it
    /// is about to expire; forgotten when the call is answered 401, so the
    /// retry fetches a new one).
    pub async fn call(&self, req: &Request, delivery: i64) -> Answer {
        let Some(session) = self.dest.session() else {
            return self.send(req, delivery, None).await;
        };
        // A 401 means the token ended early (revoked, or expired between
        // the check and the tool): it is forgotten, and the call made once
        // more with a new one; a second 401 is the answer.
        let answer = self.with_session(session, req, delivery).await;
        if answer.status != Some(401) {
            return answer;
        }
        self.with_session(session, req, delivery).await
    }

    /// The call with the session token (fetched if need be), forgetting
    /// the token if it is refused.
    async fn with_session(
        &self,
        session: &dyn super::destination::Session,
        req: &Request,
        delivery: i64,
    ) -> Answer {
        let token = match self.session_token(session, delivery).await {
            Ok(t) => t,
            Err(refused) => return refused,
        };
        let answer = self.send(req, delivery, Some(&token)).await;
        if answer.status == Some(401) {
            let mut held = self.session.lock().await;
            if held.as_ref().is_some_and(|(t, _)| *t == token) {
                *held = None;
            }
        }
        answer
    }

    /// The held session token, or a new one; the failing answer when none
    /// could be had.
    async fn session_token(
        &self,
        session: &dyn super::destination::Session,
        delivery: i64,
    ) -> Result<String, Answer> {
        let mut held = self.session.lock().await;
        let now = self.clock.now();
        // A minute's margin: a token must not expire between here and the
        // tool.
        if let Some((token, renew_at)) = held.as_ref()
            && now < *renew_at
        {
            return Ok(token.clone());
        }
        let answer = self.send(&session.request(), delivery, None).await;
        if !answer.ok() {
            return Err(answer);
        }
        let Some((token, lasts)) = session.read(&answer) else {
            // A token endpoint that answers 200 without a token (Zoho's
            // `{"error": "invalid_code"}`) refused the credential.
            return Err(Answer {
                status: Some(401),
                detail: format!("no session token in the answer: {}", answer.detail),
                ..answer
            });
        };
        let margin = std::time::Duration::from_secs(60).min(lasts / 2);
        *held = Some((
            token.clone(),
            now.saturating_add(lasts.saturating_sub(margin)),
        ));
        Ok(token)
    }

    /// The call itself.
    async fn send(&self, req: &Request, delivery: i64, token: Option<&str>) -> Answer {
        let base = match req.base {
            Base::Url => self.bases.url.as_str(),
            Base::Api => match &self.bases.api {
                Some(u) => u.as_str(),
                None => return Answer::refused("no api_url is configured for this destination"),
            },
        };
        let url = format!("{base}{}", req.path);
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let encoded = req.body.as_ref().map(|b| self.dest.encode(req, b));
        let call = Call {
            body: encoded.as_ref().map(|(_, b)| b.as_slice()),
            delivery,
            now: self.clock.now(),
            base: req.base,
            token,
        };
        let mut rb = self
            .client
            .request(method.clone(), &url)
            .header(reqwest::header::ACCEPT, self.dest.accept(&call));
        rb = self.dest.authorize(rb, &call);
        if let Some((content_type, b)) = encoded {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(b);
        }
        let started = std::time::Instant::now();
        let answer = rb.send().await;
        self.metrics
            .duration
            .with_label_values(&[&self.name])
            .observe(started.elapsed().as_secs_f64());
        let answer = match answer {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // `Retry-After`, else on a 429 the end of the rate-limit
                // period (TeamDynamix's `X-RateLimit-Reset`, an HTTP date).
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry::retry_after(v, self.clock.now()))
                };
                let retry_after = header(reqwest::header::RETRY_AFTER.as_str()).or_else(|| {
                    (status == 429)
                        .then(|| header("x-ratelimit-reset"))
                        .flatten()
                });
                let text = resp.text().await.unwrap_or_default();
                Answer {
                    status: Some(status),
                    retry_after,
                    // A body that is not JSON is kept as a string: a
                    // token endpoint answers with the token as plain text.
                    json: serde_json::from_str(&text)
                        .unwrap_or_else(|_| serde_json::Value::String(text.trim().to_string())),
                    detail: crate::net::redact_text(&super::truncate(text.trim(), 300)),
                    reason: FailureReason::HttpStatus,
                    note: None,
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
                    self.dest.display(&url),
                    crate::net::chain(&e.without_url())
                ),
                note: None,
            },
        };
        self.dest.interpret(req, answer)
    }

    /// The id of the ticket of `row`'s incident at this destination: the
    /// stored one, else the one the lookup finds (a create whose answer was
    /// lost), else the one the create makes; a found or made id is stored.
    /// `Done` when the delivery ends here: a call failed (its answer is the
    /// delivery's), or the event was `opened` and the create was all of it.
    pub async fn ticket(
        &self,
        row: &OutboxRow,
        calls: impl FnOnce() -> TicketCalls,
    ) -> Result<Ticket, StoreError> {
        if let Some(id) = self.stored_ticket(row).await? {
            return Ok(Ticket::Known(id));
        }
        let calls = calls();
        let looked = self.call(&calls.lookup, row.id).await;
        if !looked.ok() {
            return Ok(Ticket::Done(looked));
        }
        if let Some(id) = (calls.found)(&looked.json) {
            self.remember(row, &id).await?;
            return Ok(Ticket::Known(id));
        }
        let made = self.call(&calls.create, row.id).await;
        if !made.ok() {
            return Ok(Ticket::Done(made));
        }
        let Some(id) = (calls.created)(&made.json) else {
            return Ok(Ticket::Done(Answer::refused(calls.no_id)));
        };
        self.remember(row, &id).await?;
        if row.message.kind == EventKind::Opened {
            return Ok(Ticket::Created(id, made));
        }
        Ok(Ticket::Known(id))
    }

    /// The delivery of a tool whose change is an update of the ticket and
    /// a note (Freshservice, ServiceDesk Plus, TeamDynamix): the ticket
    /// found or made (a create is all of an opening), then what `change`
    /// says for its id: the update first, since a status set twice is
    /// harmless and a note twice is not, so a retry after a failed note
    /// repeats only the update. The first answer that is not a success
    /// ends it.
    pub async fn update_and_note(
        &self,
        row: &OutboxRow,
        calls: impl FnOnce() -> TicketCalls,
        change: impl FnOnce(&str) -> (Option<Request>, Request),
    ) -> Result<Option<Answer>, StoreError> {
        let id = match self.ticket(row, calls).await? {
            Ticket::Known(id) => id,
            Ticket::Created(_, answer) | Ticket::Done(answer) => return Ok(Some(answer)),
        };
        let (update, note) = change(&id);
        if let Some(req) = update {
            let updated = self.call(&req, row.id).await;
            if !updated.ok() {
                return Ok(Some(updated));
            }
        }
        Ok(Some(self.call(&note, row.id).await))
    }
}
