//! The autoscaler's signals, read from Prometheus.
//!
//! [`queries`] writes the PromQL (pure, unit-tested); [`read`] runs it. Every query
//! selects the series by the `isvc` label that `sluice-server` sets itself (from
//! `SLUICE_ISVC`) and by the `namespace` target label that pod discovery adds, so
//! the series of every revision count: during a rollout the capacity is sized for
//! the whole load and split between the revisions by weight.
//!
//! - Peak request rate: `max_over_time` of the summed `rate()` of
//!   `sluice_inference_requests_total` over the peak window (a subquery). Pods that
//!   are scraped but have served nothing yet read as 0 requests/s, not as missing.
//! - Latest request rate: the summed `rate()` now, for burst mode.
//! - CPU: per-pod `rate(process_cpu_seconds_total)` (the server's own process
//!   collector, so no cAdvisor is needed), averaged over pods, lowest over the CPU
//!   window; absent unless the window is at least 90% covered by data.
//! - GPU: `DCGM_FI_DEV_GPU_UTIL` of the serving pods (NVIDIA's DCGM exporter, which
//!   labels each GPU with the `namespace` and `pod` using it), averaged.
//! - Queue depth: per-pod `sluice_inference_queue_depth`, averaged over pods and
//!   over the rate window.
//! - Stream workers (`spec.streaming`): the request rate is the rate of
//!   `sluice_stream_records_total{outcome="consumed"}`; the consumer lag is the
//!   sum over partitions of `sluice_stream_consumer_lag_records` (the highest
//!   report per partition, as two workers can both report one for a moment
//!   around a rebalance), averaged over the rate window; the partitions are
//!   the highest `sluice_stream_input_partitions`.

use futures::future::OptionFuture;
use prometheus_http_query::Client;
use tracing::warn;

use super::decision::Signals;
use crate::crd::autoscaling::AutoscalingSpec;

/// The PromQL behind each signal; `None` where the signal does not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queries {
    /// Highest request rate over the peak window.
    pub peak_rps: String,
    /// Request rate now.
    pub latest_rps: String,
    /// CPU cores per pod, lowest over the CPU window.
    pub cpu_cores_per_pod: String,
    /// GPU utilization per pod, 0 to 1 (only for GPU pods that exist).
    pub gpu_utilization: Option<String>,
    /// Requests waiting per pod.
    pub queue_depth_per_pod: String,
    /// Records the stream's workers have not committed (stream workers only).
    pub consumer_lag: Option<String>,
    /// Partitions of the stream's input topic (stream workers only).
    pub partitions: Option<String>,
}

/// What kind of pods serve, for [`queries`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodKind {
    /// They use a GPU (`device: cuda`).
    pub gpu: bool,
    /// They are stream workers (`spec.streaming`).
    pub streaming: bool,
}

/// Writes the queries for the InferenceService `name` in `namespace`. `pods` are its
/// serving pods' names (the GPU query selects them).
pub fn queries(
    namespace: &str,
    name: &str,
    spec: &AutoscalingSpec,
    pods: &[String],
    kind: PodKind,
) -> Queries {
    let labels = format!(
        r#"namespace="{}",isvc="{}""#,
        escape(namespace),
        escape(name)
    );
    let selector = format!("{{{labels}}}");
    let rate_window = spec.rate_window_seconds.max(1);
    let step = (rate_window / 3).max(1);
    let requests = if kind.streaming {
        format!(r#"sluice_stream_records_total{{{labels},outcome="consumed"}}"#)
    } else {
        format!("sluice_inference_requests_total{selector}")
    };
    let rate =
        format!("sum(rate({requests}[{rate_window}s])) or (0 * sum(sluice_model_ready{selector}))");
    let cpu_window = spec.triggers.cpu_window_seconds.max(1);
    let cpu_per_pod = format!(
        "avg(sum by (instance) (rate(process_cpu_seconds_total{selector}[{rate_window}s])))"
    );
    // The window must be (almost) covered: CPU above target for the whole window.
    let needed_points = (cpu_window / step) * 9 / 10;
    let gpu_utilization = (kind.gpu && !pods.is_empty()).then(|| {
        let pods = pods
            .iter()
            .map(|p| regex_escape(p))
            .collect::<Vec<_>>()
            .join("|");
        format!(
            r#"avg_over_time(avg(DCGM_FI_DEV_GPU_UTIL{{namespace="{}",pod=~"{}"}})[{rate_window}s:{step}s]) / 100"#,
            escape(namespace),
            escape(&pods)
        )
    });
    Queries {
        peak_rps: format!(
            "max_over_time(({rate})[{}s:{step}s])",
            spec.peak_window_seconds.max(1)
        ),
        latest_rps: rate,
        cpu_cores_per_pod: format!(
            "min_over_time(({cpu_per_pod})[{cpu_window}s:{step}s]) \
             and on() (count_over_time(({cpu_per_pod})[{cpu_window}s:{step}s]) >= {needed_points})"
        ),
        gpu_utilization,
        queue_depth_per_pod: format!(
            "avg_over_time(avg(sum by (instance) (sluice_inference_queue_depth{selector}))[{rate_window}s:{step}s])"
        ),
        consumer_lag: kind.streaming.then(|| {
            format!(
                "avg_over_time(sum(max by (topic, partition) (sluice_stream_consumer_lag_records{selector}))[{rate_window}s:{step}s])"
            )
        }),
        partitions: kind
            .streaming
            .then(|| format!("max(sluice_stream_input_partitions{selector})")),
    }
}

/// Escapes a PromQL string literal's content.
fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', r#"\""#)
}

