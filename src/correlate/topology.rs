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
    /// `root` explains the new alert's CI and the roots of `incidents`
    /// (oldest first): `alerting` distinct CIs in all, under `covered` of its
    /// `dependents` direct dependents.
    Root {
        root: CiIdx,
        incidents: Vec<IncidentId>,
        alerting: Vec<CiIdx>,
        covered: usize,
        dependents: usize,
    },
    /// Unrelated CIs (`candidates`) explain the same alerts equally well:
    /// no root is named.
    Ambiguous {
        candidates: Vec<CiIdx>,
        alerting: Vec<CiIdx>,
    },
    Nothing,
}

/// A CI that could be the silent root, and the alerting CIs it explains.
struct Candidate {
    ci: CiIdx,
    /// Indexes into the evidence (the new alert's CI is always explained).
    explains: Vec<usize>,
}

/// Infer the root cause of an alert on `ci` at `t` that relates to no
/// active incident (`place` said [`Placement::Open`]): the nearest CI
/// upstream of `ci` that is also upstream of the roots of other incidents
/// within the window, when it explains at least `min_dependents` alerting
/// CIs and `min_share` of its direct dependents have an alerting CI at or
/// below them. Among such CIs the one explaining the most alerting CIs
/// wins; a CI upstream of another that explains the same ones is a worse
/// explanation (a host under a cluster); two unrelated ones explaining the
/// same are [`Inference::Ambiguous`]. Incidents whose root is itself
/// inferred are not evidence (`inferred`).
pub fn infer<'a>(
    cmdb: &Cmdb,
    ci: CiIdx,
    t: Timestamp,
    window: Duration,
    settings: InferSettings,
    active: impl Iterator<Item = (IncidentTopo<'a>, bool)>,
) -> Inference {
    if settings.min_dependents < 2 {
        return Inference::Nothing;
    }
    let ups = cmdb.upstream(ci);
    if ups.is_empty() {
        return Inference::Nothing;
    }
    // A root at or above the highest of them has none of them upstream.
    let top = ups.iter().map(|&u| cmdb.level(u)).min().unwrap_or(0);
    // Other incidents' roots with a CI upstream in common with `ci`, and
    // those common CIs.
    let mut evidence: Vec<(IncidentId, CiIdx, Vec<CiIdx>)> = Vec::new();
    for (inc, inferred) in active {
        let near = inc.first.saturating_sub(window) <= t && t <= inc.last.saturating_add(window);
        let Some(root) = inc.root else { continue };
        if !near || inferred || root == ci || cmdb.level(root) <= top {
            continue;
        }
        let common: Vec<CiIdx> = cmdb
            .upstream(root)
            .into_iter()
            .filter(|u| ups.contains(u))
            .collect();
        if !common.is_empty() {
            evidence.push((inc.id, root, common));
        }
    }
    if evidence.is_empty() {
        return Inference::Nothing;
    }
    // Several incidents may share a root CI: CIs are counted, not incidents.
    let explained = |c: &Candidate| -> Vec<CiIdx> {
        let mut v: Vec<CiIdx> = c.explains.iter().map(|&i| evidence[i].1).collect();
        v.push(ci);
        v.sort();
        v.dedup();
        v
    };
    let mut candidates: Vec<Candidate> = ups
        .iter()
        .map(|&u| Candidate {
            ci: u,
            explains: (0..evidence.len())
                .filter(|&i| evidence[i].2.contains(&u))
                .collect(),
        })
        .filter(|c| !c.explains.is_empty())
        .collect();
    // The nearer explanation: drop a CI upstream of another candidate that
    // explains at least the same alerting CIs.
    let sets: Vec<Vec<CiIdx>> = candidates.iter().map(explained).collect();
    let keep: Vec<bool> = (0..candidates.len())
        .map(|i| {
            !(0..candidates.len()).any(|j| {
                j != i
                    && sets[i].iter().all(|c| sets[j].contains(c))
                    && cmdb.is_upstream(candidates[i].ci, candidates[j].ci)
            })
        })
        .collect();
    let mut k = keep.iter();
    candidates.retain(|_| k.next().copied().unwrap_or(false));
    let sets: Vec<Vec<CiIdx>> = candidates.iter().map(explained).collect();
    // Enough alerting CIs, and enough of the candidate's dependents hurt.
    let mut eligible: Vec<(Candidate, Vec<CiIdx>, usize, usize)> = Vec::new();
    for (i, c) in candidates.into_iter().enumerate() {
        let alerting = explained(&c);
        if alerting.len() < settings.min_dependents {
            continue;
        }
        // Another CI explaining these alerting CIs and more is the better
        // explanation: while it is not confident either, wait.
        let bettered = sets.iter().enumerate().any(|(j, other)| {
            j != i && other.len() > alerting.len() && alerting.iter().all(|a| other.contains(a))
        });
        if bettered {
            continue;
        }
        let dependents = cmdb.dependents(c.ci);
        let covered = dependents
            .iter()
            .filter(|&&d| alerting.iter().any(|&a| a == d || cmdb.is_upstream(d, a)))
            .count();
        if (covered as f64) < settings.min_share * dependents.len() as f64 {
            continue;
        }
        eligible.push((c, alerting, covered, dependents.len()));
    }
    let Some(most) = eligible.iter().map(|e| e.1.len()).max() else {
        return Inference::Nothing;
    };
    eligible.retain(|e| e.1.len() == most);
    if eligible.len() > 1 {
        let mut candidates: Vec<CiIdx> = eligible.iter().map(|e| e.0.ci).collect();
        candidates.sort();
        return Inference::Ambiguous {
            candidates,
            alerting: eligible.swap_remove(0).1,
        };
    }
    let Some((c, alerting, covered, dependents)) = eligible.pop() else {
        return Inference::Nothing;
    };
    let mut incidents: Vec<IncidentId> = c.explains.iter().map(|&i| evidence[i].0).collect();
    incidents.sort();
    incidents.dedup();
    Inference::Root {
        root: c.ci,
        incidents,
        alerting,
        covered,
        dependents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apps a1..a4 on database db (on host h1) and, a1 and a2 also, on
    /// load balancer lb; b1..b2 on db2; a cluster k of apps k1..k3 running
    /// on host h2 only.
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
        infer(cmdb, idx(ci), Timestamp(0), W, settings, topos)
    }

    fn root_of(cmdb: &Cmdb, inf: &Inference) -> Option<(String, Vec<i64>)> {
        match inf {
            Inference::Root {
                root, incidents, ..
            } => Some((
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
        let Inference::Root {
            covered,
            dependents,
            alerting,
            ..
        } = inf
        else {
            unreachable!()
        };
        assert_eq!((covered, dependents, alerting.len()), (2, 4, 2));
        // A higher bar: 2 of 4 is not enough.
        let strict = InferSettings {
            min_share: 0.75,
            ..s
        };
        assert_eq!(run(&c, "a4", &["a3"], strict), Inference::Nothing);
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
        // that lb does and more, so lb is not named: nothing is, yet.
        let s = InferSettings {
            min_share: 0.8,
            ..InferSettings::default()
        };
        assert_eq!(run(&c, "a2", &["a1", "a3"], s), Inference::Nothing);
    }

    #[test]
    fn inferred_roots_are_not_evidence_and_windows_count() {
        let c = cmdb();
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
                std::iter::once((old, false))
            ),
            Inference::Nothing
        );
    }
}
