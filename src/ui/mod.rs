//! The web incident board (`/`): server-rendered pages over the same state
//! as the API, shipped inside the binary (templates compiled by maud, one
//! stylesheet and one small script embedded). Live updates are server-sent
//! events from the engine's commits; the pages work without script.
//!
//! Access follows the API's tokens: a token entered once is kept in an
//! HttpOnly, SameSite=Strict cookie; every form carries a token bound to
//! the browser's session (HMAC of a per-browser cookie under a key made at
//! start), and cross-site posts are refused. Behind an authenticating
//! proxy, `ui.trusted_proxy_header` names the signed-in user.

pub mod topology;
pub mod view;

use crate::api::{AppState, ServiceSummary};
use crate::config::UiConfig;
use crate::domain::{IncidentId, Priority, Timestamp};
use crate::incident::actions::{Action, Outcome};
use crate::incident::task::Operation;
use crate::store::{IncidentQuery, Page as StorePage, StateFilter};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{KeyInit, Mac};
use maud::Markup;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use view::{Nav, Viewer};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");
/// Versioned paths, so a new build's assets are never served from cache.
pub const CSS_PATH: &str = concat!("/ui/app-", env!("CARGO_PKG_VERSION"), ".css");
pub const JS_PATH: &str = concat!("/ui/app-", env!("CARGO_PKG_VERSION"), ".js");

const TOKEN_COOKIE: &str = "incidentd_token";
const SESSION_COOKIE: &str = "incidentd_session";
/// Header the board's script sends to get a page's body alone.
const PARTIAL: &str = "x-incidentd-partial";
/// Most active incidents the board lists.
const BOARD_LIMIT: u32 = 10_000;

/// A destination whose tickets the incident page links to.
#[derive(Debug, Clone)]
pub struct TicketTarget {
    pub name: String,
    pub kind: &'static str,
    pub url: String,
}

/// What the board needs besides the API's state.
pub struct UiSettings {
    pub config: UiConfig,
    /// Signs the form tokens; made at start (forms of an earlier run are
    /// refused, and say so).
    key: [u8; 32],
    sessions: AtomicU64,
    /// Cookies carry `Secure` (the listener or the public URL is HTTPS).
    secure: bool,
    pub tickets: Vec<TicketTarget>,
    /// Several instances share the store: other instances' changes do not
    /// reach this one's engine, so live pages also refresh on a timer.
    pub poll: Option<Duration>,
    pub shutdown: CancellationToken,
}

impl UiSettings {
    pub fn new(
        config: UiConfig,
        tls_listener: bool,
        tickets: Vec<TicketTarget>,
        poll: Option<Duration>,
        shutdown: CancellationToken,
    ) -> UiSettings {
        let secure = tls_listener
            || config
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"));
        UiSettings {
            config,
            key: random_key(),
            sessions: AtomicU64::new(0),
            secure,
            tickets,
            poll,
            shutdown,
        }
    }

    fn mac(&self, what: &[u8]) -> String {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(what);
        hex::encode(m.finalize().into_bytes())
    }

    /// A new browser session id: unguessable without the key.
    fn new_session(&self) -> String {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.mac(format!("session:{n}:{t}").as_bytes())
    }

    fn csrf(&self, session: &str) -> String {
        self.mac(format!("csrf:{session}").as_bytes())
    }

    fn cookie(&self, name: &str, value: &str, max_age: Option<u64>) -> String {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
        if let Some(a) = max_age {
            c.push_str(&format!("; Max-Age={a}"));
        }
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }
}

/// 32 bytes from the system's random source; the clock and process id if
/// it cannot be read (the key then only guards against other sites).
fn random_key() -> [u8; 32] {
    use std::io::Read;
    let mut key = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key));
    if read.is_err() {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        let d = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
        key.copy_from_slice(&d);
    }
    key
}

/// The board's state: the API's, and its own.
pub struct Ui {
    api: Arc<AppState>,
    settings: UiSettings,
}

impl std::ops::Deref for Ui {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.api
    }
}

type Shared = Arc<Ui>;

/// The board's routes on the API's state; the wiring merges them with the
/// API's router (which keeps its JSON fallback).
pub fn router(api: Arc<AppState>, settings: UiSettings) -> Router {
    routes().with_state(Arc::new(Ui { api, settings }))
}

fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(board))
        .route("/incidents/{id}", get(incident))
        .route("/incidents/{id}/{op}", post(act))
        .route("/services", get(services))
        .route("/problems", get(problems))
        .route("/changes", get(changes))
        .route("/cis", get(cis))
        .route("/cis/{id}", get(ci))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/ui/events", get(events))
        .route(
            CSS_PATH,
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            JS_PATH,
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// The board's errors: each a page (or a bare status for script requests).
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("sign in first")]
    SignIn { next: String },
    #[error("your token may read but not act: an operator token is needed")]
    Forbidden,
    #[error("{0}")]
    BadForm(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            UiError::SignIn { next } => {
                let to = format!("/login?next={}", view::enc(next));
                return (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, to.as_str()),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                )
                    .into_response();
            }
            UiError::Forbidden => (StatusCode::FORBIDDEN, "Not allowed"),
            UiError::BadForm(_) => (StatusCode::FORBIDDEN, "Form refused"),
            UiError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            UiError::Api(e) => {
                // The API's error, as the API would answer it, but as a page.
                let status = e.status();
                return page_response(
                    status,
                    &view::Page {
                        title: "Error",
                        nav: Nav::None,
                        live: false,
                        now: Timestamp(0),
                        viewer: None,
                        every: None,
                    },
                    view::message("Something went wrong", &e.to_string()),
                    None,
                );
            }
        };
        page_response(
            status,
            &view::Page {
                title,
                nav: Nav::None,
                live: false,
                now: Timestamp(0),
                viewer: None,
                every: None,
            },
            view::message(title, &self.to_string()),
            None,
        )
    }
}

fn page_response(
    status: StatusCode,
    p: &view::Page<'_>,
    body: Markup,
    set_cookie: Option<String>,
) -> Response {
    let html = view::layout(p, body).into_string();
    let mut r = (status, html_headers(), html).into_response();
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

fn html_headers() -> [(header::HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        // Nothing but this daemon: no fonts, scripts or frames elsewhere.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ]
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who asks, and the browser's session (a new one to set when it had none).
struct Visit {
    viewer: Option<Viewer>,
    session: String,
    set_cookie: Option<String>,
}

fn ui(st: &Ui) -> &UiSettings {
    &st.settings
}

fn visit(st: &Ui, headers: &HeaderMap) -> Visit {
    let u = ui(st);
    let (session, set_cookie) = match cookie(headers, SESSION_COOKIE)
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Some(s) => (s.to_string(), None),
        None => {
            let s = u.new_session();
            let c = u.cookie(SESSION_COOKIE, &s, None);
            (s, Some(c))
        }
    };
    let csrf = u.csrf(&session);
    let proxied = u.config.trusted_proxy_header.as_ref().and_then(|h| {
        headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && !v.chars().any(char::is_control))
    });
    let viewer = if let Some(user) = proxied {
        Some(Viewer {
            name: Some(user.chars().take(128).collect()),
            operator: u.config.proxy_operator,
            by_token: false,
            csrf,
        })
    } else if st.api_tokens.is_empty() {
        Some(Viewer {
            name: None,
            operator: true,
            by_token: false,
            csrf,
        })
    } else {
        let token = cookie(headers, TOKEN_COOKIE).unwrap_or_default();
        crate::api::token_of(st, token.as_bytes()).map(|t| Viewer {
            name: Some(t.name.clone()),
            operator: t.operator,
            by_token: true,
            csrf,
        })
    };
    Visit {
        viewer,
        session,
        set_cookie,
    }
}

/// The viewer of a page request, or a redirect to sign in.
fn must_see(v: &Visit, path: &str) -> Result<Viewer, UiError> {
    v.viewer.clone().ok_or_else(|| UiError::SignIn {
        next: path.to_string(),
    })
}

/// A page, whole or (for the board's script) its body alone.
/// A page's title, its navigation entry, and whether it updates live.
struct Meta<'a>(&'a str, Nav, bool);

fn render(
    st: &Ui,
    headers: &HeaderMap,
    v: Visit,
    viewer: &Viewer,
    Meta(title, nav, live): Meta<'_>,
    body: Markup,
) -> Response {
    if headers.contains_key(PARTIAL) {
        return (StatusCode::OK, html_headers(), body.into_string()).into_response();
    }
    let p = view::Page {
        title,
        nav,
        live,
        now: st.clock.now(),
        viewer: Some(viewer),
        // The SLO figures move with time, not only with incidents.
        every: (nav == Nav::Services).then_some(30),
    };
    page_response(StatusCode::OK, &p, body, v.set_cookie)
}

