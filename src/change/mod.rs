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
        match serde_path_to_error::deserialize::<_, crate::domain::Obj<ChangeRecord>>(v)
            .map(|o| o.0)
        {
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
                field: match e.path().to_string().as_str() {
                    "." => format!("[{i}]"),
                    p => format!("[{i}].{p}"),
                },
                message: e.into_inner().to_string(),
            }),
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

/// Change records by CI, for event-time lookups.
#[derive(Debug, Clone, Default)]
pub struct ChangeBook {
    by_ci: FxHashMap<String, Vec<ChangeRecord>>,
    /// Where each record is filed (id → CI), so that an update finds its
    /// old entry without searching every CI.
    ci_of: FxHashMap<String, String>,
}

impl ChangeBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert or replace (by id) a change record.
    pub fn upsert(&mut self, c: ChangeRecord) {
        self.upsert_many(vec![c]);
    }

    /// Insert or replace (by id) many records at once, in time linear in
    /// their number (plus sorting the CIs they touch once each): a bulk
    /// import of a change calendar must not be quadratic. The last record
    /// of an id wins.
    pub fn upsert_many(&mut self, changes: Vec<ChangeRecord>) {
        use rustc_hash::FxHashSet;
        let mut latest: FxHashMap<String, ChangeRecord> = FxHashMap::default();
        for c in changes {
            latest.insert(c.id.clone(), c);
        }
        // The old entries of replaced ids, removed one CI at a time.
        let mut stale: FxHashMap<String, FxHashSet<String>> = FxHashMap::default();
        for id in latest.keys() {
            if let Some(old_ci) = self.ci_of.get(id) {
                stale.entry(old_ci.clone()).or_default().insert(id.clone());
            }
        }
        let mut touched: FxHashSet<String> = FxHashSet::default();
        for (ci, ids) in stale {
            if let Some(list) = self.by_ci.get_mut(&ci) {
                list.retain(|x| !ids.contains(&x.id));
                if list.is_empty() {
                    self.by_ci.remove(&ci);
                }
            }
        }
        for (id, c) in latest {
            self.ci_of.insert(id, c.ci.clone());
            touched.insert(c.ci.clone());
            self.by_ci.entry(c.ci.clone()).or_default().push(c);
        }
        for ci in touched {
            if let Some(list) = self.by_ci.get_mut(&ci) {
                list.sort_by_key(|x| x.start);
            }
        }
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
    fn an_update_moves_a_record_and_the_last_of_an_id_wins() {
        let rec = |id: &str, ci: &str, start: &str| ChangeRecord {
            id: id.into(),
            ci: ci.into(),
            state: ChangeState::Approved,
            start: t(start),
            end: t(start).saturating_add(Duration::from_secs(3600)),
            summary: String::new(),
        };
        let mut book = ChangeBook::new();
        book.upsert_many(vec![
            rec("C1", "a", "2026-03-02T10:00:00Z"),
            rec("C2", "a", "2026-03-02T08:00:00Z"),
            rec("C1", "a", "2026-03-02T12:00:00Z"),
        ]);
        assert_eq!(book.len(), 2);
        let starts: Vec<&str> = book.all().iter().map(|c| c.id.as_str()).collect();
        assert_eq!(starts, ["C2", "C1"], "sorted by start; the last C1 kept");
        // C1 moves to CI b: gone from a.
        book.upsert(rec("C1", "b", "2026-03-02T12:00:00Z"));
        assert_eq!(book.len(), 2);
        assert!(book.active("a", t("2026-03-02T12:30:00Z")).is_none());
        assert_eq!(
            book.active("b", t("2026-03-02T12:30:00Z"))
                .map(|c| c.id.as_str()),
            Some("C1")
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
        assert_eq!(fields, vec!["[0].id", "[1].state", "[2].end"]);
        assert!(errs[1].message.contains("maybe"));
    }
}
