//! Configuration: TOML file + `INCIDENTD_*` environment overrides, parsed into
//! serde structs that reject unknown keys, then validated without I/O into
//! [`Config`], reporting every problem at once.

pub mod net;
pub mod outbound;

use crate::dedup::FlapPolicy;
use crate::domain::{Level, Priority, PriorityMatrix, parse_duration};
use crate::incident::EngineConfig;
pub use crate::ingest::settings::{
    KafkaConfig, KafkaTopic, MAX_SHARDS, MAX_TOPICS, PARTITIONS_PER_TOPIC, TopicFormat,
};
pub use crate::net::settings::{Secret, ServiceNowAuth};
pub use crate::slo::SloConfig;
use crate::store::Synchronous;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Load { file: String, message: String },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
}

/// One invalid setting, named by its dotted path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub rules_dir: Option<PathBuf>,
    pub rules_reload_interval: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub http: RawHttp,
    pub sources: RawSources,
    pub api: RawApi,
    pub store: RawStore,
    pub incident: RawIncident,
    pub correlation: RawCorrelation,
    pub changes: RawChanges,
    pub problems: RawProblems,
    pub slo: RawSlo,
    pub kpi: RawKpi,
    pub sla: RawSla,
    pub outbound: outbound::RawOutbound,
    pub cmdb: RawCmdb,
    pub kafka: Option<RawKafka>,
    pub limits: RawLimits,
    pub ui: RawUi,
}

/// `[ui]`: the web incident board served at `/`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawUi {
    pub enabled: Option<bool>,
    /// A header set by a trusted authenticating reverse proxy (oauth2-proxy:
    /// `X-Forwarded-User`) naming the signed-in user.
    pub trusted_proxy_header: Option<String>,
    /// What users signed in by the proxy may do: `read` or `operator`.
    pub proxy_access: Option<String>,
    /// Where users reach the board (`https://incidentd.example.com`): the
    /// details links of Slack, ServiceNow, Jira, PagerDuty and Opsgenie.
    pub public_url: Option<String>,
}

