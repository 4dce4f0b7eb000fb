//! The pages, as pure functions of what the handlers read: HTML from
//! compiled templates (maud escapes every value), so a page is tested and
//! benchmarked without a server.

use super::topology;
use crate::cmdb::Cmdb;
use crate::domain::{
    AlertStatus, Incident, IncidentState, Priority, Problem, TimelineEntry, Timestamp,
};
use crate::slo::sla::{IncidentSla, SlaStatus, SlaTimer};
use crate::store::AlertRecord;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::fmt::Write;

/// Who is looking, as the header and the action forms need it.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The token's name or the proxy's user; `None` when the board is open.
    pub name: Option<String>,
    pub operator: bool,
    /// Signed in by a token (so there is a cookie to sign out of).
    pub by_token: bool,
    /// The form token of this browser's session.
    pub csrf: String,
}

/// The navigation entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Board,
    Services,
    Problems,
    Changes,
    Cmdb,
    None,
}

/// A page: its title, which entry it is, whether it updates live, the
/// server's clock (countdowns run from it) and its body.
pub struct Page<'a> {
    pub title: &'a str,
    pub nav: Nav,
    pub live: bool,
    pub now: Timestamp,
    pub viewer: Option<&'a Viewer>,
    /// Seconds between refreshes besides the live events (figures that
    /// move with time, like burn rates).
    pub every: Option<u32>,
}

/// The whole document around `body`.
pub fn layout(p: &Page<'_>, body: Markup) -> Markup {
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            a href=(href) aria-current=[(p.nav == n).then_some("page")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (p.title) " · incidentd" }
                link rel="stylesheet" href=(super::CSS_PATH);
                script src=(super::JS_PATH) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    a.brand href="/" { "incidentd" }
                    @if p.viewer.is_some() {
                        nav aria-label="Main" {
                            (item(Nav::Board, "/", "Incidents"))
                            (item(Nav::Services, "/services", "Services"))
                            (item(Nav::Problems, "/problems", "Problems"))
                            (item(Nav::Changes, "/changes", "Changes"))
                            (item(Nav::Cmdb, "/cis", "CMDB"))
                        }
                    }
                    @if let Some(v) = p.viewer {
                        div.who {
                            @if let Some(n) = &v.name {
                                span { (n) @if !v.operator { " (read-only)" } }
                            }
                            @if v.by_token {
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main #main data-live[p.live] data-every=[p.every] data-now=(p.now.0) { (body) }
            }
        }
    }
}

/// `3m 12s`, `2h 5m`, `4d 3h`: an age or time left at a glance.
pub fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60, s % 60);
    // The larger unit, and the next one when it is not zero.
    let two = |a: i64, ua: &str, b: i64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua} {b}{ub}")
        }
    };
    if d > 0 {
        two(d, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "m")
    } else if m > 0 {
        two(m, "m", sec, "s")
    } else {
        format!("{sec}s")
    }
}

/// An instant as people read it (UTC).
pub fn when(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(t.0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| t.0.to_string())
}

fn level(l: crate::domain::Level) -> &'static str {
    match l.get() {
        1 => "high",
        2 => "medium",
        _ => "low",
    }
}

/// How the board names an active incident's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardState {
    Open,
    Acknowledged,
    OnHold,
    AutoResolving,
    Resolved,
}

