//! The incident record. The engine emits [`StoreOp`]s; a single writer task
//! applies them in batched transactions and reports the last durable batch.
//! Backends implement [`Store`]: SQLite is the embedded default; PostgreSQL
//! lets several instances (Kafka shards) share one database.

pub mod backup;
mod batch;
mod journal;
mod postgres;
mod rows;
mod sql;
mod sqlite;

pub use postgres::{PgStore, connect_options as pg_connect_options};
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

use crate::change::ChangeRecord;
use crate::domain::{
    AlertStatus, Fingerprint, Incident, IncidentId, IncidentState, LabelSet, Problem, Source,
    TimelineEntry, Timestamp,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type DynStore = Arc<dyn Store>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration {version} failed: {source}")]
    Migration {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("store settings: {0}")]
    Config(String),
    #[error(
        "the database file {0}; writes are refused so that nothing goes into a file no restart would see: put it back (or restore the backup) and restart"
    )]
    Lost(String),
    #[error("journal: {0}")]
    Journal(String),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A full alert row, written when an alert is first seen (labels and
/// annotations only change with a new fingerprint, so later writes skip them).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub source: Source,
    pub generator_url: String,
    pub incident: Option<IncidentId>,
    pub key: String,
    /// Rule and reason when a rule suppressed the alert.
    pub suppressed: Option<(String, String)>,
    /// The change whose window the alert fired in, if any.
    pub change: Option<String>,
    pub flapping: bool,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub deliveries: u64,
    /// Work shard of the engine that tracks this alert (see `Incident::shard`).
    pub shard: u32,
}

/// Only the fields that change after an alert is first seen.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertUpdate {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub incident: Option<IncidentId>,
    pub key: String,
    /// `None`: leave the stored suppression as it is; `Some(x)`: set it to `x`.
    pub suppressed: Option<Option<(String, String)>>,
    /// `None`: leave the stored change link; `Some(x)`: set it to `x`.
    pub change: Option<Option<String>>,
    pub flapping: bool,
    pub last_seen: Timestamp,
    pub deliveries: u64,
}

/// Coalesced repeats: absolute counters, so applying twice is harmless.
#[derive(Debug, Clone, PartialEq)]
pub struct Touch {
    pub fingerprint: Fingerprint,
    pub last_seen: Timestamp,
    pub deliveries: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Insert or replace the incident row (its `alert_fingerprints` are
    /// kept by `LinkAlert`, not by this op).
    UpsertIncident(Box<Incident>),
    InsertAlert(Box<AlertRecord>),
    UpdateAlert(Box<AlertUpdate>),
    LinkAlert {
        incident: IncidentId,
        fingerprint: Fingerprint,
        at: Timestamp,
    },
    Timeline {
        incident: IncidentId,
        entry: TimelineEntry,
    },
    TouchAlerts(Vec<Touch>),
    /// An incident was merged into another: its alerts move there.
    MoveAlerts {
        from: IncidentId,
        to: IncidentId,
    },
    UpsertProblem(Box<Problem>),
    /// Link incidents that are no longer in the engine's memory to a problem.
    SetProblem {
        incidents: Vec<IncidentId>,
        problem: String,
    },
    UpsertChange(Box<ChangeRecord>),
    /// A message for a destination, in the transaction of the change it
    /// reports (the transactional outbox).
    Outbox(Box<OutboxMessage>),
}

/// What one destination must hear of one change of an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub destination: String,
    pub kind: crate::domain::outbox::EventKind,
    pub at: Timestamp,
    /// The incident as it was at this change.
    pub incident: Incident,
}

/// A stored outbox message still to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Ascending in write order; also the delivery id receivers see.
    pub id: i64,
    pub message: OutboxMessage,
    pub attempts: u32,
    /// Not before this (backoff, `Retry-After`).
    pub next_at: Timestamp,
    pub last_error: Option<String>,
}

/// A slice of a long list (an incident's alerts or timeline): an incident
/// with 100k alerts must not become one 50 MB answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: u64,
    pub limit: u32,
}

