//! Alertmanager webhook payload, version 4, and what Grafana-managed
//! alerting's webhook contact point sends: the same shape as version "1"
//! with more fields (`orgId`, `title`, `state`, `message` on the body;
//! `values`, `dashboardURL`, `panelURL`, `silenceURL`, `fingerprint` on each
//! alert). Grafana's links and values become annotations, so the incident
//! shows where to look; its other extra fields are not needed.
//! (https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/)

use super::admit::{Batch, Intake, RejectReason, admit, ends_before_start, excerpt};
use super::{NormalizeError, Obj, decode_alone, from_object, parse_time};
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
    alerts: Vec<Obj<WebhookAlert<'a>>>,
}

/// The body again, each alert left undecoded: the slow path, taken only
/// when some alert did not decode, so that the others still go.
#[derive(Deserialize)]
struct LooseWebhook<'a> {
    #[serde(borrow)]
    version: Option<Cow<'a, str>>,
    #[serde(default, rename = "truncatedAlerts")]
    truncated_alerts: u64,
    alerts: Vec<serde_json::Value>,
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
    /// Grafana only.
    #[serde(rename = "dashboardURL", borrow, default)]
    dashboard_url: Option<Cow<'a, str>>,
    #[serde(rename = "panelURL", borrow, default)]
    panel_url: Option<Cow<'a, str>>,
    #[serde(rename = "silenceURL", borrow, default)]
    silence_url: Option<Cow<'a, str>>,
    /// The query results that fired the rule, by reference id.
    #[serde(default)]
    values: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// Grafana's per-alert links and values, as annotations (an annotation the
/// rule already sets under the same name wins).
fn grafana_annotations(a: &mut WebhookAlert<'_>) {
    let links = [
        ("grafana_dashboard_url", a.dashboard_url.take()),
        ("grafana_panel_url", a.panel_url.take()),
        ("grafana_silence_url", a.silence_url.take()),
    ];
    for (name, url) in links {
        if let Some(url) = url.filter(|u| !u.is_empty())
            && a.annotations.get(name).is_none()
        {
            a.annotations.insert(name.to_string(), url.into_owned());
        }
    }
    if let Some(values) = a.values.take().filter(|v| !v.is_empty())
        && a.annotations.get("grafana_values").is_none()
    {
        let text: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        a.annotations
            .insert("grafana_values".to_string(), text.join(", "));
    }
}

/// "4": Alertmanager's webhook; "1": Grafana-managed alerting's.
fn check_version(version: Option<&str>) -> Result<(), NormalizeError> {
    match version {
        Some("4" | "1") => Ok(()),
        Some(v) => Err(NormalizeError::field(
            "version",
            None,
            format!(
                "unsupported webhook version {v:?} (incidentd accepts \"4\", Alertmanager's, and \"1\", Grafana's)"
            ),
        )),
        None => Err(NormalizeError::field(
            "version",
            None,
            "missing field `version`",
        )),
    }
}

fn warn_truncated(n: u64) {
    if n > 0 {
        // Alertmanager dropped alerts from this group because of `max_alerts`;
        // the rest still count, but the operator should raise the limit.
        tracing::warn!(
            truncated = n,
            "Alertmanager truncated this notification; set max_alerts: 0 on the incidentd receiver"
        );
    }
}

/// Parse a webhook body. `intake.now` stands in for a missing `endsAt` on
/// a resolved alert (the receive time is the best event time we have
/// then). A body that is not a webhook is an error; an alert that is not
/// valid is rejected alone.
pub fn parse_alertmanager(body: &[u8], intake: &Intake) -> Result<Batch, NormalizeError> {
    let mut out = Batch::default();
    match from_object::<Webhook<'_>>(body) {
        Ok(hook) => {
            check_version(hook.version.as_deref())?;
            warn_truncated(hook.truncated_alerts);
            out.events.reserve(hook.alerts.len());
            for (i, Obj(a)) in hook.alerts.into_iter().enumerate() {
                take(a, i, intake, &mut out);
            }
        }
        Err(_) => {
            // Not a webhook at all (its error names the field), or one
            // with some bad alerts: decode those one by one.
            let hook: LooseWebhook<'_> = from_object(body)?;
            check_version(hook.version.as_deref())?;
            warn_truncated(hook.truncated_alerts);
            for (i, v) in hook.alerts.iter().enumerate() {
                let prefix = format!("alerts[{i}].");
                match decode_alone::<WebhookAlert<'_>>(v, &prefix) {
                    Ok(a) => take(a, i, intake, &mut out),
                    Err((field, error)) => {
                        out.reject(i, field, error, RejectReason::Invalid, excerpt(v))
                    }
                }
            }
        }
    }
    Ok(out)
}

