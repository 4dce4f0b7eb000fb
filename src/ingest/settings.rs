//! The Kafka source's settings, typed: they live with the source that
//! uses them (configuration builds them from the file).

use std::path::PathBuf;
use std::time::Duration;

/// What a Kafka message value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicFormat {
    /// Detected per message: an object with `alerts` is an Alertmanager
    /// webhook body, anything else canonical alert(s).
    Auto,
    Canonical,
    Alertmanager,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTopic {
    pub name: String,
    pub format: TopicFormat,
}

/// Work shards: one per (topic, partition) consumed, numbered
/// `topic index × PARTITIONS_PER_TOPIC + partition`. Incident ids of a
/// shard's engine are ≡ shard (mod `MAX_SHARDS`), see `Engine::set_shard`.
pub const MAX_TOPICS: usize = 4;
pub const PARTITIONS_PER_TOPIC: u32 = 1024;
pub const MAX_SHARDS: u32 = 4096;

#[derive(Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    /// Topics consumed; the ingest topic (when set) is among them, first.
    pub topics: Vec<KafkaTopic>,
    /// Distributed mode: webhooks publish here instead of ingesting locally.
    pub ingest_topic: Option<String>,
    pub dead_letter_topic: Option<String>,
    /// Most messages handed to the engine as one batch.
    pub max_batch: usize,
    /// How long a partial batch may wait for more messages.
    pub batch_wait: Duration,
    /// How long a webhook waits for the broker to acknowledge its publish.
    pub produce_timeout: Duration,
    pub librdkafka: Vec<(String, String)>,
    /// Properties whose values are read from these files at start.
    pub secret_files: Vec<(String, PathBuf)>,
}

/// Kafka settings printed for debugging: property values that may be
/// credentials (`sasl.password`, `ssl.key.password`, …) are masked.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let props: Vec<(&str, &str)> = self
            .librdkafka
            .iter()
            .map(|(k, v)| {
                let secret = crate::net::redact::sensitive_name(k)
                    && !k.ends_with(".location")
                    && !k.ends_with(".mechanism")
                    && !k.ends_with(".mechanisms");
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("ingest_topic", &self.ingest_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("max_batch", &self.max_batch)
            .field("batch_wait", &self.batch_wait)
            .field("produce_timeout", &self.produce_timeout)
            .field("librdkafka", &props)
            .field("secret_files", &self.secret_files)
            .finish()
    }
}
