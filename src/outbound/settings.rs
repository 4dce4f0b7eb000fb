//! A destination's settings, typed: they live with the sender that uses
//! them (configuration validates the file and builds them).

use super::retry::Backoff;
use crate::domain::outbox::Route;
use crate::net::settings::{ClientNet, Secret, ServiceNowAuth};
use std::time::Duration;

/// The API a destination speaks, with its credential.
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationKind {
    PagerDuty {
        routing_key: Secret,
        /// The REST API, when a key is configured: priority and urgency
        /// follow incidentd's.
        rest: Option<PagerDutyRest>,
    },
    Opsgenie {
        api_key: Secret,
        responders: Vec<super::opsgenie::Responder>,
    },
    /// An incoming webhook (`app` unset: the URL is the credential), or a
    /// Slack app posting with its bot token.
    Slack {
        app: Option<SlackApp>,
    },
    Webhook {
        secret: Secret,
    },
    ServiceNow {
        auth: ServiceNowAuth,
        /// What the ticket's fields are filled with.
        fields: super::servicenow::Fields,
    },
    Jira {
        auth: ServiceNowAuth,
        target: super::jira::Target,
        resolve_transition: Option<String>,
        resolution: String,
        deployment: super::jira::Deployment,
    },
    /// ManageEngine ServiceDesk Plus: a technician key (on-premises) or
    /// Zoho OAuth (Cloud), and the request's fields.
    ServiceDeskPlus {
        auth: SdpAuth,
        /// Boxed: the largest settings by far, read once at start.
        fields: Box<super::servicedeskplus::Fields>,
    },
    /// TeamDynamix: the admin login (BEID and web services key) and the
    /// ticket's fields.
    TeamDynamix {
        beid: String,
        web_services_key: Secret,
        fields: super::teamdynamix::Fields,
    },
    /// StackStorm: the API key and the remediation it runs.
    StackStorm {
        api_key: Secret,
        remediation: Box<super::stackstorm::Remediation>,
    },
    /// Freshservice: the API key (Basic auth) and the ticket's fields.
    Freshservice {
        api_key: Secret,
        fields: super::freshservice::Fields,
    },
}

/// How a ServiceDesk Plus destination authenticates.
#[derive(Debug, Clone, PartialEq)]
pub enum SdpAuth {
    /// On-premises: a technician's API key.
    TechnicianKey(Secret),
    /// Cloud: a Zoho self client and its refresh token, renewed at
    /// `accounts_url` (the account's data centre: `.com`, `.eu`, `.in`, …).
    Zoho {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        accounts_url: String,
    },
}

/// PagerDuty's REST API (`api_token`): what sets an incident's priority
/// and urgency, which the Events API cannot change once it is open.
#[derive(Debug, Clone, PartialEq)]
pub struct PagerDutyRest {
    /// A REST API key with write access (a user token, or a general
    /// access key).
    pub api_token: Secret,
    /// Base URL, `https://api.pagerduty.com` by default (the EU service
    /// region has its own).
    pub api_url: String,
    /// The email of the PagerDuty user the updates are made as (the
    /// `From` header, required with an account-level key).
    pub from: String,
    /// The PagerDuty priority name of P1..P5 (default the same names, the
    /// account's default scheme; accounts may rename them).
    pub priority_names: [String; 5],
}

impl DestinationKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DestinationKind::PagerDuty { .. } => "pagerduty",
            DestinationKind::Opsgenie { .. } => "opsgenie",
            DestinationKind::Slack { .. } => "slack",
            DestinationKind::Webhook { .. } => "webhook",
            DestinationKind::ServiceNow { .. } => "servicenow",
            DestinationKind::Jira { .. } => "jira",
            DestinationKind::Freshservice { .. } => "freshservice",
            DestinationKind::ServiceDeskPlus { .. } => "servicedeskplus",
            DestinationKind::TeamDynamix { .. } => "teamdynamix",
            DestinationKind::StackStorm { .. } => "stackstorm",
        }
    }
}

/// A Slack app's side of a `slack` destination: the bot token its Web API
/// calls carry and the channel (its ID: `chat.update` takes no name) the
/// incidents' messages go to.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackApp {
    pub bot_token: Secret,
    pub channel: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DestinationConfig {
    pub name: String,
    pub kind: DestinationKind,
    /// Base URL (PagerDuty, Opsgenie, the Slack Web API) or the endpoint
    /// itself (a Slack incoming webhook, webhook); requests never go
    /// anywhere else.
    pub url: String,
    pub incident_url: Option<String>,
    pub routes: Vec<Route>,
    /// How long a new incident waits before this destination hears of it.
    pub settle: crate::domain::outbox::Settle,
    /// Requests per second, and how many may go at once after a quiet time.
    pub rate_limit: f64,
    pub burst: u32,
    pub timeout: Duration,
    pub backoff: Backoff,
    pub breaker_failures: u32,
    pub breaker_cool_down: Duration,
    /// Token of the ticketing tool's webhooks back to incidentd.
    pub inbound_token: Option<Secret>,
    /// Jira: the secret its webhooks sign their bodies with.
    pub inbound_secret: Option<Secret>,
    /// How often tickets are read back (ServiceNow, Jira); `None`: never.
    pub poll_interval: Option<Duration>,
    /// 401/407 retried (the backlog waits for a fixed credential) rather
    /// than refused.
    pub retry_unauthorized: bool,
    /// TLS trust, client certificate and proxy.
    pub net: ClientNet,
}

impl DestinationConfig {
    /// The URL as logs and `check` may show it: without userinfo
    /// passwords, secret query values, or a Slack hook's path (the Web
    /// API's path is no secret: the bot token rides in a header).
    pub fn display_url(&self) -> String {
        match self.kind {
            DestinationKind::Slack { app: None } => crate::net::redact::redact_url_path(&self.url),
            _ => crate::net::redact_url(&self.url),
        }
    }

    /// The second API's base URL (PagerDuty's REST API, when configured).
    pub fn api_url(&self) -> Option<&str> {
        match &self.kind {
            DestinationKind::PagerDuty {
                rest: Some(rest), ..
            } => Some(&rest.api_url),
            DestinationKind::ServiceDeskPlus {
                auth: SdpAuth::Zoho { accounts_url, .. },
                ..
            } => Some(accounts_url),
            _ => None,
        }
    }

    /// Whether requests carry a credential (a header, a key in the body,
    /// or the URL itself), so that plain `http://` would expose it.
    pub fn sends_credential(&self) -> bool {
        !matches!(self.kind, DestinationKind::Webhook { .. })
    }
}
