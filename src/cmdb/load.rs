//! CMDB text → exchange format → graph, with every error of the file.
//!
//! A valid file is read by serde in one pass. When that fails, serde has
//! stopped at the first problem (an unknown key ends `deny_unknown_fields`),
//! so the text is read again as a generic YAML value and each entry, then
//! each key of a broken entry, is read on its own: every broken field is
//! reported, and the graph checks (unknown or duplicate ids, cycles) still
//! run over the whole file, broken entries standing in by their id. Lines
//! are recovered afterwards, only for the problems found.

use super::CmdbError;
use super::graph::Cmdb;
use super::model::{CiRecord, CmdbFile, ServiceRecord};
use crate::domain::yaml::{locate, parse_path};
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

/// Errors beyond this many are reported without a line: each line costs a
/// re-read of the text.
const MAX_LOCATED: usize = 1000;

/// An entry of the `services` or `cis` list.
trait Entry: DeserializeOwned {
    /// Stands in for an entry that could not be read, so that what refers
    /// to it by id is not reported as unknown as well.
    fn placeholder(id: String) -> Self;
}

impl Entry for CiRecord {
    fn placeholder(id: String) -> Self {
        CiRecord {
            id,
            name: None,
            class: None,
            service: None,
            owner: None,
            hostnames: Vec::new(),
            match_labels: Default::default(),
            depends_on: Vec::new(),
            runbook: None,
        }
    }
}

impl Entry for ServiceRecord {
    fn placeholder(id: String) -> Self {
        ServiceRecord {
            id,
            name: None,
            description: None,
            tier: None,
            owner: None,
            sla: None,
            slo: Vec::new(),
        }
    }
}

pub(super) fn load_text(src: &str, text: &str) -> Result<(CmdbFile, Cmdb), Vec<CmdbError>> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let strict: Result<CmdbFile, _> = serde_path_to_error::deserialize(de);
    match strict {
        Ok(file) => match Cmdb::build(src, file.clone()) {
            Ok(mut cmdb) => {
                if !cmdb.warnings().is_empty() {
                    let doc: Value = serde_yaml_ng::from_str(text).unwrap_or(Value::Null);
                    let mut n = 0;
                    cmdb.annotate_warnings(|w| annotate(text, &doc, w, &mut n));
                }
                Ok((file, cmdb))
            }
            Err(mut errs) => {
                let doc: Value = serde_yaml_ng::from_str(text).unwrap_or(Value::Null);
                let mut n = 0;
                errs.iter_mut()
                    .for_each(|e| annotate(text, &doc, e, &mut n));
                errs.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
                Err(errs)
            }
        },
        Err(e) => {
            let first = syntax_error(src, e);
            // Not YAML, or not a mapping: nothing more can be read.
            let doc = match serde_yaml_ng::from_str::<Value>(text) {
                Ok(doc @ Value::Mapping(_)) => doc,
                _ => return Err(vec![first]),
            };
            let (file, mut errs) = loose(src, &doc);
            if errs.is_empty() {
                // The loose reading missed what serde saw: say that.
                errs.push(first);
            }
            if let Err(more) = Cmdb::build(src, file) {
                errs.extend(more);
            }
            let mut n = 0;
            errs.iter_mut()
                .for_each(|e| annotate(text, &doc, e, &mut n));
            // In reading order; those without a line last.
            errs.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(errs)
        }
    }
}

/// serde's pass alone.
pub(super) fn parse_only(src: &str, text: &str) -> Result<CmdbFile, CmdbError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| syntax_error(src, e))
}

/// The error serde gave, by the field's path when it read far enough to
/// have one (`cis[3].depends_on`), else by where the text went wrong.
fn syntax_error(src: &str, e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> CmdbError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let at = match (path.as_str(), inner.location()) {
        ("." | "" | "?", Some(l)) => format!("line {} column {}", l.line(), l.column()),
        ("." | "" | "?", None) => "document".into(),
        (p, _) => p.to_string(),
    };
    CmdbError::new(src, at, inner.to_string())
}

