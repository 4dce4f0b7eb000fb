//! The Kafka source against librdkafka's mock cluster (a real Kafka protocol
//! peer, in-process): alerts from topics become incidents, bad messages are
//! dead-lettered and never block their partition, offsets are committed only
//! for durable effects, a restart resumes where it stopped, and in
//! distributed mode webhooks go through the keyed ingest topic.

mod support;
use support::{eventually, start};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use incidentd::app::Running;
use incidentd::config::{self, Config, Overrides};
use incidentd::store::{IncidentQuery, StateFilter};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// A small CMDB: the shop API depends on its database; `lone-app` stands
/// alone (another dependency component).
const CMDB: &str = r#"version: 1
services:
  - id: "shop"
    name: "Shop"
    tier: 1
    owner: "team-shop"
cis:
  - id: "db-main"
    class: "database"
    owner: "team-db"
  - id: "api-shop"
    class: "application"
    service: "shop"
    owner: "team-shop"
    depends_on: ["db-main"]
  - id: "lone-app"
    class: "application"
    owner: "team-lone"
"#;

/// A one-broker mock cluster with `topics` (name, partitions), and a
/// daemon configuration for it whose `[kafka]` table ends with `kafka`.
struct Mock {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    bootstrap: String,
    config: Config,
    _dir: tempfile::TempDir,
}

fn mock(topics: &[(&str, i32)], kafka: &str) -> Mock {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (name, partitions) in topics {
        cluster.create_topic(name, *partitions, 1).expect("topic");
    }
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &kafka_toml(&bootstrap, kafka));
    Mock {
        cluster,
        bootstrap,
        config,
        _dir: dir,
    }
}

fn config(dir: &Path, kafka_toml: &str) -> Config {
    let file = dir.join("incidentd.toml");
    std::fs::write(&file, kafka_toml).unwrap();
    std::fs::write(dir.join("cmdb.yaml"), CMDB).unwrap();
    let mut c = config::load(
        Some(&file),
        &Overrides {
            data_dir: Some(dir.join("data")),
            rules_dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")),
            cmdb: Some(dir.join("cmdb.yaml")),
            ..Overrides::default()
        },
    )
    .expect("config is valid");
    c.engine.auto_resolve_hold = Duration::ZERO;
    c
}

fn kafka_toml(bootstrap: &str, extra: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{bootstrap}"
group_id = "incidentd-test"
batch_wait = "2ms"
{extra}
[kafka.librdkafka]
"session.timeout.ms" = "6000"
"statistics.interval.ms" = "500"
"#
    )
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer")
}

async fn produce(p: &FutureProducer, topic: &str, key: &str, value: &str) {
    p.send(
        FutureRecord::to(topic).key(key).payload(value),
        Duration::from_secs(10),
    )
    .await
    .expect("broker acknowledges");
}

async fn active_incidents(r: &Running) -> Vec<incidentd::domain::Incident> {
    r.store
        .list_incidents(IncidentQuery {
            state: StateFilter::All,
            limit: 10_000,
            before: None,
            ..Default::default()
        })
        .await
        .expect("store readable")
}

fn metric(r: &Running, name_and_labels: &str) -> f64 {
    let text = r.metrics.render();
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name_and_labels} not exported"))
}