/// One decoded alert of the body: converted, then admitted or rejected.
fn take(a: WebhookAlert<'_>, i: usize, intake: &Intake, out: &mut Batch) {
    if i >= intake.limits.max_alerts {
        let excerpt = serde_json::json!({ "labels": a.labels.len() });
        out.reject(
            i,
            format!("alerts[{i}]"),
            format!(
                "more than {} alerts in one body (limits.max_alerts_per_request)",
                intake.limits.max_alerts
            ),
            RejectReason::Limit,
            excerpt,
        );
        return;
    }
    let prefix = format!("alerts[{i}].");
    match convert(a, &prefix, intake.now) {
        Ok(alert) => admit(alert, i, &prefix, intake, out),
        Err((field, error, reason, excerpt)) => out.reject(i, field, error, reason, excerpt),
    }
}

type Refusal = (String, String, RejectReason, serde_json::Value);

fn convert(mut a: WebhookAlert<'_>, prefix: &str, now: Timestamp) -> Result<Alert, Refusal> {
    grafana_annotations(&mut a);
    let summary = |a: &WebhookAlert<'_>| {
        excerpt(&serde_json::json!({
            "status": a.status.as_ref(),
            "labels": a.labels.to_map(),
            "startsAt": a.starts_at.as_deref(),
            "endsAt": a.ends_at.as_deref(),
        }))
    };
    let invalid = |field: &str, msg: String, a: &WebhookAlert<'_>| {
        (
            format!("{prefix}{field}"),
            msg,
            RejectReason::Invalid,
            summary(a),
        )
    };
    let status = match a.status.as_ref() {
        "firing" => AlertStatus::Firing,
        "resolved" => AlertStatus::Resolved,
        other => {
            let msg = format!("must be \"firing\" or \"resolved\", got {other:?}");
            return Err(invalid("status", msg, &a));
        }
    };
    let starts_at = match a.starts_at.as_deref() {
        Some(s) => match parse_time(s, String::new, None) {
            Ok(t) => t.unwrap_or(now),
            Err(e) => return Err(invalid("startsAt", message(e), &a)),
        },
        None => return Err(invalid("startsAt", "missing field `startsAt`".into(), &a)),
    };
    let ends_at = match a.ends_at.as_deref() {
        Some(s) => match parse_time(s, String::new, None) {
            Ok(t) => t,
            Err(e) => return Err(invalid("endsAt", message(e), &a)),
        },
        None => None,
    };
    if let Some(why) = ends_before_start(starts_at, ends_at) {
        return Err((
            format!("{prefix}endsAt"),
            why,
            RejectReason::Time,
            summary(&a),
        ));
    }
    let ends_at = match status {
        AlertStatus::Firing => None,
        AlertStatus::Resolved => Some(ends_at.unwrap_or(now).max(starts_at)),
    };
    let alert = Alert {
        fingerprint: Fingerprint::of_labels(&a.labels),
        status,
        labels: a.labels,
        annotations: a.annotations,
        starts_at,
        ends_at,
        source: Source::Alertmanager,
        generator_url: a.generator_url.map(Cow::into_owned).unwrap_or_default(),
    };
    Ok(alert)
}