impl BoardState {
    pub fn of(inc: &Incident) -> BoardState {
        if inc.state == IncidentState::Resolved {
            BoardState::Resolved
        } else if inc.holds.last().is_some_and(|h| h.end.is_none()) {
            BoardState::OnHold
        } else if inc.auto_resolve_at.is_some() {
            BoardState::AutoResolving
        } else if inc.state == IncidentState::Acknowledged {
            BoardState::Acknowledged
        } else {
            BoardState::Open
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BoardState::Open => "open",
            BoardState::Acknowledged => "acknowledged",
            BoardState::OnHold => "on_hold",
            BoardState::AutoResolving => "auto_resolving",
            BoardState::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<BoardState> {
        [
            BoardState::Open,
            BoardState::Acknowledged,
            BoardState::OnHold,
            BoardState::AutoResolving,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
    }
    fn label(self) -> &'static str {
        match self {
            BoardState::Open => "open",
            BoardState::Acknowledged => "acknowledged",
            BoardState::OnHold => "on hold",
            BoardState::AutoResolving => "auto-resolving",
            BoardState::Resolved => "resolved",
        }
    }
}

/// The state cell: a word, and for a hold its reason, for auto-resolve
/// its countdown.
fn state_cell(inc: &Incident, out: &mut String) {
    let st = BoardState::of(inc);
    let class = match st {
        BoardState::Acknowledged => "st ack",
        BoardState::OnHold => "st hold",
        BoardState::AutoResolving => "st auto",
        BoardState::Open | BoardState::Resolved => {
            out.push_str(st.label());
            return;
        }
    };
    let _ = write!(out, "<span class=\"{class}\">{}", st.label());
    match st {
        BoardState::OnHold => {
            if let Some(h) = inc.holds.last() {
                out.push_str(" (");
                esc(&h.reason, out);
                out.push(')');
            }
        }
        BoardState::AutoResolving => {
            if let Some(at) = inc.auto_resolve_at.get() {
                let _ = write!(out, " <time data-until={}></time>", at.0);
            }
        }
        _ => {}
    }
    out.push_str("</span>");
}

/// The worst of the two SLA timers, as one short word and its class.
fn sla_word(sla: &IncidentSla) -> (&'static str, String) {
    let timers = [("response", &sla.response), ("resolution", &sla.resolution)];
    let mut worst: Option<(&str, &SlaTimer)> = None;
    let rank = |s: SlaStatus| match s {
        SlaStatus::Breached => 4,
        SlaStatus::Warning75 => 3,
        SlaStatus::Warning50 => 2,
        SlaStatus::Running => 1,
        SlaStatus::Met => 0,
    };
    for (name, t) in timers {
        if let Some(t) = t
            && worst.is_none_or(|(_, w)| rank(t.status) > rank(w.status))
        {
            worst = Some((name, t));
        }
    }
    match worst {
        None => ("none", "no target".into()),
        Some((name, t)) => match t.status {
            SlaStatus::Breached => ("breached", format!("{name} breached")),
            SlaStatus::Warning75 => ("warn", format!("{name} 75%")),
            SlaStatus::Warning50 => ("warn", format!("{name} 50%")),
            SlaStatus::Running => ("ok", "on track".into()),
            SlaStatus::Met => ("met", "met".into()),
        },
    }
}

/// HTML-escapes `s` onto `out` (the board rows are written by hand: a
/// thousand of them must stay small and fast).
pub fn esc(s: &str, out: &mut String) {
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Board filters, as the URL carries them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub state: Option<BoardState>,
    pub priority: Option<Priority>,
    pub service: Option<String>,
    pub group: Option<String>,
}

impl Filters {
    pub fn keeps(&self, inc: &Incident) -> bool {
        self.state.is_none_or(|s| BoardState::of(inc) == s)
            && self.priority.is_none_or(|p| inc.priority == p)
            && self
                .service
                .as_ref()
                .is_none_or(|s| inc.impacted_services.iter().any(|x| x == s))
            && self
                .group
                .as_ref()
                .is_none_or(|g| inc.assignment_group.as_deref() == Some(g.as_str()))
    }

    /// The query string of these filters with the priority replaced.
    fn with_priority(&self, p: Option<Priority>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = self.state {
            q.append_pair("state", s.as_str());
        }
        if let Some(p) = p {
            q.append_pair("priority", p.as_str());
        }
        if let Some(s) = &self.service {
            q.append_pair("service", s);
        }
        if let Some(g) = &self.group {
            q.append_pair("group", g);
        }
        let q = q.finish();
        if q.is_empty() {
            "/".into()
        } else {
            format!("/?{q}")
        }
    }
}

/// One incident of the board with its SLA timers.
pub struct BoardItem {
    pub incident: Incident,
    pub sla: IncidentSla,
}

/// Most urgent first: priority, then the oldest.
pub fn sort_board(items: &mut [BoardItem]) {
    items.sort_by(|a, b| {
        (a.incident.priority, a.incident.opened_at, a.incident.id.0).cmp(&(
            b.incident.priority,
            b.incident.opened_at,
            b.incident.id.0,
        ))
    });
}

/// The board's body: counts per priority, the filters, and the rows of
/// `items` that the filters keep (all active incidents are counted).
pub fn board(
    items: &[BoardItem],
    f: &Filters,
    services: &[String],
    groups: &[String],
    now: Timestamp,
) -> Markup {
    let mut counts = [0usize; 5];
    for i in items {
        counts[usize::from(i.incident.priority.get() - 1)] += 1;
    }
    let shown: Vec<&BoardItem> = items.iter().filter(|i| f.keeps(&i.incident)).collect();
    let mut rows = String::with_capacity(shown.len() * 260);
    for item in &shown {
        board_row(item, now, &mut rows);
    }
    let states = [
        BoardState::Open,
        BoardState::Acknowledged,
        BoardState::OnHold,
        BoardState::AutoResolving,
    ];
    html! {
        h1 { "Active incidents " span.muted #board-total { "(" (items.len()) ")" } }
        ul.counts aria-label="Active incidents per priority" {
            @for p in Priority::ALL {
                li { a class=(p.as_str()) href=(f.with_priority(Some(p))) data-count=(counts[usize::from(p.get() - 1)])
                    aria-current=[(f.priority == Some(p)).then_some("true")] {
                    span.pri { (p.as_str()) } (counts[usize::from(p.get() - 1)])
                } }
            }
            @if f.priority.is_some() { li { a href=(f.with_priority(None)) { "all priorities" } } }
        }
        form.filters method="get" action="/" {
            label { "State"
                select name="state" #f-state {
                    option value="" { "any" }
                    @for s in states { option value=(s.as_str()) selected[f.state == Some(s)] { (s.label()) } }
                }
            }
            label { "Priority"
                select name="priority" #f-priority {
                    option value="" { "any" }
                    @for p in Priority::ALL { option value=(p.as_str()) selected[f.priority == Some(p)] { (p.as_str()) } }
                }
            }
            label { "Service"
                select name="service" #f-service {
                    option value="" { "any" }
                    @for s in services { option value=(s) selected[f.service.as_deref() == Some(s.as_str())] { (s) } }
                }
            }
            label { "Assignment group"
                select name="group" #f-group {
                    option value="" { "any" }
                    @for g in groups { option value=(g) selected[f.group.as_deref() == Some(g.as_str())] { (g) } }
                }
            }
            button type="submit" { "Apply" }
            @if *f != Filters::default() { a href="/" { "Clear filters" } }
        }
        @if shown.is_empty() {
            p.banner #empty { @if items.is_empty() { "No active incidents. All quiet." } @else { "No active incident matches these filters." } }
        } @else {
            @if shown.len() < items.len() { p.muted { "Showing " (shown.len()) " of " (items.len()) "." } }
            table.board #board {
                thead { tr { th { "Pri" } th { "State" } th { "Incident" } th { "Root cause" } th { "Impacted services" } th { "Group" } th { "Alerts" } th { "Age" } th { "SLA" } } }
                tbody { (PreEscaped(rows)) }
            }
        }
    }
}

