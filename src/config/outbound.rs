//! `[[outbound.destinations]]`: where incidents are pushed, each with its
//! routes, credentials, rate limit and retry settings.

use super::net::{ClientNet, ProxyConfig, RawProxyFields};
use super::{FieldError, Secret, duration};
use crate::domain::Priority;
use crate::domain::outbox::EventKind;
use crate::domain::outbox::{Route, Settle};
use crate::outbound::retry::Backoff;
pub use crate::outbound::settings::{DestinationConfig, DestinationKind, SdpAuth};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutbound {
    /// How long delivered (or given-up) outbox messages are kept.
    pub retention: Option<String>,
    /// The proxy of every destination (each may override it): "none"
    /// (the default), "env", or a proxy URL.
    pub proxy: Option<String>,
    pub proxy_user: Option<String>,
    pub proxy_password: Option<String>,
    pub proxy_password_file: Option<PathBuf>,
    pub no_proxy: Option<String>,
    /// How long a new incident waits before destinations hear of it
    /// (default 30s; "0s": at once), and per priority (`P1 = "0s"`).
    pub settle: Option<String>,
    pub settle_by_priority: BTreeMap<String, String>,
    pub destinations: Vec<RawDestination>,
}

impl RawOutbound {
    pub fn proxy_fields(&self) -> RawProxyFields<'_> {
        RawProxyFields {
            proxy: self.proxy.as_deref(),
            proxy_user: self.proxy_user.as_deref(),
            proxy_password: self.proxy_password.as_deref(),
            proxy_password_file: self.proxy_password_file.as_ref(),
            no_proxy: self.no_proxy.as_deref(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawDestination {
    pub name: Option<String>,
    pub kind: Option<String>,
    /// This destination's own settle delay (else `[outbound]`'s).
    pub settle: Option<String>,
    pub settle_by_priority: BTreeMap<String, String>,
    pub url: Option<String>,
    pub routing_key: Option<String>,
    pub routing_key_file: Option<PathBuf>,
    /// PagerDuty: a REST API key (`api_token(_file)`) makes the priority
    /// and urgency of its incidents follow incidentd's; `api_url` is that
    /// API's base, `from` the email of the user the updates are made as,
    /// `priority_names` the account's names for P1..P5.
    pub api_token: Option<String>,
    pub api_token_file: Option<PathBuf>,
    pub api_url: Option<String>,
    pub from: Option<String>,
    pub priority_names: BTreeMap<String, String>,
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// ServiceNow: basic auth (`user` + `password(_file)`) or a bearer
    /// `token(_file)`.
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// ServiceNow: the `assignment_group` of created tickets (else the
    /// incident's own assignment group).
    pub assignment_group: Option<String>,
    /// ServiceNow: the `close_code` of resolved tickets, one of the
    /// instance's resolution codes (default "Solution provided").
    pub close_code: Option<String>,
    /// ServiceNow: templates of the ticket's fields (`{title}`,
    /// `{service}`, …): `caller` (caller_id; default the basic-auth user),
    /// `category`, `subcategory`, `business_service` (default
    /// `{service}`), `cmdb_ci` (default `{root_ci}`), `short_description`,
    /// `description`, and any other field in `fields`.
    pub caller: Option<String>,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub business_service: Option<String>,
    pub cmdb_ci: Option<String>,
    pub short_description: Option<String>,
    pub description: Option<String>,
    pub fields: Option<std::collections::BTreeMap<String, String>>,
    /// Jira SM: create customer requests in this service desk and
    /// request type, or plain issues in `project` of `issue_type`.
    pub service_desk_id: Option<String>,
    pub request_type_id: Option<String>,
    pub project: Option<String>,
    pub issue_type: Option<String>,
    /// Freshservice: who tickets are raised for (`requester_email`, or an
    /// existing requester's `requester_id`), and the ids of the agent
    /// group, department, source and workspace they go to.
    pub requester_email: Option<String>,
    pub requester_id: Option<i64>,
    pub group_id: Option<i64>,
    pub department_id: Option<i64>,
    pub source: Option<i64>,
    pub workspace_id: Option<i64>,
    /// ServiceDesk Plus: on-premises, a technician's key
    /// (`technician_key(_file)`); Cloud, a Zoho self client (`client_id`,
    /// `client_secret(_file)`, `refresh_token(_file)`, `accounts_url`).
    pub technician_key: Option<String>,
    pub technician_key_file: Option<PathBuf>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub refresh_token: Option<String>,
    pub refresh_token_file: Option<PathBuf>,
    pub accounts_url: Option<String>,
    /// ServiceDesk Plus: the request's requester (name or email), request
    /// type, mode, the names of incidentd's impact and urgency levels
    /// (`high`, `medium`, `low`), and the status a resolution sets.
    pub requester: Option<String>,
    pub request_type: Option<String>,
    pub mode: Option<String>,
    pub impact_names: BTreeMap<String, String>,
    pub urgency_names: BTreeMap<String, String>,
    pub resolve_status: Option<String>,
    /// TeamDynamix: the admin login (`beid`, `web_services_key(_file)`),
    /// the ticketing application, ticket type (by name), account
    /// (department) and responsible group ids, and the requestor's UID
    /// (or `requester_email`).
    pub beid: Option<String>,
    pub web_services_key: Option<String>,
    pub web_services_key_file: Option<PathBuf>,
    pub app_id: Option<u32>,
    pub ticket_type: Option<String>,
    pub account_id: Option<i64>,
    pub requestor_uid: Option<String>,
    pub responsible_group_id: Option<i64>,
    /// StackStorm: the action (`pack.action`) a remediation runs, its
    /// parameters (templates), and its guardrails.
    pub action: Option<String>,
    pub parameters: Option<BTreeMap<String, String>>,
    pub dry_run: Option<bool>,
    pub cool_down: Option<String>,
    pub max_executions_per_hour: Option<u32>,
    pub execution_timeout: Option<String>,
    pub follow_interval: Option<String>,
    /// StackStorm: `acknowledge` or `resolve` the incident when its
    /// remediation succeeds.
    pub resolve_on_success: Option<String>,
    /// Opsgenie: who alerts are for (`team:…`, `user:…`, `escalation:…`,
    /// `schedule:…`); with a global API key, alerts without responders are
    /// unassigned.
    #[serde(default)]
    pub responders: Vec<String>,
    /// Jira: the transition to prefer when several lead to done.
    pub resolve_transition: Option<String>,
    /// Jira: the resolution a resolving transition sets when its screen
    /// asks for one (default "Done"; the first allowed value if this one
    /// is not allowed there).
    pub resolution: Option<String>,
    /// Jira: `cloud` or `data_center` (their search APIs differ); by
    /// default cloud for `*.atlassian.net`, else data center.
    pub deployment: Option<String>,
    /// ServiceNow, Jira: the bearer token their webhooks must send to
    /// `POST /api/v1/webhooks/{name}` (two-way sync); without it that
    /// endpoint is off for this destination.
    pub inbound_token: Option<String>,
    pub inbound_token_file: Option<PathBuf>,
    /// Jira: the secret of a Jira Cloud admin webhook, which signs each
    /// body (`X-Hub-Signature: sha256=…`) instead of sending a token.
    pub inbound_secret: Option<String>,
    pub inbound_secret_file: Option<PathBuf>,
    /// ServiceNow, Jira: read the tickets of active incidents back this
    /// often (for tools that cannot send webhooks); `0` = off.
    pub poll_interval: Option<String>,
    /// Slack: a link to the incident (`{id}` is replaced), e.g. a UI.
    pub incident_url: Option<String>,
    /// Slack app mode: the app's bot token (`xoxb-…`) and the ID of the
    /// channel it posts to; without them, `url` is an incoming webhook.
    pub bot_token: Option<String>,
    pub bot_token_file: Option<PathBuf>,
    pub channel: Option<String>,
    pub rate_limit: Option<f64>,
    pub burst: Option<u32>,
    pub timeout: Option<String>,
    pub backoff_base: Option<String>,
    pub backoff_max: Option<String>,
    pub breaker_failures: Option<u32>,
    pub breaker_cool_down: Option<String>,
    /// Retry 401/407 (a refused credential) instead of giving the message up.
    pub retry_unauthorized: bool,
    /// Only incidents a rule's `notify` names this destination for (no
    /// route of its own).
    pub rules_only: bool,
    /// TLS: CAs trusted besides the system store (or instead of it, with
    /// `system_roots = false`), and a client certificate for mutual TLS.
    pub ca_file: Option<PathBuf>,
    pub system_roots: Option<bool>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Overrides `[outbound] proxy` for this destination.
    pub proxy: Option<String>,
    pub proxy_user: Option<String>,
    pub proxy_password: Option<String>,
    pub proxy_password_file: Option<PathBuf>,
    pub no_proxy: Option<String>,
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoute {
    pub services: Vec<String>,
    pub max_priority: Option<String>,
    pub events: Vec<String>,
}

/// A field template at `key`, its error reported.
fn template(
    errs: &mut Vec<FieldError>,
    at: &str,
    key: &str,
    v: &str,
) -> Option<crate::outbound::template::Template> {
    match crate::outbound::template::Template::parse(v) {
        Ok(t) => Some(t),
        Err(m) => {
            push(errs, at, key, m);
            None
        }
    }
}

/// Whether `name` can be a ticket field's API name (a-z, 0-9, '_').
fn field_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A Freshservice destination's ticket fields: a requester (exactly one
/// of `requester_email`, `requester_id`), the ids, `category` and
/// `subcategory` templates, and `fields` as custom fields.
fn freshservice_fields(
    errs: &mut Vec<FieldError>,
    at: &str,
    d: &RawDestination,
) -> Option<crate::outbound::freshservice::Fields> {
    use crate::outbound::freshservice::{Fields, Requester};
    let requester = match (&d.requester_email, d.requester_id) {
        (Some(e), None) if e.contains('@') && !e.trim().is_empty() => {
            Some(Requester::Email(e.trim().to_string()))
        }
        (Some(e), None) => {
            push(
                errs,
                at,
                "requester_email",
                format!("{e:?}: an email address"),
            );
            None
        }
        (None, Some(id)) if id > 0 => Some(Requester::Id(id)),
        _ => {
            push(
                errs,
                at,
                "requester_email",
                "set one of requester_email or requester_id: Freshservice tickets need a requester"
                    .into(),
            );
            None
        }
    };
    for (key, v) in [
        ("requester_id", d.requester_id),
        ("group_id", d.group_id),
        ("department_id", d.department_id),
        ("source", d.source),
        ("workspace_id", d.workspace_id),
    ] {
        if v.is_some_and(|v| v <= 0) {
            push(errs, at, key, "an id is a positive number".into());
        }
    }
    let category = d
        .category
        .as_deref()
        .and_then(|v| template(errs, at, "category", v));
    let sub_category = d
        .subcategory
        .as_deref()
        .and_then(|v| template(errs, at, "subcategory", v));
    let mut custom = Vec::new();
    for (name, v) in d.fields.iter().flatten() {
        let key = format!("fields.{name}");
        if !field_name_ok(name) {
            push(
                errs,
                at,
                &key,
                "a custom field's API name is a-z, 0-9 and '_'".into(),
            );
        } else if let Some(t) = template(errs, at, &key, v) {
            custom.push((name.clone(), t));
        }
    }
    Some(Fields {
        requester: requester?,
        group_id: d.group_id,
        department_id: d.department_id,
        source: d.source,
        workspace_id: d.workspace_id,
        category,
        sub_category,
        custom,
    })
}

/// A ServiceDesk Plus destination's authentication: a technician key, or
/// a Zoho self client with its refresh token (not both).
fn sdp_auth(errs: &mut Vec<FieldError>, at: &str, d: &RawDestination) -> Option<SdpAuth> {
    let key = secret(&d.technician_key, &d.technician_key_file);
    let client_secret = secret(&d.client_secret, &d.client_secret_file);
    let refresh = secret(&d.refresh_token, &d.refresh_token_file);
    let oauth =
        d.client_id.is_some() || !matches!(client_secret, Ok(None)) || !matches!(refresh, Ok(None));
    match key {
        Err(m) => {
            push(errs, at, "technician_key", m);
            None
        }
        Ok(Some(_)) if oauth => {
            push(
                errs,
                at,
                "technician_key",
                "set technician_key (on-premises) or client_id, client_secret and refresh_token (Cloud), not both".into(),
            );
            None
        }
        Ok(Some(k)) => Some(SdpAuth::TechnicianKey(k)),
        Ok(None) if !oauth => {
            push(
                errs,
                at,
                "technician_key",
                "required (or technician_key_file) on-premises; on Cloud set client_id, client_secret and refresh_token".into(),
            );
            None
        }
        Ok(None) => {
            let client_id = d.client_id.clone().filter(|c| !c.trim().is_empty());
            if client_id.is_none() {
                push(errs, at, "client_id", "required with Zoho OAuth".into());
            }
            let client_secret = required(errs, at, "client_secret", client_secret);
            let refresh_token = required(errs, at, "refresh_token", refresh);
            let accounts_url = http_url(
                errs,
                at,
                "accounts_url",
                d.accounts_url
                    .as_deref()
                    .unwrap_or("https://accounts.zoho.com"),
            );
            Some(SdpAuth::Zoho {
                client_id: client_id?,
                client_secret: client_secret?,
                refresh_token: refresh_token?,
                accounts_url,
            })
        }
    }
}

/// A ServiceDesk Plus destination's request fields over the defaults.
fn sdp_fields(
    errs: &mut Vec<FieldError>,
    at: &str,
    d: &RawDestination,
) -> crate::outbound::servicedeskplus::Fields {
    let mut f = crate::outbound::servicedeskplus::Fields::defaults();
    let text = |errs: &mut Vec<FieldError>, key: &str, v: &Option<String>| match v {
        Some(s) if s.trim().is_empty() || s.chars().any(char::is_control) => {
            push(errs, at, key, "a name: not empty, one line".into());
            None
        }
        other => other.clone(),
    };
    f.requester = text(errs, "requester", &d.requester);
    if d.request_type.is_some() {
        f.request_type = text(errs, "request_type", &d.request_type);
    }
    f.mode = text(errs, "mode", &d.mode);
    if let Some(s) = text(errs, "resolve_status", &d.resolve_status) {
        f.resolve_status = s;
    }
    f.group = d
        .assignment_group
        .as_deref()
        .and_then(|v| template(errs, at, "assignment_group", v));
    f.category = d
        .category
        .as_deref()
        .and_then(|v| template(errs, at, "category", v));
    f.subcategory = d
        .subcategory
        .as_deref()
        .and_then(|v| template(errs, at, "subcategory", v));
    for (p, name) in &d.priority_names {
        match Priority::parse(p) {
            Some(prio) => f.priorities[usize::from(prio.get() - 1)] = name.clone(),
            None => push(
                errs,
                at,
                &format!("priority_names.{p}"),
                format!("{p:?}: one of P1..P5"),
            ),
        }
    }
    for (key, map, names) in [
        ("impact_names", &d.impact_names, &mut f.impacts),
        ("urgency_names", &d.urgency_names, &mut f.urgencies),
    ] {
        for (level, name) in map {
            match ["high", "medium", "low"].iter().position(|l| l == level) {
                Some(i) => names[i] = name.clone(),
                None => push(
                    errs,
                    at,
                    &format!("{key}.{level}"),
                    format!("{level:?}: one of high, medium, low"),
                ),
            }
        }
    }
    for (name, v) in d.fields.iter().flatten() {
        let key = format!("fields.{name}");
        if !(field_name_ok(name) && name.starts_with("udf_")) {
            push(
                errs,
                at,
                &key,
                "a user-defined field's API name (udf_sline_1, …)".into(),
            );
        } else if let Some(t) = template(errs, at, &key, v) {
            f.udf.push((name.clone(), t));
        }
    }
    f
}

/// A TeamDynamix destination's login secret and ticket fields, every
/// missing one reported.
fn teamdynamix(
    errs: &mut Vec<FieldError>,
    at: &str,
    d: &RawDestination,
) -> Option<DestinationKind> {
    use crate::outbound::teamdynamix::{Fields, Requestor};
    let key = required(
        errs,
        at,
        "web_services_key",
        secret(&d.web_services_key, &d.web_services_key_file),
    );
    let beid = d.beid.clone().filter(|b| !b.trim().is_empty());
    if beid.is_none() {
        push(
            errs,
            at,
            "beid",
            "required: the organization's BEID (TDAdmin → Organization details)".into(),
        );
    }
    let app_id = d.app_id.filter(|a| *a > 0);
    if app_id.is_none() {
        push(
            errs,
            at,
            "app_id",
            "required: the ticketing application's id".into(),
        );
    }
    let account_id = d.account_id.filter(|a| *a > 0);
    if account_id.is_none() {
        push(
            errs,
            at,
            "account_id",
            "required: the account (department) tickets belong to".into(),
        );
    }
    let requestor = match (&d.requestor_uid, &d.requester_email) {
        (Some(u), None) if !u.trim().is_empty() => Some(Requestor::Uid(u.trim().to_string())),
        (None, Some(e)) if e.contains('@') => Some(Requestor::Email(e.trim().to_string())),
        _ => {
            push(
                errs,
                at,
                "requestor_uid",
                "set one of requestor_uid (a person's UID) or requester_email".into(),
            );
            None
        }
    };
    if d.responsible_group_id.is_some_and(|g| g <= 0) {
        push(
            errs,
            at,
            "responsible_group_id",
            "an id is a positive number".into(),
        );
    }
    let mut priorities = ["Emergency", "High", "Medium", "Low", "Low"].map(String::from);
    for (p, name) in &d.priority_names {
        match Priority::parse(p) {
            Some(prio) => priorities[usize::from(prio.get() - 1)] = name.clone(),
            None => push(
                errs,
                at,
                &format!("priority_names.{p}"),
                format!("{p:?}: one of P1..P5"),
            ),
        }
    }
    Some(DestinationKind::TeamDynamix {
        beid: beid?,
        web_services_key: key?,
        fields: Fields {
            app_id: app_id?,
            ticket_type: d.ticket_type.clone().unwrap_or_else(|| "Incident".into()),
            account_id: account_id?,
            requestor: requestor?,
            responsible_group_id: d.responsible_group_id,
            priorities,
        },
    })
}

/// A StackStorm destination's remediation, every error reported.
fn stackstorm(errs: &mut Vec<FieldError>, at: &str, d: &RawDestination) -> Option<DestinationKind> {
    use crate::outbound::stackstorm::{OnSuccess, Remediation};
    let api_key = required(errs, at, "api_key", secret(&d.api_key, &d.api_key_file));
    let action = match d.action.as_deref().map(str::trim) {
        Some(a)
            if a.split_once('.').is_some_and(|(pack, name)| {
                let ok = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                };
                ok(pack) && ok(name)
            }) =>
        {
            Some(a.to_string())
        }
        Some(a) => {
            push(
                errs,
                at,
                "action",
                format!("{a:?}: an action reference, pack.action"),
            );
            None
        }
        None => {
            push(
                errs,
                at,
                "action",
                "required: the action to run (pack.action)".into(),
            );
            None
        }
    };
    let mut parameters = Vec::new();
    for (name, v) in d.parameters.iter().flatten() {
        let key = format!("parameters.{name}");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            push(
                errs,
                at,
                &key,
                "a parameter name is letters, digits and '_'".into(),
            );
        } else {
            match crate::outbound::template::Template::parse_with_labels(v) {
                Ok(t) => parameters.push((name.clone(), t)),
                Err(m) => push(errs, at, &key, m),
            }
        }
    }
    let cool_down = duration(
        errs,
        &format!("{at}.cool_down"),
        &d.cool_down,
        Duration::from_secs(900),
    );
    let execution_timeout = duration(
        errs,
        &format!("{at}.execution_timeout"),
        &d.execution_timeout,
        Duration::from_secs(600),
    );
    if execution_timeout < Duration::from_secs(1) {
        push(errs, at, "execution_timeout", "must be at least 1s".into());
    }
    let follow_every = duration(
        errs,
        &format!("{at}.follow_interval"),
        &d.follow_interval,
        Duration::from_secs(5),
    );
    if follow_every < Duration::from_millis(100) {
        push(errs, at, "follow_interval", "must be at least 100ms".into());
    }
    let per_hour = d.max_executions_per_hour.unwrap_or(20);
    if per_hour == 0 {
        push(
            errs,
            at,
            "max_executions_per_hour",
            "must be at least 1 (dry_run = true runs none)".into(),
        );
    }
    let on_success = match d.resolve_on_success.as_deref() {
        None => None,
        Some("resolve") => Some(OnSuccess::Resolve),
        Some("acknowledge") => Some(OnSuccess::Acknowledge),
        Some(o) => {
            push(
                errs,
                at,
                "resolve_on_success",
                format!("{o:?}: acknowledge or resolve"),
            );
            None
        }
    };
    Some(DestinationKind::StackStorm {
        api_key: api_key?,
        remediation: Box::new(Remediation {
            action: action?,
            parameters,
            dry_run: d.dry_run.unwrap_or(false),
            cool_down,
            per_hour,
            execution_timeout,
            follow_every,
            on_success,
        }),
    })
}

/// The ServiceNow ticket fields `d` sets, over the defaults; every
/// template error and misplaced field reported.
fn servicenow_fields(
    errs: &mut Vec<FieldError>,
    at: &str,
    d: &RawDestination,
    auth: Option<&crate::net::settings::ServiceNowAuth>,
) -> crate::outbound::servicenow::Fields {
    use crate::outbound::servicenow::{Fields, RESERVED};
    use crate::outbound::template::Template;
    let user = match auth {
        Some(crate::net::settings::ServiceNowAuth::Basic { user, .. }) => Some(user.as_str()),
        _ => None,
    };
    let mut fields = Fields::defaults(user);
    let parse = |errs: &mut Vec<FieldError>, key: &str, v: &str| match Template::parse(v) {
        Ok(t) => Some(t),
        Err(m) => {
            push(errs, at, key, m);
            None
        }
    };
    if let Some(t) = d
        .short_description
        .as_deref()
        .and_then(|v| parse(errs, "short_description", v))
    {
        fields.short_description = t;
    }
    if let Some(v) = d.description.as_deref() {
        fields.description = parse(errs, "description", v);
    }
    if let Some(c) = &d.close_code {
        fields.close_code = c.clone();
    }
    for (key, field, v) in [
        ("assignment_group", "assignment_group", &d.assignment_group),
        ("caller", "caller_id", &d.caller),
        ("category", "category", &d.category),
        ("subcategory", "subcategory", &d.subcategory),
        ("business_service", "business_service", &d.business_service),
        ("cmdb_ci", "cmdb_ci", &d.cmdb_ci),
    ] {
        if let Some(t) = v.as_deref().and_then(|v| parse(errs, key, v)) {
            fields.put(field, t);
        }
    }
    for (name, v) in d.fields.iter().flatten() {
        let key = format!("fields.{name}");
        if !field_name_ok(name) {
            push(errs, at, &key, "a field name is a-z, 0-9 and '_'".into());
        } else if RESERVED.contains(&name.as_str()) {
            push(
                errs,
                at,
                &key,
                "incidentd sets this field itself (short_description and description have settings of their own)".into(),
            );
        } else if let Some(t) = parse(errs, &key, v) {
            fields.put(name, t);
        }
    }
    fields
}

fn secret(inline: &Option<String>, file: &Option<PathBuf>) -> Result<Option<Secret>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err("set the value or its _file, not both".into()),
        (Some(v), None) => Ok(Some(Secret::Inline(v.clone()))),
        (None, Some(f)) => Ok(Some(Secret::File(f.clone()))),
        (None, None) => Ok(None),
    }
}

