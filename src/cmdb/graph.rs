//! The compiled CMDB: CIs in a vector, edges in compressed (CSR) adjacency
//! arrays both ways, and hash indexes for binding. Built once per load.

use super::CmdbError;
use super::model::{CiRecord, CmdbFile};
use crate::domain::instance_host;
use crate::domain::{LabelSet, Priority, parse_duration};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::time::Duration;

/// Index of a CI in [`Cmdb`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CiIdx(pub u32);

impl CiIdx {
    fn at(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Clone)]
pub struct Ci {
    pub id: String,
    pub name: Option<String>,
    pub class: String,
    pub service: Option<usize>,
    pub owner: Option<String>,
    pub runbook: Option<String>,
    pub hostnames: Vec<String>,
    pub match_labels: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Slo {
    pub name: String,
    /// As a ratio, e.g. 0.999.
    pub objective: f64,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub tier: u8,
    pub owner: Option<String>,
    /// Targets per priority (index 0 = P1): until acknowledged, until resolved.
    pub response: [Option<Duration>; 5],
    pub resolution: [Option<Duration>; 5],
    pub slos: Vec<Slo>,
}

/// A business service an incident hurts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImpactedService {
    pub id: String,
    pub tier: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingHow {
    /// The alert's `ci` label.
    CiLabel,
    /// All of the CI's `match` labels are on the alert.
    Match,
    /// The host of `instance` (or a `host`/`hostname` label) is one of the CI's hostnames.
    Hostname,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub ci: CiIdx,
    pub how: BindingHow,
}

#[derive(Debug, Default)]
pub struct Cmdb {
    cis: Vec<Ci>,
    services: Vec<Service>,
    by_id: FxHashMap<String, CiIdx>,
    service_by_id: FxHashMap<String, usize>,
    by_host: FxHashMap<String, CiIdx>,
    /// Hash of one (name, value) pair of each CI's match set → CIs to verify.
    match_index: FxHashMap<u64, Vec<CiIdx>>,
    up_start: Vec<u32>,
    up_to: Vec<CiIdx>,
    down_start: Vec<u32>,
    down_to: Vec<CiIdx>,
    /// Length of the longest `depends_on` path from each CI (0: depends on
    /// nothing). Every edge goes to a lower level, so `a` can only be upstream
    /// of `b` when `level[a] < level[b]`: graph walks prune with it.
    level: Vec<u32>,
    /// Each CI's dependency component (connected, ignoring direction),
    /// named by its member with the smallest id: everything that can ever
    /// correlate into one incident shares it (the Kafka partition key).
    component: Vec<CiIdx>,
    warnings: Vec<CmdbError>,
}

/// Reusable buffers for [`Cmdb::is_upstream_with`].
#[derive(Debug, Default)]
pub(crate) struct Walk {
    seen: FxHashSet<CiIdx>,
    stack: Vec<CiIdx>,
}

impl Walk {
    /// Whether the last [`Cmdb::reach`] found `c`.
    pub(crate) fn contains(&self, c: CiIdx) -> bool {
        self.seen.contains(&c)
    }
}

fn pair_hash(name: &str, value: &str) -> u64 {
    crate::domain::Fingerprint::of_sorted_pairs(std::iter::once((name, value))).0
}

/// Compressed adjacency: `start[i]..start[i+1]` indexes `to`.
fn csr(n: usize, edges: &[(CiIdx, CiIdx)]) -> (Vec<u32>, Vec<CiIdx>) {
    let mut count = vec![0u32; n + 1];
    for (from, _) in edges {
        count[from.at() + 1] += 1;
    }
    for i in 0..n {
        count[i + 1] += count[i];
    }
    let mut fill = count.clone();
    let mut to = vec![CiIdx(0); edges.len()];
    for (from, t) in edges {
        let slot = &mut fill[from.at()];
        to[*slot as usize] = *t;
        *slot += 1;
    }
    (count, to)
}

impl Cmdb {
    pub fn empty() -> Cmdb {
        Cmdb {
            up_start: vec![0],
            down_start: vec![0],
            ..Cmdb::default()
        }
    }