/// One board row, written by hand to keep a thousand of them small: no
/// end tags the HTML parser implies, unquoted attribute values where
/// they cannot need quotes, labels for phone width from the stylesheet.
fn board_row(item: &BoardItem, now: Timestamp, out: &mut String) {
    let inc = &item.incident;
    let p = inc.priority.as_str();
    let _ = write!(out, "<tr class={p}><td>{p}<td>");
    state_cell(inc, out);
    if inc
        .unannounced
        .as_deref()
        .is_some_and(|u| !u.withheld && !u.destinations.is_empty())
    {
        out.push_str(" <span class=muted title=\"Within its settle delay (outbound.settle): destinations hear of it if it still stands then\">not announced yet</span>");
    }
    let id = inc.id.0;
    let _ = write!(out, "<td><a href=/incidents/{id}>#{id} ");
    esc(&cut(&inc.title, 120), out);
    out.push_str("</a><td>");
    if let Some(r) = &inc.root_ci {
        esc(r, out);
        if inc.root_inferred {
            out.push_str(" <span class=muted>(inferred)</span>");
        }
    }
    out.push_str("<td>");
    for (i, s) in inc.impacted_services.iter().take(3).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        esc(s, out);
    }
    if inc.impacted_services.len() > 3 {
        let _ = write!(out, " +{}", inc.impacted_services.len() - 3);
    }
    out.push_str("<td>");
    if let Some(g) = &inc.assignment_group {
        esc(g, out);
    }
    let (class, word) = sla_word(&item.sla);
    let _ = write!(
        out,
        "<td>{}<td data-since={}>{}<td class=s-{class}>{word}",
        inc.alert_count,
        inc.opened_at.0,
        human(now.0 - inc.opened_at.0),
    );
}

/// `s` cut to `max` characters, the last one an ellipsis when cut.
pub(super) fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// A link to a ticket in a destination, as the incident page lists it.
pub struct TicketLink {
    pub destination: String,
    pub kind: &'static str,
    pub reference: String,
    pub url: Option<String>,
}

/// What the incident page shows besides the incident.
pub struct IncidentPage<'a> {
    pub incident: &'a Incident,
    pub sla: &'a IncidentSla,
    pub alerts: &'a [AlertRecord],
    pub alerts_more: bool,
    pub timeline: &'a [TimelineEntry],
    pub tickets: &'a [TicketLink],
    pub cmdb: &'a Cmdb,
    pub now: Timestamp,
    pub viewer: &'a Viewer,
    /// A message from the last action (`?note=`).
    pub note: Option<&'a str>,
}

fn timer(name: &str, t: &Option<SlaTimer>, now: Timestamp) -> Markup {
    html! {
        div.card data-sla=(name) {
            strong { (name) }
            @match t {
                None => { p.muted { "No target for this priority." } }
                Some(t) => {
                    @let (class, word) = match t.status {
                        SlaStatus::Breached => ("breached", "breached"),
                        SlaStatus::Met => ("met", "met"),
                        SlaStatus::Warning75 => ("warn", "75% used"),
                        SlaStatus::Warning50 => ("warn", "50% used"),
                        SlaStatus::Running => ("ok", "running"),
                    };
                    p { span class={"s-" (class)} { (word) } @if t.paused { " · paused (on hold)" } }
                    p { "Target " (human(i64::try_from(t.target_seconds).unwrap_or(i64::MAX).saturating_mul(1000)))
                        ", used " (human(i64::try_from(t.elapsed_seconds).unwrap_or(i64::MAX).saturating_mul(1000))) }
                    @if matches!(t.status, SlaStatus::Running | SlaStatus::Warning50 | SlaStatus::Warning75) && !t.paused {
                        p { "Due " time data-until=(t.due_at.0) { "in " (human(t.due_at.0 - now.0)) } }
                    } @else if t.status == SlaStatus::Breached {
                        p { "Was due " (when(t.due_at)) }
                    }
                }
            }
        }
    }
}

