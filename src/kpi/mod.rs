//! Service-management KPIs from the record (DESIGN §7): change outcomes
//! (the change failure rate), the noise reduction achieved (alerts in,
//! incidents out), and per service the incidents opened, MTTA, MTTR and
//! SLA compliance. Like the SLO book, a pure computation over what the
//! store holds, so the figures survive restarts, reach every instance and
//! agree with the API.
//!
//! Times are event times (an alert's `startsAt`, an incident's
//! `opened_at`), as for the SLO downtime: a backfilled calendar or a
//! replayed storm lands in the windows it happened in.

pub mod export;

use crate::change::ChangeRecord;
use crate::cmdb::Cmdb;
use crate::domain::{Incident, IncidentId, Priority, Timestamp};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Why the figures could not be refreshed (the last ones stay).
#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// `[kpi]` and `changes.failure_window`.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiConfig {
    /// After a change's window ends, how long an incident it may have
    /// caused still counts against it.
    pub failure_window: Duration,
    /// How often the figures are recomputed from the store: they read 30
    /// days of incidents, so not at every scrape.
    pub refresh: Duration,
}

impl Default for KpiConfig {
    fn default() -> Self {
        KpiConfig {
            failure_window: Duration::from_secs(86_400),
            refresh: Duration::from_secs(60),
        }
    }
}

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// The windows noise is reported over (label `window`).
pub const NOISE_WINDOWS: [(&str, Duration); 3] = [
    ("1h", Duration::from_secs(HOUR)),
    ("1d", Duration::from_secs(DAY)),
    ("7d", Duration::from_secs(7 * DAY)),
];

/// The windows change outcomes and incident figures are reported over.
pub const TREND_WINDOWS: [(&str, Duration); 2] = [
    ("7d", Duration::from_secs(7 * DAY)),
    ("30d", Duration::from_secs(30 * DAY)),
];

/// How far back SLA compliance looks.
pub const SLA_WINDOW: Duration = Duration::from_secs(30 * DAY);

/// `sla` label values, in [`SlaTally`] order (the same as
/// `incidentd_sla_completed_total`'s).
pub use crate::telemetry::SLA_KINDS;

pub use crate::store::AlertTally;

/// What happened to a change, as far as the record tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Its window or failure window is still running, with no incident
    /// against it yet.
    Pending,
    /// Its failure window passed without an incident on the changed CI or
    /// downstream of it.
    Successful,
    /// An incident rooted at the changed CI, or at a CI its failure would
    /// impact, opened during its window or failure window.
    Failed,
    /// Requested, cancelled or rejected: no work was done, no outcome.
    NotImplemented,
}

impl ChangeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOutcome::Pending => "pending",
            ChangeOutcome::Successful => "successful",
            ChangeOutcome::Failed => "failed",
            ChangeOutcome::NotImplemented => "not_implemented",
        }
    }
}

/// A change record with its outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeVerdict {
    #[serde(flatten)]
    pub change: ChangeRecord,
    pub outcome: ChangeOutcome,
    /// The incidents that failed it, oldest first.
    pub failed_by: Vec<FailedBy>,
    /// When the outcome became known: the first failing incident's
    /// opening, or the end of the failure window.
    pub decided_at: Option<Timestamp>,
    /// The business services the changed CI's failure would impact (the
    /// services its outcome counts for).
    pub services: Vec<String>,
}

/// An incident that failed a change, as the change lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedBy {
    pub id: IncidentId,
    pub opened_at: Timestamp,
    pub root_ci: Option<String>,
    pub title: String,
}

/// One entry of a change's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeEvent {
    pub at: Timestamp,
    /// `window_started`, `window_ended`, `failed` (an incident against
    /// it), `successful`.
    pub kind: &'static str,
    pub message: String,
}