/// `[limits]`: what one alert, one request and the daemon's memory may
/// hold. Every limit is counted when it refuses something.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_labels: Option<u64>,
    pub max_label_name_bytes: Option<u64>,
    pub max_label_value_bytes: Option<u64>,
    pub max_annotation_bytes: Option<u64>,
    pub max_alerts_per_request: Option<u64>,
    /// `by` and `reason` of incident actions.
    pub max_text_bytes: Option<u64>,
    pub max_active_alerts: Option<u64>,
    pub max_active_incidents: Option<u64>,
    pub max_clock_skew: Option<String>,
    pub max_alert_age: Option<String>,
    /// Rejected alerts kept for `GET /api/v1/alerts/rejected`.
    pub quarantine_size: Option<u64>,
    /// Change records one `POST /api/v1/changes` may carry.
    pub max_changes_per_request: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawKafka {
    pub brokers: Option<String>,
    pub group_id: Option<String>,
    pub topics: Vec<RawKafkaTopic>,
    pub ingest_topic: Option<String>,
    pub dead_letter_topic: Option<String>,
    pub max_batch: Option<u32>,
    pub batch_wait: Option<String>,
    pub produce_timeout: Option<String>,
    /// Extra librdkafka properties, passed through as they are.
    pub librdkafka: std::collections::BTreeMap<String, String>,
    /// librdkafka properties whose values are read from files at start
    /// (`"sasl.password" = "/run/secrets/kafka-password"`): credentials
    /// stay out of the config file.
    pub librdkafka_secret_files: std::collections::BTreeMap<String, PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaTopic {
    pub name: String,
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawCorrelation {
    pub window: Option<String>,
    pub infer_min_dependents: Option<usize>,
    pub infer_min_share: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawChanges {
    pub grace: Option<String>,
    pub refresh: Option<String>,
    pub failure_window: Option<String>,
}

/// `[kpi]`: the service-management figures (README "ITSM KPIs").
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawKpi {
    pub refresh: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawProblems {
    pub threshold: Option<u32>,
    pub period: Option<String>,
    pub similar_limit: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawSlo {
    pub priorities: Option<Vec<String>>,
    pub refresh: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawSla {
    pub pause_on: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawCmdb {
    pub file: Option<PathBuf>,
    pub reload_interval: Option<String>,
    pub servicenow: Option<RawServiceNow>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawServiceNow {
    pub url: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub interval: Option<String>,
    pub page_size: Option<u32>,
    pub ci_query: Option<String>,
    pub timeout: Option<String>,
    /// TLS and proxy, as for outbound destinations (the proxy defaults to
    /// `[outbound] proxy`). Listed again rather than shared: serde's
    /// `flatten` cannot be combined with `deny_unknown_fields`; both lists
    /// are validated by the same functions in `config::net`.
    pub ca_file: Option<PathBuf>,
    pub system_roots: Option<bool>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub proxy: Option<String>,
    pub proxy_user: Option<String>,
    pub proxy_password: Option<String>,
    pub proxy_password_file: Option<PathBuf>,
    pub no_proxy: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub max_body_bytes: Option<u64>,
    pub request_timeout: Option<String>,
    pub queue_capacity: Option<u64>,
    /// Open connections at most (default 1024, lowered to fit the process's
    /// file-descriptor limit).
    pub max_connections: Option<u64>,
    /// Longest wait for a complete request head (and TLS handshake).
    pub header_read_timeout: Option<String>,
    /// Longest a kept-alive connection may sit idle between requests.
    pub idle_timeout: Option<String>,
    /// How long a stop keeps serving with `/readyz` answering 503, for
    /// load balancers to take the instance out first.
    pub shutdown_delay: Option<String>,
    /// HTTPS for the listener: certificate chain and key (PEM), reloaded
    /// on SIGHUP; with `tls_client_ca_file`, clients must present a
    /// certificate signed by one of its CAs.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawSources {
    pub alertmanager: RawSource,
    pub api: RawSource,
    pub pagerduty: RawSource,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawSource {
    /// Bearer token senders must present. Prefer `token_file`.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Requests per second accepted from this source (0 or unset = no limit).
    pub rate_limit: Option<u32>,
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    /// One operator token, named `api` (kept for existing configs).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Named tokens that may read incidents, problems, changes and CIs:
    /// name → file holding the token.
    pub read_tokens: std::collections::BTreeMap<String, PathBuf>,
    /// Named tokens that may also act (ack, resolve, hold, resume, post
    /// changes); the name is recorded as who acted.
    pub operator_tokens: std::collections::BTreeMap<String, PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub url: Option<String>,
    /// The PostgreSQL password, read from this file at start (instead of
    /// putting it in the URL).
    pub password_file: Option<PathBuf>,
    pub max_connections: Option<u32>,
    pub sqlite_synchronous: Option<String>,
    pub flush_interval: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawIncident {
    pub auto_resolve_hold: Option<String>,
    pub reopen_window: Option<String>,
    pub flap_changes: Option<u32>,
    pub flap_window: Option<String>,
    pub alert_retention: Option<String>,
    pub alert_timeout: Option<String>,
    pub default_impact: Option<u8>,
    pub priority_matrix: Option<Vec<Vec<String>>>,
}

/// A named token of the incident API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub secret: Secret,
    /// Operators act on incidents and post changes; readers only read.
    pub operator: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub token: Option<Secret>,
    pub rate_limit: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// ServiceNow-style CMDB REST source (`cmdb_ci`, `cmdb_rel_ci` tables).
#[derive(Debug, Clone)]
pub struct ServiceNowConfig {
    pub url: String,
    pub auth: ServiceNowAuth,
    pub interval: Duration,
    pub page_size: u32,
    pub ci_query: Option<String>,
    pub timeout: Duration,
    pub net: net::ClientNet,
}

/// Where the incident record lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// `incidentd.db` under the data dir.
    Sqlite,
    /// A PostgreSQL URL (`postgres://user@host:port/db`, libpq's `sslmode`,
    /// `sslrootcert`, `sslcert`, `sslkey` parameters), and the password
    /// from a file when it is not in the URL.
    Postgres {
        url: String,
        max_connections: u32,
        password: Option<Secret>,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// HTTPS on the listener (plain HTTP without it).
    pub listen_tls: Option<crate::net::ServerTls>,
    pub data_dir: PathBuf,
    pub rules_dir: PathBuf,
    /// The CMDB file; `None` runs without one.
    pub cmdb: Option<PathBuf>,
    /// True when the path was given (a missing file is then an error); the
    /// default `deploy/cmdb.yaml` may be absent.
    pub cmdb_required: bool,
    /// How often the CMDB file is checked for a change; zero: only on
    /// SIGHUP.
    pub cmdb_reload_interval: Duration,
    /// How often the rule directory is checked for a change (a file
    /// written, added, removed, or a Kubernetes ConfigMap update swapping
    /// its `..data` link); zero: only on SIGHUP.
    pub rules_reload_interval: Duration,
    pub servicenow: Option<ServiceNowConfig>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Connection rules of the listener (`max_connections` as configured:
    /// the file-descriptor limit is applied at start).
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// After SIGTERM/Ctrl-C, how long everything is still served with
    /// `/readyz` answering 503 (load balancers and Kubernetes endpoints
    /// take the instance out meanwhile) before the listener closes; zero:
    /// it closes at once.
    pub shutdown_delay: Duration,
    pub queue_capacity: usize,
    pub alertmanager: SourceConfig,
    pub api_source: SourceConfig,
    pub pagerduty: SourceConfig,
    /// Tokens of the incident API: (name, secret, may act). Empty: the
    /// API is open to whoever reaches the port.
    pub api_tokens: Vec<ApiToken>,
    pub sqlite_synchronous: Synchronous,
    pub store: StoreBackend,
    pub kafka: Option<KafkaConfig>,
    /// With Kafka: how often change records written by other instances are
    /// read back into this instance's engines.
    pub changes_refresh: Duration,
    pub flush_interval: Duration,
    pub engine: EngineConfig,
    pub slo: SloConfig,
    pub kpi: crate::kpi::KpiConfig,
    /// Destinations incidents are pushed to (their routes are also in
    /// `engine.outbound`, which writes the outbox).
    pub outbound: Vec<outbound::DestinationConfig>,
    /// Finished outbox messages older than this are deleted.
    pub outbound_retention: Duration,
    pub limits: Limits,
    pub ui: UiConfig,
}

/// `[ui]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct UiConfig {
    pub enabled: bool,
    /// Lower-case header name.
    pub trusted_proxy_header: Option<String>,
    pub proxy_operator: bool,
    /// Without a trailing slash.
    pub public_url: Option<String>,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            trusted_proxy_header: None,
            proxy_operator: false,
            public_url: None,
        }
    }
}

impl UiConfig {
    /// The board's page of incident `id`, when the public URL is known.
    pub fn incident_url(&self, id: i64) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|u| format!("{u}/incidents/{id}"))
    }
}

fn ui(errs: &mut Vec<FieldError>, raw: &RawUi) -> UiConfig {
    let mut err = |field: &str, message: String| {
        errs.push(FieldError {
            field: format!("ui.{field}"),
            message,
        })
    };
    let trusted_proxy_header = raw.trusted_proxy_header.as_ref().and_then(|h| {
        let ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Some(h.to_ascii_lowercase())
        } else {
            err(
                "trusted_proxy_header",
                format!("{h:?} is not a header name (e.g. X-Forwarded-User)"),
            );
            None
        }
    });
    let proxy_operator = match raw.proxy_access.as_deref() {
        None | Some("read") => false,
        Some("operator") => true,
        Some(other) => {
            err(
                "proxy_access",
                format!("must be \"read\" or \"operator\", got {other:?}"),
            );
            false
        }
    };
    if raw.proxy_access.is_some() && trusted_proxy_header.is_none() {
        err(
            "proxy_access",
            "needs ui.trusted_proxy_header (whom the proxy signed in)".into(),
        );
    }
    let public_url = raw.public_url.as_ref().and_then(|u| {
        let t = u.trim_end_matches('/');
        if (t.starts_with("https://") || t.starts_with("http://")) && t.len() > 8 {
            Some(t.to_string())
        } else {
            err(
                "public_url",
                format!("{u:?} must be an http:// or https:// URL"),
            );
            None
        }
    });
    UiConfig {
        enabled: raw.enabled.unwrap_or(true),
        trusted_proxy_header,
        proxy_operator,
        public_url,
    }
}

/// `[limits]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub alert: crate::normalize::AlertLimits,
    pub bounds: crate::normalize::TimeBounds,
    pub max_text_bytes: usize,
    pub max_active_alerts: usize,
    pub max_active_incidents: usize,
    pub quarantine_size: usize,
    pub max_changes_per_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            alert: crate::normalize::AlertLimits::default(),
            bounds: crate::normalize::TimeBounds::default(),
            max_text_bytes: 256,
            max_active_alerts: 500_000,
            max_active_incidents: 50_000,
            quarantine_size: 1_000,
            max_changes_per_request: 100_000,
        }
    }
}

fn limits(errs: &mut Vec<FieldError>, raw: &RawLimits) -> Limits {
    let d = Limits::default();
    let mut count = |field: &str, v: Option<u64>, default: usize, min: u64| -> usize {
        match v {
            None => default,
            Some(n) if n < min => {
                errs.push(FieldError {
                    field: format!("limits.{field}"),
                    message: format!("must be at least {min}"),
                });
                default
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        }
    };
    let alert = crate::normalize::AlertLimits {
        max_labels: count("max_labels", raw.max_labels, d.alert.max_labels, 1),
        max_label_name_bytes: count(
            "max_label_name_bytes",
            raw.max_label_name_bytes,
            d.alert.max_label_name_bytes,
            16,
        ),
        max_label_value_bytes: count(
            "max_label_value_bytes",
            raw.max_label_value_bytes,
            d.alert.max_label_value_bytes,
            64,
        ),
        max_annotation_bytes: count(
            "max_annotation_bytes",
            raw.max_annotation_bytes,
            d.alert.max_annotation_bytes,
            256,
        ),
        max_alerts: count(
            "max_alerts_per_request",
            raw.max_alerts_per_request,
            d.alert.max_alerts,
            1,
        ),
    };
    let max_text_bytes = count("max_text_bytes", raw.max_text_bytes, d.max_text_bytes, 16);
    let max_active_alerts = count(
        "max_active_alerts",
        raw.max_active_alerts,
        d.max_active_alerts,
        100,
    );
    let max_active_incidents = count(
        "max_active_incidents",
        raw.max_active_incidents,
        d.max_active_incidents,
        10,
    );
    let quarantine_size = count("quarantine_size", raw.quarantine_size, d.quarantine_size, 0);
    let max_changes_per_request = count(
        "max_changes_per_request",
        raw.max_changes_per_request,
        d.max_changes_per_request,
        1,
    );
    let bounds = crate::normalize::TimeBounds {
        max_clock_skew: duration(
            errs,
            "limits.max_clock_skew",
            &raw.max_clock_skew,
            d.bounds.max_clock_skew,
        ),
        max_alert_age: duration(
            errs,
            "limits.max_alert_age",
            &raw.max_alert_age,
            d.bounds.max_alert_age,
        ),
    };
    Limits {
        alert,
        bounds,
        max_text_bytes,
        max_active_alerts,
        max_active_incidents,
        quarantine_size,
        max_changes_per_request,
    }
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub rules_dir: Option<PathBuf>,
    pub cmdb: Option<PathBuf>,
    /// `--store`: `sqlite` or a PostgreSQL URL.
    pub store: Option<String>,
}

/// Read the file (if any) and `INCIDENTD_CONFIG__*` variables (e.g.
/// `INCIDENTD_CONFIG__INCIDENT__REOPEN_WINDOW=2h`), then validate. The
/// distinct prefix keeps unrelated `INCIDENTD_*` variables (the test suite's)
/// from tripping the unknown-key check.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut b = config::Config::builder();
    if let Some(f) = file {
        b = b.add_source(
            config::File::from(f)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    b = b.add_source(
        config::Environment::with_prefix("INCIDENTD_CONFIG")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true),
    );
    let name = file.map_or_else(|| "environment".to_string(), |f| f.display().to_string());
    let raw: RawConfig =
        b.build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load {
                file: name,
                message: e.to_string(),
            })?;
    validate(raw, overrides).map_err(ConfigError::Invalid)
}

/// `correlation.infer_*`: 0 or 1 dependents turns inference off; the share
/// is a fraction of the candidate's direct dependents.
fn infer_settings(
    errs: &mut Vec<FieldError>,
    raw: &RawCorrelation,
) -> crate::correlate::topology::InferSettings {
    let d = crate::correlate::topology::InferSettings::default();
    let min_share = match raw.infer_min_share {
        Some(v) if !(0.0..=1.0).contains(&v) || v.is_nan() => {
            errs.push(FieldError {
                field: "correlation.infer_min_share".into(),
                message: format!("{v} is not a share between 0 and 1"),
            });
            d.min_share
        }
        Some(v) => v,
        None => d.min_share,
    };
    crate::correlate::topology::InferSettings {
        min_dependents: raw.infer_min_dependents.unwrap_or(d.min_dependents),
        min_share,
    }
}

fn duration(
    errs: &mut Vec<FieldError>,
    field: &str,
    v: &Option<String>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => parse_duration(s).unwrap_or_else(|m| {
            errs.push(FieldError {
                field: field.into(),
                message: m,
            });
            default
        }),
    }
}

fn source(errs: &mut Vec<FieldError>, name: &str, s: &RawSource) -> SourceConfig {
    let token = match (&s.token, &s.token_file) {
        (Some(_), Some(_)) => {
            errs.push(FieldError {
                field: format!("sources.{name}"),
                message: "set token or token_file, not both".into(),
            });
            None
        }
        (Some(t), None) if t.is_empty() => {
            errs.push(FieldError {
                field: format!("sources.{name}.token"),
                message: "must not be empty".into(),
            });
            None
        }
        (Some(t), None) => Some(Secret::Inline(t.clone())),
        (None, Some(f)) => Some(Secret::File(f.clone())),
        (None, None) => None,
    };
    let rate_limit = match s.rate_limit {
        None | Some(0) => None,
        Some(r) => Some((r, s.burst.unwrap_or(r).max(1))),
    };
    SourceConfig { token, rate_limit }
}

pub fn validate(raw: RawConfig, o: &Overrides) -> Result<Config, Vec<FieldError>> {
    let mut errs = Vec::new();
    let listen_s = o
        .listen
        .clone()
        .or(raw.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:9797".into());
    let listen = listen_s.parse::<SocketAddr>().unwrap_or_else(|e| {
        errs.push(FieldError {
            field: "listen".into(),
            message: format!("{listen_s:?} is not an address:port ({e})"),
        });
        SocketAddr::from(([127, 0, 0, 1], 9797))
    });
    let log_format = match raw.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errs.push(FieldError {
                field: "log_format".into(),
                message: format!("must be \"text\" or \"json\", got {other:?}"),
            });
            LogFormat::Text
        }
    };
    let max_body_bytes = raw.http.max_body_bytes.unwrap_or(10 * 1024 * 1024);
    if max_body_bytes < 1024 {
        errs.push(FieldError {
            field: "http.max_body_bytes".into(),
            message: "must be at least 1024".into(),
        });
    }
    let queue_capacity = raw.http.queue_capacity.unwrap_or(1024);
    if queue_capacity == 0 {
        errs.push(FieldError {
            field: "http.queue_capacity".into(),
            message: "must be at least 1".into(),
        });
    }
    let max_connections = raw.http.max_connections.unwrap_or(1024);
    if max_connections < 4 {
        errs.push(FieldError {
            field: "http.max_connections".into(),
            message: "must be at least 4".into(),
        });
    }
    let header_read_timeout = duration(
        &mut errs,
        "http.header_read_timeout",
        &raw.http.header_read_timeout,
        Duration::from_secs(10),
    );
    let idle_timeout = duration(
        &mut errs,
        "http.idle_timeout",
        &raw.http.idle_timeout,
        Duration::from_secs(120),
    );
    for (field, d) in [
        ("http.header_read_timeout", header_read_timeout),
        ("http.idle_timeout", idle_timeout),
    ] {
        if d < Duration::from_millis(100) {
            errs.push(FieldError {
                field: field.into(),
                message: "must be at least 100ms".into(),
            });
        }
    }
    let shutdown_delay = duration(
        &mut errs,
        "http.shutdown_delay",
        &raw.http.shutdown_delay,
        Duration::ZERO,
    );
    let listen_tls = net::server_tls(
        &mut errs,
        raw.http.tls_cert_file.as_ref(),
        raw.http.tls_key_file.as_ref(),
        raw.http.tls_client_ca_file.as_ref(),
    );
    let request_timeout = duration(
        &mut errs,
        "http.request_timeout",
        &raw.http.request_timeout,
        Duration::from_secs(30),
    );
    let sqlite_synchronous = match raw.store.sqlite_synchronous.as_deref() {
        None | Some("full") => Synchronous::Full,
        Some("normal") => Synchronous::Normal,
        Some(other) => {
            errs.push(FieldError {
                field: "store.sqlite_synchronous".into(),
                message: format!("must be \"full\" or \"normal\", got {other:?}"),
            });
            Synchronous::Full
        }
    };
    let store = store_backend(&mut errs, o.store.as_deref(), &raw.store);
    let kafka = raw.kafka.as_ref().and_then(|k| kafka(&mut errs, k));
    let changes_refresh = duration(
        &mut errs,
        "changes.refresh",
        &raw.changes.refresh,
        Duration::from_secs(15),
    );
    if changes_refresh.is_zero() {
        errs.push(FieldError {
            field: "changes.refresh".into(),
            message: "must be positive".into(),
        });
    }
    let flush_interval = duration(
        &mut errs,
        "store.flush_interval",
        &raw.store.flush_interval,
        Duration::from_secs(2),
    );
    if flush_interval.is_zero() {
        errs.push(FieldError {
            field: "store.flush_interval".into(),
            message: "must be positive".into(),
        });
    }
    let d = EngineConfig::default();
    let i = &raw.incident;
    let default_impact = match i.default_impact {
        None => d.default_impact,
        Some(v) => Level::new(v).unwrap_or_else(|| {
            errs.push(FieldError {
                field: "incident.default_impact".into(),
                message: format!("must be 1 (high), 2 (medium) or 3 (low), got {v}"),
            });
            d.default_impact
        }),
    };
    let matrix = match &i.priority_matrix {
        None => d.matrix.clone(),
        Some(rows) => parse_matrix(rows).unwrap_or_else(|m| {
            errs.push(FieldError {
                field: "incident.priority_matrix".into(),
                message: m,
            });
            d.matrix.clone()
        }),
    };
    let slo = slo(&mut errs, &raw.slo);
    let kpi = kpi(&mut errs, &raw);
    let outbound = outbound::destinations(&mut errs, &raw.outbound);
    let outbound_retention = duration(
        &mut errs,
        "outbound.retention",
        &raw.outbound.retention,
        Duration::from_secs(7 * 86_400),
    );
    if outbound_retention < Duration::from_secs(3600) {
        errs.push(FieldError {
            field: "outbound.retention".into(),
            message: "must be at least 1h (finished messages are the delivery record)".into(),
        });
    }
    let threshold = raw.problems.threshold.unwrap_or(3);
    let limits = limits(&mut errs, &raw.limits);
    let engine = EngineConfig {
        max_active_alerts: limits.max_active_alerts,
        max_active_incidents: limits.max_active_incidents,
        outbound: outbound
            .iter()
            .map(|d| crate::domain::outbox::Destination {
                name: d.name.clone(),
                routes: d.routes.clone(),
                settle: d.settle,
            })
            .collect(),
        settle: outbound::global_settle(&mut errs, &raw.outbound),
        count_pages: false,
        correlation_window: duration(
            &mut errs,
            "correlation.window",
            &raw.correlation.window,
            d.correlation_window,
        ),
        infer: infer_settings(&mut errs, &raw.correlation),
        change_grace: duration(
            &mut errs,
            "changes.grace",
            &raw.changes.grace,
            d.change_grace,
        ),
        problems: crate::incident::problems::ProblemPolicy {
            threshold: threshold as usize,
            period: duration(
                &mut errs,
                "problems.period",
                &raw.problems.period,
                d.problems.period,
            ),
        },
        similar_limit: raw
            .problems
            .similar_limit
            .map_or(d.similar_limit, |n| n as usize),
        sla_pause_on: match &raw.sla.pause_on {
            None => d.sla_pause_on.clone(),
            Some(list) => {
                for (i, r) in list.iter().enumerate() {
                    if let Err(m) = crate::domain::check_hold_reason(r) {
                        errs.push(FieldError {
                            field: format!("sla.pause_on[{i}]"),
                            message: m,
                        });
                    }
                }
                list.iter().cloned().collect()
            }
        },
        alert_timeout: duration(
            &mut errs,
            "incident.alert_timeout",
            &i.alert_timeout,
            Duration::ZERO,
        ),
        auto_resolve_hold: duration(
            &mut errs,
            "incident.auto_resolve_hold",
            &i.auto_resolve_hold,
            d.auto_resolve_hold,
        ),
        reopen_window: duration(
            &mut errs,
            "incident.reopen_window",
            &i.reopen_window,
            d.reopen_window,
        ),
        flap: FlapPolicy {
            changes: i.flap_changes.unwrap_or(d.flap.changes),
            window: duration(
                &mut errs,
                "incident.flap_window",
                &i.flap_window,
                d.flap.window,
            ),
        },
        alert_retention: duration(
            &mut errs,
            "incident.alert_retention",
            &i.alert_retention,
            d.alert_retention,
        ),
        matrix,
        default_impact,
    };
    let alertmanager = source(&mut errs, "alertmanager", &raw.sources.alertmanager);
    let api_source = source(&mut errs, "api", &raw.sources.api);
    let pagerduty = source(&mut errs, "pagerduty", &raw.sources.pagerduty);
    let mut api_tokens: Vec<ApiToken> = source(
        &mut errs,
        "api",
        &RawSource {
            token: raw.api.token.clone(),
            token_file: raw.api.token_file.clone(),
            ..RawSource::default()
        },
    )
    .token
    .map(|secret| ApiToken {
        name: "api".into(),
        secret,
        operator: true,
    })
    .into_iter()
    .collect();
    for (table, map, operator) in [
        ("api.read_tokens", &raw.api.read_tokens, false),
        ("api.operator_tokens", &raw.api.operator_tokens, true),
    ] {
        for (name, file) in map {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
            if !ok {
                errs.push(FieldError {
                    field: format!("{table}.{name:?}"),
                    message:
                        "a token name is 1-64 of a-z A-Z 0-9 _ - . @ (it is recorded as who acted)"
                            .into(),
                });
            } else if api_tokens.iter().any(|t| &t.name == name) {
                errs.push(FieldError {
                    field: format!("{table}.{name:?}"),
                    message: "this name is used by another API token".into(),
                });
            } else {
                api_tokens.push(ApiToken {
                    name: name.clone(),
                    secret: Secret::File(file.clone()),
                    operator,
                });
            }
        }
    }
    let cmdb_reload_interval = duration(
        &mut errs,
        "cmdb.reload_interval",
        &raw.cmdb.reload_interval,
        Duration::from_secs(10),
    );
    let rules_reload_interval = duration(
        &mut errs,
        "rules_reload_interval",
        &raw.rules_reload_interval,
        Duration::from_secs(10),
    );
    let servicenow = raw
        .cmdb
        .servicenow
        .as_ref()
        .and_then(|sn| servicenow(&mut errs, sn, &raw.outbound));
    let (cmdb, cmdb_required) = match (o.cmdb.clone(), raw.cmdb.file.clone()) {
        (Some(p), _) | (None, Some(p)) => (Some(p), true),
        (None, None) => (Some(PathBuf::from("deploy/cmdb.yaml")), false),
    };
    let ui = ui(&mut errs, &raw.ui);
    // Every destination links to the incident's page on the board unless
    // it names its own link.
    let mut outbound = outbound;
    if let Some(u) = &ui.public_url {
        for d in &mut outbound {
            if d.incident_url.is_none() {
                d.incident_url = Some(format!("{u}/incidents/{{id}}"));
            }
        }
    }
    let log_level = raw.log_level.clone().unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        errs.push(FieldError {
            field: "log_level".into(),
            message: format!(
                "{log_level:?} is not a valid log filter (e.g. info, incidentd=debug)"
            ),
        });
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Config {
        listen,
        listen_tls,
        data_dir: o
            .data_dir
            .clone()
            .or(raw.data_dir)
            .unwrap_or_else(|| "./data".into()),
        rules_dir: o
            .rules_dir
            .clone()
            .or(raw.rules_dir)
            .unwrap_or_else(|| "./rules".into()),
        cmdb,
        cmdb_required,
        cmdb_reload_interval,
        rules_reload_interval,
        servicenow,
        log_format,
        log_level,
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        request_timeout,
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        header_read_timeout,
        idle_timeout,
        shutdown_delay,
        queue_capacity: usize::try_from(queue_capacity).unwrap_or(1024),
        alertmanager,
        api_source,
        pagerduty,
        api_tokens,
        sqlite_synchronous,
        store,
        kafka,
        changes_refresh,
        flush_interval,
        engine,
        slo,
        kpi,
        outbound,
        outbound_retention,
        limits,
        ui,
    })
}

