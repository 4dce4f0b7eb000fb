//! What the client prints: pure functions from the API's JSON (and the
//! time it is) to text, so every table and line is unit-tested without a
//! server. Fields the JSON lacks print as `-`, never as a failure: an
//! older or newer daemon still gives a readable table.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::fmt::Write;

/// The narrowest a cut column gets, however narrow the terminal.
const MIN_FLEX: usize = 16;

/// Text of a JSON string, `-` for anything else.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Items joined by commas, or `-` when there are none.
fn joined<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return "-".to_string();
    }
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Services with their tiers (`fraud (tier 1), reporting (tier 2)`), or `-`.
fn tiered(v: &Value) -> String {
    let services: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| format!("{} (tier {})", text(&s["id"]), s["tier"]))
                .collect()
        })
        .unwrap_or_default();
    joined(&services)
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A duration as people read it in a table: `45s`, `12m`, `3h05m`, `2d04h`.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// How long ago `at` was.
fn age(at: &Value, now: DateTime<Utc>) -> String {
    time(at).map_or_else(|| "-".into(), |t| duration((now - t).num_seconds()))
}

/// `2026-03-02 08:00:05 UTC`.
fn stamp(v: &Value) -> String {
    time(v).map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// At most `max` characters, the last one `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Columns separated by two spaces, each as wide as its widest cell,
/// except `flex`, which is cut so that a row fits `width`.
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    flex: usize,
}

impl Table {
    fn new(headers: &[&'static str], flex: usize) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
            flex,
        }
    }

    fn render(&self, width: usize) -> String {
        let n = self.headers.len();
        let mut w: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let total: usize = w.iter().sum::<usize>() + 2 * n.saturating_sub(1);
        if total > width && self.flex < n {
            let over = total - width;
            w[self.flex] = w[self.flex]
                .saturating_sub(over)
                .max(MIN_FLEX.min(w[self.flex]));
        }
        let mut out = String::new();
        let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
            let mut l = String::new();
            for (i, c) in cells.enumerate().take(n) {
                let c = cut(c, w[i]);
                if i + 1 < n {
                    let _ = write!(l, "{c:<width$}  ", width = w[i]);
                } else {
                    l.push_str(&c);
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied(), &mut out);
        for r in &self.rows {
            line(&mut r.iter().map(String::as_str), &mut out);
        }
        out
    }
}

/// A list of ids, the first `max` and how many more.
fn some_of(v: &Value, max: usize) -> String {
    let items: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        return "-".into();
    }
    let mut s = items[..items.len().min(max)].join(",");
    if items.len() > max {
        let _ = write!(s, ",+{}", items.len() - max);
    }
    s
}

/// One SLA timer in a few words: `12m left`, `breached`, `met`.
fn timer(t: &Value) -> String {
    let status = text(&t["status"]);
    let mut s = match status {
        "breached" | "met" => status.to_string(),
        _ => {
            let left = t["target_seconds"].as_i64().unwrap_or(0)
                - t["elapsed_seconds"].as_i64().unwrap_or(0);
            format!("{} left", duration(left))
        }
    };
    if t["paused"].as_bool() == Some(true) {
        s.push_str(" (paused)");
    }
    s
}

/// The timer that matters now: the response timer until someone
/// acknowledged, then the resolution timer.
fn sla_cell(inc: &Value) -> String {
    let sla = &inc["sla"];
    let (resp, res) = (&sla["response"], &sla["resolution"]);
    let open = inc["state"] == "open";
    if open && resp.is_object() {
        format!("response {}", timer(resp))
    } else if res.is_object() {
        format!("resolution {}", timer(res))
    } else if resp.is_object() {
        format!("response {}", timer(resp))
    } else {
        "-".into()
    }
}