/// Read the document entry by entry; the entries that could not be read
/// are in the file as placeholders (with their id when they have one).
fn loose(src: &str, doc: &Value) -> (CmdbFile, Vec<CmdbError>) {
    let mut file = CmdbFile {
        version: 1,
        services: Vec::new(),
        cis: Vec::new(),
    };
    let mut errs = Vec::new();
    let Value::Mapping(top) = doc else {
        return (file, errs);
    };
    for (k, v) in top {
        match k.as_str() {
            Some("version") => match serde_yaml_ng::from_value::<u32>(v.clone()) {
                Ok(n) => file.version = n,
                Err(e) => errs.push(CmdbError::new(src, "version", e.to_string())),
            },
            Some(list @ "services") => file.services = entries(src, list, v, &mut errs),
            Some(list @ "cis") => file.cis = entries(src, list, v, &mut errs),
            Some(other) => errs.push(CmdbError::new(
                src,
                // An empty key names no field: the document as a whole.
                if other.is_empty() { "document" } else { other },
                format!("unknown field `{other}`, expected one of `version`, `services`, `cis`"),
            )),
            None => errs.push(CmdbError::new(
                src,
                "document",
                format!("a key that is not a string: {}", short(k)),
            )),
        }
    }
    (file, errs)
}

/// A YAML value in a message, cut short.
fn short(v: &Value) -> String {
    let s = serde_yaml_ng::to_string(v).unwrap_or_default();
    let s = s.trim();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The entries of `list`, each read alone.
fn entries<T: Entry>(src: &str, list: &str, v: &Value, errs: &mut Vec<CmdbError>) -> Vec<T> {
    let items = match v {
        Value::Sequence(items) => items,
        // Written out but empty, as `cis:` alone: nothing.
        Value::Null => return Vec::new(),
        other => {
            errs.push(CmdbError::new(
                src,
                list,
                format!("expected a list, got {}", short(other)),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{list}[{i}]");
        match serde_path_to_error::deserialize::<_, T>(item.clone()) {
            Ok(rec) => out.push(rec),
            Err(whole) => {
                let Value::Mapping(m) = item else {
                    errs.push(CmdbError::new(src, at, whole.into_inner().to_string()));
                    out.push(T::placeholder(format!("\u{0}{list}[{i}]")));
                    continue;
                };
                let before = errs.len();
                let bad = field_errors::<T>(src, &at, m, errs);
                if !m.contains_key("id") {
                    errs.push(CmdbError::new(src, &at, "missing field `id`"));
                }
                if errs.len() == before {
                    let path = whole.path().to_string();
                    let field = match path.as_str() {
                        "." | "" => at.clone(),
                        p => format!("{at}.{p}"),
                    };
                    errs.push(CmdbError::new(src, field, whole.into_inner().to_string()));
                }
                // The entry without its bad keys, so its good ones (the
                // service it serves, what it depends on) are still checked.
                let mut good = m.clone();
                good.retain(|k, _| !bad.contains(k));
                if !matches!(good.get("id"), Some(Value::String(_))) {
                    good.insert(
                        Value::String("id".into()),
                        Value::String(format!("\u{0}{list}[{i}]")),
                    );
                }
                out.push(
                    serde_yaml_ng::from_value(Value::Mapping(good))
                        .unwrap_or_else(|_| T::placeholder(format!("\u{0}{list}[{i}]"))),
                );
            }
        }
    }
    out
}

/// Each key of a broken entry read alone (beside a stand-in id), so that
/// every bad key is reported, not the first; the bad keys.
fn field_errors<T: Entry>(
    src: &str,
    at: &str,
    m: &Mapping,
    errs: &mut Vec<CmdbError>,
) -> Vec<Value> {
    let mut bad = Vec::new();
    for (k, v) in m {
        let mut probe = Mapping::new();
        if k.as_str() != Some("id") {
            probe.insert(Value::String("id".into()), Value::String("probe".into()));
        }
        probe.insert(k.clone(), v.clone());
        if let Err(e) = serde_path_to_error::deserialize::<_, T>(Value::Mapping(probe)) {
            let path = e.path().to_string();
            let field = match (path.as_str(), k.as_str()) {
                ("." | "", Some(key)) => format!("{at}.{key}"),
                ("." | "", None) => at.to_string(),
                (p, _) => format!("{at}.{p}"),
            };
            errs.push(CmdbError::new(src, field, e.into_inner().to_string()));
            bad.push(k.clone());
        }
    }
    bad
}

/// Add the line of the error's field and the id of its entry.
fn annotate(text: &str, doc: &Value, e: &mut CmdbError, located: &mut usize) {
    if e.field.starts_with("line ") || e.field == "document" {
        return;
    }
    let path = parse_path(&e.field);
    if e.entry_id.is_none()
        && let [
            crate::domain::yaml::Seg::Key(list),
            crate::domain::yaml::Seg::Index(i),
            ..,
        ] = path.as_slice()
        && (list == "cis" || list == "services")
    {
        e.entry_id = doc
            .get(list.as_str())
            .and_then(|l| l.get(*i))
            .and_then(|entry| entry.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if e.line.is_none() && *located < MAX_LOCATED {
        *located += 1;
        e.line = locate(text, &path);
    }
}