fn kpi(errs: &mut Vec<FieldError>, raw: &RawConfig) -> crate::kpi::KpiConfig {
    let d = crate::kpi::KpiConfig::default();
    let refresh = duration(errs, "kpi.refresh", &raw.kpi.refresh, d.refresh);
    if refresh.is_zero() {
        errs.push(FieldError {
            field: "kpi.refresh".into(),
            message: "must be positive".into(),
        });
    }
    let failure_window = duration(
        errs,
        "changes.failure_window",
        &raw.changes.failure_window,
        d.failure_window,
    );
    crate::kpi::KpiConfig {
        failure_window,
        refresh,
    }
}

fn slo(errs: &mut Vec<FieldError>, raw: &RawSlo) -> SloConfig {
    let d = SloConfig::default();
    let refresh = duration(errs, "slo.refresh", &raw.refresh, d.refresh);
    if refresh.is_zero() {
        errs.push(FieldError {
            field: "slo.refresh".into(),
            message: "must be positive".into(),
        });
    }
    let priorities = match &raw.priorities {
        None => d.priorities,
        Some(list) => {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                match Priority::parse(p) {
                    Some(p) if !out.contains(&p) => out.push(p),
                    Some(_) => {}
                    None => errs.push(FieldError {
                        field: format!("slo.priorities[{i}]"),
                        message: format!("must be one of P1..P5, got {p:?}"),
                    }),
                }
            }
            if out.is_empty() && list.is_empty() {
                errs.push(FieldError {
                    field: "slo.priorities".into(),
                    message: "must name at least one priority".into(),
                });
            }
            out
        }
    };
    SloConfig {
        priorities,
        refresh,
    }
}

