//! Everything the daemon is made of, read and checked before any task
//! starts: rules, the CMDB, the engine restored from the store, secrets,
//! HTTP clients and credentials. A failure here has started nothing.

use super::connect;
use crate::api;
use crate::cmdb::Cmdb;
use crate::config::StoreBackend;
use crate::config::outbound::{DestinationConfig, DestinationKind};
use crate::config::{self, Config, KafkaConfig, Secret};
use crate::domain::Timestamp;
use crate::incident::Engine;
use crate::offline::{daemon_rules, initial_cmdb};
use crate::outbound::Credential;
use crate::rules::RuleSet;
use crate::store::{DynStore, PgStore, Restore, SqliteOptions, SqliteStore};
use crate::telemetry::Metrics;
use anyhow::{Context, Result};
use std::sync::Arc;

/// The pieces [`super::spawn::spawn`] runs.
pub(super) struct Parts {
    pub rules: Arc<RuleSet>,
    pub cmdb: Arc<Cmdb>,
    /// The restored engine of a lone instance (shard 0); empty with Kafka,
    /// whose consumer group assigns shards and loads each when assigned.
    pub engines: Vec<Engine>,
    /// The Kafka settings with their secrets read.
    pub kafka: Option<KafkaConfig>,
    pub destinations: Vec<Destination>,
    pub inbound: Vec<api::InboundDestination>,
    pub tokens: Tokens,
}

/// One outbound destination, ready to send.
pub(super) struct Destination {
    pub cfg: DestinationConfig,
    pub client: reqwest::Client,
    pub credential: Credential,
}

/// The bearer tokens the API checks, read from their files or variables.
pub(super) struct Tokens {
    pub alertmanager: Option<String>,
    pub api_source: Option<String>,
    pub pagerduty: Option<String>,
    pub api: Vec<api::ApiToken>,
}

