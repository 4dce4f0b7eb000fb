//! The exchange format, as serde reads it. Unknown keys are errors, so a typo
//! does not silently drop a dependency.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmdbFile {
    #[serde(default = "one")]
    pub version: u32,
    #[serde(default)]
    pub services: Vec<ServiceRecord>,
    #[serde(default)]
    pub cis: Vec<CiRecord>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// 1 = most critical.
    #[serde(default)]
    pub tier: Option<i64>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub sla: Option<SlaRecord>,
    #[serde(default)]
    pub slo: Vec<SloRecord>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaRecord {
    /// Priority (P1..P5) → duration until acknowledged.
    #[serde(default)]
    pub response: BTreeMap<String, String>,
    /// Priority (P1..P5) → duration until resolved.
    #[serde(default)]
    pub resolution: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloRecord {
    pub name: String,
    /// Percent, e.g. 99.9.
    pub objective: f64,
    pub window: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiRecord {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default, rename = "match", deserialize_with = "string_map")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub runbook: Option<String>,
}

/// Label values written as YAML numbers or booleans (`port: 5432`) are
/// meant as the strings Prometheus would send.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = Option::<BTreeMap<String, serde_yaml_ng::Value>>::deserialize(d)?.unwrap_or_default();
    raw.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_yaml_ng::Value::String(s) => s,
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "match.{k}: expected a string, got {other:?}"
                    )));
                }
            };
            Ok((k, s))
        })
        .collect()
}