fn store_backend(errs: &mut Vec<FieldError>, cli: Option<&str>, raw: &RawStore) -> StoreBackend {
    let max_connections = raw.max_connections.unwrap_or(8);
    if max_connections == 0 {
        errs.push(FieldError {
            field: "store.max_connections".into(),
            message: "must be at least 1".into(),
        });
    }
    let password = raw.password_file.clone().map(Secret::File);
    match cli.or(raw.url.as_deref()) {
        None | Some("sqlite") => {
            if password.is_some() {
                errs.push(FieldError {
                    field: "store.password_file".into(),
                    message: "only for a postgres:// store.url".into(),
                });
            }
            StoreBackend::Sqlite
        }
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            // The URL's own parser (libpq's parameters: sslmode,
            // sslrootcert, sslcert, sslkey, …), so a typo is reported here
            // rather than at the first connection.
            if let Err(e) = u.parse::<sqlx::postgres::PgConnectOptions>() {
                errs.push(FieldError {
                    field: "store.url".into(),
                    message: crate::net::redact_text(&e.to_string()),
                });
            }
            StoreBackend::Postgres {
                url: u.to_string(),
                max_connections: max_connections.max(1),
                password,
            }
        }
        Some(_) => {
            errs.push(FieldError {
                field: "store.url".into(),
                message: "must be \"sqlite\" or a postgres:// URL".into(),
            });
            StoreBackend::Sqlite
        }
    }
}