fn push(errs: &mut Vec<FieldError>, at: &str, field: &str, message: String) {
    errs.push(FieldError {
        field: format!("{at}.{field}"),
        message,
    });
}

/// A required credential (`field` or `field_file`).
fn required(
    errs: &mut Vec<FieldError>,
    at: &str,
    field: &str,
    v: Result<Option<Secret>, String>,
) -> Option<Secret> {
    match v {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            push(errs, at, field, format!("required (or {field}_file)"));
            None
        }
        Err(m) => {
            push(errs, at, field, m);
            None
        }
    }
}

/// Basic auth (`user` + `password(_file)`: for Jira Cloud the password is
/// an API token) or a bearer `token(_file)`.
fn auth(errs: &mut Vec<FieldError>, at: &str, d: &RawDestination) -> Option<super::ServiceNowAuth> {
    match (
        &d.user,
        secret(&d.password, &d.password_file),
        secret(&d.token, &d.token_file),
    ) {
        (Some(user), Ok(Some(password)), Ok(None)) => Some(super::ServiceNowAuth::Basic {
            user: user.clone(),
            password,
        }),
        (None, Ok(None), Ok(Some(token))) => Some(super::ServiceNowAuth::Bearer(token)),
        _ => {
            push(
                errs,
                at,
                "user",
                "set user with one of password/password_file (basic auth), or one of token/token_file (bearer)"
                    .into(),
            );
            None
        }
    }
}

