//! The CMDB: business services and configuration items (CIs) with their
//! `depends_on` edges, in the exchange format of `cmdb.yaml`. Loaded and
//! validated (every error at once), then compiled into a compact graph with
//! the indexes alert binding needs. Immutable once built: a reload builds a
//! new one and swaps it in.

mod graph;
mod model;
pub mod servicenow;

pub(crate) use graph::Walk;
pub use graph::{Binding, BindingHow, CiIdx, Cmdb, ImpactedService};
pub use model::{CiRecord, CmdbFile, ServiceRecord, SlaRecord, SloRecord};

use std::path::Path;

/// One problem in a CMDB source, named by its path in the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {field}: {message}")]
pub struct CmdbError {
    pub source_name: String,
    pub field: String,
    pub message: String,
}

impl CmdbError {
    fn new(source_name: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        CmdbError {
            source_name: source_name.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Read and validate a `cmdb.yaml` file.
pub fn load_file(path: &Path) -> Result<Cmdb, Vec<CmdbError>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![CmdbError::new(&name, "file", e.to_string())])?;
    parse_yaml(&name, &text)
}

/// Parse and validate CMDB YAML text.
pub fn parse_yaml(source_name: &str, text: &str) -> Result<Cmdb, Vec<CmdbError>> {
    Cmdb::build(source_name, parse_file(source_name, text)?)
}

/// Parse the exchange format without building the graph (to merge sources).
pub fn parse_file(source_name: &str, text: &str) -> Result<CmdbFile, Vec<CmdbError>> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        // The field's path when the YAML was read far enough to have one
        // (`cis[3].depends_on`), else where the text went wrong.
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = match (path.as_str(), inner.location()) {
            ("." | "" | "?", Some(l)) => format!("line {} column {}", l.line(), l.column()),
            ("." | "" | "?", None) => "document".into(),
            (p, _) => p.to_string(),
        };
        vec![CmdbError::new(source_name, at, inner.to_string())]
    })
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
