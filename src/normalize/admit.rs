//! What every decoded alert passes before the pipeline sees it: size limits
//! (a body within `http.max_body_bytes` can still carry one alert that
//! would cost megabytes in memory, the store and every list), the label
//! rules, and bounds on event time (an alert dated 1970 or 9999 would open
//! an incident decades overdue, or one that never resolves).
//!
//! A bad alert is rejected alone: its batch-mates go on, and the rejection
//! (index, field, reason) is answered to the sender and kept for operators.

use super::Event;
use crate::domain::{Alert, AlertStatus, LabelSet, Timestamp};
use serde::Serialize;
use std::time::Duration;

/// `[limits]` on one alert and one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertLimits {
    pub max_labels: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
    /// All of one alert's annotation names and values together.
    pub max_annotation_bytes: usize,
    /// Alerts of one body; those beyond are rejected.
    pub max_alerts: usize,
}

impl Default for AlertLimits {
    fn default() -> Self {
        AlertLimits {
            max_labels: 128,
            max_label_name_bytes: 256,
            max_label_value_bytes: 16 * 1024,
            max_annotation_bytes: 64 * 1024,
            max_alerts: 20_000,
        }
    }
}

/// How far an alert's event time may stray from the time it was received
/// before that receive time is taken instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// Into the future (a sender's clock ahead of ours).
    pub max_clock_skew: Duration,
    /// Into the past.
    pub max_alert_age: Duration,
}

impl Default for TimeBounds {
    fn default() -> Self {
        TimeBounds {
            max_clock_skew: Duration::from_secs(600),
            max_alert_age: Duration::from_secs(7 * 86_400),
        }
    }
}

/// The receiving side of a decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intake {
    /// Receive time: stands in for missing times, and bounds the others.
    pub now: Timestamp,
    pub limits: AlertLimits,
    /// `None` offline (replay, rule tests): a recorded stream's times are
    /// its own, however old.
    pub bounds: Option<TimeBounds>,
}

impl Intake {
    /// Default limits, no time bounds: for recorded streams.
    pub fn offline(now: Timestamp) -> Intake {
        Intake {
            now,
            limits: AlertLimits::default(),
            bounds: None,
        }
    }
}

/// Why an alert was rejected (the `reason` label of
/// `incidentd_alerts_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Malformed: a wrong type, a bad status or time, no labels.
    Invalid,
    /// Beyond a `[limits]` size.
    Limit,
    /// Its times contradict each other (`endsAt` before `startsAt`).
    Time,
}

impl RejectReason {
    pub const ALL: [RejectReason; 3] = [
        RejectReason::Invalid,
        RejectReason::Limit,
        RejectReason::Time,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::Limit => "limit",
            RejectReason::Time => "time",
        }
    }
}

/// One alert of a body that was not accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    /// Its position in the body.
    pub index: usize,
    /// The offending field, e.g. `alerts[3].labels.instance`.
    pub field: String,
    pub error: String,
    pub reason: RejectReason,
    /// What it said, cut short (long values and label sets truncated).
    pub alert: serde_json::Value,
}

/// A decoded body: the events to ingest and the alerts rejected.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub events: Vec<Event>,
    pub rejected: Vec<Rejected>,
    /// Alerts whose event time was replaced by the receive time.
    pub clamped: usize,
}

impl Batch {
    pub(super) fn reject(
        &mut self,
        index: usize,
        field: String,
        error: impl Into<String>,
        reason: RejectReason,
        alert: serde_json::Value,
    ) {
        self.rejected.push(Rejected {
            index,
            field,
            error: error.into(),
            reason,
            alert,
        });
    }
}

/// Longest value kept in a rejected alert's copy.
const EXCERPT: usize = 256;
/// Most labels (or annotations) kept in a rejected alert's copy.
const EXCERPT_PAIRS: usize = 32;

