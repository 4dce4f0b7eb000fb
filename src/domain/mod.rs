//! Core vocabulary shared by every stage. Depends on nothing else in the crate.

mod fingerprint;
mod labels;
pub mod outbox;
mod time;
pub mod yaml;

pub use fingerprint::Fingerprint;
pub use labels::{LabelSet, instance_host};
pub use time::{
    Clock, ManualClock, MaybeTime, SystemClock, Timestamp, format_duration, parse_duration,
};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Firing or resolved, as Alertmanager says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Which ingress an alert came through; a bounded label value for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Alertmanager,
    Api,
    Pagerduty,
    Kafka,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Alertmanager,
        Source::Api,
        Source::Pagerduty,
        Source::Kafka,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Api => "api",
            Source::Pagerduty => "pagerduty",
            Source::Kafka => "kafka",
        }
    }
}

/// The canonical alert every source is normalized into (DESIGN §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    pub labels: LabelSet,
    #[serde(default)]
    pub annotations: LabelSet,
    pub starts_at: Timestamp,
    /// When the alert resolved; `None` while firing with no known end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    pub source: Source,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
}

impl Alert {
    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").unwrap_or("")
    }

    /// Event time of this delivery: when it started firing, or when it ended.
    pub fn event_time(&self) -> Timestamp {
        match self.status {
            AlertStatus::Firing => self.starts_at,
            AlertStatus::Resolved => self.ends_at.unwrap_or(self.starts_at),
        }
    }
}

/// Store-assigned incident identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentId(pub i64);

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Lifecycle state of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    Open,
    Acknowledged,
    Resolved,
}

impl IncidentState {
    pub const ALL: [IncidentState; 3] = [
        IncidentState::Open,
        IncidentState::Acknowledged,
        IncidentState::Resolved,
    ];
    /// The states of an incident still being worked (the gauges' states).
    pub const ACTIVE: [IncidentState; 2] = [IncidentState::Open, IncidentState::Acknowledged];
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "acknowledged" => Some(Self::Acknowledged),
            "resolved" => Some(Self::Resolved),
            _ => None,
        }
    }
    /// Open or acknowledged: the incident still needs someone.
    pub fn is_active(self) -> bool {
        !matches!(self, IncidentState::Resolved)
    }
}

/// ITIL level 1 (highest) ..= 3 (lowest), used for both impact and urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Level(u8);

impl Level {
    pub const HIGH: Level = Level(1);
    pub const MEDIUM: Level = Level(2);
    pub const LOW: Level = Level(3);
    pub fn new(v: u8) -> Option<Level> {
        (1..=3).contains(&v).then_some(Level(v))
    }
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Level {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        Level::new(v)
            .ok_or_else(|| format!("level must be 1 (high), 2 (medium) or 3 (low), got {v}"))
    }
}

impl From<Level> for u8 {
    fn from(l: Level) -> u8 {
        l.0
    }
}

/// Incident priority P1 (most urgent) ..= P5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    pub const ALL: [Priority; 5] = [
        Priority(1),
        Priority(2),
        Priority(3),
        Priority(4),
        Priority(5),
    ];
    pub fn new(v: u8) -> Option<Priority> {
        (1..=5).contains(&v).then_some(Priority(v))
    }
    pub fn get(self) -> u8 {
        self.0
    }
    pub fn as_str(self) -> &'static str {
        ["P1", "P2", "P3", "P4", "P5"][usize::from(self.0 - 1)]
    }
    /// Accepts `P1`, `p1` or `1`.
    pub fn parse(s: &str) -> Option<Priority> {
        let digits = s.strip_prefix(['P', 'p']).unwrap_or(s);
        digits.parse::<u8>().ok().and_then(Priority::new)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Priority::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("priority must be P1..P5, got {s:?}")))
    }
}

/// The ITIL impact x urgency → priority matrix. Row = impact, column = urgency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityMatrix(pub [[Priority; 3]; 3]);

impl Default for PriorityMatrix {
    fn default() -> Self {
        let p = |v| Priority(v);
        PriorityMatrix([[p(1), p(2), p(3)], [p(2), p(3), p(4)], [p(3), p(4), p(5)]])
    }
}

impl PriorityMatrix {
    pub fn priority(&self, impact: Level, urgency: Level) -> Priority {
        self.0[usize::from(impact.0 - 1)][usize::from(urgency.0 - 1)]
    }
}

