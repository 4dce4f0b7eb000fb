//! The row format shared by every backend: how values are written to columns
//! and read back. Both schemas use 64-bit integers, text and booleans for the
//! same columns, so one decoder serves both.

use super::{AlertRecord, AlertSnapshot, StoreError};
use crate::change::{ChangeRecord, ChangeState};
use crate::domain::{
    AlertStatus, Fingerprint, Hold, Incident, IncidentId, IncidentState, LabelSet, Level, Links,
    Priority, Problem, ServiceImpact, Source, TimelineEntry, TimelineKind, Timestamp,
};
use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Decode, Row, Type};

/// Lists and links that ride along in `incidents.extra` (read back; written
/// through [`ExtraRef`]).
#[derive(Deserialize, Default)]
pub(super) struct Extra {
    #[serde(default)]
    cis: crate::domain::ThinVec<String>,
    #[serde(default)]
    impacted_services: crate::domain::ThinVec<String>,
    #[serde(default)]
    rules: crate::domain::ThinVec<std::sync::Arc<str>>,
    #[serde(default)]
    links: Links,
    #[serde(default)]
    impact_detail: crate::domain::ThinVec<ServiceImpact>,
    #[serde(default)]
    signature: Option<std::sync::Arc<str>>,
    #[serde(default, skip_serializing_if = "crate::domain::ThinVec::is_empty")]
    sla_marks: crate::domain::ThinVec<String>,
    #[serde(default, skip_serializing_if = "crate::domain::ThinVec::is_empty")]
    holds: crate::domain::ThinVec<Hold>,
    #[serde(default)]
    auto_resolve_at: crate::domain::MaybeTime,
    #[serde(default)]
    root_inferred: bool,
    #[serde(default)]
    unannounced: Option<Box<crate::domain::Unannounced>>,
}

/// [`Extra`] borrowed from an incident: the same JSON without copying its
/// lists (written for every incident change, while senders wait).
#[derive(Serialize)]
struct ExtraRef<'a> {
    cis: &'a [String],
    impacted_services: &'a [String],
    rules: &'a [std::sync::Arc<str>],
    links: &'a Links,
    impact_detail: &'a [ServiceImpact],
    signature: &'a Option<std::sync::Arc<str>>,
    #[serde(skip_serializing_if = "empty")]
    sla_marks: &'a [String],
    #[serde(skip_serializing_if = "empty")]
    holds: &'a [Hold],
    #[serde(skip_serializing_if = "crate::domain::MaybeTime::is_none_ref")]
    auto_resolve_at: crate::domain::MaybeTime,
    #[serde(skip_serializing_if = "is_false")]
    root_inferred: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    unannounced: &'a Option<Box<crate::domain::Unannounced>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn empty<T>(v: &&[T]) -> bool {
    v.is_empty()
}

/// `incidents.extra` of an incident, as JSON text.
pub(super) fn extra_json(inc: &Incident) -> String {
    to_json(&ExtraRef {
        cis: &inc.cis,
        impacted_services: &inc.impacted_services,
        rules: &inc.rules,
        links: &inc.links,
        impact_detail: &inc.impact_detail,
        signature: &inc.signature,
        sla_marks: &inc.sla_marks,
        holds: &inc.holds,
        auto_resolve_at: inc.auto_resolve_at,
        root_inferred: inc.root_inferred,
        unannounced: &inc.unannounced,
    })
}

/// JSON text of a value. Our types (string maps, plain structs) always
/// serialize, so the fallback is never written in practice.
pub(super) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// Fingerprints are u64; databases have i64: store the bit pattern.
pub(super) fn fp_to_db(f: Fingerprint) -> i64 {
    i64::from_ne_bytes(f.0.to_ne_bytes())
}

pub(super) fn fp_from_db(v: i64) -> Fingerprint {
    Fingerprint(u64::from_ne_bytes(v.to_ne_bytes()))
}