    /// Validate a parsed file and compile it; every error is reported.
    pub fn build(src: &str, file: CmdbFile) -> Result<Cmdb, Vec<CmdbError>> {
        let mut errs = Vec::new();
        let mut warnings = Vec::new();
        let err = |errs: &mut Vec<CmdbError>, field: String, msg: String| {
            errs.push(CmdbError::new(src, field, msg))
        };
        if file.version != 1 {
            err(
                &mut errs,
                "version".into(),
                format!("unsupported version {} (expected 1)", file.version),
            );
        }
        let mut services = Vec::with_capacity(file.services.len());
        let mut service_by_id = FxHashMap::default();
        for (i, s) in file.services.iter().enumerate() {
            let at = format!("services[{i}]");
            if s.id.trim().is_empty() {
                err(&mut errs, format!("{at}.id"), "must not be empty".into());
            }
            if let Some(&first) = service_by_id.get(&s.id) {
                err(
                    &mut errs,
                    format!("{at}.id"),
                    format!(
                        "duplicate service id {:?} (first at services[{first}])",
                        s.id
                    ),
                );
            } else {
                service_by_id.insert(s.id.clone(), i);
            }
            let tier = match s.tier {
                None => 3,
                Some(t @ 1..=5) => t as u8,
                Some(t) => {
                    err(
                        &mut errs,
                        format!("{at}.tier"),
                        format!("must be 1..=5, got {t}"),
                    );
                    3
                }
            };
            let mut response = [None; 5];
            let mut resolution = [None; 5];
            if let Some(sla) = &s.sla {
                for (kind, map, out) in [
                    ("response", &sla.response, &mut response),
                    ("resolution", &sla.resolution, &mut resolution),
                ] {
                    for (p, d) in map {
                        let field = format!("{at}.sla.{kind}.{p}");
                        match (Priority::parse(p), parse_duration(d)) {
                            (Some(prio), Ok(dur)) => out[usize::from(prio.get() - 1)] = Some(dur),
                            (None, _) => {
                                err(&mut errs, field, format!("{p:?} is not a priority P1..P5"))
                            }
                            (_, Err(m)) => err(&mut errs, field, m),
                        }
                    }
                }
            }
            let mut slos = Vec::new();
            for (j, slo) in s.slo.iter().enumerate() {
                let field = format!("{at}.slo[{j}]");
                if !(slo.objective > 0.0 && slo.objective < 100.0) {
                    err(
                        &mut errs,
                        format!("{field}.objective"),
                        format!(
                            "must be a percentage between 0 and 100, got {}",
                            slo.objective
                        ),
                    );
                }
                match parse_duration(&slo.window) {
                    Ok(w) if !w.is_zero() => slos.push(Slo {
                        name: slo.name.clone(),
                        // Rounded to 12 decimals so 99.9 % is 0.999, not
                        // 0.9990000000000001 (a dashboard shows it).
                        objective: (slo.objective * 1e10).round() / 1e12,
                        window: w,
                    }),
                    Ok(_) => err(
                        &mut errs,
                        format!("{field}.window"),
                        "must be positive".into(),
                    ),
                    Err(m) => err(&mut errs, format!("{field}.window"), m),
                }
            }
            services.push(Service {
                id: s.id.clone(),
                name: s.name.clone().unwrap_or_else(|| s.id.clone()),
                tier,
                owner: s.owner.clone(),
                response,
                resolution,
                slos,
            });
        }

        let mut by_id: FxHashMap<String, CiIdx> = FxHashMap::default();
        for (i, c) in file.cis.iter().enumerate() {
            if c.id.trim().is_empty() {
                err(
                    &mut errs,
                    format!("cis[{i}].id"),
                    "must not be empty".into(),
                );
            }
            // The first CI with an id keeps it, so a duplicate cannot redirect edges.
            if let Some(first) = by_id.get(&c.id) {
                err(
                    &mut errs,
                    format!("cis[{i}].id"),
                    format!("duplicate CI id {:?} (first at cis[{}])", c.id, first.0),
                );
            } else {
                by_id.insert(c.id.clone(), CiIdx(i as u32));
            }
        }
        let mut cis = Vec::with_capacity(file.cis.len());
        let mut edges = Vec::new();
        let mut by_host: FxHashMap<String, CiIdx> = FxHashMap::default();
        let mut match_index: FxHashMap<u64, Vec<CiIdx>> = FxHashMap::default();
        let mut match_sets: FxHashMap<Vec<(String, String)>, CiIdx> = FxHashMap::default();
        for (i, c) in file.cis.iter().enumerate() {
            let idx = CiIdx(i as u32);
            let at = format!("cis[{i}]");
            let service = match &c.service {
                None => None,
                Some(s) => match service_by_id.get(s) {
                    Some(&si) => Some(si),
                    None => {
                        err(
                            &mut errs,
                            format!("{at}.service"),
                            format!("unknown service {s:?}"),
                        );
                        None
                    }
                },
            };
            let mut seen = FxHashSet::default();
            for (j, dep) in c.depends_on.iter().enumerate() {
                match by_id.get(dep) {
                    Some(&d) if d == idx => err(
                        &mut errs,
                        format!("{at}.depends_on[{j}]"),
                        format!("CI {:?} depends on itself", c.id),
                    ),
                    Some(&d) => {
                        if seen.insert(d) {
                            edges.push((idx, d));
                        }
                    }
                    None => err(
                        &mut errs,
                        format!("{at}.depends_on[{j}]"),
                        format!("unknown CI {dep:?}"),
                    ),
                }
            }
            for h in &c.hostnames {
                if let Some(prev) = by_host.get(h) {
                    warnings.push(CmdbError::new(
                        src,
                        format!("{at}.hostnames"),
                        format!("hostname {h:?} also belongs to CI {:?}; alerts on it bind to the first", file.cis[prev.at()].id),
                    ));
                } else {
                    by_host.insert(h.clone(), idx);
                }
            }
            let match_labels: Vec<(String, String)> = c
                .match_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some((k, v)) = match_labels.first() {
                match_index.entry(pair_hash(k, v)).or_default().push(idx);
                if let Some(prev) = match_sets.get(&match_labels) {
                    warnings.push(CmdbError::new(
                        src,
                        format!("{at}.match"),
                        format!(
                            "same match labels as CI {:?}: alerts bind to {:?} (the smaller id)",
                            file.cis[prev.at()].id,
                            std::cmp::min(&file.cis[prev.at()].id, &c.id)
                        ),
                    ));
                } else {
                    match_sets.insert(match_labels.clone(), idx);
                }
            }
            cis.push(ci_of(c, service));
        }
        let n = cis.len();
        let (up_start, up_to) = csr(n, &edges);
        let reversed: Vec<(CiIdx, CiIdx)> = edges.iter().map(|(a, b)| (*b, *a)).collect();
        let (down_start, down_to) = csr(n, &reversed);
        let mut cmdb = Cmdb {
            cis,
            services,
            by_id,
            service_by_id,
            by_host,
            match_index,
            up_start,
            up_to,
            down_start,
            down_to,
            level: Vec::new(),
            component: Vec::new(),
            warnings,
        };
        cmdb.component = cmdb.components();
        match cmdb.levels_or_cycle() {
            Ok(level) => cmdb.level = level,
            Err(cycle) => {
                let path: Vec<&str> = cycle.iter().map(|c| cmdb.cis[c.at()].id.as_str()).collect();
                err(
                    &mut errs,
                    "cis".into(),
                    format!("depends_on cycle: {}", path.join(" → ")),
                );
            }
        }
        if errs.is_empty() { Ok(cmdb) } else { Err(errs) }
    }

