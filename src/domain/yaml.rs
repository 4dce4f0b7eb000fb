//! Paths into YAML documents and the lines they start on: configuration
//! files (rules, the CMDB) are validated on a generic value, which keeps no
//! positions, and their errors still have to name a line.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::Value;
use std::fmt;

/// One step of a path into the YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `rules[3].actions.priority`.
pub fn render_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The path a rendered field names (`cis[3].depends_on[1]` → `cis`, 3,
/// `depends_on`, 1). A key holding a dot or a bracket is split wrongly;
/// the line found is then that of its nearest ancestor, never a wrong one
/// deeper down.
pub fn parse_path(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        while let Some(close) = rest.find(']') {
            match rest[1..close].parse() {
                Ok(i) => out.push(Seg::Index(i)),
                Err(_) => return out,
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// The 1-based line of the node at `path` in `text` (or of the deepest
/// existing node on the way, for a missing field).
///
/// The YAML value tree keeps no positions, but serde_yaml_ng stamps a custom
/// error with the position of the node being read when it is raised, so
/// this re-reads the text, walking down `path`, and raises one on arrival.
/// Only run for problems, so its cost does not matter.
pub fn locate(text: &str, path: &[Seg]) -> Option<usize> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match Probe(path).deserialize(de) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| l.line()),
    }
}

struct Probe<'p>(&'p [Seg]);

/// Raised on arrival; only its position matters.
const HERE: &str = "here";

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    // Scalars use the default methods, which fail: arriving at a scalar, or
    // being unable to go further down, both mean "this is the node".

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Seg::Key(want), rest)) = self.0.split_first() {
            while let Some(key) = map.next_key::<Value>()? {
                if key.as_str() == Some(want.as_str()) {
                    return map.next_value_seed(Probe(rest));
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(de::Error::custom(HERE))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some((Seg::Index(want), rest)) = self.0.split_first() {
            let mut i = 0;
            loop {
                if i == *want {
                    return match seq.next_element_seed(Probe(rest))? {
                        Some(()) => Ok(()),
                        None => Err(de::Error::custom(HERE)),
                    };
                }
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                i += 1;
            }
        }
        Err(de::Error::custom(HERE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_locate_their_line() {
        let p = parse_path("cis[3].depends_on[1]");
        assert_eq!(
            p,
            vec![
                Seg::Key("cis".into()),
                Seg::Index(3),
                Seg::Key("depends_on".into()),
                Seg::Index(1)
            ]
        );
        assert_eq!(render_path(&p), "cis[3].depends_on[1]");
        let text = "cis:\n  - id: a\n  - id: b\n    depends_on:\n      - a\n      - c\n";
        assert_eq!(locate(text, &parse_path("cis[1].depends_on[1]")), Some(6));
        assert_eq!(locate(text, &parse_path("cis[1]")), Some(3));
        // A missing field: the line of the deepest node on the way.
        assert_eq!(locate(text, &parse_path("cis[0].owner")), Some(2));
    }
}