fn cut(s: &str) -> String {
    if s.len() <= EXCERPT {
        return s.to_string();
    }
    let mut end = EXCERPT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// A rejected alert's JSON, bounded in size whatever it held.
pub fn excerpt(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(cut(s)),
        Value::Array(a) => Value::Array(a.iter().take(EXCERPT_PAIRS).map(excerpt).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .take(EXCERPT_PAIRS)
                .map(|(k, v)| (cut(k), excerpt(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn pairs(set: &LabelSet) -> serde_json::Value {
    serde_json::Value::Object(
        set.iter()
            .take(EXCERPT_PAIRS)
            .map(|(k, v)| (cut(k), serde_json::Value::String(cut(v))))
            .collect(),
    )
}

/// The bounded copy of a decoded alert.
pub(super) fn alert_excerpt(a: &Alert) -> serde_json::Value {
    serde_json::json!({
        "status": match a.status { AlertStatus::Firing => "firing", AlertStatus::Resolved => "resolved" },
        "labels": pairs(&a.labels),
        "label_count": a.labels.len(),
        "startsAt": a.starts_at.to_rfc3339(),
    })
}

/// Check `alert` (the `index`-th of its body, its fields named under
/// `prefix`, e.g. `alerts[3].`) against the limits and label rules, bound
/// its event times, and add it to `out`: as an event (with a note when a
/// time was replaced), or as a rejection.
pub(super) fn admit(
    mut alert: Alert,
    index: usize,
    prefix: &str,
    intake: &Intake,
    out: &mut Batch,
) {
    let l = &intake.limits;
    let problem = check_sizes(&alert, prefix, l);
    if let Some((field, error, reason)) = problem {
        let excerpt = alert_excerpt(&alert);
        out.reject(index, field, error, reason, excerpt);
        return;
    }
    let mut notes = Vec::new();
    if let Some(b) = intake.bounds {
        let now = intake.now;
        let ahead = now.saturating_add(b.max_clock_skew);
        let oldest = now.saturating_sub(b.max_alert_age);
        if alert.starts_at > ahead {
            notes.push(format!(
                "startsAt {} is more than {} ahead of the receive time: taken as {}",
                alert.starts_at.to_rfc3339(),
                crate::domain::format_duration(b.max_clock_skew),
                now.to_rfc3339()
            ));
            alert.starts_at = now;
        } else if alert.starts_at < oldest {
            notes.push(format!(
                "startsAt {} is older than {}: taken as the receive time {}",
                alert.starts_at.to_rfc3339(),
                crate::domain::format_duration(b.max_alert_age),
                now.to_rfc3339()
            ));
            alert.starts_at = now;
        }
        if let Some(end) = alert.ends_at {
            if end > ahead {
                notes.push(format!(
                    "endsAt {} is more than {} ahead of the receive time: taken as {}",
                    end.to_rfc3339(),
                    crate::domain::format_duration(b.max_clock_skew),
                    now.to_rfc3339()
                ));
                alert.ends_at = Some(now.max(alert.starts_at));
            } else if end < alert.starts_at {
                // Its start was moved to now; the end cannot precede it.
                alert.ends_at = Some(alert.starts_at);
            }
        }
    }
    let fingerprint = alert.fingerprint;
    out.events.push(Event::Alert(alert));
    if !notes.is_empty() {
        out.clamped += 1;
        out.events.push(Event::Note {
            fingerprint,
            at: intake.now,
            note: notes.join("; "),
        });
    }
}

/// The first size or label rule `a` breaks: (field, message, reason).
fn check_sizes(a: &Alert, prefix: &str, l: &AlertLimits) -> Option<(String, String, RejectReason)> {
    if a.labels.is_empty() {
        return Some((
            format!("{prefix}labels"),
            "an alert needs at least one label".into(),
            RejectReason::Invalid,
        ));
    }
    if a.labels.len() > l.max_labels {
        return Some((
            format!("{prefix}labels"),
            format!(
                "{} labels; at most {} (limits.max_labels)",
                a.labels.len(),
                l.max_labels
            ),
            RejectReason::Limit,
        ));
    }
    for (name, value) in a.labels.iter() {
        // Any UTF-8 name is a label name since Prometheus 3; an empty one
        // is not.
        if name.is_empty() {
            return Some((
                format!("{prefix}labels"),
                "a label name must not be empty".into(),
                RejectReason::Invalid,
            ));
        }
        if name.len() > l.max_label_name_bytes {
            return Some((
                format!("{prefix}labels.{}", cut(name)),
                format!(
                    "label name of {} bytes; at most {} (limits.max_label_name_bytes)",
                    name.len(),
                    l.max_label_name_bytes
                ),
                RejectReason::Limit,
            ));
        }
        if value.len() > l.max_label_value_bytes {
            return Some((
                format!("{prefix}labels.{name}"),
                format!(
                    "value of {} bytes; at most {} (limits.max_label_value_bytes)",
                    value.len(),
                    l.max_label_value_bytes
                ),
                RejectReason::Limit,
            ));
        }
    }
    let annotations: usize = a.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if annotations > l.max_annotation_bytes {
        return Some((
            format!("{prefix}annotations"),
            format!(
                "{annotations} bytes of annotations; at most {} (limits.max_annotation_bytes)",
                l.max_annotation_bytes
            ),
            RejectReason::Limit,
        ));
    }
    None
}

/// An alert whose given end precedes its start is contradictory: refused
/// rather than guessed at. `None` when the times agree.
pub(super) fn ends_before_start(
    starts_at: Timestamp,
    ends_at: Option<Timestamp>,
) -> Option<String> {
    match ends_at {
        Some(e) if e < starts_at => Some(format!(
            "{} is before startsAt {}",
            e.to_rfc3339(),
            starts_at.to_rfc3339()
        )),
        _ => None,
    }
}
