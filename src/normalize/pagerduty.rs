//! PagerDuty Events API v2 (`trigger` / `acknowledge` / `resolve` by
//! `dedup_key`), so tools that already page through PagerDuty can send here.

use super::admit::{Batch, Intake, admit};
use super::{Event, NormalizeError, Obj, from_object, parse_time};
use crate::domain::{Alert, AlertStatus, Fingerprint, LabelSet, Source, Timestamp};
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagerDutyAction {
    Trigger,
    Acknowledge,
    Resolve,
}

#[derive(Deserialize)]
struct PdEvent<'a> {
    #[serde(borrow)]
    routing_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event_action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    dedup_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<Obj<PdPayload<'a>>>,
    #[serde(borrow, default)]
    client: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client_url: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PdPayload<'a> {
    #[serde(borrow)]
    summary: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    severity: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    component: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    group: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    class: Option<Cow<'a, str>>,
    #[serde(default)]
    custom_details: Option<serde_json::Value>,
}

const MAX_DEDUP_KEY: usize = 255;

/// Returns the events (the alert, and a note when its time was bounded)
/// and the dedup key the sender should use from now on (PagerDuty answers
/// with it, generated when the trigger had none). One event is the whole
/// body: an event beyond the limits is an error, not a rejection.
pub fn parse_pagerduty(
    body: &[u8],
    intake: &Intake,
) -> Result<(Vec<Event>, String), NormalizeError> {
    let (event, key) = decode(body, intake.now)?;
    let Event::Alert(alert) = event else {
        return Ok((vec![event], key));
    };
    let mut out = Batch::default();
    admit(alert, 0, "", intake, &mut out);
    match out.rejected.pop() {
        Some(r) => Err(NormalizeError::field(event_field(&r.field), None, r.error)),
        None => Ok((out.events, key)),
    }
}

/// The event's field behind a label or annotation of the alert made from
/// it, so that a refusal names what the sender wrote.
fn event_field(alert_field: &str) -> String {
    let field = match alert_field {
        "labels.alertname" => "payload.class",
        "labels.severity" => "payload.severity",
        "labels.host" => "payload.source",
        "labels.component" => "payload.component",
        "labels.group" => "payload.group",
        "annotations.summary" => "payload.summary",
        "annotations.details" => "payload.custom_details",
        "annotations.client" => "client",
        "startsAt" | "endsAt" => "payload.timestamp",
        _ => "payload",
    };
    field.to_string()
}

