//! What differs between destinations, behind one trait: the calls one
//! outbox message becomes, how a call is authorized, how a URL may be
//! shown, and, for ticketing tools, how tickets are read back. Each kind
//! implements it in its own file; the sender and the poller know none of
//! them by name.

use super::inbound::InboundUpdate;
use super::link::{Answer, Link};
use super::settings::{DestinationConfig, DestinationKind};
use super::{Base, EventKind, Request};
use crate::domain::{IncidentId, Timestamp};
use crate::store::{BoxFuture, OutboxRow, StoreError};
use reqwest::RequestBuilder;
use std::sync::Arc;

/// One call about to be made, for its authorization.
pub struct Call<'a> {
    pub body: Option<&'a [u8]>,
    /// The outbox row it delivers.
    pub delivery: i64,
    pub now: Timestamp,
    /// Which configured API it goes to.
    pub base: Base,
    /// The session token fetched for it (see [`Destination::session`]).
    pub token: Option<&'a str>,
}

/// A credential the tool hands out for a while (ServiceDesk Plus Cloud's
/// OAuth access token, TeamDynamix's JWT): the call that gets one, and how
/// its answer reads. [`Link`] keeps it until shortly before it expires, or
/// until a call is answered 401.
pub trait Session: Send + Sync {
    /// The call that fetches a token.
    fn request(&self) -> Request;
    /// The token and how long it lasts, from that call's answer (`None`:
    /// the answer holds none; it is a refusal).
    fn read(&self, answer: &Answer) -> Option<(String, std::time::Duration)>;
}

pub trait Destination: Send + Sync + 'static {
    /// The credential its calls carry as HTTP authorization (ServiceNow,
    /// Jira, a Slack app's bot token); none by default: PagerDuty's rides
    /// in the body, a Slack incoming webhook's in the URL.
    fn credential(&self) -> Option<&Credential> {
        None
    }

    /// The `Content-Type` of its JSON bodies (Slack's Web API wants the
    /// charset named).
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    /// A request's body as sent, with its `Content-Type`: JSON by default;
    /// ServiceDesk Plus takes its JSON as the form field `input_data`.
    fn encode(&self, req: &Request, body: &serde_json::Value) -> (&'static str, Vec<u8>) {
        let _ = req;
        (
            self.content_type(),
            serde_json::to_vec(body).unwrap_or_default(),
        )
    }

    /// How a session token is fetched, for tools whose calls carry one.
    fn session(&self) -> Option<&dyn Session> {
        None
    }

    /// What an answer to `req` means, before anyone judges it: an API that
    /// reports failures inside a 200 (Slack's `"ok": false`) turns them
    /// into the failing answer they are here, so that no caller counts
    /// them delivered. As received by default.
    fn interpret(&self, req: &Request, answer: Answer) -> Answer {
        let _ = req;
        answer
    }

    /// Add the authorization (and any signature over the body) to a call:
    /// by default the [`Destination::credential`]'s.
    fn authorize(&self, rb: RequestBuilder, call: &Call<'_>) -> RequestBuilder {
        let _ = call;
        match self.credential() {
            Some(c) => c.apply(rb),
            None => rb,
        }
    }

    /// The media type a call asks for: JSON by default; PagerDuty's REST
    /// API versions itself by this header.
    fn accept(&self, call: &Call<'_>) -> &'static str {
        let _ = call;
        "application/json"
    }

    /// Deliver one outbox message: its calls through `link`, the first
    /// answer that is not a success ending it. `None` when this
    /// destination has nothing to hear of the event (the message is done).
    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>>;

    /// A URL of this destination as logs may show it.
    fn display(&self, url: &str) -> String {
        crate::net::redact_url(url)
    }

    /// How tickets are read back (ServiceNow, Jira); `None` for the
    /// destinations that keep none.
    fn reader(&self) -> Option<&dyn TicketReader> {
        None
    }
}

/// Reading tickets back, for a ticketing tool that cannot send webhooks.
pub trait TicketReader: Send + Sync {
    /// Tickets per query (a query's length is limited).
    fn batch(&self) -> usize {
        super::poll::BATCH
    }
    /// The query for a batch of tickets (incident, ticket id), at `now`.
    fn query(&self, batch: &[(IncidentId, String)], now: Timestamp) -> Request;
    /// What the answer says happened to the batch's tickets.
    fn updates(
        &self,
        batch: &[(IncidentId, String)],
        answer: &serde_json::Value,
    ) -> Vec<InboundUpdate>;
}

/// The delivery of a destination that makes one call per event (the
/// request built purely), or none when it has nothing to hear.
pub(super) async fn one_call(
    link: &Link,
    row: &OutboxRow,
    req: Option<Request>,
) -> Result<Option<Answer>, StoreError> {
    Ok(match req {
        Some(r) => Some(link.call(&r, row.id).await),
        None => None,
    })
}

