//! Metrics registry with typed handles (DESIGN §7 names), and tracing setup.

use crate::domain::{IncidentState, Priority, Source};
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Reasons an ingest request is turned away (bounded label values).
pub const REJECT_REASONS: [&str; 7] = [
    "invalid",
    "unauthorized",
    "too_large",
    "rate_limited",
    "overloaded",
    "unavailable",
    "full",
];

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub alerts_received: IntCounterVec,
    /// Alerts of a body refused alone (`source`, `reason`).
    pub alerts_rejected: IntCounterVec,
    /// Alerts whose event time was replaced by the receive time.
    pub alert_times_clamped: IntCounterVec,
    pub alerts_deduplicated: IntCounter,
    pub alerts_dropped: IntCounterVec,
    pub alerts_suppressed: IntCounter,
    pub alerts_expired: IntCounter,
    pub alert_state_changes: IntCounter,
    pub requests_rejected: IntCounterVec,
    pub incidents_created: IntCounter,
    pub incidents_resolved: IntCounter,
    pub incidents_reopened: IntCounter,
    pub incidents_flapping: IntCounter,
    pub incidents_open: IntGaugeVec,
    pub incidents_active: IntGaugeVec,
    pub active_alerts: IntGauge,
    pub rule_errors: IntCounter,
    pub rules_loaded: IntGauge,
    pub rule_reloads: IntCounterVec,
    /// Listener certificate reloads (SIGHUP), by outcome.
    pub tls_reloads: IntCounterVec,
    /// Open client connections of the listener.
    pub http_connections: IntGauge,
    /// Connections the server closed or refused, by reason.
    pub http_connections_closed: IntCounterVec,
    pub rule_evaluation_seconds: Histogram,
    pub engine_batch_seconds: Histogram,
    /// Timer passes of the engine (SLA, auto-resolve, counter flushes):
    /// flat while the engine loop is stuck.
    pub engine_ticks: IntCounter,
    /// MTTA / MTTR as distributions (opened → acknowledged / resolved).
    pub time_to_acknowledge: Histogram,
    pub time_to_resolve: Histogram,
    pub store_commit_seconds: Histogram,
    pub store_batch_ops: Histogram,
    pub store_errors: IntCounter,
    /// The database file found deleted, replaced or overwritten.
    pub store_lost: IntCounter,
    /// SQLite: acknowledged SQL not yet in the tables (reads wait for it).
    pub store_journal_backlog: IntGauge,
    pub request_seconds: HistogramVec,
    pub incidents_merged: IntCounter,
    pub problems_opened: IntCounter,
    pub cmdb_cis: IntGauge,
    pub cmdb_reloads: IntCounterVec,
    pub alerts_bound: IntCounterVec,
    pub root_inferences: IntCounterVec,
    pub announcements: IntCounterVec,
    pub sla_completed: IntCounterVec,
    pub sla_active: IntGaugeVec,
    pub shards_owned: IntGauge,
    pub kafka: KafkaMetrics,
    pub slo: SloMetrics,
    pub kpi: KpiMetrics,
    pub outbound: OutboundMetrics,
}

/// The listener's connection counts, fed by `net::server`.
pub struct ConnMetrics {
    open: IntGauge,
    closed: IntCounterVec,
}

impl ConnMetrics {
    pub fn new(m: &Metrics) -> ConnMetrics {
        ConnMetrics {
            open: m.http_connections.clone(),
            closed: m.http_connections_closed.clone(),
        }
    }
}