/// Query parameters of a page, as pairs (empty values dropped).
fn params(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(ps: &'a [(String, String)], name: &str) -> Option<&'a str> {
    ps.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn path_and_query(path: &str, raw: Option<&str>) -> String {
    match raw {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    }
}

/// The active incidents with their SLA timers, most urgent first.
async fn board_items(st: &Ui) -> Result<Vec<view::BoardItem>, UiError> {
    let incidents = st
        .store
        .list_incidents(IncidentQuery {
            state: StateFilter::Active,
            limit: BOARD_LIMIT,
            before: None,
            priority: None,
            service: None,
        })
        .await
        .map_err(crate::api::ApiError::from)?;
    let cmdb = crate::api::cmdb_of(st);
    let now = st.clock.now();
    let mut items: Vec<view::BoardItem> = incidents
        .into_iter()
        .map(|incident| view::BoardItem {
            sla: crate::slo::sla::incident_sla(&cmdb, &incident, now, &st.sla_pause_on),
            incident,
        })
        .collect();
    view::sort_board(&mut items);
    Ok(items)
}

async fn board(
    State(st): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    let viewer = must_see(&v, &path_and_query("/", raw.as_deref()))?;
    let ps = params(raw.as_deref());
    let f = view::Filters {
        state: param(&ps, "state").and_then(view::BoardState::parse),
        priority: param(&ps, "priority").and_then(Priority::parse),
        service: param(&ps, "service").map(str::to_string),
        group: param(&ps, "group").map(str::to_string),
    };
    let items = board_items(&st).await?;
    let cmdb = crate::api::cmdb_of(&st);
    let services: Vec<String> = cmdb.services().iter().map(|s| s.id.clone()).collect();
    let mut groups: Vec<String> = items
        .iter()
        .filter_map(|i| i.incident.assignment_group.as_deref().map(str::to_owned))
        .chain(f.group.clone())
        .collect();
    groups.sort();
    groups.dedup();
    let body = view::board(&items, &f, &services, &groups, st.clock.now());
    Ok(render(
        &st,
        &headers,
        v,
        &viewer,
        Meta("Incidents", Nav::Board, true),
        body,
    ))
}

fn incident_id(raw: &str) -> Result<IncidentId, UiError> {
    raw.parse::<i64>()
        .map(IncidentId)
        .map_err(|_| UiError::NotFound(format!("incident {raw:?}")))
}

async fn incident(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    let viewer = must_see(&v, &format!("/incidents/{raw}"))?;
    let id = incident_id(&raw)?;
    let api = |e| UiError::Api(crate::api::ApiError::from(e));
    let inc = st
        .store
        .get_incident(id)
        .await
        .map_err(api)?
        .ok_or_else(|| UiError::NotFound(format!("incident {}", id.0)))?;
    let alerts_page = StorePage {
        offset: 0,
        limit: 200,
    };
    let alerts = st
        .store
        .incident_alerts(id, alerts_page)
        .await
        .map_err(api)?;
    let mut timeline = st
        .store
        .timeline(
            id,
            StorePage {
                offset: 0,
                limit: 1000,
            },
        )
        .await
        .map_err(api)?;
    crate::api::with_change_failures(&st.kpi.book(), &inc, &mut timeline);
    let mut tickets = Vec::new();
    for t in &ui(&st).tickets {
        if let Some(r) = st.store.outbound_ref(&t.name, id).await.map_err(api)? {
            tickets.push(view::TicketLink {
                destination: t.name.clone(),
                kind: t.kind,
                url: ticket_url(t, &r),
                reference: r,
            });
        }
    }
    let cmdb = crate::api::cmdb_of(&st);
    let now = st.clock.now();
    let sla = crate::slo::sla::incident_sla(&cmdb, &inc, now, &st.sla_pause_on);
    let ps = params(q.as_deref());
    let note = param(&ps, "note");
    let title = format!("#{} {}", inc.id.0, inc.title);
    let body = view::incident(&view::IncidentPage {
        incident: &inc,
        sla: &sla,
        alerts_more: alerts.len() == alerts_page.limit as usize,
        alerts: &alerts,
        timeline: &timeline,
        tickets: &tickets,
        cmdb: &cmdb,
        now,
        viewer: &viewer,
        note,
    });
    Ok(render(
        &st,
        &headers,
        v,
        &viewer,
        Meta(&title, Nav::Board, true),
        body,
    ))
}

/// Where a ticket is read in its tool, when the tool has a page for it.
fn ticket_url(t: &TicketTarget, reference: &str) -> Option<String> {
    let base = t.url.trim_end_matches('/');
    match t.kind {
        "servicenow" => Some(format!(
            "{base}/nav_to.do?uri={}",
            view::enc(&format!("incident.do?sys_id={reference}"))
        )),
        "jira" => Some(format!("{base}/browse/{}", view::enc(reference))),
        "freshservice" => Some(format!("{base}/a/tickets/{}", view::enc(reference))),
        "servicedeskplus" => Some(format!(
            "{base}/ui/requests/{}/details",
            view::enc(reference)
        )),
        _ => None,
    }
}

/// Whether a state-changing request comes from this site's own pages: the
/// browser says where it was sent from (`Sec-Fetch-Site`, `Origin`), and
/// the form carries the session's token.
fn check_form(st: &Ui, headers: &HeaderMap, v: &Visit, csrf: Option<&str>) -> Result<(), UiError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|h| h.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err(UiError::BadForm(format!(
            "a form sent from another site ({site}) was refused"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let own = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host);
        let public =
            ui(st).config.public_url.as_deref().is_some_and(|u| {
                u.starts_with(origin) && u[origin.len()..].chars().all(|c| c == '/')
            });
        if !own && !public {
            return Err(UiError::BadForm(format!(
                "a form sent from {origin} was refused"
            )));
        }
    }
    if v.set_cookie.is_some() {
        return Err(UiError::BadForm(
            "this browser's session is unknown (cookies off, or the daemon restarted): reload the page and try again".into(),
        ));
    }
    let expected = ui(st).csrf(&v.session);
    let ok = csrf.is_some_and(|c| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            c.as_bytes(),
            expected.as_bytes(),
        ))
    });
    if !ok {
        return Err(UiError::BadForm(
            "the form has expired (the daemon restarted?): reload the page and try again".into(),
        ));
    }
    Ok(())
}

