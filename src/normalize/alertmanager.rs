//! Alertmanager webhook payload, version 4 (also what Grafana's webhook
//! contact point sends, with extra fields we ignore).

use super::{Event, NormalizeError, check_labels, from_slice, parse_time};
use crate::domain::{Alert, AlertStatus, Fingerprint, LabelSet, Source, Timestamp};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Webhook<'a> {
    #[serde(borrow)]
    version: Option<Cow<'a, str>>,
    #[serde(default, rename = "truncatedAlerts")]
    truncated_alerts: u64,
    #[serde(borrow)]
    alerts: Vec<WebhookAlert<'a>>,
}

#[derive(Deserialize)]
struct WebhookAlert<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    labels: LabelSet,
    #[serde(default)]
    annotations: LabelSet,
    #[serde(rename = "startsAt", borrow)]
    starts_at: Option<Cow<'a, str>>,
    #[serde(rename = "endsAt", borrow, default)]
    ends_at: Option<Cow<'a, str>>,
    #[serde(rename = "generatorURL", borrow, default)]
    generator_url: Option<Cow<'a, str>>,
}

/// Parse a webhook body. `now` stands in for a missing `endsAt` on a resolved
/// alert (the receive time is the best event time we have then).
pub fn parse_alertmanager(body: &[u8], now: Timestamp) -> Result<Vec<Event>, NormalizeError> {
    let hook: Webhook<'_> = from_slice(body)?;
    match hook.version.as_deref() {
        Some("4") => {}
        Some(v) => {
            return Err(NormalizeError::field(
                "version",
                None,
                format!("unsupported webhook version {v:?} (incidentd accepts version \"4\")"),
            ));
        }
        None => {
            return Err(NormalizeError::field(
                "version",
                None,
                "missing field `version`",
            ));
        }
    }
    if hook.truncated_alerts > 0 {
        // Alertmanager dropped alerts from this group because of `max_alerts`;
        // the rest still count, but the operator should raise the limit.
        tracing::warn!(
            truncated = hook.truncated_alerts,
            "Alertmanager truncated this notification; set max_alerts: 0 on the incidentd receiver"
        );
    }
    let mut out = Vec::with_capacity(hook.alerts.len());
    for (i, a) in hook.alerts.into_iter().enumerate() {
        let idx = Some(i);
        let status = match a.status.as_ref() {
            "firing" => AlertStatus::Firing,
            "resolved" => AlertStatus::Resolved,
            other => {
                return Err(NormalizeError::field(
                    format!("alerts[{i}].status"),
                    idx,
                    format!("must be \"firing\" or \"resolved\", got {other:?}"),
                ));
            }
        };
        check_labels(&a.labels, &format!("alerts[{i}]."), idx)?;
        let starts_at = match a.starts_at.as_deref() {
            Some(s) => parse_time(s, || format!("alerts[{i}].startsAt"), idx)?,
            None => {
                return Err(NormalizeError::field(
                    format!("alerts[{i}].startsAt"),
                    idx,
                    "missing field `startsAt`",
                ));
            }
        }
        .unwrap_or(now);
        let ends_at = match a.ends_at.as_deref() {
            Some(s) => parse_time(s, || format!("alerts[{i}].endsAt"), idx)?,
            None => None,
        };
        let ends_at = match status {
            AlertStatus::Firing => None,
            AlertStatus::Resolved => Some(ends_at.unwrap_or(now).max(starts_at)),
        };
        out.push(Event::Alert(Alert {
            fingerprint: Fingerprint::of_labels(&a.labels),
            status,
            labels: a.labels,
            annotations: a.annotations,
            starts_at,
            ends_at,
            source: Source::Alertmanager,
            generator_url: a.generator_url.map(Cow::into_owned).unwrap_or_default(),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_772_438_400_000);

    fn alerts(body: &str) -> Vec<Alert> {
        parse_alertmanager(body.as_bytes(), NOW)
            .unwrap()
            .into_iter()
            .map(|e| match e {
                Event::Alert(a) => a,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn err(body: &str) -> NormalizeError {
        parse_alertmanager(body.as_bytes(), NOW).unwrap_err()
    }

    #[test]
    fn parses_webhook_with_grafana_extras() {
        let body = r#"{"receiver":"incidentd","status":"firing","orgId":1,"title":"[FIRING:1]","state":"alerting","message":"m",
          "version":"4","groupKey":"{}:{}","truncatedAlerts":0,"groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://g",
          "alerts":[
            {"status":"firing","labels":{"alertname":"PostgresDown","severity":"critical","env":"prod","cluster":"pg-3","job":"postgres","instance":"pg-3-a:9187"},
             "annotations":{"summary":"down"},"startsAt":"2026-03-02T08:00:01.000Z","endsAt":"0001-01-01T00:00:00Z",
             "generatorURL":"http://prom/graph","fingerprint":"ignored","silenceURL":"x","dashboardURL":"","panelURL":"","values":{"A":1},"valueString":"[ var='A' ]"},
            {"status":"resolved","labels":{"alertname":"X"},"annotations":{},"startsAt":"2026-03-02T08:00:01Z","endsAt":"2026-03-02T08:05:00Z"}
          ]}"#;
        let a = alerts(body);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].fingerprint.to_string(), "f37b2fd64d4f6ce3");
        assert_eq!(a[0].status, AlertStatus::Firing);
        assert_eq!(a[0].ends_at, None);
        assert_eq!(a[0].annotations.get("summary"), Some("down"));
        assert_eq!(a[0].generator_url, "http://prom/graph");
        assert_eq!(a[1].status, AlertStatus::Resolved);
        assert_eq!(
            a[1].ends_at.unwrap().to_rfc3339(),
            "2026-03-02T08:05:00.000Z"
        );
    }

    #[test]
    fn resolved_without_end_uses_receive_time() {
        let a = alerts(
            r#"{"version":"4","alerts":[{"status":"resolved","labels":{"a":"b"},"startsAt":"2026-03-02T07:00:01Z","endsAt":"0001-01-01T00:00:00Z"}]}"#,
        );
        assert_eq!(a[0].ends_at, Some(NOW));
    }

    #[test]
    fn errors_name_field_and_index() {
        let e = err(
            r#"{"version":"4","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-03-02T08:00:01Z"},{"status":"firing","labels":{"a":"b"},"startsAt":"noon"}]}"#,
        );
        match e {
            NormalizeError::Field {
                field,
                index,
                message,
            } => {
                assert_eq!(field, "alerts[1].startsAt");
                assert_eq!(index, Some(1));
                assert!(
                    message.starts_with("invalid RFC 3339 time \"noon\""),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        match err(
            r#"{"version":"4","alerts":[{"status":"firing","labels":{"a":3},"startsAt":"2026-03-02T08:00:01Z"}]}"#,
        ) {
            NormalizeError::Field {
                field,
                index,
                message,
            } => {
                assert_eq!(field, "alerts[0].labels.a");
                assert_eq!(index, Some(0));
                assert!(message.contains("invalid type: integer"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        match err(
            r#"{"version":"4","alerts":[{"status":"firing","startsAt":"2026-03-02T08:00:01Z"}]}"#,
        ) {
            NormalizeError::Field {
                field,
                index,
                message,
            } => {
                assert_eq!(field, "alerts[0]");
                assert_eq!(index, Some(0));
                assert!(message.contains("missing field `labels`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err(
                r#"{"version":"4","alerts":[{"status":"pending","labels":{"a":"b"},"startsAt":"2026-03-02T08:00:01Z"}]}"#
            ),
            NormalizeError::field(
                "alerts[0].status",
                Some(0),
                "must be \"firing\" or \"resolved\", got \"pending\""
            )
        );
        assert_eq!(
            err(
                r#"{"version":"4","alerts":[{"status":"firing","labels":{},"startsAt":"2026-03-02T08:00:01Z"}]}"#
            ),
            NormalizeError::field(
                "alerts[0].labels",
                Some(0),
                "an alert needs at least one label"
            )
        );
        assert!(
            matches!(err(r#"{"version":"3","alerts":[]}"#), NormalizeError::Field { field, .. } if field == "version")
        );
        assert!(
            matches!(err(r#"{"alerts":[]}"#), NormalizeError::Field { field, .. } if field == "version")
        );
        assert!(matches!(
            err(r#"{"version":"4","alerts":[{"#),
            NormalizeError::Syntax { .. }
        ));
        assert!(
            matches!(err(r#"{"version":"4","alerts":{}}"#), NormalizeError::Field { field, .. } if field == "alerts")
        );
    }
}
