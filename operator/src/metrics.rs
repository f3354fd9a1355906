//! The operator's own Prometheus metrics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Counters and histograms served on `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciliations: IntCounter,
    /// Failed reconciles by error kind ([`crate::Error::metric_label`]).
    pub failures: IntCounterVec,
    /// Reconcile wall time.
    pub duration: Histogram,
    /// Writes to the API server made by reconciles, by object kind and verb.
    pub writes: IntCounterVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounter::new(
            "sluice_operator_reconciliations_total",
            "InferenceService reconciles started",
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "sluice_operator_reconcile_errors_total",
                "Failed InferenceService reconciles by error kind",
            ),
            &["error"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_operator_reconcile_duration_seconds",
                "Wall time of one InferenceService reconcile",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        let writes = IntCounterVec::new(
            Opts::new(
                "sluice_operator_api_writes_total",
                "Writes to the Kubernetes API made by reconciles, by kind and verb",
            ),
            &["kind", "verb"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "sluice_operator_leader",
            "1 while this replica holds the leader Lease",
        )
        .expect("valid metric");
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(writes.clone()),
            Box::new(leader.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            writes,
            leader,
        }
    }
}

impl Metrics {
    /// Counts one write of `kind` (`apply`, `delete`, `status`, `event`).
    pub fn write(&self, kind: &str, verb: &str) {
        self.writes.with_label_values(&[kind, verb]).inc();
    }

    /// All writes counted so far.
    pub fn total_writes(&self) -> u64 {
        use prometheus::core::Collector;
        self.writes
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("text exposition is UTF-8")
    }
}
