//! HTTP API (DESIGN §5): `fn router(state) -> Router`; handlers stay thin and
//! every error is JSON `{"error": "...", "detail": ...}` with the right status.
//! The routes and their shapes are described by `openapi.yaml`, served at
//! `/api/v1/openapi.json`.

mod alerts;
mod catalog;
mod openapi;

pub use catalog::ServiceView as ServiceSummary;
pub(crate) use catalog::catalog as service_catalog;

use crate::domain::{Incident, IncidentId, IncidentState, Source, TimelineEntry};
use crate::incident::EngineError;
use crate::incident::actions::{self, ActError, Action, Actions, Outcome};
use crate::incident::task::{EngineHandle, Operation, PipelineError};
use crate::normalize::{self, Event, NormalizeError};
use crate::store::{AlertRecord, DynStore, IncidentQuery, Page, StateFilter};
use crate::telemetry::Metrics;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bodies above this size are parsed on the blocking pool, not on a runtime worker.
const BLOCKING_PARSE_BYTES: usize = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request body")]
    Invalid(#[from] NormalizeError),
    #[error("request body too large (limit {0} bytes)")]
    TooLarge(usize),
    #[error("could not read request body: {0}")]
    Body(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("token {0:?} may read but not act: an operator token is needed")]
    Forbidden(String),
    #[error("rate limit exceeded for this source")]
    RateLimited(Duration),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("incident {0} not found")]
    NotFound(IncidentId),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid query parameter {field}: {message}")]
    Query {
        field: &'static str,
        message: String,
    },
    #[error("invalid query parameter {field}: {message}")]
    QueryString { field: String, message: String },
    #[error("{method} is not allowed here; allowed: {}", allowed.join(", "))]
    MethodNotAllowed {
        method: String,
        /// What the route answers (`HEAD` with `GET`), as `Allow` says.
        allowed: Vec<&'static str>,
    },
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    #[error("the request took longer than {0:?}; retry")]
    Timeout(Duration),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("store error: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the store is lost: {0}")]
    StoreLost(String),
    #[error("invalid change records")]
    Changes(Vec<crate::change::ChangeError>),
    #[error("CI {0:?} not found in the CMDB")]
    CiNotFound(String),
    #[error("change {0:?} not found")]
    ChangeNotFound(String),
    #[error("no destination {0:?} takes webhooks (set its inbound_token)")]
    UnknownDestination(String),
    #[error("could not publish to the ingest topic: {0}")]
    Publish(String),
    #[error(
        "webhook ingest is off: [kafka] consumes external topics only; set kafka.ingest_topic to accept webhooks"
    )]
    IngressDisabled,
}

impl From<ActError> for ApiError {
    fn from(e: ActError) -> Self {
        match e {
            ActError::NotFound(id) => ApiError::NotFound(id),
            ActError::Pipeline(e) => ApiError::Pipeline(e),
            ActError::Store(e) => ApiError::Store(e),
            ActError::Forward(e) => ApiError::Publish(e),
        }
    }
}

/// An action that conflicts with the incident's state: its id and why
/// (`None` for other engine errors).
fn conflict(e: &EngineError) -> Option<serde_json::Value> {
    let (id, reason) = match e {
        EngineError::NotActive(id) => (id, "not active"),
        EngineError::AlreadyResolved(id) => (id, "already resolved"),
        EngineError::AlreadyAcknowledged(id) => (id, "already acknowledged"),
        EngineError::AlreadyOnHold(id) => (id, "already on hold"),
        EngineError::NotOnHold(id) => (id, "not on hold"),
        _ => return None,
    };
    Some(json!({ "id": id.0, "reason": reason }))
}

impl ApiError {
    /// The status, the JSON detail and the `Retry-After` seconds this error
    /// is answered with.
    fn parts(&self) -> (StatusCode, serde_json::Value, Option<u64>) {
        match self {
            ApiError::Invalid(e) => (
                StatusCode::BAD_REQUEST,
                serde_json::to_value(e).unwrap_or_default(),
                None,
            ),
            ApiError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({ "limit_bytes": limit }),
                None,
            ),
            ApiError::Body(_) => (StatusCode::BAD_REQUEST, serde_json::Value::Null, None),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, serde_json::Value::Null, None),
            ApiError::Forbidden(name) => (
                StatusCode::FORBIDDEN,
                json!({ "token": name, "needs": "operator" }),
                None,
            ),
            ApiError::RateLimited(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::Value::Null,
                Some(wait.as_secs().max(1)),
            ),
            ApiError::Pipeline(PipelineError::Engine(e)) if conflict(e).is_some() => {
                (StatusCode::CONFLICT, conflict(e).unwrap_or_default(), None)
            }
            ApiError::Pipeline(PipelineError::Engine(EngineError::NotOwned(shard))) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "shard": shard }),
                Some(1),
            ),
            ApiError::Pipeline(PipelineError::Engine(EngineError::Full {
                limit, setting, ..
            })) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "reason": setting, "limit": limit }),
                Some(5),
            ),
            ApiError::Pipeline(PipelineError::Overloaded) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::Value::Null,
                Some(1),
            ),
            ApiError::Pipeline(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::Value::Null,
                Some(5),
            ),
            ApiError::NotFound(id) => (StatusCode::NOT_FOUND, json!({ "id": id.0 }), None),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, serde_json::Value::Null, None),
            ApiError::Query { field, .. } => {
                (StatusCode::BAD_REQUEST, json!({ "field": field }), None)
            }
            ApiError::QueryString { field, .. } => {
                (StatusCode::BAD_REQUEST, json!({ "field": field }), None)
            }
            ApiError::MethodNotAllowed { method, allowed } => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "method": method, "allowed": allowed }),
                None,
            ),
            ApiError::NoRoute(path) => (StatusCode::NOT_FOUND, json!({ "path": path }), None),
            ApiError::Timeout(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::Value::Null,
                Some(1),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::Value::Null,
                None,
            ),
            ApiError::Changes(errs) => (
                StatusCode::BAD_REQUEST,
                json!({ "errors": errs.iter().map(|e| match &e.record {
                    Some(r) => json!({ "field": e.field, "record": r, "message": e.message }),
                    None => json!({ "field": e.field, "message": e.message }),
                }).collect::<Vec<_>>() }),
                None,
            ),
            ApiError::CiNotFound(id) | ApiError::ChangeNotFound(id) => {
                (StatusCode::NOT_FOUND, json!({ "id": id }), None)
            }
            ApiError::UnknownDestination(d) => {
                (StatusCode::NOT_FOUND, json!({ "destination": d }), None)
            }
            ApiError::Publish(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::Value::Null,
                Some(5),
            ),
            ApiError::IngressDisabled => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "field": "kafka.ingest_topic" }),
                None,
            ),
            ApiError::StoreLost(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "store": "lost" }),
                Some(30),
            ),
            ApiError::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::Value::Null,
                Some(5),
            ),
        }
    }

    /// The status this error is answered with (the web board's pages
    /// answer with the same).
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store(e) = &self {
            tracing::error!(error = %e, "store read failed");
        }
        let (status, detail, retry_after) = self.parts();
        let message = match &self {
            ApiError::Invalid(e) => e.to_string(),
            other => other.to_string(),
        };
        let mut resp =
            (status, Json(json!({ "error": message, "detail": detail }))).into_response();
        if let Some(s) = retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// Per-source admission: optional bearer token and rate limit.
