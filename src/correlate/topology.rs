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

/// When a CI that does not alert may be named the root cause of alerts on
/// CIs that depend on it (`correlation.infer_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferSettings {
    /// Distinct alerting CIs it must explain, at least (0: never infer).
    pub min_dependents: usize,
    /// Share of its direct dependents that must have an alerting CI at or
    /// below them, at least.
    pub min_share: f64,
}

impl Default for InferSettings {
    fn default() -> Self {
        InferSettings {
            min_dependents: 2,
            min_share: 0.5,
        }
    }
}

/// What alerts on CIs with no alerting CI upstream of them say about a CI
/// that does not alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Inference {
    /// A CI without alerts explains the new alert's CI and others'.
    Root(Inferred),
    /// Unrelated CIs (`candidates`) explain the same alerts equally well:
    /// no root is named.
    Ambiguous {
        candidates: Vec<CiIdx>,
        alerting: Vec<CiIdx>,
    },
    /// No confident explanation yet, but one more alerting dependent
    /// would make one: these incidents (oldest first) may yet be joined
    /// under it (the settle delay of announcements waits for that).
    Forming {
        incidents: Vec<IncidentId>,
    },
    Nothing,
}

/// An inferred root cause: `root` explains the new alert's CI and the
/// alerting CIs of `incidents` (oldest first, never empty): `alerting`
/// distinct CIs in all, under `covered` of its `dependents` direct
/// dependents.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    pub root: CiIdx,
    pub incidents: Vec<IncidentId>,
    pub alerting: Vec<CiIdx>,
    pub covered: usize,
    pub dependents: usize,
}

/// How many of `root`'s direct dependents have an alerting CI at or below
/// them, of how many: the share of its blast radius visibly hurt.
pub fn hurt_dependents(
    cmdb: &Cmdb,
    root: CiIdx,
    alerting: &[CiIdx],
    mut upstream: impl FnMut(CiIdx) -> std::sync::Arc<[CiIdx]>,
) -> (usize, usize) {
    let below: Vec<std::sync::Arc<[CiIdx]>> = alerting.iter().map(|&a| upstream(a)).collect();
    let dependents = cmdb.dependents(root);
    let covered = dependents
        .iter()
        .filter(|&&d| {
            alerting
                .iter()
                .zip(&below)
                .any(|(&a, up)| a == d || up.contains(&d))
        })
        .count();
    (covered, dependents.len())
}

/// A candidate explaining more alerting CIs than the leading one, but not
/// confidently, holds the inference up while its share of hurt dependents
/// is at least this fraction of the leader's. Chosen on generated storms
/// (32 causes each, silent and alerting roots, host failures, concurrent
/// lone failures): 0.45–0.5 scored best; 0 (any better explanation waits)
/// and never waiting both split more causes.
const DEFER_SHARE_RATIO: f64 = 0.5;

/// A candidate not confident yet is a group forming (its younger
/// incidents' first announcements wait for it, up to the window) when one
/// more hurt dependent would make it confident, or when this fraction of
/// the share it needs is hurt already (2 of a database's 10 apps at the
/// default 0.5). A hub few of whose many dependents alert is not. Chosen
/// on the 40 generated storms and the scenarios (`BENCHMARKS.md` entry 23):
/// 0.3 and below page exactly once per cause on all 45, 0.35 and above
/// page 20–208 times too often; 0.25 keeps a step of margin and holds 19
/// of 1,764 pages beyond 30 s.
const FORMING_SHARE_RATIO: f64 = 0.25;

/// What another incident says: the alerting CIs it holds (its root, or,
/// when its root is inferred, the CIs whose alerts led there) and the CIs
/// upstream of all of them.
struct Evidence {
    id: IncidentId,
    cis: Vec<CiIdx>,
    common: Vec<CiIdx>,
}

