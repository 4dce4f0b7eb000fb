//! The incident state machine: the one owner of live alert and incident
//! state. Pure and synchronous: it takes events and the time, changes its
//! state, and emits [`StoreOp`]s that the writer makes durable. The async
//! wrapper lives in `task.rs`.
//!
//! Times: correlation, flapping, auto-resolve and reopen decisions run on
//! event time (`startsAt`, `endsAt`), so replaying a recorded stream gives the
//! incidents live ingest gave. Memory retention runs on engine time (`now`).

pub mod actions;
mod announce;
mod placement;
pub mod problems;
mod projection;
pub mod task;

pub use placement::impact_of;

use crate::change::{ChangeBook, ChangeRecord};
use crate::cmdb::{CiIdx, Cmdb};
use crate::correlate;
use crate::dedup::{AlertState, AlertTable, FlapPolicy, Observation};
use crate::domain::{
    Alert, AlertStatus, Fingerprint, Incident, IncidentId, IncidentState, LabelSet, Level,
    MaybeTime, Priority, PriorityMatrix, ThinVec, TimelineEntry, TimelineKind, Timestamp,
};
use crate::normalize::Event;
use crate::rules::{Decision, RuleSet};
use crate::store::{AlertUpdate, Snapshot, StoreOp, Touch};
use problems::{ProblemBook, ProblemPolicy};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// After the last alert of an incident resolves, wait this long before
    /// resolving the incident (a quick re-fire then continues it).
    pub auto_resolve_hold: Duration,
    /// A re-fire within this long after an incident resolved reopens it.
    pub reopen_window: Duration,
    pub flap: FlapPolicy,
    /// How long a resolved alert's state stays in memory (engine time).
    pub alert_retention: Duration,
    pub matrix: PriorityMatrix,
    /// Impact when nothing (rule, CMDB) says otherwise.
    pub default_impact: Level,
    /// Alerts on related CIs join one incident when they start within this
    /// long of its alerts (event time).
    pub correlation_window: Duration,
    /// When a CI without alerts is named the root of its dependents'.
    pub infer: crate::correlate::topology::InferSettings,
    /// An alert this long after a change on its CI (or one it depends on)
    /// ended is still change-related.
    pub change_grace: Duration,
    pub problems: ProblemPolicy,
    /// How many earlier incidents of the same signature a new one lists.
    pub similar_limit: usize,
    /// Hold reasons that stop the SLA clocks (`sla.pause_on`).
    pub sla_pause_on: Arc<[String]>,
    /// A firing alert not delivered again for this long is taken as
    /// resolved at its last delivery (zero: never). Alertmanager sends no
    /// resolve for an alert that is silenced or whose rule was removed;
    /// it re-sends firing alerts every `repeat_interval`, so set this
    /// above that (e.g. twice it).
    pub alert_timeout: Duration,
    /// Outbound destinations by name with their routes: each change of an
    /// incident a route matches is written to the outbox for it, in the
    /// batch of the change.
    pub outbound: Arc<[crate::domain::outbox::Destination]>,
    /// The settle delay without destinations: when an incident would have
    /// been announced (`incidentd replay`'s pages, the announcement
    /// counters).
    pub settle: crate::domain::outbox::Settle,
    /// Without destinations, still decide when each incident would have
    /// been announced (replay's pages); the daemon leaves it off, since
    /// nothing is announced then.
    pub count_pages: bool,
    /// Alerts held in memory at most (all shards of the instance): a
    /// request that would add more is refused with 503 (`limits.…`).
    pub max_active_alerts: usize,
    /// Active incidents at most: beyond, requests with new alerts are
    /// refused with 503 until some resolve.
    pub max_active_incidents: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_active_alerts: 500_000,
            max_active_incidents: 50_000,
            auto_resolve_hold: Duration::from_secs(5 * 60),
            reopen_window: Duration::from_secs(60 * 60),
            flap: FlapPolicy::default(),
            alert_retention: Duration::from_secs(60 * 60),
            matrix: PriorityMatrix::default(),
            default_impact: Level::MEDIUM,
            correlation_window: Duration::from_secs(5 * 60),
            infer: crate::correlate::topology::InferSettings::default(),
            change_grace: Duration::from_secs(30 * 60),
            problems: ProblemPolicy::default(),
            similar_limit: 5,
            sla_pause_on: default_pause_on(),
            alert_timeout: Duration::ZERO,
            outbound: Arc::from([]),
            settle: crate::domain::outbox::Settle::default(),
            count_pages: false,
        }
    }
}

/// Waiting on the caller or on a vendor is out of the service desk's
/// hands: the clock stops (as ITSM tools' default SLA definitions do).
pub fn default_pause_on() -> Arc<[String]> {
    Arc::from(["awaiting_caller".to_string(), "awaiting_vendor".to_string()])
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("incident {0} is not active (unknown, or resolved and forgotten)")]
    NotActive(IncidentId),
    #[error("incident {0} is already resolved")]
    AlreadyResolved(IncidentId),
    #[error("incident {0} is already acknowledged")]
    AlreadyAcknowledged(IncidentId),
    #[error("incident {0} is already on hold")]
    AlreadyOnHold(IncidentId),
    #[error("incident {0} is not on hold")]
    NotOnHold(IncidentId),
    /// Kafka mode: the partition behind this shard is not assigned here.
    #[error("work shard {0} is not owned by this instance")]
    NotOwned(u32),
    /// A memory cap (`limits.max_active_alerts`, `max_active_incidents`)
    /// would be passed: nothing of the request was applied.
    #[error("{what} is at its limit of {limit} ({setting}); retry later")]
    Full {
        what: &'static str,
        limit: usize,
        setting: &'static str,
    },
}

/// Durations the engine measured, drained into histograms after each
/// batch, and the lifecycle events the engine task logs.
#[derive(Debug, Default)]
pub struct Observations {
    /// Opening to acknowledgement (MTTA).
    pub acked_after: Vec<f64>,
    /// Opening to resolution (MTTR).
    pub resolved_after: Vec<f64>,
    /// One rule-set evaluation each.
    pub rule_seconds: Vec<f64>,
    /// What happened to incidents, in order.
    pub events: Vec<LifecycleEvent>,
}

/// A step in an incident's life, as the on-call engineer reads it in the
/// log: recorded by the engine (pure), logged by its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    Opened,
    /// Priority raised (never lowered) from this.
    PriorityRaised {
        from: Priority,
    },
    /// A late alert upstream became the root cause; the root before.
    Rerooted {
        from: Option<String>,
    },
    /// Folded into that incident (this one is resolved with it).
    MergedInto {
        into: IncidentId,
    },
    /// Took that incident's alerts over.
    Absorbed {
        from: IncidentId,
    },
    Acknowledged {
        by: String,
    },
    OnHold {
        reason: String,
        by: String,
    },
    Resumed {
        by: String,
    },
    /// Why: all alerts resolved (auto), or by whom.
    Resolved {
        why: String,
    },
    Reopened {
        alertname: String,
    },
}

