//! The incident page's topology view: the root CI, the alerting CIs that
//! depend on it (with the CIs on the way), and the business services the
//! root's failure hurts, laid out in rows by distance from the root. Pure:
//! CMDB and incident in, SVG text out.

use super::view::{cut as short, esc};
use crate::cmdb::{CiIdx, Cmdb};
use crate::domain::Incident;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write;

/// Nodes drawn at most (a wide outage lists the rest as a count).
const MAX_NODES: usize = 40;
const NODE_W: i32 = 150;
const NODE_H: i32 = 34;
const GAP_X: i32 = 20;
const ROW_H: i32 = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Root,
    Alerting,
    /// On the dependency path between an alerting CI and the root.
    Between,
}

/// The CIs on the shortest dependency path from `from` up to `to`
/// (`from` first, `to` last), if `from` depends on `to` at all.
fn path_up(cmdb: &Cmdb, from: CiIdx, to: CiIdx) -> Option<Vec<CiIdx>> {
    let mut prev: HashMap<CiIdx, CiIdx> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = vec![from];
    while let Some(c) = queue.pop_front() {
        if c == to {
            let mut path = vec![c];
            let mut cur = c;
            while let Some(p) = prev.get(&cur) {
                path.push(*p);
                cur = *p;
            }
            path.reverse();
            return Some(path);
        }
        for d in cmdb.depends_on(c) {
            if !seen.contains(d) {
                seen.push(*d);
                prev.insert(*d, c);
                queue.push_back(*d);
            }
        }
    }
    None
}

