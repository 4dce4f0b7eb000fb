//! Rejected alerts, kept where an operator can read them: a body's bad
//! alerts are refused alone (their batch-mates go on), and since the sender
//! may never look at the answer (Alertmanager does not), what was refused
//! and why must not vanish. A bounded ring in memory, newest first, with a
//! running total; each rejection is also counted and logged.

use crate::domain::{Source, Timestamp};
use crate::normalize::{RejectReason, Rejected};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// One rejected alert, as `GET /api/v1/alerts/rejected` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quarantined {
    pub at: Timestamp,
    pub source: Source,
    /// Where it came from beyond the source: a Kafka topic, partition and
    /// offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub index: usize,
    pub field: String,
    pub error: String,
    pub reason: RejectReason,
    pub alert: serde_json::Value,
}

pub struct Quarantine {
    capacity: usize,
    items: Mutex<VecDeque<Quarantined>>,
    total: AtomicU64,
}

impl Quarantine {
    pub fn new(capacity: usize) -> Quarantine {
        Quarantine {
            capacity,
            items: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            total: AtomicU64::new(0),
        }
    }

    /// Keep `rejected` (the oldest kept ones make room).
    pub fn record(
        &self,
        at: Timestamp,
        source: Source,
        origin: Option<&str>,
        rejected: &[Rejected],
    ) {
        if rejected.is_empty() {
            return;
        }
        self.total
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        if self.capacity == 0 {
            return;
        }
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        for r in rejected {
            if items.len() == self.capacity {
                items.pop_back();
            }
            items.push_front(Quarantined {
                at,
                source,
                origin: origin.map(str::to_string),
                index: r.index,
                field: r.field.clone(),
                error: r.error.clone(),
                reason: r.reason,
                alert: r.alert.clone(),
            });
        }
    }

    /// The newest `limit` kept, and how many were rejected since start.
    pub fn list(&self, limit: usize) -> (Vec<Quarantined>, u64) {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        (
            items.iter().take(limit).cloned().collect(),
            self.total.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(i: usize) -> Rejected {
        Rejected {
            index: i,
            field: format!("alerts[{i}].labels"),
            error: "e".into(),
            reason: RejectReason::Limit,
            alert: serde_json::Value::Null,
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_all() {
        let q = Quarantine::new(2);
        q.record(Timestamp(1), Source::Api, None, &[r(0), r(1), r(2)]);
        let (items, total) = q.list(10);
        assert_eq!(total, 3);
        assert_eq!(items.iter().map(|i| i.index).collect::<Vec<_>>(), [2, 1]);
        let none = Quarantine::new(0);
        none.record(Timestamp(1), Source::Api, None, &[r(0)]);
        assert_eq!(none.list(10), (Vec::new(), 1));
    }
}
