//! The engine's observations and monotonic totals, projected onto the
//! metrics: the engine knows what its numbers mean, telemetry only
//! registers and renders them.

use super::{Engine, Lifecycle, LifecycleEvent, Observations, Stats};
use crate::cmdb::Cmdb;
use crate::domain::{IncidentState, Priority, Timestamp};
use crate::telemetry::{
    ANNOUNCEMENT_OUTCOMES, BOUND_HOW, INFERENCE_OUTCOMES, Metrics, SLA_KINDS, SLA_OUTCOMES,
};
use prometheus::IntCounter;

/// Lifecycle durations and rule timings into their histograms.
pub fn observe(metrics: &Metrics, o: &Observations) {
    for s in &o.acked_after {
        metrics.time_to_acknowledge.observe(*s);
    }
    for s in &o.resolved_after {
        metrics.time_to_resolve.observe(*s);
    }
    for s in &o.rule_seconds {
        metrics.rule_evaluation_seconds.observe(*s);
    }
}

/// One INFO line per lifecycle step: the incident's id, priority, root
/// CI and title as fields, and a sentence a person reads at 3 a.m.
pub fn log_lifecycle(events: &[LifecycleEvent]) {
    for e in events {
        let id = e.incident.0;
        let root = e.root_ci.as_deref().unwrap_or("none");
        let what = match &e.what {
            Lifecycle::Opened => "opened".to_string(),
            Lifecycle::PriorityRaised { from } => {
                format!("priority raised {from} → {}", e.priority)
            }
            Lifecycle::Rerooted { from } => format!(
                "re-rooted: root cause is now {root} (was {})",
                from.as_deref().unwrap_or("none")
            ),
            Lifecycle::MergedInto { into } => format!("merged into incident {into}"),
            Lifecycle::Absorbed { from } => format!("absorbed incident {from}"),
            Lifecycle::Acknowledged { by } => format!("acknowledged by {by}"),
            Lifecycle::OnHold { reason, by } => format!("on hold ({reason}) by {by}"),
            Lifecycle::Resumed { by } => format!("resumed by {by}"),
            Lifecycle::Resolved { why } => format!("resolved ({why})"),
            Lifecycle::Reopened { alertname } => {
                format!("reopened: {alertname} fired again within the reopen window")
            }
        };
        tracing::info!(
            target: "incidentd::incident",
            incident = id,
            event = e.what.as_str(),
            priority = %e.priority,
            state = e.state.as_str(),
            root_ci = root,
            title = %e.title,
            "incident {id} {what}: {} {:?}, root CI {root}",
            e.priority,
            e.title,
        );
    }
}

/// One monotonic total of the engine's [`Stats`].
type Total = fn(&Stats) -> u64;

/// Bring the counters up to the engine's monotonic totals.
pub fn sync_engine(metrics: &Metrics, prev: &Stats, now: &Stats) {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    metrics
        .alerts_deduplicated
        .inc_by(d(prev.deduplicated, now.deduplicated) - d(prev.stale, now.stale));
    metrics
        .alerts_dropped
        .with_label_values(&["stale"])
        .inc_by(d(prev.stale, now.stale));
    metrics
        .alerts_dropped
        .with_label_values(&["unknown_resolved"])
        .inc_by(d(prev.unknown_resolved, now.unknown_resolved));
    let totals: [(&IntCounter, Total); 10] = [
        (&metrics.alerts_expired, |s| s.expired),
        (&metrics.alerts_suppressed, |s| s.suppressed),
        (&metrics.alert_state_changes, |s| s.state_changes),
        (&metrics.incidents_created, |s| s.incidents_created),
        (&metrics.incidents_resolved, |s| s.incidents_resolved),
        (&metrics.incidents_reopened, |s| s.incidents_reopened),
        (&metrics.incidents_flapping, |s| s.flapping_detected),
        (&metrics.rule_errors, |s| s.rule_errors),
        (&metrics.incidents_merged, |s| s.incidents_merged),
        (&metrics.problems_opened, |s| s.problems_opened),
    ];
    for (counter, total) in totals {
        counter.inc_by(d(total(prev), total(now)));
    }
    // Counters with one label, a total per label value in order.
    let by_label = |vec: &prometheus::IntCounterVec, labels: &[&str], prev: &[u64], now: &[u64]| {
        for ((label, p), n) in labels.iter().zip(prev).zip(now) {
            vec.with_label_values(&[label]).inc_by(d(*p, *n));
        }
    };
    by_label(
        &metrics.root_inferences,
        &INFERENCE_OUTCOMES,
        &prev.inferences,
        &now.inferences,
    );
    by_label(
        &metrics.announcements,
        &ANNOUNCEMENT_OUTCOMES,
        &prev.announcements,
        &now.announcements,
    );
    by_label(&metrics.alerts_bound, &BOUND_HOW, &prev.bound, &now.bound);
    for (i, sla) in SLA_KINDS.iter().enumerate() {
        for (j, outcome) in SLA_OUTCOMES.iter().enumerate() {
            metrics
                .sla_completed
                .with_label_values(&[sla, outcome])
                .inc_by(d(prev.sla_completed[i][j], now.sla_completed[i][j]));
        }
    }
}