/// The incident page's body.
pub fn incident(p: &IncidentPage<'_>) -> Markup {
    let inc = p.incident;
    let st = BoardState::of(inc);
    let active = inc.state.is_active();
    let on_hold = st == BoardState::OnHold;
    let can = p.viewer.operator;
    let topo = topology::svg(p.cmdb, inc);
    let action = |op: &str, label: &str, enabled: bool| {
        html! {
            form method="post" action={"/incidents/" (inc.id.0) "/" (op)} {
                input type="hidden" name="csrf" value=(p.viewer.csrf);
                button type="submit" #{"do-" (op)} disabled[!enabled || !can] { (label) }
            }
        }
    };
    html! {
        p { a href="/" { "← All incidents" } }
        @if let Some(n) = p.note { p.banner role="status" #note { (n) } }
        h1 class=(inc.priority.as_str()) {
            span.pri { (inc.priority.as_str()) } " #" (inc.id.0) " " (inc.title)
        }
        @if let Some(m) = inc.links.merged_into {
            p.banner { "Merged into " a href={"/incidents/" (m.0)} { "incident #" (m.0) } "." }
        }
        div.grid {
            div.card #summary {
                dl.kv {
                    dt { "State" } dd #state { (PreEscaped({ let mut s = String::new(); state_cell(inc, &mut s); s })) }
                    dt { "Priority" } dd { (inc.priority.as_str()) " = impact " (level(inc.impact)) " × urgency " (level(inc.urgency)) }
                    dt { "Root cause" } dd #root {
                        @if let Some(r) = &inc.root_ci { a href={"/cis/" (enc(r))} { (r) } } @else { span.muted { "unknown" } }
                        @if inc.root_inferred { " " span.muted title="No alert of its own: enough of its dependents alert at once" { "(inferred)" } }
                    }
                    dt { "Impacted services" } dd #services {
                        @for s in &inc.impact_detail { span.tag { (s.id) " (tier " (s.tier) ")" } }
                        @if inc.impact_detail.is_empty() { @for s in &inc.impacted_services { span.tag { (s) } } }
                        @if inc.impacted_services.is_empty() { span.muted { "none known" } }
                    }
                    dt { "Assignment group" } dd { (inc.assignment_group.as_deref().unwrap_or("-")) }
                    dt { "Alerts" } dd { (inc.alert_count) }
                    dt { "Opened" } dd { (when(inc.opened_at)) " (" time data-since=(inc.opened_at.0) { (human(p.now.0 - inc.opened_at.0)) } " ago)" }
                    @if let (Some(at), Some(by)) = (inc.acknowledged_at, &inc.acknowledged_by) {
                        dt { "Acknowledged" } dd { (when(at)) " by " (by) }
                    }
                    @if let Some(at) = inc.resolved_at { dt { "Resolved" } dd { (when(at)) } }
                    @if inc.reopen_count > 0 { dt { "Reopened" } dd { (inc.reopen_count) " times" } }
                    @if let Some(u) = inc.unannounced.as_deref().filter(|u| !u.destinations.is_empty()) {
                        dt { "Announced" } dd #unannounced {
                            @if u.withheld {
                                "never to " (u.destinations.iter().map(|d| d.destination.as_str()).collect::<Vec<_>>().join(", "))
                                span.muted { " (merged or resolved within its settle delay)" }
                            } @else {
                                "not yet: "
                                @for (i, d) in u.destinations.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (d.destination) " at " (when(d.at))
                                }
                                span.muted title="A new incident waits out its settle delay (outbound.settle): one merged into another meanwhile never pages" { " (settle delay)" }
                            }
                        }
                    }
                    @if !inc.rules.is_empty() { dt { "Rules" } dd { (inc.rules.join(", ")) } }
                }
            }
            (timer("response", &p.sla.response, p.now))
            (timer("resolution", &p.sla.resolution, p.now))
        }
        @if active {
            h2 { "Actions" }
            @if !can { p.muted #read-only { "Your token may read but not act: an operator token is needed." } }
            div.actions {
                (action("ack", "Acknowledge", inc.state == IncidentState::Open))
                @if on_hold {
                    (action("resume", "Resume", true))
                } @else {
                    form method="post" action={"/incidents/" (inc.id.0) "/hold"} {
                        input type="hidden" name="csrf" value=(p.viewer.csrf);
                        label { "Hold reason "
                            input type="text" name="reason" #hold-reason required pattern="[a-z0-9_-]{1,64}"
                                placeholder="awaiting_vendor" disabled[!can];
                        }
                        button type="submit" #do-hold disabled[!can] { "Hold" }
                    }
                }
                (action("resolve", "Resolve", true))
            }
        }
        h2 { "Topology" }
        @match &topo {
            Some(svg) => { figure #topology { (PreEscaped(svg)) figcaption.muted { "Root cause filled"
                @if inc.root_inferred { " (dashed when inferred: no alert of its own)" }
                "; alerting CIs outlined; impacted business services below." } } }
            None => { p.muted { "No CI of this incident is in the CMDB." } }
        }
        h2 { "Links" }
        ul #links {
            @for r in &inc.links.runbooks { li { "Runbook: " a href=(r) rel="noreferrer" { (r) } } }
            @for t in p.tickets {
                li { (t.kind) " " (t.destination) ": "
                    @if let Some(u) = &t.url { a href=(u) rel="noreferrer" { (t.reference) } } @else { (t.reference) } }
            }
            @if let Some(pr) = &inc.links.problem { li { "Problem: " a href={"/problems#" (enc(pr))} { (pr) } } }
            @if let Some(c) = &inc.links.change { li { "Change: " a href={"/changes#" (enc(c))} { (c) } } }
            @for s in &inc.links.similar { li { "Similar: " a href={"/incidents/" (s.0)} { "#" (s.0) } } }
            li { a href={"/api/v1/incidents/" (inc.id.0)} { "JSON" } }
        }
        h2 { "Alerts (" (inc.alert_count) ")" }
        table.wide #alerts {
            thead { tr { th { "Status" } th { "Alert" } th { "Labels" } th { "Started" } th { "Source" } } }
            tbody {
                @for a in p.alerts {
                    tr data-status=(a.status.as_str()) {
                        td { @if a.status == AlertStatus::Firing { strong { "firing" } } @else { "resolved" } @if a.flapping { " (flapping)" } }
                        td {
                            @let name = a.labels.get("alertname").unwrap_or("alert");
                            @if a.generator_url.starts_with("http://") || a.generator_url.starts_with("https://") {
                                a href=(a.generator_url) rel="noreferrer" title="Open in the generator" { (name) }
                            } @else { (name) }
                            @if let Some(s) = a.annotations.get("summary") { br; span.muted { (s) } }
                        }
                        td { @for (k, v) in a.labels.iter() { @if k != "alertname" { span.tag { (k) "=" (v) } } } }
                        td.nowrap { (when(a.starts_at)) }
                        td { (a.source.as_str()) }
                    }
                }
            }
        }
        @if p.alerts_more { p.muted { "More alerts: " a href={"/api/v1/incidents/" (inc.id.0) "/alerts?offset=" (p.alerts.len())} { "the rest as JSON" } } }
        h2 { "Timeline" }
        ol.timeline #timeline {
            @for e in p.timeline {
                li data-kind=(e.kind.as_str()) {
                    time datetime=(e.at.to_rfc3339()) { (when(e.at)) }
                    (e.message)
                    @if let Some(a) = &e.actor { " — " span.actor { (a) } }
                }
            }
        }
    }
}