impl ChangeVerdict {
    /// What happened to the change, in time order (up to `now`).
    pub fn timeline(&self, failure_window: Duration, now: Timestamp) -> Vec<ChangeEvent> {
        let c = &self.change;
        let mut out = Vec::new();
        if c.start <= now {
            out.push(ChangeEvent {
                at: c.start,
                kind: "window_started",
                message: format!("change window began on {} ({})", c.ci, self.state_word()),
            });
        }
        if c.end <= now {
            out.push(ChangeEvent {
                at: c.end,
                kind: "window_ended",
                message: format!("change window ended on {}", c.ci),
            });
        }
        for f in &self.failed_by {
            let root = f.root_ci.as_deref().unwrap_or("?");
            let place = if root == c.ci {
                format!("rooted at {root}, the changed CI")
            } else {
                format!("rooted at {root}, downstream of {}", c.ci)
            };
            out.push(ChangeEvent {
                at: f.opened_at,
                kind: "failed",
                message: format!(
                    "incident #{} opened {}, {place}: {}",
                    f.id.0,
                    when_in(c, f.opened_at),
                    f.title
                ),
            });
        }
        if self.outcome == ChangeOutcome::Successful
            && let Some(at) = self.decided_at
        {
            out.push(ChangeEvent {
                at,
                kind: "successful",
                message: format!(
                    "no incident on {} or downstream of it within {} of the window: successful",
                    c.ci,
                    crate::domain::format_duration(failure_window)
                ),
            });
        }
        out.sort_by_key(|e| e.at);
        out
    }

    fn state_word(&self) -> &'static str {
        match self.change.state {
            crate::change::ChangeState::Requested => "requested",
            crate::change::ChangeState::Approved => "approved",
            crate::change::ChangeState::Implementing => "implementing",
            crate::change::ChangeState::Completed => "completed",
            crate::change::ChangeState::Cancelled => "cancelled",
            crate::change::ChangeState::Rejected => "rejected",
        }
    }

    /// The entry an incident that failed this change shows on its own
    /// timeline.
    pub fn incident_entry(&self, opened_at: Timestamp) -> crate::domain::TimelineEntry {
        let c = &self.change;
        let summary = if c.summary.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.summary)
        };
        crate::domain::TimelineEntry {
            at: opened_at,
            kind: crate::domain::TimelineKind::ChangeFailed,
            message: format!(
                "counts against change {} on {}{summary}: opened {}",
                c.id,
                c.ci,
                when_in(c, opened_at)
            ),
            actor: None,
        }
    }
}

/// Where `t` lies relative to the change's window, in words.
fn when_in(c: &ChangeRecord, t: Timestamp) -> String {
    if t <= c.end {
        "during its window".into()
    } else {
        format!(
            "{} after its window ended",
            crate::domain::format_duration(t.since(c.end))
        )
    }
}

/// Alerts in and incidents out over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Noise {
    /// Alerts that started firing in the window (an alert that fired
    /// again counts once, at its latest start).
    pub alerts: u64,
    /// Of those, suppressed by a rule.
    pub suppressed: u64,
    pub suppressed_by_rule: BTreeMap<String, u64>,
    /// Of those, attached to an incident that another alert opened.
    pub correlated: u64,
    /// Incidents opened in the window (those merged into another not
    /// counted: their alerts went to the incident that stands).
    pub incidents: u64,
    /// 1 − incidents / alerts not suppressed; `null` without such alerts.
    pub reduction_ratio: Option<f64>,
    /// Not suppressed and attached to an incident, and of those the
    /// incidents they opened: kept to derive `correlated`.
    #[serde(skip)]
    attached: u64,
    #[serde(skip)]
    opened: u64,
}

impl Noise {
    fn finish(&mut self) {
        self.correlated = self.attached.saturating_sub(self.opened);
        let kept = self.alerts - self.suppressed;
        self.reduction_ratio =
            (kept > 0).then(|| (1.0 - self.incidents as f64 / kept as f64).max(0.0));
    }
}

/// Incidents opened over one window, with their mean times.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IncidentFigures {
    pub opened: u64,
    /// Mean time from opening to acknowledgement of those acknowledged.
    pub mtta_seconds: Option<f64>,
    /// Mean time from opening to resolution of those resolved.
    pub mttr_seconds: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_priority: BTreeMap<&'static str, IncidentFigures>,
    #[serde(skip)]
    sums: [(f64, u64); 2],
}