/// Validate every destination, reporting each error with its path.
/// A new incident waits this long for the rest of its storm by default,
/// as Alertmanager's `group_wait` does.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(30);

/// Longest settle delay accepted: a page held longer is no page.
const MAX_SETTLE: Duration = Duration::from_secs(3600);

/// `[outbound] settle` and `settle_by_priority`: every priority's delay.
pub fn global_settle(errs: &mut Vec<FieldError>, raw: &RawOutbound) -> Settle {
    settle(
        errs,
        "outbound",
        &raw.settle,
        &raw.settle_by_priority,
        Settle::uniform(DEFAULT_SETTLE),
    )
}

/// A settle delay and its per-priority exceptions at `at`, over `base`
/// (the enclosing scope's): the nearer scope wins, a priority's own entry
/// over a plain delay.
fn settle(
    errs: &mut Vec<FieldError>,
    at: &str,
    plain: &Option<String>,
    by_priority: &BTreeMap<String, String>,
    base: Settle,
) -> Settle {
    let check = |errs: &mut Vec<FieldError>, field: String, d: Duration| {
        if d > MAX_SETTLE {
            errs.push(FieldError {
                field,
                message: "at most 1h: an incident announced later than that is announced too late"
                    .into(),
            });
        }
        d
    };
    let mut out = base;
    if plain.is_some() {
        let field = format!("{at}.settle");
        let before = errs.len();
        let d = duration(errs, &field, plain, DEFAULT_SETTLE);
        if errs.len() == before {
            out = Settle::uniform(check(errs, field, d));
        }
    }
    for (p, d) in by_priority {
        let field = format!("{at}.settle_by_priority.{p}");
        let Some(prio) = Priority::parse(p) else {
            errs.push(FieldError {
                field,
                message: format!("{p:?}: one of P1..P5"),
            });
            continue;
        };
        let before = errs.len();
        let d = duration(errs, &field, &Some(d.clone()), Duration::ZERO);
        if errs.len() == before {
            out = out.with(prio, check(errs, field, d));
        }
    }
    out
}