/// The services page: every catalog service with its SLOs, then the
/// service-management KPIs.
pub fn services(views: &[crate::api::ServiceSummary], overall: &crate::kpi::Kpis) -> Markup {
    html! {
        h1 { "Services" }
        @if views.is_empty() { p.banner { "The CMDB has no services." } }
        table.wide #services {
            thead { tr { th { "Service" } th { "Tier" } th { "SLO" } th { "Availability" } th { "Error budget left" } th { "Burn rate 1h / 6h / 1d / 3d" } th { "SLA compliance" } th { "Open incidents" } } }
            tbody {
                @for s in views {
                    @let first = s.slos.first();
                    tr data-service=(s.id) {
                        td { strong { (s.name) } br; span.muted { (s.id) } @if let Some(o) = &s.owner { br; span.muted { (o) } } }
                        td { (s.tier) }
                        td { @if s.slos.is_empty() { span.muted { "none" } } @for o in &s.slos { div { (o.name) " " (format!("{:.3}%", o.objective * 100.0)) " / " (human(i64::try_from(o.window_seconds).unwrap_or(0) * 1000)) } } }
                        td { @for o in &s.slos { div { @if let Some(f) = &o.figures { (format!("{:.3}%", f.sli * 100.0)) } @else { "-" } } } }
                        td { @for o in &s.slos { div { @if let Some(f) = &o.figures { (budget_bar(f.error_budget_remaining)) } @else { span.muted { "not computed yet" } } } } }
                        td { @for o in &s.slos { div { @if let Some(f) = &o.figures {
                            @for w in ["1h", "6h", "1d", "3d"] { (format!("{:.1}", f.burn_rates.get(w).copied().unwrap_or(0.0))) @if w != "3d" { " / " } }
                        } @else { "-" } } } }
                        td { @match s.sla_compliance { Some(c) => { (format!("{:.1}%", c * 100.0)) } None => { span.muted { "-" } } } }
                        td { @if s.open_incidents > 0 {
                                a href={"/?service=" (enc(&s.id))} { (s.open_incidents) }
                                @if let Some(p) = s.highest_priority { " " span class={"pri " (p.as_str())} { (p.as_str()) } }
                            } @else { "0" } }
                    }
                    @let _ = first;
                }
            }
        }
        (kpi_table(views, overall))
    }
}