/// The SVG of `inc`'s topology, or `None` when it has no CI in the CMDB.
pub fn svg(cmdb: &Cmdb, inc: &Incident) -> Option<String> {
    let root = inc.root_ci.as_deref().and_then(|r| cmdb.ci_by_id(r));
    let alerting: Vec<CiIdx> = inc.cis.iter().filter_map(|c| cmdb.ci_by_id(c)).collect();
    if root.is_none() && alerting.is_empty() {
        return None;
    }
    // Depth by distance from the root; CIs with no path to it sit in the
    // first row below it.
    let mut depth: BTreeMap<CiIdx, (usize, Role)> = BTreeMap::new();
    let mut edges: Vec<(CiIdx, CiIdx)> = Vec::new();
    if let Some(r) = root {
        depth.insert(r, (0, Role::Root));
    }
    let mut hidden = 0usize;
    for &c in &alerting {
        if Some(c) == root {
            continue;
        }
        if depth.len() >= MAX_NODES {
            hidden += 1;
            continue;
        }
        let path = root.and_then(|r| path_up(cmdb, c, r));
        match path {
            Some(p) => {
                let n = p.len() - 1;
                for (i, w) in p.windows(2).enumerate() {
                    edges.push((w[0], w[1]));
                    let role = if i == 0 {
                        Role::Alerting
                    } else {
                        Role::Between
                    };
                    let e = depth.entry(w[0]).or_insert((n - i, role));
                    if role == Role::Alerting {
                        e.1 = Role::Alerting;
                    }
                }
            }
            None => {
                depth
                    .entry(c)
                    .or_insert((usize::from(root.is_some()), Role::Alerting))
                    .1 = Role::Alerting;
            }
        }
    }
    edges.sort();
    edges.dedup();
    let mut rows: BTreeMap<usize, Vec<CiIdx>> = BTreeMap::new();
    for (c, (d, _)) in &depth {
        rows.entry(*d).or_default().push(*c);
    }
    for row in rows.values_mut() {
        row.sort_by(|a, b| cmdb.ci(*a).id.cmp(&cmdb.ci(*b).id));
    }
    let services: Vec<&str> = inc.impacted_services.iter().map(String::as_str).collect();
    let widest = rows
        .values()
        .map(Vec::len)
        .chain([services.len()])
        .max()
        .unwrap_or(1)
        .max(1);
    let width = (widest as i32) * (NODE_W + GAP_X) + GAP_X;
    let n_rows = rows.len() as i32 + i32::from(!services.is_empty());
    let height = n_rows * ROW_H + 10 + if hidden > 0 { 24 } else { 0 };
    let mut pos: HashMap<CiIdx, (i32, i32)> = HashMap::new();
    for (r, (_, row)) in rows.iter().enumerate() {
        let row_w = row.len() as i32 * (NODE_W + GAP_X) - GAP_X;
        let x0 = (width - row_w) / 2;
        for (i, c) in row.iter().enumerate() {
            pos.insert(
                *c,
                (x0 + i as i32 * (NODE_W + GAP_X), 10 + r as i32 * ROW_H),
            );
        }
    }
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<svg class=\"topology\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Topology: root cause, alerting CIs and impacted services\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let _ = write!(
        out,
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0L10,5L0,10z\" class=\"arrowhead\"/></marker></defs>"
    );
    // Edges first, under the nodes: from a dependent up to what it needs.
    for (from, to) in &edges {
        if let (Some(a), Some(b)) = (pos.get(from), pos.get(to)) {
            let _ = write!(
                out,
                "<line class=\"dep\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" marker-end=\"url(#arrow)\"/>",
                a.0 + NODE_W / 2,
                a.1,
                b.0 + NODE_W / 2,
                b.1 + NODE_H
            );
        }
    }
    let svc_y = 10 + rows.len() as i32 * ROW_H;
    let svc_w = services.len() as i32 * (NODE_W + GAP_X) - GAP_X;
    let svc_x0 = (width - svc_w) / 2;
    let svc_x = |i: usize| svc_x0 + i as i32 * (NODE_W + GAP_X);
    // A CI of a service links to it; the root links to every service it
    // hurts that none of the drawn CIs belongs to.
    for (i, s) in services.iter().enumerate() {
        let members: Vec<&CiIdx> = pos
            .keys()
            .filter(|c| {
                cmdb.ci(**c)
                    .service
                    .is_some_and(|k| cmdb.service(k).id == *s)
            })
            .collect();
        let from: Vec<CiIdx> = if members.is_empty() {
            root.into_iter().collect()
        } else {
            members.into_iter().copied().collect()
        };
        for c in from {
            if let Some(a) = pos.get(&c) {
                let _ = write!(
                    out,
                    "<line class=\"hurts\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
                    a.0 + NODE_W / 2,
                    a.1 + NODE_H,
                    svc_x(i) + NODE_W / 2,
                    svc_y
                );
            }
        }
    }
    for (c, (_, role)) in &depth {
        let Some((x, y)) = pos.get(c) else { continue };
        let ci = cmdb.ci(*c);
        let class = match role {
            // Dashed and unfilled: a suspect, not a CI seen failing.
            Role::Root if inc.root_inferred => "node root inferred",
            Role::Root => "node root",
            Role::Alerting => "node alerting",
            Role::Between => "node between",
        };
        out.push_str("<a href=\"/cis/");
        esc(&ci.id, &mut out);
        let _ = write!(out, "\"><g class=\"{class}\" data-ci=\"",);
        esc(&ci.id, &mut out);
        let _ = write!(out, "\"><title>");
        esc(&ci.id, &mut out);
        out.push_str(" (");
        esc(&ci.class, &mut out);
        out.push_str(match role {
            Role::Root if inc.root_inferred => "): root cause, inferred (no alert of its own)",
            Role::Root if inc.root_ci.is_some() => "): root cause",
            Role::Alerting => "): alerting",
            _ => "): on the dependency path",
        });
        let _ = write!(
            out,
            "</title><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/><text x=\"{}\" y=\"{}\">",
            x + NODE_W / 2,
            y + NODE_H / 2 + 5
        );
        esc(&short(&ci.id, 20), &mut out);
        out.push_str("</text></g></a>");
    }
    for (i, s) in services.iter().enumerate() {
        let x = svc_x(i);
        out.push_str("<g class=\"service\" data-service=\"");
        esc(s, &mut out);
        let _ = write!(
            out,
            "\"><rect x=\"{x}\" y=\"{svc_y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"17\"/><text x=\"{}\" y=\"{}\">",
            x + NODE_W / 2,
            svc_y + NODE_H / 2 + 5
        );
        esc(&short(s, 20), &mut out);
        out.push_str("</text></g>");
    }
    if hidden > 0 {
        let _ = write!(
            out,
            "<text class=\"more\" x=\"{}\" y=\"{}\">and {hidden} more alerting CIs</text>",
            width / 2,
            height - 8
        );
    }
    out.push_str("</svg>");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdb() -> Cmdb {
        crate::cmdb::parse_yaml(
            "test",
            r#"
version: 1
services:
  - { id: shop, tier: 1 }
  - { id: blog, tier: 3 }
cis:
  - { id: db, class: database }
  - { id: pool, class: pooler, depends_on: [db] }
  - { id: web, class: application, service: shop, depends_on: [pool] }
  - { id: cms, class: application, service: blog, depends_on: [db] }
  - { id: lone, class: application }
"#,
        )
        .expect("valid CMDB")
    }

    #[test]
    fn root_on_top_alerting_below_path_between_services_last() {
        let c = cmdb();
        let mut inc = Incident::test_default();
        inc.root_ci = Some("db".into());
        inc.cis = vec!["db".into(), "web".into(), "cms".into(), "lone".into()].into();
        inc.impacted_services = vec!["blog".into(), "shop".into()].into();
        let s = svg(&c, &inc).expect("svg");
        assert!(s.contains("class=\"node root\" data-ci=\"db\""), "{s}");
        assert!(s.contains("class=\"node alerting\" data-ci=\"web\""));
        assert!(s.contains("class=\"node alerting\" data-ci=\"cms\""));
        // pool did not alert: it is drawn as the way from web to db.
        assert!(s.contains("class=\"node between\" data-ci=\"pool\""));
        assert!(s.contains("class=\"node alerting\" data-ci=\"lone\""));
        assert!(s.contains("data-service=\"shop\""));
        assert!(s.contains("data-service=\"blog\""));
        assert_eq!(s.matches("class=\"dep\"").count(), 3, "{s}");
        // The root is above everything else.
        let y = |ci: &str| {
            let at = s.find(&format!("data-ci=\"{ci}\"")).expect("node");
            let rest = &s[at..];
            let y = rest.find(" y=\"").expect("y") + 4;
            rest[y..]
                .split('"')
                .next()
                .expect("value")
                .parse::<i32>()
                .expect("int")
        };
        assert!(y("db") < y("pool") && y("pool") < y("web"));
        assert_eq!(y("cms"), y("pool"));
        // An inferred root is drawn apart from one seen failing.
        inc.root_inferred = true;
        let s = svg(&c, &inc).expect("svg");
        assert!(
            s.contains("class=\"node root inferred\" data-ci=\"db\""),
            "{s}"
        );
        assert!(
            s.contains("root cause, inferred (no alert of its own)"),
            "{s}"
        );
    }

    #[test]
    fn names_are_escaped_and_unknown_cis_draw_nothing() {
        let c = cmdb();
        let mut inc = Incident::test_default();
        inc.root_ci = Some("nope".into());
        assert_eq!(svg(&c, &inc), None);
        inc.root_ci = Some("db".into());
        inc.impacted_services = vec!["<script>".into()].into();
        let s = svg(&c, &inc).expect("svg");
        assert!(!s.contains("<script>"));
        assert!(s.contains("&lt;script&gt;"));
    }
}
