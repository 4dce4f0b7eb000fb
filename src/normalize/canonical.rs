//! incidentd's own alert shape: a JSON array of alerts (or one alert). Field
//! names are accepted in snake_case or in Alertmanager API v2's camelCase, so
//! anything that can post to Alertmanager's `/api/v2/alerts` can post here.

use super::admit::{Batch, Intake, RejectReason, admit, ends_before_start, excerpt};
use super::{NormalizeError, Obj, decode_alone, from_object, from_slice, parse_time};
use crate::domain::{Alert, AlertStatus, Fingerprint, LabelSet, Source, Timestamp};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanonicalAlert<'a> {
    #[serde(borrow, default)]
    fingerprint: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Status<'a>>,
    labels: LabelSet,
    #[serde(default)]
    annotations: LabelSet,
    #[serde(borrow, default, alias = "startsAt")]
    starts_at: Option<Cow<'a, str>>,
    #[serde(borrow, default, alias = "endsAt")]
    ends_at: Option<Cow<'a, str>>,
    #[serde(borrow, default, alias = "generatorURL")]
    generator_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source: Option<Cow<'a, str>>,
    /// Alertmanager's `GET /api/v2/alerts` answer carries these too
    /// (replaying what an Alertmanager holds); incidentd does its own
    /// routing, so they are read and not used.
    #[serde(default, rename = "receivers")]
    _receivers: serde::de::IgnoredAny,
    #[serde(default, rename = "updatedAt")]
    _updated_at: serde::de::IgnoredAny,
}

/// `"firing"` / `"resolved"`, or Alertmanager API v2's alert status object
/// (`{"state": "active", "silencedBy": [], "inhibitedBy": []}`) of its
/// `GET /api/v2/alerts` answer, which lists only alerts that have not
/// resolved: firing, whatever its `endsAt` (Alertmanager's resolve timeout
/// ahead of the moment it answered).
#[derive(Deserialize)]
#[serde(untagged)]
enum Status<'a> {
    Word(#[serde(borrow)] Cow<'a, str>),
    Api {
        #[serde(rename = "state")]
        _state: serde::de::IgnoredAny,
    },
}

impl Status<'_> {
    fn word(&self) -> Option<&str> {
        match self {
            Status::Word(w) => Some(w),
            Status::Api { .. } => Some("firing"),
        }
    }
}

/// Parse canonical alerts. Without `status`, an alert whose `ends_at` has
/// passed is resolved (Alertmanager API v2 semantics); without `starts_at`,
/// the receive time is the start. An alert that is not valid is rejected
/// alone; only a body that is neither an alert nor an array is an error.
pub fn parse_canonical(body: &[u8], intake: &Intake) -> Result<Batch, NormalizeError> {
    // One alert or an array; decided by the first byte so that errors keep
    // their field path (an untagged enum would hide it).
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let mut out = Batch::default();
    if first != Some(&b'[') {
        // A single alert: it is the whole body, so its error is the body's.
        let a = from_object::<CanonicalAlert<'_>>(body)?;
        take(a, 0, "", intake, &mut out);
        return Ok(out);
    }
    match from_slice::<Vec<Obj<CanonicalAlert<'_>>>>(body) {
        Ok(alerts) => {
            out.events.reserve(alerts.len());
            for (i, Obj(a)) in alerts.into_iter().enumerate() {
                take(a, i, &format!("[{i}]."), intake, &mut out);
            }
        }
        Err(_) => {
            // Some alerts did not decode: decode them one by one, so that
            // each bad one is named and the good ones still go.
            let values: Vec<serde_json::Value> = from_slice(body)?;
            for (i, v) in values.iter().enumerate() {
                let prefix = format!("[{i}].");
                match decode_alone::<CanonicalAlert<'_>>(v, &prefix) {
                    Ok(a) => take(a, i, &prefix, intake, &mut out),
                    Err((field, error)) => {
                        out.reject(i, field, error, RejectReason::Invalid, excerpt(v))
                    }
                }
            }
        }
    }
    Ok(out)
}

fn take(a: CanonicalAlert<'_>, i: usize, prefix: &str, intake: &Intake, out: &mut Batch) {
    if i >= intake.limits.max_alerts {
        out.reject(
            i,
            format!("[{i}]"),
            format!(
                "more than {} alerts in one body (limits.max_alerts_per_request)",
                intake.limits.max_alerts
            ),
            RejectReason::Limit,
            serde_json::json!({ "labels": a.labels.len() }),
        );
        return;
    }
    match convert(a, prefix, intake.now) {
        Ok(alert) => admit(alert, i, prefix, intake, out),
        Err((field, error, reason, excerpt)) => out.reject(i, field, error, reason, excerpt),
    }
}

type Refusal = (String, String, RejectReason, serde_json::Value);