/// The credential a destination's calls carry, read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    None,
    /// PagerDuty routing key, Opsgenie API key, webhook signing secret.
    Key(String),
    /// PagerDuty with its REST API: the routing key (in each event's body)
    /// and the REST API key (in the REST calls' header).
    KeyAndToken {
        key: String,
        token: String,
    },
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// An OAuth client's secret and refresh token (ServiceDesk Plus Cloud).
    Refresh {
        client_secret: String,
        refresh_token: String,
    },
}

impl Credential {
    /// HTTP Basic or bearer authorization (ServiceNow, Jira).
    pub(super) fn apply(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credential::Basic { user, password } => rb.basic_auth(user, Some(password)),
            Credential::Bearer(token) => rb.bearer_auth(token),
            Credential::Key(_)
            | Credential::KeyAndToken { .. }
            | Credential::Refresh { .. }
            | Credential::None => rb,
        }
    }

    fn key(&self) -> String {
        match self {
            Credential::Key(k) | Credential::KeyAndToken { key: k, .. } => k.clone(),
            _ => String::new(),
        }
    }

    fn token(&self) -> Option<String> {
        match self {
            Credential::KeyAndToken { token, .. } => Some(token.clone()),
            _ => None,
        }
    }
}

/// The destination `cfg` configures, with its credential.
pub fn build(cfg: &DestinationConfig, credential: Credential) -> Arc<dyn Destination> {
    match &cfg.kind {
        DestinationKind::PagerDuty { rest, .. } => Arc::new(super::pagerduty::PagerDuty::new(
            credential.key(),
            rest.as_ref()
                .zip(credential.token())
                .map(|(rest, token)| super::pagerduty::Rest {
                    token,
                    from: rest.from.clone(),
                    priority_names: rest.priority_names.clone(),
                    retry_unauthorized: cfg.retry_unauthorized,
                }),
        )),
        DestinationKind::Opsgenie { responders, .. } => Arc::new(super::opsgenie::Opsgenie {
            api_key: credential.key(),
            responders: responders.clone(),
        }),
        DestinationKind::Slack { app: None } => Arc::new(super::slack::Slack {
            incident_url: cfg.incident_url.clone(),
        }),
        DestinationKind::Slack { app: Some(app) } => Arc::new(super::slack::SlackApp {
            channel: app.channel.clone(),
            incident_url: cfg.incident_url.clone(),
            credential,
        }),
        DestinationKind::Webhook { .. } => Arc::new(super::webhook::Webhook {
            secret: credential.key(),
        }),
        DestinationKind::ServiceNow { fields, .. } => Arc::new(super::servicenow::ServiceNow::new(
            fields.clone(),
            credential,
            cfg.incident_url.clone(),
        )),
        DestinationKind::Jira {
            target,
            resolve_transition,
            resolution,
            deployment,
            ..
        } => Arc::new(super::jira::Jira {
            target: target.clone(),
            resolve_transition: resolve_transition.clone(),
            resolution: resolution.clone(),
            deployment: *deployment,
            credential,
            details_url: cfg.incident_url.clone(),
        }),
        DestinationKind::ServiceDeskPlus { auth, fields } => {
            use super::servicedeskplus::{Auth, ServiceDeskPlus};
            let auth = match (auth, credential) {
                (
                    super::settings::SdpAuth::Zoho { client_id, .. },
                    Credential::Refresh {
                        client_secret,
                        refresh_token,
                    },
                ) => Auth::Zoho {
                    client_id: client_id.clone(),
                    client_secret,
                    refresh_token,
                },
                (_, c) => Auth::TechnicianKey(c.key()),
            };
            Arc::new(ServiceDeskPlus {
                fields: fields.as_ref().clone(),
                auth,
                details_url: cfg.incident_url.clone(),
            })
        }
        DestinationKind::StackStorm { remediation, .. } => Arc::new(
            super::stackstorm::StackStorm::new(remediation.as_ref().clone(), credential.key()),
        ),
        DestinationKind::TeamDynamix { beid, fields, .. } => {
            Arc::new(super::teamdynamix::TeamDynamix::new(
                fields.clone(),
                super::teamdynamix::Login {
                    beid: beid.clone(),
                    web_services_key: credential.key(),
                },
                cfg.incident_url.clone(),
            ))
        }
        DestinationKind::Freshservice { fields, .. } => {
            Arc::new(super::freshservice::Freshservice {
                fields: fields.clone(),
                credential,
                details_url: cfg.incident_url.clone(),
            })
        }
    }
}

/// The work note a ticket (ServiceNow work note, Jira comment) gets for an
/// event.
pub(super) fn work_note(inc: &crate::domain::Incident, kind: EventKind) -> String {
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