impl IncidentFigures {
    fn add(&mut self, inc: &Incident) {
        self.opened += 1;
        for (i, end) in [inc.acknowledged_at, inc.resolved_at]
            .into_iter()
            .enumerate()
        {
            if let Some(end) = end {
                self.sums[i].0 += end.since(inc.opened_at).as_secs_f64();
                self.sums[i].1 += 1;
            }
        }
    }

    fn finish(&mut self) {
        let mean = |(sum, n): (f64, u64)| (n > 0).then(|| sum / n as f64);
        self.mtta_seconds = mean(self.sums[0]);
        self.mttr_seconds = mean(self.sums[1]);
        for p in self.by_priority.values_mut() {
            p.finish();
        }
    }
}

/// Change outcomes over one window: the changes whose window had begun and
/// had not ended before it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChangeFigures {
    pub successful: u64,
    pub failed: u64,
    pub pending: u64,
    /// failed / (failed + successful); `null` before any is decided.
    pub failure_ratio: Option<f64>,
}

impl ChangeFigures {
    fn add(&mut self, o: ChangeOutcome) {
        match o {
            ChangeOutcome::Successful => self.successful += 1,
            ChangeOutcome::Failed => self.failed += 1,
            ChangeOutcome::Pending => self.pending += 1,
            ChangeOutcome::NotImplemented => {}
        }
    }

    fn finish(&mut self) {
        let decided = self.failed + self.successful;
        self.failure_ratio = (decided > 0).then(|| self.failed as f64 / decided as f64);
    }
}

/// SLA timers met and decided (met or breached), per kind of
/// [`SLA_KINDS`].
pub type SlaTally = [(u64, u64); 2];

/// Every figure of one service (or of everything, for the overall ones).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Kpis {
    /// By window of [`NOISE_WINDOWS`].
    pub noise: BTreeMap<&'static str, Noise>,
    /// By window of [`TREND_WINDOWS`].
    pub incidents: BTreeMap<&'static str, IncidentFigures>,
    /// By window of [`TREND_WINDOWS`].
    pub changes: BTreeMap<&'static str, ChangeFigures>,
    /// Share of SLA timers met over the last 30 days, by kind; absent
    /// before one was decided.
    pub sla_compliance: BTreeMap<&'static str, f64>,
    #[serde(skip)]
    pub sla: SlaTally,
}

impl Kpis {
    fn empty() -> Kpis {
        Kpis {
            noise: NOISE_WINDOWS
                .iter()
                .map(|(w, _)| (*w, Noise::default()))
                .collect(),
            incidents: TREND_WINDOWS
                .iter()
                .map(|(w, _)| {
                    let mut f = IncidentFigures::default();
                    for p in Priority::ALL {
                        f.by_priority.insert(p.as_str(), IncidentFigures::default());
                    }
                    (*w, f)
                })
                .collect(),
            changes: TREND_WINDOWS
                .iter()
                .map(|(w, _)| (*w, ChangeFigures::default()))
                .collect(),
            sla_compliance: BTreeMap::new(),
            sla: SlaTally::default(),
        }
    }

    fn finish(&mut self) {
        self.noise.values_mut().for_each(Noise::finish);
        self.incidents
            .values_mut()
            .for_each(IncidentFigures::finish);
        self.changes.values_mut().for_each(ChangeFigures::finish);
        for (kind, (met, decided)) in SLA_KINDS.iter().zip(self.sla) {
            if decided > 0 {
                self.sla_compliance
                    .insert(kind, met as f64 / decided as f64);
            }
        }
    }
}

/// The figures at one instant: overall, per service of the catalog, and
/// each change's outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KpiBook {
    pub as_of: Timestamp,
    pub overall: Kpis,
    /// Every service of the catalog, by id.
    pub services: BTreeMap<String, Kpis>,
    /// Every change record, by start then id.
    pub changes: Vec<ChangeVerdict>,
    /// For each incident that failed a change, the changes' indexes in
    /// `changes`.
    failed_by_incident: FxHashMap<IncidentId, Vec<usize>>,
}

