//! The librdkafka settings of a worker's consumer and producer, and the
//! callbacks librdkafka makes into the worker.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::IntGaugeVec;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;

use super::{Delivery, StreamError, StreamRequest};

/// How long an open transaction may stay open before the broker aborts it.
/// A worker killed mid-transaction holds back `read_committed` readers of
/// its partitions for at most this long (its successor, under the same
/// transactional id, aborts it at once).
pub const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// The consumer's settings: offsets are never committed by librdkafka
/// itself (the worker commits them, in the transaction or after the
/// produce), a new group starts at the earliest record, and aborted
/// transactions of the input are never read.
pub fn consumer_settings(request: &StreamRequest) -> Result<Vec<(String, String)>, StreamError> {
    let mut settings = pairs(&[
        ("bootstrap.servers", request.brokers.as_str()),
        ("group.id", request.group.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("isolation.level", "read_committed"),
        // A killed worker's partitions move to the others after this long.
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "2000"),
        // The lag gauge is refreshed from librdkafka's statistics.
        ("statistics.interval.ms", "1000"),
    ]);
    settings.extend(user_properties(request)?);
    Ok(settings)
}

/// The producer's settings: idempotent in both modes, and transactional
/// under `transactional_id` for exactly-once.
pub fn producer_settings(
    request: &StreamRequest,
    transactional_id: &str,
) -> Result<Vec<(String, String)>, StreamError> {
    let mut settings = pairs(&[
        ("bootstrap.servers", request.brokers.as_str()),
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "2"),
    ]);
    if request.delivery == Delivery::ExactlyOnce {
        settings.extend(pairs(&[
            ("transactional.id", transactional_id),
            ("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS),
        ]));
    }
    settings.extend(user_properties(request)?);
    Ok(settings)
}

/// The transactional id: the one given, else `sluice-<group>-<host name>`, so
/// that a restarted container of the same pod fences its predecessor at once.
pub fn transactional_id(request: &StreamRequest) -> String {
    request.transactional_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "worker".to_string());
        format!("sluice-{}-{host}", request.group)
    })
}

/// The properties of `--properties-file` then of `--property`, later ones
/// winning as librdkafka applies them in order.
fn user_properties(request: &StreamRequest) -> Result<Vec<(String, String)>, StreamError> {
    let mut properties = Vec::new();
    if let Some(path) = &request.properties_file {
        properties.extend(
            read_properties(path)
                .map_err(|e| StreamError::Usage(format!("--properties-file {e}")))?,
        );
    }
    properties.extend(request.properties.iter().cloned());
    Ok(properties)
}

/// The properties of a file of `key=value` lines (see [`parse_properties`]);
/// the error names the file.
pub fn read_properties(path: &Path) -> Result<Vec<(String, String)>, String> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| parse_properties(&text))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `key=value` lines; blank lines and lines starting with `#` are skipped.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .enumerate()
        .map(|(number, line)| (number + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| parse_property(line).map_err(|e| format!("line {number}: {e}")))
        .collect()
}

/// One `key=value`.
pub fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("'{text}' is not key=value")),
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// The consumer's callbacks: rebalances and statistics.
pub struct ConsumerCallbacks {
    /// The input topic, whose partitions' lag is exported.
    topic: String,
    /// `sluice_stream_consumer_lag_records{topic,partition}`.
    lag: IntGaugeVec,
    /// `sluice_stream_input_partitions{topic}`.
    partitions: IntGaugeVec,
    /// Counts revocations: a micro-batch being read when one happens is
    /// dropped (its partitions may belong to another worker now).
    revocations: AtomicU64,
}

impl ConsumerCallbacks {
    /// Callbacks that export the lag of `topic`'s partitions to `lag`, and
    /// their number to `partitions`.
    pub fn new(topic: &str, lag: IntGaugeVec, partitions: IntGaugeVec) -> ConsumerCallbacks {
        ConsumerCallbacks {
            topic: topic.to_string(),
            lag,
            partitions,
            revocations: AtomicU64::new(0),
        }
    }

    /// Revocations so far.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }
}

impl ClientContext for ConsumerCallbacks {
    /// The lag of each partition this worker owns: the end of the partition
    /// (its last stable offset, as `read_committed` reads) less the offset
    /// the worker has committed, which it also stores in the consumer so
    /// that librdkafka sees it whatever commits it (a transaction does). And
    /// the topic's partition count: the statistics list every partition the
    /// metadata names (owned or not), plus an internal one numbered -1.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let known = topic.partitions.keys().filter(|p| **p >= 0).count();
        if known > 0 {
            self.partitions
                .with_label_values(&[self.topic.as_str()])
                .set(known as i64);
        }
        for (partition, stats) in &topic.partitions {
            if *partition < 0 {
                continue;
            }
            let label = partition.to_string();
            // A partition just assigned has no stored offset until its first
            // micro-batch: its lag is then from the group's committed offset,
            // or, once fetching while the group has committed none, the whole
            // partition (a new group starts at the earliest record). While
            // the committed offset is still being asked for, nothing.
            let whole = (stats.fetch_state == "active"
                && stats.committed_offset < 0
                && stats.lo_offset >= 0
                && stats.ls_offset >= 0)
                .then(|| stats.ls_offset - stats.lo_offset);
            let lag = [stats.consumer_lag_stored, stats.consumer_lag]
                .into_iter()
                .find(|lag| *lag >= 0)
                .or(whole);
            if let (true, Some(lag)) = (stats.desired, lag) {
                self.lag
                    .with_label_values(&[self.topic.as_str(), &label])
                    .set(lag);
            } else if !stats.desired {
                let _ = self.lag.remove_label_values(&[self.topic.as_str(), &label]);
            }
        }
    }
}

impl ConsumerContext for ConsumerCallbacks {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.revocations.fetch_add(1, Ordering::AcqRel);
            for element in partitions.elements() {
                let label = element.partition().to_string();
                let _ = self.lag.remove_label_values(&[element.topic(), &label]);
            }
            tracing::info!(partitions = partitions.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partitions assigned");
        }
    }
}

/// The producer's callbacks: failed deliveries, which the at-least-once
/// path checks before it commits.
#[derive(Default)]
pub struct ProducerCallbacks {
    failed: Mutex<Option<String>>,
}

impl ProducerCallbacks {
    /// The first delivery failure since the last call, if any.
    pub fn take_failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl ClientContext for ProducerCallbacks {}

impl ProducerContext for ProducerCallbacks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            let mut failed = self
                .failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            failed.get_or_insert_with(|| error.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_read_key_value_lines_and_name_a_bad_one() {
        let text = "# TLS\nsecurity.protocol = SASL_SSL\n\nsasl.password=a=b\n";
        assert_eq!(
            parse_properties(text).unwrap(),
            vec![
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.password".to_string(), "a=b".to_string()),
            ]
        );
        assert_eq!(
            parse_properties("a=1\nnot a property\n").unwrap_err(),
            "line 2: 'not a property' is not key=value"
        );
        assert!(parse_property("=value").is_err());
    }
}
