//! When destinations first hear of an incident: after its settle delay
//! (`outbound.settle`, by destination and priority), if it still stands
//! then. A storm's dependents open incidents before its root alerts (or
//! before enough of them alert for the root to be inferred); those are
//! merged into the cause's incident within seconds, and announcing each
//! the moment it opened would page once per dependent. Waiting the delay
//! out, only the incident that remains is announced, once.
//!
//! Each destination is a bit in [`Announcing::left`]. Without
//! destinations nothing is tracked, except by `incidentd replay`
//! (`EngineConfig::count_pages`): one implicit channel with the global
//! delay stands in, so that its summary can tell what would have paged.
//! Decisions run on engine time, in time order with auto-resolves
//! (see [`Engine::settle_due`]), and are stored with the incident
//! ([`Incident::unannounced`]) so that a restart or a handover resumes them.

use super::Engine;
use crate::domain::outbox::{Destination, Settle};
use crate::domain::{Incident, IncidentId, Pending, Timestamp, Unannounced};
use std::time::Duration;

/// An incident some destination has not heard of yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Announcing {
    /// Engine time its delay started (it opened).
    pub since: Timestamp,
    /// Destinations (bits, in configuration order) not told yet.
    pub left: u64,
    /// Some destination has been told.
    pub told: bool,
    /// Its delay ended while it did not stand (counted once).
    pub withheld: bool,
    /// When it was last queued for (an incident updated many times in
    /// its delay is queued once, not once per update).
    pub queued: Timestamp,
}

/// When incidents are next looked at. Engine time only grows and most
/// incidents wait the same delay, so entries mostly arrive in due order:
/// those go to a plain queue (16 bytes each, no tree nodes: a stream of
/// new incidents keeps the last delay's worth of them); the rest (other
/// priorities' delays, re-checks) to an ordered set.
#[derive(Default)]
pub(super) struct DueQueue {
    fifo: std::collections::VecDeque<(Timestamp, IncidentId)>,
    sorted: std::collections::BTreeSet<(Timestamp, IncidentId)>,
}

impl DueQueue {
    pub fn insert(&mut self, e: (Timestamp, IncidentId)) {
        if self.fifo.back().is_none_or(|b| *b <= e) {
            self.fifo.push_back(e);
        } else {
            self.sorted.insert(e);
        }
    }

