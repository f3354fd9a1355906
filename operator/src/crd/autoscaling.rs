//! The `spec.autoscaling` and `status.autoscaling` sections of an InferenceService.
//!
//! Every field has a default, so a manifest without `autoscaling` runs the Sluice
//! autoscaler with the HA floor, the CPU, GPU and queue-depth triggers, and no
//! request-rate rule until `throughputPerReplica` is declared.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who sets the number of serving pods.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AutoscalingMode {
    /// The operator: peak request rate with headroom, raised by the CPU, GPU and
    /// queue-depth triggers and by burst mode, within `minReplicas`..`maxReplicas`.
    #[default]
    Sluice,
    /// An outside scaler: `kubectl scale`, an HPA or KEDA write `spec.replicas`
    /// through the scale subresource and the operator applies it as it is (within
    /// `minReplicas`..`maxReplicas`).
    External,
}

/// How the number of serving pods follows the load.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// `Sluice` (default) or `External`.
    #[serde(default)]
    pub mode: AutoscalingMode,
    /// Requests per second one replica sustains within its latency objective, as
    /// `sluice-server loadtest` measures it. Without it the request-rate rule is off
    /// and only the floor and the triggers decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001, max = 10000000.0))]
    pub throughput_per_replica: Option<f64>,
    /// Capacity kept above the peak: replicas = ceil(peak RPS / throughput per
    /// replica x headroom). Default 1.5.
    #[serde(default = "default_headroom")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub headroom: f64,
    /// The window whose highest request rate sizes the service. Default 300 s.
    #[serde(default = "default_peak_window")]
    #[schemars(range(min = 10, max = 86400))]
    pub peak_window_seconds: u32,
    /// Each request rate is measured over this window; at least two scrape
    /// intervals of the Prometheus that scrapes the pods. Default 30 s.
    #[serde(default = "default_rate_window")]
    #[schemars(range(min = 2, max = 3600))]
    pub rate_window_seconds: u32,
    /// Scale down only to the highest replica count recommended during this window.
    /// Default 300 s.
    #[serde(default = "default_stabilization")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_stabilization_seconds: u32,
    /// How fast replicas may be added outside burst mode.
    #[serde(default, skip_serializing_if = "ScaleUpSpec::is_default")]
    pub scale_up: ScaleUpSpec,
    /// Reaction to a sudden multiple of the load.
    #[serde(default, skip_serializing_if = "BurstSpec::is_default")]
    pub burst: BurstSpec,
    /// Resource triggers that raise the replica count above the request-rate rule.
    #[serde(default, skip_serializing_if = "TriggersSpec::is_default")]
    pub triggers: TriggersSpec,
    /// How often the operator re-evaluates while the mode is `Sluice`. Default 15 s.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            mode: AutoscalingMode::default(),
            throughput_per_replica: None,
            headroom: default_headroom(),
            peak_window_seconds: default_peak_window(),
            rate_window_seconds: default_rate_window(),
            scale_down_stabilization_seconds: default_stabilization(),
            scale_up: ScaleUpSpec::default(),
            burst: BurstSpec::default(),
            triggers: TriggersSpec::default(),
            interval_seconds: default_interval(),
        }
    }
}

impl AutoscalingSpec {
    /// Whether every field has its default (the section is then left out).
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

fn default_headroom() -> f64 {
    1.5
}
fn default_peak_window() -> u32 {
    300
}
fn default_rate_window() -> u32 {
    30
}
fn default_stabilization() -> u32 {
    300
}
fn default_interval() -> u32 {
    15
}

/// Scale-up rate limit: one step per period, each step adding at most the larger of
/// `maxReplicas` and `maxPercent` of the current count.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleUpSpec {
    /// Replicas one step may add. Default 4.
    #[serde(default = "default_step_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: u32,
    /// Percent of the current count one step may add. Default 100.
    #[serde(default = "default_step_percent")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_percent: u32,
    /// Shortest time between two scale-up steps. Default 15 s.
    #[serde(default = "default_step_period")]
    #[schemars(range(min = 0, max = 3600))]
    pub period_seconds: u32,
}

impl Default for ScaleUpSpec {
    fn default() -> Self {
        Self {
            max_replicas: default_step_replicas(),
            max_percent: default_step_percent(),
            period_seconds: default_step_period(),
        }
    }
}

impl ScaleUpSpec {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

fn default_step_replicas() -> u32 {
    4
}
fn default_step_percent() -> u32 {
    100
}
fn default_step_period() -> u32 {
    15
}

/// Burst mode (Knative's panic mode): when the latest request rate alone asks for
/// `threshold` times the current replicas, scale to it at once, past the scale-up
/// rate limit.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BurstSpec {
    /// Multiple of the current replicas that the latest rate must ask for; 0 turns
    /// burst mode off. Default 2.
    #[serde(default = "default_burst_threshold")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub threshold: f64,
}

