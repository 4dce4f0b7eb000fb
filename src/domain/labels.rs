//! A label set kept sorted by name, which is what fingerprinting and
//! matcher evaluation both want.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Host part of a Prometheus `instance` (`host:port`, `[v6]:port`, or a URL):
/// correlation and the CMDB's host matching must read it the same way.
pub fn instance_host(instance: &str) -> &str {
    let s = instance
        .split_once("://")
        .map_or(instance, |(_, rest)| rest);
    let s = s.split(['/', '?']).next().unwrap_or(s);
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => s,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSet(Vec<(String, String)>);

impl LabelSet {
    pub fn new() -> Self {
        LabelSet(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        LabelSet(Vec::with_capacity(n))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Inserts or replaces, keeping the order.
    pub fn insert(&mut self, name: String, value: String) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

impl FromIterator<(String, String)> for LabelSet {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut v: Vec<(String, String)> = iter.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // Last value wins for a repeated name, as in a JSON object.
        v.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(&mut earlier.1, &mut later.1);
                true
            } else {
                false
            }
        });
        LabelSet(v)
    }
}

impl Serialize for LabelSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for LabelSet {
    /// Straight into a sorted `Vec`: no intermediate map on the ingest hot path.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LabelSet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of string names to string values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<LabelSet, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((k, val)) =
                    m.next_entry::<std::borrow::Cow<'de, str>, std::borrow::Cow<'de, str>>()?
                {
                    v.push((k.into_owned(), val.into_owned()));
                }
                Ok(v.into_iter().collect())
            }
            fn visit_unit<E>(self) -> Result<LabelSet, E> {
                Ok(LabelSet::new())
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_last_wins() {
        let ls: LabelSet = vec![
            ("b".to_string(), "1".to_string()),
            ("a".to_string(), "x".to_string()),
            ("b".to_string(), "2".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(ls.iter().collect::<Vec<_>>(), vec![("a", "x"), ("b", "2")]);
        assert_eq!(ls.get("b"), Some("2"));
        assert_eq!(ls.get("c"), None);
    }
}
