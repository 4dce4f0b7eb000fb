use super::*;
use crate::change::ChangeState;
use crate::domain::IncidentState;

const MIN: i64 = 60_000;
const T0: i64 = 1_795_000_000_000;

fn at(min: i64) -> Timestamp {
    Timestamp(T0 + min * MIN)
}

fn cmdb() -> Cmdb {
    crate::cmdb::parse_yaml(
        "test",
        r#"
version: 1
services:
  - id: shop
    tier: 1
    sla: { response: { P1: 15m }, resolution: { P1: 1h } }
  - { id: blog, tier: 3 }
cis:
  - { id: net, class: network }
  - { id: db, class: database, depends_on: [net] }
  - { id: web, class: application, service: shop, depends_on: [db] }
  - { id: cms, class: application, service: blog, depends_on: [db] }
  - { id: cdn, class: cdn, service: blog }
"#,
    )
    .expect("valid CMDB")
}

fn change(id: &str, ci: &str, state: ChangeState, start: i64, end: i64) -> ChangeRecord {
    ChangeRecord {
        id: id.into(),
        ci: ci.into(),
        state,
        start: at(start),
        end: at(end),
        summary: String::new(),
    }
}

fn incident(id: i64, root: &str, services: &[&str], opened: i64) -> Incident {
    let mut i = Incident::test_default();
    i.id = IncidentId(id);
    i.priority = Priority::ALL[0];
    i.root_ci = Some(root.into());
    i.impacted_services = services.iter().map(|s| s.to_string()).collect();
    i.opened_at = at(opened);
    i.title = format!("incident {id}").into();
    i
}

fn build(
    changes: &[ChangeRecord],
    incidents: &[Incident],
    alerts: &[AlertTally],
    now: i64,
) -> KpiBook {
    let cmdb = cmdb();
    KpiBook::build(
        &Inputs {
            cmdb: &cmdb,
            changes,
            alerts,
            pause_on: &[],
            failure_window: Duration::from_secs(86_400),
            now: at(now),
        },
        incidents,
    )
}

fn outcome(book: &KpiBook, id: &str) -> (ChangeOutcome, Vec<i64>) {
    let v = book
        .changes
        .iter()
        .find(|v| v.change.id == id)
        .expect("the change is in the book");
    (v.outcome, v.failed_by.iter().map(|f| f.id.0).collect())
}

const DAY: i64 = 24 * 60;