impl Default for BurstSpec {
    fn default() -> Self {
        Self {
            threshold: default_burst_threshold(),
        }
    }
}

impl BurstSpec {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

fn default_burst_threshold() -> f64 {
    2.0
}

/// Resource triggers. Each asks for `ceil(current x value / target)` replicas (as an
/// HPA does; the consumer-lag trigger `ceil(lag / target)`) and can only raise the
/// count; 0 turns a trigger off.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggersSpec {
    /// Target CPU use per pod, percent of its CPU request (else limit). Default 80.
    #[serde(default = "default_cpu")]
    #[schemars(range(min = 0, max = 1000))]
    pub cpu_utilization_percent: u32,
    /// The CPU trigger acts on the lowest utilization over this window, so CPU must
    /// stay above target this long. Default 300 s.
    #[serde(default = "default_cpu_window")]
    #[schemars(range(min = 10, max = 86400))]
    pub cpu_window_seconds: u32,
    /// Target GPU utilization per pod, percent (`device: cuda` only; read from the
    /// DCGM exporter's `DCGM_FI_DEV_GPU_UTIL`). Default 90.
    #[serde(default = "default_gpu")]
    #[schemars(range(min = 0, max = 100))]
    pub gpu_utilization_percent: u32,
    /// Target requests waiting in each pod's queue. Default 200.
    #[serde(default = "default_queue_depth")]
    #[schemars(range(min = 0, max = 1000000))]
    pub queue_depth: u32,
    /// With `spec.streaming`: records of input lag one worker may have behind
    /// it. The workers wanted are `ceil(total lag / this)` (as KEDA's Kafka
    /// scaler does), never more than the input topic's partitions. Default 1000.
    #[serde(default = "default_consumer_lag")]
    #[schemars(range(min = 0, max = 100000000))]
    pub consumer_lag_records: u32,
}

impl Default for TriggersSpec {
    fn default() -> Self {
        Self {
            cpu_utilization_percent: default_cpu(),
            cpu_window_seconds: default_cpu_window(),
            gpu_utilization_percent: default_gpu(),
            queue_depth: default_queue_depth(),
            consumer_lag_records: default_consumer_lag(),
        }
    }
}

impl TriggersSpec {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

fn default_cpu() -> u32 {
    80
}
fn default_cpu_window() -> u32 {
    300
}
fn default_gpu() -> u32 {
    90
}
fn default_queue_depth() -> u32 {
    200
}
fn default_consumer_lag() -> u32 {
    1000
}

/// What decided the replica count.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Peak request rate x headroom / throughput per replica.
    RequestRate,
    /// Burst mode: the latest request rate jumped to a multiple of the capacity.
    Burst,
    /// The CPU trigger.
    Cpu,
    /// The GPU trigger.
    Gpu,
    /// The queue-depth trigger.
    QueueDepth,
    /// The consumer-lag trigger (`spec.streaming`).
    ConsumerLag,
    /// The input topic's partition count (`spec.streaming`): a worker more
    /// would have no partition to read.
    Partitions,
    /// The `minReplicas` floor.
    MinReplicas,
    /// The `maxReplicas` ceiling.
    MaxReplicas,
    /// The scale-up rate limit held a step back.
    ScaleUpLimit,
    /// The scale-down stabilization window held a higher recent recommendation.
    Stabilization,
    /// A metric was missing, so the count was held.
    MissingData,
    /// `spec.replicas`, set through the scale subresource (mode `External`).
    External,
    /// `spec.placement.mode: PerNode`: one pod on each matching node; the
    /// autoscaler does not scale.
    PerNode,
}

/// One recommendation, kept while it can matter to scale-down stabilization.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// When the recommendation was first made.
    pub time: Time,
    /// Replicas recommended (before stabilization and rate limits).
    pub replicas: i32,
}

/// What the autoscaler decided, and the state it needs across reconciles (kept in
/// status so that an operator restart does not make the count jump).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The mode that decided.
    pub mode: AutoscalingMode,
    /// Serving pods wanted across all revisions (a rollout splits them by weight).
    pub desired_replicas: i32,
    /// The signal that decided `desiredReplicas`.
    pub signal: Signal,
    /// How it was decided, with the figures used.
    pub reason: String,
    /// When `desiredReplicas` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// When `desiredReplicas` last went up outside burst mode (for the rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up_time: Option<Time>,
    /// Recommendations within the scale-down stabilization window (plus the one in
    /// force when it began), oldest first; a new entry only when the value changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommendations: Vec<Recommendation>,
}