/// The ticketing tools: their tickets are read back, and they send
/// updates back by webhook.
const TICKETING: [&str; 5] = [
    "servicenow",
    "jira",
    "freshservice",
    "servicedeskplus",
    "teamdynamix",
];

/// The ticketing tools that send webhooks back (TeamDynamix has none).
const WEBHOOKS: [&str; 4] = ["servicenow", "jira", "freshservice", "servicedeskplus"];

/// Destinations an incident's announcement is tracked for, one bit each.
pub const MAX_DESTINATIONS: usize = 64;

pub fn destinations(errs: &mut Vec<FieldError>, raw: &RawOutbound) -> Vec<DestinationConfig> {
    let mut out: Vec<DestinationConfig> = Vec::new();
    let outer_proxy = super::net::proxy(errs, "outbound", raw.proxy_fields(), &ProxyConfig::None);
    let outer_settle = global_settle(&mut Vec::new(), raw);
    if raw.destinations.len() > MAX_DESTINATIONS {
        errs.push(FieldError {
            field: "outbound.destinations".into(),
            message: format!(
                "{} destinations: at most {MAX_DESTINATIONS}",
                raw.destinations.len()
            ),
        });
    }
    for (i, d) in raw.destinations.iter().enumerate() {
        let at = format!("outbound.destinations[{i}]");
        let at = at.as_str();
        let before = errs.len();
        let settle = settle(errs, at, &d.settle, &d.settle_by_priority, outer_settle);
        let name = match &d.name {
            Some(n) if crate::domain::check_hold_reason(n).is_ok() => n.clone(),
            Some(n) => {
                push(
                    errs,
                    at,
                    "name",
                    format!("{n:?}: 1-64 characters of a-z, 0-9, '_' and '-'"),
                );
                String::new()
            }
            None => {
                push(errs, at, "name", "required".into());
                String::new()
            }
        };
        if !name.is_empty() && out.iter().any(|o| o.name == name) {
            push(
                errs,
                at,
                "name",
                format!("{name:?} is used by another destination"),
            );
        }
        let kind = match d.kind.as_deref() {
            Some("pagerduty") => {
                let routing_key = required(
                    errs,
                    at,
                    "routing_key",
                    secret(&d.routing_key, &d.routing_key_file),
                );
                let rest = pagerduty_rest(errs, at, d);
                routing_key.map(|routing_key| DestinationKind::PagerDuty { routing_key, rest })
            }
            Some("opsgenie") => required(errs, at, "api_key", secret(&d.api_key, &d.api_key_file))
                .map(|api_key| {
                    let mut responders = Vec::new();
                    for (i, r) in d.responders.iter().enumerate() {
                        match crate::outbound::opsgenie::Responder::parse(r) {
                            Ok(r) => responders.push(r),
                            Err(m) => push(errs, at, &format!("responders[{i}]"), m),
                        }
                    }
                    DestinationKind::Opsgenie {
                        api_key,
                        responders,
                    }
                }),
            Some("slack") => slack(errs, at, d).map(|app| DestinationKind::Slack { app }),
            Some("webhook") => required(errs, at, "secret", secret(&d.secret, &d.secret_file))
                .map(|secret| DestinationKind::Webhook { secret }),
            Some("servicenow") => {
                let auth = auth(errs, at, d);
                let fields = servicenow_fields(errs, at, d, auth.as_ref());
                auth.map(|auth| DestinationKind::ServiceNow { auth, fields })
            }
            Some("jira") => {
                use crate::outbound::jira::Target;
                let target = match (&d.service_desk_id, &d.request_type_id, &d.project) {
                    (Some(sd), Some(rt), None) => Some(Target::ServiceDesk {
                        service_desk_id: sd.clone(),
                        request_type_id: rt.clone(),
                    }),
                    (None, None, Some(p)) => Some(Target::Project {
                        key: p.clone(),
                        issue_type: d.issue_type.clone().unwrap_or_else(|| "Incident".into()),
                    }),
                    _ => {
                        push(
                            errs,
                            at,
                            "service_desk_id",
                            "set service_desk_id and request_type_id (service desk requests), or project (issues)"
                                .into(),
                        );
                        None
                    }
                };
                let deployment = jira_deployment(errs, at, d);
                match (auth(errs, at, d), target, deployment) {
                    (Some(auth), Some(target), Some(deployment)) => Some(DestinationKind::Jira {
                        auth,
                        target,
                        resolve_transition: d.resolve_transition.clone(),
                        resolution: d.resolution.clone().unwrap_or_else(|| "Done".into()),
                        deployment,
                    }),
                    _ => None,
                }
            }
            Some("servicedeskplus") => {
                let auth = sdp_auth(errs, at, d);
                let fields = sdp_fields(errs, at, d);
                auth.map(|auth| DestinationKind::ServiceDeskPlus {
                    auth,
                    fields: Box::new(fields),
                })
            }
            Some("teamdynamix") => teamdynamix(errs, at, d),
            Some("stackstorm") => stackstorm(errs, at, d),
            Some("freshservice") => {
                let api_key = required(errs, at, "api_key", secret(&d.api_key, &d.api_key_file));
                let fields = freshservice_fields(errs, at, d);
                api_key
                    .zip(fields)
                    .map(|(api_key, fields)| DestinationKind::Freshservice { api_key, fields })
            }
            Some(other) => {
                push(
                    errs,
                    at,
                    "kind",
                    format!(
                        "{other:?}: one of servicenow, jira, freshservice, servicedeskplus, teamdynamix, pagerduty, stackstorm, opsgenie, slack, webhook"
                    ),
                );
                None
            }
            None => {
                push(errs, at, "kind", "required".into());
                None
            }
        };
        let slack_app = d.bot_token.is_some() || d.bot_token_file.is_some();
        let default_url = match d.kind.as_deref() {
            Some("pagerduty") => Some("https://events.pagerduty.com"),
            Some("opsgenie") => Some("https://api.opsgenie.com"),
            Some("slack") if slack_app => Some(crate::outbound::slack::WEB_API),
            _ => None,
        };
        let url = match d.url.as_deref().or(default_url) {
            Some(u) => http_url(errs, at, "url", u),
            None => {
                push(errs, at, "url", "required for this kind".into());
                String::new()
            }
        };
        if d.kind.as_deref() == Some("slack") && slack_app && is_slack_hook(&url) {
            push(
                errs,
                at,
                "url",
                "with bot_token, url is the Web API (default https://slack.com/api), not an incoming webhook"
                    .into(),
            );
        }
        // What each service documents it takes: PagerDuty's Events API v2
        // 120 events a minute per integration key; a Slack incoming webhook
        // one message a second (short bursts allowed), and so the Web API's
        // chat.postMessage per channel (chat.update, Tier 3, ~50 a minute,
        // stays under it too); Freshservice's smallest plan 100 calls a
        // minute for the whole account, so 1/s leaves room for its other
        // integrations; the others 10/s.
        let (default_rate, default_burst) = match d.kind.as_deref() {
            Some("pagerduty") => (2.0, 10),
            Some("freshservice") => (1.0, 5),
            // ServiceDesk Plus documents no figure; half a call a second
            // stays clear of what integrators report it throttling at.
            Some("servicedeskplus") => (0.5, 5),
            // TeamDynamix: 60 calls a minute per method, a create 30.
            Some("teamdynamix") => (0.5, 5),
            Some("slack") => (1.0, 3),
            _ => (10.0, 10),
        };
        let rate_limit = d.rate_limit.unwrap_or(default_rate);
        if !(rate_limit > 0.0 && rate_limit.is_finite()) {
            push(
                errs,
                at,
                "rate_limit",
                "must be a positive number of requests per second".into(),
            );
        }
        let burst = d.burst.unwrap_or(default_burst);
        if burst == 0 {
            push(errs, at, "burst", "must be at least 1".into());
        }
        let mut routes = Vec::new();
        for (j, r) in d.routes.iter().enumerate() {
            let max_priority = match &r.max_priority {
                None => None,
                Some(p) => {
                    let parsed = Priority::parse(p);
                    if parsed.is_none() {
                        push(
                            errs,
                            at,
                            &format!("routes[{j}].max_priority"),
                            format!("{p:?}: one of P1..P5"),
                        );
                    }
                    parsed
                }
            };
            let mut events = Vec::new();
            for (k, e) in r.events.iter().enumerate() {
                match EventKind::parse(e) {
                    Some(ev) => events.push(ev),
                    None => push(
                        errs,
                        at,
                        &format!("routes[{j}].events[{k}]"),
                        format!(
                            "{e:?}: one of {}",
                            EventKind::ALL.map(EventKind::as_str).join(", ")
                        ),
                    ),
                }
            }
            routes.push(Route {
                services: r.services.clone(),
                max_priority,
                events,
            });
        }
        if d.rules_only && !routes.is_empty() {
            push(
                errs,
                at,
                "rules_only",
                "a destination with routes cannot be rules_only".into(),
            );
        }
        if routes.is_empty() && !d.rules_only {
            // No route: every incident.
            routes.push(Route::default());
        }
        let timeout = duration(
            errs,
            &format!("{at}.timeout"),
            &d.timeout,
            Duration::from_secs(10),
        );
        let base = duration(
            errs,
            &format!("{at}.backoff_base"),
            &d.backoff_base,
            Backoff::default().base,
        );
        let max = duration(
            errs,
            &format!("{at}.backoff_max"),
            &d.backoff_max,
            Backoff::default().max,
        );
        let breaker_cool_down = duration(
            errs,
            &format!("{at}.breaker_cool_down"),
            &d.breaker_cool_down,
            Duration::from_secs(30),
        );
        if d.kind.as_deref() != Some("slack") {
            if slack_app {
                push(
                    errs,
                    at,
                    "bot_token",
                    "only slack destinations take it".into(),
                );
            }
            if d.channel.is_some() {
                push(
                    errs,
                    at,
                    "channel",
                    "only slack destinations take it".into(),
                );
            }
        }
        let inbound_token = match secret(&d.inbound_token, &d.inbound_token_file) {
            Ok(t) => t,
            Err(m) => {
                push(errs, at, "inbound_token", m);
                None
            }
        };
        if inbound_token.is_some() && !WEBHOOKS.contains(&d.kind.as_deref().unwrap_or("")) {
            push(
                errs,
                at,
                "inbound_token",
                format!(
                    "only {} destinations send updates back by webhook",
                    WEBHOOKS.join(", ")
                ),
            );
        }
        if d.kind.as_deref() != Some("pagerduty") {
            let rest = [
                (
                    "api_token",
                    d.api_token.is_some() || d.api_token_file.is_some(),
                ),
                ("api_url", d.api_url.is_some()),
                ("from", d.from.is_some()),
                (
                    "priority_names",
                    !d.priority_names.is_empty()
                        && !matches!(d.kind.as_deref(), Some("servicedeskplus" | "teamdynamix")),
                ),
            ];
            for (field, _) in rest.iter().filter(|(_, set)| *set) {
                push(
                    errs,
                    at,
                    field,
                    "only pagerduty destinations have a REST API setting".into(),
                );
            }
        }
        let inbound_secret = match secret(&d.inbound_secret, &d.inbound_secret_file) {
            Ok(t) => t,
            Err(m) => {
                push(errs, at, "inbound_secret", m);
                None
            }
        };
        if inbound_secret.is_some() && d.kind.as_deref() != Some("jira") {
            push(
                errs,
                at,
                "inbound_secret",
                "only jira signs its webhooks with a secret (servicenow: inbound_token)".into(),
            );
        }
        let poll = duration(
            errs,
            &format!("{at}.poll_interval"),
            &d.poll_interval,
            Duration::ZERO,
        );
        if !poll.is_zero() && !TICKETING.contains(&d.kind.as_deref().unwrap_or("")) {
            push(
                errs,
                at,
                "poll_interval",
                format!("only {} tickets can be read back", TICKETING.join(", ")),
            );
        } else if !poll.is_zero() && poll < Duration::from_secs(1) {
            push(
                errs,
                at,
                "poll_interval",
                "must be at least 1s (or 0: off)".into(),
            );
        }
        if d.kind.is_some()
            && !matches!(d.kind.as_deref(), Some("servicenow" | "servicedeskplus"))
            && d.assignment_group.is_some()
        {
            push(
                errs,
                at,
                "assignment_group",
                "only for servicenow and servicedeskplus destinations".into(),
            );
        }
        if d.kind.is_some() && d.kind.as_deref() != Some("servicenow") {
            for (key, set) in [
                ("close_code", d.close_code.is_some()),
                ("caller", d.caller.is_some()),
                ("business_service", d.business_service.is_some()),
                ("cmdb_ci", d.cmdb_ci.is_some()),
                ("short_description", d.short_description.is_some()),
                ("description", d.description.is_some()),
            ] {
                if set {
                    push(errs, at, key, "only for servicenow destinations".into());
                }
            }
        }
        if d.kind.is_some()
            && !matches!(
                d.kind.as_deref(),
                Some("servicenow" | "freshservice" | "servicedeskplus")
            )
        {
            for (key, set) in [
                ("category", d.category.is_some()),
                ("subcategory", d.subcategory.is_some()),
                ("fields", d.fields.is_some()),
            ] {
                if set {
                    push(
                        errs,
                        at,
                        key,
                        "only for servicenow, freshservice and servicedeskplus destinations".into(),
                    );
                }
            }
        }
        if d.kind.is_some() && d.kind.as_deref() != Some("servicedeskplus") {
            for (key, set) in [
                (
                    "technician_key",
                    d.technician_key.is_some() || d.technician_key_file.is_some(),
                ),
                ("client_id", d.client_id.is_some()),
                (
                    "client_secret",
                    d.client_secret.is_some() || d.client_secret_file.is_some(),
                ),
                (
                    "refresh_token",
                    d.refresh_token.is_some() || d.refresh_token_file.is_some(),
                ),
                ("accounts_url", d.accounts_url.is_some()),
                ("requester", d.requester.is_some()),
                ("request_type", d.request_type.is_some()),
                ("mode", d.mode.is_some()),
                ("impact_names", !d.impact_names.is_empty()),
                ("urgency_names", !d.urgency_names.is_empty()),
                ("resolve_status", d.resolve_status.is_some()),
            ] {
                if set {
                    push(
                        errs,
                        at,
                        key,
                        "only for servicedeskplus destinations".into(),
                    );
                }
            }
        }
        if d.kind.is_some() && d.kind.as_deref() != Some("stackstorm") {
            for (key, set) in [
                ("action", d.action.is_some()),
                ("parameters", d.parameters.is_some()),
                ("dry_run", d.dry_run.is_some()),
                ("cool_down", d.cool_down.is_some()),
                (
                    "max_executions_per_hour",
                    d.max_executions_per_hour.is_some(),
                ),
                ("execution_timeout", d.execution_timeout.is_some()),
                ("follow_interval", d.follow_interval.is_some()),
                ("resolve_on_success", d.resolve_on_success.is_some()),
            ] {
                if set {
                    push(errs, at, key, "only for stackstorm destinations".into());
                }
            }
        }
        if d.kind.is_some() && d.kind.as_deref() != Some("teamdynamix") {
            for (key, set) in [
                ("beid", d.beid.is_some()),
                (
                    "web_services_key",
                    d.web_services_key.is_some() || d.web_services_key_file.is_some(),
                ),
                ("app_id", d.app_id.is_some()),
                ("ticket_type", d.ticket_type.is_some()),
                ("account_id", d.account_id.is_some()),
                ("requestor_uid", d.requestor_uid.is_some()),
                ("responsible_group_id", d.responsible_group_id.is_some()),
            ] {
                if set {
                    push(errs, at, key, "only for teamdynamix destinations".into());
                }
            }
        }
        if d.kind.is_some()
            && !matches!(d.kind.as_deref(), Some("freshservice" | "teamdynamix"))
            && d.requester_email.is_some()
        {
            push(
                errs,
                at,
                "requester_email",
                "only for freshservice and teamdynamix destinations".into(),
            );
        }
        if d.kind.is_some() && d.kind.as_deref() != Some("freshservice") {
            for (key, set) in [
                ("requester_id", d.requester_id.is_some()),
                ("group_id", d.group_id.is_some()),
                ("department_id", d.department_id.is_some()),
                ("source", d.source.is_some()),
                ("workspace_id", d.workspace_id.is_some()),
            ] {
                if set {
                    push(errs, at, key, "only for freshservice destinations".into());
                }
            }
        }
        let tls = super::net::client_tls(
            errs,
            at,
            d.ca_file.as_ref(),
            d.system_roots,
            d.client_cert_file.as_ref(),
            d.client_key_file.as_ref(),
        );
        let proxy = super::net::proxy(
            errs,
            at,
            RawProxyFields {
                proxy: d.proxy.as_deref(),
                proxy_user: d.proxy_user.as_deref(),
                proxy_password: d.proxy_password.as_deref(),
                proxy_password_file: d.proxy_password_file.as_ref(),
                no_proxy: d.no_proxy.as_deref(),
            },
            &outer_proxy,
        );
        if errs.len() > before {
            continue;
        }
        if let Some(kind) = kind {
            out.push(DestinationConfig {
                name,
                kind,
                url,
                incident_url: d.incident_url.clone(),
                routes,
                settle,
                rate_limit,
                burst,
                timeout,
                backoff: Backoff {
                    base,
                    max: max.max(base),
                },
                breaker_failures: d.breaker_failures.unwrap_or(5).max(1),
                breaker_cool_down,
                inbound_token,
                inbound_secret,
                poll_interval: (!poll.is_zero()).then_some(poll),
                retry_unauthorized: d.retry_unauthorized,
                net: ClientNet { tls, proxy },
            });
        }
    }
    out
}