const AM_BODY: &str = r#"{"version":"4","status":"firing","receiver":"incidentd","groupKey":"{}:{}",
 "alerts":[{"status":"firing","labels":{"alertname":"KafkaDiskFull","instance":"kafka-test-1:9100","severity":"critical"},
 "annotations":{},"startsAt":"2026-11-22T03:00:00Z","endsAt":"0001-01-01T00:00:00Z"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_alerts_become_incidents_bad_messages_are_dead_lettered_offsets_committed() {
    let Mock {
        cluster: _cluster,
        bootstrap,
        config: c,
        _dir,
    } = mock(
        &[("alerts", 3), ("alerts-dlq", 1)],
        "dead_letter_topic = \"alerts-dlq\"\n[[kafka.topics]]\nname = \"alerts\"\n",
    );
    let r = start(&c).await;
    let p = producer(&bootstrap);
    // A canonical alert, an array of two, an Alertmanager webhook body, and
    // a message that is none of them, in the middle of partition traffic.
    produce(
        &p,
        "alerts",
        "k1",
        r#"{"labels":{"alertname":"KafkaHighLatency","instance":"kafka-test-2:9100"},"startsAt":"2026-11-22T03:00:00Z"}"#,
    )
    .await;
    produce(
        &p,
        "alerts",
        "k2",
        r#"[{"labels":{"alertname":"KafkaQueueFull","instance":"kafka-test-3:9100"}},
        {"labels":{"alertname":"KafkaQueueFull","instance":"kafka-test-4:9100"}}]"#,
    )
    .await;
    produce(&p, "alerts", "k3", AM_BODY).await;
    produce(&p, "alerts", "k1", "{not json").await;
    produce(
        &p,
        "alerts",
        "k1",
        r#"{"labels":{"alertname":"KafkaAfterBad","instance":"kafka-test-5:9100"}}"#,
    )
    .await;

    let incidents = eventually("5 incidents from the topic", 30, async || {
        let v = active_incidents(&r).await;
        (v.len() == 5).then_some(v)
    })
    .await;
    let titles: Vec<&str> = incidents.iter().map(|i| &*i.title).collect();
    for name in [
        "KafkaHighLatency",
        "KafkaQueueFull",
        "KafkaDiskFull",
        "KafkaAfterBad",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(name)),
            "{name} missing from {titles:?}"
        );
    }
    // Shards: the partition owners' ids are ≡ partition (mod 4096).
    for i in &incidents {
        assert_eq!(
            i.id.0 % 4096,
            i64::from(i.shard),
            "incident id {} of shard {}",
            i.id.0,
            i.shard
        );
    }

    // The bad message: counted, and copied to the dead-letter topic with
    // where it came from and why.
    eventually("invalid counted", 10, async || {
        (metric(
            &r,
            r#"incidentd_kafka_messages_invalid_total{topic="alerts"}"#,
        ) == 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        metric(
            &r,
            r#"incidentd_kafka_messages_dead_lettered_total{topic="alerts"}"#
        ),
        1.0
    );
    let dlq: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&["alerts-dlq"]).unwrap();
    let msg = eventually("the dead-lettered message", 20, async || {
        match dlq.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => Some(m.detach()),
            _ => None,
        }
    })
    .await;
    assert_eq!(msg.payload(), Some(&b"{not json"[..]));
    let headers = msg.headers().expect("headers");
    let get = |k: &str| {
        headers
            .iter()
            .find(|h| h.key == k)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(get("incidentd-source-topic").as_deref(), Some("alerts"));
    assert!(get("incidentd-source-offset").is_some());
    assert!(
        get("incidentd-error")
            .unwrap_or_default()
            .contains("not valid JSON"),
        "{:?}",
        get("incidentd-error")
    );

    // Every message, the bad one included, is consumed and committed.
    eventually("zero lag", 20, async || {
        (support::kafka_group_lag(&bootstrap, "incidentd-test", "alerts", 3) == 0).then_some(())
    })
    .await;
    assert_eq!(
        metric(
            &r,
            r#"incidentd_kafka_messages_consumed_total{topic="alerts"}"#
        ),
        4.0
    );
    assert!(metric(&r, r#"incidentd_kafka_rebalances_total{kind="assign"}"#) >= 1.0);
    assert_eq!(metric(&r, "incidentd_shards_owned"), 3.0);
    r.shutdown().await;
}

/// Caught up means committed: once the consumer is idle, the offsets whose
/// effects are durable are committed at once, not at the next auto-commit
/// (an hour away here), so a caught-up group shows no lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_consumer_commits_what_is_durable_without_waiting_for_auto_commit() {
    let Mock {
        cluster: _cluster,
        bootstrap,
        config: mut c,
        _dir,
    } = mock(&[("alerts", 2)], "[[kafka.topics]]\nname = \"alerts\"\n");
    c.kafka
        .as_mut()
        .expect("kafka configured")
        .librdkafka
        .push(("consumer.auto.commit.interval.ms".into(), "3600000".into()));
    let p = producer(&bootstrap);
    let r = start(&c).await;
    for i in 0..6 {
        produce(
            &p,
            "alerts",
            &format!("k{i}"),
            &format!(r#"{{"labels":{{"alertname":"Idle{i}","instance":"idle-{i}:9100"}}}}"#),
        )
        .await;
    }
    eventually("6 incidents", 30, async || {
        (active_incidents(&r).await.len() == 6).then_some(())
    })
    .await;
    eventually("zero lag while running", 20, async || {
        (support::kafka_group_lag(&bootstrap, "incidentd-test", "alerts", 2) == 0).then_some(())
    })
    .await;
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_committed_offsets_without_duplicates() {
    let Mock {
        cluster: _cluster,
        bootstrap,
        config: c,
        _dir,
    } = mock(&[("alerts", 2)], "[[kafka.topics]]\nname = \"alerts\"\n");
    let p = producer(&bootstrap);
    let alert = |i: u32| {
        format!(
            r#"{{"labels":{{"alertname":"Resume{i}","instance":"resume-{i}:9100"}},"startsAt":"2026-11-22T03:00:00Z"}}"#
        )
    };
    let r = start(&c).await;
    for i in 0..20 {
        produce(&p, "alerts", &format!("k{i}"), &alert(i)).await;
    }
    eventually("20 incidents", 30, async || {
        (active_incidents(&r).await.len() == 20).then_some(())
    })
    .await;
    r.shutdown().await;
    assert_eq!(
        support::kafka_group_lag(&bootstrap, "incidentd-test", "alerts", 2),
        0
    );

    // While down: 10 more alerts, 10 repeats of old ones.
    for i in 10..30 {
        produce(&p, "alerts", &format!("k{i}"), &alert(i)).await;
    }
    let r = start(&c).await;
    eventually("30 incidents after the restart", 30, async || {
        (active_incidents(&r).await.len() == 30).then_some(())
    })
    .await;
    eventually("zero lag after the restart", 20, async || {
        (support::kafka_group_lag(&bootstrap, "incidentd-test", "alerts", 2) == 0).then_some(())
    })
    .await;
    let incidents = active_incidents(&r).await;
    let mut keys: Vec<&str> = incidents.iter().map(|i| &*i.key).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 30, "one incident per key, none doubled");
    // 10..19 were delivered twice (before and after the restart), the
    // others once: counted as repeats of the stored alerts, never doubled.
    for i in &incidents {
        assert_eq!(i.alert_fingerprints.len(), 1, "{}", i.key);
        let n: u32 = i
            .key
            .strip_prefix("Resume")
            .and_then(|k| k.split('|').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected key {}", i.key));
        let expect = if (10..20).contains(&n) { 2 } else { 1 };
        assert_eq!(i.alert_count, 1, "{}: one alert", i.key);
        assert_eq!(support::deliveries(&r, i.id).await, expect, "{}", i.key);
    }
    r.shutdown().await;
}

async fn post(r: &Running, uri: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = r.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_mode_publishes_webhooks_keyed_by_dependency_component() {
    let Mock {
        cluster: _cluster,
        bootstrap,
        config: c,
        _dir,
    } = mock(
        &[("incidentd-ingest", 4)],
        "ingest_topic = \"incidentd-ingest\"\n",
    );
    let r = start(&c).await;
    // Two alerts on CIs of one dependency chain (api-shop depends on
    // db-main) and one unbound.
    let body = json!({
        "version": "4", "status": "firing", "receiver": "incidentd", "groupKey": "g",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "PostgresDown", "ci": "db-main", "severity": "critical"},
             "annotations": {}, "startsAt": "2026-11-22T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z"},
            {"status": "firing", "labels": {"alertname": "HighErrorRate", "ci": "api-shop", "severity": "critical"},
             "annotations": {}, "startsAt": "2026-11-22T03:00:30Z", "endsAt": "0001-01-01T00:00:00Z"},
            {"status": "firing", "labels": {"alertname": "Unbound", "instance": "nowhere-1:9100"},
             "annotations": {}, "startsAt": "2026-11-22T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}
        ]
    });
    let (status, resp) = post(&r, "/api/v1/alerts/alertmanager", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["accepted"], 3);

    // On the topic: one message per key; the two related alerts share one.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "topic-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&["incidentd-ingest"]).unwrap();
    let mut keys = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while keys.len() < 2 && Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let alerts: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            keys.push((key, alerts.as_array().map_or(0, Vec::len)));
        }
    }
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("Unbound|host:nowhere-1".to_string(), 1),
            ("component:api-shop".to_string(), 2),
        ],
        "related alerts share their component's key"
    );

    // And the partition's owner turned them into incidents: the database
    // alert is the root, the API alert joined it.
    let incidents = eventually("incidents from the ingest topic", 30, async || {
        let v = active_incidents(&r).await;
        (v.len() == 2 && v.iter().any(|i| i.alert_fingerprints.len() == 2)).then_some(v)
    })
    .await;
    let root = incidents
        .iter()
        .find(|i| i.alert_fingerprints.len() == 2)
        .unwrap();
    assert_eq!(root.root_ci.as_deref(), Some("db-main"));

    // A PagerDuty trigger and its acknowledge travel by dedup_key.
    let trigger = json!({"routing_key": "r", "event_action": "trigger", "dedup_key": "pd-42",
        "payload": {"summary": "disk full", "source": "pd-host-1", "severity": "critical"}});
    let (status, _) = post(&r, "/api/v1/alerts/pagerduty", &trigger.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let ack = json!({"routing_key": "r", "event_action": "acknowledge", "dedup_key": "pd-42"});
    let (status, _) = post(&r, "/api/v1/alerts/pagerduty", &ack.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually("the PagerDuty incident acknowledged", 30, async || {
        active_incidents(&r)
            .await
            .into_iter()
            .find(|i| i.title.contains("disk full"))
            .filter(|i| i.state == incidentd::domain::IncidentState::Acknowledged)
    })
    .await;
    assert_eq!(
        metric(&r, r#"incidentd_kafka_published_total{outcome="success"}"#),
        4.0,
        "one message per key of the webhook, one per PagerDuty event"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_fail_cleanly_when_the_broker_is_down() {
    let Mock {
        cluster,
        config: c,
        _dir,
        ..
    } = mock(
        &[("incidentd-ingest", 1)],
        "ingest_topic = \"incidentd-ingest\"\nproduce_timeout = \"1500ms\"\n",
    );
    let r = start(&c).await;
    cluster.broker_down(1).unwrap();
    let (status, body) = post(&r, "/api/v1/alerts/alertmanager", AM_BODY).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ingest topic"),
        "{body}"
    );
    cluster.broker_up(1).unwrap();
    r.shutdown().await;
}
