//! The engine's observations and monotonic totals, projected onto the
//! metrics: the engine knows what its numbers mean, telemetry only
//! registers and renders them.

use super::{Observations, Stats};
use crate::telemetry::{BOUND_HOW, Metrics, SLA_KINDS, SLA_OUTCOMES};

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
    metrics.alerts_expired.inc_by(d(prev.expired, now.expired));
    metrics
        .alerts_suppressed
        .inc_by(d(prev.suppressed, now.suppressed));
    metrics
        .alert_state_changes
        .inc_by(d(prev.state_changes, now.state_changes));
    metrics
        .incidents_created
        .inc_by(d(prev.incidents_created, now.incidents_created));
    metrics
        .incidents_resolved
        .inc_by(d(prev.incidents_resolved, now.incidents_resolved));
    metrics
        .incidents_reopened
        .inc_by(d(prev.incidents_reopened, now.incidents_reopened));
    metrics
        .incidents_flapping
        .inc_by(d(prev.flapping_detected, now.flapping_detected));
    metrics
        .rule_errors
        .inc_by(d(prev.rule_errors, now.rule_errors));
    metrics
        .incidents_merged
        .inc_by(d(prev.incidents_merged, now.incidents_merged));
    metrics
        .problems_opened
        .inc_by(d(prev.problems_opened, now.problems_opened));
    for (i, how) in BOUND_HOW.iter().enumerate() {
        metrics
            .alerts_bound
            .with_label_values(&[how])
            .inc_by(d(prev.bound[i], now.bound[i]));
    }
    for (i, sla) in SLA_KINDS.iter().enumerate() {
        for (j, outcome) in SLA_OUTCOMES.iter().enumerate() {
            metrics
                .sla_completed
                .with_label_values(&[sla, outcome])
                .inc_by(d(prev.sla_completed[i][j], now.sla_completed[i][j]));
        }
    }
}
