//! The Kafka client pieces the stream examples share (`bench_stream`,
//! `stream_e2e`), included with `#[path = "common/kafka.rs"] mod kafka;`.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord};

/// A client of `bootstrap` with `settings`.
pub fn config(bootstrap: &str, settings: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config
}

/// Sends one record, waiting while the producer's queue is full.
pub fn send(producer: &BaseProducer, topic: &str, key: &str, value: &str) {
    let mut record = BaseRecord::<str, str>::to(topic).key(key).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((_, returned)) => {
                producer.poll(Duration::from_millis(10));
                record = returned;
            }
        }
    }
    producer.poll(Duration::ZERO);
}
