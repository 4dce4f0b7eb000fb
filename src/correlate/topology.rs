//! Topology correlation (DESIGN §3): an alert on a CI joins the active
//! incident whose root is upstream of it, and becomes the new root of
//! incidents downstream of it, within the correlation window (event time).
//! Pure: the engine passes the active incidents in, gets a placement out.

use crate::cmdb::{CiIdx, Cmdb, Walk};
use crate::domain::{IncidentId, Timestamp};
use std::time::Duration;

/// What topology correlation needs to know of an active incident.
#[derive(Debug, Clone)]
pub struct IncidentTopo<'a> {
    pub id: IncidentId,
    pub root: Option<CiIdx>,
    pub cis: &'a [CiIdx],
    /// Earliest and latest start of its alerts (event time).
    pub first: Timestamp,
    pub last: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Join `target`; fold `merge` (incidents downstream of the alert's CI)
    /// into it. `reroot`: the alert's CI becomes the root cause.
    Join {
        target: IncidentId,
        merge: Vec<IncidentId>,
        reroot: bool,
        why: Why,
    },
    /// Nothing related in the window: open a new incident.
    Open,
}

/// Why an alert was placed where it was, for the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The CI already has alerts in the incident.
    SameCi,
    /// The incident's root is upstream of the alert's CI.
    DependsOnRoot { root: CiIdx },
    /// The alert's CI is upstream of the incident's root.
    UpstreamOfRoot { old_root: CiIdx },
}

/// Decide where an alert on `ci`, starting at `t`, belongs.
pub fn place<'a>(
    cmdb: &Cmdb,
    ci: CiIdx,
    t: Timestamp,
    window: Duration,
    active: impl Iterator<Item = IncidentTopo<'a>>,
) -> Placement {
    let mut same: Vec<IncidentId> = Vec::new();
    let mut below_root: Vec<(IncidentId, CiIdx)> = Vec::new();
    let mut above_root: Vec<(IncidentId, CiIdx)> = Vec::new();
    // Incidents whose root may be related to `ci`. Levels fall strictly along
    // depends_on, so a root on `ci`'s level is neither up- nor downstream of it.
    let level = cmdb.level(ci);
    let mut related: Vec<(IncidentId, CiIdx)> =
        Vec::with_capacity(active.size_hint().1.unwrap_or(0).min(256));
    // Lowest level of a root below `ci`, highest of one above it.
    let (mut lowest, mut highest) = (u32::MAX, 0);
    for inc in active {
        let near = inc.first.saturating_sub(window) <= t && t <= inc.last.saturating_add(window);
        if !near {
            continue;
        }
        let Some(root) = inc.root else { continue };
        if inc.cis.contains(&ci) || root == ci {
            same.push(inc.id);
            continue;
        }
        let l = cmdb.level(root);
        if l != level {
            lowest = lowest.min(l);
            highest = highest.max(l);
            related.push((inc.id, root));
        }
    }
    if !related.is_empty() {
        // One walk each way from `ci` (only through levels a related root can
        // be reached by) answers every incident. Downstream of a CI that much
        // depends on can be large: past a budget, ask per root instead.
        let mut up = Walk::default();
        let mut down = Walk::default();
        if lowest < level {
            cmdb.reach(ci, true, lowest, usize::MAX, &mut up);
        }
        let down_complete =
            highest > level && cmdb.reach(ci, false, highest, 64 + 16 * related.len(), &mut down);
        let mut scratch = Walk::default();
        for (id, root) in related {
            if cmdb.level(root) < level {
                if up.contains(root) {
                    below_root.push((id, root));
                }
            } else if down_complete {
                if down.contains(root) {
                    above_root.push((id, root));
                }
            } else if cmdb.is_upstream_with(ci, root, &mut scratch) {
                above_root.push((id, root));
            }
        }
    }
    // Deterministic choice: the oldest incident wins (it was paged first).
    same.sort();
    below_root.sort();
    above_root.sort();
    let merge_above = |exclude: IncidentId| -> Vec<IncidentId> {
        above_root
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != exclude)
            .collect()
    };
    if let Some(&target) = same.first() {
        return Placement::Join {
            target,
            merge: merge_above(target),
            reroot: false,
            why: Why::SameCi,
        };
    }
    if let Some(&(target, root)) = below_root.first() {
        return Placement::Join {
            target,
            merge: merge_above(target),
            reroot: false,
            why: Why::DependsOnRoot { root },
        };
    }
    if let Some(&(target, old_root)) = above_root.first() {
        return Placement::Join {
            target,
            merge: merge_above(target),
            reroot: true,
            why: Why::UpstreamOfRoot { old_root },
        };
    }
    Placement::Open
}
