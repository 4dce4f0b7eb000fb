//! Sources beyond the HTTP handlers: the Kafka consumer (alerts from topics,
//! at least once) and the publisher of distributed mode (webhooks → the
//! keyed ingest topic).

pub mod kafka;
pub mod quarantine;
pub mod settings;

pub use quarantine::{Quarantine, Quarantined};

pub use kafka::{
    Forwarder, IncidentCommand, KafkaError, KafkaSource, Publisher, partition_key, shard_of,
};