/// Counters saturate rather than wrap: a count past i64::MAX is not real.
pub(super) fn count_to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn count_from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The snake_case name serde gives a change state.
pub(super) fn change_state_str(s: ChangeState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(super) fn parse_state(s: &str) -> Result<IncidentState, StoreError> {
    IncidentState::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown incident state {s:?}")))
}

fn level(v: i64, what: &str) -> Result<Level, StoreError> {
    u8::try_from(v)
        .ok()
        .and_then(Level::new)
        .ok_or_else(|| StoreError::Corrupt(format!("{what} {v} out of range")))
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

fn parse_status(s: &str) -> Result<AlertStatus, StoreError> {
    match s {
        "firing" => Ok(AlertStatus::Firing),
        "resolved" => Ok(AlertStatus::Resolved),
        _ => Err(StoreError::Corrupt(format!("unknown alert status {s:?}"))),
    }
}

fn parse_source(s: &str) -> Result<Source, StoreError> {
    Source::ALL
        .into_iter()
        .find(|x| x.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown alert source {s:?}")))
}

fn parse_kind(s: &str) -> Result<TimelineKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("unknown timeline kind {s:?}")))
}

fn from_json<'de, T: Deserialize<'de>>(text: &'de str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Column access by name, for the rows of any backend whose integers decode
/// as i64, text as String and flags as bool (SQLite and PostgreSQL both).
pub trait Cols {
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;
}

impl<R> Cols for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
        self.try_get(col)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(col)
    }
    fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        self.try_get(col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        self.try_get(col)
    }
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
        self.try_get(col)
    }
}

/// An `outbox` row (`incident` as JSON text).
pub(super) fn outbox_from_row(r: &impl Cols) -> Result<super::OutboxRow, StoreError> {
    let kind = r.text("kind")?;
    Ok(super::OutboxRow {
        id: r.int("id")?,
        message: super::OutboxMessage {
            destination: r.text("destination")?,
            kind: crate::domain::outbox::EventKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown outbox kind {kind:?}")))?,
            at: Timestamp(r.int("at")?),
            incident: from_json(&r.text("incident")?, "outbox.incident")?,
        },
        attempts: u32::try_from(r.int("attempts")?).unwrap_or(u32::MAX),
        next_at: Timestamp(r.int("next_at")?),
        last_error: r.opt_text("last_error")?,
    })
}

/// An `incidents` row (`extra` as JSON text), without its fingerprints.
pub(super) fn incident_from_row(r: &impl Cols) -> Result<Incident, StoreError> {
    let extra: Extra = from_json(&r.text("extra")?, "incidents.extra")?;
    let prio = r.int("priority")?;
    Ok(Incident {
        id: IncidentId(r.int("id")?),
        key: r.text("key")?.into(),
        state: parse_state(&r.text("state")?)?,
        priority: u8::try_from(prio)
            .ok()
            .and_then(Priority::new)
            .ok_or_else(|| StoreError::Corrupt(format!("priority {prio} out of range")))?,
        impact: level(r.int("impact")?, "impact")?,
        urgency: level(r.int("urgency")?, "urgency")?,
        title: r.text("title")?.into(),
        root_ci: r.opt_text("root_ci")?.map(Box::from),
        root_inferred: extra.root_inferred,
        cis: extra.cis,
        impacted_services: extra.impacted_services,
        impact_detail: extra.impact_detail,
        assignment_group: r.opt_text("assignment_group")?.map(Box::from),
        alert_fingerprints: crate::domain::ThinVec::new(),
        alert_count: count_from_db(r.int("alert_count")?),
        opened_at: Timestamp(r.int("opened_at")?),
        acknowledged_at: ts(r.opt_int("acknowledged_at")?),
        acknowledged_by: r.opt_text("acknowledged_by")?.map(Box::from),
        resolved_at: ts(r.opt_int("resolved_at")?),
        updated_at: Timestamp(r.int("updated_at")?),
        reopen_count: u32::try_from(r.int("reopen_count")?).unwrap_or(0),
        flapping: r.flag("flapping")?,
        rules: extra.rules,
        links: extra.links,
        signature: extra.signature,
        sla_marks: extra.sla_marks,
        holds: extra.holds,
        auto_resolve_at: extra.auto_resolve_at,
        unannounced: extra.unannounced,
        shard: u32::try_from(r.int("shard")?).unwrap_or(0),
    })
}