#[derive(Default)]
pub struct SourceGate {
    pub token: Option<Vec<u8>>,
    pub limiter: Option<DefaultDirectRateLimiter>,
}

impl SourceGate {
    pub fn new(token: Option<String>, rate: Option<(u32, u32)>) -> SourceGate {
        let limiter = rate.and_then(|(per_sec, burst)| {
            let q =
                Quota::per_second(NonZeroU32::new(per_sec)?).allow_burst(NonZeroU32::new(burst)?);
            Some(RateLimiter::direct(q))
        });
        SourceGate {
            token: token.map(String::into_bytes),
            limiter,
        }
    }
}

fn bearer_ok(expected: Option<&[u8]>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let Some(got) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        return false;
    };
    // Constant time, so the token cannot be guessed byte by byte from timing.
    subtle::ConstantTimeEq::ct_eq(got.trim().as_bytes(), expected).into()
}

pub struct AppState {
    pub cmdb: crate::cmdb::SharedCmdb,
    pub engine: EngineHandle,
    pub store: DynStore,
    pub metrics: Metrics,
    pub alertmanager: SourceGate,
    pub api_source: SourceGate,
    pub pagerduty: SourceGate,
    /// Tokens of the incident API (empty: open).
    pub api_tokens: Vec<ApiToken>,
    pub max_body_bytes: usize,
    pub clock: Arc<dyn crate::domain::Clock>,
    /// Where accepted webhook alerts go.
    pub ingress: Ingress,
    /// The Kafka consumer, for readiness.
    pub kafka: Option<crate::ingest::KafkaSource>,
    /// Acknowledge, resolve, hold and resume, from the API and the ITSM
    /// webhooks (in Kafka mode forwarded to the owner when it is another
    /// instance).
    pub actions: Actions,
    /// SLO figures, computed at each scrape.
    pub slo: Arc<crate::slo::export::SloExporter>,
    /// The service-management figures (`GET /api/v1/services`, changes).
    pub kpi: Arc<crate::kpi::export::KpiExporter>,
    /// `changes.failure_window`, for the changes' timelines.
    pub kpi_failure_window: Duration,
    /// Hold reasons that stop SLA clocks (`sla.pause_on`).
    pub sla_pause_on: Arc<[String]>,
    /// Destinations whose tickets report back (two-way sync).
    pub inbound: Vec<InboundDestination>,
    /// `[limits]` on each alert, and how far event times may stray.
    pub alert_limits: normalize::AlertLimits,
    pub time_bounds: normalize::TimeBounds,
    /// `by` and `reason` of actions, at most.
    pub max_text_bytes: usize,
    /// Alerts rejected alone, for operators to read.
    pub quarantine: Arc<crate::ingest::Quarantine>,
    /// Change records one request may carry (`limits.max_changes_per_request`).
    pub max_changes: usize,
    /// One change import at a time: each builds the next calendar from the
    /// one in force.
    pub changes_lock: tokio::sync::Mutex<()>,
    /// Cancelled when a stop was asked and `http.shutdown_delay` runs:
    /// `/readyz` answers 503 `"stopping": true` while everything else is
    /// still served, so that load balancers take this instance out first.
    pub stop_asked: tokio_util::sync::CancellationToken,
}

/// Change records stored per transaction of a bulk import.
const CHANGE_CHUNK: usize = 500;

/// A named token of the incident API, its secret read.
pub struct ApiToken {
    pub name: String,
    pub secret: Vec<u8>,
    pub operator: bool,
}

/// What a request means to do with the incident API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Operate,
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The token whose secret is `got`, comparing every token in constant
/// time whatever matched.
pub(crate) fn token_of<'a>(st: &'a AppState, got: &[u8]) -> Option<&'a ApiToken> {
    let mut found: Option<&ApiToken> = None;
    for t in &st.api_tokens {
        if bool::from(subtle::ConstantTimeEq::ct_eq(got, t.secret.as_slice())) {
            found = Some(t);
        }
    }
    found
}

/// Who is asking, if tokens are configured (`None`: the API is open);
/// 401 without a known token, 403 for a reader that means to act. Every
/// token is compared, in constant time each, whatever matched.
fn authorize(st: &AppState, headers: &HeaderMap, need: Need) -> Result<Option<String>, ApiError> {
    if st.api_tokens.is_empty() {
        return Ok(None);
    }
    let got = bearer(headers).unwrap_or_default().as_bytes();
    let t = token_of(st, got).ok_or(ApiError::Unauthorized)?;
    if need == Need::Operate && !t.operator {
        return Err(ApiError::Forbidden(t.name.clone()));
    }
    Ok(Some(t.name.clone()))
}

/// A ticketing destination allowed to post to `/api/v1/webhooks/{name}`.
pub struct InboundDestination {
    pub name: String,
    /// The destination kind, whose webhook body it parses.
    pub kind: &'static str,
    /// The bearer token its webhooks send.
    pub token: Option<Vec<u8>>,
    /// The secret its webhooks sign their bodies with (Jira Cloud).
    pub signing_secret: Option<Vec<u8>>,
}