/// What [`KpiBook::build`] reads.
pub struct Inputs<'a> {
    pub cmdb: &'a Cmdb,
    pub changes: &'a [ChangeRecord],
    /// The alerts of the last 7 days, grouped ([`AlertTally`]).
    pub alerts: &'a [AlertTally],
    /// Hold reasons that stop the SLA clocks (`sla.pause_on`).
    pub pause_on: &'a [String],
    pub failure_window: Duration,
    pub now: Timestamp,
}

/// Since when incidents must be read for `changes` (those whose window
/// ended within the longest trend window, or still runs) and the trend
/// windows.
pub fn incident_horizon(changes: &[ChangeRecord], now: Timestamp) -> Timestamp {
    let longest = now.saturating_sub(TREND_WINDOWS[1].1);
    changes
        .iter()
        .filter(|c| c.end >= longest)
        .map(|c| c.start)
        .fold(longest, Timestamp::min)
}

/// Where each window of [`NOISE_WINDOWS`] begins, seen at `now`: the
/// store counts an alert in the narrowest one it started after
/// ([`crate::store::Reads::alert_tallies`]).
pub fn band_starts(now: Timestamp) -> [Timestamp; 3] {
    NOISE_WINDOWS.map(|(_, w)| now.saturating_sub(w))
}

/// Whether `t` lies in the window of length `w` ending at `now` (a time
/// ahead of `now`, a sender's clock skew, counts as now, as the store's
/// bands do).
fn within(t: Timestamp, now: Timestamp, w: Duration) -> bool {
    t > now.saturating_sub(w)
}

impl KpiBook {
    #[cfg(test)]
    /// The book from `i` and the incidents (at least every one opened, or
    /// open, since [`incident_horizon`]) at once; [`KpiBuilder`] takes them
    /// page by page.
    pub fn build(i: &Inputs<'_>, incidents: &[Incident]) -> KpiBook {
        let mut b = KpiBuilder::new(i);
        incidents.iter().for_each(|inc| b.add(inc));
        b.finish()
    }

    /// The changes an incident failed.
    pub fn failed_changes(&self, id: IncidentId) -> impl Iterator<Item = &ChangeVerdict> {
        self.failed_by_incident
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|i| self.changes.get(*i))
    }
}

/// Builds a [`KpiBook`] from incidents fed one at a time, so that a month
/// of them is never held at once (read page by page, the refresh's memory
/// stays flat: reading them all at once doubled the daemon's RSS under
/// ingest, BENCHMARKS.md entry 24).
pub struct KpiBuilder<'a> {
    i: &'a Inputs<'a>,
    overall: Kpis,
    services: BTreeMap<String, Kpis>,
    sla: SlaTallies,
    /// Planned changes by the id of their CI (indexes into `i.changes`).
    changes_by_ci: FxHashMap<&'a str, Vec<usize>>,
    /// For each root CI met, the changes an incident there could fail
    /// (those on it or on a CI it depends on).
    reach: FxHashMap<String, Vec<usize>>,
    failed_by: Vec<Vec<FailedBy>>,
    /// Incidents already counted (a page boundary crossed by a state
    /// change can show one twice).
    seen: FxHashSet<IncidentId>,
}

