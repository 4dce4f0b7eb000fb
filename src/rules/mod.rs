//! TEMPORARY stub with the rule engine's interface; replaced by the real module.
use crate::domain::{Alert, Level, Priority};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct RuleSet;
#[derive(Debug, Clone)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub rule: Option<String>,
    pub field: String,
    pub message: String,
}
impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.field, self.message)
    }
}
impl std::error::Error for RuleError {}
pub struct RuleInput<'a> {
    pub alert: &'a Alert,
    pub ci: Option<&'a CiFacts>,
    pub service: Option<&'a ServiceFacts>,
    pub incident: Option<&'a IncidentFacts>,
}
pub struct CiFacts;
pub struct ServiceFacts;
pub struct IncidentFacts {
    pub state: String,
    pub priority: Priority,
    pub alert_count: u64,
    pub flapping: bool,
}
#[derive(Debug, Clone, PartialEq)]
pub struct Suppression {
    pub rule: Arc<str>,
    pub reason: String,
}
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub matched: Vec<Arc<str>>,
    pub suppress: Option<Suppression>,
    pub priority: Option<(Priority, Arc<str>)>,
    pub impact: Option<(Level, Arc<str>)>,
    pub urgency: Option<(Level, Arc<str>)>,
    pub assign: Option<(String, Arc<str>)>,
    pub runbooks: Vec<String>,
    pub notify: Vec<String>,
    pub open: bool,
    pub errors: Vec<(Arc<str>, String)>,
}
impl RuleSet {
    pub fn empty() -> RuleSet {
        RuleSet
    }
    pub fn load_dir(_dir: &Path) -> Result<RuleSet, Vec<RuleError>> {
        Ok(RuleSet)
    }
    pub fn len(&self) -> usize {
        0
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::empty()
    }
    pub fn warnings(&self) -> &[RuleError] {
        &[]
    }
    pub fn evaluate(&self, _input: &RuleInput<'_>) -> Decision {
        Decision {
            matched: vec![],
            suppress: None,
            priority: None,
            impact: None,
            urgency: None,
            assign: None,
            runbooks: vec![],
            notify: vec![],
            open: true,
            errors: vec![],
        }
    }
}