    /// Union-find over the edges; each CI's component representative.
    fn components(&self) -> Vec<CiIdx> {
        fn find(p: &mut [u32], mut x: u32) -> u32 {
            while p[x as usize] != x {
                let up = p[p[x as usize] as usize];
                p[x as usize] = up;
                x = up;
            }
            x
        }
        let n = self.cis.len();
        let mut parent: Vec<u32> = (0..n as u32).collect();
        for a in 0..n {
            let (lo, hi) = (self.up_start[a] as usize, self.up_start[a + 1] as usize);
            for b in &self.up_to[lo..hi] {
                let (ra, rb) = (find(&mut parent, a as u32), find(&mut parent, b.0));
                if ra != rb {
                    // Keep the smaller id as root so the name is stable.
                    let (keep, other) = if self.cis[ra as usize].id <= self.cis[rb as usize].id {
                        (ra, rb)
                    } else {
                        (rb, ra)
                    };
                    parent[other as usize] = keep;
                }
            }
        }
        (0..n as u32).map(|x| CiIdx(find(&mut parent, x))).collect()
    }

    /// Name of the dependency component of `c` (see `component`).
    pub fn component_of(&self, c: CiIdx) -> &str {
        let rep = self.component.get(c.at()).copied().unwrap_or(c);
        &self.cis[rep.at()].id
    }

    pub fn warnings(&self) -> &[CmdbError] {
        &self.warnings
    }

    /// Let the loader add lines and entry ids to the warnings.
    pub(super) fn annotate_warnings(&mut self, f: impl FnMut(&mut CmdbError)) {
        self.warnings.iter_mut().for_each(f);
    }

    pub fn len(&self) -> usize {
        self.cis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cis.is_empty()
    }

    pub fn edge_count(&self) -> usize {
        self.up_to.len()
    }

