//! How a batch of [`StoreOp`]s becomes a few multi-row statements. Shared by
//! every backend, so that they all agree on what a batch means.

use super::{AlertRecord, AlertUpdate, StoreOp};
use crate::change::ChangeRecord;
use crate::domain::{Fingerprint, Incident, IncidentId, Problem, TimelineEntry, Timestamp};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;

/// Keep the last element for each key, in first-seen order.
pub(super) fn last_by<'a, T, K: std::hash::Hash + Eq>(
    items: impl Iterator<Item = &'a T>,
    key: impl Fn(&T) -> K,
) -> Vec<&'a T>
where
    T: 'a,
{
    let mut pos: FxHashMap<K, usize> = FxHashMap::default();
    let mut out: Vec<&T> = Vec::new();
    for it in items {
        match pos.entry(key(it)) {
            Entry::Occupied(e) => out[*e.get()] = it,
            Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(it);
            }
        }
    }
    out
}

/// Merge rows with the same key into one, in first-seen order. Counters only
/// grow, so folding with a max gives what applying each row would.
fn merge_by<T, K: std::hash::Hash + Eq>(
    items: impl Iterator<Item = T>,
    key: impl Fn(&T) -> K,
    merge: impl Fn(&mut T, T),
) -> Vec<T> {
    let mut pos: FxHashMap<K, usize> = FxHashMap::default();
    let mut out: Vec<T> = Vec::new();
    for it in items {
        match pos.entry(key(&it)) {
            Entry::Occupied(e) => merge(&mut out[*e.get()], it),
            Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(it);
            }
        }
    }
    out
}

/// A coalesced repeat of one alert: the highest `last_seen` and delivery
/// count any op of the batch gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TouchRow {
    pub fingerprint: Fingerprint,
    pub last_seen: Timestamp,
    pub deliveries: u64,
}

/// Ops of one batch, grouped so that each kind becomes a few multi-row
/// statements. Order between kinds is fixed (incidents, alert inserts, alert
/// updates, links, moves, problems, changes, timeline, counters); within a
/// kind a later op for the same row wins, and counters only ever grow, so the
/// result equals applying the ops one by one. Every row appears once per
/// kind: an `INSERT … ON CONFLICT DO UPDATE` or `UPDATE … FROM` that meets a
/// row twice would fail (PostgreSQL) or pick one arbitrarily (SQLite).
#[derive(Default)]
pub(super) struct Grouped<'a> {
    pub incidents: Vec<&'a Incident>,
    pub inserts: Vec<&'a AlertRecord>,
    pub updates: Vec<&'a AlertUpdate>,
    pub links: Vec<(IncidentId, Fingerprint, Timestamp)>,
    pub timeline: Vec<(IncidentId, &'a TimelineEntry)>,
    pub touches: Vec<TouchRow>,
    /// In op order: a chain of merges (1 into 2, then 2 into 3) must run in turn.
    pub moves: Vec<(IncidentId, IncidentId)>,
    pub problems: Vec<&'a Problem>,
    pub set_problem: Vec<(&'a [IncidentId], &'a str)>,
    pub changes: Vec<&'a ChangeRecord>,
    /// In op order (the ids they get are the delivery order).
    pub outbox: Vec<&'a super::OutboxMessage>,
}

pub(super) fn group(ops: &[StoreOp]) -> Grouped<'_> {
    let mut g = Grouped::default();
    let mut incidents = Vec::new();
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    let mut touches = Vec::new();
    let mut problems = Vec::new();
    let mut changes = Vec::new();
    for op in ops {
        match op {
            StoreOp::UpsertIncident(i) => incidents.push(&**i),
            StoreOp::InsertAlert(a) => inserts.push(&**a),
            StoreOp::UpdateAlert(u) => updates.push(&**u),
            StoreOp::LinkAlert {
                incident,
                fingerprint,
                at,
            } => g.links.push((*incident, *fingerprint, *at)),
            StoreOp::Timeline { incident, entry } => g.timeline.push((*incident, entry)),
            StoreOp::TouchAlerts(t) => touches.extend(t.iter().map(|t| TouchRow {
                fingerprint: t.fingerprint,
                last_seen: t.last_seen,
                deliveries: t.deliveries,
            })),
            StoreOp::MoveAlerts { from, to } => g.moves.push((*from, *to)),
            StoreOp::UpsertProblem(p) => problems.push(&**p),
            StoreOp::SetProblem { incidents, problem } => g.set_problem.push((incidents, problem)),
            StoreOp::UpsertChange(c) => changes.push(&**c),
            StoreOp::Outbox(m) => g.outbox.push(&**m),
        }
    }
    g.incidents = last_by(incidents.into_iter(), |i: &Incident| i.id);
    g.inserts = last_by(inserts.into_iter(), |a: &AlertRecord| a.fingerprint);
    g.updates = last_by(updates.into_iter(), |u: &AlertUpdate| u.fingerprint);
    g.touches = merge_by(
        touches.into_iter(),
        |t| t.fingerprint,
        |a, b| {
            a.last_seen = a.last_seen.max(b.last_seen);
            a.deliveries = a.deliveries.max(b.deliveries);
        },
    );
    g.problems = last_by(problems.into_iter(), |p: &Problem| p.id.clone());
    g.changes = last_by(changes.into_iter(), |c: &ChangeRecord| c.id.clone());
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Touch;

    #[test]
    fn counters_fold_to_their_maximum() {
        let touch = |fp, seen, n| Touch {
            fingerprint: Fingerprint(fp),
            last_seen: Timestamp(seen),
            deliveries: n,
        };
        let ops = [
            StoreOp::TouchAlerts(vec![touch(1, 50, 9), touch(2, 10, 1)]),
            StoreOp::TouchAlerts(vec![touch(1, 60, 3)]),
        ];
        let g = group(&ops);
        assert_eq!(
            g.touches,
            vec![
                TouchRow {
                    fingerprint: Fingerprint(1),
                    last_seen: Timestamp(60),
                    deliveries: 9
                },
                TouchRow {
                    fingerprint: Fingerprint(2),
                    last_seen: Timestamp(10),
                    deliveries: 1
                },
            ]
        );
    }
}