/// Escapes regular-expression metacharacters (pod names have only `.` and `-`).
fn regex_escape(value: &str) -> String {
    value.replace('.', r"\.")
}

/// Runs the queries concurrently; a query that fails or returns nothing leaves its
/// signal `None` (the failure is logged).
pub async fn read(client: &Client, queries: &Queries) -> Signals {
    let (
        peak_rps,
        latest_rps,
        cpu_cores_per_pod,
        gpu_utilization,
        queue_depth_per_pod,
        consumer_lag,
        partitions,
    ) = futures::join!(
        scalar(client, &queries.peak_rps),
        scalar(client, &queries.latest_rps),
        scalar(client, &queries.cpu_cores_per_pod),
        optional(client, queries.gpu_utilization.as_deref()),
        scalar(client, &queries.queue_depth_per_pod),
        optional(client, queries.consumer_lag.as_deref()),
        optional(client, queries.partitions.as_deref()),
    );
    Signals {
        peak_rps,
        latest_rps,
        cpu_cores_per_pod,
        gpu_utilization: gpu_utilization.flatten(),
        queue_depth_per_pod,
        consumer_lag: consumer_lag.flatten(),
        partitions: partitions.flatten(),
    }
}

/// [`scalar`] of a query that may not apply.
fn optional<'a>(
    client: &'a Client,
    query: Option<&'a str>,
) -> OptionFuture<impl Future<Output = Option<f64>> + 'a> {
    query.map(|q| scalar(client, q)).into()
}

/// The value of a query that yields one sample (the first, if several).
async fn scalar(client: &Client, query: &str) -> Option<f64> {
    match client.query(query).get().await {
        Ok(result) => match result.data() {
            prometheus_http_query::response::Data::Vector(v) => {
                v.first().map(|s| s.sample().value())
            }
            prometheus_http_query::response::Data::Scalar(s) => Some(s.value()),
            prometheus_http_query::response::Data::Matrix(_) => None,
        },
        Err(error) => {
            warn!(%error, query, "Prometheus query failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_select_the_service_across_revisions_with_the_spec_windows() {
        let spec: AutoscalingSpec =
            serde_saphyr::from_str("{rateWindowSeconds: 15, peakWindowSeconds: 120}").unwrap();
        let q = queries("ml", "fraud", &spec, &[], PodKind::default());
        assert_eq!(
            q.latest_rps,
            r#"sum(rate(sluice_inference_requests_total{namespace="ml",isvc="fraud"}[15s])) or (0 * sum(sluice_model_ready{namespace="ml",isvc="fraud"}))"#
        );
        assert_eq!(
            q.peak_rps,
            format!("max_over_time(({})[120s:5s])", q.latest_rps)
        );
        assert!(q.cpu_cores_per_pod.starts_with(
            r#"min_over_time((avg(sum by (instance) (rate(process_cpu_seconds_total{namespace="ml",isvc="fraud"}[15s]))))[300s:5s])"#
        ));
        // 300 s in 5 s steps is 60 points; 90% of them must be there.
        assert!(
            q.cpu_cores_per_pod.ends_with(">= 54)"),
            "{}",
            q.cpu_cores_per_pod
        );
        assert_eq!(q.gpu_utilization, None, "no GPU query for CPU pods");
    }

    #[test]
    fn gpu_query_names_the_serving_pods() {
        let spec = AutoscalingSpec::default();
        let pods = [
            "fraud-7d9f-abcde".to_string(),
            "fraud-7d9f-fghij".to_string(),
        ];
        let q = queries("ml", "fraud", &spec, &pods, gpu());
        assert_eq!(
            q.gpu_utilization.as_deref(),
            Some(
                r#"avg_over_time(avg(DCGM_FI_DEV_GPU_UTIL{namespace="ml",pod=~"fraud-7d9f-abcde|fraud-7d9f-fghij"})[30s:10s]) / 100"#
            )
        );
        assert_eq!(
            queries("ml", "fraud", &spec, &[], gpu()).gpu_utilization,
            None
        );
    }

    fn gpu() -> PodKind {
        PodKind {
            gpu: true,
            streaming: false,
        }
    }

    #[test]
    fn stream_workers_are_scaled_on_records_lag_and_partitions() {
        let kind = PodKind {
            gpu: false,
            streaming: true,
        };
        let q = queries("ml", "fraud", &AutoscalingSpec::default(), &[], kind);
        assert_eq!(
            q.latest_rps,
            r#"sum(rate(sluice_stream_records_total{namespace="ml",isvc="fraud",outcome="consumed"}[30s])) or (0 * sum(sluice_model_ready{namespace="ml",isvc="fraud"}))"#
        );
        assert_eq!(
            q.consumer_lag.as_deref(),
            Some(
                r#"avg_over_time(sum(max by (topic, partition) (sluice_stream_consumer_lag_records{namespace="ml",isvc="fraud"}))[30s:10s])"#
            )
        );
        assert_eq!(
            q.partitions.as_deref(),
            Some(r#"max(sluice_stream_input_partitions{namespace="ml",isvc="fraud"})"#)
        );
        let http = queries(
            "ml",
            "fraud",
            &AutoscalingSpec::default(),
            &[],
            PodKind::default(),
        );
        assert_eq!((http.consumer_lag, http.partitions), (None, None));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(regex_escape("pod.x"), r"pod\.x");
    }
}
