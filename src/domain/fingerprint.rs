//! Alertmanager's alert fingerprint, so that every source dedups the same way
//! Alertmanager does and our ids match the ones operators see in its UI.

use super::LabelSet;
use serde::{Deserialize, Serialize};
use std::fmt;

const FNV_OFFSET: u64 = 14_695_981_039_346_656_037;
const FNV_PRIME: u64 = 1_099_511_628_211;
const SEPARATOR: u8 = 0xff;

/// 64-bit FNV-1a fingerprint of a label set, shown as `%016x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

#[inline]
fn add(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

impl Fingerprint {
    /// `model.LabelSet.Fingerprint()`: names sorted bytewise, each name and
    /// value followed by 0xFF. `LabelSet` is kept sorted, so no sort here.
    pub fn of_labels(labels: &LabelSet) -> Fingerprint {
        Self::of_sorted_pairs(labels.iter())
    }

    /// Same function over pairs the caller guarantees are sorted by name.
    pub fn of_sorted_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Fingerprint {
        let mut h = FNV_OFFSET;
        for (name, value) in pairs {
            h = add(h, name.as_bytes());
            h = add(h, &[SEPARATOR]);
            h = add(h, value.as_bytes());
            h = add(h, &[SEPARATOR]);
        }
        Fingerprint(h)
    }

    /// Fingerprint of an arbitrary dedup key (e.g. a PagerDuty `dedup_key`).
    pub fn of_key(key: &str) -> Fingerprint {
        Self::of_sorted_pairs(std::iter::once(("dedup_key", key)))
    }

    pub fn parse(s: &str) -> Option<Fingerprint> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Fingerprint::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("fingerprint must be 16 hex digits, got {s:?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(pairs: &[(&str, &str)]) -> String {
        let ls: LabelSet = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Fingerprint::of_labels(&ls).to_string()
    }

    /// Vectors from prometheus/common `model` (signature_test.go,
    /// fingerprinting_test.go), the definition Alertmanager uses.
    #[test]
    fn matches_prometheus_common_vectors() {
        assert_eq!(
            Fingerprint::of_labels(&LabelSet::default()).0,
            14695981039346656037
        );
        let v = Fingerprint::of_labels(
            &[("name", "garland, briggs"), ("fear", "love is not enough")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(v.0, 5799056148416392346);
    }

    /// Fingerprints Alertmanager itself put in the example webhook bodies.
    #[test]
    fn matches_alertmanager_webhook_fingerprints() {
        assert_eq!(
            fp(&[
                ("alertname", "PostgresDown"),
                ("severity", "critical"),
                ("env", "prod"),
                ("cluster", "pg-3"),
                ("job", "postgres"),
                ("instance", "pg-3-a:9187"),
            ]),
            "f37b2fd64d4f6ce3"
        );
    }

    #[test]
    fn label_order_does_not_matter() {
        assert_eq!(fp(&[("a", "1"), ("b", "2")]), fp(&[("b", "2"), ("a", "1")]));
        assert_ne!(fp(&[("a", "1"), ("b", "2")]), fp(&[("a", "12")]));
    }

    #[test]
    fn parse_roundtrip() {
        let f = Fingerprint(0x00ab_cdef_0123_4567);
        assert_eq!(f.to_string(), "00abcdef01234567");
        assert_eq!(Fingerprint::parse("00abcdef01234567"), Some(f));
        assert_eq!(Fingerprint::parse("abc"), None);
        assert_eq!(Fingerprint::parse("zzzzzzzzzzzzzzzz"), None);
    }
}