/// Where accepted webhook alerts go.
pub enum Ingress {
    /// Straight to the local engine (single instance).
    Local,
    /// Distributed mode: to the keyed ingest topic; the partition's owner
    /// processes them. Answered once the broker acknowledged.
    Publish(Arc<crate::ingest::Publisher>),
    /// Kafka consumes external topics only: webhooks are refused (they
    /// would bypass the partition that owns their incident).
    Disabled,
}

type Shared = Arc<AppState>;

/// One route: its path, the methods it answers and what serves them. The
/// router is built from [`routes`] alone, so that a 405 can name the
/// methods and the OpenAPI document can be checked against every route
/// (`tests/openapi.rs`).
struct Route {
    path: &'static str,
    methods: &'static [&'static str],
    serve: MethodRouter<Shared>,
}

fn routes() -> Vec<Route> {
    let r = |path, methods, serve| Route {
        path,
        methods,
        serve,
    };
    vec![
        r(
            "/api/v1/alerts/alertmanager",
            &["POST"],
            post(post_alertmanager),
        ),
        r(
            "/api/v1/alerts",
            &["GET", "POST"],
            get(alerts::list_alerts).post(post_canonical),
        ),
        // Where Prometheus, vmalert and other Alertmanager API clients post
        // (Alertmanager's own v2 path): the same body.
        r("/api/v2/alerts", &["POST"], post(post_canonical)),
        r("/api/v1/alerts/rejected", &["GET"], get(list_rejected)),
        r("/api/v1/alerts/pagerduty", &["POST"], post(post_pagerduty)),
        r("/api/v1/incidents", &["GET"], get(list_incidents)),
        r("/api/v1/incidents/{id}", &["GET"], get(get_incident)),
        r(
            "/api/v1/incidents/{id}/alerts",
            &["GET"],
            get(incident_alerts),
        ),
        r(
            "/api/v1/incidents/{id}/timeline",
            &["GET"],
            get(incident_timeline),
        ),
        r(
            "/api/v1/incidents/{id}/ack",
            &["POST"],
            action(Operation::Acknowledge),
        ),
        r(
            "/api/v1/incidents/{id}/resolve",
            &["POST"],
            action(Operation::Resolve),
        ),
        r(
            "/api/v1/incidents/{id}/hold",
            &["POST"],
            action(Operation::Hold),
        ),
        r(
            "/api/v1/incidents/{id}/resume",
            &["POST"],
            action(Operation::Resume),
        ),
        r(
            "/api/v1/webhooks/{destination}",
            &["POST"],
            post(inbound_webhook),
        ),
        r(
            "/api/v1/changes",
            &["GET", "POST"],
            post(post_changes).get(list_changes),
        ),
        r("/api/v1/changes/{id}", &["GET"], get(get_change)),
        r("/api/v1/problems", &["GET"], get(list_problems)),
        r("/api/v1/services", &["GET"], get(catalog::list_services)),
        r("/api/v1/cis", &["GET"], get(catalog::list_cis)),
        r("/api/v1/cis/{id}", &["GET"], get(get_ci)),
        r("/api/v1/openapi.json", &["GET"], get(openapi::document)),
        r(
            "/healthz",
            &["GET"],
            get(|| async { Json(json!({ "status": "ok" })) }),
        ),
        r("/readyz", &["GET"], get(readyz)),
        r("/metrics", &["GET"], get(metrics)),
    ]
}

/// Every route's path and methods, as the router serves them.
pub fn route_table() -> Vec<(&'static str, &'static [&'static str])> {
    routes().into_iter().map(|r| (r.path, r.methods)).collect()
}

/// The methods a 405 names: the route's, and `HEAD` wherever `GET` is
/// (axum answers it), as the `Allow` header does.
fn allowed_methods(methods: &[&'static str]) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(methods.len() + 1);
    for m in methods {
        out.push(*m);
        if *m == "GET" {
            out.push("HEAD");
        }
    }
    out
}

pub fn router(state: Shared) -> Router {
    let limit = state.max_body_bytes;
    let mut router = Router::new();
    for route in routes() {
        let allowed = allowed_methods(route.methods);
        router = router.route(
            route.path,
            route
                .serve
                .fallback(move |method: axum::http::Method| async move {
                    ApiError::MethodNotAllowed {
                        method: method.to_string(),
                        allowed,
                    }
                }),
        );
    }
    router
        .fallback(|uri: axum::http::Uri| async move { ApiError::NoRoute(uri.path().to_string()) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Every request bounded by `timeout` (a JSON 503 with `Retry-After`
/// beyond it) and a panic answered as a JSON 500 instead of a dropped
/// connection: so that no answer of this daemon is anything but JSON.
pub fn guarded(router: Router, timeout: Duration) -> Router {
    router
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(resp) => resp,
                    Err(_) => ApiError::Timeout(timeout).into_response(),
                }
            },
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                tracing::error!(panic = %what, "a request handler panicked");
                ApiError::Internal("the request failed; see the daemon's log".into())
                    .into_response()
            },
        ))
}

#[derive(Serialize)]
struct IngestResponse {
    status: &'static str,
    accepted: u32,
    new: u32,
    deduplicated: u32,
    changed: u32,
    suppressed: u32,
    ignored: u32,
    /// Alerts of the body refused alone (the others were accepted).
    rejected: Vec<RejectedView>,
}

/// A rejected alert as the sender is told of it.
#[derive(Serialize)]
struct RejectedView {
    index: usize,
    field: String,
    error: String,
}

impl IngestResponse {
    fn with_rejected(mut self, rejected: &[normalize::Rejected]) -> Self {
        self.rejected = rejected
            .iter()
            .map(|r| RejectedView {
                index: r.index,
                field: r.field.clone(),
                error: r.error.clone(),
            })
            .collect();
        self
    }
}

/// A request body for every endpoint that takes one: the rejection (too
/// large, unreadable) is already the API's error, and is raised only when
/// the handler asks, after its own checks (authentication comes first).
struct Body(Result<Bytes, ApiError>);

impl Body {
    fn bytes(self) -> Result<Bytes, ApiError> {
        self.0
    }
}

impl axum::extract::FromRequest<Shared> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(
        req: axum::extract::Request,
        st: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let limit = st.max_body_bytes;
        Ok(Body(Bytes::from_request(req, st).await.map_err(
            |e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(limit)
                } else {
                    ApiError::Body(e.body_text())
                }
            },
        )))
    }
}