fn form(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, to), (header::CACHE_CONTROL, "no-store")],
    )
        .into_response()
}

async fn act(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path((raw, op)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    let viewer = must_see(&v, &format!("/incidents/{raw}"))?;
    let fields = form(&body);
    check_form(&st, &headers, &v, param(&fields, "csrf"))?;
    if !viewer.operator {
        return Err(UiError::Forbidden);
    }
    let id = incident_id(&raw)?;
    let (op, done) = match op.as_str() {
        "ack" => (Operation::Acknowledge, "Acknowledged"),
        "hold" => (Operation::Hold, "Put on hold"),
        "resume" => (Operation::Resume, "Resumed"),
        "resolve" => (Operation::Resolve, "Resolved"),
        other => return Err(UiError::NotFound(format!("action {other:?}"))),
    };
    let back = |note: &str| see_other(&format!("/incidents/{}?note={}", id.0, view::enc(note)));
    let reason = match op {
        Operation::Hold => {
            let r = param(&fields, "reason")
                .unwrap_or_default()
                .trim()
                .to_string();
            if let Err(m) = crate::domain::check_hold_reason(&r) {
                return Ok(back(&format!("Not put on hold: {m}")));
            }
            Some(r)
        }
        _ => None,
    };
    let actor = viewer.name.clone().unwrap_or_else(|| "web".into());
    let outcome = st
        .actions
        .act(Action {
            id,
            actor: actor.clone(),
            op,
            reason,
        })
        .await
        .map_err(crate::api::ApiError::from)?;
    Ok(match outcome {
        Outcome::Applied(_)
        | Outcome::Forwarded {
            applied: Some(_), ..
        } => back(&format!("{done} by {actor}.")),
        Outcome::Forwarded { applied: None, .. } => back(&format!(
            "{done}: sent to the instance that owns this incident; it shows here in a moment."
        )),
        Outcome::Unchanged(e) => back(&format!(
            "Nothing changed: {}.",
            crate::incident::actions::unchanged_reason(&e)
        )),
    })
}

async fn services(State(st): State<Shared>, headers: HeaderMap) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    let viewer = must_see(&v, "/services")?;
    let list: Vec<ServiceSummary> = crate::api::service_catalog(&st, st.clock.now()).await?;
    let body = view::services(&list, &st.kpi.book().overall);
    Ok(render(
        &st,
        &headers,
        v,
        &viewer,
        Meta("Services", Nav::Services, true),
        body,
    ))
}