/// Infer the root cause of an alert on `ci` at `t` that relates to no
/// active incident (`place` said [`Placement::Open`]): the nearest CI
/// upstream of `ci` that is also upstream of the alerting CIs of other
/// incidents within the window, when it explains at least
/// `min_dependents` alerting CIs and `min_share` of its direct dependents
/// have an alerting CI at or below them. Among such CIs the one explaining
/// the most alerting CIs wins; a CI upstream of another that explains the
/// same ones is a worse explanation (a host under a cluster); one that
/// explains more but is not confident yet defers the choice; two unrelated
/// confident ones explaining the same are [`Inference::Ambiguous`]. An
/// incident whose root is inferred (`true` beside it) counts by the CIs
/// whose alerts it holds, so a later, better explanation takes it over.
/// `upstream` gives what a CI depends on (the engine caches it: an alert
/// that opens an incident asks about every incident nearby).
pub fn infer<'a>(
    cmdb: &Cmdb,
    ci: CiIdx,
    t: Timestamp,
    window: Duration,
    settings: InferSettings,
    active: impl Iterator<Item = (IncidentTopo<'a>, bool)>,
    mut upstream: impl FnMut(CiIdx) -> std::sync::Arc<[CiIdx]>,
) -> Inference {
    if settings.min_dependents < 2 {
        return Inference::Nothing;
    }
    let ups = upstream(ci);
    if ups.is_empty() {
        return Inference::Nothing;
    }
    // A CI at or above the highest of them has none of them upstream.
    let top = ups.iter().map(|&u| cmdb.level(u)).min().unwrap_or(0);
    let mut evidence: Vec<Evidence> = Vec::new();
    for (inc, inferred) in active {
        let near = inc.first.saturating_sub(window) <= t && t <= inc.last.saturating_add(window);
        let Some(root) = inc.root else { continue };
        if !near || root == ci {
            continue;
        }
        let cis: Vec<CiIdx> = if inferred {
            inc.cis.iter().copied().filter(|&c| c != root).collect()
        } else {
            vec![root]
        };
        if cis.is_empty() || cis.iter().any(|&c| c == ci || cmdb.level(c) <= top) {
            continue;
        }
        // Most incidents nearby share nothing with `ci`: no allocation then.
        let mut common: Vec<CiIdx> = Vec::new();
        for (k, &c) in cis.iter().enumerate() {
            let theirs = upstream(c);
            if k == 0 {
                common.extend(ups.iter().filter(|u| theirs.contains(u)));
            } else {
                common.retain(|u| theirs.contains(u));
            }
            if common.is_empty() {
                break;
            }
        }
        if !common.is_empty() {
            evidence.push(Evidence {
                id: inc.id,
                cis,
                common,
            });
        }
    }
    if evidence.is_empty() {
        return Inference::Nothing;
    }
    // Candidates: CIs upstream of `ci` that explain some evidence, with the
    // alerting CIs they explain (CIs, not incidents: several incidents may
    // share a CI) and the evidence they explain.
    let mut candidates: Vec<(CiIdx, Vec<CiIdx>, Vec<usize>)> = ups
        .iter()
        .filter_map(|&u| {
            let explains: Vec<usize> = (0..evidence.len())
                .filter(|&i| evidence[i].common.contains(&u))
                .collect();
            let mut alerting: Vec<CiIdx> = explains
                .iter()
                .flat_map(|&i| evidence[i].cis.iter().copied())
                .chain(std::iter::once(ci))
                .collect();
            alerting.sort();
            alerting.dedup();
            (!explains.is_empty()).then_some((u, alerting, explains))
        })
        .collect();
    // The nearer explanation: drop a CI upstream of another candidate that
    // explains at least the same alerting CIs.
    let dropped: Vec<bool> = (0..candidates.len())
        .map(|i| {
            (0..candidates.len()).any(|j| {
                j != i
                    && candidates[i].1.iter().all(|c| candidates[j].1.contains(c))
                    && cmdb.is_upstream(candidates[i].0, candidates[j].0)
            })
        })
        .collect();
    let mut d = dropped.iter();
    candidates.retain(|_| !d.next().copied().unwrap_or(true));
    // Enough alerting CIs, and enough of the candidate's direct dependents
    // with an alerting CI at or below them.
    let mut confident: Vec<(usize, usize, usize)> = Vec::new();
    let mut shares: Vec<f64> = vec![0.0; candidates.len()];
    // Candidates one more alerting dependent would make confident.
    let mut near: Vec<usize> = Vec::new();
    for (i, (u, alerting, _)) in candidates.iter().enumerate() {
        let (covered, dependents) = hurt_dependents(cmdb, *u, alerting, &mut upstream);
        shares[i] = covered as f64 / dependents.max(1) as f64;
        let enough = |alerting: usize, covered: usize| {
            alerting >= settings.min_dependents
                && (covered as f64) >= settings.min_share * dependents as f64
        };
        if enough(alerting.len(), covered) {
            confident.push((i, covered, dependents));
        } else if alerting.len() + 1 >= settings.min_dependents
            && covered < dependents
            && (enough(alerting.len() + 1, covered + 1)
                || shares[i] >= settings.min_share * FORMING_SHARE_RATIO)
        {
            near.push(i);
        }
    }
    // Not yet: the incidents a near one would join.
    let forming = |of: &[usize]| {
        let mut incidents: Vec<IncidentId> = of
            .iter()
            .flat_map(|&i| candidates[i].2.iter().map(|&e| evidence[e].id))
            .collect();
        incidents.sort();
        incidents.dedup();
        if incidents.is_empty() {
            Inference::Nothing
        } else {
            Inference::Forming { incidents }
        }
    };
    let Some(most) = confident.iter().map(|&(i, ..)| candidates[i].1.len()).max() else {
        return forming(&near);
    };
    confident.retain(|&(i, ..)| candidates[i].1.len() == most);
    let (first, covered, dependents) = confident[0];
    let explains_all = |j: usize| {
        candidates[first]
            .1
            .iter()
            .all(|a| candidates[j].1.contains(a))
    };
    // One explaining these alerting CIs and more, not confident yet but
    // with a fair share of its dependents hurt (none is upstream of
    // another now), may be the cause as its other dependents alert: wait
    // for it rather than guess. A hub with few of its many dependents hurt
    // does not hold the choice up (a wrong early choice is still taken
    // over later: inferred incidents count by their alerting CIs).
    let deferring: Vec<usize> = (0..candidates.len())
        .filter(|&j| {
            candidates[j].1.len() > most
                && explains_all(j)
                && shares[j] >= shares[first] * DEFER_SHARE_RATIO
        })
        .collect();
    if !deferring.is_empty() {
        return forming(&deferring);
    }
    // Another confident one explaining the same: ambiguous.
    let rivals: Vec<usize> = confident
        .iter()
        .map(|&(j, ..)| j)
        .filter(|&j| j != first && explains_all(j))
        .collect();
    if !rivals.is_empty() {
        let mut names: Vec<CiIdx> = std::iter::once(first)
            .chain(rivals)
            .map(|i| candidates[i].0)
            .collect();
        names.sort();
        return Inference::Ambiguous {
            candidates: names,
            alerting: candidates[first].1.clone(),
        };
    }
    let (root, alerting, explains) = candidates.swap_remove(first);
    let mut incidents: Vec<IncidentId> = explains.iter().map(|&i| evidence[i].id).collect();
    incidents.sort();
    incidents.dedup();
    Inference::Root(Inferred {
        root,
        incidents,
        alerting,
        covered,
        dependents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apps a1..a4 on database db (on host h1) and, a1 and a2 also, on
    /// load balancer lb; b1..b2 on db2; a cluster k of apps k1..k3 running
    /// on host h2 only, and app k4 on h2 directly.
    fn cmdb() -> Cmdb {
        crate::cmdb::parse_yaml(
            "t.yaml",
            r#"
version: 1
cis:
  - {id: h1, class: host}
  - {id: db, class: database, depends_on: [h1]}
  - {id: lb, class: lb}
  - {id: a1, class: app, depends_on: [db, lb]}
  - {id: a2, class: app, depends_on: [db, lb]}
  - {id: a3, class: app, depends_on: [db]}
  - {id: a4, class: app, depends_on: [db]}
  - {id: db2, class: database}
  - {id: b1, class: app, depends_on: [db2]}
  - {id: b2, class: app, depends_on: [db2]}
  - {id: h2, class: host}
  - {id: k, class: cluster, depends_on: [h2]}
  - {id: k1, class: app, depends_on: [k]}
  - {id: k2, class: app, depends_on: [k]}
  - {id: k3, class: app, depends_on: [k]}
  - {id: k4, class: app, depends_on: [h2]}
"#,
        )
        .expect("cmdb")
    }

    const W: Duration = Duration::from_secs(300);

    /// `infer` for an alert on `ci` at t=0 beside incidents rooted at
    /// `roots` (ids 1.., opened at t=0; `!` marks an inferred root).
    fn run(cmdb: &Cmdb, ci: &str, roots: &[&str], settings: InferSettings) -> Inference {
        let idx = |id: &str| cmdb.ci_by_id(id.trim_start_matches('!')).expect(id);
        let cis: Vec<Vec<CiIdx>> = roots.iter().map(|r| vec![idx(r)]).collect();
        let topos = roots.iter().zip(&cis).enumerate().map(|(i, (r, cis))| {
            (
                IncidentTopo {
                    id: IncidentId(i as i64 + 1),
                    root: Some(idx(r)),
                    cis,
                    first: Timestamp(0),
                    last: Timestamp(0),
                },
                r.starts_with('!'),
            )
        });
        infer(cmdb, idx(ci), Timestamp(0), W, settings, topos, |c| {
            cmdb.upstream(c).into()
        })
    }

    fn root_of(cmdb: &Cmdb, inf: &Inference) -> Option<(String, Vec<i64>)> {
        match inf {
            Inference::Root(Inferred {
                root, incidents, ..
            }) => Some((
                cmdb.ci(*root).id.clone(),
                incidents.iter().map(|i| i.0).collect(),
            )),
            _ => None,
        }
    }

    #[test]
    fn half_of_a_databases_apps_alerting_names_the_database() {
        let c = cmdb();
        let s = InferSettings::default();
        // a3 and a4: only db is upstream of both; 2 of its 4 apps.
        let inf = run(&c, "a4", &["a3"], s);
        assert_eq!(root_of(&c, &inf), Some(("db".into(), vec![1])));
        let Inference::Root(Inferred {
            covered,
            dependents,
            alerting,
            ..
        }) = inf
        else {
            unreachable!()
        };
        assert_eq!((covered, dependents, alerting.len()), (2, 4, 2));
        // A higher bar: 2 of 4 is not enough.
        let strict = InferSettings {
            min_share: 0.75,
            ..s
        };
        // Not yet; one more of db's apps alerting would be enough: a
        // group forming around db with a3's incident.
        assert_eq!(
            run(&c, "a4", &["a3"], strict),
            Inference::Forming {
                incidents: vec![IncidentId(1)]
            }
        );
        // Three alerting CIs needed: a3 and a4 are a group forming under
        // db; b1 and b2 are all of db2's apps, so none can join: nothing.
        let three = InferSettings {
            min_dependents: 3,
            ..s
        };
        assert_eq!(
            run(&c, "a4", &["a3"], three),
            Inference::Forming {
                incidents: vec![IncidentId(1)]
            }
        );
        assert_eq!(run(&c, "b1", &["b2"], three), Inference::Nothing);
        // Off.
        let off = InferSettings {
            min_dependents: 0,
            ..s
        };
        assert_eq!(run(&c, "a4", &["a3"], off), Inference::Nothing);
        // One alerting CI alone is never enough, whatever the share.
        assert_eq!(run(&c, "b1", &[], s), Inference::Nothing);
        // Unrelated incidents are no evidence.
        assert_eq!(run(&c, "b1", &["a3", "k1"], s), Inference::Nothing);
    }

    #[test]
    fn two_unrelated_common_upstream_cis_are_ambiguous() {
        let c = cmdb();
        // a1 and a2 share db (2 of 4 apps) and lb (2 of 2): neither is
        // upstream of the other.
        let inf = run(&c, "a2", &["a1"], InferSettings::default());
        let Inference::Ambiguous { candidates, .. } = inf else {
            panic!("{inf:?}")
        };
        let names: Vec<&str> = candidates.iter().map(|x| c.ci(*x).id.as_str()).collect();
        assert_eq!(names, ["db", "lb"]);
        // A third app of the database only settles it: db explains more.
        let inf = run(&c, "a3", &["a1", "a2"], InferSettings::default());
        assert_eq!(root_of(&c, &inf), Some(("db".into(), vec![1, 2])));
    }

    #[test]
    fn the_nearest_common_ci_wins_over_the_host_under_it() {
        let c = cmdb();
        // k1 and k2 share k and h2; h2 only through k.
        let inf = run(&c, "k2", &["k1"], InferSettings::default());
        assert_eq!(root_of(&c, &inf), Some(("k".into(), vec![1])));
        // Likewise db over h1.
        let inf = run(&c, "a3", &["a4"], InferSettings::default());
        assert_eq!(root_of(&c, &inf), Some(("db".into(), vec![1])));
    }

    #[test]
    fn a_better_explanation_not_yet_confident_defers_inference() {
        let c = cmdb();
        // a1, a2, a3 alert. With a share of 0.8, db (3 of its 4 apps) is
        // not confident, while lb (2 of 2) would be; but db explains all
        // that lb does and more, so lb is not named: nothing is, yet; the
        // group around db is still forming.
        let s = InferSettings {
            min_share: 0.8,
            ..InferSettings::default()
        };
        assert_eq!(
            run(&c, "a2", &["a1", "a3"], s),
            Inference::Forming {
                incidents: vec![IncidentId(1), IncidentId(2)]
            }
        );
    }

    #[test]
    fn an_inferred_incident_counts_by_its_alerting_cis_and_windows_count() {
        let c = cmdb();
        let idx = |id: &str| c.ci_by_id(id).expect(id);
        // k1 and k2 alerted and k was inferred; now k4, on h2 beside k,
        // alerts: h2 explains all three (both its dependents are hurt), so
        // the inferred incident is taken over.
        let cis = [idx("k"), idx("k1"), idx("k2")];
        let inferred = IncidentTopo {
            id: IncidentId(7),
            root: Some(idx("k")),
            cis: &cis,
            first: Timestamp(0),
            last: Timestamp(0),
        };
        let inf = infer(
            &c,
            idx("k4"),
            Timestamp(0),
            W,
            InferSettings::default(),
            std::iter::once((inferred, true)),
            |x| c.upstream(x).into(),
        );
        assert_eq!(root_of(&c, &inf), Some(("h2".into(), vec![7])));
        // An inferred root by itself is no alerting CI.
        assert_eq!(
            run(&c, "a4", &["!a3"], InferSettings::default()),
            Inference::Nothing
        );
        // An incident long before the window is no evidence either.
        let a3 = c.ci_by_id("a3").expect("a3");
        let cis = [a3];
        let old = IncidentTopo {
            id: IncidentId(1),
            root: Some(a3),
            cis: &cis,
            first: Timestamp(-3_600_000),
            last: Timestamp(-3_600_000),
        };
        let a4 = c.ci_by_id("a4").expect("a4");
        assert_eq!(
            infer(
                &c,
                a4,
                Timestamp(0),
                W,
                InferSettings::default(),
                std::iter::once((old, false)),
                |x| c.upstream(x).into(),
            ),
            Inference::Nothing
        );
    }
}