/// A record of something that happened to an incident, for "why is this here".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: Timestamp,
    pub kind: TimelineKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    Opened,
    AlertJoined,
    AlertResolved,
    AlertRefired,
    PriorityChanged,
    RuleApplied,
    Acknowledged,
    Resolved,
    Reopened,
    Flapping,
    Assigned,
    /// The root cause CI was found or changed (topology correlation).
    RootCause,
    /// Another incident was folded into this one, or this one into another.
    Merged,
    /// An alert fired during or shortly after a change on a related CI.
    ChangeRelated,
    /// Linked to a problem record.
    Problem,
    /// Impacted services changed.
    Impact,
    /// An SLA timer passed 50 % or 75 % of its target.
    SlaWarning,
    /// An SLA timer passed its target.
    SlaBreached,
    /// Put on hold (waiting on a vendor, the caller, …).
    OnHold,
    /// Taken off hold.
    Resumed,
    /// The incident's start moved earlier (an alert that began before it joined).
    Backdated,
    /// A destination refused an update for good (outbound).
    OutboundFailed,
    /// A delivery failed and will be retried: the first failure of an
    /// update, and each time the cause changes (outbound).
    OutboundRetrying,
    /// A remediation (a StackStorm action) was asked for, ran, succeeded,
    /// failed, timed out or was held back by a guardrail (outbound).
    Remediation,
    /// An alert's event time was out of bounds and replaced by its receive
    /// time (`limits.max_clock_skew`, `max_alert_age`).
    EventTimeClamped,
    /// The incident counts against a change on its root CI or upstream of
    /// it (shown from the KPI book, not stored).
    ChangeFailed,
}

impl TimelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::Opened => "opened",
            TimelineKind::AlertJoined => "alert_joined",
            TimelineKind::AlertResolved => "alert_resolved",
            TimelineKind::AlertRefired => "alert_refired",
            TimelineKind::PriorityChanged => "priority_changed",
            TimelineKind::RuleApplied => "rule_applied",
            TimelineKind::Acknowledged => "acknowledged",
            TimelineKind::Resolved => "resolved",
            TimelineKind::Reopened => "reopened",
            TimelineKind::Flapping => "flapping",
            TimelineKind::Assigned => "assigned",
            TimelineKind::RootCause => "root_cause",
            TimelineKind::Merged => "merged",
            TimelineKind::ChangeRelated => "change_related",
            TimelineKind::Problem => "problem",
            TimelineKind::Impact => "impact",
            TimelineKind::SlaWarning => "sla_warning",
            TimelineKind::SlaBreached => "sla_breached",
            TimelineKind::OnHold => "on_hold",
            TimelineKind::Resumed => "resumed",
            TimelineKind::Backdated => "backdated",
            TimelineKind::OutboundFailed => "outbound_failed",
            TimelineKind::OutboundRetrying => "outbound_retrying",
            TimelineKind::Remediation => "remediation",
            TimelineKind::EventTimeClamped => "event_time_clamped",
            TimelineKind::ChangeFailed => "change_failed",
        }
    }
}

/// Lists of the in-memory incident are `ThinVec`s: one word each instead
/// of three, because the engine keeps every active incident and most of its
/// lists are empty or short (BENCHMARKS.md entry 20).
pub use thin_vec::{ThinVec, thin_vec};

/// Links an incident carries to other records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Links {
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    /// Shared with the engine's other incidents that name the same runbook.
    pub runbooks: ThinVec<std::sync::Arc<str>>,
    /// The change this incident is related to (first one found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Box<str>>,
    /// Set when this incident was folded into another one (a root cause
    /// found later): the incident that now holds its alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<IncidentId>,
    /// Earlier incidents with the same signature, newest first (knowledge).
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub similar: ThinVec<IncidentId>,
    /// Outbound destinations a rule's `notify` named for this incident
    /// (besides those whose routes select it).
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub notify: ThinVec<String>,
}

/// A business service an incident hurts, with its tier (1 = most critical).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceImpact {
    pub id: String,
    pub tier: u8,
}

/// A problem record (ITIL problem management): the same root CI and alert
/// signature caused incidents again and again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub id: String,
    pub signature: String,
    pub root_ci: Option<Box<str>>,
    pub alertname: String,
    pub state: String,
    pub opened_at: Timestamp,
    pub incidents: Vec<IncidentId>,
}

