//! The incident state machine: the one owner of live alert and incident
//! state. Pure and synchronous: it takes events and the time, changes its
//! state, and emits [`StoreOp`]s that the writer makes durable. The async
//! wrapper lives in `task.rs`.
//!
//! Times: correlation, flapping, auto-resolve and reopen decisions run on
//! event time (`startsAt`, `endsAt`), so replaying a recorded stream gives the
//! incidents live ingest gave. Memory retention runs on engine time (`now`).

pub mod task;

use crate::correlate;
use crate::dedup::{AlertState, AlertTable, FlapPolicy, Observation};
use crate::domain::{
    Alert, AlertStatus, Fingerprint, Incident, IncidentId, IncidentState, Level, Links, Priority,
    PriorityMatrix, TimelineEntry, TimelineKind, Timestamp,
};
use crate::normalize::Event;
use crate::rules::{Decision, IncidentFacts, RuleInput, RuleSet};
use crate::store::{AlertRecord, AlertUpdate, Snapshot, StoreOp, Touch};
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            auto_resolve_hold: Duration::from_secs(5 * 60),
            reopen_window: Duration::from_secs(60 * 60),
            flap: FlapPolicy::default(),
            alert_retention: Duration::from_secs(60 * 60),
            matrix: PriorityMatrix::default(),
            default_impact: Level::MEDIUM,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("incident {0} not found among open incidents")]
    NotActive(IncidentId),
    #[error("incident {0} is already acknowledged")]
    AlreadyAcknowledged(IncidentId),
}

/// Counters for `/metrics`; monotonic.
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
    pub incidents_created: u64,
    pub incidents_resolved: u64,
    pub incidents_reopened: u64,
    pub flapping_detected: u64,
    pub rule_errors: u64,
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
}

struct Tracked {
    inc: Incident,
    /// Alerts of this incident currently firing.
    firing: u32,
    /// Latest end among its resolved alerts (event time).
    last_end: Option<Timestamp>,
    resolve_due: Option<Timestamp>,
    /// Engine time at which it resolved, for memory retention.
    resolved_seen: Option<Timestamp>,
}

pub struct Engine {
    cfg: EngineConfig,
    rules: Arc<RuleSet>,
    table: AlertTable,
    incidents: FxHashMap<IncidentId, Tracked>,
    /// Key → the latest incident with that key (active or recently resolved).
    by_key: FxHashMap<Box<str>, IncidentId>,
    due: BTreeSet<(Timestamp, IncidentId)>,
    next_id: i64,
    ops: Vec<StoreOp>,
    /// Sequence number of the batch `ops` will become.
    seq: u64,
    dirty_alerts: FxHashSet<Fingerprint>,
    dirty_incidents: FxHashSet<IncidentId>,
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

fn runbooks_of(alert: &Alert, decision: &Decision) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for key in ["runbook_url", "runbook"] {
        if let Some(u) = alert.annotations.get(key).filter(|u| !u.is_empty()) {
            out.push(u.to_string());
        }
    }
    out.extend(decision.runbooks.iter().cloned());
    out
}