fn count(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// The state, and `on hold` while a hold runs.
fn state(inc: &Value) -> String {
    let mut s = text(&inc["state"]).to_string();
    let held = inc["holds"]
        .as_array()
        .and_then(|h| h.last())
        .is_some_and(|h| h["end"].is_null());
    if held && s != "resolved" {
        s.push_str(" (on hold)");
    }
    s
}

/// `GET /api/v1/incidents` as a table.
pub fn incidents_table(v: &Value, now: DateTime<Utc>, width: usize) -> String {
    let list = v["incidents"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no incidents\n".into();
    }
    let mut t = Table::new(
        &[
            "ID", "PRI", "STATE", "AGE", "TITLE", "ROOT CI", "SERVICES", "ALERTS", "SLA",
        ],
        4,
    );
    for i in &list {
        t.rows.push(vec![
            i["id"].to_string(),
            text(&i["priority"]).into(),
            state(i),
            age(&i["opened_at"], now),
            text(&i["title"]).into(),
            text(&i["root_ci"]).into(),
            some_of(&i["impacted_services"], 2),
            count(&i["alert_fingerprints"]).to_string(),
            sla_cell(i),
        ]);
    }
    let mut out = t.render(width);
    if let Some(before) = v["next_before"].as_i64() {
        let _ = writeln!(
            out,
            "(more: older incidents have ids below {before}; raise --limit)"
        );
    }
    out
}

/// One timer's line of the detail view.
fn timer_line(name: &str, t: &Value, now: DateTime<Utc>) -> String {
    if !t.is_object() {
        return format!("  {name:<11} no target for this priority\n");
    }
    let target = duration(t["target_seconds"].as_i64().unwrap_or(0));
    let elapsed = duration(t["elapsed_seconds"].as_i64().unwrap_or(0));
    let mut l = format!(
        "  {name:<11} {}  target {target}, elapsed {elapsed}, due {}",
        timer(t),
        stamp(&t["due_at"])
    );
    if let Some(b) = time(&t["breached_at"]) {
        let _ = write!(l, ", breached {} ago", duration((now - b).num_seconds()));
    }
    l.push('\n');
    l
}

/// `GET /api/v1/incidents/{id}`: summary, SLA timers, alerts, timeline.
pub fn incident_detail(v: &Value, now: DateTime<Utc>, width: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Incident {}  {}  {}",
        v["id"],
        text(&v["priority"]),
        state(v)
    );
    let _ = writeln!(o, "Title:        {}", text(&v["title"]));
    let _ = writeln!(
        o,
        "Opened:       {} ({} ago)",
        stamp(&v["opened_at"]),
        age(&v["opened_at"], now)
    );
    if !v["acknowledged_at"].is_null() {
        let _ = writeln!(
            o,
            "Acknowledged: {} by {}",
            stamp(&v["acknowledged_at"]),
            text(&v["acknowledged_by"])
        );
    }
    if !v["resolved_at"].is_null() {
        let _ = writeln!(o, "Resolved:     {}", stamp(&v["resolved_at"]));
    }
    let inferred = if v["root_inferred"] == true {
        " (inferred: no alert of its own)"
    } else {
        ""
    };
    let _ = writeln!(o, "Root CI:      {}{inferred}", text(&v["root_ci"]));
    let _ = writeln!(o, "Services:     {}", tiered(&v["impact_detail"]));
    let _ = writeln!(
        o,
        "Impact:       {}   Urgency: {}   Assignment group: {}",
        v["impact"],
        v["urgency"],
        text(&v["assignment_group"])
    );
    if let Some(h) = v["holds"]
        .as_array()
        .and_then(|h| h.last())
        .filter(|h| h["end"].is_null())
    {
        let by = h["by"]
            .as_str()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "On hold:      {} since {}{by}",
            text(&h["reason"]),
            stamp(&h["start"])
        );
    }
    if let Some(at) = time(&v["auto_resolve_at"]) {
        let _ = writeln!(
            o,
            "Auto-resolve: {} (in {}) unless an alert fires again",
            stamp(&v["auto_resolve_at"]),
            duration((at - now).num_seconds())
        );
    }
    let u = &v["unannounced"];
    if let Some(dests) = u["destinations"].as_array().filter(|d| !d.is_empty()) {
        let names: Vec<String> = dests
            .iter()
            .map(|d| {
                let name = text(&d["destination"]);
                match time(&d["at"]) {
                    Some(at) if at > now && u["withheld"] != true => {
                        format!(
                            "{name} at {} (in {})",
                            stamp(&d["at"]),
                            duration((at - now).num_seconds())
                        )
                    }
                    _ => name.to_string(),
                }
            })
            .collect();
        let _ = if u["withheld"] == true {
            writeln!(
                o,
                "Announced:    never to {} (merged or resolved within its settle delay)",
                names.join(", ")
            )
        } else if dests
            .iter()
            .all(|d| time(&d["at"]).is_some_and(|at| at <= now))
        {
            writeln!(
                o,
                "Announced:    not yet to {} (its alerts cleared within its settle delay: told if one fires again)",
                names.join(", ")
            )
        } else {
            writeln!(
                o,
                "Announced:    not yet to {} (settle delay: it may still merge)",
                names.join(", ")
            )
        };
    }
    let links = &v["links"];
    let mut l: Vec<String> = Vec::new();
    for r in links["runbooks"].as_array().into_iter().flatten() {
        l.push(format!("runbook {}", text(r)));
    }
    for (k, name) in [("change", "change"), ("problem", "problem")] {
        if let Some(x) = links[k].as_str() {
            l.push(format!("{name} {x}"));
        }
    }
    if let Some(m) = links["merged_into"].as_i64() {
        l.push(format!("merged into {m}"));
    }
    if !l.is_empty() {
        let _ = writeln!(o, "Links:        {}", l.join(", "));
    }
    o.push_str("\nSLA\n");
    o.push_str(&timer_line("response", &v["sla"]["response"], now));
    o.push_str(&timer_line("resolution", &v["sla"]["resolution"], now));

    let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
    let firing = alerts.iter().filter(|a| a["status"] == "firing").count();
    let _ = writeln!(
        o,
        "\nAlerts ({} firing, {} resolved)",
        firing,
        alerts.len() - firing
    );
    let mut t = Table::new(&["STATUS", "ALERTNAME", "STARTED", "ENDED", "SUMMARY"], 4);
    for a in &alerts {
        let summary = a["annotations"]["summary"]
            .as_str()
            .or_else(|| a["labels"]["instance"].as_str())
            .unwrap_or("-");
        t.rows.push(vec![
            text(&a["status"]).into(),
            text(&a["labels"]["alertname"]).into(),
            stamp(&a["starts_at"]),
            if a["ends_at"].is_null() {
                "-".into()
            } else {
                stamp(&a["ends_at"])
            },
            summary.replace('\n', " "),
        ]);
    }
    for line in t.render(width.saturating_sub(2)).lines() {
        let _ = writeln!(o, "  {line}");
    }
    if let Some(n) = v["alerts_next"].as_u64() {
        let _ = writeln!(
            o,
            "  (more alerts: GET /api/v1/incidents/{}/alerts?offset={n})",
            v["id"]
        );
    }
    o.push_str("\nTimeline (UTC)\n");
    o.push_str(&timeline(&v["timeline"]));
    if let Some(n) = v["timeline_next"].as_u64() {
        let _ = writeln!(
            o,
            "  (more: GET /api/v1/incidents/{}/timeline?offset={n})",
            v["id"]
        );
    }
    o
}