    pub fn first(&self) -> Option<(Timestamp, IncidentId)> {
        match (self.fifo.front(), self.sorted.first()) {
            (Some(a), Some(b)) => Some(*a.min(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    pub fn pop_first(&mut self) -> Option<(Timestamp, IncidentId)> {
        match (self.fifo.front(), self.sorted.first()) {
            (Some(a), Some(b)) if b < a => self.sorted.pop_first(),
            (Some(_), _) => self.fifo.pop_front(),
            (None, _) => self.sorted.pop_first(),
        }
    }

    /// Drop what memory a burst left behind once it has drained.
    pub fn shrink(&mut self) {
        if self.fifo.capacity() > 1024 && self.fifo.len() < self.fifo.capacity() / 4 {
            self.fifo.shrink_to(self.fifo.len() * 2);
        }
    }
}

/// The delay of channel `k`: destination `k`'s, or without destinations
/// the global one.
fn settle_of(dests: &[Destination], global: Settle, k: usize) -> Settle {
    dests.get(k).map_or(global, |d| d.settle)
}

fn all_bits(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Announcing it now would page for something: active, not merged away,
/// and an alert still firing (one whose alerts all cleared within its
/// delay, a blip, waits for its auto-resolve, or for a re-fire, which
/// announces it).
fn stands(t: &super::Tracked) -> bool {
    t.inc.state.is_active() && t.inc.links.merged_into.is_none() && t.firing > 0
}

impl Engine {
    /// A new incident opened at engine time `now`: every destination is
    /// still to hear of it (those with no delay do in this batch).
    pub(super) fn start_announcing(&mut self, id: IncidentId, now: Timestamp) {
        if self.cfg.outbound.is_empty() && !self.cfg.count_pages {
            return;
        }
        let n = self.cfg.outbound.len().max(1);
        self.announcing.insert(
            id,
            Announcing {
                since: now,
                left: all_bits(n),
                told: false,
                withheld: false,
                queued: Timestamp::MIN,
            },
        );
    }

    /// Resume what an incident read from the store was still waiting for.
    pub(super) fn resume_announcing(&mut self, inc: &Incident) {
        let Some(u) = inc.unannounced.as_deref() else {
            return;
        };
        let mut left = 0u64;
        for (k, d) in self.cfg.outbound.iter().enumerate() {
            if u.destinations.iter().any(|p| p.destination == d.name) {
                left |= 1 << k;
            }
        }
        if left == 0 {
            return;
        }
        self.announcing.insert(
            inc.id,
            Announcing {
                since: u.since,
                left,
                told: left != all_bits(self.cfg.outbound.len()),
                withheld: u.withheld,
                queued: u.since,
            },
        );
        // Looked at on the first due check: its delays may have ended
        // while no instance ran.
        self.announce_due.insert((u.since, inc.id));
    }

    /// `from` was merged into `into`: the cause started with the older,
    /// so the survivor's delay does too (unless it was announced already).
    pub(super) fn merge_announcing(&mut self, from: IncidentId, into: IncidentId) {
        let Some(since) = self.announcing.get(&from).map(|a| a.since) else {
            return;
        };
        if let Some(a) = self.announcing.get_mut(&into)
            && !a.told
            && since < a.since
        {
            a.since = since;
            a.queued = since;
            self.announce_due.insert((since, into));
        }
    }

    /// Decide, at engine time `self.clock`, which destinations hear of
    /// `id` now for the first time (bits), and keep its stored
    /// `unannounced` and its next check in step; true beside when the
    /// stored value changed (the incident must be written).
    pub(super) fn announce(&mut self, id: IncidentId) -> (u64, bool) {
        let Some(mut a) = self.announcing.get(&id).copied() else {
            return (0, false);
        };
        let Some(t) = self.incidents.get(&id) else {
            self.announcing.remove(&id);
            return (0, false);
        };
        let now = self.clock;
        let standing = stands(t);
        let resolved = !t.inc.state.is_active();
        let merged = t.inc.links.merged_into.is_some();
        let prio = t.inc.priority;
        let window = self.cfg.correlation_window;
        // Borrowed apart from `self`, which the checks below change.
        let dests = self.cfg.outbound.clone();
        let global = self.cfg.settle;
        let channels = dests.len().max(1);
        let delay = |k: usize| settle_of(&dests, global, k).of(prio);
        let waiting = |k: usize| a.left & (1 << k) != 0;
        // Another incident nearby may yet join this one under an inferred
        // root (one more alerting dependent away): the younger ones wait
        // for it, up to the correlation window, after which nothing joins.
        let hold = standing
            && now < a.since.saturating_add(window)
            && (0..channels).any(|k| {
                let d = delay(k);
                waiting(k) && !d.is_zero() && a.since.saturating_add(d) <= now
            })
            && self.forming_with_older(id);
        let due = |k: usize| {
            let d = delay(k);
            let plain = a.since.saturating_add(d);
            if hold && !d.is_zero() {
                plain.max(a.since.saturating_add(window))
            } else {
                plain
            }
        };
        let mut told_now = 0u64;
        let mut next: Option<Timestamp> = None;
        let mut soonest = |at: Timestamp| next = Some(next.map_or(at, |x: Timestamp| x.min(at)));
        let mut ended = false;
        for k in (0..channels).filter(|&k| waiting(k)) {
            let d = delay(k);
            ended |= a.since.saturating_add(d) <= now;
            if hold && !d.is_zero() {
                // Looked at again soon: the group may form or dissolve.
                soonest(now.saturating_add(d.max(Duration::from_secs(1))));
            }
            let due = due(k);
            if due <= now && standing {
                told_now |= 1 << k;
            } else if due > now {
                soonest(due);
            }
        }
        a.left &= !told_now;
        if told_now != 0 && !a.told {
            a.told = true;
            self.stats.announcements[0] += 1;
            if self.cfg.count_pages {
                self.page_delays.push(now.since(a.since));
            }
        }
        // Merged away (for good), or its delay ended and it resolved: never
        // told (a reopen still tells: it stands again).
        if (merged || (ended && resolved)) && !a.withheld {
            a.withheld = true;
            if !a.told {
                self.stats.announcements[1] += 1;
            }
        }
        // What the incident stores: rebuilt only when it differs (most
        // calls change nothing, and this runs for every batch an incident
        // waiting for its announcement is in).
        let keep = !dests.is_empty() && a.left != 0;
        let pending = (0..channels).filter(|&k| a.left & (1 << k) != 0);
        let same = match self
            .incidents
            .get(&id)
            .and_then(|t| t.inc.unannounced.as_deref())
        {
            None => !keep,
            Some(u) => {
                keep && u.since == a.since
                    && u.withheld == a.withheld
                    && u.destinations.len() == pending.clone().count()
                    && u.destinations
                        .iter()
                        .zip(pending.clone())
                        .all(|(p, k)| p.at == due(k) && p.destination == dests[k].name)
            }
        };
        let stored = (!same && keep).then(|| {
            Box::new(Unannounced {
                since: a.since,
                destinations: pending
                    .map(|k| Pending {
                        destination: dests[k].name.clone(),
                        at: due(k),
                    })
                    .collect(),
                withheld: a.withheld,
            })
        });
        // A resolved one is looked at when its delay ends (withheld, unless
        // it reopened); a merged one never again.
        if let Some(n) = next
            && !merged
            && n != a.queued
        {
            a.queued = n;
            self.announce_due.insert((n, id));
        }
        if a.left == 0 {
            self.announcing.remove(&id);
        } else {
            self.announcing.insert(id, a);
        }
        if !same && let Some(t) = self.incidents.get_mut(&id) {
            t.inc.unannounced = stored;
        }
        (told_now, !same)
    }

    /// Does `id` (not inferred, rooted at an alerting CI) look like one of
    /// a group still forming around a CI without alerts, with an older
    /// incident in it?
    fn forming_with_older(&mut self, id: IncidentId) -> bool {
        let Some(t) = self.incidents.get(&id) else {
            return false;
        };
        if t.inc.root_inferred {
            return false;
        }
        let (Some(ci), at) = (t.root.get(), t.first) else {
            return false;
        };
        match self.infer(ci, at) {
            crate::correlate::topology::Inference::Forming { incidents } => {
                incidents.iter().any(|o| *o < id)
            }
            _ => false,
        }
    }

    /// Check the incidents whose next announcement check is due by `now`,
    /// at most `limit`; how many were checked (stale entries not counted).
    pub(super) fn announce_due_by(&mut self, now: Timestamp, limit: usize) -> usize {
        let mut n = 0;
        while let Some((due, id)) = self.announce_due.first() {
            if due > now || n == limit {
                break;
            }
            self.announce_due.pop_first();
            if self.announcing.contains_key(&id) {
                n += 1;
                let (bits, changed) = self.announce(id);
                if bits != 0 {
                    *self.told_now.entry(id).or_default() |= bits;
                }
                if bits != 0 || changed {
                    self.upserts.insert(id);
                }
            }
        }
        n
    }

    /// The destinations an incident's batch tells: `(first time, waiting)`
    /// as bits. Destinations in neither hear what changed.
    pub(super) fn announce_for_batch(&mut self, id: IncidentId) -> (u64, u64) {
        let mut first = self.told_now.remove(&id).unwrap_or(0);
        if self.announcing.contains_key(&id) {
            first |= self.announce(id).0;
        }
        let waiting = self.announcing.get(&id).map_or(0, |a| a.left);
        (first, waiting)
    }

    /// How long each announced incident waited for its first
    /// announcement (kept with `count_pages` only: replay's summary).
    pub fn page_delays(&self) -> &[Duration] {
        &self.page_delays
    }

    /// The settle delay's longest wait: replay runs the clock this far
    /// past the stream so that every announcement is decided.
    pub fn announce_horizon(&self) -> Duration {
        (0..self.cfg.outbound.len().max(1))
            .map(|k| settle_of(&self.cfg.outbound, self.cfg.settle, k).max())
            .max()
            .unwrap_or_default()
            .max(self.cfg.correlation_window)
    }
}