/// An ITIL incident as the store keeps it and the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    /// Correlation key: at most one active incident per key.
    pub key: std::sync::Arc<str>,
    pub state: IncidentState,
    pub priority: Priority,
    pub impact: Level,
    pub urgency: Level,
    pub title: Box<str>,
    pub root_ci: Option<Box<str>>,
    /// The root CI has no alert of its own: enough of its dependents alert
    /// at once that it is the likeliest cause (`correlation.infer_*`).
    /// Turns false when it alerts, or a root that alerts replaces it.
    #[serde(default)]
    pub root_inferred: bool,
    pub cis: ThinVec<String>,
    /// Ids of the business services downstream of the root CI, sorted.
    pub impacted_services: ThinVec<String>,
    /// The same services with their tiers.
    #[serde(default)]
    pub impact_detail: ThinVec<ServiceImpact>,
    pub assignment_group: Option<Box<str>>,
    pub alert_fingerprints: ThinVec<Fingerprint>,
    /// Distinct alerts in this incident (`alert_fingerprints`); repeats
    /// and resolutions do not count again. 0 once merged into another.
    pub alert_count: u64,
    pub opened_at: Timestamp,
    pub acknowledged_at: Option<Timestamp>,
    pub acknowledged_by: Option<Box<str>>,
    pub resolved_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub reopen_count: u32,
    pub flapping: bool,
    /// Rule names that acted on this incident.
    /// Shared with the rule set (one allocation per rule, not per incident).
    pub rules: ThinVec<std::sync::Arc<str>>,
    pub links: Links,
    /// Root CI and alert name: what makes incidents "the same again" for
    /// problem management and knowledge.
    #[serde(default)]
    pub signature: Option<std::sync::Arc<str>>,
    /// Work shard that owns this incident: 0 on a single instance; with
    /// Kafka, the topic partition whose engine keeps it (see `ingest::kafka`).
    #[serde(default)]
    pub shard: u32,
    /// SLA thresholds already put on the timeline (`response_50`,
    /// `resolution_breached`, …), so each is recorded once, also across
    /// restarts (stored with the incident, not shown by the API).
    #[serde(skip)]
    pub sla_marks: ThinVec<String>,
    /// Times the incident was on hold, oldest first; the last one is still
    /// running when its `end` is unset. Holds whose reason is in
    /// `sla.pause_on` stop the SLA clocks.
    #[serde(default)]
    pub holds: ThinVec<Hold>,
    /// While every alert of an active incident has resolved and the
    /// auto-resolve hold (`incident.auto_resolve_hold`) runs: when the
    /// incident will resolve unless an alert fires again (event time).
    /// `None` otherwise. Kept by the engine, stored with the incident, so
    /// that every instance's API can tell an on-call engineer why an
    /// incident with no firing alert is still open.
    #[serde(default)]
    pub auto_resolve_at: MaybeTime,
    /// Destinations not yet told of this incident: a new incident waits
    /// out its settle delay (`outbound.settle`) so that one merged into
    /// another or re-rooted meanwhile never pages. `None` once every
    /// destination has heard of it (and always without destinations).
    /// Stored with the incident, so that a restart or a partition
    /// handover still announces it, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unannounced: Option<Box<Unannounced>>,
}

/// Who has not heard of an incident yet, and when they will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unannounced {
    /// When the settle delay started: the incident opened (engine time).
    pub since: Timestamp,
    /// Each destination still waiting, with when it is told should the
    /// incident still stand then (its delay for the incident's priority;
    /// longer while another incident nearby may yet join it under an
    /// inferred root).
    pub destinations: ThinVec<Pending>,
    /// Its delay ended while it was merged into another incident or
    /// resolved: these destinations never heard of it (a reopen tells them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withheld: bool,
}

/// One destination waiting to hear of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub destination: String,
    pub at: Timestamp,
}

/// An incident on hold for a reason (ITIL "pending"/"on hold": awaiting
/// the caller, a vendor, a change, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub reason: String,
    pub start: Timestamp,
    #[serde(default)]
    pub end: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A hold reason is a short identifier (`awaiting_vendor`), so that
/// `sla.pause_on` can name it exactly.
pub fn check_hold_reason(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{r:?}: a hold reason is 1-64 characters of a-z, 0-9, '_' and '-' (e.g. awaiting_vendor)"
        ))
    }
}

impl Incident {
    /// The hold in progress, if any.
    pub fn current_hold(&self) -> Option<&Hold> {
        self.holds.last().filter(|h| h.end.is_none())
    }
}

#[cfg(test)]
impl Incident {
    /// An open P3 incident with nothing in it, for tests to adjust.
    pub fn test_default() -> Incident {
        Incident {
            id: IncidentId(1),
            key: "k".into(),
            state: IncidentState::Open,
            priority: Priority::ALL[2],
            impact: Level::HIGH,
            urgency: Level::HIGH,
            title: "t".into(),
            root_ci: None,
            root_inferred: false,
            cis: ThinVec::new(),
            impacted_services: ThinVec::new(),
            impact_detail: ThinVec::new(),
            assignment_group: None,
            alert_fingerprints: ThinVec::new(),
            alert_count: 1,
            opened_at: Timestamp(0),
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            updated_at: Timestamp(0),
            reopen_count: 0,
            flapping: false,
            rules: ThinVec::new(),
            links: Links::default(),
            signature: None,
            shard: 0,
            sla_marks: ThinVec::new(),
            holds: ThinVec::new(),
            auto_resolve_at: MaybeTime::NONE,
            unannounced: None,
        }
    }
}

/// A JSON object and nothing else. serde's derive also reads a struct from
/// an array, field by field in order, so `["firing", {"a": "b"}]` would pass
/// for an alert and a bad one would be blamed on fields it does not have.
pub struct Obj<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData)).map(Obj)
    }
}