/// Timeline entries as `08:00:05  opened by alert PostgresDown …`, in
/// the order they happened (the record keeps the order they were written:
/// an SLA warning found by a later tick, an alert delivered late, come
/// after what followed them), with a date line whenever the day changes.
pub fn timeline(v: &Value) -> String {
    let mut entries: Vec<(DateTime<Utc>, &Value)> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| time(&e["at"]).map(|t| (t, e)))
        .collect();
    // Stable: entries of one instant keep their written order.
    entries.sort_by_key(|(t, _)| *t);
    let mut o = String::new();
    let mut day = String::new();
    for (at, e) in entries {
        let d = at.format("%Y-%m-%d").to_string();
        if d != day {
            let _ = writeln!(o, "  {d}");
            day = d;
        }
        let message = text(&e["message"]);
        let mut line = format!("  {}  {message}", at.format("%H:%M:%S"));
        if let Some(actor) = e["actor"].as_str().filter(|a| !message.contains(a)) {
            let _ = write!(line, " (by {actor})");
        }
        o.push_str(&line);
        o.push('\n');
    }
    o
}

/// What an action did, in one line: `incident 4 acknowledged by alice
/// (P2, acknowledged); SLA: resolution 3h59m left`.
pub fn action_done(op: &str, v: &Value) -> String {
    if v["status"] == "forwarded" {
        return format!(
            "incident {}: {op} forwarded to the instance that owns it (shard {}); it applies it shortly\n",
            v["id"], v["shard"]
        );
    }
    let done = match op {
        "ack" => "acknowledged",
        "resolve" => "resolved",
        "hold" => "put on hold",
        _ => "taken off hold",
    };
    format!(
        "incident {} {done} ({}, {}); SLA: {}\n",
        v["id"],
        text(&v["priority"]),
        state(v),
        sla_cell(v)
    )
}