fn admit(
    st: &AppState,
    gate: &SourceGate,
    source: Source,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if !bearer_ok(gate.token.as_deref(), headers) {
        st.metrics
            .requests_rejected
            .with_label_values(&[source.as_str(), "unauthorized"])
            .inc();
        return Err(ApiError::Unauthorized);
    }
    if let Some(l) = &gate.limiter
        && let Err(not_until) = l.check()
    {
        st.metrics
            .requests_rejected
            .with_label_values(&[source.as_str(), "rate_limited"])
            .inc();
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        return Err(ApiError::RateLimited(wait));
    }
    Ok(())
}

async fn parse<T: Send + 'static>(
    body: Bytes,
    f: impl FnOnce(&[u8]) -> Result<T, NormalizeError> + Send + 'static,
) -> Result<T, ApiError> {
    if body.len() >= BLOCKING_PARSE_BYTES {
        tokio::task::spawn_blocking(move || f(&body))
            .await
            .map_err(|e| ApiError::Body(e.to_string()))?
            .map_err(ApiError::from)
    } else {
        f(&body).map_err(ApiError::from)
    }
}

async fn ingest(
    st: &AppState,
    source: Source,
    events: Vec<Event>,
) -> Result<IngestResponse, ApiError> {
    if let Some(why) = st.store.lost() {
        st.metrics
            .requests_rejected
            .with_label_values(&[source.as_str(), "unavailable"])
            .inc();
        return Err(ApiError::StoreLost(why));
    }
    match &st.ingress {
        Ingress::Local => {}
        Ingress::Disabled => return Err(ApiError::IngressDisabled),
        Ingress::Publish(p) => {
            let alerts: Vec<&crate::domain::Alert> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Alert(a) => Some(a),
                    // The owner re-reads the alert with its time already
                    // bounded; the note stays with this instance's log.
                    Event::Acknowledge { .. } | Event::Note { .. } => None,
                })
                .collect();
            let cmdb = st
                .cmdb
                .read()
                .map(|c| c.clone())
                .unwrap_or_else(|p| p.into_inner().clone());
            let msgs = crate::ingest::Publisher::encode_alerts(&cmdb, &alerts)
                .map_err(|e| ApiError::Publish(e.to_string()))?;
            return publish(st, source, p, msgs, alerts.len()).await;
        }
    }
    let started = Instant::now();
    let n = events
        .iter()
        .filter(|e| !matches!(e, Event::Note { .. }))
        .count() as u64;
    let out = st.engine.ingest(events).await.inspect_err(|e| {
        let reason = match e {
            PipelineError::Overloaded => "overloaded",
            PipelineError::Engine(EngineError::Full { .. }) => "full",
            _ => "unavailable",
        };
        st.metrics
            .requests_rejected
            .with_label_values(&[source.as_str(), reason])
            .inc();
    })?;
    st.metrics
        .alerts_received
        .with_label_values(&[source.as_str()])
        .inc_by(n);
    st.metrics
        .request_seconds
        .with_label_values(&[source.as_str()])
        .observe(started.elapsed().as_secs_f64());
    Ok(IngestResponse {
        status: "success",
        accepted: out.accepted,
        new: out.new,
        deduplicated: out.deduplicated,
        changed: out.changed,
        suppressed: out.suppressed,
        ignored: out.ignored,
        rejected: Vec::new(),
    })
}

/// Distributed mode: publish and answer once the broker acknowledged.
async fn publish(
    st: &AppState,
    source: Source,
    p: &crate::ingest::Publisher,
    msgs: Vec<crate::ingest::kafka::Outgoing>,
    n: usize,
) -> Result<IngestResponse, ApiError> {
    let started = Instant::now();
    p.publish(msgs).await.map_err(|e| {
        st.metrics
            .requests_rejected
            .with_label_values(&[source.as_str(), "unavailable"])
            .inc();
        ApiError::Publish(e.to_string())
    })?;
    st.metrics
        .alerts_received
        .with_label_values(&[source.as_str()])
        .inc_by(n as u64);
    st.metrics
        .request_seconds
        .with_label_values(&[source.as_str()])
        .observe(started.elapsed().as_secs_f64());
    Ok(IngestResponse {
        status: "success",
        accepted: u32::try_from(n).unwrap_or(u32::MAX),
        new: 0,
        deduplicated: 0,
        changed: 0,
        suppressed: 0,
        ignored: 0,
        rejected: Vec::new(),
    })
}

fn invalid(st: &AppState, source: Source, e: ApiError) -> ApiError {
    let reason = match e {
        ApiError::TooLarge(_) => "too_large",
        _ => "invalid",
    };
    st.metrics
        .requests_rejected
        .with_label_values(&[source.as_str(), reason])
        .inc();
    e
}

/// Admission, body limits and parsing shared by the ingest endpoints.
async fn receive<T: Send + 'static>(
    st: &AppState,
    gate: &SourceGate,
    src: Source,
    headers: &HeaderMap,
    body: Body,
    parser: impl FnOnce(&[u8], &normalize::Intake) -> Result<T, NormalizeError> + Send + 'static,
) -> Result<T, ApiError> {
    admit(st, gate, src, headers)?;
    let body = body.bytes().map_err(|e| invalid(st, src, e))?;
    let intake = normalize::Intake {
        now: st.clock.now(),
        limits: st.alert_limits,
        bounds: Some(st.time_bounds),
    };
    parse(body, move |b| parser(b, &intake))
        .await
        .map_err(|e| invalid(st, src, e))
}

/// Count, log and keep a body's rejected and re-timed alerts.
fn note_batch(st: &AppState, src: Source, batch: &normalize::Batch) {
    if batch.clamped > 0 {
        st.metrics
            .alert_times_clamped
            .with_label_values(&[src.as_str()])
            .inc_by(batch.clamped as u64);
    }
    if batch.rejected.is_empty() {
        return;
    }
    for r in &batch.rejected {
        st.metrics
            .alerts_rejected
            .with_label_values(&[src.as_str(), r.reason.as_str()])
            .inc();
    }
    let first = &batch.rejected[0];
    tracing::warn!(
        source = src.as_str(),
        rejected = batch.rejected.len(),
        accepted = batch.events.len(),
        field = %first.field,
        error = %first.error,
        "alerts rejected; the rest of the body was accepted (GET /api/v1/alerts/rejected)"
    );
    st.quarantine
        .record(st.clock.now(), src, None, &batch.rejected);
}