fn push_unique(v: &mut Vec<String>, s: &str) -> bool {
    if v.iter().any(|x| x == s) {
        false
    } else {
        v.push(s.to_string());
        true
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig, rules: Arc<RuleSet>) -> Engine {
        Engine {
            table: AlertTable::new(cfg.flap),
            cfg,
            rules,
            incidents: FxHashMap::default(),
            by_key: FxHashMap::default(),
            due: BTreeSet::new(),
            next_id: 1,
            ops: Vec::new(),
            seq: 1,
            dirty_alerts: FxHashSet::default(),
            dirty_incidents: FxHashSet::default(),
            upserts: FxHashSet::default(),
            last_sweep: Timestamp::MIN,
            stats: Stats::default(),
        }
    }

    /// Rebuild live state from the store after a restart.
    pub fn restore(&mut self, snap: Snapshot, now: Timestamp) {
        self.next_id = self.next_id.max(snap.max_incident_id + 1);
        for a in snap.alerts {
            let st = AlertState::restored(
                a.status,
                a.starts_at,
                a.ends_at,
                a.last_seen,
                a.incident,
                a.key.into_boxed_str(),
                a.suppressed,
                a.flapping,
                a.deliveries,
            );
            self.table.insert(a.fingerprint, st);
        }
        for inc in snap.incidents {
            let id = inc.id;
            let active = inc.state.is_active();
            let (mut firing, mut last_end) = (0u32, None::<Timestamp>);
            for fp in &inc.alert_fingerprints {
                if let Some(st) = self.table.get(fp).filter(|st| st.incident == Some(id)) {
                    match st.status {
                        AlertStatus::Firing => firing += 1,
                        AlertStatus::Resolved => last_end = last_end.max(st.ends_at),
                    }
                }
            }
            self.by_key.insert(inc.key.clone().into_boxed_str(), id);
            let mut t = Tracked {
                inc,
                firing,
                last_end,
                resolve_due: None,
                resolved_seen: (!active).then_some(now),
            };
            if active && firing == 0 {
                let end = last_end.unwrap_or(t.inc.opened_at);
                let due = end.saturating_add(self.hold_for(&t.inc));
                t.resolve_due = Some(due);
                self.due.insert((due, id));
            }
            self.incidents.insert(id, t);
        }
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

    /// Ops produced since the last call, as batch `seq`.
    pub fn take_batch(&mut self) -> Option<(u64, Vec<StoreOp>)> {
        if !self.has_pending() {
            return None;
        }
        let mut ids: Vec<IncidentId> = self.upserts.drain().collect();
        ids.sort();
        for id in ids {
            if let Some(t) = self.incidents.get(&id) {
                self.ops
                    .push(StoreOp::UpsertIncident(Box::new(t.inc.clone())));
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
            // Written once per batch however often it changed (take_batch).
            self.upserts.insert(id);
            self.dirty_incidents.remove(&id);
        }
    }

    /// Apply a batch of events at engine time `now`.
    pub fn ingest(&mut self, events: Vec<Event>, now: Timestamp) -> IngestOutcome {
        let mut out = IngestOutcome::default();
        for ev in events {
            out.accepted += 1;
            match ev {
                Event::Alert(a) => self.on_alert(a, now, &mut out),
                Event::Acknowledge {
                    fingerprint,
                    at,
                    actor,
                } => {
                    let target = self.table.get(&fingerprint).and_then(|st| st.incident);
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

    fn on_alert(&mut self, alert: Alert, now: Timestamp, out: &mut IngestOutcome) {
        self.stats.received += 1;
        let fp = alert.fingerprint;
        match self.table.observe(&alert, now) {
            Observation::New => {
                self.stats.new_alerts += 1;
                out.new += 1;
                let key = correlate::correlation_key(&alert);
                let mut st = AlertState::new(&alert, now, key.into_boxed_str());
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
                    if let Some(id) = st.incident
                        && let Some(t) = self.incidents.get_mut(&id)
                    {
                        t.inc.alert_count += 1;
                        self.dirty_incidents.insert(id);
                    }
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

    fn facts_for(&self, key: &str) -> Option<IncidentFacts> {
        let id = self.by_key.get(key)?;
        let t = self.incidents.get(id)?;
        Some(IncidentFacts {
            state: t.inc.state.as_str().to_string(),
            priority: t.inc.priority,
            alert_count: t.inc.alert_count,
            flapping: t.inc.flapping,
        })
    }

    /// Run the rules and put a firing alert into an incident (joining,
    /// reopening or opening one). Returns true when a rule suppressed it.
    fn place(
        &mut self,
        alert: &Alert,
        st: &mut AlertState,
        now: Timestamp,
        first_time: bool,
    ) -> bool {
        let facts = self.facts_for(&st.key);
        let decision = self.rules.evaluate(&RuleInput {
            alert,
            ci: None,
            service: None,
            incident: facts.as_ref(),
        });
        for (rule, err) in &decision.errors {
            self.stats.rule_errors += 1;
            tracing::warn!(rule = %rule, error = %err, "rule condition failed; treated as not matched");
        }
        let suppressed = decision
            .suppress
            .as_ref()
            .map(|s| (s.rule.to_string(), s.reason.clone()));
        st.suppressed = suppressed.is_some();
        st.incident = None;
        if suppressed.is_none() && decision.open {
            let id = self.assign_incident(alert, &st.key, &decision, now);
            st.incident = Some(id);
        }
        if suppressed.is_some() {
            self.stats.suppressed += 1;
        }
        if first_time {
            self.ops.push(StoreOp::InsertAlert(Box::new(AlertRecord {
                fingerprint: alert.fingerprint,
                status: alert.status,
                labels: alert.labels.clone(),
                annotations: alert.annotations.clone(),
                starts_at: alert.starts_at,
                ends_at: alert.ends_at,
                source: alert.source,
                generator_url: alert.generator_url.clone(),
                incident: st.incident,
                key: st.key.to_string(),
                suppressed,
                flapping: st.flapping,
                first_seen: now,
                last_seen: now,
                deliveries: st.deliveries,
            })));
        } else {
            self.ops.push(StoreOp::UpdateAlert(Box::new(update_of(
                alert.fingerprint,
                st,
                Some(suppressed),
            ))));
        }
        st.suppressed
    }

    /// The incident a (non-suppressed) firing alert goes to.
    fn assign_incident(
        &mut self,
        alert: &Alert,
        key: &str,
        decision: &Decision,
        now: Timestamp,
    ) -> IncidentId {
        let urgency = decision.urgency.as_ref().map_or_else(
            || urgency_from_severity(alert.labels.get("severity")),
            |(l, _)| *l,
        );
        let impact = decision
            .impact
            .as_ref()
            .map_or(self.cfg.default_impact, |(l, _)| *l);
        let priority = decision
            .priority
            .as_ref()
            .map_or_else(|| self.cfg.matrix.priority(impact, urgency), |(p, _)| *p);
        let why = match &decision.priority {
            Some((p, rule)) => format!("{p} set by rule {rule}"),
            None => format!(
                "{priority} = impact {} x urgency {} (severity {})",
                impact.get(),
                urgency.get(),
                alert.labels.get("severity").unwrap_or("unset")
            ),
        };
        let at = alert.starts_at;
        let existing = self.by_key.get(key).copied();
        let id = match existing.and_then(|id| {
            self.incidents
                .get(&id)
                .map(|t| (id, t.inc.state, t.inc.resolved_at))
        }) {
            Some((id, state, _)) if state.is_active() => {
                self.timeline(
                    id,
                    at,
                    TimelineKind::AlertJoined,
                    format!(
                        "alert {} ({}) joined: same correlation key {key}",
                        alert.alertname(),
                        alert.fingerprint
                    ),
                    None,
                );
                id
            }
            Some((id, _, resolved_at))
                if resolved_at.is_none_or(|r| at.since(r) <= self.cfg.reopen_window) =>
            {
                self.reopen(id, alert, now);
                id
            }
            _ => self.open(alert, key, priority, impact, urgency, &why, now),
        };
        self.join(id, alert, priority, impact, urgency, &why, decision, now);
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        alert: &Alert,
        key: &str,
        priority: Priority,
        impact: Level,
        urgency: Level,
        why: &str,
        now: Timestamp,
    ) -> IncidentId {
        let id = IncidentId(self.next_id);
        self.next_id += 1;
        self.stats.incidents_created += 1;
        let inc = Incident {
            id,
            key: key.to_string(),
            state: IncidentState::Open,
            priority,
            impact,
            urgency,
            title: title_for(alert),
            root_ci: None,
            cis: Vec::new(),
            impacted_services: Vec::new(),
            assignment_group: None,
            alert_fingerprints: Vec::new(),
            alert_count: 0,
            opened_at: alert.starts_at,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            updated_at: now,
            reopen_count: 0,
            flapping: false,
            rules: Vec::new(),
            links: Links::default(),
        };
        self.incidents.insert(
            id,
            Tracked {
                inc,
                firing: 0,
                last_end: None,
                resolve_due: None,
                resolved_seen: None,
            },
        );
        self.by_key.insert(key.into(), id);
        self.timeline(
            id,
            alert.starts_at,
            TimelineKind::Opened,
            format!(
                "opened by alert {} ({}) with key {key}; priority {why}",
                alert.alertname(),
                alert.fingerprint
            ),
            None,
        );
        id
    }

    fn reopen(&mut self, id: IncidentId, alert: &Alert, now: Timestamp) {
        let Some(t) = self.incidents.get_mut(&id) else {
            return;
        };
        t.inc.state = IncidentState::Open;
        t.inc.resolved_at = None;
        t.inc.acknowledged_at = None;
        t.inc.acknowledged_by = None;
        t.inc.reopen_count += 1;
        t.resolved_seen = None;
        self.stats.incidents_reopened += 1;
        let msg = format!(
            "reopened: alert {} ({}) fired again within the reopen window",
            alert.alertname(),
            alert.fingerprint
        );
        self.timeline(id, alert.starts_at, TimelineKind::Reopened, msg, None);
        self.save_incident(id, now);
    }

    /// Add a firing alert to an active incident and apply what the rules said.
    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        id: IncidentId,
        alert: &Alert,
        priority: Priority,
        impact: Level,
        urgency: Level,
        why: &str,
        decision: &Decision,
        now: Timestamp,
    ) {
        let mut entries: Vec<(TimelineKind, String)> = Vec::new();
        let Some(t) = self.incidents.get_mut(&id) else {
            return;
        };
        t.firing += 1;
        if let Some(due) = t.resolve_due.take() {
            self.due.remove(&(due, id));
        }
        t.inc.alert_count += 1;
        if !t.inc.alert_fingerprints.contains(&alert.fingerprint) {
            t.inc.alert_fingerprints.push(alert.fingerprint);
            self.ops.push(StoreOp::LinkAlert {
                incident: id,
                fingerprint: alert.fingerprint,
                at: alert.starts_at,
            });
        }
        let fresh = t.inc.alert_fingerprints.len() == 1 && t.inc.reopen_count == 0;
        if priority < t.inc.priority {
            entries.push((
                TimelineKind::PriorityChanged,
                format!(
                    "priority raised {} → {priority}: alert {} ({}) joined; {why}",
                    t.inc.priority,
                    alert.alertname(),
                    alert.fingerprint
                ),
            ));
            t.inc.priority = priority;
            t.inc.impact = impact;
            t.inc.urgency = urgency;
        } else if fresh {
            t.inc.priority = priority;
            t.inc.impact = impact;
            t.inc.urgency = urgency;
        }
        if t.inc.assignment_group.is_none()
            && let Some((group, rule)) = &decision.assign
        {
            t.inc.assignment_group = Some(group.clone());
            entries.push((
                TimelineKind::Assigned,
                format!("assigned to {group} by rule {rule}"),
            ));
        }
        for rb in runbooks_of(alert, decision) {
            push_unique(&mut t.inc.links.runbooks, &rb);
        }
        for rule in &decision.matched {
            if push_unique(&mut t.inc.rules, rule) {
                entries.push((
                    TimelineKind::RuleApplied,
                    format!(
                        "rule {rule} matched alert {} ({})",
                        alert.alertname(),
                        alert.fingerprint
                    ),
                ));
            }
        }
        for (kind, msg) in entries {
            self.timeline(id, alert.starts_at, kind, msg, None);
        }
        self.save_incident(id, now);
    }

    fn on_refire(&mut self, alert: &Alert, now: Timestamp, flapping_started: bool) {
        let fp = alert.fingerprint;
        let Some(mut st) = self.table.alerts.remove(&fp) else {
            return;
        };
        let current = st.incident.filter(|id| {
            self.incidents
                .get(id)
                .is_some_and(|t| t.inc.state.is_active())
        });
        match current {
            Some(id) if !st.suppressed => {
                if let Some(t) = self.incidents.get_mut(&id) {
                    t.firing += 1;
                    t.inc.alert_count += 1;
                    if let Some(due) = t.resolve_due.take() {
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
                if flapping_started && let Some(id) = st.incident {
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
        let incident = st.incident;
        let end = st.ends_at.unwrap_or(now);
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
            t.inc.alert_count += 1;
            t.last_end = t.last_end.max(Some(end));
            if t.firing == 0 {
                let due = t.last_end.unwrap_or(end).saturating_add(hold);
                if let Some(old) = t.resolve_due.replace(due) {
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
        let t = self
            .incidents
            .get_mut(&id)
            .filter(|t| t.inc.state.is_active())
            .ok_or(EngineError::NotActive(id))?;
        if t.inc.state == IncidentState::Acknowledged {
            return Err(EngineError::AlreadyAcknowledged(id));
        }
        t.inc.state = IncidentState::Acknowledged;
        t.inc.acknowledged_at = Some(now);
        t.inc.acknowledged_by = Some(actor.to_string());
        self.timeline(
            id,
            now,
            TimelineKind::Acknowledged,
            format!("acknowledged by {actor}"),
            Some(actor.to_string()),
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
            return Err(EngineError::NotActive(id));
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
        t.inc.state = IncidentState::Resolved;
        t.inc.resolved_at = Some(at);
        t.resolved_seen = Some(now);
        if let Some(due) = t.resolve_due.take() {
            self.due.remove(&(due, id));
        }
        self.stats.incidents_resolved += 1;
        self.timeline(id, at, TimelineKind::Resolved, why, actor);
        self.save_incident(id, now);
    }

    /// Advance time: resolve incidents whose hold has passed, forget state
    /// that is no longer needed.
    pub fn tick(&mut self, now: Timestamp) {
        while let Some(&(due, id)) = self.due.first() {
            if due > now {
                break;
            }
            self.due.pop_first();
            let ready = self.incidents.get(&id).is_some_and(|t| {
                t.inc.state.is_active() && t.firing == 0 && t.resolve_due == Some(due)
            });
            if ready {
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
                    .and_then(|t| t.last_end)
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
        // Sweeping walks every alert: do it every 30 s of engine time, not
        // on every tick (replay ticks once per body).
        if self.last_sweep != Timestamp::MIN && now.since(self.last_sweep) < SWEEP_EVERY {
            return;
        }
        self.last_sweep = now;
        let window = self.cfg.reopen_window;
        let before = self.incidents.len();
        let upserts = &self.upserts;
        self.incidents.retain(|id, t| {
            upserts.contains(id) || t.resolved_seen.is_none_or(|seen| now.since(seen) <= window)
        });
        if self.incidents.len() != before {
            let incidents = &self.incidents;
            self.by_key.retain(|_, id| incidents.contains_key(id));
        }
        let incidents = &self.incidents;
        self.table.evict(now, self.cfg.alert_retention, |st| {
            st.incident
                .is_some_and(|id| incidents.get(&id).is_some_and(|t| t.inc.state.is_active()))
        });
    }

    /// Latest pending auto-resolve, so replay can let every hold expire.
    pub fn last_due(&self) -> Option<Timestamp> {
        self.due.last().map(|(t, _)| *t)
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
                        deliveries: st.deliveries,
                    })
                })
                .collect();
            self.ops.push(StoreOp::TouchAlerts(touches));
        }
        let ids: Vec<IncidentId> = self.dirty_incidents.drain().collect();
        for id in ids {
            if let Some(t) = self.incidents.get(&id) {
                self.ops.push(StoreOp::TouchIncident {
                    incident: id,
                    alert_count: t.inc.alert_count,
                });
            }
        }
    }
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
        ends_at: st.ends_at,
        incident: st.incident,
        key: st.key.to_string(),
        suppressed,
        flapping: st.flapping,
        last_seen: st.last_seen,
        deliveries: st.deliveries,
    }
}

#[cfg(test)]
mod tests;
