//! When destinations first hear of an incident: after its settle delay
//! (`outbound.settle`, by destination and priority), if it still stands
//! then. A storm's dependents open incidents before its root alerts (or
//! before enough of them alert for the root to be inferred); those are
//! merged into the cause's incident within seconds, and announcing each
//! the moment it opened would page once per dependent. Waiting the delay
//! out, only the incident that remains is announced, once.
//!
//! Each destination is a bit in [`Announcing::left`]; without
//! destinations one implicit channel with the global delay stands in, so
//! that `incidentd replay` and the counters can tell what would have paged.
//! Decisions run on engine time, in time order with auto-resolves
//! (see [`Engine::settle_due`]), and are stored with the incident
//! ([`Incident::unannounced`]) so that a restart or a handover resumes them.

use super::Engine;
use crate::domain::outbox::Settle;
use crate::domain::{Incident, IncidentId, Pending, ThinVec, Timestamp, Unannounced};
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

/// The delay of each channel: the destinations', in configuration order,
/// or the global one.
fn settles(engine: &Engine) -> Vec<Settle> {
    if engine.cfg.outbound.is_empty() {
        vec![engine.cfg.settle]
    } else {
        engine.cfg.outbound.iter().map(|d| d.settle).collect()
    }
}

fn all_bits(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Merged away or resolved: announcing it now would page for nothing.
fn stands(inc: &Incident) -> bool {
    inc.state.is_active() && inc.links.merged_into.is_none()
}

impl Engine {
    /// A new incident opened at engine time `now`: every destination is
    /// still to hear of it (those with no delay do in this batch).
    pub(super) fn start_announcing(&mut self, id: IncidentId, now: Timestamp) {
        if self.cfg.outbound.is_empty() && !self.cfg.count_pages {
            return;
        }
        let n = settles(self).len();
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
        let standing = stands(&t.inc);
        let merged = t.inc.links.merged_into.is_some();
        let prio = t.inc.priority;
        let window = self.cfg.correlation_window;
        let settles = settles(self);
        let waiting = |k: usize| a.left & (1 << k) != 0;
        // Another incident nearby may yet join this one under an inferred
        // root (one more alerting dependent away): the younger ones wait
        // for it, up to the correlation window, after which nothing joins.
        let hold = standing
            && now < a.since.saturating_add(window)
            && settles.iter().enumerate().any(|(k, s)| {
                let d = s.of(prio);
                waiting(k) && !d.is_zero() && a.since.saturating_add(d) <= now
            })
            && self.forming_with_older(id);
        let mut told_now = 0u64;
        let mut next: Option<Timestamp> = None;
        let soonest = |n: &mut Option<Timestamp>, at: Timestamp| {
            *n = Some(n.map_or(at, |x| x.min(at)));
        };
        let mut pending: ThinVec<Pending> = ThinVec::new();
        let mut ended = false;
        for (k, settle) in settles.iter().enumerate() {
            if !waiting(k) {
                continue;
            }
            let delay = settle.of(prio);
            let mut due = a.since.saturating_add(delay);
            ended |= due <= now;
            if hold && !delay.is_zero() {
                due = due.max(a.since.saturating_add(window));
                // Looked at again soon: the group may form or dissolve.
                soonest(
                    &mut next,
                    now.saturating_add(delay.max(Duration::from_secs(1))),
                );
            }
            if due <= now && standing {
                told_now |= 1 << k;
                continue;
            }
            if due > now {
                soonest(&mut next, due);
            }
            if let Some(d) = self.cfg.outbound.get(k) {
                pending.push(Pending {
                    destination: d.name.clone(),
                    at: due,
                });
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
        // Merged away (for good), or its delay ended while resolved: never
        // told (a reopen still tells: it stands again).
        if (merged || ended) && !standing && !a.withheld {
            a.withheld = true;
            if !a.told {
                self.stats.announcements[1] += 1;
            }
        }
        // A resolved one is looked at when its delay ends (withheld, unless
        // it reopened); a merged one never again.
        if let Some(n) = next
            && !merged
            && n != a.queued
        {
            a.queued = n;
            self.announce_due.insert((n, id));
        }
        let stored = (!self.cfg.outbound.is_empty() && a.left != 0).then(|| {
            Box::new(Unannounced {
                since: a.since,
                destinations: pending,
                withheld: a.withheld,
            })
        });
        if a.left == 0 {
            self.announcing.remove(&id);
        } else {
            self.announcing.insert(id, a);
        }
        let mut changed = false;
        if let Some(t) = self.incidents.get_mut(&id)
            && t.inc.unannounced != stored
        {
            t.inc.unannounced = stored;
            changed = true;
        }
        (told_now, changed)
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
    /// at most `limit`; true when more are due.
    pub(super) fn announce_due_by(&mut self, now: Timestamp, limit: usize) -> (usize, bool) {
        let mut n = 0;
        while let Some((due, id)) = self.announce_due.first() {
            if due > now {
                return (n, false);
            }
            if n == limit {
                return (n, true);
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
        (n, false)
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
        settles(self)
            .iter()
            .map(Settle::max)
            .max()
            .unwrap_or_default()
            .max(self.cfg.correlation_window)
    }
}