impl Lifecycle {
    /// Short name for the `event` field of the log line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Lifecycle::Opened => "opened",
            Lifecycle::PriorityRaised { .. } => "priority_changed",
            Lifecycle::Rerooted { .. } => "rerooted",
            Lifecycle::MergedInto { .. } => "merged",
            Lifecycle::Absorbed { .. } => "absorbed",
            Lifecycle::Acknowledged { .. } => "acknowledged",
            Lifecycle::OnHold { .. } => "on_hold",
            Lifecycle::Resumed { .. } => "resumed",
            Lifecycle::Resolved { .. } => "resolved",
            Lifecycle::Reopened { .. } => "reopened",
        }
    }
}

/// A [`Lifecycle`] step with the incident as it stood at the end of its
/// batch (an incident opens and gets its first priority in one call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub incident: IncidentId,
    pub what: Lifecycle,
    pub priority: Priority,
    pub state: IncidentState,
    pub root_ci: Option<String>,
    pub title: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub new_alerts: u64,
    pub deduplicated: u64,
    pub stale: u64,
    pub state_changes: u64,
    pub suppressed: u64,
    pub unknown_resolved: u64,
    pub unknown_ack: u64,
    /// Firing alerts taken as resolved after `alert_timeout` of silence.
    pub expired: u64,
    pub incidents_created: u64,
    pub incidents_resolved: u64,
    pub incidents_reopened: u64,
    pub flapping_detected: u64,
    pub rule_errors: u64,
    pub incidents_merged: u64,
    pub problems_opened: u64,
    /// New alerts by binding: ci label, match labels, hostname, unbound.
    pub bound: [u64; 4],
    /// Root inferences: inferred, confirmed, superseded, ambiguous.
    pub inferences: [u64; 4],
    /// New incidents announced to a destination once their settle delay
    /// ended, and those merged away or resolved before then (withheld).
    pub announcements: [u64; 2],
    /// SLA timers that stopped: [response, resolution] × [met, breached].
    pub sla_completed: [[u64; 2]; 2],
}

/// What one ingest call did, and which store batch its sender must wait for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: u32,
    pub new: u32,
    pub deduplicated: u32,
    pub changed: u32,
    pub suppressed: u32,
    pub ignored: u32,
    /// The delivery is durable once the store has committed this batch.
    pub wait_seq: u64,
    /// Set by the engine task: the batch open when this was handled; its
    /// coalesced repeat counters are durable once a full flush at or after
    /// it commits (`EngineHandle::is_fully_durable`).
    pub open_seq: u64,
}

/// `Option<CiIdx>` in 4 bytes instead of 8 (no CMDB has `u32::MAX` CIs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MaybeCi(u32);

impl MaybeCi {
    const NONE: MaybeCi = MaybeCi(u32::MAX);
    fn of(c: Option<CiIdx>) -> MaybeCi {
        c.map_or(MaybeCi::NONE, |c| MaybeCi(c.0))
    }
    fn get(self) -> Option<CiIdx> {
        (self != MaybeCi::NONE).then_some(CiIdx(self.0))
    }
}

/// One per incident in memory, boxed. Kept within mimalloc's 640-byte size
/// class (the next is 768): with every alert its own incident that is
/// ~6 % of the RSS per active alert (BENCHMARKS.md entry 18). Hence the
/// compact optional fields, the auto-resolve time kept only in
/// `inc.auto_resolve_at`, and the destinations' copy in `Engine::notified`.
struct Tracked {
    inc: Incident,
    /// Alerts of this incident currently firing.
    firing: u32,
    /// Latest end among its resolved alerts (event time).
    last_end: MaybeTime,
    /// Engine time at which it resolved, for memory retention.
    resolved_seen: MaybeTime,
    /// Topology view (indexes into the current CMDB; remapped on reload).
    root: MaybeCi,
    cis: ThinVec<CiIdx>,
    /// Earliest and latest start of its alerts (event time).
    first: Timestamp,
    last: Timestamp,
    /// Correlation keys (CI + alert name) that lead here besides
    /// `inc.key`, which does unless merged into another incident
    /// (interned: the same allocations as the alerts' keys and
    /// `Engine::by_key`). Most incidents have no other: no list
    /// allocation for them.
    more_keys: ThinVec<Arc<str>>,
    /// Most urgent explicit rule priority / impact seen.
    rule_priority: Option<Priority>,
    rule_impact: Option<Level>,
    assigned_by_rule: bool,
    /// Impact from the CMDB (services downstream of the root), or the default.
    cmdb_impact: Level,
    /// Set once the first priority is decided; after that it only rises.
    priority_set: Option<Priority>,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Tracked>() <= 384);

impl Tracked {
    /// The keys that lead here.
    fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.inc
            .links
            .merged_into
            .is_none()
            .then_some(&self.inc.key)
            .into_iter()
            .chain(self.more_keys.iter())
    }

    /// Make `key` lead here too.
    fn add_key(&mut self, key: &Arc<str>) {
        let first = self.inc.links.merged_into.is_none() && self.inc.key == *key;
        if !first && !self.more_keys.contains(key) {
            self.more_keys.push(key.clone());
        }
    }

    fn new(inc: Incident, root: Option<CiIdx>, at: Timestamp) -> Tracked {
        Tracked {
            inc,
            firing: 0,
            last_end: MaybeTime::NONE,
            resolved_seen: MaybeTime::NONE,
            root: MaybeCi::of(root),
            cis: root.into_iter().collect(),
            first: at,
            last: at,
            more_keys: ThinVec::new(),
            rule_priority: None,
            rule_impact: None,
            assigned_by_rule: false,
            cmdb_impact: Level::MEDIUM,
            priority_set: None,
        }
    }
}

pub struct Engine {
    cfg: EngineConfig,
    rules: Arc<RuleSet>,
    cmdb: Arc<Cmdb>,
    /// What each CI depends on, as root inference asked it (cleared with
    /// the CMDB).
    upstream_cache: FxHashMap<crate::cmdb::CiIdx, Arc<[crate::cmdb::CiIdx]>>,
    /// Shared by every engine of the instance: a bulk import builds the
    /// next book once, off the engine, and swaps it in.
    changes: Arc<ChangeBook>,
    problems: ProblemBook,
    table: AlertTable,
    /// Boxed values: a map keeps ~30 % of its slots empty, and a slot
    /// of a 640-byte `Tracked` inline would cost that much for nothing.
    incidents: FxHashMap<IncidentId, Box<Tracked>>,
    /// Active incidents at the last SLA check, and `incidents_created`
    /// then (see [`Engine::load`]).
    active_counted: usize,
    active_counted_at: u64,
    /// Key → the latest incident with that key (active or recently resolved).
    by_key: FxHashMap<Arc<str>, IncidentId>,
    /// Each incident as outbound destinations last heard of it (only kept
    /// when destinations are configured): the next batch tells them what
    /// changed since. Beside `incidents`, not in it: most engines have none.
    notified: FxHashMap<IncidentId, Box<Incident>>,
    /// Incidents some destination has not heard of yet (settle delay),
    /// when each is next looked at (entries may be stale: `announce`
    /// decides from the incident), and the destinations told for the
    /// first time since the last batch. See `announce.rs`.
    announcing: FxHashMap<IncidentId, announce::Announcing>,
    announce_due: announce::DueQueue,
    told_now: FxHashMap<IncidentId, u64>,
    /// The latest engine time seen (announcements are decided on it).
    clock: Timestamp,
    /// See [`Engine::page_delays`].
    page_delays: Vec<Duration>,
    /// Texts many incidents carry (runbook URLs), one allocation each;
    /// those no incident holds any more leave at the memory sweep.
    shared: FxHashSet<Arc<str>>,
    /// The key of an alert not yet placed (no allocation per new alert).
    unplaced: Arc<str>,
    due: BTreeSet<(Timestamp, IncidentId)>,
    next_id: i64,
    /// Work shard this engine owns, and the id stride that keeps the ids of
    /// shards apart (id ≡ shard mod stride) when several write one store.
    shard: u32,
    id_stride: i64,
    ops: Vec<StoreOp>,
    /// Sequence number of the batch `ops` will become.
    seq: u64,
    dirty_alerts: FxHashSet<Fingerprint>,
    /// Seconds from opening to acknowledgement / resolution since the last
    /// `take_lifecycle` (for the MTTA / MTTR histograms).
    acked_after: Vec<f64>,
    resolved_after: Vec<f64>,
    /// Seconds each rule evaluation took since the last `take_lifecycle`.
    /// Measured with the monotonic clock for telemetry only: no decision
    /// depends on it, so replay stays deterministic.
    rule_seconds: Vec<f64>,
    /// Lifecycle steps since the last `take_lifecycle` (empty, and no
    /// allocation, while alerts only repeat or join).
    lifecycle: Vec<(IncidentId, Lifecycle)>,
    /// Incidents changed in the current batch.
    upserts: FxHashSet<IncidentId>,
    /// Engine time of the last memory sweep.
    last_sweep: Timestamp,
    pub stats: Stats,
}