/// Open incidents by service, priority and state: an incident counts once
/// for each business service it impacts (so the per-service series do not
/// add up to the total when incidents impact several), `none` when it
/// impacts none. Every service of the catalog is exported, at 0 when quiet;
/// when the catalog changes, series of services no longer in it go
/// (`exported` remembers the services last exported).
pub fn gauges<'a>(
    engines: impl Iterator<Item = &'a Engine> + Clone,
    cmdb: &Cmdb,
    sla_pause_on: &[String],
    metrics: &Metrics,
    now: Timestamp,
    exported: &mut Vec<String>,
) {
    let alerts: usize = engines.clone().map(Engine::active_alerts).sum();
    metrics
        .active_alerts
        .set(i64::try_from(alerts).unwrap_or(i64::MAX));
    let mut services: Vec<&str> = cmdb.services().iter().map(|s| s.id.as_str()).collect();
    services.push("none");
    let index: rustc_hash::FxHashMap<&str, usize> =
        services.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    // [service][priority][open=0 / acknowledged=1]
    let mut counts = vec![[[0i64; 2]; 5]; services.len()];
    let none = services.len() - 1;
    // [response, resolution][running, warning50, warning75, breached]
    let mut sla = [[0i64; 4]; 2];
    // [priority][open=0 / acknowledged=1], each incident once.
    let mut totals = [[0i64; 2]; 5];
    for inc in engines.flat_map(Engine::active_incidents) {
        use crate::slo::sla::SlaStatus;
        let timers = crate::slo::sla::incident_sla(cmdb, inc, now, sla_pause_on);
        // An active incident's response timer stopped once acknowledged;
        // its resolution timer runs until it is resolved.
        let running = [
            timers.response.filter(|_| inc.acknowledged_at.is_none()),
            timers.resolution,
        ];
        for (k, t) in running.iter().enumerate() {
            let status = match t.as_ref().map(|t| t.status) {
                Some(SlaStatus::Running) => 0,
                Some(SlaStatus::Warning50) => 1,
                Some(SlaStatus::Warning75) => 2,
                Some(SlaStatus::Breached) => 3,
                Some(SlaStatus::Met) | None => continue,
            };
            sla[k][status] += 1;
        }
        let p = usize::from(inc.priority.get() - 1);
        let s = usize::from(inc.state == IncidentState::Acknowledged);
        totals[p][s] += 1;
        let mut any = false;
        for svc in &inc.impacted_services {
            if let Some(&i) = index.get(svc.as_str()) {
                counts[i][p][s] += 1;
                any = true;
            }
        }
        if !any {
            counts[none][p][s] += 1;
        }
    }
    if exported.len() != services.len() || exported.iter().zip(&services).any(|(a, b)| a != b) {
        metrics.incidents_open.reset();
        *exported = services.iter().map(|s| s.to_string()).collect();
    }
    for (k, sla_kind) in crate::telemetry::SLA_KINDS.iter().enumerate() {
        for (j, status) in crate::telemetry::SLA_ACTIVE_STATUSES.iter().enumerate() {
            metrics
                .sla_active
                .with_label_values(&[sla_kind, status])
                .set(sla[k][j]);
        }
    }
    for (pi, p) in Priority::ALL.iter().enumerate() {
        for (si, s) in IncidentState::ACTIVE.iter().enumerate() {
            metrics
                .incidents_active
                .with_label_values(&[p.as_str(), s.as_str()])
                .set(totals[pi][si]);
        }
    }
    for (svc, by_priority) in services.iter().zip(&counts) {
        for (pi, p) in Priority::ALL.iter().enumerate() {
            for (si, s) in IncidentState::ACTIVE.iter().enumerate() {
                metrics
                    .incidents_open
                    .with_label_values(&[svc, p.as_str(), s.as_str()])
                    .set(by_priority[pi][si]);
            }
        }
    }
}
