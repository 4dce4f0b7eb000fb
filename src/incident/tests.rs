use super::*;
use crate::domain::{LabelSet, Source};
use crate::store::Restore;

const MIN: i64 = 60_000;
const T0: i64 = 1_772_438_400_000; // 2026-03-02T08:00:00Z

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn firing(pairs: &[(&str, &str)], start_min: i64) -> Event {
    let labels = labels(pairs);
    Event::Alert(Alert {
        fingerprint: Fingerprint::of_labels(&labels),
        status: AlertStatus::Firing,
        labels,
        annotations: LabelSet::new(),
        starts_at: Timestamp(T0 + start_min * MIN),
        ends_at: None,
        source: Source::Alertmanager,
        generator_url: String::new(),
    })
}

fn resolved(pairs: &[(&str, &str)], start_min: i64, end_min: i64) -> Event {
    let labels = labels(pairs);
    Event::Alert(Alert {
        fingerprint: Fingerprint::of_labels(&labels),
        status: AlertStatus::Resolved,
        labels,
        annotations: LabelSet::new(),
        starts_at: Timestamp(T0 + start_min * MIN),
        ends_at: Some(Timestamp(T0 + end_min * MIN)),
        source: Source::Alertmanager,
        generator_url: String::new(),
    })
}

fn at(min: i64) -> Timestamp {
    Timestamp(T0 + min * MIN)
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Arc::new(RuleSet::empty()))
}

const DOWN_A: &[(&str, &str)] = &[
    ("alertname", "HostDown"),
    ("instance", "a:9100"),
    ("severity", "critical"),
];
const DOWN_A_OTHER_JOB: &[(&str, &str)] = &[
    ("alertname", "HostDown"),
    ("instance", "a:9100"),
    ("job", "blackbox"),
    ("severity", "warning"),
];
const DOWN_B: &[(&str, &str)] = &[
    ("alertname", "HostDown"),
    ("instance", "b:9100"),
    ("severity", "warning"),
];