    pub fn ci(&self, i: CiIdx) -> &Ci {
        &self.cis[i.at()]
    }

    pub fn ci_by_id(&self, id: &str) -> Option<CiIdx> {
        self.by_id.get(id).copied()
    }

    /// Every CI with its index, in the file's order.
    pub fn cis(&self) -> impl Iterator<Item = (CiIdx, &Ci)> {
        (0u32..).map(CiIdx).zip(self.cis.iter())
    }

    /// Who takes an incident rooted at `c`: the CI's owner, else its
    /// service's owner (what the engine assigns when no rule does).
    pub fn assignment_group(&self, c: CiIdx) -> Option<&str> {
        let rec = self.ci(c);
        rec.owner
            .as_deref()
            .or_else(|| rec.service.and_then(|s| self.service(s).owner.as_deref()))
    }

    pub fn service(&self, i: usize) -> &Service {
        &self.services[i]
    }

    pub fn service_by_id(&self, id: &str) -> Option<&Service> {
        self.service_by_id.get(id).map(|&i| &self.services[i])
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// CIs this one depends on directly.
    pub fn depends_on(&self, i: CiIdx) -> &[CiIdx] {
        &self.up_to[self.up_start[i.at()] as usize..self.up_start[i.at() + 1] as usize]
    }

    /// CIs that depend on this one directly.
    pub fn dependents(&self, i: CiIdx) -> &[CiIdx] {
        &self.down_to[self.down_start[i.at()] as usize..self.down_start[i.at() + 1] as usize]
    }

    /// Bind an alert to at most one CI, most specific first (DESIGN §3).
    pub fn bind(&self, labels: &LabelSet) -> Option<Binding> {
        if let Some(id) = labels.get("ci")
            && let Some(&ci) = self.by_id.get(id)
        {
            return Some(Binding {
                ci,
                how: BindingHow::CiLabel,
            });
        }
        let mut best: Option<(usize, &str, CiIdx)> = None;
        if !self.match_index.is_empty() {
            for (k, v) in labels.iter() {
                let Some(cands) = self.match_index.get(&pair_hash(k, v)) else {
                    continue;
                };
                for &c in cands {
                    let ci = &self.cis[c.at()];
                    if !ci
                        .match_labels
                        .iter()
                        .all(|(mk, mv)| labels.get(mk) == Some(mv.as_str()))
                    {
                        continue;
                    }
                    let n = ci.match_labels.len();
                    let better = match best {
                        None => true,
                        Some((bn, bid, _)) => n > bn || (n == bn && ci.id.as_str() < bid),
                    };
                    if better {
                        best = Some((n, ci.id.as_str(), c));
                    }
                }
            }
        }
        if let Some((_, _, ci)) = best {
            return Some(Binding {
                ci,
                how: BindingHow::Match,
            });
        }
        let host = labels
            .get("instance")
            .filter(|v| !v.is_empty())
            .map(instance_host)
            .or_else(|| labels.get("host"))
            .or_else(|| labels.get("hostname"))?;
        self.by_host.get(host).map(|&ci| Binding {
            ci,
            how: BindingHow::Hostname,
        })
    }

    /// Every CI `from` depends on, directly or not (breadth first, nearest first).
    pub fn upstream(&self, from: CiIdx) -> Vec<CiIdx> {
        self.walk(from, true)
    }

    /// Every CI that depends on `from`, directly or not.
    pub fn downstream(&self, from: CiIdx) -> Vec<CiIdx> {
        self.walk(from, false)
    }

    fn walk(&self, from: CiIdx, up: bool) -> Vec<CiIdx> {
        let mut seen = FxHashSet::default();
        seen.insert(from);
        let mut out = Vec::new();
        // `out` is also the breadth-first queue: CIs are found in queue order.
        let mut head = 0;
        let mut c = from;
        loop {
            let next = if up {
                self.depends_on(c)
            } else {
                self.dependents(c)
            };
            for &n in next {
                if seen.insert(n) {
                    out.push(n);
                }
            }
            let Some(&n) = out.get(head) else { break };
            head += 1;
            c = n;
        }
        out
    }

    /// The level of a CI: the length of the longest `depends_on` path from it.
    pub(crate) fn level(&self, c: CiIdx) -> u32 {
        self.level[c.at()]
    }

    /// Collect into `w` (`Walk::contains`) `from` and the CIs reachable from it
    /// through `depends_on` (`up`) or dependents (`!up`), keeping only CIs of
    /// level `>= bound` (up) or `<= bound` (down): levels fall strictly along
    /// `depends_on`, so no path from `from` to such a CI passes through the
    /// others. Gives up (returns false) once more than `budget` CIs are found.
    pub(crate) fn reach(
        &self,
        from: CiIdx,
        up: bool,
        bound: u32,
        budget: usize,
        w: &mut Walk,
    ) -> bool {
        w.seen.clear();
        w.seen.reserve(32);
        w.stack.clear();
        w.seen.insert(from);
        w.stack.push(from);
        while let Some(c) = w.stack.pop() {
            let next = if up {
                self.depends_on(c)
            } else {
                self.dependents(c)
            };
            for &n in next {
                let keep = if up {
                    self.level(n) >= bound
                } else {
                    self.level(n) <= bound
                };
                if keep && w.seen.insert(n) {
                    if w.seen.len() > budget {
                        return false;
                    }
                    w.stack.push(n);
                }
            }
        }
        true
    }

    /// Whether `a` is upstream of `b` (b depends on a, transitively).
    pub fn is_upstream(&self, a: CiIdx, b: CiIdx) -> bool {
        self.is_upstream_with(a, b, &mut Walk::default())
    }

    /// [`Cmdb::is_upstream`] with reusable buffers.
    pub(crate) fn is_upstream_with(&self, a: CiIdx, b: CiIdx, w: &mut Walk) -> bool {
        if a == b {
            return false;
        }
        let la = self.level(a);
        if la >= self.level(b) {
            return false;
        }
        w.seen.clear();
        w.stack.clear();
        w.stack.push(b);
        while let Some(c) = w.stack.pop() {
            for &n in self.depends_on(c) {
                if n == a {
                    return true;
                }
                // Only a CI above `a` can lead down to it.
                if self.level(n) > la && w.seen.insert(n) {
                    w.stack.push(n);
                }
            }
        }
        false
    }

    /// Business services hurt when `root` fails: its own and those of every
    /// CI downstream of it, sorted by id.
    pub fn impacted_services(&self, root: CiIdx) -> Vec<ImpactedService> {
        let mut ids: Vec<usize> = std::iter::once(root)
            .chain(self.downstream(root))
            .filter_map(|c| self.cis[c.at()].service)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out: Vec<ImpactedService> = ids
            .into_iter()
            .map(|i| ImpactedService {
                id: self.services[i].id.clone(),
                tier: self.services[i].tier,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Each CI's level, or a cycle in depends_on if there is one (iterative
    /// three-colour DFS; a CI's level is known once its dependencies are done).
    fn levels_or_cycle(&self) -> Result<Vec<u32>, Vec<CiIdx>> {
        const WHITE: u8 = 0;
        const GREY: u8 = 1;
        const BLACK: u8 = 2;
        let n = self.cis.len();
        let mut colour = vec![WHITE; n];
        let mut parent = vec![u32::MAX; n];
        let mut level = vec![0u32; n];
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for s in 0..n {
            if colour[s] != WHITE {
                continue;
            }
            // Stack of (node, next edge offset).
            stack.clear();
            stack.push((s, self.up_start[s] as usize));
            colour[s] = GREY;
            while let Some(top) = stack.last_mut() {
                let node = top.0;
                let end = self.up_start[node + 1] as usize;
                if top.1 < end {
                    let next = self.up_to[top.1].at();
                    top.1 += 1;
                    match colour[next] {
                        WHITE => {
                            colour[next] = GREY;
                            parent[next] = node as u32;
                            stack.push((next, self.up_start[next] as usize));
                        }
                        GREY => {
                            let mut cycle = vec![CiIdx(next as u32)];
                            let mut c = node;
                            while c != next {
                                cycle.push(CiIdx(c as u32));
                                c = parent[c] as usize;
                            }
                            cycle.push(CiIdx(next as u32));
                            cycle.reverse();
                            return Err(cycle);
                        }
                        _ => {}
                    }
                } else {
                    colour[node] = BLACK;
                    level[node] = self.up_to[self.up_start[node] as usize..end]
                        .iter()
                        .map(|d| level[d.at()] + 1)
                        .max()
                        .unwrap_or(0);
                    stack.pop();
                }
            }
        }
        Ok(level)
    }
}

fn ci_of(c: &CiRecord, service: Option<usize>) -> Ci {
    Ci {
        id: c.id.clone(),
        name: c.name.clone(),
        class: c.class.clone().unwrap_or_else(|| "unknown".into()),
        service,
        owner: c.owner.clone(),
        runbook: c.runbook.clone(),
        hostnames: c.hostnames.clone(),
        match_labels: c
            .match_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}
