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

/// One problem of one change record, named by its path in the body
/// (`[3].ci`) and, when it has a usable one, the record's id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", self.located_field())]
pub struct ChangeError {
    pub field: String,
    pub message: String,
    /// The record's `id`, when it has one.
    pub record: Option<String>,
}

impl ChangeError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ChangeError {
            field: field.into(),
            message: message.into(),
            record: None,
        }
    }

    /// An error about the whole body or request.
    pub fn body(message: impl Into<String>) -> Self {
        ChangeError::new("body", message)
    }

    /// The field with the record's id after its index: `[3] (CHG1).ci`.
    pub fn located_field(&self) -> String {
        match (&self.record, self.field.find(']')) {
            (Some(id), Some(end)) => {
                format!("{} ({id}){}", &self.field[..=end], &self.field[end + 1..])
            }
            _ => self.field.clone(),
        }
    }
}

/// Fields every record must have.
const REQUIRED: [&str; 5] = ["id", "ci", "state", "start", "end"];

/// Parse a JSON array of change records (the API body and `--changes` file),
/// reporting every problem of every invalid record.
pub fn parse_changes(body: &[u8]) -> Result<Vec<ChangeRecord>, Vec<ChangeError>> {
    let raw: Vec<serde_json::Value> = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(v)) => v,
        Ok(v @ serde_json::Value::Object(_)) => vec![v],
        Ok(_) => {
            return Err(vec![ChangeError::body(
                "expected a change record or an array of them",
            )]);
        }
        Err(e) => return Err(vec![ChangeError::body(format!("not valid JSON: {e}"))]),
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut errs = Vec::new();
    for (i, v) in raw.into_iter().enumerate() {
        match record(i, v) {
            Ok(c) => out.push(c),
            Err(more) => errs.extend(more),
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

/// One record, with every problem it has.
fn record(i: usize, v: serde_json::Value) -> Result<ChangeRecord, Vec<ChangeError>> {
    use serde_json::Value;
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string);
    let at = |p: &str| match p {
        "." | "" => format!("[{i}]"),
        p => format!("[{i}].{p}"),
    };
    let mut errs = Vec::new();
    let parsed = serde_path_to_error::deserialize::<_, crate::domain::Obj<ChangeRecord>>(v.clone())
        .map(|o| o.0);
    let whole = match (parsed, &v) {
        (Ok(c), _) => {
            errs.extend(semantic(i, &v));
            if errs.is_empty() {
                return Ok(c);
            }
            None
        }
        (Err(e), Value::Object(_)) => Some(e),
        (Err(e), _) => {
            errs.push(ChangeError::new(
                at(&e.path().to_string()),
                e.into_inner().to_string(),
            ));
            None
        }
    };
    if let (Some(whole), Value::Object(m)) = (whole, &v) {
        // serde stopped at the first problem: each key read alone, beside
        // valid stand-ins for the others, finds all of them.
        for (k, val) in m {
            let mut probe = serde_json::json!({
                "id": "probe", "ci": "probe", "state": "approved",
                "start": "2000-01-01T00:00:00Z", "end": "2000-01-01T00:00:00Z",
            });
            probe[k.as_str()] = val.clone();
            if let Err(e) = serde_path_to_error::deserialize::<_, ChangeRecord>(probe) {
                let field = match e.path().to_string().as_str() {
                    "." | "" => at(k),
                    p => at(p),
                };
                errs.push(ChangeError::new(field, e.into_inner().to_string()));
            }
        }
        for f in REQUIRED {
            if !m.contains_key(f) {
                errs.push(ChangeError::new(at("."), format!("missing field `{f}`")));
            }
        }
        errs.extend(semantic(i, &v));
        if errs.is_empty() {
            errs.push(ChangeError::new(
                at(&whole.path().to_string()),
                whole.into_inner().to_string(),
            ));
        }
    }
    for e in &mut errs {
        e.record.clone_from(&id);
    }
    Err(errs)
}

/// What the types allow and a change calendar cannot mean: empty ids, a
/// window that ends before it starts. Read from the fields that parse.
fn semantic(i: usize, v: &serde_json::Value) -> Vec<ChangeError> {
    let mut errs = Vec::new();
    for f in ["id", "ci"] {
        if v.get(f)
            .and_then(serde_json::Value::as_str)
            .is_some_and(|s| s.trim().is_empty())
        {
            errs.push(ChangeError::new(format!("[{i}].{f}"), "must not be empty"));
        }
    }
    let time = |f: &str| {
        v.get(f)
            .and_then(|t| serde_json::from_value::<Timestamp>(t.clone()).ok())
    };
    if let (Some(start), Some(end)) = (time("start"), time("end"))
        && end < start
    {
        errs.push(ChangeError::new(
            format!("[{i}].end"),
            "ends before it starts",
        ));
    }
    errs
}

/// The records whose CI the CMDB does not know (`known` says which ids it
/// does): such a change can never apply, since alerts only bind to CMDB
/// CIs, and accepting it would let an operator believe planned work is
/// covered when every alert of it will page.
pub fn unknown_cis(records: &[ChangeRecord], known: impl Fn(&str) -> bool) -> Vec<ChangeError> {
    records
        .iter()
        .enumerate()
        .filter(|(_, c)| !known(&c.ci))
        .map(|(i, c)| ChangeError {
            field: format!("[{i}].ci"),
            message: format!("unknown CI {:?}: no CI of the CMDB has this id", c.ci),
            record: Some(c.id.clone()),
        })
        .collect()
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

    /// serde stops at a record's first problem; every one is reported,
    /// named by the record's id.
    #[test]
    fn every_problem_of_a_record_is_reported() {
        let errs = parse_changes(
            br#"[{"id":"CHG7","ci":"","state":"maybe","start":"2026-03-02T10:00:00Z","end":"2026-03-02T09:00:00Z","owner":"x"},
                 {"ci":"db","state":"approved","start":"yesterday","end":"2026-03-02T09:00:00Z"}]"#,
        )
        .unwrap_err();
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let has = |needle: &str| shown.iter().any(|e| e.contains(needle));
        assert!(
            has("[0] (CHG7).state: unknown variant `maybe`"),
            "{shown:#?}"
        );
        assert!(has("[0] (CHG7).owner: unknown field `owner`"), "{shown:#?}");
        assert!(has("[0] (CHG7).ci: must not be empty"), "{shown:#?}");
        assert!(has("[0] (CHG7).end: ends before it starts"), "{shown:#?}");
        assert!(has("[1].start: "), "{shown:#?}");
        assert!(has("[1]: missing field `id`"), "{shown:#?}");
        assert_eq!(shown.len(), 6, "{shown:#?}");
    }

    #[test]
    fn a_change_on_a_ci_the_cmdb_lacks_is_named() {
        let changes = parse_changes(
            br#"[{"id":"C1","ci":"db","state":"approved","start":"2026-03-02T08:00:00Z","end":"2026-03-02T09:00:00Z"},
                 {"id":"C2","ci":"pg-9","state":"approved","start":"2026-03-02T08:00:00Z","end":"2026-03-02T09:00:00Z"}]"#,
        )
        .unwrap();
        let errs = unknown_cis(&changes, |ci| ci == "db");
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "[1] (C2).ci: unknown CI \"pg-9\": no CI of the CMDB has this id"
        );
    }
}