const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Urgency from the `severity` label, the convention of Prometheus rule sets.
pub fn urgency_from_severity(severity: Option<&str>) -> Level {
    match severity.map(str::to_ascii_lowercase).as_deref() {
        Some("critical" | "page" | "emergency" | "fatal" | "disaster") => Level::HIGH,
        Some("error" | "warning" | "major" | "high") => Level::MEDIUM,
        _ => Level::LOW,
    }
}

/// `n` and its noun, singular or plural ("1 service", "3 services").
pub(crate) fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn title_for(alert: &Alert) -> String {
    let name = alert.alertname();
    let name = if name.is_empty() { "alert" } else { name };
    match alert.annotations.get("summary").filter(|s| !s.is_empty()) {
        Some(s) if s.contains(name) => s.to_string(),
        Some(s) => format!("{name}: {s}"),
        None => match correlate::target(alert) {
            Some(t) => format!(
                "{name} on {}",
                t.split_once(':').map_or(t.as_str(), |(_, v)| v)
            ),
            None => name.to_string(),
        },
    }
}

fn runbooks_of<'a>(alert: &'a Alert, decision: &'a Decision) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for key in ["runbook_url", "runbook"] {
        if let Some(u) = alert.annotations.get(key).filter(|u| !u.is_empty()) {
            out.push(u);
        }
    }
    out.extend(decision.runbooks.iter().map(String::as_str));
    out
}

/// The one allocation of `s` in `set`, made on first sight.
fn intern_in(set: &mut FxHashSet<Arc<str>>, s: &str) -> Arc<str> {
    if let Some(k) = set.get(s) {
        return k.clone();
    }
    let k: Arc<str> = s.into();
    set.insert(k.clone());
    k
}

/// Put `s` in `v` once, shared (rule names come shared from the rule set).
fn push_shared(v: &mut ThinVec<Arc<str>>, s: &Arc<str>) -> bool {
    if v.contains(s) {
        false
    } else {
        push_tight(v, s.clone());
        true
    }
}

fn push_unique(v: &mut ThinVec<String>, s: &str) -> bool {
    if v.iter().any(|x| x == s) {
        false
    } else {
        push_tight(v, s.to_string());
        true
    }
}

/// Push, but give a list's first element room for one only: most lists
/// of an incident (CIs, rules, runbooks, alerts) keep one element, and
/// a list's first growth to four costs 3x that in every active incident.
pub(crate) fn push_tight<T>(v: &mut ThinVec<T>, x: T) {
    if v.capacity() == 0 {
        v.reserve_exact(1);
    }
    v.push(x);
}

impl Engine {
    pub fn new(cfg: EngineConfig, rules: Arc<RuleSet>) -> Engine {
        Engine {
            table: AlertTable::new(cfg.flap),
            cfg,
            rules,
            cmdb: Arc::new(Cmdb::empty()),
            upstream_cache: FxHashMap::default(),
            changes: Arc::new(ChangeBook::new()),
            problems: ProblemBook::default(),
            incidents: FxHashMap::default(),
            active_counted: 0,
            active_counted_at: 0,
            by_key: FxHashMap::default(),
            unplaced: Arc::from(""),
            notified: FxHashMap::default(),
            announcing: FxHashMap::default(),
            announce_due: announce::DueQueue::default(),
            told_now: FxHashMap::default(),
            clock: Timestamp::MIN,
            page_delays: Vec::new(),
            shared: FxHashSet::default(),
            due: BTreeSet::new(),
            next_id: 1,
            shard: 0,
            id_stride: 1,
            ops: Vec::new(),
            seq: 1,
            dirty_alerts: FxHashSet::default(),
            acked_after: Vec::new(),
            resolved_after: Vec::new(),
            rule_seconds: Vec::new(),
            lifecycle: Vec::new(),
            upserts: FxHashSet::default(),
            last_sweep: Timestamp::MIN,
            stats: Stats::default(),
        }
    }

