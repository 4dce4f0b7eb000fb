//! Every store backend applies a batch exactly as if its ops ran one by one,
//! although it groups them into multi-row statements. Each test runs on
//! SQLite (`sqlite::…`) and on PostgreSQL (`postgres::…`) when
//! `INCIDENTD_TEST_POSTGRES_URL` names a server; there every test gets a
//! database of its own, dropped afterwards, so tests run in parallel.

use incidentd::change::{ChangeRecord, ChangeState};
use incidentd::domain::*;
use incidentd::store::*;
use sqlx::Connection;
use std::io::Write;
use std::sync::Once;
use std::time::Duration;
use support::pg::{PG_URL_VAR, ScratchDb};

mod support;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// A store under test. Fields drop in order: the store's pool closes before
/// its scratch database is dropped.
struct Db {
    kind: Kind,
    store: Box<dyn Store>,
    _scratch: Option<ScratchDb>,
}

impl Db {
    async fn sqlite() -> Db {
        Db {
            kind: Kind::Sqlite,
            store: Box::new(SqliteStore::in_memory().await.unwrap()),
            _scratch: None,
        }
    }

    /// `None` (the test passes without running) when no server is configured.
    async fn postgres() -> Option<Db> {
        let scratch = scratch_db().await?;
        let store = PgStore::connect(&scratch.url, 4).await.unwrap();
        Some(Db {
            kind: Kind::Postgres,
            store: Box::new(store),
            _scratch: Some(scratch),
        })
    }

    /// Text as this backend stores it: PostgreSQL text has no U+0000, so its
    /// store writes U+FFFD instead.
    fn stored(&self, s: &str) -> String {
        match self.kind {
            Kind::Sqlite => s.to_string(),
            Kind::Postgres => s.replace('\0', "\u{FFFD}"),
        }
    }
}

/// A scratch database on the server of `INCIDENTD_TEST_POSTGRES_URL`, or
/// `None` (with one skip line) when no server is configured.
async fn scratch_db() -> Option<ScratchDb> {
    let Ok(admin_url) = std::env::var(PG_URL_VAR) else {
        static SKIPPED: Once = Once::new();
        SKIPPED.call_once(|| {
            // Straight to stderr: libtest captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "store tests: PostgreSQL variant skipped: {PG_URL_VAR} is not set \
                 (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
        });
        return None;
    };
    Some(ScratchDb::create(&admin_url, "incidentd_test").await)
}

/// Each named `async fn(Db)` becomes `sqlite::name` and `postgres::name`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = super::Db::postgres().await {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    grouped_batch_equals_ops_in_order,
    hostile_text_round_trips,
    one_active_incident_per_key,
    load_state_by_shard,
    merges_move_alerts,
    reads_and_problem_links,
    large_batch_in_one_apply,
    slo_incidents_are_the_qualifying_ones_open_since,
    outbox_is_written_with_its_change_and_finished_once,
    firing_alerts_are_listed_by_suppression_name_and_ci,
    incidents_are_filtered_by_priority_and_service,
    alerts_are_tallied_by_ci_rule_and_window,
    incidents_since_are_read_page_by_page,
);

fn incident(id: i64, state: IncidentState, count: u64) -> Incident {
    Incident {
        id: IncidentId(id),
        key: format!("k{id}").into(),
        state,
        priority: Priority::new(3).unwrap(),
        impact: Level::MEDIUM,
        urgency: Level::MEDIUM,
        title: format!("incident {id}").into(),
        root_ci: None,
        root_inferred: false,
        cis: ThinVec::new(),
        impacted_services: ThinVec::new(),
        impact_detail: ThinVec::new(),
        assignment_group: None,
        alert_fingerprints: ThinVec::new(),
        alert_count: count,
        opened_at: Timestamp(1_000),
        acknowledged_at: None,
        acknowledged_by: None,
        resolved_at: None,
        updated_at: Timestamp(1_000),
        reopen_count: 0,
        flapping: false,
        rules: ThinVec::new(),
        links: Links::default(),
        signature: None,
        shard: 0,
        sla_marks: ThinVec::new(),
        holds: ThinVec::new(),
        auto_resolve_at: incidentd::domain::MaybeTime::NONE,
        unannounced: None,
    }
}

fn record(fp: u64, incident: i64) -> AlertRecord {
    AlertRecord {
        fingerprint: Fingerprint(fp),
        status: AlertStatus::Firing,
        labels: [("alertname".to_string(), format!("A{fp}"))]
            .into_iter()
            .collect(),
        annotations: LabelSet::new(),
        starts_at: Timestamp(1_000),
        ends_at: None,
        source: Source::Api,
        generator_url: String::new(),
        incident: Some(IncidentId(incident)),
        key: "k".into(),
        suppressed: Some(("rule-x".into(), "because".into())),
        change: Some("CHG1".into()),
        flapping: false,
        first_seen: Timestamp(1_000),
        last_seen: Timestamp(1_000),
        deliveries: 1,
        shard: 0,
    }
}

fn link(incident: i64, fp: u64, at: i64) -> StoreOp {
    StoreOp::LinkAlert {
        incident: IncidentId(incident),
        fingerprint: Fingerprint(fp),
        at: Timestamp(at),
    }
}

fn upsert(i: Incident) -> StoreOp {
    StoreOp::UpsertIncident(Box::new(i))
}

async fn fingerprints(store: &dyn Store, id: i64) -> Vec<u64> {
    store
        .get_incident(IncidentId(id))
        .await
        .unwrap()
        .unwrap()
        .alert_fingerprints
        .iter()
        .map(|f| f.0)
        .collect()
}

