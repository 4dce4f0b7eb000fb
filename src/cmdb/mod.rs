//! The CMDB: business services and configuration items (CIs) with their
//! `depends_on` edges, in the exchange format of `cmdb.yaml`. Loaded and
//! validated (every error at once), then compiled into a compact graph with
//! the indexes alert binding needs. Immutable once built: a reload builds a
//! new one and swaps it in.

mod graph;
mod load;
mod model;
pub mod servicenow;

pub(crate) use graph::Walk;
pub use graph::{Binding, BindingHow, CiIdx, Cmdb, ImpactedService};
pub use model::{CiRecord, CmdbFile, ServiceRecord, SlaRecord, SloRecord};

use std::path::Path;

/// One problem in a CMDB source, named by its path in the document
/// (`cis[62].depends_on[0]`), with the line it is on and the id of the CI
/// or service it belongs to when those are known, so that an operator
/// finds it in a file of hundreds of entries.
///
/// Displays as `cmdb.yaml:530: cis[62] (pg-3).depends_on[0]: unknown CI "pg-9"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdbError {
    pub source_name: String,
    /// The path in the document; `line L column C` or `document` when the
    /// text is not YAML far enough to have one.
    pub field: String,
    pub message: String,
    /// 1-based line of the field in the source.
    pub line: Option<usize>,
    /// The `id` of the entry (`cis[N]`, `services[N]`) the field is in.
    pub entry_id: Option<String>,
}

impl CmdbError {
    fn new(source_name: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        CmdbError {
            source_name: source_name.to_string(),
            field: field.into(),
            message: message.into(),
            line: None,
            entry_id: None,
        }
    }

    /// The field with the entry's id after its index: `cis[62] (pg-3).depends_on[0]`.
    pub fn located_field(&self) -> String {
        let Some(id) = &self.entry_id else {
            return self.field.clone();
        };
        match self.field.find(']') {
            Some(end) => format!("{} ({id}){}", &self.field[..=end], &self.field[end + 1..]),
            None => self.field.clone(),
        }
    }
}

impl std::fmt::Display for CmdbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source_name)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": {}: {}", self.located_field(), self.message)
    }
}

impl std::error::Error for CmdbError {}

/// Read and validate a `cmdb.yaml` file.
pub fn load_file(path: &Path) -> Result<Cmdb, Vec<CmdbError>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![CmdbError::new(&name, "file", e.to_string())])?;
    parse_yaml(&name, &text)
}

/// Parse and validate CMDB YAML text.
pub fn parse_yaml(source_name: &str, text: &str) -> Result<Cmdb, Vec<CmdbError>> {
    load_text(source_name, text).map(|(_, cmdb)| cmdb)
}

/// Parse and validate CMDB YAML text: the exchange format as read (to
/// merge with other sources) and the graph it makes alone. Start, `check`
/// and reload all come through here, so a file one of them refuses the
/// others refuse too. Every error of the file is reported at once.
pub fn load_text(source_name: &str, text: &str) -> Result<(CmdbFile, Cmdb), Vec<CmdbError>> {
    load::load_text(source_name, text)
}

/// Only read the exchange format (serde's first error; no graph checks):
/// what the loader's first pass does, kept apart for the benchmarks. A
/// file going into service is read with [`load_text`].
pub fn parse_file(source_name: &str, text: &str) -> Result<CmdbFile, CmdbError> {
    load::parse_only(source_name, text)
}

/// Merge sources: later ones win for a service or CI id they share.
pub fn merge(parts: Vec<CmdbFile>) -> CmdbFile {
    let mut out = CmdbFile {
        version: 1,
        services: Vec::new(),
        cis: Vec::new(),
    };
    let mut svc_at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut ci_at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for part in parts {
        for s in part.services {
            match svc_at.get(&s.id) {
                Some(&i) => out.services[i] = s,
                None => {
                    svc_at.insert(s.id.clone(), out.services.len());
                    out.services.push(s);
                }
            }
        }
        for c in part.cis {
            match ci_at.get(&c.id) {
                Some(&i) => out.cis[i] = c,
                None => {
                    ci_at.insert(c.id.clone(), out.cis.len());
                    out.cis.push(c);
                }
            }
        }
    }
    out
}

/// The CMDB in force, shared with the API; swapped whole on reload.
pub type SharedCmdb = std::sync::Arc<std::sync::RwLock<std::sync::Arc<Cmdb>>>;

#[cfg(test)]
mod tests;
