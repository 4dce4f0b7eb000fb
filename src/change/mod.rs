//! Change records (ITIL change management): which CI is being changed, when,
//! and whether the change is approved. Alerts on a CI inside an approved
//! window are in-change (default rules suppress them); alerts shortly after a
//! window ends are change-related and linked to it.

use crate::domain::Timestamp;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    Requested,
    Approved,
    Implementing,
    Completed,
    Cancelled,
    Rejected,
}

impl ChangeState {
    /// States whose window counts as planned work.
    pub fn is_planned(self) -> bool {
        matches!(
            self,
            ChangeState::Approved | ChangeState::Implementing | ChangeState::Completed
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRecord {
    pub id: String,
    pub ci: String,
    pub state: ChangeState,
    pub start: Timestamp,
    pub end: Timestamp,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ChangeError {
    pub field: String,
    pub message: String,
}

/// Parse a JSON array of change records (the API body and `--changes` file),
/// reporting every invalid record.
pub fn parse_changes(body: &[u8]) -> Result<Vec<ChangeRecord>, Vec<ChangeError>> {
    let raw: Vec<serde_json::Value> = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(v)) => v,
        Ok(v @ serde_json::Value::Object(_)) => vec![v],
        Ok(_) => {
            return Err(vec![ChangeError {
                field: "body".into(),
                message: "expected a change record or an array of them".into(),
            }]);
        }
        Err(e) => {
            return Err(vec![ChangeError {
                field: "body".into(),
                message: format!("not valid JSON: {e}"),
            }]);
        }
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut errs = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        match serde_json::from_value::<ChangeRecord>(v) {
            Ok(c) if c.id.trim().is_empty() => errs.push(ChangeError {
                field: format!("[{i}].id"),
                message: "must not be empty".into(),
            }),
            Ok(c) if c.ci.trim().is_empty() => errs.push(ChangeError {
                field: format!("[{i}].ci"),
                message: "must not be empty".into(),
            }),
            Ok(c) if c.end < c.start => errs.push(ChangeError {
                field: format!("[{i}].end"),
                message: "ends before it starts".into(),
            }),
            Ok(c) => out.push(c),
            Err(e) => errs.push(ChangeError {
                field: format!("[{i}]"),
                message: e.to_string(),
            }),
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

/// Change records by CI, for event-time lookups.
#[derive(Debug, Clone, Default)]
pub struct ChangeBook {
    by_ci: FxHashMap<String, Vec<ChangeRecord>>,
}

impl ChangeBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert or replace (by id) a change record.
    pub fn upsert(&mut self, c: ChangeRecord) {
        for list in self.by_ci.values_mut() {
            list.retain(|x| x.id != c.id);
        }
        let list = self.by_ci.entry(c.ci.clone()).or_default();
        list.push(c);
        list.sort_by_key(|x| x.start);
    }

    pub fn all(&self) -> Vec<&ChangeRecord> {
        let mut v: Vec<&ChangeRecord> = self.by_ci.values().flatten().collect();
        v.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
        v
    }

    pub fn len(&self) -> usize {
        self.by_ci.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A planned change whose window holds `t` on this CI.
    pub fn active(&self, ci: &str, t: Timestamp) -> Option<&ChangeRecord> {
        self.by_ci
            .get(ci)?
            .iter()
            .find(|c| c.state.is_planned() && c.start <= t && t <= c.end)
    }

    /// A planned change on this CI that ended within `grace` before `t`.
    pub fn recently_ended(&self, ci: &str, t: Timestamp, grace: Duration) -> Option<&ChangeRecord> {
        self.by_ci
            .get(ci)?
            .iter()
            .rev()
            .find(|c| c.state.is_planned() && c.end < t && t.since(c.end) <= grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap().unwrap()
    }

    #[test]
    fn parses_the_exchange_format_and_finds_windows() {
        let changes = parse_changes(
            br#"[{"id":"CHG0001001","ci":"host-pg-1-a","state":"approved","start":"2026-03-02T08:43:00.000Z","end":"2026-03-02T09:23:00.000Z","summary":"kernel patching"},
                 {"id":"CHG2","ci":"host-pg-1-a","state":"rejected","start":"2026-03-02T10:00:00Z","end":"2026-03-02T11:00:00Z"}]"#,
        )
        .unwrap();
        let mut book = ChangeBook::new();
        for c in changes {
            book.upsert(c);
        }
        assert_eq!(
            book.active("host-pg-1-a", t("2026-03-02T08:48:00Z"))
                .map(|c| c.id.as_str()),
            Some("CHG0001001")
        );
        assert!(
            book.active("host-pg-1-a", t("2026-03-02T08:42:59Z"))
                .is_none()
        );
        assert!(
            book.active("host-pg-1-b", t("2026-03-02T08:48:00Z"))
                .is_none()
        );
        assert!(
            book.active("host-pg-1-a", t("2026-03-02T10:30:00Z"))
                .is_none(),
            "rejected changes are no window"
        );
        let grace = Duration::from_secs(30 * 60);
        assert_eq!(
            book.recently_ended("host-pg-1-a", t("2026-03-02T09:40:00Z"), grace)
                .map(|c| c.id.as_str()),
            Some("CHG0001001")
        );
        assert!(
            book.recently_ended("host-pg-1-a", t("2026-03-02T10:40:00Z"), grace)
                .is_none()
        );
    }

    #[test]
    fn every_bad_record_is_reported() {
        let errs = parse_changes(
            br#"[{"id":"","ci":"x","state":"approved","start":"2026-03-02T08:00:00Z","end":"2026-03-02T09:00:00Z"},
                 {"id":"a","ci":"x","state":"maybe","start":"2026-03-02T08:00:00Z","end":"2026-03-02T09:00:00Z"},
                 {"id":"b","ci":"x","state":"approved","start":"2026-03-02T10:00:00Z","end":"2026-03-02T09:00:00Z"}]"#,
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["[0].id", "[1]", "[2].end"]);
        assert!(errs[1].message.contains("maybe"));
    }
}