impl Page {
    /// Everything (internal callers that need the whole list).
    pub const ALL: Page = Page {
        offset: 0,
        limit: u32::MAX,
    };
}

/// How a message's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Refused for good (a 4xx other than 408/429): the reason.
    GaveUp(String),
}

/// Alert state the engine needs back after a restart.
#[derive(Debug, Clone)]
pub struct AlertSnapshot {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub incident: Option<IncidentId>,
    pub key: String,
    pub suppressed: bool,
    pub flapping: bool,
    pub last_seen: Timestamp,
    pub deliveries: u64,
}

/// What `load_state` returns (restricted to one shard when asked): active incidents (with their fingerprints),
/// incidents resolved since `resolved_since` (for reopen), and the alerts
/// that are firing or were seen since `alerts_since`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub incidents: Vec<Incident>,
    pub alerts: Vec<AlertSnapshot>,
    /// Highest incident id over every shard, so that new ids never collide
    /// with another shard's rows.
    pub max_incident_id: i64,
    pub problems: Vec<Problem>,
    /// (signature, opened_at, id) of resolved incidents within the problem period.
    pub signed: Vec<(String, Timestamp, IncidentId)>,
    pub changes: Vec<ChangeRecord>,
}

/// What [`IncidentLog::load_state`] reads. The default is everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restore {
    /// One work shard, or every shard (`None`).
    pub shard: Option<u32>,
    /// Resolved incidents since then come back too (a new alert may reopen them).
    pub resolved_since: Timestamp,
    /// Alerts that are firing, or were seen since then.
    pub alerts_since: Timestamp,
    /// Signatures of incidents resolved since then (problem detection).
    pub signed_since: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateFilter {
    #[default]
    Active,
    Only(IncidentState),
    All,
}

#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    pub state: StateFilter,
    pub limit: u32,
    /// Return incidents with id < this (newest first paging).
    pub before: Option<i64>,
    /// Only incidents of this priority.
    pub priority: Option<crate::domain::Priority>,
    /// Only incidents that impact this business service.
    pub service: Option<String>,
}

/// Which stored alerts to list (`GET /api/v1/alerts`): those firing now,
/// either the ones rules let through or the ones they suppressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertQuery {
    /// Firing alerts a rule suppressed (`true`), or the others (`false`).
    pub suppressed: bool,
    pub alertname: Option<String>,
    /// Only alerts whose correlation key names one of these CIs (the CI
    /// the engine bound them to, or their `ci` label when it names none
    /// of the CMDB's); `None`: any.
    pub cis: Option<Vec<String>>,
    pub page: Page,
}

/// The incident record as the engine writes it: batches applied
/// atomically, the state a shard is restored from, and the store's health.
pub trait IncidentLog: Send + Sync + 'static {
    /// Apply a batch atomically: all or nothing.
    fn apply<'a>(&'a self, ops: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>>;
    /// How many `apply` calls on disjoint shards may run at once to good
    /// effect (SQLite has one writer; a server uses several backends).
    fn write_lanes(&self) -> usize {
        1
    }
    /// The state an engine starts from, read in one consistent view: at
    /// start, and when a Kafka instance is assigned a partition's shard.
    fn load_state(&self, what: Restore) -> BoxFuture<'_, Result<Snapshot, StoreError>>;
    /// Cheap round trip for `/readyz`.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Bytes acknowledged and not yet where reads find them (a store that
    /// projects a journal behind its acknowledgements); `None` otherwise.
    fn journal_backlog(&self) -> Option<u64> {
        None
    }
    /// Wait until every batch applied so far is where reads find it (a
    /// store that acknowledges at a journal projects behind it): before a
    /// clean exit, so that a copy of the database taken after a stop holds
    /// everything.
    fn settle(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// Whether the store is still the one that was opened: a database file
    /// deleted or replaced under the daemon would otherwise take writes
    /// that no restart ever sees. Cheap (a `stat` and a header read);
    /// `Lost` is final.
    fn integrity(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Store change records in transactions of at most `chunk`, so that a
    /// bulk import of a calendar leaves room for ingest's commits between
    /// them (the single SQLite writer serves both).
    fn upsert_changes<'a>(
        &'a self,
        changes: &'a [crate::change::ChangeRecord],
        chunk: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for part in changes.chunks(chunk.max(1)) {
                let ops: Vec<StoreOp> = part
                    .iter()
                    .map(|c| StoreOp::UpsertChange(Box::new(c.clone())))
                    .collect();
                self.apply(&ops).await?;
                tokio::task::yield_now().await;
            }
            Ok(())
        })
    }
    /// Why the store was found lost by an earlier [`IncidentLog::integrity`]
    /// check or write (no system call: for every request).
    fn lost(&self) -> Option<String> {
        None
    }
}

