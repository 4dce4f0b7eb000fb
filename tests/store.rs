//! The SQLite store applies a batch exactly as if its ops ran one by one,
//! although it groups them into multi-row statements.

use incidentd::domain::*;
use incidentd::store::*;

fn incident(id: i64, state: IncidentState, count: u64) -> Incident {
    Incident {
        id: IncidentId(id),
        key: format!("k{id}"),
        state,
        priority: Priority::new(3).unwrap(),
        impact: Level::MEDIUM,
        urgency: Level::MEDIUM,
        title: format!("incident {id}"),
        root_ci: None,
        cis: vec![],
        impacted_services: vec![],
        impact_detail: vec![],
        assignment_group: None,
        alert_fingerprints: vec![],
        alert_count: count,
        opened_at: Timestamp(1_000),
        acknowledged_at: None,
        acknowledged_by: None,
        resolved_at: None,
        updated_at: Timestamp(1_000),
        reopen_count: 0,
        flapping: false,
        rules: vec![],
        links: Links::default(),
        signature: None,
        shard: 0,
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

#[tokio::test]
async fn grouped_batch_equals_ops_in_order() {
    let store = SqliteStore::in_memory().await.unwrap();
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
    ops.push(StoreOp::TouchIncident {
        incident: IncidentId(1),
        alert_count: 2,
    });
    store.apply(&ops).await.unwrap();

    let inc = store.get_incident(IncidentId(1)).await.unwrap().unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.resolved_at, Some(Timestamp(9_000)));
    assert_eq!(
        inc.alert_count, 5,
        "a smaller absolute count does not lower it"
    );
    assert_eq!(inc.alert_fingerprints.len(), n as usize);
    let tl = store.timeline(IncidentId(1)).await.unwrap();
    assert_eq!(tl.len(), n as usize);
    assert_eq!(tl[0].message, "joined 0");
    assert_eq!(
        tl.last().unwrap().message,
        format!("joined {}", n - 1),
        "timeline keeps its order"
    );
    let alerts = store.incident_alerts(IncidentId(1)).await.unwrap();
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

/// Values travel as SQL literals inside one script per batch: any text must
/// come back byte for byte and never be read as SQL.
#[tokio::test]
async fn hostile_text_round_trips() {
    let store = SqliteStore::in_memory().await.unwrap();
    let nasty = [
        "it's",
        "'); DROP TABLE incidents; --",
        "semi;colon\nnew line",
        "nul\0byte",
        "ünïcödé ✓ 🚨",
        "\\'\\\"",
        "",
    ];
    let mut ops = Vec::new();
    for (i, text) in nasty.iter().enumerate() {
        let id = i as i64 + 1;
        let mut inc = incident(id, IncidentState::Open, 1);
        inc.title = text.to_string();
        inc.key = format!("{text}-{id}");
        inc.acknowledged_by = Some(text.to_string());
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
        let id = IncidentId(i as i64 + 1);
        let inc = store
            .get_incident(id)
            .await
            .unwrap()
            .expect("incident stored");
        assert_eq!(inc.title, *text);
        assert_eq!(inc.acknowledged_by.as_deref(), Some(*text));
        let tl = store.timeline(id).await.unwrap();
        assert_eq!(
            (tl[0].message.as_str(), tl[0].actor.as_deref()),
            (*text, Some(*text))
        );
        let alerts = store.incident_alerts(id).await.unwrap();
        assert_eq!(alerts[0].labels.get("alertname"), Some(*text));
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