/// The message of a field error, without the field (the caller names it).
fn message(e: NormalizeError) -> String {
    match e {
        NormalizeError::Field { message, .. } => message,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Event;
    use super::*;
    use crate::normalize::{AlertLimits, Rejected, TimeBounds};

    const NOW: Timestamp = Timestamp(1_772_438_400_000);

    fn batch(body: &str) -> Batch {
        parse_alertmanager(body.as_bytes(), &Intake::offline(NOW)).unwrap()
    }

    fn alerts(body: &str) -> Vec<Alert> {
        batch(body)
            .events
            .into_iter()
            .map(|e| match e {
                Event::Alert(a) => a,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn rejected(body: &str) -> Vec<Rejected> {
        batch(body).rejected
    }

    fn err(body: &str) -> NormalizeError {
        parse_alertmanager(body.as_bytes(), &Intake::offline(NOW)).unwrap_err()
    }

    /// Grafana-managed alerting's webhook, in the shape its documentation
    /// gives (webhook-notifier page, "Webhook JSON payload"): version "1",
    /// body fields `orgId`, `title`, `state`, `message`, and per alert
    /// `fingerprint`, `silenceURL`, `dashboardURL`, `panelURL`, `values`.
    #[test]
    fn parses_grafanas_webhook_version_1() {
        let body = r#"{"receiver":"incidentd","status":"firing","orgId":1,
          "alerts":[
            {"status":"firing","labels":{"alertname":"PostgresDown","severity":"critical","env":"prod","cluster":"pg-3","job":"postgres","instance":"pg-3-a:9187"},
             "annotations":{"summary":"down","runbook_url":"https://runbooks.example.com/pg"},
             "startsAt":"2026-03-02T09:00:01.123456+01:00","endsAt":"0001-01-01T00:00:00Z",
             "generatorURL":"https://grafana.example.com/alerting/grafana/pg-down/view","fingerprint":"0f1e2d3c4b5a6978",
             "silenceURL":"https://grafana.example.com/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DPostgresDown",
             "dashboardURL":"https://grafana.example.com/d/pg","panelURL":"https://grafana.example.com/d/pg?viewPanel=4",
             "values":{"B":0,"C":1}},
            {"status":"resolved","labels":{"alertname":"X"},"annotations":{},"startsAt":"2026-03-02T08:00:01Z","endsAt":"2026-03-02T08:05:00Z",
             "generatorURL":"","fingerprint":"1a2b3c4d5e6f7081","silenceURL":"","dashboardURL":"","panelURL":"","values":null}
          ],
          "groupLabels":{"alertname":"PostgresDown"},"commonLabels":{},"commonAnnotations":{},"externalURL":"https://grafana.example.com/",
          "version":"1","groupKey":"{}/{alertname=\"PostgresDown\"}:{alertname=\"PostgresDown\"}","truncatedAlerts":0,
          "title":"[FIRING:1] PostgresDown","state":"alerting","message":"**Firing**\n\nValue: B=0, C=1"}"#;
        let a = alerts(body);
        assert_eq!(a.len(), 2);
        // Labels alone make the fingerprint (Grafana's own is not used).
        assert_eq!(a[0].fingerprint.to_string(), "f37b2fd64d4f6ce3");
        assert_eq!(a[0].status, AlertStatus::Firing);
        assert_eq!(a[0].starts_at.to_rfc3339(), "2026-03-02T08:00:01.123Z");
        assert_eq!(a[0].ends_at, None);
        assert_eq!(a[0].annotations.get("summary"), Some("down"));
        assert_eq!(
            a[0].generator_url,
            "https://grafana.example.com/alerting/grafana/pg-down/view"
        );
        assert_eq!(
            a[0].annotations.get("grafana_dashboard_url"),
            Some("https://grafana.example.com/d/pg")
        );
        assert_eq!(
            a[0].annotations.get("grafana_panel_url"),
            Some("https://grafana.example.com/d/pg?viewPanel=4")
        );
        assert!(
            a[0].annotations
                .get("grafana_silence_url")
                .is_some_and(|u| u.contains("alertname%3DPostgresDown"))
        );
        assert_eq!(a[0].annotations.get("grafana_values"), Some("B=0, C=1"));
        // Empty links and null values add nothing.
        assert_eq!(a[1].annotations.get("grafana_panel_url"), None);
        assert_eq!(a[1].annotations.get("grafana_values"), None);
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
    fn a_bad_alert_is_rejected_alone_naming_field_and_index() {
        let ok = r#"{"status":"firing","labels":{"a":"ok"},"startsAt":"2026-03-02T08:00:01Z"}"#;
        let body = |bad: &str| format!(r#"{{"version":"4","alerts":[{ok},{bad},{ok}]}}"#);
        let one = |bad: &str| {
            let b = batch(&body(bad));
            assert_eq!(b.events.len(), 2, "the good alerts go: {bad}");
            assert_eq!(b.rejected.len(), 1, "{bad}");
            b.rejected.into_iter().next().unwrap()
        };
        let r = one(r#"{"status":"firing","labels":{"a":"b"},"startsAt":"noon"}"#);
        assert_eq!((r.index, r.field.as_str()), (1, "alerts[1].startsAt"));
        assert!(
            r.error.starts_with("invalid RFC 3339 time \"noon\""),
            "{}",
            r.error
        );
        let r = one(r#"{"status":"firing","labels":{"a":3},"startsAt":"2026-03-02T08:00:01Z"}"#);
        assert_eq!(r.field, "alerts[1].labels.a");
        assert!(r.error.contains("invalid type: integer"), "{}", r.error);
        let r = one(r#"{"status":"firing","startsAt":"2026-03-02T08:00:01Z"}"#);
        assert_eq!(r.field, "alerts[1]");
        assert!(r.error.contains("missing field `labels`"), "{}", r.error);
        let r = one(r#"{"status":"pending","labels":{"a":"b"},"startsAt":"2026-03-02T08:00:01Z"}"#);
        assert_eq!(r.field, "alerts[1].status");
        assert_eq!(
            r.error,
            "must be \"firing\" or \"resolved\", got \"pending\""
        );
        let r = one(r#"{"status":"firing","labels":{},"startsAt":"2026-03-02T08:00:01Z"}"#);
        assert_eq!(
            (r.field.as_str(), r.reason),
            ("alerts[1].labels", RejectReason::Invalid)
        );
        let r = one(
            r#"{"status":"firing","labels":{"a":"b"},"startsAt":"2026-03-02T08:00:01Z","endsAt":"2026-03-02T07:00:00Z"}"#,
        );
        assert_eq!(
            (r.field.as_str(), r.reason),
            ("alerts[1].endsAt", RejectReason::Time)
        );
        assert_eq!(r.alert["labels"]["a"], "b", "what it said is kept");
    }

    #[test]
    fn utf8_label_names_are_valid() {
        let a = alerts(
            r#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X","service.name":"checkout","名前":"値"},"startsAt":"2026-03-02T08:00:01Z"}]}"#,
        );
        assert_eq!(a[0].labels.get("service.name"), Some("checkout"));
        assert_eq!(a[0].labels.get("名前"), Some("値"));
    }

    #[test]
    fn limits_reject_the_alert_not_the_body() {
        let intake = Intake {
            limits: AlertLimits {
                max_labels: 3,
                max_label_value_bytes: 10,
                max_annotation_bytes: 20,
                max_alerts: 4,
                ..AlertLimits::default()
            },
            ..Intake::offline(NOW)
        };
        let a = |labels: &str, annotations: &str| {
            format!(
                r#"{{"status":"firing","labels":{labels},"annotations":{annotations},"startsAt":"2026-03-02T08:00:01Z"}}"#
            )
        };
        let body = format!(
            r#"{{"version":"4","alerts":[{},{},{},{},{}]}}"#,
            a(r#"{"a":"1"}"#, "{}"),
            a(r#"{"a":"1","b":"2","c":"3","d":"4"}"#, "{}"),
            a(r#"{"a":"01234567890"}"#, "{}"),
            a(r#"{"a":"2"}"#, r#"{"summary":"a long summary text"}"#),
            a(r#"{"a":"3"}"#, "{}"),
        );
        let b = parse_alertmanager(body.as_bytes(), &intake).unwrap();
        assert_eq!(b.events.len(), 1);
        let got: Vec<(usize, &str, RejectReason)> = b
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str(), r.reason))
            .collect();
        assert_eq!(
            got,
            [
                (1, "alerts[1].labels", RejectReason::Limit),
                (2, "alerts[2].labels.a", RejectReason::Limit),
                (3, "alerts[3].annotations", RejectReason::Limit),
                (4, "alerts[4]", RejectReason::Limit),
            ]
        );
    }

    #[test]
    fn event_times_beyond_the_bounds_become_the_receive_time() {
        let intake = Intake {
            bounds: Some(TimeBounds::default()),
            ..Intake::offline(NOW)
        };
        let body = r#"{"version":"4","alerts":[
            {"status":"firing","labels":{"a":"1970"},"startsAt":"1970-01-01T00:00:01Z"},
            {"status":"firing","labels":{"a":"9999"},"startsAt":"9999-01-01T00:00:00Z"},
            {"status":"firing","labels":{"a":"fine"},"startsAt":"2026-03-02T07:55:00Z"}]}"#;
        let b = parse_alertmanager(body.as_bytes(), &intake).unwrap();
        assert_eq!(b.clamped, 2);
        let starts: Vec<(String, Timestamp)> = b
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Alert(a) => Some((a.labels.get("a").unwrap().to_string(), a.starts_at)),
                _ => None,
            })
            .collect();
        assert_eq!(starts[0], ("1970".into(), NOW));
        assert_eq!(starts[1], ("9999".into(), NOW));
        assert_eq!(starts[2].1.to_rfc3339(), "2026-03-02T07:55:00.000Z");
        let notes: Vec<&str> = b
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Note { note, .. } => Some(note.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(notes.len(), 2);
        assert!(notes[0].contains("older than 7d"), "{}", notes[0]);
        assert!(notes[1].contains("more than 10m ahead"), "{}", notes[1]);
    }

    #[test]
    fn a_body_that_is_no_webhook_is_an_error() {
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
        assert!(rejected(r#"{"version":"4","alerts":[]}"#).is_empty());
    }
}