/// Read and check everything `cfg` names; restore the lone instance's
/// engine from `store` as of `now`.
pub(super) async fn build(
    cfg: &Config,
    store: &DynStore,
    metrics: &Metrics,
    now: Timestamp,
) -> Result<Parts> {
    let rules = Arc::new(daemon_rules(cfg)?);
    metrics
        .rules_loaded
        .set(i64::try_from(rules.len()).unwrap_or(0));
    let cmdb = Arc::new(initial_cmdb(cfg)?);
    metrics.cmdb_cis.set(i64::try_from(cmdb.len()).unwrap_or(0));
    let kafka = cfg
        .kafka
        .as_ref()
        .map(connect::kafka_with_secrets)
        .transpose()?;
    let destinations = cfg
        .outbound
        .iter()
        .map(|d| {
            Ok(Destination {
                cfg: d.clone(),
                client: connect::destination_client(d)?,
                credential: credential(d)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut inbound = Vec::new();
    for d in &cfg.outbound {
        if d.inbound_token.is_none() && d.inbound_secret.is_none() {
            continue;
        }
        let read = |s: &Option<_>| -> Result<Option<Vec<u8>>> {
            s.as_ref()
                .map(|s| secret(s, &d.name).map(String::into_bytes))
                .transpose()
        };
        inbound.push(api::InboundDestination {
            name: d.name.clone(),
            kind: d.kind.as_str(),
            token: read(&d.inbound_token)?,
            signing_secret: read(&d.inbound_secret)?,
        });
    }
    let tokens = Tokens {
        alertmanager: token(&cfg.alertmanager.token, "alertmanager")?,
        api_source: token(&cfg.api_source.token, "api")?,
        pagerduty: token(&cfg.pagerduty.token, "pagerduty")?,
        api: cfg
            .api_tokens
            .iter()
            .map(|t| {
                Ok(api::ApiToken {
                    name: t.name.clone(),
                    secret: connect::read_secret(&t.secret, &format!("API token {}", t.name))?
                        .into_bytes(),
                    operator: t.operator,
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let mut engines = Vec::new();
    if cfg.kafka.is_none() {
        engines.push(restore(cfg, store, &rules, &cmdb, now).await?);
        metrics.shards_owned.set(1);
    }
    Ok(Parts {
        rules,
        cmdb,
        engines,
        kafka,
        destinations,
        inbound,
        tokens,
    })
}

/// The single engine, with the state the store holds within the windows
/// the engine looks back over.
async fn restore(
    cfg: &Config,
    store: &DynStore,
    rules: &Arc<RuleSet>,
    cmdb: &Arc<Cmdb>,
    now: Timestamp,
) -> Result<Engine> {
    let mut engine = Engine::new(cfg.engine.clone(), rules.clone());
    engine.set_cmdb(cmdb.clone());
    let snapshot = store
        .load_state(Restore {
            shard: None,
            resolved_since: now.saturating_sub(cfg.engine.reopen_window),
            alerts_since: now.saturating_sub(cfg.engine.alert_retention),
            signed_since: now.saturating_sub(cfg.engine.problems.period),
        })
        .await
        .context("loading state from the store")?;
    tracing::info!(
        incidents = snapshot.incidents.len(),
        alerts = snapshot.alerts.len(),
        rules = rules.len(),
        "state restored"
    );
    engine.restore(snapshot, now);
    Ok(engine)
}

/// A secret named in errors as "`what` token".
fn secret(s: &Secret, what: &str) -> Result<String> {
    connect::read_secret(s, &format!("{what} token"))
}

/// A source's bearer token, when one is configured.
fn token(s: &Option<Secret>, what: &str) -> Result<Option<String>> {
    s.as_ref().map(|s| secret(s, what)).transpose()
}

/// What a destination authenticates with, by kind.
fn credential(d: &DestinationConfig) -> Result<Credential> {
    let read = |s: &Secret| secret(s, &d.name);
    Ok(match &d.kind {
        DestinationKind::PagerDuty {
            routing_key,
            rest: Some(rest),
        } => Credential::KeyAndToken {
            key: read(routing_key)?,
            token: secret(&rest.api_token, &format!("{} REST API", d.name))?,
        },
        DestinationKind::PagerDuty {
            routing_key: s,
            rest: None,
        }
        | DestinationKind::Opsgenie { api_key: s, .. }
        | DestinationKind::Webhook { secret: s } => Credential::Key(read(s)?),
        // An incoming webhook's URL is its credential; an app's bot token
        // goes as a bearer header.
        DestinationKind::Slack { app: None } => Credential::None,
        DestinationKind::Slack { app: Some(app) } => Credential::Bearer(read(&app.bot_token)?),
        DestinationKind::ServiceNow { auth, .. } | DestinationKind::Jira { auth, .. } => match auth
        {
            config::ServiceNowAuth::Basic { user, password } => Credential::Basic {
                user: user.clone(),
                password: read(password)?,
            },
            config::ServiceNowAuth::Bearer(t) => Credential::Bearer(read(t)?),
        },
        DestinationKind::ServiceDeskPlus { auth, .. } => match auth {
            crate::config::outbound::SdpAuth::TechnicianKey(k) => Credential::Key(read(k)?),
            crate::config::outbound::SdpAuth::Zoho {
                client_secret,
                refresh_token,
                ..
            } => Credential::Refresh {
                client_secret: read(client_secret)?,
                refresh_token: read(refresh_token)?,
            },
        },
        DestinationKind::TeamDynamix {
            web_services_key, ..
        } => Credential::Key(read(web_services_key)?),
        DestinationKind::StackStorm { api_key, .. } => Credential::Key(read(api_key)?),
        // The API key is the user; the password is not checked ("X").
        DestinationKind::Freshservice { api_key, .. } => Credential::Basic {
            user: read(api_key)?,
            password: "X".into(),
        },
    })
}

/// Open the configured store (SQLite under the data dir, or PostgreSQL).
pub(super) async fn open_store(cfg: &Config) -> Result<DynStore> {
    Ok(match &cfg.store {
        StoreBackend::Sqlite => Arc::new(
            SqliteStore::open_dir(
                &cfg.data_dir,
                SqliteOptions {
                    synchronous: cfg.sqlite_synchronous,
                    ..SqliteOptions::default()
                },
            )
            .await
            .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?,
        ),
        StoreBackend::Postgres {
            url,
            max_connections,
            password,
        } => Arc::new(
            PgStore::connect_with(
                connect::pg_options(url, password.as_ref())?,
                *max_connections,
            )
            .await
            .with_context(|| {
                format!(
                    "opening the PostgreSQL store at {}",
                    crate::net::redact_url(url)
                )
            })?,
        ),
    })
}