#[test]
fn a_change_fails_by_an_incident_on_its_ci_or_downstream_within_its_failure_window() {
    let changes = [
        // web (downstream of db) breaks 2 h after the window: failed.
        change("C1", "db", ChangeState::Completed, 0, 60),
        // Nothing follows within a day: successful.
        change("C2", "cdn", ChangeState::Approved, 0, 60),
        // The window ended an hour ago: still pending.
        change(
            "C3",
            "cms",
            ChangeState::Approved,
            3 * DAY - 120,
            3 * DAY - 60,
        ),
        // Rejected: no work, no outcome, whatever follows.
        change("C4", "db", ChangeState::Rejected, 0, 60),
        // net is upstream of db: an incident on db does not fail a change
        // on cms, nor one opened before the window.
        change("C5", "cms", ChangeState::Approved, 10, 20),
    ];
    let mut merged = incident(3, "web", &["shop"], 200);
    merged.links.merged_into = Some(IncidentId(1));
    let incidents = [
        incident(1, "web", &["shop"], 180),
        // On db during C1's window (db had no alert of its own: an
        // inferred root, say): C1 failed as it was carried out.
        incident(2, "db", &["shop", "blog"], 12),
        merged,
        // More than a day after C1's window: not C1's doing.
        incident(4, "db", &["shop", "blog"], 60 + DAY + 1),
    ];
    let book = build(&changes, &incidents, &[], 3 * DAY);
    assert_eq!(outcome(&book, "C1"), (ChangeOutcome::Failed, vec![2, 1]));
    assert_eq!(outcome(&book, "C2"), (ChangeOutcome::Successful, vec![]));
    assert_eq!(outcome(&book, "C3"), (ChangeOutcome::Pending, vec![]));
    assert_eq!(
        outcome(&book, "C4"),
        (ChangeOutcome::NotImplemented, vec![])
    );
    assert_eq!(outcome(&book, "C5"), (ChangeOutcome::Successful, vec![]));
    let c1 = &book.changes[book
        .changes
        .iter()
        .position(|v| v.change.id == "C1")
        .unwrap()];
    assert_eq!(c1.decided_at, Some(at(12)));
    assert_eq!(c1.services, ["blog", "shop"], "db's failure reaches both");
    let c2 = book.changes.iter().find(|v| v.change.id == "C2").unwrap();
    assert_eq!(c2.decided_at, Some(at(60 + DAY)));
    assert_eq!(
        book.failed_changes(IncidentId(1))
            .map(|v| v.change.id.as_str())
            .collect::<Vec<_>>(),
        ["C1"]
    );

    // The timelines of both.
    let tl = c1.timeline(Duration::from_secs(86_400), at(3 * DAY));
    let kinds: Vec<&str> = tl.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        ["window_started", "failed", "window_ended", "failed"]
    );
    assert_eq!(
        tl[1].message,
        "incident #2 opened during its window, rooted at db, the changed CI: incident 2"
    );
    assert_eq!(
        tl[3].message,
        "incident #1 opened 2h after its window ended, rooted at web, downstream of db: incident 1"
    );
    let e = c1.incident_entry(at(180));
    assert_eq!(e.kind, crate::domain::TimelineKind::ChangeFailed);
    assert_eq!(
        e.message,
        "counts against change C1 on db: opened 2h after its window ended"
    );
    let tl = c2.timeline(Duration::from_secs(86_400), at(3 * DAY));
    assert_eq!(tl.last().map(|e| e.kind), Some("successful"));

    // Per service over 7 days: C1 counts for shop and blog, C2 (cdn) for
    // blog, C3 and C5 (cms) for blog.
    let shop = &book.services["shop"].changes["7d"];
    assert_eq!((shop.failed, shop.successful, shop.pending), (1, 0, 0));
    assert_eq!(shop.failure_ratio, Some(1.0));
    let blog = &book.services["blog"].changes["7d"];
    assert_eq!((blog.failed, blog.successful, blog.pending), (1, 2, 1));
    assert_eq!(blog.failure_ratio, Some(1.0 / 3.0));
    let all = &book.overall.changes["30d"];
    assert_eq!((all.failed, all.successful, all.pending), (1, 2, 1));
}

#[test]
fn a_change_older_than_the_window_does_not_count_in_it() {
    let changes = [change("C1", "cdn", ChangeState::Approved, 0, 60)];
    let book = build(&changes, &[], &[], 10 * DAY);
    let blog = &book.services["blog"];
    assert_eq!(blog.changes["7d"], ChangeFigures::default());
    assert_eq!(blog.changes["30d"].successful, 1);
    assert_eq!(blog.changes["30d"].failure_ratio, Some(0.0));
}

fn tally(
    ci: Option<&str>,
    rule: Option<&str>,
    attached: bool,
    band: usize,
    (count, opened): (u64, u64),
) -> AlertTally {
    AlertTally {
        ci: ci.map(str::to_string),
        suppressed_rule: rule.map(str::to_string),
        attached,
        band,
        count,
        opened,
    }
}

#[test]
fn noise_counts_alerts_by_their_ci_and_incidents_by_their_impact() {
    let alerts = [
        // The storm of the last hour: 40 alerts on web, one incident
        // (opened by one of them: 39 joined it).
        tally(Some("web"), None, true, 0, (40, 1)),
        // Two suppressed in a change window earlier today, on cms.
        tally(
            Some("cms"),
            Some("suppress-in-change-window"),
            false,
            1,
            (2, 0),
        ),
        // Three that opened nothing (a rule kept them out) this week.
        tally(Some("cdn"), None, false, 2, (3, 0)),
        // Unbound, opened its own incident: only the overall figures know it.
        tally(None, None, true, 2, (1, 1)),
    ];
    let incidents = [
        incident(1, "db", &["shop"], 3 * DAY - 30),
        incident(2, "x", &[], 3 * DAY - 3 * DAY + 10),
    ];
    let book = build(&[], &incidents, &alerts, 3 * DAY);
    let all = &book.overall.noise;
    assert_eq!(
        (
            all["1h"].alerts,
            all["1h"].suppressed,
            all["1h"].correlated,
            all["1h"].incidents
        ),
        (40, 0, 39, 1)
    );
    assert_eq!(all["1h"].reduction_ratio, Some(1.0 - 1.0 / 40.0));
    assert_eq!(all["1d"].alerts, 42);
    assert_eq!(all["1d"].suppressed_by_rule["suppress-in-change-window"], 2);
    assert_eq!(
        (
            all["7d"].alerts,
            all["7d"].suppressed,
            all["7d"].incidents,
            all["7d"].correlated
        ),
        (46, 2, 2, 39)
    );
    assert_eq!(all["7d"].reduction_ratio, Some(1.0 - 2.0 / 44.0));
    let shop = &book.services["shop"].noise["1h"];
    assert_eq!((shop.alerts, shop.incidents, shop.correlated), (40, 1, 39));
    let blog = &book.services["blog"].noise;
    assert_eq!(blog["1h"].alerts, 0);
    assert_eq!(blog["1h"].reduction_ratio, None, "no alert, no ratio");
    assert_eq!((blog["7d"].alerts, blog["7d"].suppressed), (5, 2));
    assert_eq!(
        blog["7d"].reduction_ratio,
        Some(1.0),
        "3 kept alerts, no incident"
    );
}