/// Percent with one decimal, or `-`.
fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// A mean duration, or `-`.
fn mean(v: Option<f64>) -> String {
    // Seconds of at most a 30-day window: far inside i64 milliseconds.
    v.map_or_else(|| "-".into(), |s| human((s * 1000.0) as i64))
}

/// One row of the KPI table.
fn kpi_cells(k: &crate::kpi::Kpis) -> Markup {
    let noise = |w: &str| k.noise.get(w);
    let inc = |w: &str| k.incidents.get(w);
    let ch = k.changes.get("30d");
    html! {
        td.num { (inc("7d").map_or(0, |f| f.opened)) " / " (inc("30d").map_or(0, |f| f.opened)) }
        td.num { (mean(inc("30d").and_then(|f| f.mtta_seconds))) }
        td.num { (mean(inc("30d").and_then(|f| f.mttr_seconds))) }
        td.num { (pct(k.sla_compliance.get("response").copied())) " / " (pct(k.sla_compliance.get("resolution").copied())) }
        td.num { @match ch {
            Some(c) if c.failed + c.successful + c.pending > 0 => {
                (c.failed) " of " (c.failed + c.successful)
                @if c.pending > 0 { span.muted { " (+" (c.pending) " pending)" } }
                " · " (pct(c.failure_ratio))
            }
            _ => { span.muted { "-" } }
        } }
        td.num { @if let Some(n) = noise("1d") { (n.alerts) " → " (n.incidents) } }
        td.num { (pct(noise("1d").and_then(|n| n.reduction_ratio))) " / " (pct(noise("7d").and_then(|n| n.reduction_ratio))) }
    }
}

/// Incidents, MTTA, MTTR, SLA, change failure and noise reduction per
/// service, with the whole estate's first.
fn kpi_table(views: &[crate::api::ServiceSummary], overall: &crate::kpi::Kpis) -> Markup {
    html! {
        h2 { "ITSM KPIs" }
        p.muted { "Incidents opened 7d / 30d; mean time to acknowledge and to resolve of those opened in 30d; SLA timers met (response / resolution, 30d); changes failed of those decided in 30d (an incident on the changed CI or downstream within its window or failure window) and the failure rate; alerts → incidents in 1d; noise reduction 1d / 7d (1 − incidents / alerts not suppressed)." }
        table.wide #kpis {
            thead { tr { th { "Service" } th { "Incidents" } th { "MTTA" } th { "MTTR" } th { "SLA met" } th { "Change failure" } th { "Alerts → incidents" } th { "Noise reduction" } } }
            tbody {
                tr.overall data-service="" { td { strong { "All services" } } (kpi_cells(overall)) }
                @for s in views {
                    tr data-service=(s.id) {
                        td { (s.name) }
                        @if let Some(k) = &s.kpis { (kpi_cells(k)) } @else { td colspan="7" { span.muted { "not computed yet" } } }
                    }
                }
            }
        }
    }
}

fn budget_bar(left: f64) -> Markup {
    let over = left < 0.0;
    let pct = (left.clamp(0.0, 1.0) * 100.0).round();
    let class = if over {
        "budget over"
    } else if left < 0.25 {
        "budget low"
    } else {
        "budget"
    };
    html! {
        div.budget-row {
            div class=(class) role="meter" aria-valuemin="0" aria-valuemax="100" aria-valuenow=(pct)
                aria-label="error budget remaining" data-remaining=(format!("{left:.4}")) {
                span style={"width:" (pct) "%"} {}
            }
            span class={"budget-label" @if over { " over" }} {
                @if over { "overspent " (format!("{:.0}%", -left * 100.0)) } @else { (format!("{:.0}%", left * 100.0)) " left" }
            }
        }
    }
}

pub fn problems(list: &[Problem]) -> Markup {
    html! {
        h1 { "Problems" }
        @if list.is_empty() { p.banner { "No problem records: no signature has recurred enough yet." } }
        table.wide #problems {
            thead { tr { th { "Problem" } th { "State" } th { "Root CI" } th { "Alert" } th { "Opened" } th { "Incidents" } } }
            tbody {
                @for p in list {
                    tr #(p.id) {
                        td { strong { (p.id) } br; span.muted { (p.signature) } }
                        td { (p.state) }
                        td { @if let Some(r) = &p.root_ci { a href={"/cis/" (enc(r))} { (r) } } }
                        td { (p.alertname) }
                        td.nowrap { (when(p.opened_at)) }
                        td { @for i in &p.incidents { a href={"/incidents/" (i.0)} { "#" (i.0) } " " } }
                    }
                }
            }
        }
    }
}