impl<'a> KpiBuilder<'a> {
    /// Every figure but those of incidents: the noise of the alert tallies.
    pub fn new(i: &'a Inputs<'a>) -> KpiBuilder<'a> {
        let mut overall = Kpis::empty();
        let mut services: BTreeMap<String, Kpis> = i
            .cmdb
            .services()
            .iter()
            .map(|s| (s.id.clone(), Kpis::empty()))
            .collect();
        // Noise: alerts by the service of their CI (incidents, as they come,
        // by the services they impact).
        for t in i.alerts {
            let service =
                t.ci.as_deref()
                    .and_then(|c| i.cmdb.ci_by_id(c))
                    .and_then(|c| i.cmdb.ci(c).service)
                    .map(|s| i.cmdb.service(s).id.clone());
            let add = |k: &mut Kpis| {
                for (name, _) in &NOISE_WINDOWS[t.band.min(NOISE_WINDOWS.len())..] {
                    let Some(n) = k.noise.get_mut(name) else {
                        continue;
                    };
                    n.alerts += t.count;
                    match &t.suppressed_rule {
                        Some(rule) => {
                            n.suppressed += t.count;
                            *n.suppressed_by_rule.entry(rule.clone()).or_default() += t.count;
                        }
                        None if t.attached => {
                            n.attached += t.count;
                            n.opened += t.opened;
                        }
                        None => {}
                    }
                }
            };
            add(&mut overall);
            if let Some(k) = service.and_then(|s| services.get_mut(&s)) {
                add(k);
            }
        }
        let mut changes_by_ci: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
        for (idx, c) in i.changes.iter().enumerate() {
            if c.state.is_planned() {
                changes_by_ci.entry(c.ci.as_str()).or_default().push(idx);
            }
        }
        KpiBuilder {
            i,
            overall,
            services,
            sla: SlaTallies::default(),
            changes_by_ci,
            reach: FxHashMap::default(),
            failed_by: vec![Vec::new(); i.changes.len()],
            seen: FxHashSet::default(),
        }
    }

    /// Count one incident (one merged into another is part of it and
    /// counts through it).
    pub fn add(&mut self, inc: &Incident) {
        if inc.links.merged_into.is_some() || !self.seen.insert(inc.id) {
            return;
        }
        let now = self.i.now;
        let add = |k: &mut Kpis| {
            for (name, w) in NOISE_WINDOWS {
                if within(inc.opened_at, now, w)
                    && let Some(n) = k.noise.get_mut(name)
                {
                    n.incidents += 1;
                }
            }
            for (name, w) in TREND_WINDOWS {
                if within(inc.opened_at, now, w)
                    && let Some(f) = k.incidents.get_mut(name)
                {
                    f.add(inc);
                    if let Some(p) = f.by_priority.get_mut(inc.priority.as_str()) {
                        p.add(inc);
                    }
                }
            }
        };
        add(&mut self.overall);
        for s in &inc.impacted_services {
            if let Some(k) = self.services.get_mut(s.as_str()) {
                add(k);
            }
        }
        // SLA compliance over 30 days, against each service's targets.
        if inc
            .resolved_at
            .is_none_or(|r| r >= now.saturating_sub(SLA_WINDOW))
        {
            self.sla.add(self.i.cmdb, inc, now, self.i.pause_on);
        }
        // The changes it fails: on its root CI or on a CI it depends on
        // (found once per root CI).
        let Some(root) = inc.root_ci.as_deref() else {
            return;
        };
        if self.changes_by_ci.is_empty() {
            return;
        }
        let cmdb = self.i.cmdb;
        let by_ci = &self.changes_by_ci;
        let candidates = self.reach.entry(root.to_string()).or_insert_with(|| {
            let upstream = cmdb
                .ci_by_id(root)
                .map(|r| cmdb.upstream(r))
                .unwrap_or_default();
            std::iter::once(root)
                .chain(upstream.iter().map(|c| cmdb.ci(*c).id.as_str()))
                .filter_map(|ci| by_ci.get(ci))
                .flatten()
                .copied()
                .collect()
        });
        for &idx in candidates.iter() {
            let c = &self.i.changes[idx];
            let closes = c.end.saturating_add(self.i.failure_window);
            if inc.opened_at >= c.start && inc.opened_at <= closes {
                self.failed_by[idx].push(FailedBy {
                    id: inc.id,
                    opened_at: inc.opened_at,
                    root_ci: Some(root.to_string()),
                    title: inc.title.to_string(),
                });
            }
        }
    }

    pub fn finish(self) -> KpiBook {
        let KpiBuilder {
            i,
            mut overall,
            mut services,
            sla,
            failed_by,
            ..
        } = self;
        let now = i.now;
        overall.sla = sla.overall;
        for (s, t) in sla.by_service {
            if let Some(k) = services.get_mut(&s) {
                k.sla = t;
            }
        }
        let mut changes: Vec<ChangeVerdict> = i
            .changes
            .iter()
            .zip(failed_by)
            .map(|(c, mut failed_by)| verdict(i.cmdb, c, &mut failed_by, i.failure_window, now))
            .collect();
        changes.sort_by(|a, b| {
            a.change
                .start
                .cmp(&b.change.start)
                .then_with(|| a.change.id.cmp(&b.change.id))
        });
        let mut failed_by_incident: FxHashMap<IncidentId, Vec<usize>> = FxHashMap::default();
        for (idx, v) in changes.iter().enumerate() {
            for f in &v.failed_by {
                failed_by_incident.entry(f.id).or_default().push(idx);
            }
            if v.change.start > now {
                continue;
            }
            for (name, w) in TREND_WINDOWS {
                if v.change.end <= now.saturating_sub(w) {
                    continue;
                }
                if let Some(f) = overall.changes.get_mut(name) {
                    f.add(v.outcome);
                }
                for s in &v.services {
                    if let Some(f) = services.get_mut(s).and_then(|k| k.changes.get_mut(name)) {
                        f.add(v.outcome);
                    }
                }
            }
        }
        overall.finish();
        services.values_mut().for_each(Kpis::finish);
        KpiBook {
            as_of: now,
            overall,
            services,
            changes,
            failed_by_incident,
        }
    }
}

