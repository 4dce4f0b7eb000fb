//! Problem management and knowledge, by incident signature (root CI + alert
//! name): N incidents with one signature within a period open a problem
//! record (or link to the open one); a new incident lists its predecessors.

use crate::domain::{IncidentId, Problem, Timestamp};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct ProblemPolicy {
    pub threshold: usize,
    pub period: Duration,
}

impl Default for ProblemPolicy {
    fn default() -> Self {
        ProblemPolicy {
            threshold: 3,
            period: Duration::from_secs(7 * 86_400),
        }
    }
}

/// What recording an incident's signature decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProblemOutcome {
    /// Earlier incidents with this signature, newest first.
    pub similar: Vec<IncidentId>,
    /// The problem this incident now belongs to.
    pub problem: Option<String>,
    /// Set when this call opened the problem: every incident to link to it.
    pub opened: Option<Problem>,
}

#[derive(Debug, Default)]
pub struct ProblemBook {
    history: FxHashMap<String, VecDeque<(Timestamp, IncidentId)>>,
    open: FxHashMap<String, Problem>,
    next: u64,
}

impl ProblemBook {
    /// Restore from stored problems and recent signed incidents.
    pub fn restore(
        &mut self,
        problems: Vec<Problem>,
        signed: Vec<(String, Timestamp, IncidentId)>,
    ) {
        for p in problems {
            if let Some(n) = p.id.strip_prefix("PRB").and_then(|n| n.parse::<u64>().ok()) {
                self.next = self.next.max(n);
            }
            if p.state == "open" {
                self.open.insert(p.signature.clone(), p);
            }
        }
        let mut signed = signed;
        signed.sort_by_key(|(_, t, id)| (*t, *id));
        for (sig, t, id) in signed {
            self.history.entry(sig).or_default().push_back((t, id));
        }
    }

    /// Earlier incidents with this signature (newest first) and the open
    /// problem for it, for a new or re-rooted incident.
    pub fn lookup(
        &self,
        signature: &str,
        exclude: IncidentId,
        limit: usize,
    ) -> (Vec<IncidentId>, Option<String>) {
        let similar = self
            .history
            .get(signature)
            .map(|h| {
                h.iter()
                    .rev()
                    .filter(|(_, i)| *i != exclude)
                    .map(|(_, i)| *i)
                    .take(limit)
                    .collect()
            })
            .unwrap_or_default();
        (similar, self.open.get(signature).map(|p| p.id.clone()))
    }

    /// Record a resolved incident with `signature` (opened at `at`): the
    /// threshold-th one within the period opens a problem with them all.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        signature: &str,
        root_ci: Option<&str>,
        alertname: &str,
        id: IncidentId,
        at: Timestamp,
        policy: ProblemPolicy,
        similar_limit: usize,
    ) -> ProblemOutcome {
        let (similar, _) = self.lookup(signature, id, similar_limit);
        let hist = self.history.entry(signature.to_string()).or_default();
        if !hist.iter().any(|(_, i)| *i == id) {
            hist.push_back((at, id));
        }
        let newest = hist.iter().map(|(t, _)| *t).max().unwrap_or(at);
        let cutoff = newest.saturating_sub(policy.period);
        while hist.front().is_some_and(|(t, _)| *t < cutoff) {
            hist.pop_front();
        }
        let mut out = ProblemOutcome {
            similar,
            ..ProblemOutcome::default()
        };
        if let Some(p) = self.open.get_mut(signature) {
            if !p.incidents.contains(&id) {
                p.incidents.push(id);
            }
            out.problem = Some(p.id.clone());
            return out;
        }
        if policy.threshold > 0 && hist.len() >= policy.threshold {
            self.next += 1;
            let p = Problem {
                id: format!("PRB{:07}", self.next),
                signature: signature.to_string(),
                root_ci: root_ci.map(Box::from),
                alertname: alertname.to_string(),
                state: "open".into(),
                opened_at: at,
                incidents: hist.iter().map(|(_, i)| *i).collect(),
            };
            out.problem = Some(p.id.clone());
            out.opened = Some(p.clone());
            self.open.insert(signature.to_string(), p);
        }
        out
    }

    pub fn problem(&self, signature: &str) -> Option<&Problem> {
        self.open.get(signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn third_recurrence_within_a_week_opens_a_problem() {
        let mut b = ProblemBook::default();
        let pol = ProblemPolicy::default();
        let r1 = b.record(
            "pg-1|PostgresDown",
            Some("pg-1"),
            "PostgresDown",
            IncidentId(1),
            Timestamp(0),
            pol,
            5,
        );
        assert_eq!((r1.similar.len(), r1.problem.as_deref()), (0, None));
        let r2 = b.record(
            "pg-1|PostgresDown",
            Some("pg-1"),
            "PostgresDown",
            IncidentId(2),
            Timestamp(2 * DAY),
            pol,
            5,
        );
        assert_eq!(r2.similar, vec![IncidentId(1)]);
        assert!(r2.problem.is_none());
        // Another signature does not count.
        b.record(
            "pg-2|PostgresDown",
            Some("pg-2"),
            "PostgresDown",
            IncidentId(3),
            Timestamp(3 * DAY),
            pol,
            5,
        );
        let r4 = b.record(
            "pg-1|PostgresDown",
            Some("pg-1"),
            "PostgresDown",
            IncidentId(4),
            Timestamp(4 * DAY),
            pol,
            5,
        );
        let p = r4.opened.expect("third one opens the problem");
        assert_eq!(p.id, "PRB0000001");
        assert_eq!(
            p.incidents,
            vec![IncidentId(1), IncidentId(2), IncidentId(4)]
        );
        assert_eq!(r4.similar, vec![IncidentId(2), IncidentId(1)]);
        // A fourth links to the open problem.
        let r5 = b.record(
            "pg-1|PostgresDown",
            Some("pg-1"),
            "PostgresDown",
            IncidentId(5),
            Timestamp(5 * DAY),
            pol,
            5,
        );
        assert_eq!(
            (r5.problem.as_deref(), r5.opened),
            (Some("PRB0000001"), None)
        );
    }

    #[test]
    fn recurrences_spread_beyond_the_period_do_not() {
        let mut b = ProblemBook::default();
        let pol = ProblemPolicy::default();
        for (i, day) in [0, 8, 16, 24].into_iter().enumerate() {
            let r = b.record(
                "x|A",
                None,
                "A",
                IncidentId(i as i64),
                Timestamp(day * DAY),
                pol,
                5,
            );
            assert!(r.problem.is_none(), "incident {i}");
        }
    }
}
