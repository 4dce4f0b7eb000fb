//! One pure mapper per source format: request bytes → canonical [`Event`]s.
//!
//! Parsing is strict about what matters (types, required fields, times) and
//! lenient about extras, because senders such as Grafana add their own fields
//! to the Alertmanager webhook. Every error names the field and the alert index
//! so the sender can find the bad alert in a batch.

mod admit;
mod alertmanager;
mod canonical;
mod pagerduty;

pub use admit::{AlertLimits, Batch, Intake, RejectReason, Rejected, TimeBounds, excerpt};
pub use alertmanager::parse_alertmanager;
pub use canonical::parse_canonical;
pub use pagerduty::{PagerDutyAction, parse_pagerduty};

pub(crate) use crate::domain::Obj;
use crate::domain::{Alert, Fingerprint, Timestamp};
use serde::Serialize;

/// What a source hands the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Alert(Alert),
    /// A sender acknowledged the alert (PagerDuty `acknowledge`): acknowledge
    /// the incident that holds it.
    Acknowledge {
        fingerprint: Fingerprint,
        at: Timestamp,
        actor: String,
    },
    /// Said of the alert just before it (its event time was replaced by
    /// the receive time): goes on the timeline of the incident it opens.
    Note {
        fingerprint: Fingerprint,
        at: Timestamp,
        note: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(untagged)]
pub enum NormalizeError {
    #[error("body is not valid JSON: {message} (line {line}, column {column})")]
    Syntax {
        /// Always `body`: a syntax error has a place (line, column), not a
        /// path, and every error names a field.
        field: &'static str,
        message: String,
        line: usize,
        column: usize,
    },
    #[error("{field}: {message}")]
    Field {
        /// Path of the offending field, e.g. `alerts[3].startsAt`.
        field: String,
        /// Index of the offending alert in the batch, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        index: Option<usize>,
        message: String,
    },
}

impl NormalizeError {
    pub fn field(
        field: impl Into<String>,
        index: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        NormalizeError::Field {
            field: field.into(),
            index,
            message: message.into(),
        }
    }
}

/// Deserialize with the fast parser; only on failure parse again, tracking the
/// path, so that the error names the field without slowing the good path.
fn from_slice<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, NormalizeError> {
    match serde_json::from_slice::<T>(body) {
        Ok(v) => Ok(v),
        Err(first) => {
            if first.is_syntax() || first.is_eof() {
                return Err(NormalizeError::Syntax {
                    field: "body",
                    message: first.to_string(),
                    line: first.line(),
                    column: first.column(),
                });
            }
            let mut de = serde_json::Deserializer::from_slice(body);
            match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Ok(v) => Ok(v),
                Err(e) => {
                    let path = e.path().to_string();
                    let index = alert_index(&path);
                    let inner = e.into_inner();
                    let mut message = inner.to_string();
                    // serde_json appends " at line L column C"; the path says more.
                    if let Some(cut) = message.rfind(" at line ") {
                        message.truncate(cut);
                    }
                    Err(NormalizeError::Field {
                        // An unknown key `""` at the top renders as an empty path.
                        field: if path == "." || path.is_empty() {
                            "body".into()
                        } else {
                            path
                        },
                        index,
                        message,
                    })
                }
            }
        }
    }
}

/// [`from_slice`] of a body that must be one JSON object.
fn from_object<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, NormalizeError> {
    from_slice::<Obj<T>>(body).map(|o| o.0)
}

/// `alerts[3].labels` → Some(3); `[7].startsAt` → Some(7).
fn alert_index(path: &str) -> Option<usize> {
    let start = path.find('[')? + 1;
    let end = path[start..].find(']')? + start;
    path[start..end].parse().ok()
}

fn parse_time(
    s: &str,
    field: impl FnOnce() -> String,
    index: Option<usize>,
) -> Result<Option<Timestamp>, NormalizeError> {
    Timestamp::parse_rfc3339(s).map_err(|e| {
        NormalizeError::field(field(), index, format!("invalid RFC 3339 time {s:?}: {e}"))
    })
}

/// The body formats `replay` and Kafka accept, told apart by their shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Alertmanager,
    Canonical,
    PagerDuty,
}

/// Tell a body's format from its top-level keys: an object with `alerts` is
/// an Alertmanager webhook, one with `event_action` is PagerDuty, anything
/// else (an array or a single alert object) is canonical. Skims the JSON
/// without building values, so it costs a fraction of the real parse.
pub fn detect(body: &[u8]) -> Format {
    #[derive(serde::Deserialize)]
    struct Keys {
        alerts: Option<serde::de::IgnoredAny>,
        event_action: Option<serde::de::IgnoredAny>,
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return Format::Canonical;
    }
    match serde_json::from_slice::<Keys>(body) {
        Ok(Keys {
            alerts: Some(_), ..
        }) => Format::Alertmanager,
        Ok(Keys {
            event_action: Some(_),
            ..
        }) => Format::PagerDuty,
        // Canonical, or malformed: the canonical parser names the problem.
        _ => Format::Canonical,
    }
}

/// Parse any supported body, detected by shape.
pub fn parse_any(body: &[u8], intake: &Intake) -> Result<Batch, NormalizeError> {
    match detect(body) {
        Format::Alertmanager => parse_alertmanager(body, intake),
        Format::Canonical => parse_canonical(body, intake),
        Format::PagerDuty => parse_pagerduty(body, intake).map(|(ev, _)| Batch {
            events: ev,
            ..Batch::default()
        }),
    }
}

/// A path inside one alert of a body, prefixed with where the alert
/// stands (`alerts[3].` + `labels.a`).
fn join(prefix: &str, path: &str) -> String {
    match path {
        "" | "." => prefix.trim_end_matches('.').to_string(),
        p => format!("{prefix}{p}"),
    }
}

/// Decode one alert of a body that did not decode as a whole: the
/// offending field of each bad alert is named, and the good ones still go.
fn decode_alone<'a, T: serde::Deserialize<'a>>(
    v: &'a serde_json::Value,
    prefix: &str,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize::<_, Obj<T>>(v)
        .map(|o| o.0)
        .map_err(|e| {
            let path = e.path().to_string();
            (join(prefix, &path), e.into_inner().to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_from_path() {
        assert_eq!(alert_index("alerts[3].labels"), Some(3));
        assert_eq!(alert_index("[12].startsAt"), Some(12));
        assert_eq!(alert_index("version"), None);
    }

    #[test]
    fn detects_formats() {
        assert_eq!(
            detect(br#"{"version":"4","alerts":[]}"#),
            Format::Alertmanager
        );
        assert_eq!(detect(br#"  [{"labels":{}}]"#), Format::Canonical);
        assert_eq!(detect(br#"{"event_action":"trigger"}"#), Format::PagerDuty);
        assert_eq!(detect(br#"{"labels":{"a":"b"}}"#), Format::Canonical);
        // Key names inside values do not confuse it.
        assert_eq!(
            detect(br#"{"event_action":"trigger","payload":{"custom_details":{"alerts":3}}}"#),
            Format::PagerDuty
        );
        assert_eq!(
            detect(br#"{"version":"4","alerts":[{"annotations":{"event_action":"x"}}]}"#),
            Format::Alertmanager
        );
    }
}
