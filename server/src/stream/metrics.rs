//! The worker's own metric families, registered beside the model's (so one
//! `/metrics` shows the batcher's queue and runs, drift, and the stream).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Records per micro-batch: powers of two up to 4096.
const BATCH_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// From a record's timestamp to its prediction's commit: 1 ms to 5 min.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The outcomes `sluice_stream_records_total` counts.
pub const OUTCOMES: [&str; 4] = ["consumed", "produced", "dead_lettered", "skipped"];

/// The stream's series.
#[derive(Clone)]
pub struct StreamMetrics {
    /// `sluice_stream_records_total{outcome}`: records finished, by outcome.
    pub records: IntCounterVec,
    /// `sluice_stream_consumer_lag_records{topic,partition}`.
    pub lag: IntGaugeVec,
    /// `sluice_stream_input_partitions{topic}`: the input topic's partitions,
    /// the most workers that can share it (the operator's scaling ceiling).
    pub partitions: IntGaugeVec,
    /// `sluice_stream_batch_records`: records per micro-batch.
    pub batch_records: Histogram,
    /// `sluice_stream_end_to_end_latency_seconds`: record timestamp to commit.
    pub latency: Histogram,
    /// `sluice_stream_transactions_total{outcome}`: committed or aborted.
    pub transactions: IntCounterVec,
    /// `sluice_stream_model_retries_total`: records tried again after the
    /// model failed on them.
    pub retries: prometheus::IntCounter,
}

impl StreamMetrics {
    /// Creates the families in `registry`.
    pub fn register(registry: &Registry) -> StreamMetrics {
        let records = IntCounterVec::new(
            Opts::new(
                "sluice_stream_records_total",
                "Input records finished, by outcome: consumed (every record), produced \
                 (a prediction was written), dead_lettered, skipped (refused with no dead-letter topic).",
            ),
            &["outcome"],
        )
        .expect("a valid metric");
        let lag = IntGaugeVec::new(
            Opts::new(
                "sluice_stream_consumer_lag_records",
                "Records of each owned input partition past the offset this worker committed.",
            ),
            &["topic", "partition"],
        )
        .expect("a valid metric");
        let partitions = IntGaugeVec::new(
            Opts::new(
                "sluice_stream_input_partitions",
                "Partitions of the input topic: the most workers of one group that each read some.",
            ),
            &["topic"],
        )
        .expect("a valid metric");
        let batch_records = Histogram::with_opts(
            HistogramOpts::new("sluice_stream_batch_records", "Records per micro-batch.")
                .buckets(BATCH_BUCKETS.to_vec()),
        )
        .expect("a valid metric");
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_stream_end_to_end_latency_seconds",
                "From an input record's timestamp to the commit of its prediction.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("a valid metric");
        let transactions = IntCounterVec::new(
            Opts::new(
                "sluice_stream_transactions_total",
                "Micro-batches by outcome: committed, or aborted (and read again).",
            ),
            &["outcome"],
        )
        .expect("a valid metric");
        let retries = prometheus::IntCounter::new(
            "sluice_stream_model_retries_total",
            "Records tried again after the model failed on them.",
        )
        .expect("a valid metric");
        for collector in [
            Box::new(records.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lag.clone()),
            Box::new(partitions.clone()),
            Box::new(batch_records.clone()),
            Box::new(latency.clone()),
            Box::new(transactions.clone()),
            Box::new(retries.clone()),
        ] {
            registry.register(collector).expect("distinct metric names");
        }
        for outcome in OUTCOMES {
            records.with_label_values(&[outcome]);
        }
        for outcome in ["committed", "aborted"] {
            transactions.with_label_values(&[outcome]);
        }
        StreamMetrics {
            records,
            lag,
            partitions,
            batch_records,
            latency,
            transactions,
            retries,
        }
    }
}