impl crate::net::server::ConnObserver for ConnMetrics {
    fn open(&self, open: usize) {
        self.open.set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    fn closed(&self, reason: crate::net::server::CloseReason) {
        self.closed.with_label_values(&[reason.as_str()]).inc();
    }
}

/// Outbound delivery per destination (labels bounded by the config).
#[derive(Clone)]
pub struct OutboundMetrics {
    /// `destination`, `operation` (event kind), `outcome` (`success`,
    /// `retry`, `rejected`).
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub last_success: GaugeVec,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker: IntGaugeVec,
    /// Failed calls by `destination` and `reason` (`tls`, `connect`,
    /// `timeout`, `dns`, `http_status`, `other`).
    pub failures: IntCounterVec,
    /// Two-way sync applied here: `destination`, `via` (`webhook`,
    /// `poll`), `action` (`acknowledged`, `resolved`).
    pub inbound: IntCounterVec,
    /// Remediations by `destination` and `outcome` (`requested`,
    /// `held_back`, `dry_run`, `succeeded`, `failed`, `timed_out`).
    pub remediations: IntCounterVec,
}

/// `incidentd_outbound_requests_total{outcome}` values.
pub const OUTBOUND_OUTCOMES: [&str; 3] = ["success", "retry", "rejected"];

/// SLO series (labels `service`, `slo`; `window` for burn rates): bounded
/// by the service catalog.
#[derive(Clone)]
pub struct SloMetrics {
    pub objective: GaugeVec,
    pub window: GaugeVec,
    pub sli: GaugeVec,
    pub budget_remaining: GaugeVec,
    pub burn_rate: GaugeVec,
    pub bad_seconds: CounterVec,
    pub valid_seconds: CounterVec,
    pub refresh_failures: IntCounter,
}

/// Service-management KPIs (`kpi`): gauges recomputed from the store, and
/// the change outcomes decided since the process started. Labels are
/// bounded by the catalog, the rules and the fixed windows.
#[derive(Clone)]
pub struct KpiMetrics {
    /// `service`, `outcome` (`successful`, `failed`).
    pub changes: IntCounterVec,
    /// `service`, `window` (`7d`, `30d`).
    pub change_failure: GaugeVec,
    /// `window`, `kind` (`received`, `suppressed`, `correlated`).
    pub noise_alerts: GaugeVec,
    /// `window`, `rule`.
    pub noise_suppressed: GaugeVec,
    /// `window`.
    pub noise_incidents: GaugeVec,
    pub noise_reduction: GaugeVec,
    /// `service`, `window`, `kind`.
    pub service_noise_alerts: GaugeVec,
    /// `service`, `window`.
    pub service_noise_incidents: GaugeVec,
    pub service_noise_reduction: GaugeVec,
    /// `service`, `priority`, `window`.
    pub service_incidents: GaugeVec,
    pub service_mtta: GaugeVec,
    pub service_mttr: GaugeVec,
    /// `service`, `sla`.
    pub service_sla_compliance: GaugeVec,
    pub refresh_failures: IntCounter,
    /// How long the last refresh took (store reads and computation): it
    /// reads a week of alerts and a month of incidents.
    pub refresh_seconds: Gauge,
}

/// Kafka source and publisher health. Labels are bounded: topics come from
/// config, partitions from the topic's partition count.
#[derive(Clone)]
pub struct KafkaMetrics {
    pub consumed: IntCounterVec,
    pub invalid: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub lag: IntGaugeVec,
    pub rebalances: IntCounterVec,
    pub commit_failures: IntCounter,
    pub published: IntCounterVec,
    pub batch_seconds: Histogram,
}

/// `Stats::bound` in order.
pub const BOUND_HOW: [&str; 4] = ["ci_label", "match", "hostname", "unbound"];

/// `outcome` of `incidentd_root_inferences_total`, in `Stats::inferences` order.
pub const INFERENCE_OUTCOMES: [&str; 4] = ["inferred", "confirmed", "superseded", "ambiguous"];
/// `outcome` of `incidentd_incident_announcements_total`, in
/// `Stats::announcements` order.
pub const ANNOUNCEMENT_OUTCOMES: [&str; 2] = ["announced", "withheld"];
/// `Stats::sla_completed` in order.
pub const SLA_KINDS: [&str; 2] = ["response", "resolution"];
pub const SLA_OUTCOMES: [&str; 2] = ["met", "breached"];
/// Statuses of a running SLA timer (`incidentd_sla_active`).
pub const SLA_ACTIVE_STATUSES: [&str; 4] = ["running", "warning50", "warning75", "breached"];

/// Incident lifecycle buckets, 1 minute to 3 days: on-call response is
/// minutes, resolution up to days.
const LIFECYCLE_BUCKETS: [f64; 12] = [
    60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14_400.0, 28_800.0, 43_200.0, 86_400.0, 172_800.0,
    259_200.0,
];

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are unique by construction below; a clash is a programming error
    // caught by the test `metrics_register_and_render`.
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = r.register(Box::new(pc)) {
                tracing::warn!(error = %e, "process metrics unavailable");
            }
        }
        let counter = |name: &str, help: &str| {
            reg(
                &r,
                IntCounter::with_opts(Opts::new(name, help)).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let fast_buckets =
            prometheus::exponential_buckets(0.000_05, 2.0, 16).expect("valid buckets");
        let m = Metrics {
            alerts_received: counter_vec(
                "incidentd_alerts_received_total",
                "Alerts received, by source.",
                &["source"],
            ),
            alerts_rejected: counter_vec(
                "incidentd_alerts_rejected_total",
                "Alerts refused alone while the rest of their body was accepted (kept in the quarantine), by source and reason (invalid, limit, time).",
                &["source", "reason"],
            ),
            alert_times_clamped: counter_vec(
                "incidentd_alert_times_clamped_total",
                "Alerts whose startsAt or endsAt was beyond limits.max_clock_skew or max_alert_age and was replaced by the receive time, by source.",
                &["source"],
            ),
            alerts_deduplicated: counter(
                "incidentd_alerts_deduplicated_total",
                "Deliveries that only repeated a known alert state.",
            ),
            alerts_dropped: counter_vec(
                "incidentd_alerts_dropped_total",
                "Accepted alerts that changed nothing, by reason (stale: older than known state; unknown_resolved: resolve for an alert never seen firing).",
                &["reason"],
            ),
            alerts_suppressed: counter(
                "incidentd_alerts_suppressed_total",
                "Alerts recorded but suppressed by a rule.",
            ),
            alerts_expired: counter(
                "incidentd_alerts_expired_total",
                "Firing alerts taken as resolved after incident.alert_timeout without a delivery (silenced or removed upstream).",
            ),
            alert_state_changes: counter(
                "incidentd_alert_state_changes_total",
                "Alerts that changed between firing and resolved.",
            ),
            requests_rejected: counter_vec(
                "incidentd_ingest_requests_rejected_total",
                "Ingest requests refused, by source and reason.",
                &["source", "reason"],
            ),
            incidents_created: counter("incidentd_incidents_created_total", "Incidents opened."),
            incidents_resolved: counter(
                "incidentd_incidents_resolved_total",
                "Incidents resolved (automatically or by hand).",
            ),
            incidents_reopened: counter(
                "incidentd_incidents_reopened_total",
                "Incidents reopened by a re-fire within the reopen window.",
            ),
            incidents_flapping: counter(
                "incidentd_incidents_flapping_total",
                "Incidents marked flapping.",
            ),
            incidents_open: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "incidentd_incidents_open",
                        "Active incidents by service, priority and state.",
                    ),
                    &["service", "priority", "state"],
                )
                .expect("valid metric"),
            ),
            incidents_active: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "incidentd_incidents_active",
                        "Active incidents by priority and state, each counted once (incidentd_incidents_open counts one per impacted service).",
                    ),
                    &["priority", "state"],
                )
                .expect("valid metric"),
            ),
            active_alerts: reg(
                &r,
                IntGauge::new(
                    "incidentd_active_alerts",
                    "Alerts held in memory (firing or recently resolved).",
                )
                .expect("valid metric"),
            ),
            rule_errors: counter(
                "incidentd_rule_errors_total",
                "Rule conditions that failed at evaluation (treated as not matched).",
            ),
            rules_loaded: reg(
                &r,
                IntGauge::new("incidentd_rules_loaded", "Rules currently in force.")
                    .expect("valid metric"),
            ),
            rule_reloads: counter_vec(
                "incidentd_rule_reloads_total",
                "Rule reloads, by outcome.",
                &["outcome"],
            ),
            tls_reloads: counter_vec(
                "incidentd_tls_reloads_total",
                "Reloads of the listener's certificate and key (SIGHUP), by outcome.",
                &["outcome"],
            ),
            http_connections: reg(
                &r,
                IntGauge::new(
                    "incidentd_http_connections",
                    "Open client connections of the listener.",
                )
                .expect("valid metric"),
            ),
            http_connections_closed: counter_vec(
                "incidentd_http_connections_closed_total",
                "Connections the server closed or refused, by reason (idle, header_timeout, evicted, refused, handshake).",
                &["reason"],
            ),
            rule_evaluation_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "incidentd_rule_evaluation_duration_seconds",
                        "Time to evaluate the rule set for one new or changed alert.",
                    )
                    .buckets(
                        prometheus::exponential_buckets(0.000_001, 4.0, 10).expect("valid buckets"),
                    ),
                )
                .expect("valid metric"),
            ),
            time_to_acknowledge: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "incidentd_incident_time_to_acknowledge_seconds",
                        "From an incident's opening to its acknowledgement (MTTA).",
                    )
                    .buckets(LIFECYCLE_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            time_to_resolve: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "incidentd_incident_time_to_resolve_seconds",
                        "From an incident's opening to its resolution (MTTR).",
                    )
                    .buckets(LIFECYCLE_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            engine_batch_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "incidentd_engine_batch_duration_seconds",
                        "Time the incident engine spent on one batch of commands.",
                    )
                    .buckets(fast_buckets.clone()),
                )
                .expect("valid metric"),
            ),
            store_commit_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "incidentd_store_commit_duration_seconds",
                        "Time to commit one batch to the store.",
                    )
                    .buckets(fast_buckets.clone()),
                )
                .expect("valid metric"),
            ),
            store_batch_ops: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "incidentd_store_batch_operations",
                        "Operations per committed store batch.",
                    )
                    .buckets(prometheus::exponential_buckets(1.0, 4.0, 10).expect("valid buckets")),
                )
                .expect("valid metric"),
            ),
            engine_ticks: counter(
                "incidentd_engine_ticks_total",
                "Timer passes of the incident engine (SLA timers, auto-resolve, counter flushes).",
            ),
            store_errors: counter(
                "incidentd_store_errors_total",
                "Failed store commits (retried).",
            ),
            store_lost: counter(
                "incidentd_store_lost_total",
                "Times the database file was found deleted, replaced or overwritten under the daemon (writes are then refused).",
            ),
            store_journal_backlog: reg(
                &r,
                IntGauge::new(
                    "incidentd_store_journal_backlog_bytes",
                    "SQLite: batches acknowledged (in the journal) and not yet projected into the tables, as SQL text; reads wait for them.",
                )
                .expect("valid metric"),
            ),
            request_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "incidentd_ingest_request_duration_seconds",
                        "Ingest request latency, until durable.",
                    )
                    .buckets(fast_buckets),
                    &["source"],
                )
                .expect("valid metric"),
            ),
            incidents_merged: counter(
                "incidentd_incidents_merged_total",
                "Incidents folded into another whose root cause was found later.",
            ),
            problems_opened: counter("incidentd_problems_opened_total", "Problem records opened."),
            cmdb_cis: reg(
                &r,
                IntGauge::new(
                    "incidentd_cmdb_cis",
                    "Configuration items in the CMDB in force.",
                )
                .expect("valid metric"),
            ),
            cmdb_reloads: counter_vec(
                "incidentd_cmdb_reloads_total",
                "CMDB reloads by source (file, servicenow) and outcome.",
                &["source", "outcome"],
            ),
            alerts_bound: counter_vec(
                "incidentd_alerts_bound_total",
                "New alerts by how they were bound to a CI (ci_label, match, hostname, unbound).",
                &["how"],
            ),
            root_inferences: counter_vec(
                "incidentd_root_inferences_total",
                "Roots inferred for CIs without alerts, and what became of them (confirmed by their own alert, superseded by another root), and choices left ambiguous.",
                &["outcome"],
            ),
            announcements: counter_vec(
                "incidentd_incident_announcements_total",
                "New incidents announced to destinations once their settle delay (outbound.settle) ended, and those merged into another or resolved before then, never announced (withheld).",
                &["outcome"],
            ),
            sla_completed: counter_vec(
                "incidentd_sla_completed_total",
                "SLA timers that stopped (acknowledged / resolved), by timer and outcome.",
                &["sla", "outcome"],
            ),
            sla_active: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "incidentd_sla_active",
                        "Running SLA timers of active incidents, by timer and status.",
                    ),
                    &["sla", "status"],
                )
                .expect("valid metric"),
            ),
            shards_owned: reg(
                &r,
                IntGauge::new(
                    "incidentd_shards_owned",
                    "Work shards (Kafka partitions) whose incidents this instance keeps.",
                )
                .expect("valid metric"),
            ),
            kafka: KafkaMetrics {
                consumed: counter_vec(
                    "incidentd_kafka_messages_consumed_total",
                    "Kafka messages consumed and made durable, by topic.",
                    &["topic"],
                ),
                invalid: counter_vec(
                    "incidentd_kafka_messages_invalid_total",
                    "Kafka messages that could not be parsed (skipped), by topic.",
                    &["topic"],
                ),
                dead_lettered: counter_vec(
                    "incidentd_kafka_messages_dead_lettered_total",
                    "Invalid Kafka messages copied to the dead-letter topic, by topic.",
                    &["topic"],
                ),
                lag: reg(
                    &r,
                    IntGaugeVec::new(
                        Opts::new(
                            "incidentd_kafka_consumer_lag",
                            "Messages behind the partition's high watermark (from librdkafka statistics).",
                        ),
                        &["topic", "partition"],
                    )
                    .expect("valid metric"),
                ),
                rebalances: counter_vec(
                    "incidentd_kafka_rebalances_total",
                    "Consumer group rebalances seen, by kind (assign, revoke).",
                    &["kind"],
                ),
                commit_failures: counter(
                    "incidentd_kafka_commit_failures_total",
                    "Offset commits the broker refused (retried with the next commit).",
                ),
                published: counter_vec(
                    "incidentd_kafka_published_total",
                    "Messages published to the ingest topic (one per partition key of a webhook), by outcome.",
                    &["outcome"],
                ),
                batch_seconds: reg(
                    &r,
                    Histogram::with_opts(
                        HistogramOpts::new(
                            "incidentd_kafka_batch_duration_seconds",
                            "From a Kafka batch handed to the engine until its offsets are stored.",
                        )
                        .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
                    )
                    .expect("valid metric"),
                ),
            },
            slo: SloMetrics {
                objective: gauge_vec(
                    "incidentd_slo_objective_ratio",
                    "The SLO's objective as a ratio (0.999 for 99.9 %).",
                    &["service", "slo"],
                ),
                window: gauge_vec(
                    "incidentd_slo_window_seconds",
                    "The SLO's window.",
                    &["service", "slo"],
                ),
                sli: gauge_vec(
                    "incidentd_slo_sli_ratio",
                    "Availability over the SLO window: 1 - downtime / valid time (maintenance excluded).",
                    &["service", "slo"],
                ),
                budget_remaining: gauge_vec(
                    "incidentd_slo_error_budget_remaining_ratio",
                    "Share of the window's error budget left; below 0 once overspent.",
                    &["service", "slo"],
                ),
                burn_rate: gauge_vec(
                    "incidentd_slo_burn_rate",
                    "Error ratio over the window divided by the error budget (1 spends exactly the budget); window=\"slo\" is the SLO's own window.",
                    &["service", "slo", "window"],
                ),
                bad_seconds: reg(
                    &r,
                    CounterVec::new(
                        Opts::new(
                            "incidentd_slo_bad_seconds_total",
                            "Seconds of downtime (qualifying incidents open, maintenance excluded) since this process started.",
                        ),
                        &["service", "slo"],
                    )
                    .expect("valid metric"),
                ),
                valid_seconds: reg(
                    &r,
                    CounterVec::new(
                        Opts::new(
                            "incidentd_slo_valid_seconds_total",
                            "Seconds outside maintenance windows since this process started.",
                        ),
                        &["service", "slo"],
                    )
                    .expect("valid metric"),
                ),
                refresh_failures: counter(
                    "incidentd_slo_refresh_failures_total",
                    "Failed reads of SLO downtime from the store (the last intervals stay in use).",
                ),
            },
            kpi: KpiMetrics {
                changes: counter_vec(
                    "incidentd_changes_total",
                    "Change outcomes decided since this process started, by each service the changed CI's failure would impact and outcome (successful, failed).",
                    &["service", "outcome"],
                ),
                change_failure: gauge_vec(
                    "incidentd_change_failure_ratio",
                    "Of the changes decided whose window ended within the window (7d, 30d), the share an incident failed, by service.",
                    &["service", "window"],
                ),
                noise_alerts: gauge_vec(
                    "incidentd_noise_alerts",
                    "Alerts that started firing within the window (1h, 1d, 7d), by kind: received, suppressed (by a rule), correlated (joined an incident another alert opened).",
                    &["window", "kind"],
                ),
                noise_suppressed: gauge_vec(
                    "incidentd_noise_suppressed_alerts",
                    "Alerts that started firing within the window and a rule suppressed, by rule.",
                    &["window", "rule"],
                ),
                noise_incidents: gauge_vec(
                    "incidentd_noise_incidents",
                    "Incidents opened within the window (merged ones not counted).",
                    &["window"],
                ),
                noise_reduction: gauge_vec(
                    "incidentd_noise_reduction_ratio",
                    "1 - incidents / alerts not suppressed, over the window; absent without such alerts.",
                    &["window"],
                ),
                service_noise_alerts: gauge_vec(
                    "incidentd_service_noise_alerts",
                    "incidentd_noise_alerts for the alerts on the service's CIs.",
                    &["service", "window", "kind"],
                ),
                service_noise_incidents: gauge_vec(
                    "incidentd_service_noise_incidents",
                    "Incidents impacting the service opened within the window (1h, 1d, 7d).",
                    &["service", "window"],
                ),
                service_noise_reduction: gauge_vec(
                    "incidentd_service_noise_reduction_ratio",
                    "1 - incidents impacting the service / alerts on its CIs not suppressed, over the window; absent without such alerts.",
                    &["service", "window"],
                ),
                service_incidents: gauge_vec(
                    "incidentd_service_incidents_opened",
                    "Incidents impacting the service opened within the window (7d, 30d), by priority.",
                    &["service", "priority", "window"],
                ),
                service_mtta: gauge_vec(
                    "incidentd_service_mtta_seconds",
                    "Mean time to acknowledge of the incidents impacting the service opened within the window, by priority; absent when none was acknowledged.",
                    &["service", "priority", "window"],
                ),
                service_mttr: gauge_vec(
                    "incidentd_service_mttr_seconds",
                    "Mean time to resolve of the incidents impacting the service opened within the window, by priority; absent when none was resolved.",
                    &["service", "priority", "window"],
                ),
                service_sla_compliance: gauge_vec(
                    "incidentd_service_sla_compliance_ratio",
                    "Of the SLA timers (response, resolution) of incidents impacting the service decided over the last 30 days, the share met; absent when none was decided.",
                    &["service", "sla"],
                ),
                refresh_failures: counter(
                    "incidentd_kpi_refresh_failures_total",
                    "Failed reads of the KPI figures from the store (the last figures stay in use).",
                ),
                refresh_seconds: reg(
                    &r,
                    Gauge::with_opts(Opts::new(
                        "incidentd_kpi_refresh_duration_seconds",
                        "How long the last refresh of the KPI figures took (store reads and computation).",
                    ))
                    .expect("valid metric"),
                ),
            },
            outbound: OutboundMetrics {
                requests: counter_vec(
                    "incidentd_outbound_requests_total",
                    "Requests to outbound destinations, by destination, operation (event) and outcome (success, retry, rejected).",
                    &["destination", "operation", "outcome"],
                ),
                failures: counter_vec(
                    "incidentd_outbound_failures_total",
                    "Failed outbound calls, by destination and reason (tls, connect, timeout, dns, http_status, other).",
                    &["destination", "reason"],
                ),
                inbound: counter_vec(
                    "incidentd_inbound_updates_total",
                    "Ticket changes from the ticketing tools applied to incidents, by destination, via (webhook, poll) and action (acknowledged, resolved).",
                    &["destination", "via", "action"],
                ),
                remediations: counter_vec(
                    "incidentd_remediations_total",
                    "StackStorm remediations, by destination and outcome (requested, held_back, dry_run, succeeded, failed, timed_out).",
                    &["destination", "outcome"],
                ),
                duration: reg(
                    &r,
                    HistogramVec::new(
                        HistogramOpts::new(
                            "incidentd_outbound_request_duration_seconds",
                            "Outbound request latency (until the answer or the failure).",
                        )
                        .buckets(prometheus::exponential_buckets(0.005, 2.0, 12).expect("valid buckets")),
                        &["destination"],
                    )
                    .expect("valid metric"),
                ),
                queue_depth: reg(
                    &r,
                    IntGaugeVec::new(
                        Opts::new(
                            "incidentd_outbound_queue_depth",
                            "Outbox messages not yet delivered, by destination.",
                        ),
                        &["destination"],
                    )
                    .expect("valid metric"),
                ),
                last_success: gauge_vec(
                    "incidentd_outbound_last_success_timestamp_seconds",
                    "When a destination last accepted a request (Unix time; 0: never).",
                    &["destination"],
                ),
                breaker: reg(
                    &r,
                    IntGaugeVec::new(
                        Opts::new(
                            "incidentd_outbound_breaker_state",
                            "Circuit breaker per destination: 0 closed, 1 half-open, 2 open.",
                        ),
                        &["destination"],
                    )
                    .expect("valid metric"),
                ),
            },
            registry: r.clone(),
        };
        let build = reg(
            &r,
            IntGaugeVec::new(
                Opts::new("incidentd_build_info", "Build information."),
                &["version"],
            )
            .expect("valid metric"),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Known label sets exported at 0 from the start.
        for s in Source::ALL {
            m.alerts_received.with_label_values(&[s.as_str()]);
            m.alert_times_clamped.with_label_values(&[s.as_str()]);
            for reason in crate::normalize::RejectReason::ALL {
                m.alerts_rejected
                    .with_label_values(&[s.as_str(), reason.as_str()]);
            }
            for reason in REJECT_REASONS {
                m.requests_rejected.with_label_values(&[s.as_str(), reason]);
            }
            m.request_seconds.with_label_values(&[s.as_str()]);
        }
        for reason in ["stale", "unknown_resolved"] {
            m.alerts_dropped.with_label_values(&[reason]);
        }
        for outcome in ["success", "failure"] {
            m.rule_reloads.with_label_values(&[outcome]);
            m.tls_reloads.with_label_values(&[outcome]);
            for source in ["file", "servicenow"] {
                m.cmdb_reloads.with_label_values(&[source, outcome]);
            }
        }
        for reason in crate::net::server::CloseReason::ALL {
            m.http_connections_closed
                .with_label_values(&[reason.as_str()]);
        }
        for kind in ["assign", "revoke"] {
            m.kafka.rebalances.with_label_values(&[kind]);
        }
        for outcome in ["success", "failure"] {
            m.kafka.published.with_label_values(&[outcome]);
        }
        for how in BOUND_HOW {
            m.alerts_bound.with_label_values(&[how]);
        }
        for sla in SLA_KINDS {
            for outcome in SLA_OUTCOMES {
                m.sla_completed.with_label_values(&[sla, outcome]);
            }
            for status in SLA_ACTIVE_STATUSES {
                m.sla_active.with_label_values(&[sla, status]);
            }
        }
        for p in Priority::ALL {
            for s in IncidentState::ACTIVE {
                m.incidents_open
                    .with_label_values(&["none", p.as_str(), s.as_str()]);
                m.incidents_active
                    .with_label_values(&[p.as_str(), s.as_str()]);
            }
        }
        m
    }

    /// Export the per-destination series at 0 from the start.
    pub fn known_destinations<'a>(&self, destinations: impl IntoIterator<Item = &'a str>) {
        for d in destinations {
            for op in crate::domain::outbox::EventKind::ALL {
                for outcome in OUTBOUND_OUTCOMES {
                    self.outbound
                        .requests
                        .with_label_values(&[d, op.as_str(), outcome]);
                }
            }
            self.outbound.duration.with_label_values(&[d]);
            self.outbound.queue_depth.with_label_values(&[d]);
            self.outbound.last_success.with_label_values(&[d]);
            self.outbound.breaker.with_label_values(&[d]);
            for reason in crate::net::FailureReason::ALL {
                self.outbound
                    .failures
                    .with_label_values(&[d, reason.as_str()]);
            }
        }
    }

    /// Export the per-topic Kafka series at 0 from the start.
    pub fn known_topics<'a>(&self, topics: impl IntoIterator<Item = &'a str>) {
        for t in topics {
            self.kafka.consumed.with_label_values(&[t]);
            self.kafka.invalid.with_label_values(&[t]);
            self.kafka.dead_lettered.with_label_values(&[t]);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Install the global tracing subscriber (text or JSON to stderr).
pub fn init_tracing(level: &str, json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

/// Colour escapes only for a person at a terminal: a log file, a pipe to
/// journald or a collector gets plain text. `NO_COLOR` (set and not
/// empty, <https://no-color.org>) turns them off on a terminal too.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new(""))));
    }

    #[test]
    fn metrics_register_and_render() {
        let m = Metrics::new();
        m.alerts_received
            .with_label_values(&["alertmanager"])
            .inc_by(3);
        let text = m.render();
        assert!(text.contains("incidentd_alerts_received_total{source=\"alertmanager\"} 3"));
        assert!(
            text.contains("incidentd_alerts_received_total{source=\"kafka\"} 0"),
            "known series start at 0"
        );
        assert!(text.contains("incidentd_build_info{version="));
        assert!(text.contains(
            "incidentd_incidents_open{priority=\"P1\",service=\"none\",state=\"open\"} 0"
        ));
        // No registration failed: every handle shows up.
        for name in [
            "incidentd_alerts_deduplicated_total",
            "incidentd_incidents_created_total",
            "incidentd_store_commit_duration_seconds",
            "incidentd_ingest_requests_rejected_total",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