fn decode(body: &[u8], now: Timestamp) -> Result<(Event, String), NormalizeError> {
    let ev: PdEvent<'_> = from_object(body)?;
    let missing = |f: &str| NormalizeError::field(f, None, format!("missing field `{f}`"));
    match ev.routing_key.as_deref() {
        None => return Err(missing("routing_key")),
        Some("") => {
            return Err(NormalizeError::field(
                "routing_key",
                None,
                "must not be empty",
            ));
        }
        Some(_) => {}
    }
    let action = match ev.event_action.as_deref() {
        Some("trigger") => PagerDutyAction::Trigger,
        Some("acknowledge") => PagerDutyAction::Acknowledge,
        Some("resolve") => PagerDutyAction::Resolve,
        Some(other) => {
            return Err(NormalizeError::field(
                "event_action",
                None,
                format!("must be \"trigger\", \"acknowledge\" or \"resolve\", got {other:?}"),
            ));
        }
        None => return Err(missing("event_action")),
    };
    if let Some(k) = ev.dedup_key.as_deref()
        && (k.is_empty() || k.len() > MAX_DEDUP_KEY)
    {
        return Err(NormalizeError::field(
            "dedup_key",
            None,
            format!("must be 1..={MAX_DEDUP_KEY} characters"),
        ));
    }
    if action != PagerDutyAction::Trigger {
        let key = ev
            .dedup_key
            .ok_or_else(|| missing("dedup_key"))?
            .into_owned();
        let fingerprint = Fingerprint::of_key(&key);
        let event = if action == PagerDutyAction::Acknowledge {
            Event::Acknowledge {
                fingerprint,
                at: now,
                actor: format!("pagerduty:{}", ev.client.as_deref().unwrap_or("events-api")),
            }
        } else {
            let labels: LabelSet = [("dedup_key".to_string(), key.clone())]
                .into_iter()
                .collect();
            Event::Alert(Alert {
                fingerprint,
                status: AlertStatus::Resolved,
                labels,
                annotations: LabelSet::new(),
                starts_at: now,
                ends_at: Some(now),
                source: Source::Pagerduty,
                generator_url: String::new(),
            })
        };
        return Ok((event, key));
    }
    let Obj(p) = ev.payload.ok_or_else(|| missing("payload"))?;
    let summary = p.summary.ok_or_else(|| missing("payload.summary"))?;
    if summary.is_empty() || summary.len() > 1024 {
        return Err(NormalizeError::field(
            "payload.summary",
            None,
            "must be 1..=1024 characters",
        ));
    }
    let source = p.source.ok_or_else(|| missing("payload.source"))?;
    let severity = p.severity.ok_or_else(|| missing("payload.severity"))?;
    if !matches!(severity.as_ref(), "critical" | "error" | "warning" | "info") {
        return Err(NormalizeError::field(
            "payload.severity",
            None,
            format!("must be critical, error, warning or info, got {severity:?}"),
        ));
    }
    let starts_at = match p.timestamp.as_deref() {
        Some(t) => parse_time(t, || "payload.timestamp".into(), None)?.unwrap_or(now),
        None => now,
    };
    let mut labels = vec![
        (
            "alertname".to_string(),
            p.class.as_deref().unwrap_or("PagerDutyEvent").to_string(),
        ),
        ("severity".to_string(), severity.into_owned()),
        ("host".to_string(), source.into_owned()),
    ];
    if let Some(c) = p.component {
        labels.push(("component".into(), c.into_owned()));
    }
    if let Some(g) = p.group {
        labels.push(("group".into(), g.into_owned()));
    }
    let labels: LabelSet = labels.into_iter().collect();
    // Without a dedup_key PagerDuty would make one up; we derive it from the
    // event's identity instead, so a replay gives the same incidents.
    let key = match ev.dedup_key {
        Some(k) => k.into_owned(),
        None => {
            let mut with_summary = labels.clone();
            with_summary.insert("summary".into(), summary.to_string());
            Fingerprint::of_labels(&with_summary).to_string()
        }
    };
    let mut annotations = vec![("summary".to_string(), summary.into_owned())];
    if let Some(d) = p.custom_details {
        annotations.push(("details".into(), d.to_string()));
    }
    if let Some(c) = ev.client {
        annotations.push(("client".into(), c.into_owned()));
    }
    let generator_url = ev.client_url.map(Cow::into_owned).unwrap_or_default();
    let alert = Alert {
        fingerprint: Fingerprint::of_key(&key),
        status: AlertStatus::Firing,
        labels,
        annotations: annotations.into_iter().collect(),
        starts_at,
        ends_at: None,
        source: Source::Pagerduty,
        generator_url,
    };
    Ok((Event::Alert(alert), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_772_438_400_000);

    fn parse_pagerduty(body: &[u8], now: Timestamp) -> Result<(Event, String), NormalizeError> {
        super::parse_pagerduty(body, &Intake::offline(now)).map(|(mut e, k)| (e.remove(0), k))
    }

    #[test]
    fn trigger_ack_resolve_share_identity() {
        let (t, key) = parse_pagerduty(
            br#"{"routing_key":"r","event_action":"trigger","dedup_key":"disk-42",
                "payload":{"summary":"disk full","source":"db-1","severity":"critical","class":"DiskFull","custom_details":{"free":"0%"}}}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(key, "disk-42");
        let Event::Alert(a) = t else { panic!() };
        assert_eq!(a.labels.get("alertname"), Some("DiskFull"));
        assert_eq!(a.labels.get("host"), Some("db-1"));
        assert_eq!(a.annotations.get("details"), Some(r#"{"free":"0%"}"#));
        let (ack, _) = parse_pagerduty(
            br#"{"routing_key":"r","event_action":"acknowledge","dedup_key":"disk-42"}"#,
            NOW,
        )
        .unwrap();
        assert!(
            matches!(ack, Event::Acknowledge { fingerprint, .. } if fingerprint == a.fingerprint)
        );
        let (res, _) = parse_pagerduty(
            br#"{"routing_key":"r","event_action":"resolve","dedup_key":"disk-42"}"#,
            NOW,
        )
        .unwrap();
        let Event::Alert(r) = res else { panic!() };
        assert_eq!(r.fingerprint, a.fingerprint);
        assert_eq!(r.status, AlertStatus::Resolved);
    }

    #[test]
    fn trigger_without_key_is_deterministic() {
        let body = br#"{"routing_key":"r","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"}}"#;
        let (_, k1) = parse_pagerduty(body, NOW).unwrap();
        let (_, k2) = parse_pagerduty(body, NOW).unwrap();
        assert_eq!(k1, k2);
    }

    #[test]
    fn errors_name_fields() {
        let f = |b: &[u8]| match parse_pagerduty(b, NOW).unwrap_err() {
            NormalizeError::Field { field, .. } => field,
            e => panic!("{e:?}"),
        };
        assert_eq!(f(br#"{"event_action":"trigger"}"#), "routing_key");
        assert_eq!(
            f(br#"{"routing_key":"r","event_action":"poke"}"#),
            "event_action"
        );
        assert_eq!(
            f(br#"{"routing_key":"r","event_action":"resolve"}"#),
            "dedup_key"
        );
        assert_eq!(f(br#"{"routing_key":"r","event_action":"trigger","payload":{"source":"h","severity":"info"}}"#), "payload.summary");
        assert_eq!(f(br#"{"routing_key":"r","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"fatal"}}"#), "payload.severity");
        assert_eq!(f(br#"{"routing_key":"r","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info","timestamp":"x"}}"#), "payload.timestamp");
    }
}