async fn problems(State(st): State<Shared>, headers: HeaderMap) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    let viewer = must_see(&v, "/problems")?;
    let list = st
        .store
        .list_problems()
        .await
        .map_err(crate::api::ApiError::from)?;
    let body = view::problems(&list);
    Ok(render(
        &st,
        &headers,
        v,
        &viewer,
        Meta("Problems", Nav::Problems, true),
        body,
    ))
}

async fn changes(State(st): State<Shared>, headers: HeaderMap) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    let viewer = must_see(&v, "/changes")?;
    let mut list = st
        .store
        .list_changes()
        .await
        .map_err(crate::api::ApiError::from)?;
    list.sort_by_key(|c| std::cmp::Reverse(c.start));
    let list = crate::api::change_views(list, &st.kpi.book());
    let body = view::changes(&list, st.clock.now());
    Ok(render(
        &st,
        &headers,
        v,
        &viewer,
        Meta("Changes", Nav::Changes, false),
        body,
    ))
}

async fn cis(
    State(st): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    let viewer = must_see(&v, &path_and_query("/cis", raw.as_deref()))?;
    let ps = params(raw.as_deref());
    let cmdb = crate::api::cmdb_of(&st);
    let body = view::cis(&cmdb, param(&ps, "q").unwrap_or_default());
    Ok(render(
        &st,
        &headers,
        v,
        &viewer,
        Meta("CMDB", Nav::Cmdb, false),
        body,
    ))
}

async fn ci(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    let viewer = must_see(&v, &format!("/cis/{}", view::enc(&id)))?;
    let cmdb = crate::api::cmdb_of(&st);
    let idx = cmdb
        .ci_by_id(&id)
        .ok_or_else(|| UiError::NotFound(format!("CI {id:?}")))?;
    let recent: Vec<_> = st
        .store
        .list_incidents(IncidentQuery {
            state: StateFilter::All,
            limit: 2_000,
            before: None,
            priority: None,
            service: None,
        })
        .await
        .map_err(crate::api::ApiError::from)?
        .into_iter()
        .filter(|i| i.root_ci.as_deref() == Some(id.as_str()) || i.cis.contains(&id))
        .take(20)
        .collect();
    let body = view::ci(&cmdb, idx, &recent);
    Ok(render(
        &st,
        &headers,
        v,
        &viewer,
        Meta(&id, Nav::Cmdb, true),
        body,
    ))
}

/// Only a path of this site (never `//host` or a full URL) is a place to
/// go back to after signing in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".into(),
    }
}

async fn login_form(
    State(st): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let v = visit(&st, &headers);
    let ps = params(raw.as_deref());
    let next = safe_next(param(&ps, "next"));
    if v.viewer
        .as_ref()
        .is_some_and(|x| x.by_token || st.api_tokens.is_empty())
    {
        return see_other(&next);
    }
    let csrf = ui(&st).csrf(&v.session);
    login_page(StatusCode::OK, &csrf, &next, None, v.set_cookie)
}

fn login_page(
    status: StatusCode,
    csrf: &str,
    next: &str,
    error: Option<&str>,
    set_cookie: Option<String>,
) -> Response {
    let p = view::Page {
        title: "Sign in",
        nav: Nav::None,
        live: false,
        now: Timestamp(0),
        viewer: None,
        every: None,
    };
    page_response(status, &p, view::login(csrf, next, error), set_cookie)
}