    /// Make this the engine of one work shard among `stride` (Kafka
    /// partitions): its incidents get ids ≡ `shard` (mod `stride`), so
    /// engines on several instances never hand out the same id.
    pub fn set_shard(&mut self, shard: u32, stride: u32) {
        self.shard = shard;
        self.id_stride = i64::from(stride.max(1));
        self.next_id = self.next_id_above(0);
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The smallest id above `floor` that belongs to this engine's shard.
    fn next_id_above(&self, floor: i64) -> i64 {
        let (s, k) = (i64::from(self.shard), self.id_stride);
        let mut id = (floor - s).div_euclid(k) * k + s;
        while id <= floor || id <= 0 {
            id += k;
        }
        id
    }

    /// Rebuild live state from the store after a restart.
    pub fn restore(&mut self, snap: Snapshot, now: Timestamp) {
        self.next_id = self.next_id.max(self.next_id_above(snap.max_incident_id));
        // Restored keys are interned as placed ones are: one allocation per
        // distinct key, shared by its alerts, incidents and the index.
        let mut interned: FxHashSet<Arc<str>> = FxHashSet::default();
        let mut intern = |s: &str| intern_in(&mut interned, s);
        for a in snap.alerts {
            let st = AlertState::restored(
                a.status,
                a.starts_at,
                a.ends_at,
                a.last_seen,
                a.incident,
                intern(&a.key),
                a.suppressed,
                a.flapping,
                a.deliveries,
            );
            self.table.insert(a.fingerprint, st);
        }
        let mut merged: Vec<(Arc<str>, IncidentId)> = Vec::new();
        for mut inc in snap.incidents {
            inc.key = intern(&inc.key);
            if let Some(sig) = &inc.signature {
                inc.signature = Some(intern(sig));
            }
            let id = inc.id;
            let active = inc.state.is_active();
            if let Some(target) = inc.links.merged_into {
                merged.push((inc.key.clone(), target));
            }
            let (mut firing, mut last_end) = (0u32, None::<Timestamp>);
            let (mut first, mut last) = (inc.opened_at, inc.opened_at);
            let mut keys: Vec<Arc<str>> = vec![inc.key.clone()];
            for fp in &inc.alert_fingerprints {
                if let Some(st) = self.table.get(fp).filter(|st| st.incident() == Some(id)) {
                    match st.status {
                        AlertStatus::Firing => firing += 1,
                        AlertStatus::Resolved => last_end = last_end.max(st.ends_at()),
                    }
                    first = first.min(st.starts_at);
                    last = last.max(st.starts_at);
                    if !keys.contains(&st.key) {
                        keys.push(st.key.clone());
                    }
                }
            }
            if inc.links.merged_into.is_none() {
                for k in &keys {
                    self.by_key.insert(k.clone(), id);
                }
            }
            let mut t = Tracked::new(inc, None, first);
            t.firing = firing;
            t.last_end = MaybeTime::of(last_end);
            t.last = last;
            for k in &keys {
                t.add_key(k);
            }
            t.resolved_seen = MaybeTime::of((!active).then_some(now));
            t.cmdb_impact = t.inc.impact;
            t.priority_set = Some(t.inc.priority);
            // What the store holds was written with its outbox rows: the
            // destinations have heard of it (or will, from the outbox).
            if !self.cfg.outbound.is_empty() {
                self.notified.insert(id, Box::new(t.inc.clone()));
                self.resume_announcing(&t.inc);
            }
            // Rows written before the field existed (or by a run with
            // another hold) are put right on the next save; memory is
            // right from now on.
            t.inc.auto_resolve_at = MaybeTime::NONE;
            if active && firing == 0 {
                let end = last_end.unwrap_or(t.inc.opened_at);
                let due = end.saturating_add(self.hold_for(&t.inc));
                t.inc.auto_resolve_at = MaybeTime::at(due);
                self.due.insert((due, id));
            }
            self.incidents.insert(id, Box::new(t));
        }
        for (key, target) in merged {
            self.by_key.entry(key).or_insert(target);
        }
        self.problems.restore(snap.problems, snap.signed);
        Arc::make_mut(&mut self.changes).upsert_many(snap.changes);
        self.remap_topology();
    }

    /// Swap in a new CMDB (reload): live incidents keep their CI ids and get
    /// the new graph's indexes.
    pub fn set_cmdb(&mut self, cmdb: Arc<Cmdb>) {
        self.cmdb = cmdb;
        self.remap_topology();
    }

    fn remap_topology(&mut self) {
        self.upstream_cache.clear();
        let cmdb = self.cmdb.clone();
        for t in self.incidents.values_mut() {
            t.root = MaybeCi::of(t.inc.root_ci.as_deref().and_then(|r| cmdb.ci_by_id(r)));
            t.cis = t.inc.cis.iter().filter_map(|c| cmdb.ci_by_id(c)).collect();
        }
    }

    pub fn cmdb(&self) -> &Arc<Cmdb> {
        &self.cmdb
    }

    /// Record change records (API or `--changes`); they apply to alerts
    /// processed from now on.
    /// Learn change records; `persist` writes them too (one engine of an
    /// instance persists, the others only learn).
    pub fn add_changes(&mut self, changes: Vec<ChangeRecord>, persist: bool) {
        if persist {
            self.ops.extend(
                changes
                    .iter()
                    .map(|c| StoreOp::UpsertChange(Box::new(c.clone()))),
            );
        }
        Arc::make_mut(&mut self.changes).upsert_many(changes);
    }

    /// The change calendar in force.
    pub fn change_book(&self) -> Arc<ChangeBook> {
        self.changes.clone()
    }

    /// Put a calendar built elsewhere in force (already stored).
    pub fn set_change_book(&mut self, book: Arc<ChangeBook>) {
        self.changes = book;
    }

    /// Number the next batch: engines sharing one writer take their batch
    /// numbers from it, so a sender waits for the right commit.
    pub fn set_seq(&mut self, seq: u64) {
        debug_assert!(!self.has_pending(), "set_seq with ops pending");
        self.seq = seq;
    }

    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        self.rules = rules;
    }

    pub fn active_alerts(&self) -> usize {
        self.table.len()
    }

    pub fn tracked_incidents(&self) -> usize {
        self.incidents.len()
    }

    /// Active incidents by state, for the gauges.
    pub fn active_by_state(&self) -> [(IncidentState, u64); 2] {
        let mut open = 0;
        let mut ack = 0;
        for t in self.incidents.values() {
            match t.inc.state {
                IncidentState::Open => open += 1,
                IncidentState::Acknowledged => ack += 1,
                IncidentState::Resolved => {}
            }
        }
        [
            (IncidentState::Open, open),
            (IncidentState::Acknowledged, ack),
        ]
    }