fn kafka(errs: &mut Vec<FieldError>, k: &RawKafka) -> Option<KafkaConfig> {
    let mut err = |field: &str, message: String| {
        errs.push(FieldError {
            field: format!("kafka.{field}"),
            message,
        })
    };
    let brokers = match k.brokers.as_deref().map(str::trim) {
        Some(b) if !b.is_empty() => b.to_string(),
        _ => {
            err("brokers", "required: host:port[,host:port…]".into());
            String::new()
        }
    };
    let mut topics = Vec::new();
    if let Some(t) = &k.ingest_topic {
        if t.is_empty() {
            err("ingest_topic", "must not be empty".into());
        }
        topics.push(KafkaTopic {
            name: t.clone(),
            format: TopicFormat::Auto,
        });
    }
    for (i, t) in k.topics.iter().enumerate() {
        let format = match t.format.as_deref() {
            None | Some("auto") => TopicFormat::Auto,
            Some("canonical") => TopicFormat::Canonical,
            Some("alertmanager") => TopicFormat::Alertmanager,
            Some(other) => {
                err(
                    &format!("topics[{i}].format"),
                    format!("must be auto, canonical or alertmanager, got {other:?}"),
                );
                TopicFormat::Auto
            }
        };
        if t.name.is_empty() {
            err(&format!("topics[{i}].name"), "must not be empty".into());
        } else if topics.iter().any(|x: &KafkaTopic| x.name == t.name) {
            err(
                &format!("topics[{i}].name"),
                format!("topic {:?} is listed twice", t.name),
            );
        }
        topics.push(KafkaTopic {
            name: t.name.clone(),
            format,
        });
    }
    if topics.is_empty() {
        err(
            "topics",
            "configure ingest_topic or at least one [[kafka.topics]]".into(),
        );
    }
    if topics.len() > MAX_TOPICS {
        // Each (topic, partition) is a work shard with its own id space.
        err(
            "topics",
            format!("at most {MAX_TOPICS} topics (ingest topic included) per group"),
        );
    }
    let max_batch = k.max_batch.unwrap_or(5_000);
    if max_batch == 0 {
        err("max_batch", "must be at least 1".into());
    }
    let mut dur = |field: &str, v: &Option<String>, d: Duration| match v {
        None => d,
        Some(s) => parse_duration(s).unwrap_or_else(|m| {
            errs.push(FieldError {
                field: format!("kafka.{field}"),
                message: m,
            });
            d
        }),
    };
    let batch_wait = dur("batch_wait", &k.batch_wait, Duration::from_millis(5));
    let produce_timeout = dur(
        "produce_timeout",
        &k.produce_timeout,
        Duration::from_secs(10),
    );
    let mut librdkafka = Vec::new();
    for (key, v) in &k.librdkafka {
        // These are how the at-least-once guarantee is kept; letting a
        // config flip them would silently lose alerts on a crash.
        if matches!(
            key.as_str(),
            "enable.auto.offset.store" | "group.id" | "bootstrap.servers"
        ) {
            errs.push(FieldError {
                field: format!("kafka.librdkafka.{key:?}"),
                message: "is set by incidentd (see kafka.brokers / kafka.group_id)".into(),
            });
        } else {
            librdkafka.push((key.clone(), v.clone()));
        }
    }
    let mut secret_files = Vec::new();
    for (key, path) in &k.librdkafka_secret_files {
        if k.librdkafka.contains_key(key) {
            errs.push(FieldError {
                field: format!("kafka.librdkafka_secret_files.{key:?}"),
                message: "also set in [kafka.librdkafka]: set it in one place".into(),
            });
        } else {
            secret_files.push((key.clone(), path.clone()));
        }
    }
    Some(KafkaConfig {
        brokers,
        group_id: k.group_id.clone().unwrap_or_else(|| "incidentd".into()),
        topics,
        ingest_topic: k.ingest_topic.clone(),
        dead_letter_topic: k.dead_letter_topic.clone().filter(|t| !t.is_empty()),
        max_batch: usize::try_from(max_batch.max(1)).unwrap_or(5_000),
        batch_wait,
        produce_timeout,
        librdkafka,
        secret_files,
    })
}