/// One group of alerts as the store counts them: those on one CI, with one
/// suppressing rule (or none), attached to an incident or not, whose last
/// start falls in one band of `kpi::NOISE_WINDOWS` (0: the last hour, 1: the
/// rest of the last day, 2: the rest of the week).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlertTally {
    /// The CI the alert was bound to (read from its correlation key).
    pub ci: Option<String>,
    pub suppressed_rule: Option<String>,
    pub attached: bool,
    pub band: usize,
    pub count: u64,
    /// The incidents these alerts opened (an alert whose correlation key
    /// is its incident's): the other attached alerts joined one.
    pub opened: u64,
}

/// Where a page of [`Reads::incidents_since_page`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentCursor {
    Start,
    /// After this active incident.
    Active(IncidentId),
    /// After this resolved incident (its resolution time and id).
    Resolved(Timestamp, IncidentId),
}

impl IncidentCursor {
    /// Where a page ending with `last` ended.
    pub fn after(last: &Incident) -> IncidentCursor {
        match last.resolved_at {
            Some(t) if !last.state.is_active() => IncidentCursor::Resolved(t, last.id),
            _ => IncidentCursor::Active(last.id),
        }
    }
}

/// What the API, the SLO exporter and the action service read.
pub trait Reads: Send + Sync + 'static {
    fn list_problems(&self) -> BoxFuture<'_, Result<Vec<Problem>, StoreError>>;
    fn list_changes(&self) -> BoxFuture<'_, Result<Vec<ChangeRecord>, StoreError>>;
    fn list_incidents(&self, q: IncidentQuery) -> BoxFuture<'_, Result<Vec<Incident>, StoreError>>;
    fn get_incident(&self, id: IncidentId) -> BoxFuture<'_, Result<Option<Incident>, StoreError>>;
    /// Incidents of priority `worst` or more urgent that were open at some
    /// time since `since` (still active, or resolved at or after it),
    /// without their fingerprints: the downtime SLOs are computed from.
    fn slo_incidents(
        &self,
        since: Timestamp,
        worst: crate::domain::Priority,
    ) -> BoxFuture<'_, Result<Vec<Incident>, StoreError>>;
    fn timeline(
        &self,
        id: IncidentId,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<TimelineEntry>, StoreError>>;
    /// Alerts of one incident, with labels, for the detail view.
    fn incident_alerts(
        &self,
        id: IncidentId,
        page: Page,
    ) -> BoxFuture<'_, Result<Vec<AlertRecord>, StoreError>>;
    /// A page of at most `limit` of the incidents [`Reads::slo_incidents`]
    /// returns (of any priority), in a stable order: the active ones by
    /// id, then the resolved ones by resolution time and id; `after` is
    /// where the previous page ended. For reading a month of incidents
    /// without holding them all (the KPI refresh).
    fn incidents_since_page(
        &self,
        since: Timestamp,
        after: IncidentCursor,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Incident>, StoreError>>;
    /// Alerts whose last start is after `cuts[2]`, counted by CI (read
    /// from the correlation key), suppressing rule, attached to an incident
    /// or not, and band: 0 when it started after `cuts[0]`, 1 after
    /// `cuts[1]`, else 2 (the noise figures of the KPIs).
    fn alert_tallies(
        &self,
        cuts: [Timestamp; 3],
    ) -> BoxFuture<'_, Result<Vec<AlertTally>, StoreError>>;
    fn count_by_state(&self) -> BoxFuture<'_, Result<Vec<(IncidentState, u64)>, StoreError>>;
    /// Firing alerts, newest start first, as the engine last wrote them
    /// (with the rule and reason of a suppression, and their incident).
    fn list_alerts(&self, q: AlertQuery) -> BoxFuture<'_, Result<Vec<AlertRecord>, StoreError>>;
}

/// The outbox and ticket identities, as the senders and pollers use them.
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` undelivered messages of `destination`, oldest first;
    /// with `shards`, only those of incidents of these work shards (the
    /// ones this instance owns).
    fn outbox_pending<'a>(
        &'a self,
        destination: &'a str,
        shards: Option<&'a [u32]>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<OutboxRow>, StoreError>>;
    /// Make every undelivered message of `destination` waiting for a later
    /// retry due at `now` (the destination is back: its backlog need not
    /// sit out backoffs earned while it was down); how many.
    fn outbox_wake<'a>(
        &'a self,
        destination: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Record a failed attempt: try again at `next_at`; `note` goes on
    /// the incident's timeline in the same transaction (the first failure
    /// of a message, or a new cause).
    fn outbox_retry(
        &self,
        id: i64,
        attempts: u32,
        next_at: Timestamp,
        error: String,
        note: Option<(IncidentId, TimelineEntry)>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Mark a message delivered or given up, with an optional timeline
    /// entry for its incident, in one transaction.
    fn outbox_finish(
        &self,
        id: i64,
        at: Timestamp,
        outcome: Delivery,
        note: Option<(IncidentId, TimelineEntry)>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Delete up to `limit` messages finished (delivered or given up)
    /// before `before`; how many. Pending ones are never touched.
    fn outbox_prune(&self, before: Timestamp, limit: u32)
    -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Undelivered messages per destination (of `shards`, when given: with
    /// several instances each counts its own, and the sum is the backlog).
    fn outbox_depth<'a>(
        &'a self,
        shards: Option<&'a [u32]>,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>>;
    /// The labels of `incident`'s first alert (a remediation's
    /// `{label.NAME}` parameters); `None` when it has none.
    fn first_alert_labels(
        &self,
        incident: IncidentId,
    ) -> BoxFuture<'_, Result<Option<crate::domain::LabelSet>, StoreError>>;
    /// Add an entry to `incident`'s timeline (a remediation's progress,
    /// written as it happens, not with an outbox row).
    fn timeline_note(
        &self,
        incident: IncidentId,
        entry: TimelineEntry,
    ) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The references at `destination` that start with `prefix`, of any
    /// incident (resolved ones too) of `shards` when given: the
    /// remediations still being followed. Oldest incident first, up to
    /// `limit`.
    fn outbound_refs_like<'a>(
        &'a self,
        destination: &'a str,
        prefix: &'a str,
        shards: Option<&'a [u32]>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(IncidentId, String)>, StoreError>>;
    /// The id `destination` gave `incident` (ServiceNow `sys_id`, Jira key).
    fn outbound_ref<'a>(
        &'a self,
        destination: &'a str,
        incident: IncidentId,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;
    fn set_outbound_ref<'a>(
        &'a self,
        destination: &'a str,
        incident: IncidentId,
        external: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Active incidents (of `shards`, when given) that have a ticket at
    /// `destination` and no update for it still undelivered: the tickets a
    /// poll may read back (one with an update on its way is behind us, and
    /// what it says now must not act here). Oldest first, up to `limit`.
    fn outbound_poll_refs<'a>(
        &'a self,
        destination: &'a str,
        shards: Option<&'a [u32]>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<(IncidentId, String)>, StoreError>>;
}

/// The whole store, for the wiring and the API; each other part takes the
/// trait it needs (`Arc<dyn Store>` coerces to any of them).
pub trait Store: IncidentLog + Reads + Outbox {}

/// The store's traits, for code that calls their methods on a concrete
/// store or on `dyn Store`.
pub mod prelude {
    pub use super::{IncidentLog, Outbox, Reads, Store};
}

impl<T: IncidentLog + Reads + Outbox> Store for T {}