    pub fn active_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents
            .values()
            .map(|t| &t.inc)
            .filter(|i| i.state.is_active())
    }

    /// The batch number pending ops will be committed under (0 if none).
    pub fn pending_seq(&self) -> u64 {
        if self.has_pending() { self.seq } else { 0 }
    }

    fn has_pending(&self) -> bool {
        !self.ops.is_empty() || !self.upserts.is_empty()
    }

    pub fn incident(&self, id: IncidentId) -> Option<&Incident> {
        self.incidents.get(&id).map(|t| &t.inc)
    }

    /// Put the SLA thresholds active incidents have passed on their
    /// timelines, each once (the marks are stored with the incident), at
    /// the instant it was passed.
    fn check_sla(&mut self, now: Timestamp) {
        use crate::slo::sla::incident_sla;
        const MARKS: [[&str; 3]; 2] = [
            ["response_50", "response_75", "response_breached"],
            ["resolution_50", "resolution_75", "resolution_breached"],
        ];
        let mut due: Vec<(IncidentId, usize, usize, Timestamp, u64)> = Vec::new();
        let mut active = 0;
        for (id, t) in &self.incidents {
            if !t.inc.state.is_active() {
                continue;
            }
            active += 1;
            let sla = incident_sla(&self.cmdb, &t.inc, now, &self.cfg.sla_pause_on);
            for (k, timer) in [sla.response, sla.resolution].into_iter().enumerate() {
                let Some(timer) = timer else { continue };
                let passed = [timer.warned_50_at, timer.warned_75_at, timer.breached_at];
                for (j, at) in passed.into_iter().enumerate() {
                    if let Some(at) = at
                        && !t.inc.sla_marks.iter().any(|m| m == MARKS[k][j])
                    {
                        due.push((*id, k, j, at, timer.target_seconds));
                    }
                }
            }
        }
        self.active_counted = active;
        self.active_counted_at = self.stats.incidents_created;
        for (id, k, j, at, target) in due {
            let what = ["response", "resolution"][k];
            let target = crate::slo::sla::format_target(target);
            let (kind, message) = if j == 2 {
                (
                    TimelineKind::SlaBreached,
                    format!("SLA {what} target of {target} breached"),
                )
            } else {
                (
                    TimelineKind::SlaWarning,
                    format!("SLA {what}: {} % of the {target} target used", [50, 75][j]),
                )
            };
            self.timeline(id, at, kind, message, None);
            if let Some(t) = self.incidents.get_mut(&id) {
                t.inc.sla_marks.push(MARKS[k][j].to_string());
            }
            self.save_incident(id, now);
        }
    }

    /// Durations and lifecycle steps recorded since the last call, for
    /// the histograms and the log.
    pub fn take_lifecycle(&mut self) -> Observations {
        let events = std::mem::take(&mut self.lifecycle)
            .into_iter()
            .filter_map(|(id, what)| {
                let inc = &self.incidents.get(&id)?.inc;
                Some(LifecycleEvent {
                    incident: id,
                    what,
                    priority: inc.priority,
                    state: inc.state,
                    root_ci: inc.root_ci.as_deref().map(str::to_owned),
                    title: inc.title.to_string(),
                })
            })
            .collect();
        Observations {
            acked_after: std::mem::take(&mut self.acked_after),
            resolved_after: std::mem::take(&mut self.resolved_after),
            rule_seconds: std::mem::take(&mut self.rule_seconds),
            events,
        }
    }

    /// Record a lifecycle step for the log.
    fn lived(&mut self, id: IncidentId, what: Lifecycle) {
        self.lifecycle.push((id, what));
    }

    /// `s`, shared with every other holder of the same text.
    fn share(&mut self, s: &str) -> Arc<str> {
        intern_in(&mut self.shared, s)
    }

    /// Ops produced since the last call, as batch `seq`.
    pub fn take_batch(&mut self) -> Option<(u64, Vec<StoreOp>)> {
        if !self.has_pending() {
            return None;
        }
        let mut ids: Vec<IncidentId> = self.upserts.drain().collect();
        ids.sort();
        let outbound = !self.cfg.outbound.is_empty();
        for id in ids {
            // Before the row is written: it says who is still waiting.
            let (first, waiting) = self.announce_for_batch(id);
            if let Some(t) = self.incidents.get_mut(&id) {
                self.ops
                    .push(StoreOp::UpsertIncident(Box::new(t.inc.clone())));
                if outbound {
                    // The outbox rows ride in the same batch, so they are
                    // committed in the same transaction as the change. A
                    // destination told for the first time hears of it as
                    // it is now; one still waiting, nothing yet.
                    use crate::domain::outbox::{any_matches, changes};
                    let before = self.notified.get(&id).map(|b| &**b);
                    let news = changes(before, &t.inc);
                    let whole = if first == 0 {
                        Vec::new()
                    } else {
                        changes(None, &t.inc)
                    };
                    for (k, d) in self.cfg.outbound.iter().enumerate() {
                        let bit = 1u64 << k;
                        let kinds = if first & bit != 0 {
                            &whole
                        } else if waiting & bit != 0 {
                            continue;
                        } else {
                            &news
                        };
                        let by_rule = t.inc.links.notify.contains(&d.name);
                        for &kind in kinds {
                            if by_rule || any_matches(&d.routes, &t.inc, kind) {
                                self.ops.push(StoreOp::Outbox(Box::new(
                                    crate::store::OutboxMessage {
                                        destination: d.name.clone(),
                                        kind,
                                        at: t.inc.updated_at,
                                        incident: t.inc.clone(),
                                    },
                                )));
                            }
                        }
                    }
                    self.notified.insert(id, Box::new(t.inc.clone()));
                }
            }
        }
        let seq = self.seq;
        self.seq += 1;
        Some((seq, std::mem::take(&mut self.ops)))
    }

    fn hold_for(&self, inc: &Incident) -> Duration {
        if inc.flapping {
            self.cfg.auto_resolve_hold.max(self.cfg.flap.window)
        } else {
            self.cfg.auto_resolve_hold
        }
    }

    fn timeline(
        &mut self,
        id: IncidentId,
        at: Timestamp,
        kind: TimelineKind,
        message: String,
        actor: Option<String>,
    ) {
        self.ops.push(StoreOp::Timeline {
            incident: id,
            entry: TimelineEntry {
                at,
                kind,
                message,
                actor,
            },
        });
    }

    fn save_incident(&mut self, id: IncidentId, now: Timestamp) {
        if let Some(t) = self.incidents.get_mut(&id) {
            t.inc.updated_at = now;
            // `auto_resolve_at` is the engine's own due time (the stored
            // incident tells when the hold ends); never on a closed one.
            if !t.inc.state.is_active() {
                t.inc.auto_resolve_at = MaybeTime::NONE;
            }
            // Written once per batch however often it changed (take_batch).
            self.upserts.insert(id);
        }
    }

    /// Apply a batch of events at engine time `now`.
    pub fn ingest(&mut self, events: Vec<Event>, now: Timestamp) -> IngestOutcome {
        self.clock = self.clock.max(now);
        let mut out = IngestOutcome::default();
        // Alerts new in this call: a note about one goes on its incident.
        let mut fresh: Vec<crate::domain::Fingerprint> = Vec::new();
        for ev in events {
            if !matches!(ev, Event::Note { .. }) {
                out.accepted += 1;
            }
            match ev {
                Event::Alert(a) => {
                    let fp = a.fingerprint;
                    let new = a.status == AlertStatus::Firing && self.table.get(&fp).is_none();
                    self.on_alert(a, now, &mut out);
                    if new {
                        fresh.push(fp);
                    }
                }
                Event::Note {
                    fingerprint,
                    at,
                    note,
                } => {
                    let target = fresh
                        .contains(&fingerprint)
                        .then(|| self.table.get(&fingerprint).and_then(|st| st.incident()))
                        .flatten();
                    if let Some(id) = target {
                        self.timeline(id, at, TimelineKind::EventTimeClamped, note, None);
                        out.wait_seq = out.wait_seq.max(self.seq);
                    }
                }
                Event::Acknowledge {
                    fingerprint,
                    at,
                    actor,
                } => {
                    let target = self.table.get(&fingerprint).and_then(|st| st.incident());
                    match target {
                        Some(id) => match self.acknowledge(id, &actor, at.max(now)) {
                            Ok(_) => out.changed += 1,
                            Err(_) => out.ignored += 1,
                        },
                        None => {
                            self.stats.unknown_ack += 1;
                            out.ignored += 1;
                        }
                    }
                    if let Some(st) = self.table.get(&fingerprint) {
                        out.wait_seq = out.wait_seq.max(st.written_seq);
                    }
                }
            }
        }
        if self.has_pending() {
            out.wait_seq = out.wait_seq.max(self.seq);
        }
        out
    }

    /// Alerts these events would add to memory, and whether any would
    /// open an incident (a firing alert not known yet).
    pub fn growth(&self, events: &[Event]) -> (usize, bool) {
        let new = events
            .iter()
            .filter(|e| {
                matches!(e, Event::Alert(a)
                    if a.status == AlertStatus::Firing && self.table.get(&a.fingerprint).is_none())
            })
            .count();
        (new, new > 0)
    }

    /// Alerts held in memory, and incidents active: counted at the last
    /// SLA check (each tick) plus those opened since, so that the caps
    /// cost no scan per request.
    pub fn load(&self) -> (usize, usize) {
        let opened = self
            .stats
            .incidents_created
            .saturating_sub(self.active_counted_at);
        (
            self.table.len(),
            self.active_counted + usize::try_from(opened).unwrap_or(usize::MAX),
        )
    }

    fn on_alert(&mut self, alert: Alert, now: Timestamp, out: &mut IngestOutcome) {
        self.stats.received += 1;
        let fp = alert.fingerprint;
        match self.table.observe(&alert, now) {
            Observation::New => {
                self.stats.new_alerts += 1;
                out.new += 1;
                let mut st = AlertState::new(&alert, now, self.unplaced.clone());
                if self.place(&alert, &mut st, now, true) {
                    out.suppressed += 1;
                }
                st.written_seq = self.seq;
                self.table.insert(fp, st);
            }
            Observation::UnknownResolved => {
                self.stats.unknown_resolved += 1;
                out.ignored += 1;
            }
            Observation::Repeat | Observation::Stale => {
                let stale = self
                    .table
                    .get(&fp)
                    .is_some_and(|st| st.status == AlertStatus::Resolved)
                    && alert.status == AlertStatus::Firing;
                if stale {
                    self.stats.stale += 1;
                }
                self.stats.deduplicated += 1;
                out.deduplicated += 1;
                if let Some(st) = self.table.get(&fp) {
                    out.wait_seq = out.wait_seq.max(st.written_seq);
                    self.dirty_alerts.insert(fp);
                }
            }
            Observation::Refired { flapping_started } => {
                self.stats.state_changes += 1;
                out.changed += 1;
                self.on_refire(&alert, now, flapping_started);
            }
            Observation::Resolved { flapping_started } => {
                self.stats.state_changes += 1;
                out.changed += 1;
                self.on_resolve(&alert, now, flapping_started);
            }
        }
    }

    fn on_refire(&mut self, alert: &Alert, now: Timestamp, flapping_started: bool) {
        let fp = alert.fingerprint;
        let Some(mut st) = self.table.alerts.remove(&fp) else {
            return;
        };
        let current = st.incident().filter(|id| {
            self.incidents
                .get(id)
                .is_some_and(|t| t.inc.state.is_active())
        });
        match current {
            Some(id) if !st.suppressed => {
                if let Some(t) = self.incidents.get_mut(&id) {
                    t.firing += 1;
                    if let Some(due) = t.inc.auto_resolve_at.take() {
                        self.due.remove(&(due, id));
                    }
                }
                self.timeline(
                    id,
                    alert.starts_at,
                    TimelineKind::AlertRefired,
                    format!("alert {} ({}) fired again", alert.alertname(), fp),
                    None,
                );
                if flapping_started {
                    self.mark_flapping(id, alert);
                }
                self.save_incident(id, now);
                self.ops
                    .push(StoreOp::UpdateAlert(Box::new(update_of(fp, &st, None))));
            }
            _ => {
                // Its incident is gone (resolved) or it was suppressed: decide
                // afresh, as for a new alert; rules may have changed since.
                self.place(alert, &mut st, now, false);
                if flapping_started && let Some(id) = st.incident() {
                    self.mark_flapping(id, alert);
                    self.save_incident(id, now);
                }
            }
        }
        st.written_seq = self.seq;
        self.table.insert(fp, st);
    }

    fn on_resolve(&mut self, alert: &Alert, now: Timestamp, flapping_started: bool) {
        let fp = alert.fingerprint;
        let Some(st) = self.table.get_mut(&fp) else {
            return;
        };
        st.written_seq = self.seq;
        let update = update_of(fp, st, None);
        let incident = st.incident();
        let end = st.ends_at().unwrap_or(now);
        let suppressed = st.suppressed;
        self.ops.push(StoreOp::UpdateAlert(Box::new(update)));
        let Some(id) = incident else { return };
        if suppressed {
            return;
        }
        let hold = match self.incidents.get(&id) {
            Some(t) if t.inc.state.is_active() => self.hold_for(&t.inc),
            _ => return,
        };
        self.timeline(
            id,
            end,
            TimelineKind::AlertResolved,
            format!("alert {} ({fp}) resolved", alert.alertname()),
            None,
        );
        if flapping_started {
            self.mark_flapping(id, alert);
        }
        let hold = self
            .incidents
            .get(&id)
            .map_or(hold, |t| self.hold_for(&t.inc));
        if let Some(t) = self.incidents.get_mut(&id) {
            t.firing = t.firing.saturating_sub(1);
            t.last_end = MaybeTime::of(t.last_end.get().max(Some(end)));
            if t.firing == 0 {
                let due = t.last_end.get().unwrap_or(end).saturating_add(hold);
                if let Some(old) = t.inc.auto_resolve_at.replace(due) {
                    self.due.remove(&(old, id));
                }
                self.due.insert((due, id));
            }
        }
        self.save_incident(id, now);
    }

    fn mark_flapping(&mut self, id: IncidentId, alert: &Alert) {
        let Some(t) = self.incidents.get_mut(&id) else {
            return;
        };
        if t.inc.flapping {
            return;
        }
        t.inc.flapping = true;
        self.stats.flapping_detected += 1;
        let msg = format!(
            "alert {} ({}) is flapping ({} state changes within {}s): the incident stays open until it is quiet",
            alert.alertname(),
            alert.fingerprint,
            self.cfg.flap.changes,
            self.cfg.flap.window.as_secs()
        );
        self.timeline(id, alert.event_time(), TimelineKind::Flapping, msg, None);
    }

    /// Acknowledge an active incident.
    pub fn acknowledge(
        &mut self,
        id: IncidentId,
        actor: &str,
        now: Timestamp,
    ) -> Result<Incident, EngineError> {
        // Field-wise borrows: the SLA below reads the CMDB while `t` is held.
        let gone = self.inactive(id);
        let t = self
            .incidents
            .get_mut(&id)
            .filter(|t| t.inc.state.is_active())
            .ok_or(gone)?;
        if t.inc.state == IncidentState::Acknowledged {
            return Err(EngineError::AlreadyAcknowledged(id));
        }
        // An incident opened "in the future" by a fast clock is not
        // acknowledged before it opened.
        let now = now.max(t.inc.opened_at);
        t.inc.state = IncidentState::Acknowledged;
        t.inc.acknowledged_at = Some(now);
        let sla = crate::slo::sla::incident_sla(&self.cmdb, &t.inc, now, &self.cfg.sla_pause_on);
        count_sla(&mut self.stats, 0, sla.response.as_ref());
        self.acked_after.push(seconds_between(t.inc.opened_at, now));
        t.inc.acknowledged_by = Some(actor.into());
        self.timeline(
            id,
            now,
            TimelineKind::Acknowledged,
            format!("acknowledged by {actor}"),
            Some(actor.to_string()),
        );
        self.lived(
            id,
            Lifecycle::Acknowledged {
                by: actor.to_string(),
            },
        );
        self.save_incident(id, now);
        Ok(self.incidents[&id].inc.clone())
    }

    /// The tracked incident `id` if it is active (what a person's action
    /// needs), else `NotActive`.
    fn active_mut(&mut self, id: IncidentId) -> Result<&mut Tracked, EngineError> {
        let gone = self.inactive(id);
        self.incidents
            .get_mut(&id)
            .filter(|t| t.inc.state.is_active())
            .map(|t| &mut **t)
            .ok_or(gone)
    }

    /// Why an action cannot apply to `id`, which is not active: resolved
    /// (still tracked), or not known here at all.
    fn inactive(&self, id: IncidentId) -> EngineError {
        match self.incidents.get(&id) {
            Some(t) if !t.inc.state.is_active() => EngineError::AlreadyResolved(id),
            _ => EngineError::NotActive(id),
        }
    }

    /// Put an active incident on hold for `reason`; the SLA clocks stop if
    /// the reason is one of `sla_pause_on`.
    pub fn hold(
        &mut self,
        id: IncidentId,
        reason: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<Incident, EngineError> {
        let t = self.active_mut(id)?;
        if t.inc.current_hold().is_some() {
            return Err(EngineError::AlreadyOnHold(id));
        }
        let now = now.max(t.inc.opened_at);
        t.inc.holds.push(crate::domain::Hold {
            reason: reason.to_string(),
            start: now,
            end: None,
            by: Some(actor.to_string()),
        });
        let pauses = self.cfg.sla_pause_on.iter().any(|r| r == reason);
        self.timeline(
            id,
            now,
            TimelineKind::OnHold,
            format!(
                "on hold ({reason}) by {actor}{}",
                if pauses { "; SLA clocks paused" } else { "" }
            ),
            Some(actor.to_string()),
        );
        self.lived(
            id,
            Lifecycle::OnHold {
                reason: reason.to_string(),
                by: actor.to_string(),
            },
        );
        self.save_incident(id, now);
        Ok(self.incidents[&id].inc.clone())
    }

    /// Take an incident off hold; its SLA clocks run again.
    pub fn resume(
        &mut self,
        id: IncidentId,
        actor: &str,
        now: Timestamp,
    ) -> Result<Incident, EngineError> {
        let t = self.active_mut(id)?;
        let Some(h) = t.inc.holds.last_mut().filter(|h| h.end.is_none()) else {
            return Err(EngineError::NotOnHold(id));
        };
        h.end = Some(now.max(h.start));
        let reason = h.reason.clone();
        self.timeline(
            id,
            now,
            TimelineKind::Resumed,
            format!("resumed by {actor} after hold ({reason})"),
            Some(actor.to_string()),
        );
        self.lived(
            id,
            Lifecycle::Resumed {
                by: actor.to_string(),
            },
        );
        self.save_incident(id, now);
        Ok(self.incidents[&id].inc.clone())
    }

    /// Resolve an active incident by hand.
    pub fn resolve(
        &mut self,
        id: IncidentId,
        actor: &str,
        now: Timestamp,
    ) -> Result<Incident, EngineError> {
        let active = self
            .incidents
            .get(&id)
            .is_some_and(|t| t.inc.state.is_active());
        if !active {
            return Err(self.inactive(id));
        }
        self.do_resolve(
            id,
            now,
            now,
            format!("resolved by {actor}"),
            Some(actor.to_string()),
        );
        Ok(self.incidents[&id].inc.clone())
    }

    fn do_resolve(
        &mut self,
        id: IncidentId,
        at: Timestamp,
        now: Timestamp,
        why: String,
        actor: Option<String>,
    ) {
        let Some(t) = self.incidents.get_mut(&id) else {
            return;
        };
        // Never resolved before it opened (or was acknowledged).
        let at = at
            .max(t.inc.opened_at)
            .max(t.inc.acknowledged_at.unwrap_or(at));
        let unanswered = t.inc.acknowledged_at.is_none();
        t.inc.state = IncidentState::Resolved;
        t.inc.resolved_at = Some(at);
        // Resolving ends a hold: the incident is no longer waiting.
        if let Some(h) = t.inc.holds.last_mut().filter(|h| h.end.is_none()) {
            h.end = Some(at.max(h.start));
        }
        t.resolved_seen = MaybeTime::at(now);
        let sla = crate::slo::sla::incident_sla(&self.cmdb, &t.inc, now, &self.cfg.sla_pause_on);
        if unanswered {
            // Resolved before anyone acknowledged: that was the response.
            count_sla(&mut self.stats, 0, sla.response.as_ref());
        }
        count_sla(&mut self.stats, 1, sla.resolution.as_ref());
        self.resolved_after
            .push(seconds_between(t.inc.opened_at, at));
        if let Some(due) = t.inc.auto_resolve_at.take() {
            self.due.remove(&(due, id));
        }
        self.stats.incidents_resolved += 1;
        self.lived(id, Lifecycle::Resolved { why: why.clone() });
        self.timeline(id, at, TimelineKind::Resolved, why, actor);
        self.record_problem(id, at, now);
        self.save_incident(id, now);
    }

    /// Count a resolved incident towards problem management; open or link
    /// the problem record when its signature keeps coming back.
    fn record_problem(&mut self, id: IncidentId, at: Timestamp, now: Timestamp) {
        let Some(t) = self.incidents.get(&id) else {
            return;
        };
        let Some(sig) = t.inc.signature.clone() else {
            return;
        };
        let root = t.inc.root_ci.clone();
        let alertname = sig.rsplit('|').next().unwrap_or_default().to_string();
        let opened = t.inc.opened_at;
        let out = self.problems.record(
            &sig,
            root.as_deref(),
            &alertname,
            id,
            opened,
            self.cfg.problems,
            self.cfg.similar_limit,
        );
        if let Some(p) = out.opened {
            self.stats.problems_opened += 1;
            let msg = format!(
                "problem {} opened: {} incidents with root {} and alert {} within {} days",
                p.id,
                p.incidents.len(),
                root.as_deref().unwrap_or("-"),
                alertname,
                self.cfg.problems.period.as_secs() / 86_400
            );
            let mut elsewhere = Vec::new();
            for inc in &p.incidents {
                match self.incidents.get_mut(inc) {
                    Some(x) => {
                        x.inc.links.problem = Some(p.id.as_str().into());
                        self.upserts.insert(*inc);
                    }
                    None => elsewhere.push(*inc),
                }
                self.timeline(*inc, at, TimelineKind::Problem, msg.clone(), None);
            }
            if !elsewhere.is_empty() {
                self.ops.push(StoreOp::SetProblem {
                    incidents: elsewhere,
                    problem: p.id.clone(),
                });
            }
            self.ops.push(StoreOp::UpsertProblem(Box::new(p)));
        } else if let Some(pid) = out.problem {
            if let Some(x) = self.incidents.get_mut(&id)
                && x.inc.links.problem.is_none()
            {
                x.inc.links.problem = Some(pid.as_str().into());
                self.timeline(
                    id,
                    at,
                    TimelineKind::Problem,
                    format!("linked to problem {pid}"),
                    None,
                );
            }
            if let Some(p) = self.problems.problem(&sig).cloned() {
                self.ops.push(StoreOp::UpsertProblem(Box::new(p)));
            }
        }
        let _ = now;
    }

    /// Advance time: resolve every incident whose hold has passed, then the
    /// periodic upkeep (SLA marks, forgetting state no longer needed).
    pub fn tick(&mut self, now: Timestamp) {
        self.settle_due(now, usize::MAX);
        self.housekeep(now);
    }

    /// Auto-resolve at most `limit` incidents whose hold has ended; true
    /// when more are due. The daemon calls it after every command batch
    /// with a small limit, so that a storm that resolved together (and
    /// comes due together a hold later) is written as several small
    /// commits between senders' changes, not one that they all wait on.
    /// Announcements whose settle delay ended are decided here too, in
    /// time order with the resolves: one resolved before its delay ended
    /// is not announced, one resolved after it was.
    pub fn settle_due(&mut self, now: Timestamp, limit: usize) -> bool {
        let more = self.settle_due_steps(now, limit);
        self.clock = self.clock.max(now);
        more
    }

    /// [`Engine::settle_due`], the clock stepping through each due time.
    fn settle_due_steps(&mut self, now: Timestamp, limit: usize) -> bool {
        let mut settled = 0;
        loop {
            let resolve = self.due.first().map(|d| d.0).filter(|&d| d <= now);
            let announce = self.announce_due.first().map(|d| d.0).filter(|&d| d <= now);
            if resolve.is_none() && announce.is_none() {
                return false;
            }
            if settled >= limit {
                return true;
            }
            if let Some(a) = announce
                && resolve.is_none_or(|r| a <= r)
            {
                self.clock = self.clock.max(a);
                settled += self.announce_due_by(a, 1);
                continue;
            }
            let Some((due, id)) = self.due.pop_first() else {
                return false;
            };
            self.clock = self.clock.max(due);
            let ready = self.incidents.get(&id).is_some_and(|t| {
                t.inc.state.is_active() && t.firing == 0 && t.inc.auto_resolve_at.get() == Some(due)
            });
            if ready {
                settled += 1;
                let hold = self
                    .incidents
                    .get(&id)
                    .map_or(self.cfg.auto_resolve_hold, |t| self.hold_for(&t.inc));
                let n = self
                    .incidents
                    .get(&id)
                    .map_or(0, |t| t.inc.alert_fingerprints.len());
                // Resolved when the last alert ended; the hold only confirmed it.
                let at = self
                    .incidents
                    .get(&id)
                    .and_then(|t| t.last_end.get())
                    .unwrap_or(due);
                self.do_resolve(
                    id,
                    at,
                    now,
                    format!(
                        "auto-resolved: all {n} alerts resolved and stayed resolved for {}s",
                        hold.as_secs()
                    ),
                    None,
                );
            }
        }
    }

    /// The periodic part of [`Engine::tick`] without the due timers.
    pub fn housekeep(&mut self, now: Timestamp) {
        self.check_sla(now);
        // Sweeping walks every alert: do it every 30 s of engine time, not
        // on every tick (replay ticks once per body).
        if self.last_sweep != Timestamp::MIN && now.since(self.last_sweep) < SWEEP_EVERY {
            return;
        }
        if !self.cfg.alert_timeout.is_zero() {
            self.expire_silent_alerts(now);
        }
        self.last_sweep = now;
        let window = self.cfg.reopen_window;
        let before = self.incidents.len();
        let upserts = &self.upserts;
        self.incidents.retain(|id, t| {
            upserts.contains(id)
                || t.resolved_seen
                    .get()
                    .is_none_or(|seen| now.since(seen) <= window)
        });
        if self.incidents.len() != before {
            let incidents = &self.incidents;
            self.by_key.retain(|_, id| incidents.contains_key(id));
            self.notified.retain(|id, _| incidents.contains_key(id));
            self.announcing.retain(|id, _| incidents.contains_key(id));
            self.announce_due.shrink();
            self.shared.retain(|s| Arc::strong_count(s) > 1);
        }
        let incidents = &self.incidents;
        self.table.evict(now, self.cfg.alert_retention, |st| {
            st.incident()
                .is_some_and(|id| incidents.get(&id).is_some_and(|t| t.inc.state.is_active()))
        });
    }

    /// Firing alerts not delivered for `alert_timeout` end at their last
    /// delivery, as if their resolve had come (it never will: silenced or
    /// removed upstream); the timeline says why.
    fn expire_silent_alerts(&mut self, now: Timestamp) {
        let timeout = self.cfg.alert_timeout;
        let silent: Vec<(Fingerprint, Timestamp, Timestamp, String)> = self
            .table
            .alerts
            .iter()
            .filter(|(_, st)| {
                st.status == AlertStatus::Firing && st.last_seen.saturating_add(timeout) <= now
            })
            .map(|(fp, st)| {
                // The correlation key starts with the alert name.
                let name = st.key.split('|').next().unwrap_or_default().to_string();
                (*fp, st.starts_at, st.last_seen, name)
            })
            .collect();
        for (fp, starts_at, last_seen, name) in silent {
            let Some(st) = self.table.get_mut(&fp) else {
                continue;
            };
            let end = last_seen.max(starts_at);
            st.status = AlertStatus::Resolved;
            st.set_ends_at(Some(end));
            st.expired = true;
            let incident = st.incident().filter(|_| !st.suppressed);
            self.stats.expired += 1;
            if let Some(id) = incident.filter(|id| {
                self.incidents
                    .get(id)
                    .is_some_and(|t| t.inc.state.is_active())
            }) {
                self.timeline(
                    id,
                    now,
                    TimelineKind::AlertResolved,
                    format!(
                        "alert {name} ({fp}) not delivered for {}s: taken as resolved at its last delivery (silenced or removed upstream?)",
                        timeout.as_secs()
                    ),
                    None,
                );
            }
            let mut labels = LabelSet::new();
            labels.insert("alertname".to_string(), name);
            let alert = Alert {
                fingerprint: fp,
                status: AlertStatus::Resolved,
                labels,
                annotations: LabelSet::new(),
                starts_at,
                ends_at: Some(end),
                source: crate::domain::Source::Api,
                generator_url: String::new(),
            };
            self.on_resolve(&alert, now, false);
        }
    }

    /// Latest pending auto-resolve, so replay can let every hold expire.
    pub fn last_due(&self) -> Option<Timestamp> {
        self.due.last().map(|(t, _)| *t)
    }

    /// The next auto-resolve or announcement check (replay steps through
    /// them after the stream ends).
    pub fn next_due(&self) -> Option<Timestamp> {
        let a = self.announce_due.first().map(|(t, _)| t);
        let r = self.due.first().map(|(t, _)| *t);
        a.into_iter().chain(r).min()
    }

    /// Write coalesced repeat counters (absolute values).
    pub fn flush_touches(&mut self) {
        if !self.dirty_alerts.is_empty() {
            let touches: Vec<Touch> = self
                .dirty_alerts
                .drain()
                .filter_map(|fp| {
                    self.table.get(&fp).map(|st| Touch {
                        fingerprint: fp,
                        last_seen: st.last_seen,
                        deliveries: u64::from(st.deliveries),
                    })
                })
                .collect();
            self.ops.push(StoreOp::TouchAlerts(touches));
        }
    }
}

/// Count a stopped SLA timer (`which`: 0 response, 1 resolution).
fn count_sla(stats: &mut Stats, which: usize, timer: Option<&crate::slo::sla::SlaTimer>) {
    if let Some(t) = timer {
        let breached = t.status == crate::slo::sla::SlaStatus::Breached;
        stats.sla_completed[which][usize::from(breached)] += 1;
    }
}

/// Seconds from `from` to `to` (0 if the clock went backwards).
fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.0 - from.0).max(0) as f64 / 1000.0
}

/// `suppressed`: `None` keeps what the row has, `Some(x)` sets it to `x`.
fn update_of(
    fp: Fingerprint,
    st: &AlertState,
    suppressed: Option<Option<(String, String)>>,
) -> AlertUpdate {
    AlertUpdate {
        fingerprint: fp,
        status: st.status,
        starts_at: st.starts_at,
        ends_at: st.ends_at(),
        incident: st.incident(),
        key: st.key.to_string(),
        suppressed,
        change: None,
        flapping: st.flapping,
        last_seen: st.last_seen,
        deliveries: u64::from(st.deliveries),
    }
}

#[cfg(test)]
mod tests;