fn servicenow(
    errs: &mut Vec<FieldError>,
    sn: &RawServiceNow,
    outbound: &outbound::RawOutbound,
) -> Option<ServiceNowConfig> {
    // Validated first: its errors are reported even when others end the
    // validation of this section early.
    let tls = net::client_tls(
        errs,
        "cmdb.servicenow",
        sn.ca_file.as_ref(),
        sn.system_roots,
        sn.client_cert_file.as_ref(),
        sn.client_key_file.as_ref(),
    );
    let mut scratch = Vec::new();
    let inherited = net::proxy(
        &mut scratch,
        "outbound",
        outbound.proxy_fields(),
        &net::ProxyConfig::None,
    );
    let proxy = net::proxy(
        errs,
        "cmdb.servicenow",
        net::RawProxyFields {
            proxy: sn.proxy.as_deref(),
            proxy_user: sn.proxy_user.as_deref(),
            proxy_password: sn.proxy_password.as_deref(),
            proxy_password_file: sn.proxy_password_file.as_ref(),
            no_proxy: sn.no_proxy.as_deref(),
        },
        &inherited,
    );
    let mut err = |field: &str, message: &str| {
        errs.push(FieldError {
            field: format!("cmdb.servicenow.{field}"),
            message: message.into(),
        })
    };
    let url = match sn.url.as_deref() {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            u.trim_end_matches('/').to_string()
        }
        Some(_) => {
            err("url", "must be an http(s) URL");
            return None;
        }
        None => {
            err("url", "required when [cmdb.servicenow] is present");
            return None;
        }
    };
    let secret = |inline: &Option<String>, file: &Option<PathBuf>| match (inline, file) {
        (Some(v), None) => Some(Secret::Inline(v.clone())),
        (None, Some(f)) => Some(Secret::File(f.clone())),
        _ => None,
    };
    let auth = match (
        &sn.user,
        secret(&sn.password, &sn.password_file),
        secret(&sn.token, &sn.token_file),
    ) {
        (Some(user), Some(password), None) => ServiceNowAuth::Basic {
            user: user.clone(),
            password,
        },
        (None, None, Some(token)) => ServiceNowAuth::Bearer(token),
        _ => {
            err(
                "user",
                "set either user with one of password/password_file (basic auth), or one of token/token_file (bearer)",
            );
            return None;
        }
    };
    let parse =
        |v: &Option<String>, default: Duration| v.as_deref().map_or(Ok(default), parse_duration);
    let interval = match parse(&sn.interval, Duration::from_secs(15 * 60)) {
        Ok(d) if d >= Duration::from_secs(10) => d,
        Ok(_) => {
            err("interval", "must be at least 10s");
            return None;
        }
        Err(m) => {
            err("interval", &m);
            return None;
        }
    };
    let timeout = match parse(&sn.timeout, Duration::from_secs(30)) {
        Ok(d) => d,
        Err(m) => {
            err("timeout", &m);
            return None;
        }
    };
    let page_size = sn.page_size.unwrap_or(1000);
    if !(1..=10_000).contains(&page_size) {
        err("page_size", "must be 1..=10000");
        return None;
    }
    Some(ServiceNowConfig {
        url,
        auth,
        interval,
        page_size,
        ci_query: sn.ci_query.clone().filter(|q| !q.is_empty()),
        timeout,
        net: net::ClientNet { tls, proxy },
    })
}

