//! incidentd's own alert shape: a JSON array of alerts (or one alert). Field
//! names are accepted in snake_case or in Alertmanager API v2's camelCase, so
//! anything that can post to Alertmanager's `/api/v2/alerts` can post here.

use super::{Event, NormalizeError, check_labels, from_slice, parse_time};
use crate::domain::{Alert, AlertStatus, Fingerprint, LabelSet, Source, Timestamp};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanonicalAlert<'a> {
    #[serde(borrow, default)]
    fingerprint: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
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
}

/// Parse canonical alerts. Without `status`, an alert whose `ends_at` has
/// passed is resolved (Alertmanager API v2 semantics); without `starts_at`,
/// the receive time `now` is the start.
pub fn parse_canonical(body: &[u8], now: Timestamp) -> Result<Vec<Event>, NormalizeError> {
    // One alert or an array; decided by the first byte so that errors keep
    // their field path (an untagged enum would hide it).
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let alerts: Vec<CanonicalAlert<'_>> = if first == Some(&b'[') {
        from_slice(body)?
    } else {
        vec![from_slice::<CanonicalAlert<'_>>(body)?]
    };
    let mut out = Vec::with_capacity(alerts.len());
    for (i, a) in alerts.into_iter().enumerate() {
        out.push(Event::Alert(convert(a, i, now)?));
    }
    Ok(out)
}

fn convert(a: CanonicalAlert<'_>, i: usize, now: Timestamp) -> Result<Alert, NormalizeError> {
    let idx = Some(i);
    check_labels(&a.labels, &format!("[{i}]."), idx)?;
    let starts_at = match a.starts_at.as_deref() {
        Some(s) => parse_time(s, || format!("[{i}].starts_at"), idx)?,
        None => None,
    }
    .unwrap_or(now);
    let ends_at = match a.ends_at.as_deref() {
        Some(s) => parse_time(s, || format!("[{i}].ends_at"), idx)?,
        None => None,
    };
    let status = match a.status.as_deref() {
        Some("firing") => AlertStatus::Firing,
        Some("resolved") => AlertStatus::Resolved,
        Some(other) => {
            return Err(NormalizeError::field(
                format!("[{i}].status"),
                idx,
                format!("must be \"firing\" or \"resolved\", got {other:?}"),
            ));
        }
        None if ends_at.is_some_and(|e| e <= now) => AlertStatus::Resolved,
        None => AlertStatus::Firing,
    };
    let fingerprint = match a.fingerprint.as_deref() {
        Some(f) => Fingerprint::parse(f).ok_or_else(|| {
            NormalizeError::field(
                format!("[{i}].fingerprint"),
                idx,
                format!("must be 16 hex digits, got {f:?}"),
            )
        })?,
        None => Fingerprint::of_labels(&a.labels),
    };
    let source = match a.source.as_deref() {
        None | Some("api") => Source::Api,
        Some("alertmanager") => Source::Alertmanager,
        Some("pagerduty") => Source::Pagerduty,
        Some("kafka") => Source::Kafka,
        Some(other) => {
            return Err(NormalizeError::field(
                format!("[{i}].source"),
                idx,
                format!("unknown source {other:?} (api, alertmanager, pagerduty, kafka)"),
            ));
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

    const NOW: Timestamp = Timestamp(1_772_438_400_000); // 2026-03-02T08:00:00Z

    fn one(body: &str) -> Alert {
        match parse_canonical(body.as_bytes(), NOW).unwrap().remove(0) {
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
        let e = parse_canonical(
            br#"[{"labels":{"a":"b"}},{"labels":{"a":"b"},"statuz":"firing"}]"#,
            NOW,
        )
        .unwrap_err();
        match e {
            NormalizeError::Field {
                field,
                index,
                message,
            } => {
                assert_eq!(index, Some(1));
                assert_eq!(field, "[1].statuz");
                assert!(message.contains("unknown field `statuz`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let e = parse_canonical(br#"[{"labels":{"a":"b"},"fingerprint":"xyz"}]"#, NOW).unwrap_err();
        assert_eq!(
            e,
            NormalizeError::field(
                "[0].fingerprint",
                Some(0),
                "must be 16 hex digits, got \"xyz\""
            )
        );
        let e = parse_canonical(br#"[{"labels":{"bad-name":"b"}}]"#, NOW).unwrap_err();
        assert!(matches!(e, NormalizeError::Field { field, .. } if field == "[0].labels.bad-name"));
    }
}