async fn post_alertmanager(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let gate = &st.alertmanager;
    post_batch(
        &st,
        gate,
        Source::Alertmanager,
        &headers,
        body,
        normalize::parse_alertmanager,
    )
    .await
}

async fn post_canonical(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let gate = &st.api_source;
    post_batch(
        &st,
        gate,
        Source::Api,
        &headers,
        body,
        normalize::parse_canonical,
    )
    .await
}

/// A batch endpoint: admit, parse, ingest what parsed and answer with what
/// did not.
async fn post_batch(
    st: &AppState,
    gate: &SourceGate,
    src: Source,
    headers: &HeaderMap,
    body: Body,
    parser: fn(&[u8], &normalize::Intake) -> Result<normalize::Batch, NormalizeError>,
) -> Result<Json<IngestResponse>, ApiError> {
    let batch = receive(st, gate, src, headers, body, parser).await?;
    note_batch(st, src, &batch);
    let answer = ingest(st, src, batch.events).await?;
    Ok(Json(answer.with_rejected(&batch.rejected)))
}

async fn post_pagerduty(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let src = Source::Pagerduty;
    let raw = body.0.as_ref().ok().cloned();
    let (events, key) = receive(
        &st,
        &st.pagerduty,
        src,
        &headers,
        body,
        normalize::parse_pagerduty,
    )
    .await?;
    match (&st.ingress, raw) {
        // The body itself goes to the topic, keyed by its dedup_key, so an
        // acknowledge or resolve reaches the partition of its trigger.
        (Ingress::Publish(p), Some(raw)) => {
            let msg = crate::ingest::kafka::Outgoing {
                key: format!("pd:{key}"),
                value: raw.to_vec(),
                format: "pagerduty",
            };
            publish(&st, src, p, vec![msg], 1).await?;
        }
        _ => {
            ingest(&st, src, events).await?;
        }
    }
    // PagerDuty's own answer shape, so its client libraries are satisfied.
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "success", "message": "Event processed", "dedup_key": key })),
    ))
}

#[derive(Deserialize)]
struct ListParams {
    state: Option<String>,
    limit: Option<u32>,
    before: Option<i64>,
    priority: Option<crate::domain::Priority>,
    service: Option<String>,
}

fn check_api_token(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize(st, headers, Need::Read).map(|_| ())
}

/// A query string parsed into `T`; an error names the parameter (a plain
/// `Query` extractor would answer `text/plain`).
fn query<T: serde::de::DeserializeOwned>(raw: Option<&str>) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(
        raw.unwrap_or_default().as_bytes(),
    ));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ApiError::QueryString {
            field: if path == "." { "query".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

async fn list_incidents(
    State(st): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_api_token(&st, &headers)?;
    let p: ListParams = query(raw.as_deref())?;
    let state = match p.state.as_deref() {
        None | Some("active") => StateFilter::Active,
        Some("all") => StateFilter::All,
        Some(s) => StateFilter::Only(IncidentState::parse(s).ok_or_else(|| ApiError::Query {
            field: "state",
            message: format!("{s:?} is not one of open, acknowledged, resolved, active, all"),
        })?),
    };
    let limit = p.limit.unwrap_or(500);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::Query {
            field: "limit",
            message: "must be 1..=10000".into(),
        });
    }
    let incidents = st
        .store
        .list_incidents(IncidentQuery {
            state,
            limit,
            before: p.before,
            priority: p.priority,
            service: p.service.filter(|s| !s.is_empty()),
        })
        .await?;
    let next = (incidents.len() == limit as usize)
        .then(|| incidents.last().map(|i| i.id.0))
        .flatten();
    let cmdb = shared_cmdb(&st);
    let now = st.clock.now();
    let items: Vec<IncidentItem> = incidents
        .into_iter()
        .map(|incident| IncidentItem {
            sla: crate::slo::sla::incident_sla(&cmdb, &incident, now, &st.sla_pause_on),
            incident,
        })
        .collect();
    Ok(Json(json!({ "incidents": items, "next_before": next })))
}

/// The CMDB in force, for the web board.
pub(crate) fn cmdb_of(st: &AppState) -> Arc<crate::cmdb::Cmdb> {
    shared_cmdb(st)
}