fn states(e: &Engine) -> Vec<(i64, IncidentState, usize)> {
    let mut v: Vec<_> = e
        .incidents
        .values()
        .map(|t| (t.inc.id.0, t.inc.state, t.inc.alert_fingerprints.len()))
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

#[test]
fn opens_one_incident_and_dedups_repeats() {
    let mut e = engine();
    let out = e.ingest(vec![firing(DOWN_A, 0)], at(0));
    assert_eq!((out.new, out.deduplicated), (1, 0));
    let (seq, ops) = e.take_batch().expect("new alert is written");
    assert_eq!(seq, out.wait_seq);
    assert!(ops.iter().any(|o| matches!(o, StoreOp::InsertAlert(_))));
    assert!(
        ops.iter()
            .any(|o| matches!(o, StoreOp::UpsertIncident(i) if i.state == IncidentState::Open))
    );
    // HA twin and periodic re-sends: no write at all, only counters.
    let out = e.ingest(vec![firing(DOWN_A, 0), firing(DOWN_A, 0)], at(1));
    assert_eq!((out.new, out.deduplicated), (0, 2));
    assert!(
        e.take_batch().is_none(),
        "repeats must not write immediately"
    );
    assert_eq!(
        out.wait_seq, seq,
        "a repeat waits for the batch that first wrote its alert"
    );
    e.flush_touches();
    let (_, ops) = e.take_batch().expect("coalesced touch");
    assert!(matches!(&ops[0], StoreOp::TouchAlerts(t) if t.len() == 1 && t[0].deliveries == 3));
    assert_eq!(ops.len(), 1, "a repeat touches its alert only: {ops:?}");
    assert_eq!(states(&e), vec![(1, IncidentState::Open, 1)]);
    let inc = e.incident(IncidentId(1)).unwrap();
    assert_eq!(
        inc.priority,
        Priority::new(2).unwrap(),
        "critical + default impact medium = P2"
    );
    assert_eq!(&*inc.title, "HostDown on a");
}

#[test]
fn same_target_joins_other_target_separate() {
    let mut e = engine();
    e.ingest(
        vec![
            firing(DOWN_B, 0),
            firing(DOWN_A_OTHER_JOB, 0),
            firing(DOWN_A, 1),
        ],
        at(1),
    );
    assert_eq!(
        states(&e),
        vec![(1, IncidentState::Open, 1), (2, IncidentState::Open, 2)]
    );
    let inc = e.incident(IncidentId(2)).unwrap();
    assert_eq!(
        inc.priority.as_str(),
        "P2",
        "the critical alert raised the warning incident"
    );
    let (_, ops) = e.take_batch().unwrap();
    assert!(ops.iter().any(|o| matches!(o,
        StoreOp::Timeline { entry, .. } if entry.kind == TimelineKind::PriorityChanged && entry.message.contains("P3 → P2"))));
}

#[test]
fn auto_resolve_after_hold_and_refire_within_hold_continues() {
    let mut e = engine();
    e.ingest(vec![firing(DOWN_A, 0)], at(0));
    e.ingest(vec![resolved(DOWN_A, 0, 10)], at(10));
    e.tick(at(12));
    assert_eq!(
        states(&e),
        vec![(1, IncidentState::Open, 1)],
        "held for 5 minutes"
    );
    e.ingest(vec![firing(DOWN_A, 13)], at(13));
    e.tick(at(30));
    assert_eq!(
        states(&e),
        vec![(1, IncidentState::Open, 1)],
        "re-fire cancelled the resolve"
    );
    e.ingest(vec![resolved(DOWN_A, 13, 31)], at(31));
    e.tick(at(35));
    assert_eq!(states(&e)[0].1, IncidentState::Open);
    e.tick(at(36));
    assert_eq!(states(&e)[0].1, IncidentState::Resolved);
    assert_eq!(
        e.incident(IncidentId(1)).unwrap().resolved_at,
        Some(at(31)),
        "resolved when the last alert ended (event time), confirmed after the hold"
    );
}

#[test]
fn a_storm_that_ended_together_is_auto_resolved_a_bounded_number_at_a_time() {
    let mut e = engine();
    let hosts: Vec<String> = (0..600).map(|i| format!("h{i}:9100")).collect();
    let fire: Vec<Event> = hosts
        .iter()
        .map(|h| firing(&[("alertname", "HostDown"), ("instance", h)], 0))
        .collect();
    let end: Vec<Event> = hosts
        .iter()
        .map(|h| resolved(&[("alertname", "HostDown"), ("instance", h)], 0, 10))
        .collect();
    e.ingest(fire, at(0));
    e.ingest(end, at(10));
    let _ = e.take_batch();
    let resolved_now = |e: &Engine| {
        states(e)
            .iter()
            .filter(|s| s.1 == IncidentState::Resolved)
            .count()
    };
    assert!(!e.settle_due(at(14), 256), "nothing due within the hold");
    assert_eq!(resolved_now(&e), 0);
    assert!(e.settle_due(at(16), 256), "600 due, 256 taken: more remain");
    assert_eq!(resolved_now(&e), 256);
    let (_, ops) = e.take_batch().unwrap();
    let upserts = ops
        .iter()
        .filter(|o| matches!(o, StoreOp::UpsertIncident(_)))
        .count();
    assert_eq!(upserts, 256, "one batch holds the bounded share only");
    assert!(e.settle_due(at(16), 256));
    assert!(!e.settle_due(at(16), 256), "the last 88 end the backlog");
    assert_eq!(resolved_now(&e), 600);
}

#[test]
fn tick_resolves_every_due_incident_at_once() {
    let mut e = engine();
    let hosts: Vec<String> = (0..300).map(|i| format!("h{i}:9100")).collect();
    for h in &hosts {
        e.ingest(
            vec![firing(&[("alertname", "HostDown"), ("instance", h)], 0)],
            at(0),
        );
        e.ingest(
            vec![resolved(
                &[("alertname", "HostDown"), ("instance", h)],
                0,
                1,
            )],
            at(1),
        );
    }
    e.tick(at(7));
    assert!(states(&e).iter().all(|s| s.1 == IncidentState::Resolved));
}

#[test]
fn reopen_within_window_new_incident_after() {
    let mut e = engine();
    e.ingest(vec![firing(DOWN_A, 0), resolved(DOWN_A, 0, 1)], at(1));
    e.tick(at(7));
    assert_eq!(states(&e), vec![(1, IncidentState::Resolved, 1)]);
    e.ingest(vec![firing(DOWN_A, 30)], at(30));
    assert_eq!(states(&e), vec![(1, IncidentState::Open, 1)]);
    assert_eq!(e.incident(IncidentId(1)).unwrap().reopen_count, 1);
    e.ingest(vec![resolved(DOWN_A, 30, 31)], at(31));
    e.tick(at(40));
    // 1h05 after the resolve at 0:36: outside the reopen window.
    e.ingest(vec![firing(DOWN_A, 101)], at(101));
    let s = states(&e);
    assert_eq!(s.last().unwrap(), &(2, IncidentState::Open, 1));
    assert_eq!(e.stats.incidents_reopened, 1);
    assert_eq!(e.stats.incidents_created, 2);
}

#[test]
fn stale_firing_after_resolve_changes_nothing() {
    let mut e = engine();
    e.ingest(vec![firing(DOWN_A, 0), resolved(DOWN_A, 0, 5)], at(5));
    e.take_batch();
    let out = e.ingest(vec![firing(DOWN_A, 0)], at(6));
    assert_eq!(out.deduplicated, 1);
    assert_eq!(e.stats.stale, 1);
    assert!(e.take_batch().is_none());
}

#[test]
fn flapping_alert_keeps_one_incident() {
    let mut e = engine();
    let mut t = 0;
    for _ in 0..6 {
        e.ingest(vec![firing(DOWN_A, t)], at(t));
        e.tick(at(t));
        e.ingest(vec![resolved(DOWN_A, t, t + 1)], at(t + 1));
        e.tick(at(t + 1));
        t += 2;
    }
    assert_eq!(states(&e), vec![(1, IncidentState::Open, 1)]);
    let inc = e.incident(IncidentId(1)).unwrap();
    assert!(inc.flapping);
    assert_eq!(inc.reopen_count, 0);
    // Quiet for the flap window (15m) after the last change: resolves.
    e.tick(at(t - 1 + 14));
    assert_eq!(states(&e)[0].1, IncidentState::Open);
    e.tick(at(t - 1 + 15));
    assert_eq!(states(&e)[0].1, IncidentState::Resolved);
    assert_eq!(e.stats.flapping_detected, 1);
}

#[test]
fn ack_and_manual_resolve() {
    let mut e = engine();
    e.ingest(vec![firing(DOWN_A, 0)], at(0));
    let inc = e.acknowledge(IncidentId(1), "alice", at(2)).unwrap();
    assert_eq!(inc.state, IncidentState::Acknowledged);
    assert_eq!(inc.acknowledged_by.as_deref(), Some("alice"));
    assert_eq!(
        e.acknowledge(IncidentId(1), "bob", at(3)),
        Err(EngineError::AlreadyAcknowledged(IncidentId(1)))
    );
    let inc = e.resolve(IncidentId(1), "alice", at(4)).unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(
        e.resolve(IncidentId(1), "bob", at(5)),
        Err(EngineError::AlreadyResolved(IncidentId(1))),
        "resolving twice says so"
    );
    assert_eq!(
        e.acknowledge(IncidentId(9), "bob", at(5)),
        Err(EngineError::NotActive(IncidentId(9)))
    );
    // A repeat of the still-firing alert does not reopen it.
    e.ingest(vec![firing(DOWN_A, 0)], at(6));
    assert_eq!(states(&e)[0].1, IncidentState::Resolved);
}

#[test]
fn pagerduty_style_ack_event_acknowledges_the_incident() {
    let mut e = engine();
    e.ingest(vec![firing(DOWN_A, 0)], at(0));
    let fp = Fingerprint::of_labels(&labels(DOWN_A));
    let out = e.ingest(
        vec![Event::Acknowledge {
            fingerprint: fp,
            at: at(1),
            actor: "pagerduty:x".into(),
        }],
        at(1),
    );
    assert_eq!(out.changed, 1);
    assert_eq!(
        e.incident(IncidentId(1)).unwrap().state,
        IncidentState::Acknowledged
    );
}

#[test]
fn unknown_resolved_is_ignored() {
    let mut e = engine();
    let out = e.ingest(vec![resolved(DOWN_A, 0, 1)], at(1));
    assert_eq!(out.ignored, 1);
    assert!(e.take_batch().is_none());
    assert!(states(&e).is_empty());
}

#[test]
fn restore_rebuilds_state_and_ids() {
    let mut e = engine();
    e.ingest(
        vec![firing(DOWN_A, 0), firing(DOWN_B, 0), resolved(DOWN_B, 0, 2)],
        at(2),
    );
    let snapshot = Snapshot {
        incidents: e.incidents.values().map(|t| t.inc.clone()).collect(),
        alerts: e
            .table
            .alerts
            .iter()
            .map(|(fp, st)| crate::store::AlertSnapshot {
                fingerprint: *fp,
                status: st.status,
                starts_at: st.starts_at,
                ends_at: st.ends_at(),
                incident: st.incident(),
                key: st.key.to_string(),
                suppressed: st.suppressed,
                flapping: st.flapping,
                last_seen: st.last_seen,
                deliveries: u64::from(st.deliveries),
            })
            .collect(),
        max_incident_id: 2,
        ..Snapshot::default()
    };
    let mut r = engine();
    r.restore(snapshot, at(3));
    // Repeats after restart are repeats; the resolved one still auto-resolves.
    let out = r.ingest(vec![firing(DOWN_A, 0)], at(3));
    assert_eq!(out.deduplicated, 1);
    r.tick(at(8));
    assert_eq!(
        states(&r),
        vec![(1, IncidentState::Open, 1), (2, IncidentState::Resolved, 1)]
    );
    r.ingest(vec![firing(&[("alertname", "New")], 9)], at(9));
    assert_eq!(
        states(&r).last().unwrap().0,
        3,
        "ids continue after the stored maximum"
    );
}

/// SLA thresholds go on the timeline once, at the instant they were passed,
/// and a restarted engine (built from the store) does not record them again.
#[tokio::test]
async fn sla_marks_are_recorded_once_also_across_restarts() {
    use crate::store::prelude::*;
    let cmdb = Arc::new(
        crate::cmdb::parse_yaml(
            "test",
            r#"
version: 1
services:
  - id: shop
    tier: 1
    sla:
      response: { P1: "10m", P2: "10m", P3: "10m", P4: "10m", P5: "10m" }
cis:
  - id: api
    class: application
    service: shop
"#,
        )
        .expect("valid CMDB"),
    );
    let store = crate::store::SqliteStore::in_memory().await.unwrap();
    let mut e = engine();
    e.set_cmdb(cmdb.clone());
    e.ingest(
        vec![firing(&[("alertname", "Down"), ("ci", "api")], 0)],
        at(0),
    );
    e.tick(at(6));
    let sla_entries = |ops: &[StoreOp]| -> Vec<(TimelineKind, Timestamp)> {
        ops.iter()
            .filter_map(|o| match o {
                StoreOp::Timeline { entry, .. }
                    if matches!(
                        entry.kind,
                        TimelineKind::SlaWarning | TimelineKind::SlaBreached
                    ) =>
                {
                    Some((entry.kind, entry.at))
                }
                _ => None,
            })
            .collect()
    };
    let (_, ops) = e.take_batch().unwrap();
    // 50 % of 10 minutes passed at minute 5; 75 % not yet.
    assert_eq!(sla_entries(&ops), vec![(TimelineKind::SlaWarning, at(5))]);
    store.apply(&ops).await.unwrap();
    e.tick(at(20));
    let (_, ops) = e.take_batch().unwrap();
    assert_eq!(
        sla_entries(&ops),
        vec![
            (TimelineKind::SlaWarning, Timestamp(at(7).0 + 30_000)),
            (TimelineKind::SlaBreached, at(10)),
        ]
    );
    store.apply(&ops).await.unwrap();
    e.tick(at(21));
    assert!(
        e.take_batch()
            .is_none_or(|(_, ops)| sla_entries(&ops).is_empty())
    );
    // Restart: the marks come back with the incident.
    let snap = store.load_state(Restore::default()).await.unwrap();
    let mut again = engine();
    again.set_cmdb(cmdb);
    again.restore(snap, at(30));
    again.tick(at(31));
    assert!(
        again
            .take_batch()
            .is_none_or(|(_, ops)| sla_entries(&ops).is_empty())
    );
}

/// A hold for a pausing reason stops the SLA clocks (the breach moves by
/// the time on hold), a hold for another reason does not; holds survive a
/// restart and resolving ends the one in progress.
#[tokio::test]
async fn holds_pause_sla_clocks_for_pausing_reasons_only() {
    use crate::slo::sla::{SlaStatus, incident_sla};
    use crate::store::prelude::*;
    let cmdb = Arc::new(
        crate::cmdb::parse_yaml(
            "test",
            r#"
version: 1
services:
  - id: shop
    tier: 1
    sla:
      resolution: { P1: "60m", P2: "60m", P3: "60m", P4: "60m", P5: "60m" }
cis:
  - { id: api, class: application, service: shop }
  - { id: web, class: application, service: shop }
"#,
        )
        .expect("valid CMDB"),
    );
    let store = crate::store::SqliteStore::in_memory().await.unwrap();
    let mut e = engine();
    e.set_cmdb(cmdb.clone());
    e.ingest(
        vec![
            firing(&[("alertname", "Down"), ("ci", "api")], 0),
            firing(&[("alertname", "Slow"), ("ci", "web")], 0),
        ],
        at(0),
    );
    let mut ids: Vec<IncidentId> = e.incidents.keys().copied().collect();
    ids.sort();
    let [vendor, change] = ids[..] else {
        panic!("two incidents expected: {ids:?}")
    };
    e.hold(vendor, "awaiting_vendor", "alice", at(10)).unwrap();
    e.hold(change, "awaiting_change", "bob", at(10)).unwrap();
    assert_eq!(
        e.hold(vendor, "awaiting_vendor", "alice", at(11)),
        Err(EngineError::AlreadyOnHold(vendor))
    );
    e.resume(vendor, "alice", at(40)).unwrap();
    assert_eq!(
        e.resume(vendor, "alice", at(41)),
        Err(EngineError::NotOnHold(vendor))
    );
    e.tick(at(75));
    let pause_on = EngineConfig::default().sla_pause_on;
    let sla = |e: &Engine, id| {
        incident_sla(&cmdb, e.incident(id).unwrap(), at(75), &pause_on)
            .resolution
            .unwrap()
    };
    // 30 minutes on hold waiting for a vendor: due at 90, not breached yet.
    let v = sla(&e, vendor);
    assert_eq!(
        (v.due_at, v.status, v.elapsed_seconds),
        (at(90), SlaStatus::Warning75, 45 * 60)
    );
    // Waiting on a change does not stop the clock: breached at 60.
    let c = sla(&e, change);
    assert_eq!(
        (c.status, c.breached_at),
        (SlaStatus::Breached, Some(at(60)))
    );
    let (_, ops) = e.take_batch().unwrap();
    let kinds: Vec<(IncidentId, TimelineKind)> = ops
        .iter()
        .filter_map(|o| match o {
            StoreOp::Timeline { incident, entry } => Some((*incident, entry.kind)),
            _ => None,
        })
        .filter(|(_, k)| {
            matches!(
                k,
                TimelineKind::OnHold | TimelineKind::Resumed | TimelineKind::SlaBreached
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (vendor, TimelineKind::OnHold),
            (change, TimelineKind::OnHold),
            (vendor, TimelineKind::Resumed),
            (change, TimelineKind::SlaBreached),
        ]
    );
    store.apply(&ops).await.unwrap();
    // After a restart the holds are still there; the change hold is still
    // running and resolving ends it.
    let snap = store.load_state(Restore::default()).await.unwrap();
    let mut again = engine();
    again.set_cmdb(cmdb.clone());
    again.restore(snap, at(76));
    assert_eq!(again.incident(vendor).unwrap().holds.len(), 1);
    assert_eq!(again.incident(vendor).unwrap().holds[0].end, Some(at(40)));
    assert!(again.incident(change).unwrap().current_hold().is_some());
    let resolved = again.resolve(change, "bob", at(80)).unwrap();
    assert_eq!(resolved.holds[0].end, Some(at(80)));
    assert_eq!(
        again.hold(change, "awaiting_vendor", "bob", at(81)),
        Err(EngineError::AlreadyResolved(change))
    );
}

/// With destinations configured, each change of an incident puts one
/// outbox message per matching destination in the same batch as the
/// incident's own row (so they commit together); nothing is queued twice,
/// and an engine restored from the store does not tell again what it had.
#[test]
fn outbox_messages_ride_in_the_batch_of_their_change() {
    use crate::domain::outbox::EventKind;
    use crate::domain::outbox::{Destination, Route, Settle};
    let cfg = EngineConfig {
        auto_resolve_hold: Duration::ZERO,
        outbound: Arc::from([
            Destination::all("all"),
            Destination {
                name: "resolutions".to_string(),
                routes: vec![Route {
                    events: vec![EventKind::Resolved],
                    ..Route::default()
                }],
                settle: Settle::default(),
            },
        ]),
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg.clone(), Arc::new(RuleSet::empty()));
    let outbox = |ops: &[StoreOp]| -> Vec<(String, EventKind)> {
        ops.iter()
            .filter_map(|o| match o {
                StoreOp::Outbox(m) => Some((m.destination.clone(), m.kind)),
                _ => None,
            })
            .collect()
    };
    e.ingest(vec![firing(DOWN_A, 0)], at(0));
    let (_, ops) = e.take_batch().expect("a batch");
    assert!(ops.iter().any(|o| matches!(o, StoreOp::UpsertIncident(_))));
    assert_eq!(outbox(&ops), [("all".to_string(), EventKind::Opened)]);
    // A repeat changes nothing: no message.
    e.ingest(vec![firing(DOWN_A, 0)], at(1));
    assert!(
        e.take_batch()
            .is_none_or(|(_, ops)| outbox(&ops).is_empty())
    );
    let id = *e.incidents.keys().next().expect("an incident");
    e.acknowledge(id, "alice", at(2)).unwrap();
    let (_, ops) = e.take_batch().expect("a batch");
    assert_eq!(outbox(&ops), [("all".to_string(), EventKind::Acknowledged)]);
    let StoreOp::Outbox(m) = ops
        .iter()
        .find(|o| matches!(o, StoreOp::Outbox(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(m.incident.acknowledged_by.as_deref(), Some("alice"));
    e.ingest(vec![resolved(DOWN_A, 0, 3)], at(3));
    e.tick(at(4));
    let (_, ops) = e.take_batch().expect("a batch");
    assert_eq!(
        outbox(&ops),
        [
            ("all".to_string(), EventKind::Resolved),
            ("resolutions".to_string(), EventKind::Resolved)
        ]
    );
    // Restored from its stored state, the engine has nothing new to tell.
    let snap = crate::store::Snapshot {
        incidents: vec![e.incident(id).unwrap().clone()],
        max_incident_id: id.0,
        ..Default::default()
    };
    let mut again = Engine::new(cfg, Arc::new(RuleSet::empty()));
    again.restore(snap, at(5));
    again.tick(at(6));
    assert!(
        again
            .take_batch()
            .is_none_or(|(_, ops)| outbox(&ops).is_empty())
    );
}

/// Alertmanager sends no resolve for a silenced alert. With
/// `alert_timeout`, a firing alert not delivered for that long ends at its
/// last delivery and its incident resolves (so destinations hear of it);
/// an alert still being re-sent stays firing.
#[test]
fn silent_alerts_expire_after_the_alert_timeout() {
    let cfg = EngineConfig {
        auto_resolve_hold: Duration::ZERO,
        alert_timeout: Duration::from_secs(60 * 60),
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg, Arc::new(RuleSet::empty()));
    e.ingest(vec![firing(DOWN_A, 0), firing(DOWN_B, 0)], at(0));
    // B keeps being re-sent; A goes silent after minute 10.
    e.ingest(vec![firing(DOWN_A, 0)], at(10));
    for m in (20..=80).step_by(20) {
        e.ingest(vec![firing(DOWN_B, 0)], at(m));
        e.tick(at(m));
    }
    e.tick(at(71));
    let states = states(&e);
    assert_eq!(states.len(), 2);
    let a = e
        .incidents
        .values()
        .find(|t| t.inc.title.contains("a"))
        .map(|t| t.inc.clone());
    let a = a.expect("incident of a");
    assert_eq!(a.state, IncidentState::Resolved, "{a:?}");
    // Ended at its last delivery (minute 10), not when the timeout passed.
    assert_eq!(a.resolved_at, Some(at(10)));
    assert!(
        e.incidents
            .values()
            .any(|t| &*t.inc.title == "HostDown on b" && t.inc.state == IncidentState::Open),
        "the re-sent alert stays firing"
    );
    assert_eq!(e.stats.expired, 1);
    // The silence is lifted: the same activation is delivered again and
    // fires again (a new incident: the old one resolved an hour ago).
    let out = e.ingest(vec![firing(DOWN_A, 0)], at(90));
    assert_eq!((out.changed, e.stats.stale), (1, 0), "{out:?}");
    assert!(
        e.incidents
            .values()
            .any(|t| &*t.inc.title == "HostDown on a" && t.inc.state.is_active()),
        "fires again"
    );
}

/// Each step of an incident's life is recorded once for the log (with the
/// incident as it stands after the batch); repeats record nothing.
#[test]
fn lifecycle_steps_are_recorded_for_the_log() {
    let whats = |e: &mut Engine| -> Vec<Lifecycle> {
        e.take_lifecycle()
            .events
            .into_iter()
            .map(|ev| ev.what)
            .collect()
    };
    let id = IncidentId(1);
    let mut e = engine();
    e.ingest(vec![firing(DOWN_A_OTHER_JOB, 0)], at(0));
    let opened = e.take_lifecycle().events;
    assert_eq!(opened.len(), 1, "{opened:?}");
    let first = e.incident(id).unwrap().priority;
    assert_eq!(opened[0].what, Lifecycle::Opened);
    assert_eq!(opened[0].incident, id);
    assert_eq!(
        opened[0].priority, first,
        "the priority decided in the same call"
    );
    assert_eq!(opened[0].title, "HostDown on a");
    // A repeat changes nothing, and says nothing.
    e.ingest(vec![firing(DOWN_A_OTHER_JOB, 0)], at(1));
    assert!(whats(&mut e).is_empty());
    // A more urgent alert joins: raised.
    e.ingest(vec![firing(DOWN_A, 2)], at(2));
    assert_eq!(whats(&mut e), [Lifecycle::PriorityRaised { from: first }]);
    assert!(e.incident(id).unwrap().priority < first);
    e.acknowledge(id, "alice", at(3)).unwrap();
    e.hold(id, "awaiting_vendor", "alice", at(4)).unwrap();
    e.resume(id, "bob", at(5)).unwrap();
    e.resolve(id, "carol", at(6)).unwrap();
    assert_eq!(
        whats(&mut e),
        [
            Lifecycle::Acknowledged { by: "alice".into() },
            Lifecycle::OnHold {
                reason: "awaiting_vendor".into(),
                by: "alice".into()
            },
            Lifecycle::Resumed { by: "bob".into() },
            Lifecycle::Resolved {
                why: "resolved by carol".into()
            },
        ]
    );
    // Resolved by its alerts, then a re-fire within the window reopens it.
    let mut e = engine();
    e.ingest(vec![firing(DOWN_A, 0), resolved(DOWN_A, 0, 1)], at(1));
    e.tick(at(7));
    let steps = whats(&mut e);
    assert!(
        matches!(&steps[..], [Lifecycle::Opened, Lifecycle::Resolved { why }] if why.starts_with("auto-resolved: all 1 alerts resolved")),
        "{steps:?}"
    );
    e.ingest(vec![firing(DOWN_A, 30)], at(30));
    assert_eq!(
        whats(&mut e),
        [Lifecycle::Reopened {
            alertname: "HostDown".into()
        }]
    );
}

/// Engine time `s` seconds after T0.
fn sec(s: i64) -> Timestamp {
    Timestamp(T0 + s * 1000)
}

fn opened_rows(ops: &[StoreOp]) -> Vec<(String, crate::domain::outbox::EventKind, IncidentId)> {
    ops.iter()
        .filter_map(|o| match o {
            StoreOp::Outbox(m) => Some((m.destination.clone(), m.kind, m.incident.id)),
            _ => None,
        })
        .collect()
}

fn settle_cfg(dests: &[(&str, u64)]) -> EngineConfig {
    use crate::domain::outbox::{Destination, Settle};
    EngineConfig {
        outbound: dests
            .iter()
            .map(|(name, secs)| Destination {
                settle: Settle::uniform(Duration::from_secs(*secs)),
                ..Destination::all(name)
            })
            .collect(),
        auto_resolve_hold: Duration::ZERO,
        ..EngineConfig::default()
    }
}

/// A dependent alerts first, its database 10 s later: the dependent's
/// incident is merged or re-rooted within the settle delay, so the
/// destination hears of one incident, the database's, once its delay ends,
/// and never of the one merged away (not even its resolution).
#[test]
fn only_the_incident_still_standing_when_its_settle_delay_ends_is_announced() {
    use crate::domain::outbox::EventKind;
    let cmdb = Arc::new(
        crate::cmdb::parse_yaml(
            "test",
            "version: 1\ncis:\n  - {id: db, class: database}\n  - {id: app, class: application, depends_on: [db]}\n",
        )
        .expect("valid CMDB"),
    );
    let mut e = Engine::new(settle_cfg(&[("pd", 30)]), Arc::new(RuleSet::empty()));
    e.set_cmdb(cmdb);
    let alert = |name: &str, ci: &str, s: i64| {
        let Event::Alert(mut a) = firing(&[("alertname", name), ("ci", ci)], 0) else {
            unreachable!()
        };
        a.starts_at = sec(s);
        Event::Alert(a)
    };
    let mut rows = Vec::new();
    e.ingest(vec![alert("AppErrors", "app", 0)], sec(0));
    let (_, ops) = e.take_batch().expect("a batch");
    rows.extend(opened_rows(&ops));
    let first = *e.incidents.keys().next().expect("an incident");
    let u = e
        .incident(first)
        .and_then(|i| i.unannounced.clone())
        .expect("waiting");
    assert_eq!((u.since, u.destinations[0].at), (sec(0), sec(30)));
    e.tick(sec(10));
    e.ingest(vec![alert("DbDown", "db", 10)], sec(10));
    while let Some((_, ops)) = e.take_batch() {
        rows.extend(opened_rows(&ops));
    }
    e.tick(sec(29));
    if let Some((_, ops)) = e.take_batch() {
        rows.extend(opened_rows(&ops));
    }
    assert!(
        rows.is_empty(),
        "nothing announced within the delay: {rows:?}"
    );
    e.tick(sec(40));
    let (_, ops) = e.take_batch().expect("a batch");
    rows.extend(opened_rows(&ops));
    let standing: Vec<IncidentId> = e
        .incidents
        .values()
        .filter(|t| t.inc.state.is_active())
        .map(|t| t.inc.id)
        .collect();
    assert_eq!(standing.len(), 1, "{:?}", states(&e));
    assert_eq!(rows, [("pd".to_string(), EventKind::Opened, standing[0])]);
    let inc = e.incident(standing[0]).expect("standing");
    assert_eq!(inc.root_ci.as_deref(), Some("db"));
    assert_eq!((inc.alert_count, inc.unannounced.as_ref()), (2, None));
    // The dependents' alerts resolve, then the database's: one resolution.
    for (name, ci, s) in [("AppErrors", "app", 0), ("DbDown", "db", 10)] {
        let Event::Alert(a) = alert(name, ci, s) else {
            unreachable!()
        };
        let end = Alert {
            status: AlertStatus::Resolved,
            ends_at: Some(sec(100)),
            ..a
        };
        e.ingest(vec![Event::Alert(end)], sec(100));
    }
    e.tick(at(60));
    while let Some((_, ops)) = e.take_batch() {
        rows.extend(opened_rows(&ops));
    }
    assert_eq!(
        rows[1..],
        [("pd".to_string(), EventKind::Resolved, standing[0])]
    );
    assert_eq!(e.stats.announcements[0], 1);
}

/// Each destination waits its own delay; one with none hears at once. The
/// wait is stored with the incident: an engine restored from the store
/// (restart, partition handover) tells the waiting destination once, when
/// its delay ends, and the other nothing again. An incident resolved
/// before its delay ended is never announced.
#[tokio::test]
async fn settle_delays_are_per_destination_and_survive_a_restart() {
    use crate::domain::outbox::EventKind;
    use crate::store::prelude::*;
    let store = crate::store::SqliteStore::in_memory().await.unwrap();
    let cfg = settle_cfg(&[("chat", 0), ("pd", 60)]);
    let mut e = Engine::new(cfg.clone(), Arc::new(RuleSet::empty()));
    e.ingest(vec![firing(DOWN_A, 0)], at(0));
    let (_, ops) = e.take_batch().expect("a batch");
    let id = *e.incidents.keys().next().expect("an incident");
    assert_eq!(
        opened_rows(&ops),
        [("chat".to_string(), EventKind::Opened, id)]
    );
    store.apply(&ops).await.unwrap();
    // A blip: fires and resolves within the delay.
    e.ingest(vec![firing(DOWN_B, 0)], sec(10));
    e.ingest(vec![resolved(DOWN_B, 0, 0)], sec(12));
    e.tick(sec(13));
    let (_, ops) = e.take_batch().expect("a batch");
    store.apply(&ops).await.unwrap();
    // Restart 30 s in.
    let snap = store.load_state(Restore::default()).await.unwrap();
    let mut again = Engine::new(cfg, Arc::new(RuleSet::empty()));
    again.restore(snap, sec(30));
    again.tick(sec(59));
    assert!(
        again
            .take_batch()
            .is_none_or(|(_, ops)| opened_rows(&ops).is_empty())
    );
    again.tick(sec(75));
    let (_, ops) = again.take_batch().expect("a batch");
    assert_eq!(
        opened_rows(&ops),
        [("pd".to_string(), EventKind::Opened, id)]
    );
    assert_eq!(again.incident(id).and_then(|i| i.unannounced.clone()), None);
    store.apply(&ops).await.unwrap();
    let blip = again
        .incidents
        .values()
        .find(|t| t.inc.id != id)
        .map(|t| t.inc.clone())
        .expect("the blip's incident");
    assert_eq!(blip.state, IncidentState::Resolved);
    let u = blip.unannounced.expect("never announced to pd");
    assert!(u.withheld, "{u:?}");
    again.tick(sec(200));
    assert!(
        again
            .take_batch()
            .is_none_or(|(_, ops)| opened_rows(&ops).is_empty())
    );
}

/// A priority's own delay: the critical alert's incident is announced at
/// once, the warning's after the plain delay.
#[test]
fn a_priority_can_have_its_own_settle_delay() {
    use crate::domain::outbox::{EventKind, Settle};
    let probe = |cfg: EngineConfig| {
        let mut e = Engine::new(cfg, Arc::new(RuleSet::empty()));
        e.ingest(vec![firing(DOWN_A, 0), firing(DOWN_B, 0)], at(0));
        let (_, ops) = e.take_batch().expect("a batch");
        let prio = |t: &str| {
            e.incidents
                .values()
                .find(|x| x.inc.title.contains(t))
                .map(|x| (x.inc.id, x.inc.priority))
                .expect("incident")
        };
        let rows = opened_rows(&ops);
        let (a, b) = (prio("on a"), prio("on b"));
        (rows, a, b, e)
    };
    let (_, (_, pa), (_, pb), _) = probe(settle_cfg(&[("pd", 60)]));
    assert_ne!(pa, pb, "the two alerts' incidents differ in priority");
    let mut cfg = settle_cfg(&[("pd", 60)]);
    Arc::make_mut(&mut cfg.outbound)[0].settle =
        Settle::uniform(Duration::from_secs(60)).with(pa, Duration::ZERO);
    let (rows, (a, _), (b, _), mut e) = probe(cfg);
    assert_eq!(rows, [("pd".to_string(), EventKind::Opened, a)]);
    e.tick(Timestamp(at(0).0 + 59_000));
    assert!(
        e.take_batch()
            .is_none_or(|(_, ops)| opened_rows(&ops).is_empty())
    );
    e.tick(Timestamp(at(0).0 + 60_000));
    let (_, ops) = e.take_batch().expect("a batch");
    assert_eq!(
        opened_rows(&ops),
        [("pd".to_string(), EventKind::Opened, b)]
    );
}

/// Waits mostly arrive in due order (a plain queue); others (another
/// priority's delay, a re-check) still come out in order.
#[test]
fn the_announcement_queue_pops_in_due_order() {
    let mut q = super::announce::DueQueue::default();
    for (t, id) in [(30, 1), (31, 2), (10, 3), (31, 4), (5, 5), (40, 6)] {
        q.insert((Timestamp(t), IncidentId(id)));
    }
    let mut out = Vec::new();
    while let Some((t, id)) = q.pop_first() {
        out.push((t.0, id.0));
    }
    assert_eq!(out, [(5, 5), (10, 3), (30, 1), (31, 2), (31, 4), (40, 6)]);
    assert_eq!(q.first(), None);
}

/// A blip: its alert clears within the delay. With the auto-resolve hold
/// still running when the delay ends, it is not announced then; it never
/// is if it resolves, and is at once if its alert fires again.
#[test]
fn a_blip_is_announced_only_if_it_fires_again() {
    use crate::domain::outbox::EventKind;
    let cfg = EngineConfig {
        auto_resolve_hold: Duration::from_secs(300),
        ..settle_cfg(&[("pd", 30)])
    };
    let mut e = Engine::new(cfg, Arc::new(RuleSet::empty()));
    let mut rows = Vec::new();
    let run = |e: &mut Engine, now: Timestamp, rows: &mut Vec<_>| {
        e.tick(now);
        while let Some((_, ops)) = e.take_batch() {
            rows.extend(opened_rows(&ops));
        }
    };
    e.ingest(vec![firing(DOWN_A, 0), firing(DOWN_B, 0)], at(0));
    run(&mut e, at(0), &mut rows);
    // Both clear 10 s in; B fires again a minute in.
    let clear = |pairs: &[(&str, &str)]| {
        let Event::Alert(a) = resolved(pairs, 0, 0) else {
            unreachable!()
        };
        Event::Alert(Alert {
            ends_at: Some(sec(10)),
            ..a
        })
    };
    e.ingest(vec![clear(DOWN_A), clear(DOWN_B)], sec(10));
    run(&mut e, sec(40), &mut rows);
    let (a, b) = {
        let id = |t: &str| {
            e.incidents
                .values()
                .find(|x| x.inc.title.contains(t))
                .map(|x| x.inc.id)
                .expect("incident")
        };
        (id("on a"), id("on b"))
    };
    assert!(
        rows.is_empty(),
        "nothing while their alerts are clear: {rows:?}"
    );
    let Event::Alert(again) = firing(DOWN_B, 0) else {
        unreachable!()
    };
    e.ingest(
        vec![Event::Alert(Alert {
            starts_at: sec(60),
            ..again
        })],
        sec(60),
    );
    run(&mut e, sec(61), &mut rows);
    run(&mut e, at(10), &mut rows);
    assert_eq!(rows, [("pd".to_string(), EventKind::Opened, b)]);
    let inc_a = e.incident(a).expect("a");
    assert_eq!(inc_a.state, IncidentState::Resolved);
    assert!(
        inc_a.unannounced.as_ref().is_some_and(|u| u.withheld),
        "{inc_a:?}"
    );
    assert_eq!(e.stats.announcements, [1, 1]);
}
