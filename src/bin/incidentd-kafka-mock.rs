//! Test support: librdkafka's mock Kafka cluster in a process of its own, so
//! that several incidentd instances can connect to it over TCP and be killed
//! independently of it. Not for production.
//!
//! `incidentd-kafka-mock [--brokers N] [--topic NAME:PARTITIONS]...` prints
//! `bootstrap=HOST:PORT,...` on one line and serves until stdin closes or
//! it is terminated.

use rdkafka::mocking::MockCluster;
use std::io::{BufRead, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut brokers = 1;
    let mut topics: Vec<(String, i32)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--brokers", Some(n)) => match n.parse() {
                Ok(n) if n > 0 => brokers = n,
                _ => return usage(&format!("--brokers {n}: not a positive number")),
            },
            ("--topic", Some(t)) => match t.rsplit_once(':').map(|(n, p)| (n, p.parse())) {
                Some((name, Ok(p))) if p > 0 && !name.is_empty() => topics.push((name.into(), p)),
                _ => return usage(&format!("--topic {t}: expected NAME:PARTITIONS")),
            },
            (other, _) => return usage(&format!("unknown argument {other}")),
        }
    }
    let cluster = match MockCluster::new(brokers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("incidentd-kafka-mock: cannot start the mock cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, partitions) in &topics {
        if let Err(e) = cluster.create_topic(name, *partitions, 1) {
            eprintln!("incidentd-kafka-mock: cannot create topic {name}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut out = std::io::stdout();
    if writeln!(out, "bootstrap={}", cluster.bootstrap_servers())
        .and_then(|()| out.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    // Serve until our parent closes stdin (or kills us).
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
    }
    drop(cluster);
    ExitCode::SUCCESS
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "incidentd-kafka-mock: {msg}\nusage: incidentd-kafka-mock [--brokers N] [--topic NAME:PARTITIONS]..."
    );
    ExitCode::from(2)
}