#[test]
fn mean_times_by_service_and_priority_over_the_windows() {
    let mut a = incident(1, "web", &["shop"], 3 * DAY - 120);
    a.acknowledged_at = Some(at(3 * DAY - 110));
    a.resolved_at = Some(at(3 * DAY - 70));
    a.state = IncidentState::Resolved;
    let mut b = incident(2, "db", &["shop", "blog"], 3 * DAY - 100);
    b.acknowledged_at = Some(at(3 * DAY - 80));
    let mut old = incident(3, "web", &["shop"], -20 * DAY);
    old.resolved_at = Some(at(-20 * DAY + 30));
    old.state = IncidentState::Resolved;
    let book = build(&[], &[a, b, old], &[], 3 * DAY);
    let shop = &book.services["shop"].incidents;
    assert_eq!(shop["7d"].opened, 2);
    assert_eq!(
        shop["7d"].mtta_seconds,
        Some(15.0 * 60.0),
        "10 and 20 minutes"
    );
    assert_eq!(
        shop["7d"].mttr_seconds,
        Some(3000.0),
        "only the resolved one"
    );
    assert_eq!(shop["7d"].by_priority["P1"].opened, 2);
    assert_eq!(shop["7d"].by_priority["P2"].opened, 0);
    assert_eq!(shop["7d"].by_priority["P2"].mtta_seconds, None);
    assert_eq!(shop["30d"].opened, 3);
    assert_eq!(shop["30d"].mttr_seconds, Some((3000.0 + 1800.0) / 2.0));
    let blog = &book.services["blog"].incidents["7d"];
    assert_eq!((blog.opened, blog.mttr_seconds), (1, None));

    // SLA: shop answers P1 in 15 m and resolves in 1 h. a: acked after 10 m
    // (met), resolved after 50 m (met); b: acked after 20 m
    // (breached), unresolved after 100 m (breached while it runs); old (resolved within 30
    // days): nobody acked, resolved after 30 m (response breached,
    // resolution met).
    let sla = &book.services["shop"].sla_compliance;
    assert_eq!(sla.get("response"), Some(&(1.0 / 3.0)));
    assert_eq!(sla.get("resolution"), Some(&(2.0 / 3.0)));
    assert!(
        book.services["blog"].sla_compliance.is_empty(),
        "no targets"
    );
}

#[test]
fn the_exporter_counts_each_decision_once_from_its_first_refresh() {
    let metrics = crate::telemetry::Metrics::new();
    let ex = export::KpiExporter::new(metrics.kpi.clone());
    let changes = [change("C1", "cdn", ChangeState::Approved, 0, 60)];
    let read = || {
        metrics
            .kpi
            .changes
            .with_label_values(&["blog", "successful"])
            .get()
    };
    // Decided before the process started: not counted again.
    let book = build(&changes, &[], &[], 2 * DAY);
    ex.set_book(book);
    assert_eq!(read(), 0);
    // A change decided since: counted once, for each service it reaches.
    let changes = [
        changes[0].clone(),
        change("C2", "cdn", ChangeState::Approved, DAY, DAY + 60),
    ];
    for _ in 0..2 {
        let book = build(&changes, &[], &[], 3 * DAY);
        ex.set_book(book);
        assert_eq!(read(), 1);
    }
    let text = metrics.render();
    assert!(
        text.contains(r#"incidentd_change_failure_ratio{service="blog",window="30d"} 0"#),
        "{text}"
    );
    assert!(text.contains(r#"incidentd_changes_total{outcome="failed",service="shop"} 0"#));
    assert!(
        !text.contains("incidentd_service_mtta_seconds{"),
        "no data, no mean"
    );
}