fn convert(a: CanonicalAlert<'_>, prefix: &str, now: Timestamp) -> Result<Alert, Refusal> {
    let summary = |a: &CanonicalAlert<'_>| {
        excerpt(&serde_json::json!({
            "status": a.status.as_ref().and_then(Status::word),
            "labels": a.labels.to_map(),
            "starts_at": a.starts_at.as_deref(),
            "ends_at": a.ends_at.as_deref(),
        }))
    };
    let invalid = |field: &str, msg: String, a: &CanonicalAlert<'_>| {
        (
            format!("{prefix}{field}"),
            msg,
            RejectReason::Invalid,
            summary(a),
        )
    };
    let time = |s: &str| {
        parse_time(s, String::new, None).map_err(|e| match e {
            NormalizeError::Field { message, .. } => message,
            other => other.to_string(),
        })
    };
    let starts_at = match a.starts_at.as_deref().map(time) {
        Some(Ok(t)) => t.unwrap_or(now),
        Some(Err(m)) => return Err(invalid("starts_at", m, &a)),
        None => now,
    };
    let ends_at = match a.ends_at.as_deref().map(time) {
        Some(Ok(t)) => t,
        Some(Err(m)) => return Err(invalid("ends_at", m, &a)),
        None => None,
    };
    let status = match a.status.as_ref().and_then(Status::word) {
        Some("firing") => AlertStatus::Firing,
        Some("resolved") => AlertStatus::Resolved,
        Some(other) => {
            let msg = format!("must be \"firing\" or \"resolved\", got {other:?}");
            return Err(invalid("status", msg, &a));
        }
        None if ends_at.is_some_and(|e| e <= now) => AlertStatus::Resolved,
        None => AlertStatus::Firing,
    };
    if let Some(why) = ends_before_start(starts_at, ends_at) {
        return Err((
            format!("{prefix}ends_at"),
            why,
            RejectReason::Time,
            summary(&a),
        ));
    }
    let fingerprint = match a.fingerprint.as_deref() {
        Some(f) => match Fingerprint::parse(f) {
            Some(fp) => fp,
            None => {
                let msg = format!("must be 16 hex digits, got {f:?}");
                return Err(invalid("fingerprint", msg, &a));
            }
        },
        None => Fingerprint::of_labels(&a.labels),
    };
    let source = match a.source.as_deref() {
        None | Some("api") => Source::Api,
        Some("alertmanager") => Source::Alertmanager,
        Some("pagerduty") => Source::Pagerduty,
        Some("kafka") => Source::Kafka,
        Some(other) => {
            let msg = format!("unknown source {other:?} (api, alertmanager, pagerduty, kafka)");
            return Err(invalid("source", msg, &a));
        }
    };
    let ends_at = match status {
        AlertStatus::Firing => None,
        AlertStatus::Resolved => Some(ends_at.unwrap_or(now).max(starts_at)),
    };
    Ok(Alert {
        fingerprint,
        status,
        labels: a.labels,
        annotations: a.annotations,
        starts_at,
        ends_at,
        source,
        generator_url: a.generator_url.map(Cow::into_owned).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::Event;

    const NOW: Timestamp = Timestamp(1_772_438_400_000); // 2026-03-02T08:00:00Z

    fn parse(body: &[u8]) -> Batch {
        parse_canonical(body, &Intake::offline(NOW)).unwrap()
    }

    fn one(body: &str) -> Alert {
        match parse(body.as_bytes()).events.remove(0) {
            Event::Alert(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snake_and_camel_case() {
        let a = one(r#"[{"labels":{"alertname":"A"},"starts_at":"2026-03-02T07:00:00Z"}]"#);
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.source, Source::Api);
        let b = one(
            r#"{"labels":{"alertname":"A"},"startsAt":"2026-03-02T07:00:00Z","endsAt":"2026-03-02T07:30:00Z","generatorURL":"g"}"#,
        );
        assert_eq!(
            b.status,
            AlertStatus::Resolved,
            "endsAt in the past means resolved"
        );
        assert_eq!(b.fingerprint, a.fingerprint);
        let c = one(r#"{"labels":{"alertname":"A"},"endsAt":"2026-03-02T09:00:00Z"}"#);
        assert_eq!(
            c.status,
            AlertStatus::Firing,
            "endsAt in the future means still firing"
        );
        assert_eq!(c.starts_at, NOW);
    }

    #[test]
    fn explicit_fingerprint_is_the_identity() {
        let a = one(r#"[{"fingerprint":"00000000000000ff","labels":{"a":"b"}}]"#);
        assert_eq!(a.fingerprint, Fingerprint(255));
    }

    #[test]
    fn errors_name_the_field() {
        let b = parse(br#"[{"labels":{"a":"b"}},{"labels":{"a":"b"},"statuz":"firing"}]"#);
        assert_eq!(b.events.len(), 1, "the good alert goes");
        let r = &b.rejected[0];
        assert_eq!((r.index, r.field.as_str()), (1, "[1].statuz"));
        assert!(r.error.contains("unknown field `statuz`"), "{}", r.error);
        let r = &parse(br#"[{"labels":{"a":"b"},"fingerprint":"xyz"}]"#).rejected[0];
        assert_eq!(r.field, "[0].fingerprint");
        assert_eq!(r.error, "must be 16 hex digits, got \"xyz\"");
        // A label name with a dash is fine (any UTF-8 since Prometheus 3).
        assert!(
            parse(br#"[{"labels":{"bad-name":"b"}}]"#)
                .rejected
                .is_empty()
        );
        // A single alert is the whole body: its decode error is the body's.
        let e = parse_canonical(br#"{"labels":{"a":"b"},"statuz":1}"#, &Intake::offline(NOW))
            .unwrap_err();
        assert!(matches!(e, NormalizeError::Field { field, .. } if field == "statuz"));
        assert!(matches!(
            parse_canonical(b"[{", &Intake::offline(NOW)),
            Err(NormalizeError::Syntax { .. })
        ));
    }
}