/// A `slack` destination's app settings: `bot_token(_file)` and `channel`
/// together (app mode), or neither (incoming webhook); `None` when they
/// are wrong (reported in `errs`).
fn slack(
    errs: &mut Vec<FieldError>,
    at: &str,
    d: &RawDestination,
) -> Option<Option<crate::outbound::settings::SlackApp>> {
    let token = match secret(&d.bot_token, &d.bot_token_file) {
        Ok(t) => t,
        Err(m) => {
            push(errs, at, "bot_token", m);
            return None;
        }
    };
    match (token, &d.channel) {
        (None, None) => Some(None),
        (Some(_), None) => {
            push(
                errs,
                at,
                "channel",
                "required with bot_token: the ID of the channel to post to (C0123456789)".into(),
            );
            None
        }
        (None, Some(_)) => {
            push(
                errs,
                at,
                "bot_token",
                "channel needs bot_token (or bot_token_file): an incoming webhook posts to its own channel"
                    .into(),
            );
            None
        }
        (Some(bot_token), Some(channel)) if is_channel_id(channel) => {
            Some(Some(crate::outbound::settings::SlackApp {
                bot_token,
                channel: channel.clone(),
            }))
        }
        (Some(_), Some(channel)) => {
            push(
                errs,
                at,
                "channel",
                format!(
                    "{channel:?}: the channel's ID (C0123456789, in the channel's details), not its name: chat.update takes only IDs"
                ),
            );
            None
        }
    }
}