fn parse_matrix(rows: &[Vec<String>]) -> Result<PriorityMatrix, String> {
    if rows.len() != 3 || rows.iter().any(|r| r.len() != 3) {
        return Err("must be 3 rows (impact 1..3) of 3 priorities (urgency 1..3)".into());
    }
    let mut m = PriorityMatrix::default();
    for (i, row) in rows.iter().enumerate() {
        for (j, p) in row.iter().enumerate() {
            m.0[i][j] =
                Priority::parse(p).ok_or_else(|| format!("[{i}][{j}]: {p:?} is not P1..P5"))?;
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, toml).unwrap();
        load(Some(&f), &Overrides::default())
    }

    #[test]
    fn jira_deployment_and_signed_webhooks() {
        use crate::outbound::jira::Deployment;
        use crate::outbound::settings::DestinationKind;
        let jira = |url: &str, extra: &str| {
            format!(
                "[[outbound.destinations]]\nname = \"j\"\nkind = \"jira\"\nurl = \"{url}\"\ntoken = \"t\"\nproject = \"OPS\"\n{extra}\n"
            )
        };
        let deployment = |c: Config| match &c.outbound[0].kind {
            DestinationKind::Jira { deployment, .. } => *deployment,
            other => panic!("{other:?}"),
        };
        let c = parse(&jira(
            "https://acme.atlassian.net",
            "inbound_secret = \"s\"",
        ))
        .unwrap();
        assert!(c.outbound[0].inbound_secret.is_some());
        assert_eq!(deployment(c), Deployment::Cloud);
        let c = parse(&jira("https://jira.acme.internal", "")).unwrap();
        assert_eq!(deployment(c), Deployment::DataCenter);
        let c = parse(&jira(
            "https://jira.acme.internal",
            "deployment = \"cloud\"",
        ))
        .unwrap();
        assert_eq!(deployment(c), Deployment::Cloud);
        let e = parse(&jira("https://j.example", "deployment = \"onprem\"")).unwrap_err();
        assert!(e.to_string().contains("deployment"), "{e}");
        let e = parse(
            "[[outbound.destinations]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.example.com/x\"\ninbound_secret = \"s\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("inbound_secret"), "{e}");
    }

    #[test]
    fn slack_app_mode_takes_a_bot_token_and_a_channel_id() {
        use crate::outbound::settings::{DestinationKind, SlackApp};
        let slack = |extra: &str| {
            format!("[[outbound.destinations]]\nname = \"chat\"\nkind = \"slack\"\n{extra}\n")
        };
        let c = parse(&slack(
            "bot_token = \"xoxb-1-2-abc\"\nchannel = \"C0123456789\"",
        ))
        .unwrap();
        let d = &c.outbound[0];
        assert_eq!(
            d.kind,
            DestinationKind::Slack {
                app: Some(SlackApp {
                    bot_token: Secret::Inline("xoxb-1-2-abc".into()),
                    channel: "C0123456789".into(),
                })
            }
        );
        assert_eq!(d.url, "https://slack.com/api");
        // The Web API's path is no secret; a hook's is.
        assert_eq!(d.display_url(), "https://slack.com/api");
        assert_eq!((d.rate_limit, d.burst), (1.0, 3));
        let c = parse(&slack(
            "url = \"https://hooks.slack.com/services/T0/B0/SECRET\"",
        ))
        .unwrap();
        assert_eq!(c.outbound[0].kind, DestinationKind::Slack { app: None });
        assert!(!c.outbound[0].display_url().contains("SECRET"));
        assert_eq!((c.outbound[0].rate_limit, c.outbound[0].burst), (1.0, 3));
        let c = parse(&slack(
            "bot_token_file = \"/run/secrets/slack\"\nchannel = \"G01ABCDEF23\"\nurl = \"http://127.0.0.1:9/api\"",
        ))
        .unwrap();
        assert_eq!(c.outbound[0].url, "http://127.0.0.1:9/api");
        for (extra, field, says) in [
            (
                "bot_token = \"xoxb-1\"",
                "channel",
                "required with bot_token",
            ),
            (
                "url = \"https://hooks.slack.com/x\"\nchannel = \"C0123456789\"",
                "bot_token",
                "channel needs bot_token",
            ),
            (
                "bot_token = \"xoxb-1\"\nbot_token_file = \"/t\"\nchannel = \"C0123456789\"",
                "bot_token",
                "not both",
            ),
            (
                "bot_token = \"xoxb-1\"\nchannel = \"#ops\"",
                "channel",
                "not its name",
            ),
            (
                "bot_token = \"xoxb-1\"\nchannel = \"C0123456789\"\nurl = \"https://hooks.slack.com/services/T/B/X\"",
                "url",
                "not an incoming webhook",
            ),
            ("", "url", "required"),
        ] {
            let e = parse(&slack(extra)).unwrap_err().to_string();
            assert!(
                e.contains(&format!("outbound.destinations[0].{field}")) && e.contains(says),
                "{extra}: {e}"
            );
        }
        let e = parse(
            "[[outbound.destinations]]\nname = \"pd\"\nkind = \"pagerduty\"\nrouting_key = \"k\"\nchannel = \"C0123456789\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("outbound.destinations[0].channel"), "{e}");
    }

    /// The settle delay: 30 s by default; a destination's own delay over
    /// `[outbound]`'s, a priority's entry over a plain delay; bad values
    /// named by field, all at once.
    #[test]
    fn settle_delays_by_scope_and_priority() {
        use crate::domain::Priority;
        let p = |n| Priority::new(n).expect("priority");
        let s = |secs| Duration::from_secs(secs);
        let c = parse("").unwrap();
        assert_eq!(c.engine.settle.of(p(1)), s(30));
        let c = parse(
            "[outbound]\nsettle = \"20s\"\nsettle_by_priority = { P1 = \"5s\" }\n[[outbound.destinations]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"https://h.example.com/x\"\nsecret = \"s\"\n[[outbound.destinations]]\nname = \"b\"\nkind = \"webhook\"\nurl = \"https://h.example.com/y\"\nsecret = \"s\"\nsettle = \"0s\"\nsettle_by_priority = { P5 = \"2m\" }\n",
        )
        .unwrap();
        let (a, b) = (&c.engine.outbound[0].settle, &c.engine.outbound[1].settle);
        assert_eq!((a.of(p(1)), a.of(p(3))), (s(5), s(20)));
        assert_eq!((b.of(p(1)), b.of(p(5))), (s(0), s(120)));
        assert_eq!(c.engine.settle.of(p(2)), s(20));
        let e = parse(
            "[outbound]\nsettle = \"2h\"\nsettle_by_priority = { P9 = \"1s\", P2 = \"soon\" }\n",
        )
        .unwrap_err()
        .to_string();
        for field in [
            "outbound.settle",
            "outbound.settle_by_priority.P9",
            "outbound.settle_by_priority.P2",
        ] {
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn defaults_without_file() {
        let c = validate(RawConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9797");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.rules_dir, PathBuf::from("./rules"));
        assert_eq!(c.engine.auto_resolve_hold, Duration::from_secs(300));
    }

    #[test]
    fn kafka_and_store_settings() {
        let c = parse(
            r#"
[store]
url = "postgres://u:p@127.0.0.1:5432/db"
[kafka]
brokers = "127.0.0.1:9092"
ingest_topic = "ingest"
[[kafka.topics]]
name = "alerts"
format = "alertmanager"
[kafka.librdkafka]
"consumer.fetch.wait.max.ms" = "50"
"#,
        )
        .unwrap();
        assert!(matches!(
            c.store,
            StoreBackend::Postgres {
                max_connections: 8,
                ..
            }
        ));
        let k = c.kafka.unwrap();
        assert_eq!(k.group_id, "incidentd");
        let names: Vec<&str> = k.topics.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["ingest", "alerts"],
            "the ingest topic is consumed first"
        );
        assert_eq!(k.topics[1].format, TopicFormat::Alertmanager);

        let e = parse(
            r#"
[store]
url = "mysql://x"
[kafka]
ingest_topic = "a"
max_batch = 0
batch_wait = "soon"
[[kafka.topics]]
name = "a"
format = "xml"
[kafka.librdkafka]
"enable.auto.offset.store" = "true"
"#,
        )
        .unwrap_err();
        let ConfigError::Invalid(errs) = e else {
            panic!("{e}")
        };
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "store.url",
            "kafka.brokers",
            "kafka.max_batch",
            "kafka.batch_wait",
            "kafka.topics[0].format",
            "kafka.topics[0].name",
            "kafka.librdkafka.\"enable.auto.offset.store\"",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn reports_every_error_at_once() {
        let e = parse(
            r#"
listen = "nowhere"
log_format = "xml"
[incident]
auto_resolve_hold = "5 minutes"
reopen_window = "1x"
default_impact = 7
priority_matrix = [["P1"]]
[sources.alertmanager]
token = "a"
token_file = "/x"
"#,
        )
        .unwrap_err();
        let ConfigError::Invalid(errs) = e else {
            panic!("{e}")
        };
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "listen",
                "log_format",
                "incident.default_impact",
                "incident.priority_matrix",
                "incident.auto_resolve_hold",
                "incident.reopen_window",
                "sources.alertmanager"
            ]
        );
    }

    #[test]
    fn the_shutdown_delay_defaults_to_none_and_names_itself_when_wrong() {
        assert_eq!(parse("").unwrap().shutdown_delay, Duration::ZERO);
        let c = parse("[http]\nshutdown_delay = \"5s\"\n").unwrap();
        assert_eq!(c.shutdown_delay, Duration::from_secs(5));
        let e =
            parse("[http]\nshutdown_delay = \"5 seconds\"\nidle_timeout = \"1ms\"\n").unwrap_err();
        let ConfigError::Invalid(errs) = e else {
            panic!("{e}")
        };
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["http.idle_timeout", "http.shutdown_delay"]);
        let delay = &errs[1];
        assert!(delay.message.contains("5 seconds"), "{}", delay.message);
    }

    #[test]
    fn slo_and_sla_settings() {
        let c = parse(
            "[slo]\npriorities = [\"P1\", \"p3\", \"1\"]\nrefresh = \"2s\"\n[sla]\npause_on = [\"awaiting_vendor\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.slo.priorities,
            [Priority::new(1).unwrap(), Priority::new(3).unwrap()]
        );
        assert_eq!(c.slo.refresh, Duration::from_secs(2));
        assert_eq!(&*c.engine.sla_pause_on, ["awaiting_vendor".to_string()]);
        let d = parse("").unwrap();
        assert_eq!(d.slo, SloConfig::default());
        assert_eq!(
            &*d.engine.sla_pause_on,
            ["awaiting_caller".to_string(), "awaiting_vendor".to_string()]
        );
        let e = parse(
            "[slo]\npriorities = [\"P9\", \"P1\"]\nrefresh = \"0s\"\n[sla]\npause_on = [\"Awaiting Vendor\", \"\"]\n",
        )
        .unwrap_err();
        let ConfigError::Invalid(errs) = e else {
            panic!("{e}")
        };
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "slo.refresh",
                "slo.priorities[0]",
                "sla.pause_on[0]",
                "sla.pause_on[1]"
            ]
        );
    }

    #[test]
    fn the_cmdb_sync_follows_the_outbound_proxy_unless_it_sets_its_own() {
        let c = parse(
            "[outbound]\nproxy = \"http://proxy:3128\"\n[cmdb.servicenow]\nurl = \"https://x.service-now.com\"\ntoken = \"t\"\nca_file = \"/etc/ca.pem\"\n",
        )
        .unwrap();
        let sn = c.servicenow.unwrap();
        assert!(
            matches!(&sn.net.proxy, net::ProxyConfig::Url { url, .. } if url == "http://proxy:3128")
        );
        assert_eq!(sn.net.tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(sn.net.tls.system_roots);
        let c = parse(
            "[outbound]\nproxy = \"http://proxy:3128\"\n[cmdb.servicenow]\nurl = \"https://x.service-now.com\"\ntoken = \"t\"\nproxy = \"none\"\n",
        )
        .unwrap();
        assert_eq!(c.servicenow.unwrap().net.proxy, net::ProxyConfig::None);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = parse("[incident]\nauto_resolve_hodl = \"1m\"\n").unwrap_err();
        assert!(e.to_string().contains("auto_resolve_hodl"), "{e}");
    }

    #[test]
    fn overrides_win_and_values_parse() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:1\"\n[incident]\nauto_resolve_hold = \"0s\"\npriority_matrix = [[\"P1\",\"P1\",\"P2\"],[\"P2\",\"P3\",\"P4\"],[\"P3\",\"P4\",\"P5\"]]\n[sources.api]\nrate_limit = 10\n",
        )
        .unwrap();
        let c = load(
            Some(&f),
            &Overrides {
                listen: Some("127.0.0.1:2".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.engine.auto_resolve_hold, Duration::ZERO);
        assert_eq!(
            c.engine
                .matrix
                .priority(Level::HIGH, Level::MEDIUM)
                .as_str(),
            "P1"
        );
        assert_eq!(c.api_source.rate_limit, Some((10, 10)));
    }
}