/// Count a stopped (met or breached) timer of each kind.
fn count_sla(t: &mut SlaTally, sla: crate::slo::sla::IncidentSla) {
    use crate::slo::sla::SlaStatus;
    for (kind, timer) in [sla.response, sla.resolution].into_iter().enumerate() {
        match timer.map(|t| t.status) {
            Some(SlaStatus::Met) => {
                t[kind].0 += 1;
                t[kind].1 += 1;
            }
            Some(SlaStatus::Breached) => t[kind].1 += 1,
            _ => {}
        }
    }
}

/// A change's outcome from the incidents found to fail it.
fn verdict(
    cmdb: &Cmdb,
    c: &ChangeRecord,
    failed_by: &mut Vec<FailedBy>,
    failure_window: Duration,
    now: Timestamp,
) -> ChangeVerdict {
    failed_by.sort_by_key(|f| (f.opened_at, f.id));
    let services = cmdb
        .ci_by_id(&c.ci)
        .map(|idx| {
            cmdb.impacted_services(idx)
                .into_iter()
                .map(|s| s.id)
                .collect()
        })
        .unwrap_or_default();
    let closes = c.end.saturating_add(failure_window);
    let (outcome, decided_at) = if !c.state.is_planned() {
        (ChangeOutcome::NotImplemented, None)
    } else if let Some(first) = failed_by.first() {
        (ChangeOutcome::Failed, Some(first.opened_at))
    } else if closes < now {
        (ChangeOutcome::Successful, Some(closes))
    } else {
        (ChangeOutcome::Pending, None)
    };
    ChangeVerdict {
        change: c.clone(),
        outcome,
        failed_by: std::mem::take(failed_by),
        decided_at,
        services,
    }
}

/// SLA timers met and decided, per service and overall.
#[derive(Debug, Default)]
pub struct SlaTallies {
    pub by_service: FxHashMap<String, SlaTally>,
    pub overall: SlaTally,
}

/// Each incident's timers against each service it impacts (an incident
/// answers to every service it hurts, each with its own targets), and
/// against all of them for the overall figures.
pub fn sla_tally<'a>(
    cmdb: &Cmdb,
    recent: impl IntoIterator<Item = &'a Incident>,
    now: Timestamp,
    pause_on: &[String],
) -> SlaTallies {
    let mut out = SlaTallies::default();
    for inc in recent {
        out.add(cmdb, inc, now, pause_on);
    }
    out
}

impl SlaTallies {
    /// Count one incident's stopped timers overall and for each service
    /// it impacts.
    fn add(&mut self, cmdb: &Cmdb, inc: &Incident, now: Timestamp, pause_on: &[String]) {
        use crate::slo::sla::incident_sla_against;
        count_sla(
            &mut self.overall,
            incident_sla_against(cmdb, inc, &inc.impacted_services, now, pause_on),
        );
        for s in &inc.impacted_services {
            let sla = incident_sla_against(cmdb, inc, std::slice::from_ref(s), now, pause_on);
            // No key copied for a service already counted.
            match self.by_service.get_mut(s.as_str()) {
                Some(t) => count_sla(t, sla),
                None => count_sla(self.by_service.entry(s.clone()).or_default(), sla),
            }
        }
    }
}

#[cfg(test)]
mod tests;