async fn login(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    let fields = form(&body);
    check_form(&st, &headers, &v, param(&fields, "csrf"))?;
    let next = safe_next(param(&fields, "next"));
    let token = param(&fields, "token")
        .unwrap_or_default()
        .trim()
        .to_string();
    let csrf = ui(&st).csrf(&v.session);
    let Some(t) = crate::api::token_of(&st, token.as_bytes()) else {
        tracing::warn!("web board sign-in with an unknown token");
        return Ok(login_page(
            StatusCode::UNAUTHORIZED,
            &csrf,
            &next,
            Some("That token is not one of this daemon's API tokens."),
            None,
        ));
    };
    tracing::info!(token = %t.name, "signed in to the web board");
    let mut r = see_other(&next);
    // A fresh session with the sign-in: a session id planted before it is
    // worth nothing after.
    let session = ui(&st).new_session();
    for c in [
        ui(&st).cookie(TOKEN_COOKIE, &token, Some(30 * 86_400)),
        ui(&st).cookie(SESSION_COOKIE, &session, None),
    ] {
        if let Ok(h) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, h);
        }
    }
    Ok(r)
}

async fn logout(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, UiError> {
    let v = visit(&st, &headers);
    check_form(&st, &headers, &v, param(&form(&body), "csrf"))?;
    let mut r = see_other("/login");
    if let Ok(h) = HeaderValue::from_str(&ui(&st).cookie(TOKEN_COOKIE, "", Some(0))) {
        r.headers_mut().append(header::SET_COOKIE, h);
    }
    Ok(r)
}

/// `GET /ui/events`: a `changed` event after each commit that changed an
/// incident (at most four a second), a comment every 15 s to keep proxies
/// from closing the stream; with several instances, a `changed` every 2 s
/// too. Ends when the daemon shuts down.
async fn events(State(st): State<Shared>, headers: HeaderMap) -> Response {
    let v = visit(&st, &headers);
    if v.viewer.is_none() {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    }
    let mut changes = st.engine.incident_changes();
    // What the page was rendered from is seen: only later changes count.
    changes.borrow_and_update();
    let u = ui(&st);
    let shutdown = u.shutdown.clone();
    let poll = u.poll;
    let state = (changes, shutdown, true);
    let stream = futures_util::stream::unfold(state, move |(mut rx, stop, first)| async move {
        if first {
            // The retry delay the browser waits after a lost stream.
            return Some((
                Ok::<_, std::convert::Infallible>(Bytes::from_static(b"retry: 2000\n\n")),
                (rx, stop, false),
            ));
        }
        let wait = poll.unwrap_or(Duration::from_secs(15));
        tokio::select! {
            _ = stop.cancelled() => None,
            changed = rx.changed() => {
                if changed.is_err() {
                    return None;
                }
                // Coalesce a burst of commits into one refresh.
                tokio::time::sleep(Duration::from_millis(250)).await;
                rx.borrow_and_update();
                let n = *rx.borrow();
                Some((Ok(Bytes::from(format!("event: changed\ndata: {n}\n\n"))), (rx, stop, false)))
            }
            _ = tokio::time::sleep(wait) => {
                let msg = if poll.is_some() { "event: changed\ndata: poll\n\n" } else { ": keep-alive\n\n" };
                Some((Ok(Bytes::from_static(msg.as_bytes())), (rx, stop, false)))
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/incidents/3")), "/incidents/3");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn form_tokens_are_bound_to_the_session_and_the_run() {
        let a = UiSettings::new(
            UiConfig::default(),
            false,
            vec![],
            None,
            CancellationToken::new(),
        );
        let b = UiSettings::new(
            UiConfig::default(),
            false,
            vec![],
            None,
            CancellationToken::new(),
        );
        let s = a.new_session();
        assert_eq!(s.len(), 64);
        assert_ne!(s, a.new_session());
        assert_eq!(a.csrf(&s), a.csrf(&s));
        assert_ne!(a.csrf(&s), a.csrf(&a.new_session()));
        assert_ne!(a.csrf(&s), b.csrf(&s));
        assert!(
            a.cookie("x", "y", None)
                .contains("HttpOnly; SameSite=Strict")
        );
        assert!(!a.cookie("x", "y", None).contains("Secure"));
        let tls = UiSettings::new(
            UiConfig::default(),
            true,
            vec![],
            None,
            CancellationToken::new(),
        );
        assert!(tls.cookie("x", "y", None).ends_with("; Secure"));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; incidentd_token=t0k; b=2"),
        );
        assert_eq!(cookie(&h, TOKEN_COOKIE), Some("t0k"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