/// The CMDB in force (a poisoned lock still holds a valid CMDB: writers
/// only swap the `Arc`).
fn shared_cmdb(st: &AppState) -> Arc<crate::cmdb::Cmdb> {
    match st.cmdb.read() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// An incident of a list, with its SLA timers as of the request.
#[derive(Serialize)]
struct IncidentItem {
    #[serde(flatten)]
    incident: Incident,
    sla: crate::slo::sla::IncidentSla,
}

#[derive(Serialize)]
struct IncidentDetail {
    #[serde(flatten)]
    incident: Incident,
    /// Response and resolution timers against the service catalog's
    /// targets, as of this request.
    sla: crate::slo::sla::IncidentSla,
    /// Ids of the changes this incident counts against (KPI book).
    failed_changes: Vec<String>,
    timeline: Vec<TimelineEntry>,
    alerts: Vec<AlertView>,
    /// Offsets of the next pages when these lists were cut
    /// (`/api/v1/incidents/{id}/alerts?offset=`, `…/timeline?offset=`).
    alerts_next: Option<u64>,
    timeline_next: Option<u64>,
}

#[derive(Serialize)]
struct AlertView {
    fingerprint: crate::domain::Fingerprint,
    status: crate::domain::AlertStatus,
    labels: crate::domain::LabelSet,
    annotations: crate::domain::LabelSet,
    starts_at: crate::domain::Timestamp,
    ends_at: Option<crate::domain::Timestamp>,
    source: Source,
    generator_url: String,
    flapping: bool,
    deliveries: u64,
    first_seen: crate::domain::Timestamp,
    last_seen: crate::domain::Timestamp,
}

impl From<AlertRecord> for AlertView {
    fn from(a: AlertRecord) -> Self {
        AlertView {
            fingerprint: a.fingerprint,
            status: a.status,
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.starts_at,
            ends_at: a.ends_at,
            source: a.source,
            generator_url: a.generator_url,
            flapping: a.flapping,
            deliveries: a.deliveries,
            first_seen: a.first_seen,
            last_seen: a.last_seen,
        }
    }
}

fn parse_id(raw: &str) -> Result<IncidentId, ApiError> {
    raw.parse::<i64>()
        .map(IncidentId)
        .map_err(|_| ApiError::Query {
            field: "id",
            message: format!("{raw:?} is not an incident id"),
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailParams {
    alerts_limit: Option<u32>,
    timeline_limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageParams {
    offset: Option<u64>,
    limit: Option<u32>,
}

/// A page of at most `limit` (1..=10000, else `default`) from `offset`.
fn page(
    field: &'static str,
    offset: Option<u64>,
    limit: Option<u32>,
    default: u32,
) -> Result<Page, ApiError> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::Query {
            field,
            message: "must be 1..=10000".into(),
        });
    }
    Ok(Page {
        offset: offset.unwrap_or(0),
        limit,
    })
}

/// The offset of the next page, when this one was full.
fn next(page: Page, got: usize) -> Option<u64> {
    (got == page.limit as usize).then(|| page.offset + got as u64)
}

async fn get_incident(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<IncidentDetail>, ApiError> {
    check_api_token(&st, &headers)?;
    let id = parse_id(&raw)?;
    let p: DetailParams = query(q.as_deref())?;
    let alerts_page = page("alerts_limit", None, p.alerts_limit, 100)?;
    let timeline_page = page("timeline_limit", None, p.timeline_limit, 500)?;
    let incident = st
        .store
        .get_incident(id)
        .await?
        .ok_or(ApiError::NotFound(id))?;
    let mut timeline = st.store.timeline(id, timeline_page).await?;
    let failed_changes = with_change_failures(&st.kpi.book(), &incident, &mut timeline);
    let alerts: Vec<AlertView> = st
        .store
        .incident_alerts(id, alerts_page)
        .await?
        .into_iter()
        .map(AlertView::from)
        .collect();
    let alerts_next = next(alerts_page, alerts.len());
    let timeline_next = next(timeline_page, timeline.len());
    let sla = crate::slo::sla::incident_sla(
        &shared_cmdb(&st),
        &incident,
        st.clock.now(),
        &st.sla_pause_on,
    );
    Ok(Json(IncidentDetail {
        incident,
        sla,
        failed_changes,
        timeline,
        alerts,
        alerts_next,
        timeline_next,
    }))
}

/// Put on `timeline` (in time order) an entry for each change the
/// incident counts against, and return the changes' ids: derived from the
/// KPI book, so they follow the change calendar and the root as they move.
pub(crate) fn with_change_failures(
    book: &crate::kpi::KpiBook,
    incident: &Incident,
    timeline: &mut Vec<TimelineEntry>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for v in book.failed_changes(incident.id) {
        ids.push(v.change.id.clone());
        let e = v.incident_entry(incident.opened_at);
        let at = timeline.partition_point(|x| x.at <= e.at);
        timeline.insert(at, e);
    }
    ids
}

/// What the paged incident listings share: the token, the id and the page.
fn paged_request(
    st: &Shared,
    headers: &HeaderMap,
    raw: &str,
    q: Option<&str>,
) -> Result<(IncidentId, Page), ApiError> {
    check_api_token(st, headers)?;
    let id = parse_id(raw)?;
    let p: PageParams = query(q)?;
    Ok((id, page("limit", p.offset, p.limit, 500)?))
}

/// An empty page is a 404 when the incident itself does not exist. Asked
/// only then: loading the incident costs as much as a page of a large one.
async fn found_or_empty(st: &Shared, id: IncidentId, empty: bool) -> Result<(), ApiError> {
    if empty && st.store.get_incident(id).await?.is_none() {
        return Err(ApiError::NotFound(id));
    }
    Ok(())
}

/// `GET /api/v1/incidents/{id}/alerts?offset=&limit=`: an incident's
/// alerts page by page (the detail carries the first page only).
async fn incident_alerts(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, page) = paged_request(&st, &headers, &raw, q.as_deref())?;
    let alerts: Vec<AlertView> = st
        .store
        .incident_alerts(id, page)
        .await?
        .into_iter()
        .map(AlertView::from)
        .collect();
    found_or_empty(&st, id, alerts.is_empty()).await?;
    let next = next(page, alerts.len());
    Ok(Json(json!({ "alerts": alerts, "next_offset": next })))
}

/// `GET /api/v1/incidents/{id}/timeline?offset=&limit=`.
async fn incident_timeline(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, page) = paged_request(&st, &headers, &raw, q.as_deref())?;
    let timeline = st.store.timeline(id, page).await?;
    found_or_empty(&st, id, timeline.is_empty()).await?;
    let next = next(page, timeline.len());
    Ok(Json(json!({ "timeline": timeline, "next_offset": next })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    by: Option<String>,
    reason: Option<String>,
}

/// Who acts (`by`, default `api`) and, for a hold, why (`reason`,
/// required then and refused otherwise).
fn action_body(
    body: &Bytes,
    op: Operation,
    max_text: usize,
) -> Result<(String, Option<String>), ApiError> {
    let invalid =
        |field: &str, msg: String| ApiError::Invalid(NormalizeError::field(field, None, msg));
    let b: ActionBody = if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null"
    {
        ActionBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            invalid(
                "body",
                format!("expected {{\"by\": \"name\"}} (and \"reason\" for a hold): {e}"),
            )
        })?
    };
    if let Some(by) = &b.by {
        check_text("by", by, max_text)?;
    }
    let by =
        b.by.filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "api".into());
    match (op, b.reason) {
        (Operation::Hold, None) => Err(invalid(
            "reason",
            "required: why the incident waits (e.g. awaiting_vendor)".into(),
        )),
        (Operation::Hold, Some(r)) => {
            crate::domain::check_hold_reason(&r).map_err(|m| invalid("reason", m))?;
            Ok((by, Some(r)))
        }
        (_, Some(_)) => Err(invalid("reason", "only a hold takes a reason".into())),
        (_, None) => Ok((by, None)),
    }
}

