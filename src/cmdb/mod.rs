//! The CMDB: business services and configuration items (CIs) with their
//! `depends_on` edges, in the exchange format of `cmdb.yaml`. Loaded and
//! validated (every error at once), then compiled into a compact graph with
//! the indexes alert binding needs. Immutable once built: a reload builds a
//! new one and swaps it in.

mod graph;
mod model;

pub use graph::{Binding, BindingHow, CiIdx, Cmdb, ImpactedService};
pub use model::{CiRecord, CmdbFile, ServiceRecord, SloRecord};

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
    let text = std::fs::read_to_string(path).map_err(|e| vec![CmdbError::new(&name, "file", e.to_string())])?;
    parse_yaml(&name, &text)
}

/// Parse and validate CMDB YAML text.
pub fn parse_yaml(source_name: &str, text: &str) -> Result<Cmdb, Vec<CmdbError>> {
    let file: CmdbFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("line {} column {}", l.line(), l.column()))
            .unwrap_or_else(|| "document".into());
        vec![CmdbError::new(source_name, at, e.to_string())]
    })?;
    Cmdb::build(source_name, file)
}