/// An `alerts` row (`labels` and `annotations` as JSON text).
pub(super) fn alert_record_from_row(r: &impl Cols) -> Result<AlertRecord, StoreError> {
    let rule = r.opt_text("suppressed_rule")?;
    let reason = r.opt_text("suppressed_reason")?;
    Ok(AlertRecord {
        fingerprint: fp_from_db(r.int("fingerprint")?),
        status: parse_status(&r.text("status")?)?,
        labels: from_json::<LabelSet>(&r.text("labels")?, "alerts.labels")?,
        annotations: from_json::<LabelSet>(&r.text("annotations")?, "alerts.annotations")?,
        starts_at: Timestamp(r.int("starts_at")?),
        ends_at: ts(r.opt_int("ends_at")?),
        source: parse_source(&r.text("source")?)?,
        generator_url: r.text("generator_url")?,
        incident: r.opt_int("incident_id")?.map(IncidentId),
        key: r.text("corr_key")?,
        suppressed: rule.zip(reason),
        change: r.opt_text("change_id")?,
        flapping: r.flag("flapping")?,
        first_seen: Timestamp(r.int("first_seen")?),
        last_seen: Timestamp(r.int("last_seen")?),
        deliveries: count_from_db(r.int("deliveries")?),
        shard: u32::try_from(r.int("shard")?).unwrap_or(0),
    })
}

/// The columns of `alerts` that [`AlertSnapshot`] needs: fingerprint, status,
/// starts_at, ends_at, incident_id, corr_key, suppressed_rule, flapping,
/// last_seen, deliveries.
pub(super) fn alert_snapshot_from_row(r: &impl Cols) -> Result<AlertSnapshot, StoreError> {
    Ok(AlertSnapshot {
        fingerprint: fp_from_db(r.int("fingerprint")?),
        status: parse_status(&r.text("status")?)?,
        starts_at: Timestamp(r.int("starts_at")?),
        ends_at: ts(r.opt_int("ends_at")?),
        incident: r.opt_int("incident_id")?.map(IncidentId),
        key: r.text("corr_key")?,
        suppressed: r.opt_text("suppressed_rule")?.is_some(),
        flapping: r.flag("flapping")?,
        last_seen: Timestamp(r.int("last_seen")?),
        deliveries: count_from_db(r.int("deliveries")?),
    })
}

/// A `timeline` row: `at, kind, message, actor`.
pub(super) fn timeline_from_row(r: &impl Cols) -> Result<TimelineEntry, StoreError> {
    Ok(TimelineEntry {
        at: Timestamp(r.int("at")?),
        kind: parse_kind(&r.text("kind")?)?,
        message: r.text("message")?,
        actor: r.opt_text("actor")?,
    })
}

pub(super) fn change_from_row(r: &impl Cols) -> Result<ChangeRecord, StoreError> {
    let state = r.text("state")?;
    Ok(ChangeRecord {
        id: r.text("id")?,
        ci: r.text("ci")?,
        state: serde_json::from_value(serde_json::Value::String(state.clone()))
            .map_err(|_| StoreError::Corrupt(format!("unknown change state {state:?}")))?,
        start: Timestamp(r.int("start_at")?),
        end: Timestamp(r.int("end_at")?),
        summary: r.text("summary")?,
    })
}

/// A problem is stored whole as JSON in `problems.data`.
pub(super) fn problem_from_row(r: &impl Cols) -> Result<Problem, StoreError> {
    from_json(&r.text("data")?, "problems.data")
}

/// A `(state, n)` row of an incident count per state.
pub(super) fn state_count_from_row(r: &impl Cols) -> Result<(IncidentState, u64), StoreError> {
    Ok((parse_state(&r.text("state")?)?, count_from_db(r.int("n")?)))
}

pub(super) fn alert_tally_from_row(r: &impl Cols) -> Result<super::AlertTally, StoreError> {
    Ok(super::AlertTally {
        ci: r.opt_text("ci")?,
        suppressed_rule: r.opt_text("suppressed_rule")?,
        attached: r.int("attached")? != 0,
        band: usize::try_from(r.int("band")?).unwrap_or(2),
        count: count_from_db(r.int("n")?),
        opened: count_from_db(r.int("opened")?),
    })
}