/// A free-text field of an action: bounded, and without control
/// characters (it is shown in tickets, pages and terminals).
fn check_text(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::Invalid(NormalizeError::field(field, None, m));
    if v.len() > max {
        return Err(bad(format!(
            "{} bytes; at most {max} (limits.max_text_bytes)",
            v.len()
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(bad("must not contain control characters".into()));
    }
    Ok(())
}

/// Shared by ack, resolve, hold and resume: 404 for an unknown id, 409 for
/// one that is not active (or already acknowledged, already on hold, not
/// on hold). In Kafka mode an incident that another instance owns is
/// forwarded to it: 200 once the store shows the effect, else 202.
/// `POST /api/v1/incidents/{id}/<op>`.
fn action(op: Operation) -> MethodRouter<Shared> {
    post(
        move |State(st): State<Shared>, headers: HeaderMap, Path(raw): Path<String>, body: Body| async move {
            incident_action(&st, &headers, &raw, body, op).await
        },
    )
}

async fn incident_action(
    st: &AppState,
    headers: &HeaderMap,
    raw: &str,
    body: Body,
    op: Operation,
) -> Result<Response, ApiError> {
    let actor = authorize(st, headers, Need::Operate)?;
    let id = parse_id(raw)?;
    let (who, reason) = action_body(&body.bytes()?, op, st.max_text_bytes)?;
    // With tokens, who acted is the token's name, not what the body says.
    let actor = actor.unwrap_or(who);
    let outcome = st
        .actions
        .act(Action {
            id,
            actor,
            op,
            reason,
        })
        .await?;
    Ok(match outcome {
        // With its SLA timers, as `GET /api/v1/incidents/{id}` shows them:
        // whoever acted sees at once what the action did to the clocks.
        Outcome::Applied(incident)
        | Outcome::Forwarded {
            applied: Some(incident),
            ..
        } => Json(IncidentItem {
            sla: crate::slo::sla::incident_sla(
                &shared_cmdb(st),
                &incident,
                st.clock.now(),
                &st.sla_pause_on,
            ),
            incident,
        })
        .into_response(),
        Outcome::Forwarded {
            shard,
            applied: None,
        } => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id.0, "status": "forwarded", "shard": shard })),
        )
            .into_response(),
        Outcome::Unchanged(e) => return Err(ApiError::Pipeline(e.into())),
    })
}

/// Two-way sync: ServiceNow or Jira tells that a ticket of an incident
/// was resolved (or taken in progress) there; the incident follows. A
/// repeat, or an incident already in that state, changes nothing and is
/// answered 200 (`"action": "none"`) so the tool does not retry.
async fn inbound_webhook(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path(destination): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    use crate::outbound::inbound;
    let body = body.bytes()?;
    // Authenticated before routed: whoever has no destination's token or
    // secret learns nothing about which destination names exist.
    let signature = headers
        .get(inbound::HUB_SIGNATURE)
        .and_then(|v| v.to_str().ok());
    let got = bearer(&headers).unwrap_or_default().as_bytes();
    let mut holder: Option<&InboundDestination> = None;
    for d in &st.inbound {
        let by_token = d
            .token
            .as_ref()
            .is_some_and(|t| bool::from(subtle::ConstantTimeEq::ct_eq(got, t.as_slice())));
        let by_signature = match (&d.signing_secret, signature) {
            (Some(s), Some(sig)) => inbound::hub_signature_matches(s, &body, sig),
            _ => false,
        };
        if by_token || by_signature {
            holder = Some(d);
        }
    }
    let Some(holder) = holder else {
        return Err(ApiError::Unauthorized);
    };
    let Some(d) = st.inbound.iter().find(|d| d.name == destination) else {
        return Err(ApiError::UnknownDestination(destination));
    };
    if holder.name != d.name {
        // One destination's token does not speak for another.
        return Err(ApiError::Unauthorized);
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Invalid(NormalizeError::field(
            "body",
            None,
            format!("not valid JSON: {e}"),
        ))
    })?;
    let parsed = match d.kind {
        "jira" => inbound::jira(&v),
        "freshservice" => inbound::freshservice(&v),
        "servicedeskplus" => inbound::servicedeskplus(&v),
        "servicenow" => inbound::servicenow(&v),
        other => {
            return Err(ApiError::Invalid(NormalizeError::field(
                "destination",
                None,
                format!("{other} destinations send no webhooks"),
            )));
        }
    };
    let update =
        parsed.map_err(|e| ApiError::Invalid(NormalizeError::field(e.field, None, e.message)))?;
    let id = update.incident;
    let (op, done) = match update.action {
        inbound::Action::Acknowledge => (Operation::Acknowledge, "acknowledged"),
        inbound::Action::Resolve => (Operation::Resolve, "resolved"),
        inbound::Action::None => {
            return Ok(Json(json!({ "incident": id.0, "action": "none" })).into_response());
        }
    };
    let outcome = st
        .actions
        .act(Action {
            id,
            actor: update.actor,
            op,
            reason: None,
        })
        .await?;
    let (status, answer) = match outcome {
        Outcome::Unchanged(e) => {
            let reason = actions::unchanged_reason(&e);
            return Ok(
                Json(json!({ "incident": id.0, "action": "none", "reason": reason }))
                    .into_response(),
            );
        }
        Outcome::Applied(inc) => (
            StatusCode::OK,
            json!({ "incident": id.0, "action": done, "state": inc.state.as_str() }),
        ),
        Outcome::Forwarded { shard, applied } => (
            if applied.is_some() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            },
            json!({
                "incident": id.0,
                "action": done,
                "forwarded": true,
                "shard": shard,
                "applied": applied.is_some(),
            }),
        ),
    };
    st.metrics
        .outbound
        .inbound
        .with_label_values(&[destination.as_str(), "webhook", done])
        .inc();
    Ok((status, Json(answer)).into_response())
}