fn ratio_percent(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |r| format!("{:.digits$}%", r * 100.0))
}

fn number(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

/// `GET /api/v1/services`: one row per SLO (a service without one, one row).
pub fn services_table(v: &Value, width: usize) -> String {
    let list = v["services"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no services in the CMDB\n".into();
    }
    let mut t = Table::new(
        &[
            "SERVICE",
            "TIER",
            "SLO",
            "OBJECTIVE",
            "AVAILABILITY",
            "BUDGET LEFT",
            "BURN 1H",
            "BURN 6H",
            "OPEN",
            "TOP",
        ],
        0,
    );
    for s in &list {
        let open = s["open_incidents"].as_u64().unwrap_or(0).to_string();
        let top = text(&s["highest_priority"]).to_string();
        let slos = s["slos"].as_array().cloned().unwrap_or_default();
        if slos.is_empty() {
            t.rows.push(vec![
                text(&s["id"]).into(),
                s["tier"].to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                open.clone(),
                top.clone(),
            ]);
        }
        for o in &slos {
            let f = &o["figures"];
            t.rows.push(vec![
                text(&s["id"]).into(),
                s["tier"].to_string(),
                text(&o["name"]).into(),
                ratio_percent(&o["objective"], 2),
                ratio_percent(&f["sli"], 3),
                ratio_percent(&f["error_budget_remaining"], 1),
                number(&f["burn_rates"]["1h"]),
                number(&f["burn_rates"]["6h"]),
                open.clone(),
                top.clone(),
            ]);
        }
    }
    t.render(width)
}

/// The ITSM KPIs of `GET /api/v1/services`: the estate's, then one row
/// per service (`None` when the daemon sent none).
pub fn kpis_table(v: &Value, width: usize) -> Option<String> {
    let list = v["services"].as_array()?;
    if v["overall"].is_null() {
        return None;
    }
    let mut t = Table::new(
        &[
            "SERVICE",
            "INC 7D",
            "INC 30D",
            "MTTA 30D",
            "MTTR 30D",
            "SLA MET",
            "CHANGES 30D",
            "CHANGE FAIL",
            "ALERTS 1D",
            "NOISE CUT 1D",
            "NOISE CUT 7D",
        ],
        0,
    );
    let mean = |x: &Value| {
        x.as_f64()
            .map_or_else(|| "-".into(), |s| duration(s.round() as i64))
    };
    let row = |name: &str, k: &Value| -> Vec<String> {
        let inc = &k["incidents"];
        let ch = &k["changes"]["30d"];
        let decided = ch["failed"].as_u64().unwrap_or(0) + ch["successful"].as_u64().unwrap_or(0);
        let sla = match (
            k["sla_compliance"]["response"].as_f64(),
            k["sla_compliance"]["resolution"].as_f64(),
        ) {
            (None, None) => "-".to_string(),
            (r, s) => format!(
                "{}/{}",
                ratio_percent(&r.map_or(Value::Null, Value::from), 0),
                ratio_percent(&s.map_or(Value::Null, Value::from), 0)
            ),
        };
        let noise = &k["noise"]["1d"];
        vec![
            name.to_string(),
            inc["7d"]["opened"].as_u64().unwrap_or(0).to_string(),
            inc["30d"]["opened"].as_u64().unwrap_or(0).to_string(),
            mean(&inc["30d"]["mtta_seconds"]),
            mean(&inc["30d"]["mttr_seconds"]),
            sla,
            format!("{} of {decided}", ch["failed"].as_u64().unwrap_or(0)),
            ratio_percent(&ch["failure_ratio"], 0),
            format!(
                "{}→{}",
                noise["alerts"].as_u64().unwrap_or(0),
                noise["incidents"].as_u64().unwrap_or(0)
            ),
            ratio_percent(&noise["reduction_ratio"], 1),
            ratio_percent(&k["noise"]["7d"]["reduction_ratio"], 1),
        ]
    };
    t.rows.push(row("(all)", &v["overall"]));
    // Services with nothing in any window are left out (a catalog of
    // hundreds would bury the few that had something), and counted.
    let quiet = |k: &Value| {
        let n = |x: &Value| x.as_u64().unwrap_or(0);
        let ch = &k["changes"]["30d"];
        n(&k["incidents"]["30d"]["opened"]) == 0
            && n(&ch["failed"]) + n(&ch["successful"]) + n(&ch["pending"]) == 0
            && n(&k["noise"]["7d"]["alerts"]) == 0
    };
    let mut hidden = 0;
    for s in list {
        match &s["kpis"] {
            Value::Null => {}
            k if quiet(k) => hidden += 1,
            k => t.rows.push(row(text(&s["id"]), k)),
        }
    }
    let mut out = t.render(width);
    if hidden > 0 {
        let noun = if hidden == 1 { "service" } else { "services" };
        out.push_str(&format!(
            "({hidden} {noun} without incidents, changes or alerts in the windows not shown)\n"
        ));
    }
    Some(out)
}

/// `GET /api/v1/cis` as a table.
pub fn cis_table(v: &Value, width: usize) -> String {
    let list = v["cis"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no CIs\n".into();
    }
    let mut t = Table::new(
        &["ID", "CLASS", "SERVICE", "ASSIGNMENT GROUP", "DEPENDS ON"],
        4,
    );
    for c in &list {
        t.rows.push(vec![
            text(&c["id"]).into(),
            text(&c["class"]).into(),
            text(&c["service"]).into(),
            text(&c["assignment_group"]).into(),
            some_of(&c["depends_on"], 4),
        ]);
    }
    let mut out = t.render(width);
    if let Some(n) = v["next_offset"].as_u64() {
        let _ = writeln!(
            out,
            "({} of {} CIs shown; raise --limit)",
            n,
            v["total"].as_u64().unwrap_or(n)
        );
    }
    out
}

/// `GET /api/v1/cis/{id}`.
pub fn ci_detail(v: &Value) -> String {
    let list = |x: &Value| {
        let items: Vec<&str> = x
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        joined(&items)
    };
    let mut o = String::new();
    let _ = writeln!(o, "CI {}", text(&v["id"]));
    if let Some(n) = v["name"].as_str() {
        let _ = writeln!(o, "Name:              {n}");
    }
    let _ = writeln!(o, "Class:             {}", text(&v["class"]));
    let _ = writeln!(o, "Service:           {}", text(&v["service"]));
    let _ = writeln!(o, "Owner:             {}", text(&v["owner"]));
    let _ = writeln!(o, "Hostnames:         {}", list(&v["hostnames"]));
    let matches: Vec<String> = v["match"]
        .as_object()
        .map(|m| m.iter().map(|(k, x)| format!("{k}={}", text(x))).collect())
        .unwrap_or_default();
    let _ = writeln!(o, "Match labels:      {}", joined(&matches));
    if let Some(r) = v["runbook"].as_str() {
        let _ = writeln!(o, "Runbook:           {r}");
    }
    let _ = writeln!(o, "Depends on:        {}", list(&v["depends_on"]));
    let _ = writeln!(o, "Upstream (all):    {}", list(&v["upstream"]));
    let _ = writeln!(o, "Dependents:        {}", list(&v["dependents"]));
    let _ = writeln!(o, "Its failure hurts: {}", tiered(&v["impacted_services"]));
    o
}

/// `GET /api/v1/alerts` (firing, or `suppressed`) as a table.
pub fn alerts_table(v: &Value, suppressed: bool, now: DateTime<Utc>, width: usize) -> String {
    let list = v["alerts"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return if suppressed {
            "no suppressed alerts firing\n".into()
        } else {
            "no alerts firing\n".into()
        };
    }
    let mut t = if suppressed {
        Table::new(&["AGE", "ALERTNAME", "CI", "SERVICE", "RULE", "REASON"], 5)
    } else {
        Table::new(
            &["AGE", "ALERTNAME", "CI", "SERVICE", "INCIDENT", "SUMMARY"],
            5,
        )
    };
    for a in &list {
        let mut row = vec![
            age(&a["starts_at"], now),
            text(&a["alertname"]).into(),
            text(&a["ci"]).into(),
            text(&a["service"]).into(),
        ];
        if suppressed {
            row.push(text(&a["suppressed"]["rule"]).into());
            row.push(text(&a["suppressed"]["reason"]).into());
        } else {
            row.push(a["incident"].as_i64().map_or("-".into(), |i| i.to_string()));
            row.push(text(&a["annotations"]["summary"]).replace('\n', " "));
        }
        t.rows.push(row);
    }
    let mut out = t.render(width);
    if let Some(n) = v["next_offset"].as_u64() {
        let _ = writeln!(out, "(first {n} shown; raise --limit)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn incident() -> Value {
        json!({
            "id": 42, "state": "open", "priority": "P1", "title": "PostgresDown on pg-main: primary is not answering queries at all",
            "root_ci": "pg-main", "impacted_services": ["pricing", "inventory", "fraud"],
            "impact_detail": [{"id": "pricing", "tier": 1}],
            "alert_fingerprints": ["a", "b"], "opened_at": "2026-03-02T09:48:00Z",
            "acknowledged_at": null, "resolved_at": null, "holds": [], "auto_resolve_at": null,
            "links": {"runbooks": ["https://runbooks.example.com/pg"]}, "impact": 1, "urgency": 1,
            "assignment_group": "team-dba",
            "sla": {
                "response": {"target_seconds": 900, "elapsed_seconds": 720, "due_at": "2026-03-02T10:03:00Z",
                    "warned_50_at": "2026-03-02T09:55:30Z", "warned_75_at": null, "breached_at": null,
                    "status": "warning50", "paused": false},
                "resolution": {"target_seconds": 14400, "elapsed_seconds": 720, "due_at": "2026-03-02T13:48:00Z",
                    "warned_50_at": null, "warned_75_at": null, "breached_at": null, "status": "running", "paused": false}
            }
        })
    }

    #[test]
    fn durations_read_compactly() {
        assert_eq!(duration(-5), "0s");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(12 * 60 + 5), "12m");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3h05m");
        assert_eq!(duration(2 * 86_400 + 4 * 3600), "2d04h");
    }

    #[test]
    fn the_incident_table_has_a_row_per_incident_with_its_sla() {
        let out = incidents_table(
            &json!({ "incidents": [incident()], "next_before": null }),
            now(),
            200,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].starts_with("ID  PRI  STATE"), "{out}");
        let row = lines[1];
        for want in [
            "42",
            "P1",
            "open",
            "12m",
            "PostgresDown on pg-main",
            "pricing,inventory,+1",
            "response 3m left",
        ] {
            assert!(row.contains(want), "{want:?} missing: {row}");
        }
        // Columns line up under their headers.
        assert_eq!(lines[0].find("TITLE"), row.find("PostgresDown"));
    }

    #[test]
    fn a_narrow_terminal_cuts_the_title_only() {
        let out = incidents_table(&json!({ "incidents": [incident()] }), now(), 100);
        let row = out.lines().nth(1).expect("row");
        assert!(row.chars().count() <= 100, "{row}");
        assert!(
            row.contains('…') && row.contains("pg-main") && row.contains("response 3m left"),
            "{row}"
        );
        // However narrow, a title keeps a readable start.
        let narrow = incidents_table(&json!({ "incidents": [incident()] }), now(), 20);
        assert!(narrow.contains("PostgresDown on…"), "{narrow}");
    }

    #[test]
    fn acknowledged_incidents_show_the_resolution_timer_and_holds() {
        let mut i = incident();
        i["state"] = json!("acknowledged");
        i["holds"] =
            json!([{"reason": "awaiting_vendor", "start": "2026-03-02T09:58:00Z", "end": null}]);
        i["sla"]["resolution"]["paused"] = json!(true);
        let out = incidents_table(&json!({ "incidents": [i] }), now(), 300);
        assert!(out.contains("acknowledged (on hold)"), "{out}");
        assert!(out.contains("resolution 3h48m left (paused)"), "{out}");
        assert_eq!(
            incidents_table(&json!({ "incidents": [] }), now(), 80),
            "no incidents\n"
        );
    }

    #[test]
    fn the_detail_shows_timers_alerts_and_a_readable_timeline() {
        let mut i = incident();
        i["auto_resolve_at"] = json!("2026-03-02T10:04:00Z");
        i["alerts"] = json!([
            {"status": "firing", "labels": {"alertname": "PostgresDown", "instance": "pg-main:9187"},
             "annotations": {"summary": "primary down"}, "starts_at": "2026-03-02T09:48:00Z", "ends_at": null},
            {"status": "resolved", "labels": {"alertname": "PgReplicaLag"}, "annotations": {},
             "starts_at": "2026-03-02T09:49:00Z", "ends_at": "2026-03-02T09:55:00Z"}
        ]);
        i["timeline"] = json!([
            {"at": "2026-03-02T09:48:00Z", "kind": "opened", "message": "opened by alert PostgresDown (abc); root CI pg-main"},
            {"at": "2026-03-02T09:50:05Z", "kind": "acknowledged", "message": "acknowledged by alice", "actor": "alice"},
            {"at": "2026-03-02T09:51:00Z", "kind": "on_hold", "message": "on hold: awaiting_vendor", "actor": "bob"},
            {"at": "2026-03-02T09:49:00Z", "kind": "sla_warning", "message": "SLA response: 50 % of the 15m target used"}
        ]);
        let out = incident_detail(&i, now(), 120);
        for want in [
            "Incident 42  P1  open",
            "Services:     pricing (tier 1)",
            "Auto-resolve: 2026-03-02 10:04:00 UTC (in 4m) unless an alert fires again",
            "runbook https://runbooks.example.com/pg",
            "response    3m left  target 15m, elapsed 12m, due 2026-03-02 10:03:00 UTC",
            "resolution  3h48m left",
            "Alerts (1 firing, 1 resolved)",
            "firing    PostgresDown",
            "2026-03-02\n  09:48:00  opened by alert PostgresDown (abc); root CI pg-main\n  09:49:00  SLA response",
            "09:50:05  acknowledged by alice\n",
            "09:51:00  on hold: awaiting_vendor (by bob)\n",
        ] {
            assert!(out.contains(want), "{want:?} missing:\n{out}");
        }
    }

    #[test]
    fn an_incident_still_settling_says_who_has_not_heard_of_it() {
        let mut i = incident();
        assert!(!incident_detail(&i, now(), 120).contains("Announced:"));
        i["unannounced"] = json!({"since": "2026-03-02T09:59:50Z",
            "destinations": [{"destination": "pd", "at": "2026-03-02T10:00:20Z"}]});
        let out = incident_detail(&i, now(), 120);
        assert!(
            out.contains("Announced:    not yet to pd at 2026-03-02 10:00:20 UTC (in 20s) (settle delay: it may still merge)\n"),
            "{out}"
        );
        i["unannounced"]["destinations"][0]["at"] = json!("2026-03-02T09:59:55Z");
        let out = incident_detail(&i, now(), 120);
        assert!(
            out.contains("Announced:    not yet to pd (its alerts cleared within its settle delay: told if one fires again)\n"),
            "{out}"
        );
        i["unannounced"]["withheld"] = json!(true);
        let out = incident_detail(&i, now(), 120);
        assert!(
            out.contains(
                "Announced:    never to pd (merged or resolved within its settle delay)\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn an_inferred_root_says_so() {
        let mut i = incident();
        assert!(incident_detail(&i, now(), 120).contains("Root CI:      pg-main\n"));
        i["root_inferred"] = json!(true);
        let out = incident_detail(&i, now(), 120);
        assert!(
            out.contains("Root CI:      pg-main (inferred: no alert of its own)\n"),
            "{out}"
        );
    }

    #[test]
    fn an_action_says_what_changed_and_the_sla() {
        let mut i = incident();
        i["state"] = json!("acknowledged");
        assert_eq!(
            action_done("ack", &i),
            "incident 42 acknowledged (P1, acknowledged); SLA: resolution 3h48m left\n"
        );
        let f = json!({"id": 7, "status": "forwarded", "shard": 1025});
        assert!(action_done("resolve", &f).contains("forwarded"));
    }

    #[test]
    fn services_show_one_row_per_slo_with_budget_and_burn() {
        let v = json!({"services": [
            {"id": "pricing", "tier": 1, "open_incidents": 2, "highest_priority": "P1",
             "slos": [{"name": "availability", "objective": 0.999, "window_seconds": 2592000,
                       "figures": {"sli": 0.99993, "error_budget_remaining": 0.9306, "bad_seconds": 180.0,
                                   "valid_seconds": 2592000.0, "burn_rates": {"1h": 50.0, "6h": 8.333}}}]},
            {"id": "blog", "tier": 3, "open_incidents": 0, "highest_priority": null, "slos": []}
        ]});
        let out = services_table(&v, 200);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        for want in [
            "pricing",
            "availability",
            "99.90%",
            "99.993%",
            "93.1%",
            "50.00",
            "8.33",
            "2",
            "P1",
        ] {
            assert!(lines[1].contains(want), "{want:?} missing: {}", lines[1]);
        }
        assert!(lines[2].starts_with("blog"), "{out}");
    }

    #[test]
    fn kpis_show_the_estate_then_each_service() {
        let k = json!({
            "incidents": {"7d": {"opened": 2}, "30d": {"opened": 5, "mtta_seconds": 300.0, "mttr_seconds": 7260.0}},
            "changes": {"30d": {"failed": 1, "successful": 3, "pending": 1, "failure_ratio": 0.25}},
            "sla_compliance": {"response": 1.0, "resolution": 0.5},
            "noise": {"1d": {"alerts": 40, "incidents": 1, "reduction_ratio": 0.975}, "7d": {"reduction_ratio": 0.9}}
        });
        let quiet = json!({"incidents": {"30d": {"opened": 0}}, "changes": {"30d": {}}, "noise": {"7d": {"alerts": 0}}});
        let v = json!({"overall": k, "services": [
            {"id": "pricing", "kpis": k}, {"id": "new", "kpis": null}, {"id": "blog", "kpis": quiet}
        ]});
        let out = kpis_table(&v, 200).expect("a table");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.len(),
            4,
            "header, the estate, pricing, the quiet count: {out}"
        );
        assert_eq!(
            lines[3],
            "(1 service without incidents, changes or alerts in the windows not shown)"
        );
        assert!(lines[1].starts_with("(all)"), "{out}");
        for want in [
            "5", "5m", "2h01m", "100%/50%", "1 of 4", "25%", "40→1", "97.5%", "90.0%",
        ] {
            assert!(lines[2].contains(want), "{want:?} missing: {}", lines[2]);
        }
        assert!(kpis_table(&json!({"services": []}), 200).is_none());
    }

    #[test]
    fn cis_and_alerts_tables() {
        let cis = json!({"cis": [{"id": "pg-main", "class": "database", "service": "pricing",
            "assignment_group": "team-dba", "depends_on": []}], "total": 1, "next_offset": null});
        let out = cis_table(&cis, 120);
        assert!(
            out.lines().nth(1).is_some_and(|l| l.starts_with("pg-main")
                && l.contains("database")
                && l.contains("team-dba")),
            "{out}"
        );
        let detail = ci_detail(
            &json!({"id": "pg-main", "class": "database", "service": "pricing",
            "owner": "team-dba", "hostnames": ["pg-1"], "match": {"job": "postgres"},
            "depends_on": [], "upstream": [], "dependents": ["api"],
            "impacted_services": [{"id": "pricing", "tier": 1}]}),
        );
        assert!(
            detail.contains("Match labels:      job=postgres"),
            "{detail}"
        );
        assert!(
            detail.contains("Its failure hurts: pricing (tier 1)"),
            "{detail}"
        );
        let alerts = json!({"alerts": [{"alertname": "Heartbeat", "starts_at": "2026-03-02T09:00:00Z",
            "ci": null, "service": null, "incident": null,
            "suppressed": {"rule": "suppress-heartbeats", "reason": "heartbeat alerts are not incidents"}}],
            "next_offset": null});
        let s = alerts_table(&alerts, true, now(), 200);
        assert!(
            s.contains("suppress-heartbeats") && s.contains("heartbeat alerts are not incidents"),
            "{s}"
        );
        assert!(
            s.lines().nth(1).is_some_and(|l| l.starts_with("1h00m")),
            "{s}"
        );
        assert_eq!(
            alerts_table(&json!({"alerts": []}), false, now(), 80),
            "no alerts firing\n"
        );
    }
}
