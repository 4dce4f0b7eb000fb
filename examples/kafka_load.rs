//! Kafka load for BENCHMARKS.md: fill a topic, then time a consumer group
//! (an incidentd instance) draining it.
//!
//! ```text
//! kafka_load produce BROKERS TOPIC ALERTS FINGERPRINTS
//!     one canonical alert per message, fingerprints cycled in order (so with
//!     ALERTS > FINGERPRINTS the rest are repeats), keyed by correlation key
//! kafka_load drain BROKERS TOPIC GROUP [BROKER_PID]
//!     polls the group's committed offsets every 100 ms; prints the rate from
//!     the first commit until no lag, the steady rate from the first commit
//!     past 10 % of the topic, and the broker's CPU use meanwhile
//! ```

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("produce") if args.len() == 5 => produce(
            &args[1],
            &args[2],
            args[3].parse().expect("ALERTS"),
            args[4].parse().expect("FINGERPRINTS"),
        ),
        Some("drain") if args.len() >= 4 => drain(
            &args[1],
            &args[2],
            &args[3],
            args.get(4).map(|p| p.parse().expect("BROKER_PID")),
        ),
        _ => {
            eprintln!(
                "usage: kafka_load produce BROKERS TOPIC ALERTS FINGERPRINTS | drain BROKERS TOPIC GROUP [BROKER_PID]"
            );
            std::process::exit(2);
        }
    }
}

fn produce(brokers: &str, topic: &str, alerts: u64, fingerprints: u64) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let started = Instant::now();
    for i in 0..alerts {
        let fp = i % fingerprints;
        let host = fp / 4;
        let key = format!("LoadTest{}|host:load-{host}", fp % 13);
        let value = format!(
            r#"{{"labels":{{"alertname":"LoadTest{}","instance":"load-{host}:9100","path":"/p{}","severity":"warning","job":"node","env":"prod"}},"annotations":{{"summary":"load test alert {fp}"}},"startsAt":"2026-11-22T03:00:00Z"}}"#,
            fp % 13,
            fp % 4
        );
        let mut rec = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {alerts} alerts ({fingerprints} fingerprints) in {secs:.1}s ({:.0}/s)",
        alerts as f64 / secs
    );
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn drain(brokers: &str, topic: &str, group: &str, broker_pid: Option<u32>) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts = md.topics()[0].partitions().len() as i32;
    let mut high = 0;
    for p in 0..parts {
        high += c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks")
            .1;
    }
    let committed = |c: &BaseConsumer| -> i64 {
        let mut tpl = TopicPartitionList::new();
        for p in 0..parts {
            tpl.add_partition(topic, p);
        }
        let Ok(list) = c.committed_offsets(tpl, Duration::from_secs(5)) else {
            return 0;
        };
        (0..parts)
            .map(
                |p| match list.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => 0,
                },
            )
            .sum()
    };
    let mut first: Option<(Instant, i64, Option<u64>)> = None;
    // Steady state: from the first commit past a tenth of the topic (group
    // join, state load and the first commit interval are behind us).
    let mut tenth: Option<(Instant, i64)> = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let done = committed(&c);
        if first.is_none() && done > 0 {
            first = Some((Instant::now(), done, broker_pid.and_then(cpu_ticks)));
        }
        if tenth.is_none() && done * 10 >= high {
            tenth = Some((Instant::now(), done));
        }
        if done >= high {
            break;
        }
        assert!(Instant::now() < deadline, "not drained in 30 min");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (t0, n0, cpu0) = first.expect("something was committed");
    let secs = t0.elapsed().as_secs_f64();
    let n = high - n0;
    let broker = match (cpu0, broker_pid.and_then(cpu_ticks)) {
        (Some(a), Some(b)) => format!(
            ", broker CPU {:.0}% of one core",
            (b - a) as f64 / 100.0 / secs * 100.0
        ),
        _ => String::new(),
    };
    let steady = match tenth {
        Some((t, d)) if high > d && t.elapsed().as_secs_f64() > 0.0 => {
            format!(
                "; steady (from 10 %): {:.0} alerts/s",
                (high - d) as f64 / t.elapsed().as_secs_f64()
            )
        }
        _ => String::new(),
    };
    println!(
        "drained {n} messages in {secs:.2}s after the first commit: {:.0} alerts/s{steady}{broker}",
        n as f64 / secs
    );
}