pub fn changes(list: &[crate::api::ChangeView], now: Timestamp) -> Markup {
    use crate::kpi::ChangeOutcome;
    html! {
        h1 { "Changes" }
        @if list.is_empty() { p.banner { "No change records (POST them to /api/v1/changes)." } }
        table.wide #changes {
            thead { tr { th { "Change" } th { "CI" } th { "State" } th { "Window" } th { "Outcome" } th { "Failed by" } th { "Summary" } } }
            tbody {
                @for v in list {
                    @let c = &v.change;
                    tr #(c.id) data-now=[(c.start <= now && now <= c.end).then_some("in-window")]
                        data-outcome=[v.outcome.map(ChangeOutcome::as_str)] {
                        td { strong { (c.id) } }
                        td { a href={"/cis/" (enc(&c.ci))} { (c.ci) } }
                        td { (format!("{:?}", c.state).to_lowercase()) }
                        td.nowrap { (when(c.start)) br; "→ " (when(c.end)) }
                        td { @match v.outcome {
                            Some(ChangeOutcome::Failed) => { span.outcome.failed { "failed" } }
                            Some(ChangeOutcome::Successful) => { span.outcome.successful { "successful" } }
                            Some(ChangeOutcome::Pending) => { span.muted { "pending" } @if let Some(d) = v.decided_at { " " (when(d)) } }
                            Some(ChangeOutcome::NotImplemented) => { span.muted { "-" } }
                            None => { span.muted { "not computed yet" } }
                        } }
                        td { @for f in &v.failed_by {
                            a href={"/incidents/" (f.id.0)} title=(f.title) { "#" (f.id.0) }
                            @if let Some(r) = &f.root_ci { " " span.muted { (r) } }
                            br;
                        } }
                        td { (c.summary) }
                    }
                }
            }
        }
    }
}

/// The CMDB list: every CI, filtered by a search string.
pub fn cis(cmdb: &Cmdb, q: &str) -> Markup {
    let q = q.trim().to_lowercase();
    let mut list: Vec<_> = cmdb
        .cis()
        .filter(|(_, c)| {
            q.is_empty()
                || c.id.to_lowercase().contains(&q)
                || c.class.to_lowercase().contains(&q)
                || c.name
                    .as_deref()
                    .is_some_and(|n| n.to_lowercase().contains(&q))
        })
        .collect();
    list.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    let total = list.len();
    html! {
        h1 { "CMDB" }
        form.filters method="get" action="/cis" {
            label { "Find a CI" input type="text" name="q" value=(q) #ci-search; }
            button type="submit" { "Search" }
        }
        p.muted { (total) " configuration items" @if total > 1000 { ", first 1000 shown" } }
        table.wide #cis {
            thead { tr { th { "CI" } th { "Class" } th { "Service" } th { "Depends on" } th { "Dependents" } } }
            tbody {
                @for (idx, c) in list.iter().take(1000) {
                    tr {
                        td { a href={"/cis/" (enc(&c.id))} { (c.id) } }
                        td { (c.class) }
                        td { @if let Some(s) = c.service { (cmdb.service(s).id) } }
                        td { @for d in cmdb.depends_on(*idx) { span.tag { (cmdb.ci(*d).id) } } }
                        td { (cmdb.dependents(*idx).len()) }
                    }
                }
            }
        }
    }
}

/// One CI: what it depends on, what depends on it, what it would hurt, and
/// its recent incidents.
pub fn ci(cmdb: &Cmdb, idx: crate::cmdb::CiIdx, recent: &[Incident]) -> Markup {
    let c = cmdb.ci(idx);
    let link = |i: &crate::cmdb::CiIdx| {
        let id = &cmdb.ci(*i).id;
        html! { li { a href={"/cis/" (enc(id))} { (id) } " " span.muted { (cmdb.ci(*i).class) } } }
    };
    html! {
        p { a href="/cis" { "← CMDB" } }
        h1 { (c.id) " " span.muted { (c.class) } }
        div.grid {
            div.card {
                dl.kv {
                    @if let Some(n) = &c.name { dt { "Name" } dd { (n) } }
                    dt { "Service" } dd { @if let Some(s) = c.service { (cmdb.service(s).id) } @else { "-" } }
                    dt { "Owner" } dd { (cmdb.assignment_group(idx).unwrap_or("-")) }
                    @if let Some(r) = &c.runbook { dt { "Runbook" } dd { a href=(r) rel="noreferrer" { (r) } } }
                    @if !c.hostnames.is_empty() { dt { "Hostnames" } dd { (c.hostnames.join(", ")) } }
                }
            }
            div.card #depends-on { strong { "Depends on" } ul { @for d in cmdb.depends_on(idx) { (link(d)) } } @if cmdb.depends_on(idx).is_empty() { p.muted { "nothing" } } }
            div.card #dependents { strong { "Depended on by" } ul { @for d in cmdb.dependents(idx) { (link(d)) } } @if cmdb.dependents(idx).is_empty() { p.muted { "nothing" } } }
            div.card #impact { strong { "Its failure would hurt" } ul { @for s in cmdb.impacted_services(idx) { li { (s.id) " (tier " (s.tier) ")" } } } }
        }
        h2 { "Recent incidents" }
        @if recent.is_empty() { p.muted { "None recorded." } }
        ul #recent {
            @for i in recent {
                li { span class={"pri " (i.priority.as_str())} { (i.priority.as_str()) } " "
                    a href={"/incidents/" (i.id.0)} { "#" (i.id.0) " " (i.title) } " "
                    span.muted { (BoardState::of(i).label()) ", opened " (when(i.opened_at)) } }
            }
        }
    }
}