async fn grouped_batch_equals_ops_in_order(db: Db) {
    let store = &*db.store;
    // Enough rows to use every chunk size (128, 32, 8, 1).
    let n = 128 + 32 + 8 + 3;
    let mut ops = vec![StoreOp::UpsertIncident(Box::new(incident(
        1,
        IncidentState::Open,
        1,
    )))];
    for fp in 0..n {
        ops.push(StoreOp::InsertAlert(Box::new(record(fp, 1))));
        ops.push(StoreOp::LinkAlert {
            incident: IncidentId(1),
            fingerprint: Fingerprint(fp),
            at: Timestamp(1_000 + fp as i64),
        });
        ops.push(StoreOp::Timeline {
            incident: IncidentId(1),
            entry: TimelineEntry {
                at: Timestamp(1_000),
                kind: TimelineKind::AlertJoined,
                message: format!("joined {fp}"),
                actor: None,
            },
        });
    }
    // Later ops for the same rows win: the incident resolves, alert 0 resolves
    // (keeping its suppression), alert 1's suppression is cleared.
    let mut resolved = incident(1, IncidentState::Resolved, 5);
    resolved.resolved_at = Some(Timestamp(9_000));
    ops.push(StoreOp::UpsertIncident(Box::new(resolved)));
    let update = |fp: u64, suppressed| {
        StoreOp::UpdateAlert(Box::new(AlertUpdate {
            fingerprint: Fingerprint(fp),
            status: AlertStatus::Resolved,
            starts_at: Timestamp(1_000),
            ends_at: Some(Timestamp(8_000)),
            incident: Some(IncidentId(1)),
            key: "k".into(),
            suppressed,
            change: None,
            flapping: true,
            last_seen: Timestamp(8_000),
            deliveries: 7,
        }))
    };
    ops.push(update(0, None));
    ops.push(update(1, Some(None)));
    // Counters only grow: an older touch after the update changes nothing.
    ops.push(StoreOp::TouchAlerts(vec![Touch {
        fingerprint: Fingerprint(0),
        last_seen: Timestamp(2_000),
        deliveries: 3,
    }]));
    ops.push(StoreOp::TouchAlerts(vec![Touch {
        fingerprint: Fingerprint(2),
        last_seen: Timestamp(3_000),
        deliveries: 4,
    }]));
    store.apply(&ops).await.unwrap();

    let inc = store.get_incident(IncidentId(1)).await.unwrap().unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.resolved_at, Some(Timestamp(9_000)));
    assert_eq!(inc.alert_count, 5, "as the incident row says");
    assert_eq!(inc.alert_fingerprints.len(), n as usize);
    let tl = store.timeline(IncidentId(1), Page::ALL).await.unwrap();
    assert_eq!(tl.len(), n as usize);
    assert_eq!(tl[0].message, "joined 0");
    assert_eq!(
        tl.last().unwrap().message,
        format!("joined {}", n - 1),
        "timeline keeps its order"
    );
    let alerts = store
        .incident_alerts(IncidentId(1), Page::ALL)
        .await
        .unwrap();
    let a = |fp: u64| {
        alerts
            .iter()
            .find(|a| a.fingerprint == Fingerprint(fp))
            .unwrap()
    };
    assert_eq!(a(0).status, AlertStatus::Resolved);
    assert_eq!((a(0).deliveries, a(0).last_seen), (7, Timestamp(8_000)));
    assert_eq!(
        a(0).suppressed,
        Some(("rule-x".into(), "because".into())),
        "None keeps the suppression"
    );
    assert_eq!(a(0).change.as_deref(), Some("CHG1"), "None keeps the link");
    assert_eq!(a(1).suppressed, None, "Some(None) clears it");
    assert_eq!((a(2).deliveries, a(2).last_seen), (4, Timestamp(3_000)));
    assert_eq!(a(3).status, AlertStatus::Firing);

    // A second batch on top: links are idempotent, the partial unique index
    // allows a new active incident with the key of a resolved one.
    let mut again = incident(2, IncidentState::Open, 1);
    again.key = "k1".into();
    store
        .apply(&[
            StoreOp::UpsertIncident(Box::new(again)),
            StoreOp::LinkAlert {
                incident: IncidentId(1),
                fingerprint: Fingerprint(0),
                at: Timestamp(1),
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_incident(IncidentId(1))
            .await
            .unwrap()
            .unwrap()
            .alert_fingerprints
            .len(),
        n as usize
    );
    // ...but never two active incidents with one key, whatever the caller does.
    let mut dup = incident(3, IncidentState::Open, 1);
    dup.key = "k1".into();
    assert!(
        store
            .apply(&[StoreOp::UpsertIncident(Box::new(dup))])
            .await
            .is_err()
    );
    assert!(
        store.get_incident(IncidentId(3)).await.unwrap().is_none(),
        "a failed batch leaves nothing behind"
    );
}

/// SQLite writes values as SQL literals inside one script per batch,
/// PostgreSQL binds them: either way any text must come back (PostgreSQL:
/// with U+0000 as U+FFFD) and never be read as SQL.
async fn hostile_text_round_trips(db: Db) {
    let store = &*db.store;
    let nasty = [
        "it's",
        "'); DROP TABLE incidents; --",
        "semi;colon\nnew line",
        "nul\0byte",
        "ünïcödé ✓ 🚨",
        "\\'\\\"",
        "\\u0000 $1 ?",
        "",
    ];
    let mut ops = Vec::new();
    for (i, text) in nasty.iter().enumerate() {
        let id = i as i64 + 1;
        let mut inc = incident(id, IncidentState::Open, 1);
        inc.title = (*text).into();
        inc.key = format!("{text}-{id}").into();
        inc.acknowledged_by = Some((*text).into());
        inc.cis = thin_vec![text.to_string()];
        ops.push(StoreOp::UpsertIncident(Box::new(inc)));
        let mut a = record(i as u64, id);
        a.labels = [("alertname".to_string(), text.to_string())]
            .into_iter()
            .collect();
        a.generator_url = text.to_string();
        ops.push(StoreOp::InsertAlert(Box::new(a)));
        ops.push(StoreOp::LinkAlert {
            incident: IncidentId(id),
            fingerprint: Fingerprint(i as u64),
            at: Timestamp(1),
        });
        ops.push(StoreOp::Timeline {
            incident: IncidentId(id),
            entry: TimelineEntry {
                at: Timestamp(1),
                kind: TimelineKind::Opened,
                message: text.to_string(),
                actor: Some(text.to_string()),
            },
        });
    }
    store.apply(&ops).await.unwrap();
    for (i, text) in nasty.iter().enumerate() {
        let text = &db.stored(text);
        let id = IncidentId(i as i64 + 1);
        let inc = store
            .get_incident(id)
            .await
            .unwrap()
            .expect("incident stored");
        assert_eq!(&*inc.title, *text);
        assert_eq!(inc.acknowledged_by.as_deref(), Some(text.as_str()));
        assert_eq!(inc.cis, std::slice::from_ref(text));
        let tl = store.timeline(id, Page::ALL).await.unwrap();
        assert_eq!(
            (tl[0].message.as_str(), tl[0].actor.as_deref()),
            (text.as_str(), Some(text.as_str()))
        );
        let alerts = store.incident_alerts(id, Page::ALL).await.unwrap();
        assert_eq!(alerts[0].labels.get("alertname"), Some(text.as_str()));
        assert_eq!(alerts[0].generator_url, *text);
    }
    // Fingerprints use the full u64 range (stored as their i64 bit pattern).
    let big = Fingerprint(u64::MAX - 1);
    let mut a = record(0, 1);
    a.fingerprint = big;
    store
        .apply(&[
            StoreOp::InsertAlert(Box::new(a)),
            StoreOp::LinkAlert {
                incident: IncidentId(1),
                fingerprint: big,
                at: Timestamp(2),
            },
        ])
        .await
        .unwrap();
    let fps = store
        .get_incident(IncidentId(1))
        .await
        .unwrap()
        .unwrap()
        .alert_fingerprints;
    assert!(fps.contains(&big));
}

/// The database itself refuses a second active incident with one key, and a
/// refused batch leaves nothing behind, on every backend.
async fn one_active_incident_per_key(db: Db) {
    let store = &*db.store;
    let is_unique_violation = |e: &StoreError| matches!(e, StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation());
    // Within one batch.
    let mut twin = incident(2, IncidentState::Acknowledged, 1);
    twin.key = "k1".into();
    let err = store
        .apply(&[
            upsert(incident(1, IncidentState::Open, 1)),
            StoreOp::InsertAlert(Box::new(record(7, 1))),
            link(1, 7, 1),
            upsert(twin.clone()),
        ])
        .await
        .unwrap_err();
    assert!(is_unique_violation(&err), "{err}");
    assert!(store.get_incident(IncidentId(1)).await.unwrap().is_none());
    assert!(
        store
            .list_incidents(IncidentQuery {
                state: StateFilter::All,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .incident_alerts(IncidentId(1), Page::ALL)
            .await
            .unwrap()
            .is_empty()
    );

    // Against a committed incident: the whole later batch is refused.
    store
        .apply(&[upsert(incident(1, IncidentState::Open, 1))])
        .await
        .unwrap();
    let err = store
        .apply(&[
            StoreOp::InsertAlert(Box::new(record(7, 1))),
            link(1, 7, 1),
            upsert(twin.clone()),
        ])
        .await
        .unwrap_err();
    assert!(is_unique_violation(&err), "{err}");
    assert!(store.get_incident(IncidentId(2)).await.unwrap().is_none());
    let one = store.get_incident(IncidentId(1)).await.unwrap().unwrap();
    assert_eq!((one.alert_count, one.alert_fingerprints.len()), (1, 0));
    let snap = store.load_state(Restore::default()).await.unwrap();
    assert!(snap.alerts.is_empty());

    // Resolving the first in the same batch makes room for the second.
    let mut done = incident(1, IncidentState::Resolved, 1);
    done.resolved_at = Some(Timestamp(2_000));
    store.apply(&[upsert(done), upsert(twin)]).await.unwrap();
    let counts = store.count_by_state().await.unwrap();
    assert!(counts.contains(&(IncidentState::Resolved, 1)));
    assert!(counts.contains(&(IncidentState::Acknowledged, 1)));
}

/// `load_state(Some(shard))` sees only that shard's rows, while
/// `max_incident_id` stays global so new ids never collide across shards.
async fn load_state_by_shard(db: Db) {
    let store = &*db.store;
    let in_shard = |id: i64, shard: u32, state: IncidentState| {
        let mut i = incident(id, state, 1);
        i.shard = shard;
        if state == IncidentState::Resolved {
            i.resolved_at = Some(Timestamp(5_000));
            i.signature = Some(format!("sig{id}").into());
        }
        i
    };
    let alert = |fp: u64, incident: i64, shard: u32| {
        let mut a = record(fp, incident);
        a.shard = shard;
        StoreOp::InsertAlert(Box::new(a))
    };
    let mut merged = in_shard(5, 1, IncidentState::Resolved);
    merged.links.merged_into = Some(IncidentId(2));
    store
        .apply(&[
            upsert(in_shard(1, 0, IncidentState::Open)),
            upsert(in_shard(2, 1, IncidentState::Open)),
            upsert(in_shard(3, 1, IncidentState::Resolved)),
            upsert(merged),
            upsert(in_shard(10, 2, IncidentState::Open)),
            alert(100, 1, 0),
            alert(200, 2, 1),
            alert(201, 2, 1),
            alert(300, 3, 1),
            alert(1000, 10, 2),
            link(2, 200, 1),
            link(2, 201, 2),
        ])
        .await
        .unwrap();
    let load = |shard| {
        store.load_state(Restore {
            shard,
            ..Restore::default()
        })
    };

    let s1 = load(Some(1)).await.unwrap();
    let ids: Vec<i64> = s1.incidents.iter().map(|i| i.id.0).collect();
    assert_eq!(ids, [2, 3, 5]);
    assert_eq!(
        s1.incidents[0].alert_fingerprints,
        [Fingerprint(200), Fingerprint(201)]
    );
    let mut fps: Vec<u64> = s1.alerts.iter().map(|a| a.fingerprint.0).collect();
    fps.sort_unstable();
    assert_eq!(fps, [200, 201, 300]);
    assert_eq!(s1.max_incident_id, 10, "global, not the shard's");
    assert_eq!(
        s1.signed,
        [("sig3".to_string(), Timestamp(1_000), IncidentId(3))],
        "merged incidents are not signed"
    );

    let s0 = load(Some(0)).await.unwrap();
    assert_eq!(s0.incidents.len(), 1);
    assert_eq!(s0.alerts.len(), 1);
    assert!(s0.signed.is_empty());
    assert_eq!(s0.max_incident_id, 10);
    let s7 = load(Some(7)).await.unwrap();
    assert!(s7.incidents.is_empty() && s7.alerts.is_empty());
    assert_eq!(s7.max_incident_id, 10);

    let all = load(None).await.unwrap();
    assert_eq!(all.incidents.len(), 5);
    assert_eq!(all.alerts.len(), 5);
    assert_eq!(all.max_incident_id, 10);
    // `resolved_since` later than the resolutions: only active incidents.
    let recent = store
        .load_state(Restore {
            resolved_since: Timestamp(6_000),
            ..Restore::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.incidents.len(), 3);
    let shards: Vec<u32> = recent.incidents.iter().map(|i| i.shard).collect();
    assert_eq!(shards, [0, 1, 2]);
}

/// `MoveAlerts` as SQLite's `UPDATE OR IGNORE` + cleanup: an alert the target
/// already has keeps the target's link; merges in one batch run in order.
async fn merges_move_alerts(db: Db) {
    let store = &*db.store;
    store
        .apply(&[
            upsert(incident(1, IncidentState::Open, 1)),
            upsert(incident(2, IncidentState::Open, 1)),
            upsert(incident(3, IncidentState::Open, 1)),
            StoreOp::InsertAlert(Box::new(record(10, 1))),
            StoreOp::InsertAlert(Box::new(record(11, 1))),
            StoreOp::InsertAlert(Box::new(record(12, 2))),
            link(1, 10, 100),
            link(1, 11, 101),
            link(2, 10, 50),
            link(2, 12, 102),
        ])
        .await
        .unwrap();
    store
        .apply(&[StoreOp::MoveAlerts {
            from: IncidentId(1),
            to: IncidentId(2),
        }])
        .await
        .unwrap();
    assert!(fingerprints(store, 1).await.is_empty());
    // Ordered by join time: alert 10 kept incident 2's earlier link (50).
    assert_eq!(fingerprints(store, 2).await, [10, 11, 12]);
    let alerts = store
        .incident_alerts(IncidentId(2), Page::ALL)
        .await
        .unwrap();
    assert!(alerts.iter().all(|a| a.incident == Some(IncidentId(2))));

    // A chain in one batch: 2 into 3, then 3 into 1.
    store
        .apply(&[
            StoreOp::MoveAlerts {
                from: IncidentId(2),
                to: IncidentId(3),
            },
            StoreOp::MoveAlerts {
                from: IncidentId(3),
                to: IncidentId(1),
            },
        ])
        .await
        .unwrap();
    assert!(fingerprints(store, 2).await.is_empty());
    assert!(fingerprints(store, 3).await.is_empty());
    assert_eq!(fingerprints(store, 1).await, [10, 11, 12]);
    let snap = store.load_state(Restore::default()).await.unwrap();
    assert!(
        snap.alerts
            .iter()
            .all(|a| a.incident == Some(IncidentId(1)))
    );
}

/// The read side (lists, paging, counts, problems, changes) and `SetProblem`,
/// which edits `extra` in place.
async fn reads_and_problem_links(db: Db) {
    let store = &*db.store;
    store.ping().await.unwrap();
    let mut rich = incident(1, IncidentState::Acknowledged, 3);
    rich.cis = thin_vec!["db-1".into(), "web-1".into()];
    rich.signature = Some("sig".into());
    rich.links.runbooks = thin_vec!["https://runbooks/x".into()];
    rich.impact_detail = thin_vec![ServiceImpact {
        id: "shop".into(),
        tier: 1,
    }];
    rich.root_ci = Some("db-1".into());
    rich.acknowledged_at = Some(Timestamp(1_500));
    rich.acknowledged_by = Some("alice".into());
    let mut closed = incident(3, IncidentState::Resolved, 1);
    closed.resolved_at = Some(Timestamp(2_000));
    let problem = |state: &str| Problem {
        id: "PRB1".into(),
        signature: "sig".into(),
        root_ci: Some("db-1".into()),
        alertname: "DiskFull".into(),
        state: state.into(),
        opened_at: Timestamp(1_000),
        incidents: vec![IncidentId(1)],
    };
    let change = |id: &str, start: i64| ChangeRecord {
        id: id.into(),
        ci: "db-1".into(),
        state: ChangeState::Approved,
        start: Timestamp(start),
        end: Timestamp(start + 10),
        summary: "patch".into(),
    };
    store
        .apply(&[
            upsert(rich.clone()),
            upsert(incident(2, IncidentState::Open, 1)),
            upsert(closed),
            StoreOp::UpsertProblem(Box::new(problem("open"))),
            StoreOp::UpsertProblem(Box::new(problem("known_error"))),
            StoreOp::SetProblem {
                incidents: vec![IncidentId(1), IncidentId(3)],
                problem: "PRB1".into(),
            },
            StoreOp::UpsertChange(Box::new(change("CHG2", 200))),
            StoreOp::UpsertChange(Box::new(change("CHG1", 100))),
        ])
        .await
        .unwrap();

    let got = store.get_incident(IncidentId(1)).await.unwrap().unwrap();
    let mut want = rich;
    want.links.problem = Some("PRB1".into());
    assert_eq!(got, want, "SetProblem keeps the rest of extra");
    assert!(store.get_incident(IncidentId(9)).await.unwrap().is_none());

    let ids = |v: Vec<Incident>| v.iter().map(|i| i.id.0).collect::<Vec<_>>();
    let list = |state, limit, before| {
        store.list_incidents(IncidentQuery {
            state,
            limit,
            before,
            ..Default::default()
        })
    };
    assert_eq!(
        ids(list(StateFilter::Active, 0, None).await.unwrap()),
        [2, 1]
    );
    assert_eq!(
        ids(list(StateFilter::All, 0, None).await.unwrap()),
        [3, 2, 1]
    );
    assert_eq!(ids(list(StateFilter::All, 2, None).await.unwrap()), [3, 2]);
    assert_eq!(
        ids(list(StateFilter::All, 0, Some(3)).await.unwrap()),
        [2, 1]
    );
    let resolved = StateFilter::Only(IncidentState::Resolved);
    assert_eq!(ids(list(resolved, 0, None).await.unwrap()), [3]);
    let acked = StateFilter::Only(IncidentState::Acknowledged);
    let acked = list(acked, 0, None).await.unwrap();
    assert_eq!(acked[0].links.problem.as_deref(), Some("PRB1"));

    let mut counts = store.count_by_state().await.unwrap();
    counts.sort_by_key(|c| c.0.as_str());
    assert_eq!(
        counts,
        [
            (IncidentState::Acknowledged, 1),
            (IncidentState::Open, 1),
            (IncidentState::Resolved, 1)
        ]
    );
    assert_eq!(
        store.list_problems().await.unwrap(),
        [problem("known_error")]
    );
    assert_eq!(
        store.list_changes().await.unwrap(),
        [change("CHG1", 100), change("CHG2", 200)]
    );
    let snap = store.load_state(Restore::default()).await.unwrap();
    assert_eq!(snap.problems.len(), 1);
    assert_eq!(snap.changes.len(), 2);
}

/// A flood's worth of ops in one `apply`: PostgreSQL binds each column as
/// one array, so the 65535-parameter limit never applies.
async fn large_batch_in_one_apply(db: Db) {
    let store = &*db.store;
    const N: u64 = 20_000;
    let mut ops = vec![upsert(incident(1, IncidentState::Open, N))];
    for fp in 0..N {
        ops.push(StoreOp::InsertAlert(Box::new(record(fp, 1))));
        ops.push(link(1, fp, 1_000 + fp as i64));
    }
    ops.push(StoreOp::TouchAlerts(
        (0..N)
            .map(|fp| Touch {
                fingerprint: Fingerprint(fp),
                last_seen: Timestamp(5_000),
                deliveries: 2,
            })
            .collect(),
    ));
    store.apply(&ops).await.unwrap();
    let fps = fingerprints(store, 1).await;
    assert_eq!(fps.len(), N as usize);
    assert_eq!((fps[0], fps[N as usize - 1]), (0, N - 1));
    let snap = store.load_state(Restore::default()).await.unwrap();
    assert_eq!(snap.alerts.len(), N as usize);
    assert!(snap.alerts.iter().all(|a| a.deliveries == 2));
}

/// Two instances start against one database at the same moment: the
/// migration runs once, the other waits for it, and both then share rows.
#[tokio::test]
async fn postgres_instances_migrate_concurrently() {
    let Some(scratch) = scratch_db().await else {
        return;
    };
    let (a, b) = tokio::join!(
        PgStore::connect(&scratch.url, 2),
        PgStore::connect(&scratch.url, 2)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // And once more, with the schema in place.
    let c = PgStore::connect(&scratch.url, 1).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&scratch.url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3, 4], "each migration applied once");
    a.apply(&[upsert(incident(1, IncidentState::Open, 1))])
        .await
        .unwrap();
    let mut other = incident(2, IncidentState::Open, 1);
    other.key = "k1".into();
    assert!(
        b.apply(&[upsert(other)]).await.is_err(),
        "the key index holds across instances"
    );
    assert!(c.get_incident(IncidentId(1)).await.unwrap().is_some());
    for s in [a, b, c] {
        s.close().await;
    }
    let _ = conn.close().await;
}

/// An unreachable server is an error after the acquire timeout, not a hang.
#[tokio::test]
async fn postgres_unreachable_is_an_error() {
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        PgStore::connect("postgres://postgres@127.0.0.1:9/none", 1),
    )
    .await
    .expect("connect gives up by itself");
    assert!(res.is_err());
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Two shards (producers keyed one correlation key onto two partitions) open
/// incidents for the same key: the second is stored under `key#id` instead
/// of refusing the batch, which would stall every later commit; the
/// database still holds one active incident per stored key, and a second
/// incident of one shard is still refused.
#[tokio::test]
async fn postgres_key_conflict_between_shards_is_stored_apart() {
    let Some(scratch) = scratch_db().await else {
        return;
    };
    let store = PgStore::connect(&scratch.url, 4).await.unwrap();
    let mut a = incident(4096, IncidentState::Open, 1);
    a.key = "HostDown|host:a".into();
    a.shard = 0;
    let mut b = incident(4097, IncidentState::Open, 1);
    b.key = a.key.clone();
    b.shard = 1;
    store.apply(&[upsert(a.clone())]).await.unwrap();
    store
        .apply(&[
            upsert(b.clone()),
            StoreOp::InsertAlert(Box::new(record(9, 4097))),
            link(4097, 9, 1),
        ])
        .await
        .expect("the other shard's batch is stored, not refused");
    let stored = store.get_incident(IncidentId(4097)).await.unwrap().unwrap();
    assert_eq!(&*stored.key, "HostDown|host:a#4097");
    assert_eq!(stored.alert_fingerprints, vec![Fingerprint(9)]);
    assert_eq!(
        store
            .get_incident(IncidentId(4096))
            .await
            .unwrap()
            .unwrap()
            .key
            .as_ref(),
        "HostDown|host:a"
    );
    // Later updates of the newcomer keep its stored key.
    b.alert_count = 5;
    store.apply(&[upsert(b.clone())]).await.unwrap();
    let stored = store.get_incident(IncidentId(4097)).await.unwrap().unwrap();
    assert_eq!(
        (&*stored.key, stored.alert_count),
        ("HostDown|host:a#4097", 5)
    );
    // Same shard: an engine bug, refused by the database.
    let mut twin = incident(8192, IncidentState::Open, 1);
    twin.key = a.key.clone();
    twin.shard = 0;
    let err = store.apply(&[upsert(twin)]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Db(sqlx::Error::Database(d)) if d.is_unique_violation()),
        "{err}"
    );
    store.close().await;
}

/// The SLO book reads incidents of priority `worst` or better that were
/// open at some time since `since`: active ones, and resolved ones whose
/// resolution is not older than `since`; with their impacted services.
async fn slo_incidents_are_the_qualifying_ones_open_since(db: Db) {
    let mk = |id: i64, p: u8, resolved: Option<i64>| {
        let mut i = incident(
            id,
            if resolved.is_some() {
                IncidentState::Resolved
            } else {
                IncidentState::Open
            },
            1,
        );
        i.priority = Priority::new(p).unwrap();
        i.resolved_at = resolved.map(Timestamp);
        i.impacted_services = thin_vec!["shop".into(), "blog".into()];
        upsert(i)
    };
    let ops = [
        mk(1, 1, None),        // P1 open: in
        mk(2, 2, Some(5_000)), // P2 resolved after since: in
        mk(3, 1, Some(2_000)), // resolved before since: out
        mk(4, 3, None),        // P3: out
        mk(5, 2, Some(4_000)), // resolved exactly at since: in
        mk(6, 4, Some(9_000)), // P4: out
    ];
    db.store.apply(&ops).await.unwrap();
    let mut got = db
        .store
        .slo_incidents(Timestamp(4_000), Priority::new(2).unwrap())
        .await
        .unwrap();
    got.sort_by_key(|i| i.id);
    let ids: Vec<i64> = got.iter().map(|i| i.id.0).collect();
    assert_eq!(ids, [1, 2, 5]);
    assert_eq!(got[0].impacted_services, ["shop", "blog"]);
    assert_eq!(got[1].resolved_at, Some(Timestamp(5_000)));
    let p1 = db
        .store
        .slo_incidents(Timestamp(0), Priority::new(1).unwrap())
        .await
        .unwrap();
    let mut ids: Vec<i64> = p1.iter().map(|i| i.id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 3]);
}

fn outbox(
    destination: &str,
    kind: incidentd::domain::outbox::EventKind,
    inc: &Incident,
) -> StoreOp {
    StoreOp::Outbox(Box::new(OutboxMessage {
        destination: destination.into(),
        kind,
        at: inc.updated_at,
        incident: inc.clone(),
    }))
}

/// The transactional outbox: messages are stored in the batch of the
/// change they report (a refused batch leaves none), come back per
/// destination in write order with the incident as it was, keep their
/// retry state, and once finished (delivered, or given up with a note on
/// the incident's timeline) are never handed out again.
async fn outbox_is_written_with_its_change_and_finished_once(db: Db) {
    use incidentd::domain::outbox::EventKind;
    let store = &*db.store;
    let mut inc = incident(1, IncidentState::Open, 1);
    inc.title = db.stored("pg-0 down \0 (nul)").into();
    let mut acked = inc.clone();
    acked.state = IncidentState::Acknowledged;
    acked.acknowledged_at = Some(Timestamp(2_000));
    acked.updated_at = Timestamp(2_000);
    store
        .apply(&[
            upsert(inc.clone()),
            outbox("pagerduty", EventKind::Opened, &inc),
            outbox("slack", EventKind::Opened, &inc),
            upsert(acked.clone()),
            outbox("pagerduty", EventKind::Acknowledged, &acked),
        ])
        .await
        .unwrap();
    // A refused batch (a second active incident with the same key) leaves
    // no message behind.
    let mut twin = incident(2, IncidentState::Open, 1);
    twin.key = "k1".into();
    assert!(
        store
            .apply(&[
                upsert(twin.clone()),
                outbox("pagerduty", EventKind::Opened, &twin)
            ])
            .await
            .is_err()
    );
    // An incident of another work shard: with Kafka another instance may
    // own it, and only the owner's sender may take its messages.
    let mut other = incident(3, IncidentState::Open, 1);
    other.key = "k3".into();
    other.shard = 7;
    store
        .apply(&[
            upsert(other.clone()),
            outbox("pagerduty", EventKind::Opened, &other),
        ])
        .await
        .unwrap();
    let of = |rows: Vec<incidentd::store::OutboxRow>| -> Vec<i64> {
        rows.iter().map(|r| r.message.incident.id.0).collect()
    };
    assert_eq!(
        of(store.outbox_pending("pagerduty", None, 10).await.unwrap()),
        [1, 1, 3]
    );
    assert_eq!(
        of(store
            .outbox_pending("pagerduty", Some(&[7, 9]), 10)
            .await
            .unwrap()),
        [3]
    );
    assert!(
        store
            .outbox_pending("pagerduty", Some(&[]), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let pending = store
        .outbox_pending("pagerduty", Some(&[0]), 10)
        .await
        .unwrap();
    let kinds: Vec<EventKind> = pending.iter().map(|r| r.message.kind).collect();
    assert_eq!(kinds, [EventKind::Opened, EventKind::Acknowledged]);
    assert!(pending[0].id < pending[1].id);
    assert_eq!(pending[0].message.incident, inc);
    assert_eq!(pending[1].message.incident, acked);
    assert_eq!(pending[1].message.at, Timestamp(2_000));
    assert_eq!(
        (pending[0].attempts, pending[0].last_error.as_deref()),
        (0, None)
    );
    assert_eq!(
        store
            .outbox_pending("pagerduty", None, 1)
            .await
            .unwrap()
            .len(),
        1
    );

    let (first, second) = (pending[0].id, pending[1].id);
    store
        .outbox_retry(first, 1, Timestamp(9_000), "HTTP 503".into(), None)
        .await
        .unwrap();
    let again = store
        .outbox_pending("pagerduty", Some(&[0]), 10)
        .await
        .unwrap();
    assert_eq!(
        (
            again[0].attempts,
            again[0].next_at,
            again[0].last_error.as_deref()
        ),
        (1, Timestamp(9_000), Some("HTTP 503"))
    );
    // The destination is back: the retry waiting until 9 s is due now,
    // its attempts and error kept; messages already due are left alone.
    assert_eq!(
        store
            .outbox_wake("pagerduty", Timestamp(3_000))
            .await
            .unwrap(),
        1
    );
    let woken = store
        .outbox_pending("pagerduty", Some(&[0]), 10)
        .await
        .unwrap();
    assert_eq!(
        (woken[0].attempts, woken[0].next_at, woken[1].next_at),
        (1, Timestamp(3_000), Timestamp(0))
    );
    let third = store
        .outbox_pending("pagerduty", Some(&[7]), 10)
        .await
        .unwrap()[0]
        .id;
    store
        .outbox_finish(third, Timestamp(9_400), Delivery::Delivered, None)
        .await
        .unwrap();
    store
        .outbox_finish(first, Timestamp(9_500), Delivery::Delivered, None)
        .await
        .unwrap();
    let note = TimelineEntry {
        at: Timestamp(9_600),
        kind: TimelineKind::RuleApplied,
        message: "pagerduty refused the acknowledgement: HTTP 400".into(),
        actor: None,
    };
    store
        .outbox_finish(
            second,
            Timestamp(9_600),
            Delivery::GaveUp("HTTP 400".into()),
            Some((IncidentId(1), note.clone())),
        )
        .await
        .unwrap();
    assert!(
        store
            .outbox_pending("pagerduty", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .timeline(IncidentId(1), Page::ALL)
            .await
            .unwrap()
            .contains(&note)
    );
    assert_eq!(
        store.outbox_depth(None).await.unwrap(),
        [("slack".to_string(), 1)]
    );
    // Per instance: only the shards it owns (the slack message is shard 0's).
    assert_eq!(
        store.outbox_depth(Some(&[0, 3])).await.unwrap(),
        [("slack".to_string(), 1)]
    );
    assert!(store.outbox_depth(Some(&[7])).await.unwrap().is_empty());
    assert!(store.outbox_depth(Some(&[])).await.unwrap().is_empty());

    assert_eq!(
        store
            .outbound_ref("servicenow", IncidentId(1))
            .await
            .unwrap(),
        None
    );
    store
        .set_outbound_ref("servicenow", IncidentId(1), "sys-1")
        .await
        .unwrap();
    store
        .set_outbound_ref("servicenow", IncidentId(1), "sys-2")
        .await
        .unwrap();
    assert_eq!(
        store
            .outbound_ref("servicenow", IncidentId(1))
            .await
            .unwrap(),
        Some("sys-2".into())
    );
    assert_eq!(
        store.outbound_ref("jira", IncidentId(1)).await.unwrap(),
        None
    );

    // What a poll may read back: active incidents with a ticket and no
    // update still on its way; not resolved ones, not other shards'.
    store
        .set_outbound_ref("servicenow", IncidentId(3), "sys-3")
        .await
        .unwrap();
    let polled = async |shards: Option<&[u32]>| {
        store
            .outbound_poll_refs("servicenow", shards, 10)
            .await
            .unwrap()
    };
    assert_eq!(
        polled(None).await,
        [
            (IncidentId(1), "sys-2".to_string()),
            (IncidentId(3), "sys-3".to_string())
        ]
    );
    assert_eq!(
        polled(Some(&[7])).await,
        [(IncidentId(3), "sys-3".to_string())]
    );
    assert!(polled(Some(&[])).await.is_empty());
    store
        .apply(&[outbox("servicenow", EventKind::Acknowledged, &acked)])
        .await
        .unwrap();
    assert_eq!(polled(None).await, [(IncidentId(3), "sys-3".to_string())]);
    let mut done = other.clone();
    done.state = IncidentState::Resolved;
    done.resolved_at = Some(Timestamp(10_000));
    store.apply(&[upsert(done)]).await.unwrap();
    assert!(polled(None).await.is_empty());

    // Remediations being followed: by prefix, taken literally (`_` and
    // `%` are no wildcards), of resolved incidents too, of the shards
    // asked for; and a remediation's note lands on the timeline.
    for (d, i, r) in [
        ("st2", 1, "run:ab:0:5"),
        ("st2", 3, "done:cd:0"),
        ("st2b", 1, "run_x"),
    ] {
        store.set_outbound_ref(d, IncidentId(i), r).await.unwrap();
    }
    let following = async |d: &str, prefix: &str, shards: Option<&[u32]>| {
        store
            .outbound_refs_like(d, prefix, shards, 10)
            .await
            .unwrap()
    };
    assert_eq!(
        following("st2", "run:", None).await,
        [(IncidentId(1), "run:ab:0:5".to_string())]
    );
    assert_eq!(following("st2b", "run_", None).await.len(), 1);
    assert_eq!(following("st2", "run_", None).await.len(), 0);
    assert_eq!(following("st2b", "r%", None).await.len(), 0);
    assert_eq!(
        following("st2", "done:", Some(&[7])).await,
        [(IncidentId(3), "done:cd:0".to_string())]
    );
    assert!(following("st2", "run:", Some(&[7])).await.is_empty());
    store
        .timeline_note(
            IncidentId(3),
            TimelineEntry {
                at: Timestamp(10_500),
                kind: TimelineKind::Remediation,
                message: "remediation ops.fix succeeded in 4 s".into(),
                actor: None,
            },
        )
        .await
        .unwrap();
    let t = store
        .timeline(
            IncidentId(3),
            Page {
                offset: 0,
                limit: 100,
            },
        )
        .await
        .unwrap();
    assert!(
        t.iter().any(|e| e.kind == TimelineKind::Remediation && e.message.ends_with("succeeded in 4 s")),
        "{t:?}"
    );

    // Retention: finished messages older than the cut go, a batch at a
    // time; pending ones (slack's, and the servicenow one) stay.
    assert_eq!(store.outbox_prune(Timestamp(9_550), 10).await.unwrap(), 2);
    assert_eq!(store.outbox_prune(Timestamp(20_000), 1).await.unwrap(), 1);
    assert_eq!(store.outbox_prune(Timestamp(20_000), 10).await.unwrap(), 0);
    assert_eq!(
        store.outbox_depth(None).await.unwrap(),
        [("servicenow".to_string(), 1), ("slack".to_string(), 1)]
    );
}

/// `list_alerts`: firing alerts only, either those let through or those
/// suppressed (with rule and reason); by alert name; by the CI their key
/// names, matched whole (`db` is not `dbx`) after an alert name of any
/// characters; newest start first, page by page.
async fn firing_alerts_are_listed_by_suppression_name_and_ci(db: Db) {
    let alert = |fp: u64, name: &str, key: &str, start: i64, suppressed: bool| {
        let mut a = record(fp, 10);
        a.labels = [("alertname".to_string(), name.to_string())]
            .into_iter()
            .collect();
        a.key = key.into();
        a.starts_at = Timestamp(start);
        a.suppressed = suppressed.then(|| ("suppress-heartbeats".into(), "heartbeat".into()));
        StoreOp::InsertAlert(Box::new(a))
    };
    let mut resolved = record(4, 10);
    resolved.status = AlertStatus::Resolved;
    resolved.key = "PgDown|ci:db".into();
    resolved.suppressed = None;
    db.store
        .apply(&[
            alert(1, "PgDown", "PgDown|ci:db", 1_000, false),
            alert(2, "WebDown", "WebDown|ci:web", 2_000, false),
            alert(3, "Watchdog", "fp:0000000000000003", 3_000, true),
            StoreOp::InsertAlert(Box::new(resolved)),
            alert(5, "PgDown", "PgDown|ci:dbx", 500, false),
            alert(6, "Ωmega|ci:x", "Ωmega|ci:x|ci:db", 1_500, false),
        ])
        .await
        .unwrap();
    let q = |suppressed: bool,
             alertname: Option<&str>,
             cis: Option<&[&str]>,
             offset: u64,
             limit: u32| AlertQuery {
        suppressed,
        alertname: alertname.map(str::to_string),
        cis: cis.map(|c| c.iter().map(|s| s.to_string()).collect()),
        page: Page { offset, limit },
    };
    let fps = |rows: Vec<AlertRecord>| rows.iter().map(|a| a.fingerprint.0).collect::<Vec<_>>();
    let list = async |query: AlertQuery| fps(db.store.list_alerts(query).await.unwrap());
    assert_eq!(list(q(false, None, None, 0, 100)).await, [2, 6, 1, 5]);
    let suppressed = db
        .store
        .list_alerts(q(true, None, None, 0, 100))
        .await
        .unwrap();
    assert_eq!(fps(suppressed.clone()), [3]);
    assert_eq!(
        suppressed[0].suppressed,
        Some(("suppress-heartbeats".to_string(), "heartbeat".to_string()))
    );
    assert_eq!(list(q(false, Some("PgDown"), None, 0, 100)).await, [1, 5]);
    assert_eq!(list(q(false, None, Some(&["db"]), 0, 100)).await, [6, 1]);
    assert_eq!(
        list(q(false, None, Some(&["web", "dbx"]), 0, 100)).await,
        [2, 5]
    );
    assert_eq!(
        list(q(false, Some("PgDown"), Some(&["db"]), 0, 100)).await,
        [1]
    );
    assert!(list(q(false, None, Some(&[]), 0, 100)).await.is_empty());
    assert!(list(q(true, None, Some(&["db"]), 0, 100)).await.is_empty());
    assert_eq!(list(q(false, None, None, 1, 2)).await, [6, 1]);
    assert_eq!(list(q(false, None, None, 3, 2)).await, [5]);
}

/// `list_incidents` narrowed to one priority and to the incidents that
/// impact one service (an element of the list, not a part of a name).
async fn incidents_are_filtered_by_priority_and_service(db: Db) {
    let mk = |id: i64, p: u8, services: &[&str]| {
        let mut i = incident(id, IncidentState::Open, 1);
        i.key = format!("k{id}").into();
        i.priority = Priority::new(p).unwrap();
        i.impacted_services = services.iter().map(|s| s.to_string()).collect();
        upsert(i)
    };
    db.store
        .apply(&[
            mk(1, 1, &["shop", "blog"]),
            mk(2, 2, &["shop"]),
            mk(3, 1, &["shopping"]),
            mk(4, 3, &[]),
        ])
        .await
        .unwrap();
    let ids = async |priority: Option<u8>, service: Option<&str>| {
        db.store
            .list_incidents(IncidentQuery {
                state: StateFilter::All,
                limit: 100,
                priority: priority.and_then(Priority::new),
                service: service.map(str::to_string),
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|i| i.id.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(None, None).await, [4, 3, 2, 1]);
    assert_eq!(ids(Some(1), None).await, [3, 1]);
    assert_eq!(ids(None, Some("shop")).await, [2, 1]);
    assert_eq!(ids(Some(2), Some("shop")).await, [2]);
    assert_eq!(ids(None, Some("blog")).await, [1]);
    assert!(ids(None, Some("nope")).await.is_empty());
}

/// `alert_tallies`: alerts started after the widest cut, grouped by the CI
/// their key names (after an alert name that may hold `|ci:` itself), by
/// suppressing rule, attached or not, and by band; an attached alert whose
/// key is its incident's opened it.
async fn alerts_are_tallied_by_ci_rule_and_window(db: Db) {
    let mut opened = incident(10, IncidentState::Open, 2);
    opened.key = "PgDown|ci:db".into();
    let alert =
        |fp: u64, name: &str, key: &str, start: i64, incident: Option<i64>, rule: Option<&str>| {
            let mut a = record(fp, 10);
            a.labels = [("alertname".to_string(), name.to_string())]
                .into_iter()
                .collect();
            a.key = key.into();
            a.starts_at = Timestamp(start);
            a.incident = incident.map(IncidentId);
            a.suppressed = rule.map(|r| (r.to_string(), "why".to_string()));
            StoreOp::InsertAlert(Box::new(a))
        };
    db.store
        .apply(&[
            upsert(opened),
            alert(1, "PgDown", "PgDown|ci:db", 5_000, Some(10), None),
            alert(2, "WebDown", "WebDown|ci:web", 4_500, Some(10), None),
            alert(7, "WebDown", "WebDown|ci:web", 4_600, Some(10), None),
            alert(
                3,
                "Watchdog",
                "fp:0000000000000003",
                3_000,
                None,
                Some("suppress-heartbeats"),
            ),
            alert(4, "Ωmega|ci:x", "Ωmega|ci:x|ci:db", 2_000, None, None),
            alert(5, "PgDown", "PgDown|ci:db", 500, Some(10), None),
        ])
        .await
        .unwrap();
    let mut got = db
        .store
        .alert_tallies([Timestamp(4_000), Timestamp(2_500), Timestamp(1_000)])
        .await
        .unwrap();
    got.sort();
    let t =
        |ci: Option<&str>, rule: Option<&str>, attached: bool, band: usize, n: u64, opened: u64| {
            incidentd::store::AlertTally {
                ci: ci.map(str::to_string),
                suppressed_rule: rule.map(str::to_string),
                attached,
                band,
                count: n,
                opened,
            }
        };
    assert_eq!(
        got,
        [
            t(None, Some("suppress-heartbeats"), false, 1, 1, 0),
            t(Some("db"), None, false, 2, 1, 0),
            t(Some("db"), None, true, 0, 1, 1),
            t(Some("web"), None, true, 0, 2, 0),
        ]
    );
}

/// `incidents_since_page`: the same incidents as `slo_incidents` (every
/// priority), each once, whatever the page size: active ones by id, then
/// resolved ones by resolution time (ties by id).
async fn incidents_since_are_read_page_by_page(db: Db) {
    let mk = |id: i64, resolved: Option<i64>| {
        let mut i = incident(
            id,
            if resolved.is_some() {
                IncidentState::Resolved
            } else {
                IncidentState::Open
            },
            1,
        );
        i.resolved_at = resolved.map(Timestamp);
        upsert(i)
    };
    let ops = [
        mk(1, None),
        mk(2, Some(5_000)),
        mk(3, Some(2_000)), // before since: out
        mk(4, None),
        mk(5, Some(4_000)), // at since: in
        mk(6, Some(5_000)), // the same time as 2
        mk(7, Some(9_000)),
        mk(8, None),
        mk(9, Some(3_999)), // out
    ];
    db.store.apply(&ops).await.unwrap();
    let since = Timestamp(4_000);
    let mut all: Vec<i64> = db
        .store
        .slo_incidents(since, Priority::ALL[4])
        .await
        .unwrap()
        .iter()
        .map(|i| i.id.0)
        .collect();
    all.sort_unstable();
    assert_eq!(all, [1, 2, 4, 5, 6, 7, 8]);
    for limit in [1, 2, 3, 7, 100] {
        let mut got = Vec::new();
        let mut after = incidentd::store::IncidentCursor::Start;
        loop {
            let page = db
                .store
                .incidents_since_page(since, after, limit)
                .await
                .unwrap();
            assert!(page.len() <= limit as usize);
            got.extend(page.iter().map(|i| i.id.0));
            let Some(last) = page.last() else { break };
            after = incidentd::store::IncidentCursor::after(last);
            if page.len() < limit as usize {
                break;
            }
        }
        assert_eq!(got, [1, 4, 8, 5, 2, 6, 7], "pages of {limit}");
    }
}