/// A Slack conversation ID of a channel: `C` (public) or `G` (private, as
/// older workspaces name them) and upper-case letters and digits.
fn is_channel_id(s: &str) -> bool {
    s.len() >= 9
        && s.len() <= 24
        && s.starts_with(['C', 'G'])
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Is `url` a Slack incoming webhook (the wrong URL for app mode)?
fn is_slack_hook(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|h| h.starts_with("hooks.slack"))
}

/// An http(s) base URL, without a trailing slash (empty after an error).
fn http_url(errs: &mut Vec<FieldError>, at: &str, field: &str, u: &str) -> String {
    if (u.starts_with("https://") || u.starts_with("http://")) && reqwest::Url::parse(u).is_ok() {
        u.trim_end_matches('/').to_string()
    } else {
        push(
            errs,
            at,
            field,
            format!("{:?} is not an http(s) URL", crate::net::redact_url(u)),
        );
        String::new()
    }
}

/// PagerDuty's REST API settings, when `api_token` is set; the others
/// without it are an error (they would silently do nothing).
fn pagerduty_rest(
    errs: &mut Vec<FieldError>,
    at: &str,
    d: &RawDestination,
) -> Option<crate::outbound::settings::PagerDutyRest> {
    let api_token = match secret(&d.api_token, &d.api_token_file) {
        Ok(Some(t)) => t,
        Ok(None) => {
            let without = [
                ("api_url", d.api_url.is_some()),
                ("from", d.from.is_some()),
                ("priority_names", !d.priority_names.is_empty()),
            ];
            for (field, _) in without.iter().filter(|(_, set)| *set) {
                push(
                    errs,
                    at,
                    field,
                    "needs api_token (or api_token_file): it is a REST API setting".into(),
                );
            }
            return None;
        }
        Err(m) => {
            push(errs, at, "api_token", m);
            return None;
        }
    };
    let api_url = http_url(
        errs,
        at,
        "api_url",
        d.api_url.as_deref().unwrap_or("https://api.pagerduty.com"),
    );
    // The `From` header: an email, one line (a header value cannot hold
    // a line break).
    let from = match d.from.as_deref().map(str::trim) {
        Some(f)
            if f.split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
                && !f.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            f.to_string()
        }
        Some(f) => {
            push(errs, at, "from", format!("{f:?} is not an email address"));
            String::new()
        }
        None => {
            push(
                errs,
                at,
                "from",
                "required with api_token: the email of the PagerDuty user the updates are made as"
                    .into(),
            );
            String::new()
        }
    };
    let mut priority_names = crate::outbound::pagerduty::DEFAULT_PRIORITY_NAMES.map(String::from);
    for (key, name) in &d.priority_names {
        let field = format!("priority_names.{key}");
        match Priority::parse(key) {
            Some(p) if !name.trim().is_empty() => {
                priority_names[usize::from(p.get() - 1)] = name.trim().to_string();
            }
            Some(_) => push(errs, at, &field, "must not be empty".into()),
            None => push(errs, at, &field, format!("{key:?}: one of P1..P5")),
        }
    }
    Some(crate::outbound::settings::PagerDutyRest {
        api_token,
        api_url,
        from,
        priority_names,
    })
}

/// Which Jira a `jira` destination talks to: as set, else by its host.
fn jira_deployment(
    errs: &mut Vec<FieldError>,
    at: &str,
    d: &RawDestination,
) -> Option<crate::outbound::jira::Deployment> {
    use crate::outbound::jira::Deployment;
    match d.deployment.as_deref() {
        Some("cloud") => Some(Deployment::Cloud),
        Some("data_center" | "datacenter" | "server") => Some(Deployment::DataCenter),
        Some(other) => {
            push(
                errs,
                at,
                "deployment",
                format!("{other:?}: cloud or data_center"),
            );
            None
        }
        None => {
            let host = d
                .url
                .as_deref()
                .and_then(|u| reqwest::Url::parse(u).ok())
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
            Some(match host {
                Some(h) if h.ends_with(".atlassian.net") => Deployment::Cloud,
                _ => Deployment::DataCenter,
            })
        }
    }
}