/// The sign-in form.
pub fn login(csrf: &str, next: &str, error: Option<&str>) -> Markup {
    html! {
        div.login {
            h1 { "Sign in to incidentd" }
            p { "Enter an API token (a read token to look, an operator token to act). It is kept in this browser as an HttpOnly cookie." }
            @if let Some(e) = error { p.banner.error role="alert" #login-error { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input type="password" name="token" #token autocomplete="current-password" required autofocus;
                button.primary type="submit" #sign-in { "Sign in" }
            }
        }
    }
}

/// A page for an error the user can act on.
pub fn message(title: &str, text: &str) -> Markup {
    html! {
        h1 { (title) }
        p.banner.error #message { (text) }
        p { a href="/" { "Back to the incidents" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, p: u8, opened: i64) -> BoardItem {
        let mut i = Incident::test_default();
        i.id = crate::domain::IncidentId(id);
        i.priority = Priority::new(p).expect("priority");
        i.opened_at = Timestamp(opened);
        i.title = format!("incident <{id}>").into();
        i.impacted_services = vec!["shop".into(), "blog".into()].into();
        i.assignment_group = Some("dba".into());
        BoardItem {
            incident: i,
            sla: IncidentSla {
                response: None,
                resolution: None,
            },
        }
    }

    #[test]
    fn board_is_most_urgent_first_then_oldest_and_escapes() {
        let mut items = vec![item(1, 3, 10), item(2, 1, 50), item(3, 1, 20)];
        sort_board(&mut items);
        let ids: Vec<i64> = items.iter().map(|i| i.incident.id.0).collect();
        assert_eq!(ids, [3, 2, 1]);
        let html = board(&items, &Filters::default(), &[], &[], Timestamp(100_000)).into_string();
        assert!(html.contains("incident &lt;3&gt;"));
        assert!(!html.contains("incident <3>"));
        assert!(html.find("href=/incidents/3>") < html.find("href=/incidents/1>"));
        assert!(
            html.contains("href=\"/?priority=P1\" data-count=\"2\""),
            "{html}"
        );
    }

    #[test]
    fn filters_keep_what_they_name() {
        let mut items = vec![item(1, 3, 10), item(2, 1, 50)];
        items[1].incident.assignment_group = Some("web".into());
        items[0].incident.holds.push(crate::domain::Hold {
            reason: "awaiting_vendor".into(),
            start: Timestamp(5),
            end: None,
            by: None,
        });
        let f = Filters {
            group: Some("web".into()),
            ..Filters::default()
        };
        assert!(!f.keeps(&items[0].incident) && f.keeps(&items[1].incident));
        let f = Filters {
            state: Some(BoardState::OnHold),
            ..Filters::default()
        };
        assert!(f.keeps(&items[0].incident) && !f.keeps(&items[1].incident));
        let html = board(&items, &f, &[], &[], Timestamp(100)).into_string();
        assert!(html.contains("on hold (awaiting_vendor)"));
        assert!(html.contains("Showing 1 of 2"));
    }

    /// An incident within its settle delay says so on the board; one
    /// withheld (merged before it) or announced does not.
    #[test]
    fn the_board_marks_incidents_not_announced_yet() {
        use crate::domain::{Pending, Unannounced};
        let mut items = vec![item(1, 3, 10), item(2, 1, 50)];
        items[0].incident.unannounced = Some(Box::new(Unannounced {
            since: Timestamp(10),
            destinations: vec![Pending {
                destination: "pd".into(),
                at: Timestamp(30_010),
            }]
            .into(),
            withheld: false,
        }));
        let html = board(&items, &Filters::default(), &[], &[], Timestamp(100)).into_string();
        assert_eq!(html.matches("not announced yet").count(), 1, "{html}");
        items[0]
            .incident
            .unannounced
            .as_mut()
            .expect("set")
            .withheld = true;
        let html = board(&items, &Filters::default(), &[], &[], Timestamp(100)).into_string();
        assert!(!html.contains("not announced yet"), "{html}");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(61_000), "1m 1s");
        assert_eq!(human(3_720_000), "1h 2m");
        assert_eq!(human(90_000_000), "1d 1h");
        assert_eq!(human(30 * 86_400_000), "30d");
        assert_eq!(human(900_000), "15m");
    }
}
