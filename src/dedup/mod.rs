//! Per-fingerprint alert state: tells a repeat from a state change, drops
//! stale deliveries, and detects flapping. Pure; the caller owns the clock.

use crate::domain::{Alert, AlertStatus, Fingerprint, IncidentId, Timestamp};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::Duration;

/// Flapping: `changes` state changes within `window` (event time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapPolicy {
    pub changes: u32,
    pub window: Duration,
}

impl Default for FlapPolicy {
    fn default() -> Self {
        FlapPolicy {
            changes: 4,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// What the engine remembers of one alert. Kept small: labels live in the
/// store, not here, so 100k active alerts cost a few hundred bytes each.
#[derive(Debug, Clone)]
pub struct AlertState {
    pub status: AlertStatus,
    pub starts_at: Timestamp,
    /// `ends_at()`; 8 bytes instead of 16 (see [`Opt64`]).
    ends_at: Opt64,
    /// Engine time of the last delivery (drives eviction, not correlation).
    pub last_seen: Timestamp,
    /// `incident()`; 8 bytes instead of 16.
    incident: Opt64,
    /// Correlation key the alert was placed under; one allocation shared
    /// with its incident and the engine's key index (interned).
    pub key: Arc<str>,
    /// Suppressed by a rule: recorded, never in an incident.
    pub suppressed: bool,
    pub flapping: bool,
    /// Event times of recent state changes, oldest first, for flap detection.
    /// Boxed: most alerts never change state, and 8 bytes instead of 24 in
    /// every entry of the alert table count at 100k alerts.
    #[allow(clippy::box_collection)] // 8 bytes in the entry, not 24: on purpose
    changes: Option<Box<Vec<Timestamp>>>,
    /// Deliveries seen, repeats included (saturating: 4 billion
    /// deliveries of one alert is centuries of 15 s repeats; 4 bytes beside
    /// the flags instead of 8 of their own).
    pub deliveries: u32,
    /// Store batch that last wrote this alert's state; an ack for a delivery
    /// of this alert must wait until that batch is durable.
    pub written_seq: u64,
    /// Resolved by `alert_timeout`, not by its sender: a later firing
    /// delivery of the same activation (a silence lifted) fires it again
    /// instead of being stale. Kept in memory only.
    pub expired: bool,
}

/// An `Option<i64>` in 8 bytes: `i64::MIN` stands for none. No event time
/// the parsers accept and no store-assigned incident id is `i64::MIN`.
/// The alert table holds one entry per active alert, so its two optional
/// fields at 8 bytes each instead of 16 (with `deliveries` packed beside
/// the flags) take an entry from 104 to 80 bytes (BENCHMARKS.md entry 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Opt64(i64);

impl Opt64 {
    fn of(v: Option<i64>) -> Opt64 {
        Opt64(v.unwrap_or(i64::MIN))
    }
    fn get(self) -> Option<i64> {
        (self.0 != i64::MIN).then_some(self.0)
    }
}

const _: () = assert!(std::mem::size_of::<AlertState>() <= 72);

impl AlertState {
    pub fn new(alert: &Alert, now: Timestamp, key: Arc<str>) -> AlertState {
        AlertState {
            status: alert.status,
            starts_at: alert.starts_at,
            ends_at: Opt64::of(alert.ends_at.map(|t| t.0)),
            last_seen: now,
            incident: Opt64::of(None),
            key,
            suppressed: false,
            flapping: false,
            changes: None,
            deliveries: 1,
            written_seq: 0,
            expired: false,
        }
    }

    /// Rebuild from the store after a restart.
    #[allow(clippy::too_many_arguments)]
    pub fn restored(
        status: AlertStatus,
        starts_at: Timestamp,
        ends_at: Option<Timestamp>,
        last_seen: Timestamp,
        incident: Option<IncidentId>,
        key: Arc<str>,
        suppressed: bool,
        flapping: bool,
        deliveries: u64,
    ) -> AlertState {
        AlertState {
            status,
            starts_at,
            ends_at: Opt64::of(ends_at.map(|t| t.0)),
            last_seen,
            incident: Opt64::of(incident.map(|i| i.0)),
            key,
            suppressed,
            flapping,
            changes: None,
            deliveries: u32::try_from(deliveries).unwrap_or(u32::MAX),
            written_seq: 0,
            expired: false,
        }
    }

    /// When the alert's current activation ended, if it did.
    pub fn ends_at(&self) -> Option<Timestamp> {
        self.ends_at.get().map(Timestamp)
    }

    pub fn set_ends_at(&mut self, end: Option<Timestamp>) {
        self.ends_at = Opt64::of(end.map(|t| t.0));
    }

    /// The incident the alert is in, if any.
    pub fn incident(&self) -> Option<IncidentId> {
        self.incident.get().map(IncidentId)
    }

    pub fn set_incident(&mut self, id: Option<IncidentId>) {
        self.incident = Opt64::of(id.map(|i| i.0));
    }
}

/// How a delivery relates to what we knew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Never seen (or evicted) and firing.
    New,
    /// Never seen and already resolved: nothing to do.
    UnknownResolved,
    /// Same status as known: only counters change.
    Repeat,
    /// Older than what we know (a late HA twin, an out-of-order resend).
    Stale,
    /// Resolved → firing with a new activation.
    Refired { flapping_started: bool },
    /// Firing → resolved.
    Resolved { flapping_started: bool },
}

#[derive(Default)]
pub struct AlertTable {
    pub alerts: FxHashMap<Fingerprint, AlertState>,
    policy: FlapPolicy,
}

impl AlertTable {
    pub fn new(policy: FlapPolicy) -> Self {
        AlertTable {
            alerts: FxHashMap::default(),
            policy,
        }
    }

    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    pub fn get(&self, fp: &Fingerprint) -> Option<&AlertState> {
        self.alerts.get(fp)
    }

    pub fn get_mut(&mut self, fp: &Fingerprint) -> Option<&mut AlertState> {
        self.alerts.get_mut(fp)
    }

    pub fn insert(&mut self, fp: Fingerprint, st: AlertState) {
        self.alerts.insert(fp, st);
    }

    /// Classify a delivery and apply it to the known state (except for
    /// `New`, which the caller inserts once it has placed the alert).
    pub fn observe(&mut self, alert: &Alert, now: Timestamp) -> Observation {
        let Some(st) = self.alerts.get_mut(&alert.fingerprint) else {
            return match alert.status {
                AlertStatus::Firing => Observation::New,
                AlertStatus::Resolved => Observation::UnknownResolved,
            };
        };
        st.last_seen = now;
        st.deliveries = st.deliveries.saturating_add(1);
        match (st.status, alert.status) {
            (AlertStatus::Firing, AlertStatus::Firing) => Observation::Repeat,
            (AlertStatus::Resolved, AlertStatus::Resolved) => Observation::Repeat,
            (AlertStatus::Resolved, AlertStatus::Firing) => {
                // The same activation delivered again after its resolve, or
                // one that began before the known end: not a new firing.
                if !st.expired && st.ends_at().is_some_and(|end| alert.starts_at <= end) {
                    return Observation::Stale;
                }
                st.expired = false;
                st.status = AlertStatus::Firing;
                st.starts_at = alert.starts_at;
                st.set_ends_at(None);
                let flapping_started = record_change(st, alert.starts_at, self.policy);
                Observation::Refired { flapping_started }
            }
            (AlertStatus::Firing, AlertStatus::Resolved) => {
                let end = alert.ends_at.unwrap_or(now);
                if end < st.starts_at {
                    return Observation::Stale;
                }
                st.status = AlertStatus::Resolved;
                st.set_ends_at(Some(end));
                let flapping_started = record_change(st, end, self.policy);
                Observation::Resolved { flapping_started }
            }
        }
    }

    /// Forget resolved alerts not seen for `retention`; returns how many.
    pub fn evict(
        &mut self,
        now: Timestamp,
        retention: Duration,
        keep: impl Fn(&AlertState) -> bool,
    ) -> usize {
        let before = self.alerts.len();
        let cutoff = now.saturating_sub(retention);
        self.alerts
            .retain(|_, st| st.status == AlertStatus::Firing || st.last_seen > cutoff || keep(st));
        before - self.alerts.len()
    }
}

/// Record a state change; true when this change makes the alert flapping.
fn record_change(st: &mut AlertState, at: Timestamp, policy: FlapPolicy) -> bool {
    if policy.changes == 0 {
        return false;
    }
    let cutoff = at.saturating_sub(policy.window);
    let changes = st.changes.get_or_insert_with(Box::default);
    changes.retain(|t| *t > cutoff);
    changes.push(at);
    let limit = usize::try_from(policy.changes).unwrap_or(usize::MAX);
    if changes.len() > limit {
        changes.remove(0);
    }
    let now_flapping = changes.len() >= limit;
    let started = now_flapping && !st.flapping;
    if now_flapping {
        st.flapping = true;
    }
    started
}

/// Whether an alert has been quiet (no state change) for the flap window,
/// so its flapping mark may be cleared.
pub fn flap_settled(st: &AlertState, now: Timestamp, policy: FlapPolicy) -> bool {
    st.changes
        .as_ref()
        .and_then(|c| c.last())
        .is_none_or(|last| now.since(*last) >= policy.window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LabelSet, Source};

    fn alert(status: AlertStatus, start: i64, end: Option<i64>) -> Alert {
        Alert {
            fingerprint: Fingerprint(1),
            status,
            labels: LabelSet::new(),
            annotations: LabelSet::new(),
            starts_at: Timestamp(start),
            ends_at: end.map(Timestamp),
            source: Source::Api,
            generator_url: String::new(),
        }
    }

    const MIN: i64 = 60_000;

    #[test]
    fn repeat_stale_and_changes() {
        let mut t = AlertTable::new(FlapPolicy::default());
        let fire = alert(AlertStatus::Firing, 0, None);
        assert_eq!(t.observe(&fire, Timestamp(0)), Observation::New);
        t.insert(
            fire.fingerprint,
            AlertState::new(&fire, Timestamp(0), "k".into()),
        );
        assert_eq!(t.observe(&fire, Timestamp(1)), Observation::Repeat);
        let res = alert(AlertStatus::Resolved, 0, Some(5 * MIN));
        assert!(matches!(
            t.observe(&res, Timestamp(2)),
            Observation::Resolved { .. }
        ));
        assert_eq!(t.observe(&res, Timestamp(3)), Observation::Repeat);
        // The HA twin's late firing copy of the same activation.
        assert_eq!(t.observe(&fire, Timestamp(4)), Observation::Stale);
        let again = alert(AlertStatus::Firing, 10 * MIN, None);
        assert!(matches!(
            t.observe(&again, Timestamp(5)),
            Observation::Refired { .. }
        ));
        // A resolve that ended before the current activation began.
        assert_eq!(t.observe(&res, Timestamp(6)), Observation::Stale);
    }

    #[test]
    fn unknown_resolved_is_not_new() {
        let mut t = AlertTable::new(FlapPolicy::default());
        assert_eq!(
            t.observe(&alert(AlertStatus::Resolved, 0, Some(1)), Timestamp(0)),
            Observation::UnknownResolved
        );
    }

    #[test]
    fn flapping_after_n_changes_in_window() {
        let policy = FlapPolicy {
            changes: 4,
            window: Duration::from_secs(600),
        };
        let mut t = AlertTable::new(policy);
        let fire = alert(AlertStatus::Firing, 0, None);
        t.observe(&fire, Timestamp(0));
        t.insert(
            fire.fingerprint,
            AlertState::new(&fire, Timestamp(0), "k".into()),
        );
        let mut started = vec![];
        for i in 0..3 {
            let base = i * 2 * MIN;
            let r = t.observe(
                &alert(AlertStatus::Resolved, base, Some(base + MIN)),
                Timestamp(0),
            );
            let f = t.observe(
                &alert(AlertStatus::Firing, base + 2 * MIN, None),
                Timestamp(0),
            );
            started.push((r, f));
        }
        // Changes: resolve(1m), fire(2m), resolve(3m), fire(4m) → the 4th flaps.
        assert_eq!(
            started[0].0,
            Observation::Resolved {
                flapping_started: false
            }
        );
        assert_eq!(
            started[1].1,
            Observation::Refired {
                flapping_started: true
            }
        );
        assert_eq!(
            started[2].0,
            Observation::Resolved {
                flapping_started: false
            }
        );
        let st = t.get(&Fingerprint(1)).unwrap();
        assert!(st.flapping);
        assert!(!flap_settled(st, Timestamp(6 * MIN), policy));
        assert!(flap_settled(st, Timestamp(16 * MIN), policy));
    }

    #[test]
    fn slow_changes_do_not_flap() {
        let policy = FlapPolicy {
            changes: 3,
            window: Duration::from_secs(60),
        };
        let mut t = AlertTable::new(policy);
        let fire = alert(AlertStatus::Firing, 0, None);
        t.insert(
            fire.fingerprint,
            AlertState::new(&fire, Timestamp(0), "k".into()),
        );
        for i in 0..5 {
            let base = i * 10 * MIN;
            t.observe(
                &alert(AlertStatus::Resolved, base, Some(base + MIN)),
                Timestamp(0),
            );
            t.observe(
                &alert(AlertStatus::Firing, base + 5 * MIN, None),
                Timestamp(0),
            );
        }
        assert!(!t.get(&Fingerprint(1)).unwrap().flapping);
    }

    #[test]
    fn eviction_keeps_firing_and_recent() {
        let mut t = AlertTable::new(FlapPolicy::default());
        let fire = alert(AlertStatus::Firing, 0, None);
        t.insert(
            Fingerprint(1),
            AlertState::new(&fire, Timestamp(0), "k".into()),
        );
        let mut res = AlertState::new(&fire, Timestamp(0), "k".into());
        res.status = AlertStatus::Resolved;
        t.insert(Fingerprint(2), res.clone());
        res.last_seen = Timestamp(100 * MIN);
        t.insert(Fingerprint(3), res);
        assert_eq!(
            t.evict(Timestamp(100 * MIN), Duration::from_secs(3600), |_| false),
            1
        );
        assert!(t.get(&Fingerprint(1)).is_some());
        assert!(t.get(&Fingerprint(2)).is_none());
        assert!(t.get(&Fingerprint(3)).is_some());
    }
}