async fn readyz(State(st): State<Shared>) -> Response {
    let store_ok = st.store.ping().await.is_ok() && st.engine.store_healthy();
    let kafka_ok = st.kafka.as_ref().is_none_or(|k| k.healthy());
    let publish_ok = match &st.ingress {
        Ingress::Publish(p) => {
            let p = p.clone();
            tokio::task::spawn_blocking(move || p.check(Duration::from_secs(2)))
                .await
                .unwrap_or(false)
        }
        _ => true,
    };
    let stopping = st.stop_asked.is_cancelled();
    let ready = store_ok && kafka_ok && publish_ok && !stopping;
    let word = |ok: bool| if ok { "ok" } else { "failing" };
    let mut body = json!({ "ready": ready, "store": word(store_ok) });
    if st.kafka.is_some() {
        body["kafka"] = json!(word(kafka_ok && publish_ok));
    }
    if stopping {
        body["stopping"] = json!(true);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// A scrape computes the SLO figures at this instant and encodes every
/// series: milliseconds of CPU with a large catalog, so off the runtime.
async fn metrics(State(st): State<Shared>) -> Response {
    let now = st.clock.now();
    let text = tokio::task::spawn_blocking(move || {
        st.slo.export(now);
        st.metrics.render()
    })
    .await;
    match text {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn post_changes(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    authorize(&st, &headers, Need::Operate)?;
    let body = body.bytes()?;
    let cmdb = match st.cmdb.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let max = st.max_changes;
    let changes = tokio::task::spawn_blocking(move || {
        let changes = crate::change::parse_changes(&body)?;
        if changes.len() > max {
            return Err(vec![crate::change::ChangeError::body(format!(
                "{} change records; at most {max} per request (limits.max_changes_per_request)",
                changes.len(),
            ))]);
        }
        // A change on a CI no alert can bind to never applies: refused,
        // naming each record, rather than accepted and silently useless.
        let unknown = crate::change::unknown_cis(&changes, |ci| cmdb.ci_by_id(ci).is_some());
        if unknown.is_empty() {
            Ok(changes)
        } else {
            Err(unknown)
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::Changes)?;
    let _one_at_a_time = st.changes_lock.lock().await;
    // Durable first, in small transactions that let ingest's commits in
    // between; then the next calendar, built off the engine task and put
    // in force at once: the engine never stalls on a bulk import.
    st.store.upsert_changes(&changes, CHANGE_CHUNK).await?;
    let ids: Vec<String> = changes.iter().map(|c| c.id.clone()).collect();
    let current = st.engine.change_book().await?;
    let next = tokio::task::spawn_blocking(move || {
        let mut book = (*current).clone();
        book.upsert_many(changes);
        Arc::new(book)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    st.engine.set_change_book(next).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "status": "success", "accepted": ids })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectedParams {
    limit: Option<usize>,
}

/// The alerts rejected alone (newest first), and how many since start.
async fn list_rejected(
    State(st): State<Shared>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_api_token(&st, &headers)?;
    let p: RejectedParams = query(raw.as_deref())?;
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::Query {
            field: "limit",
            message: "must be 1..=10000".into(),
        });
    }
    let (items, total) = st.quarantine.list(limit);
    Ok(Json(json!({ "rejected": items, "total": total })))
}

/// A change record with its outcome from the KPI book; `outcome` is
/// absent for a record posted since the book's last refresh.
#[derive(Serialize)]
pub struct ChangeView {
    #[serde(flatten)]
    pub change: crate::change::ChangeRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::kpi::ChangeOutcome>,
    pub failed_by: Vec<crate::kpi::FailedBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<crate::domain::Timestamp>,
    pub services: Vec<String>,
}

/// The change records as stored, each with what the KPI book says of it.
pub fn change_views(
    changes: Vec<crate::change::ChangeRecord>,
    book: &crate::kpi::KpiBook,
) -> Vec<ChangeView> {
    let known: rustc_hash::FxHashMap<&str, &crate::kpi::ChangeVerdict> = book
        .changes
        .iter()
        .map(|v| (v.change.id.as_str(), v))
        .collect();
    changes
        .into_iter()
        .map(|c| {
            // The book's verdict only while it is about this very record
            // (an update since the refresh may have moved its window).
            let v = known.get(c.id.as_str()).filter(|v| v.change == c);
            ChangeView {
                outcome: v.map(|v| v.outcome),
                failed_by: v.map(|v| v.failed_by.clone()).unwrap_or_default(),
                decided_at: v.and_then(|v| v.decided_at),
                services: v.map(|v| v.services.clone()).unwrap_or_default(),
                change: c,
            }
        })
        .collect()
}

async fn list_changes(
    State(st): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_api_token(&st, &headers)?;
    let changes = st.store.list_changes().await?;
    let book = st.kpi.book();
    Ok(Json(json!({
        "changes": change_views(changes, &book),
        "as_of": book.as_of,
    })))
}

/// `GET /api/v1/changes/{id}`: one change with its outcome and timeline.
async fn get_change(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_api_token(&st, &headers)?;
    let found: Vec<_> = st
        .store
        .list_changes()
        .await?
        .into_iter()
        .filter(|c| c.id == id)
        .collect();
    let book = st.kpi.book();
    let Some(view) = change_views(found, &book).pop() else {
        return Err(ApiError::ChangeNotFound(id));
    };
    let timeline = book
        .changes
        .iter()
        .find(|v| v.change == view.change)
        .map(|v| v.timeline(st.kpi_failure_window, book.as_of))
        .unwrap_or_default();
    let mut body = serde_json::to_value(&view).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["timeline"] = json!(timeline);
    body["as_of"] = json!(book.as_of);
    Ok(Json(body))
}

async fn list_problems(
    State(st): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_api_token(&st, &headers)?;
    let problems = st.store.list_problems().await?;
    Ok(Json(json!({ "problems": problems })))
}

/// A CI with its neighbourhood: what it depends on, what depends on it, and
/// the business services its failure would hurt.
async fn get_ci(
    State(st): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_api_token(&st, &headers)?;
    let cmdb = shared_cmdb(&st);
    let idx = cmdb
        .ci_by_id(&id)
        .ok_or_else(|| ApiError::CiNotFound(id.clone()))?;
    let ci = cmdb.ci(idx);
    let ids =
        |v: &[crate::cmdb::CiIdx]| v.iter().map(|c| cmdb.ci(*c).id.clone()).collect::<Vec<_>>();
    Ok(Json(json!({
        "id": ci.id,
        "name": ci.name,
        "class": ci.class,
        "service": ci.service.map(|s| cmdb.service(s).id.clone()),
        "owner": ci.owner,
        "hostnames": ci.hostnames,
        "match": ci.match_labels.iter().cloned().collect::<std::collections::BTreeMap<String, String>>(),
        "runbook": ci.runbook,
        "depends_on": ids(cmdb.depends_on(idx)),
        "dependents": ids(cmdb.dependents(idx)),
        "upstream": ids(&cmdb.upstream(idx)),
        "impacted_services": cmdb.impacted_services(idx),
    })))
}
