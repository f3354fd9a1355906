//! The autoscaling decision, a pure function of the settings, the observed signals,
//! the current replica count, the previous decision and the time.
//!
//! 1. Each signal recommends a count: the request-rate rule
//!    `ceil(peak RPS x headroom / throughput per replica)`, burst mode (the same
//!    formula on the latest rate, when it asks for `burst.threshold` x the current
//!    count), and the CPU, GPU and queue-depth triggers, `ceil(current x value /
//!    target)` as an HPA computes it. A value within 10% above the current count
//!    keeps it ([`TOLERANCE`]), so noise at an integer boundary does not scale.
//!    With `spec.streaming` the request rate is the records consumed per second,
//!    and the consumer-lag trigger asks for `ceil(total lag / target)` workers.
//! 2. The highest recommendation wins (so triggers only raise), clamped to
//!    `minReplicas`..`maxReplicas`; a stream's workers also never outnumber its
//!    input topic's partitions (a worker more would read nothing).
//! 3. Scale-up goes one step per `scaleUp.periodSeconds`, each step adding at most
//!    `max(scaleUp.maxReplicas, scaleUp.maxPercent % of current)`; burst mode skips
//!    the limit. Scale-down goes only to the highest recommendation made within
//!    `scaleDownStabilizationSeconds` (recommendations are kept in status).
//!
//! Missing data: when the request rate is missing while the rule needs it (or a
//! stream's consumer lag while its trigger is on), or every
//! enabled signal is missing, the count is held where it is (signal `MissingData`):
//! missing data never scales down, and it never scales up either. A missing trigger
//! alone just does not raise. Values that are negative, NaN or infinite count as
//! missing.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::autoscaling::{
    AutoscalingMode, AutoscalingSpec, AutoscalingStatus, Recommendation, Signal,
};

/// A recommendation within this fraction above the current count keeps the count.
pub const TOLERANCE: f64 = 0.1;
/// The most replicas any decision returns when `maxReplicas` is absent (the
/// schema's bound for `maxReplicas`).
pub const REPLICA_CEILING: i32 = 1000;
/// The most recommendations kept in status.
pub const MAX_HISTORY: usize = 64;

/// What Prometheus said; `None` where it had no data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    /// Highest request rate (all revisions, requests/s) over the peak window.
    pub peak_rps: Option<f64>,
    /// The latest request rate (requests/s), for burst mode.
    pub latest_rps: Option<f64>,
    /// CPU cores used per pod, the lowest over the CPU trigger's window.
    pub cpu_cores_per_pod: Option<f64>,
    /// GPU utilization per pod, 0 to 1.
    pub gpu_utilization: Option<f64>,
    /// Requests waiting per pod.
    pub queue_depth_per_pod: Option<f64>,
    /// Records of the input topic not yet committed by the stream's workers
    /// (`spec.streaming` only).
    pub consumer_lag: Option<f64>,
    /// Partitions of the input topic, as the workers see them (`spec.streaming`
    /// only).
    pub partitions: Option<f64>,
}

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// `spec.autoscaling`.
    pub spec: &'a AutoscalingSpec,
    /// `spec.minReplicas`.
    pub min_replicas: i32,
    /// `spec.maxReplicas`.
    pub max_replicas: Option<i32>,
    /// The server container's CPU request (else limit) in cores, for the CPU trigger.
    pub cpu_request_cores: Option<f64>,
    /// Whether the pods run on a GPU (`device: cuda`), for the GPU trigger.
    pub gpu: bool,
    /// Whether the pods are stream workers (`spec.streaming`), for the lag
    /// trigger and the partition ceiling.
    pub streaming: bool,
    /// Replicas wanted now (the previous decision).
    pub current: i32,
    /// The previous decision, with its recommendation history.
    pub previous: Option<&'a AutoscalingStatus>,
    /// What Prometheus said.
    pub signals: &'a Signals,
    /// The time of the decision.
    pub now: Timestamp,
}

/// One signal's recommendation.
struct Candidate {
    replicas: i32,
    signal: Signal,
    reason: String,
}

/// Decides the replica count in mode `Sluice`; the result is the new
/// `status.autoscaling`.
pub fn decide(input: &Input) -> AutoscalingStatus {
    let spec = input.spec;
    let current = input.current.max(0);
    let (ceiling, ceiling_signal, ceiling_reason) = ceiling(input);
    let floor = input.min_replicas.min(ceiling);
    // A floor lowered by the ceiling (a stream with fewer partitions than
    // minReplicas) is the ceiling's doing.
    let (floor_signal, floor_reason) = if floor < input.min_replicas {
        (ceiling_signal, ceiling_reason.clone())
    } else {
        (Signal::MinReplicas, format!("floor minReplicas {floor}"))
    };
    let (candidates, burst, missing) = recommendations(input, current);

    // The highest recommendation wins; missing data holds the count.
    // The request rate, and a stream's lag, are primary: without them the
    // count is held rather than left to the triggers.
    let needs_rate = spec.throughput_per_replica.is_some();
    let needs_lag = input.streaming && spec.triggers.consumer_lag_records > 0;
    let rate_missing = (needs_rate && missing.contains(&"request rate"))
        || (needs_lag && missing.contains(&"consumer lag"));
    let mut best = candidates
        .into_iter()
        .fold(None::<Candidate>, |best, c| match best {
            Some(b) if b.replicas >= c.replicas => Some(b),
            _ => Some(c),
        });
    if rate_missing || (best.is_none() && !missing.is_empty()) {
        let hold = Candidate {
            replicas: current,
            signal: Signal::MissingData,
            reason: format!("no data for {}: holding {current}", missing.join(", ")),
        };
        best = match best {
            Some(b) if b.replicas > current => Some(b),
            _ => Some(hold),
        };
    }
    let mut chosen = best.unwrap_or(Candidate {
        replicas: floor,
        signal: Signal::MinReplicas,
        reason: "no rule enabled".into(),
    });
    if !missing.is_empty() && chosen.signal != Signal::MissingData {
        chosen.reason = format!("{} (no data for {})", chosen.reason, missing.join(", "));
    }
    if chosen.replicas < floor {
        chosen = Candidate {
            replicas: floor,
            signal: floor_signal,
            reason: format!("{floor_reason} (above {})", chosen.reason),
        };
    } else if chosen.replicas > ceiling {
        chosen = Candidate {
            replicas: ceiling,
            signal: ceiling_signal,
            reason: format!("{ceiling_reason} (below {})", chosen.reason),
        };
    }
    let recommended = chosen.replicas;

    let window = SignedDuration::from_secs(spec.scale_down_stabilization_seconds.into());
    let history = record(
        input.previous.map(|p| p.recommendations.as_slice()),
        recommended,
        input.now,
        window,
    );
    let previous_up = input.previous.and_then(|p| p.last_scale_up_time.clone());

    let (desired, signal, reason) = if recommended > current && !burst {
        let step = &spec.scale_up;
        let period = SignedDuration::from_secs(step.period_seconds.into());
        let limit = (current + step.max_replicas as i32)
            .max((current as f64 * (1.0 + step.max_percent as f64 / 100.0)).floor() as i32);
        match &previous_up {
            Some(Time(last)) if input.now.duration_since(*last) < period => (
                current,
                Signal::ScaleUpLimit,
                format!(
                    "{recommended} wanted ({}); the next scale-up step is allowed at {}",
                    chosen.reason,
                    *last + period
                ),
            ),
            _ if recommended > limit => (
                limit,
                Signal::ScaleUpLimit,
                format!(
                    "{recommended} wanted ({}); one step goes from {current} to at most {limit}",
                    chosen.reason
                ),
            ),
            _ => (recommended, chosen.signal, chosen.reason),
        }
    } else if recommended < current {
        let start = input.now - window;
        match stabilized(&history, start) {
            Some(held) if held.replicas > recommended => {
                let held_replicas = held.replicas.min(current);
                (
                    held_replicas,
                    Signal::Stabilization,
                    format!(
                        "{recommended} recommended ({}); holding {held_replicas}, recommended at {}, for the {}s scale-down window",
                        chosen.reason, held.time.0, spec.scale_down_stabilization_seconds
                    ),
                )
            }
            _ => (recommended, chosen.signal, chosen.reason),
        }
    } else {
        (recommended, chosen.signal, chosen.reason)
    };
    // The bounds hold whatever the history says (minReplicas raised, maxReplicas lowered).
    let (desired, signal, reason) = if desired < floor {
        (floor, floor_signal, floor_reason)
    } else if desired > ceiling {
        (ceiling, ceiling_signal, ceiling_reason)
    } else {
        (desired, signal, reason)
    };

    let now = Time(input.now);
    let changed = desired != current;
    AutoscalingStatus {
        mode: AutoscalingMode::Sluice,
        desired_replicas: desired,
        signal,
        reason,
        last_scale_time: if changed {
            Some(now.clone())
        } else {
            input.previous.and_then(|p| p.last_scale_time.clone())
        },
        last_scale_up_time: if desired > current {
            Some(now)
        } else {
            previous_up
        },
        recommendations: history,
    }
}

/// The most replicas wanted, what sets it and why: `maxReplicas` (else
/// [`REPLICA_CEILING`]), or a stream's partition count when that is lower. A
/// stream whose partitions are not known yet is bound by `maxReplicas` alone.
fn ceiling(input: &Input) -> (i32, Signal, String) {
    let max = input.max_replicas.unwrap_or(REPLICA_CEILING);
    let partitions = input
        .signals
        .partitions
        .filter(|p| input.streaming && usable(*p) && *p >= 1.0)
        .map(|p| p.min(f64::from(REPLICA_CEILING)) as i32);
    match partitions {
        Some(partitions) if partitions < max => (
            partitions,
            Signal::Partitions,
            format!("ceiling: the input topic's {partitions} partitions"),
        ),
        _ => (max, Signal::MaxReplicas, format!("ceiling {max}")),
    }
}

/// Each signal's recommendation, whether burst mode is on, and the enabled signals
/// that had no data.
fn recommendations(input: &Input, current: i32) -> (Vec<Candidate>, bool, Vec<&'static str>) {
    let spec = input.spec;
    let signals = input.signals;
    let mut candidates = Vec::new();
    let mut missing = Vec::new();
    let mut burst = false;

    if let Some(throughput) = spec
        .throughput_per_replica
        .filter(|t| usable(*t) && *t > 0.0)
    {
        match signals.peak_rps.filter(|v| usable(*v)) {
            Some(peak) => {
                let raw = peak * spec.headroom / throughput;
                candidates.push(Candidate {
                    replicas: tolerated(raw, current),
                    signal: Signal::RequestRate,
                    reason: format!(
                        "peak {peak:.1} req/s over {}s x headroom {} / {throughput} req/s per replica = {raw:.2}",
                        spec.peak_window_seconds, spec.headroom
                    ),
                });
            }
            None => missing.push("request rate"),
        }
        if spec.burst.threshold > 0.0
            && current > 0
            && let Some(latest) = signals.latest_rps.filter(|v| usable(*v))
        {
            let raw = latest * spec.headroom / throughput;
            if raw >= spec.burst.threshold * current as f64 {
                burst = true;
                candidates.push(Candidate {
                    replicas: ceil(raw),
                    signal: Signal::Burst,
                    reason: format!(
                        "burst: latest {latest:.1} req/s x headroom {} / {throughput} req/s per replica = {raw:.2}, at least {} x the {current} replicas",
                        spec.headroom, spec.burst.threshold
                    ),
                });
            }
        }
    }

    let triggers = &spec.triggers;
    let cpu_request = input.cpu_request_cores.filter(|c| usable(*c) && *c > 0.0);
    if let (true, Some(request)) = (triggers.cpu_utilization_percent > 0, cpu_request) {
        match signals.cpu_cores_per_pod.filter(|v| usable(*v)) {
            Some(cores) => {
                let utilization = cores / request;
                candidates.push(trigger(
                    Signal::Cpu,
                    current,
                    utilization * 100.0,
                    triggers.cpu_utilization_percent,
                    format!(
                        "CPU {:.0}% of {request} cores (lowest over {}s)",
                        utilization * 100.0,
                        triggers.cpu_window_seconds
                    ),
                ));
            }
            None => missing.push("CPU"),
        }
    }
    if input.gpu && triggers.gpu_utilization_percent > 0 {
        match signals.gpu_utilization.filter(|v| usable(*v)) {
            Some(gpu) => candidates.push(trigger(
                Signal::Gpu,
                current,
                gpu * 100.0,
                triggers.gpu_utilization_percent,
                format!("GPU {:.0}%", gpu * 100.0),
            )),
            None => missing.push("GPU"),
        }
    }
    if triggers.queue_depth > 0 {
        match signals.queue_depth_per_pod.filter(|v| usable(*v)) {
            Some(depth) => candidates.push(trigger(
                Signal::QueueDepth,
                current,
                depth,
                triggers.queue_depth,
                format!("queue depth {depth:.1} per pod"),
            )),
            None => missing.push("queue depth"),
        }
    }
    if input.streaming && triggers.consumer_lag_records > 0 {
        match signals.consumer_lag.filter(|v| usable(*v)) {
            Some(lag) => {
                let target = triggers.consumer_lag_records;
                let raw = lag / f64::from(target);
                candidates.push(Candidate {
                    replicas: tolerated(raw, current),
                    signal: Signal::ConsumerLag,
                    reason: format!(
                        "consumer lag {lag:.0} records / target {target} per worker = {raw:.2}"
                    ),
                });
            }
            None => missing.push("consumer lag"),
        }
    }
    (candidates, burst, missing)
}

/// An HPA-style trigger: `ceil(current x value / target)`.
fn trigger(signal: Signal, current: i32, value: f64, target: u32, what: String) -> Candidate {
    let raw = current as f64 * value / target as f64;
    Candidate {
        replicas: tolerated(raw, current),
        signal,
        reason: format!("{what} vs target {target} on {current} pods = {raw:.2}"),
    }
}

fn usable(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

/// `ceil`, forgiving floating-point noise just above an integer.
fn ceil(raw: f64) -> i32 {
    (raw - 1e-9).ceil().max(0.0) as i32
}

/// `ceil(raw)`, except that a value at most [`TOLERANCE`] above `current` keeps it.
fn tolerated(raw: f64, current: i32) -> i32 {
    let c = current as f64;
    if raw > c && raw <= c * (1.0 + TOLERANCE) {
        current
    } else {
        ceil(raw)
    }
}

/// The history with `recommended` appended when it differs from the last entry,
/// pruned to what the window starting at `now - window` still needs.
fn record(
    previous: Option<&[Recommendation]>,
    recommended: i32,
    now: Timestamp,
    window: SignedDuration,
) -> Vec<Recommendation> {
    let mut history: Vec<Recommendation> = previous.unwrap_or_default().to_vec();
    if history.last().map(|r| r.replicas) != Some(recommended) {
        history.push(Recommendation {
            time: Time(now),
            replicas: recommended,
        });
    }
    let start = now - window;
    // Keep the entries inside the window and the last one before it (it was in force
    // when the window began).
    let first_needed = history.iter().rposition(|r| r.time.0 <= start).unwrap_or(0);
    history.drain(..first_needed);
    let excess = history.len().saturating_sub(MAX_HISTORY);
    history.drain(..excess);
    history
}

/// The highest recommendation in force at some time since `start`.
fn stabilized(history: &[Recommendation], start: Timestamp) -> Option<&Recommendation> {
    let first = history.iter().rposition(|r| r.time.0 <= start).unwrap_or(0);
    history[first..]
        .iter()
        .fold(None, |best: Option<&Recommendation>, r| match best {
            Some(b) if b.replicas >= r.replicas => Some(b),
            _ => Some(r),
        })
}

/// The replica count in mode `Sluice` when the operator has no Prometheus to read
/// (no `--prometheus-url`): `minReplicas`, within `maxReplicas`.
pub fn unmeasured(
    min_replicas: i32,
    max_replicas: Option<i32>,
    previous: Option<&AutoscalingStatus>,
    now: Timestamp,
) -> AutoscalingStatus {
    let desired = min_replicas.min(max_replicas.unwrap_or(REPLICA_CEILING));
    AutoscalingStatus {
        mode: AutoscalingMode::Sluice,
        desired_replicas: desired,
        signal: Signal::MinReplicas,
        reason: "the operator has no Prometheus (--prometheus-url): minReplicas".into(),
        last_scale_time: last_scale_time(previous, desired, now),
        last_scale_up_time: previous.and_then(|p| p.last_scale_up_time.clone()),
        recommendations: Vec::new(),
    }
}

fn last_scale_time(
    previous: Option<&AutoscalingStatus>,
    desired: i32,
    now: Timestamp,
) -> Option<Time> {
    match previous {
        Some(p) if p.desired_replicas == desired => p.last_scale_time.clone(),
        _ => Some(Time(now)),
    }
}

/// The replica count in mode `External`: `spec.replicas` (written through the scale
/// subresource) within `minReplicas`..`maxReplicas`, `minReplicas` when unset.
pub fn external(
    replicas: Option<i32>,
    min_replicas: i32,
    max_replicas: Option<i32>,
    previous: Option<&AutoscalingStatus>,
    now: Timestamp,
) -> AutoscalingStatus {
    let ceiling = max_replicas.unwrap_or(REPLICA_CEILING);
    let floor = min_replicas.min(ceiling);
    let (desired, signal, reason) = match replicas {
        None => (
            floor,
            Signal::MinReplicas,
            "spec.replicas is unset: minReplicas".to_string(),
        ),
        Some(r) if r < floor => (
            floor,
            Signal::MinReplicas,
            format!("spec.replicas {r} raised to minReplicas {floor}"),
        ),
        Some(r) if r > ceiling => (
            ceiling,
            Signal::MaxReplicas,
            format!("spec.replicas {r} lowered to maxReplicas {ceiling}"),
        ),
        Some(r) => (r, Signal::External, format!("spec.replicas {r}")),
    };
    AutoscalingStatus {
        mode: AutoscalingMode::External,
        desired_replicas: desired,
        signal,
        reason,
        last_scale_time: last_scale_time(previous, desired, now),
        last_scale_up_time: previous.and_then(|p| p.last_scale_up_time.clone()),
        recommendations: Vec::new(),
    }
}

/// The count with `spec.placement.mode: PerNode`: one pod on each of the
/// `nodes` matching nodes, as the DaemonSet counted them (`None` before it
/// did). The autoscaler does not scale: the nodes decide. At least 1 is
/// wanted, so that the revision's DaemonSet is kept while no node matches.
pub fn per_node(
    mode: AutoscalingMode,
    nodes: Option<i32>,
    previous: Option<&AutoscalingStatus>,
    now: Timestamp,
) -> AutoscalingStatus {
    let reason = match nodes {
        None => "one pod per matching node (spec.placement.mode PerNode), once the DaemonSet has counted them; the autoscaler does not scale".to_string(),
        Some(0) => "no node matches spec.placement yet (spec.placement.mode PerNode): one pod per matching node once one does; the autoscaler does not scale".to_string(),
        Some(n) => format!("one pod on each of the {n} matching nodes (spec.placement.mode PerNode); the autoscaler does not scale"),
    };
    let desired = nodes.unwrap_or(0).max(1);
    AutoscalingStatus {
        mode,
        desired_replicas: desired,
        signal: Signal::PerNode,
        reason,
        last_scale_time: last_scale_time(previous, desired, now),
        last_scale_up_time: None,
        recommendations: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::autoscaling::{AutoscalingSpec, Signal::*};

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    /// 100 req/s per replica, headroom 1.5, default windows, no burst, no step
    /// limit; `extra` (", key: value, ...") overrides.
    fn spec(extra: &str) -> AutoscalingSpec {
        let base = [
            ("throughputPerReplica", "100"),
            ("burst", "{threshold: 0}"),
            ("scaleUp", "{maxReplicas: 100}"),
        ];
        let mut fields: Vec<String> = base
            .iter()
            .filter(|(key, _)| !extra.contains(key))
            .map(|(key, value)| format!("{key}: {value}"))
            .collect();
        fields.extend(extra.strip_prefix(", ").map(String::from));
        serde_saphyr::from_str(&format!("{{{}}}", fields.join(", "))).unwrap()
    }

    fn rps(peak: f64) -> Signals {
        Signals {
            peak_rps: Some(peak),
            latest_rps: Some(peak),
            ..Signals::default()
        }
    }

    fn history(entries: &[(i64, i32)]) -> AutoscalingStatus {
        AutoscalingStatus {
            mode: AutoscalingMode::Sluice,
            desired_replicas: 0,
            signal: RequestRate,
            reason: String::new(),
            last_scale_time: None,
            last_scale_up_time: None,
            recommendations: entries
                .iter()
                .map(|&(at, replicas)| Recommendation {
                    time: Time(t(at)),
                    replicas,
                })
                .collect(),
        }
    }

    struct Case<'a> {
        name: &'a str,
        spec: AutoscalingSpec,
        min: i32,
        max: Option<i32>,
        gpu: bool,
        streaming: bool,
        current: i32,
        previous: Option<AutoscalingStatus>,
        signals: Signals,
        want: (i32, Signal),
    }

    fn case<'a>(name: &'a str, current: i32, signals: Signals, want: (i32, Signal)) -> Case<'a> {
        Case {
            name,
            spec: spec(""),
            min: 2,
            max: Some(20),
            gpu: false,
            streaming: false,
            current,
            previous: None,
            signals,
            want,
        }
    }

    /// Runs every case; fails naming each one whose count or signal differs.
    fn assert_cases(cases: &[Case]) {
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|c| {
                let got = run(c);
                ((got.desired_replicas, got.signal) != c.want).then(|| {
                    format!(
                        "{}: want {:?}, got ({}, {:?}): {}",
                        c.name, c.want, got.desired_replicas, got.signal, got.reason
                    )
                })
            })
            .collect();
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    fn run(c: &Case) -> AutoscalingStatus {
        decide(&Input {
            spec: &c.spec,
            min_replicas: c.min,
            max_replicas: c.max,
            cpu_request_cores: Some(0.5),
            gpu: c.gpu,
            streaming: c.streaming,
            current: c.current,
            previous: c.previous.as_ref(),
            signals: &c.signals,
            now: t(0),
        })
    }

    #[test]
    fn decision_table() {
        let cpu = |cores| Signals {
            cpu_cores_per_pod: Some(cores),
            ..rps(200.0)
        };
        let cases = [
            // The formula: ceil(peak x headroom / throughput).
            case("formula", 2, rps(400.0), (6, RequestRate)),
            case("formula rounds up", 2, rps(410.0), (7, RequestRate)),
            case("steady at the formula", 6, rps(400.0), (6, RequestRate)),
            case(
                "10% tolerance above the current count keeps it",
                6,
                rps(430.0),
                (6, RequestRate),
            ),
            case(
                "beyond the tolerance scales",
                6,
                rps(450.0),
                (7, RequestRate),
            ),
            // Clamps.
            case("floor", 2, rps(10.0), (2, MinReplicas)),
            case("zero traffic is the floor", 2, rps(0.0), (2, MinReplicas)),
            case("ceiling", 20, rps(10_000.0), (20, MaxReplicas)),
            Case {
                max: None,
                ..case(
                    "no maxReplicas: the absolute ceiling",
                    1000,
                    rps(1e9),
                    (1000, MaxReplicas),
                )
            },
            Case {
                min: 5,
                previous: Some(AutoscalingStatus {
                    last_scale_up_time: Some(Time(t(-1))),
                    ..history(&[])
                }),
                ..case(
                    "a raised floor applies at once, past the rate limit",
                    2,
                    rps(10.0),
                    (5, MinReplicas),
                )
            },
            Case {
                max: Some(4),
                previous: Some(history(&[(-10, 10)])),
                ..case(
                    "a lowered ceiling applies at once, past stabilization",
                    10,
                    rps(1000.0),
                    (4, MaxReplicas),
                )
            },
            // Triggers raise the request-rate count (which says 3 here).
            case("CPU 90% of request on 4 pods", 4, cpu(0.45), (5, Cpu)),
            case("CPU within tolerance", 4, cpu(0.42), (4, Cpu)),
            case(
                "CPU below target does not lower the rate rule",
                4,
                cpu(0.1),
                (3, RequestRate),
            ),
            Case {
                gpu: true,
                ..case(
                    "GPU 100% on 4 pods",
                    4,
                    Signals {
                        gpu_utilization: Some(1.0),
                        ..rps(200.0)
                    },
                    (5, Gpu),
                )
            },
            case(
                "GPU ignored on CPU pods",
                3,
                Signals {
                    gpu_utilization: Some(0.99),
                    ..rps(200.0)
                },
                (3, RequestRate),
            ),
            case(
                "queue depth 500 per pod on 4",
                4,
                Signals {
                    queue_depth_per_pod: Some(500.0),
                    ..rps(200.0)
                },
                (10, QueueDepth),
            ),
            Case {
                spec: spec(", triggers: {queueDepth: 0}"),
                ..case(
                    "a trigger at 0 is off",
                    3,
                    Signals {
                        queue_depth_per_pod: Some(500.0),
                        ..rps(200.0)
                    },
                    (3, RequestRate),
                )
            },
            Case {
                spec: spec(", throughputPerReplica: null"),
                ..case(
                    "no throughput declared: triggers alone (HPA-like)",
                    4,
                    cpu(0.2),
                    (2, Cpu),
                )
            },
            // Scale-up rate limit.
            Case {
                spec: spec(", scaleUp: {maxReplicas: 4, maxPercent: 100}"),
                ..case(
                    "one step adds max(4, 100%)",
                    2,
                    rps(2000.0),
                    (6, ScaleUpLimit),
                )
            },
            Case {
                spec: spec(", scaleUp: {maxReplicas: 1, maxPercent: 100}"),
                ..case(
                    "percent step on a large count",
                    8,
                    rps(2000.0),
                    (16, ScaleUpLimit),
                )
            },
            Case {
                previous: Some(AutoscalingStatus {
                    last_scale_up_time: Some(Time(t(-5))),
                    ..history(&[])
                }),
                ..case(
                    "the next step waits for the period",
                    4,
                    rps(1000.0),
                    (4, ScaleUpLimit),
                )
            },
            Case {
                previous: Some(AutoscalingStatus {
                    last_scale_up_time: Some(Time(t(-15))),
                    ..history(&[])
                }),
                ..case(
                    "after the period the step goes",
                    4,
                    rps(1000.0),
                    (15, RequestRate),
                )
            },
            // Burst mode: the latest rate asks for at least 2 x the current count.
            Case {
                spec: spec(
                    ", burst: {threshold: 2}, scaleUp: {maxReplicas: 1, maxPercent: 10, periodSeconds: 600}",
                ),
                previous: Some(AutoscalingStatus {
                    last_scale_up_time: Some(Time(t(-1))),
                    ..history(&[])
                }),
                ..case(
                    "burst skips the rate limit",
                    3,
                    Signals {
                        peak_rps: Some(200.0),
                        latest_rps: Some(600.0),
                        ..Signals::default()
                    },
                    (9, Burst),
                )
            },
            Case {
                spec: spec(", burst: {threshold: 2}, scaleUp: {maxReplicas: 1, maxPercent: 10}"),
                ..case(
                    "below the burst threshold the limit applies",
                    4,
                    Signals {
                        peak_rps: Some(500.0),
                        latest_rps: Some(500.0),
                        ..Signals::default()
                    },
                    (5, ScaleUpLimit),
                )
            },
            // Scale-down stabilization (window 300 s).
            Case {
                previous: Some(history(&[(-100, 8)])),
                ..case(
                    "a recommendation inside the window holds",
                    8,
                    rps(200.0),
                    (8, Stabilization),
                )
            },
            Case {
                previous: Some(history(&[(-400, 8)])),
                ..case(
                    "one in force when the window began holds too",
                    8,
                    rps(200.0),
                    (8, Stabilization),
                )
            },
            Case {
                previous: Some(history(&[(-400, 8), (-301, 3)])),
                ..case(
                    "after the window the count falls",
                    8,
                    rps(200.0),
                    (3, RequestRate),
                )
            },
            Case {
                previous: Some(history(&[(-400, 8), (-310, 6), (-100, 3)])),
                ..case(
                    "falls to the highest within the window",
                    8,
                    rps(200.0),
                    (6, Stabilization),
                )
            },
            Case {
                spec: spec(", scaleDownStabilizationSeconds: 0"),
                previous: Some(history(&[(-1, 8)])),
                ..case("no window: at once", 8, rps(200.0), (3, RequestRate))
            },
            // Missing data holds: never down, never up.
            case(
                "no request rate holds",
                6,
                Signals::default(),
                (6, MissingData),
            ),
            case(
                "no request rate holds at the floor too",
                2,
                Signals::default(),
                (2, MissingData),
            ),
            case(
                "NaN is missing",
                6,
                Signals {
                    peak_rps: Some(f64::NAN),
                    ..Signals::default()
                },
                (6, MissingData),
            ),
            case(
                "negative is missing",
                6,
                Signals {
                    peak_rps: Some(-5.0),
                    ..Signals::default()
                },
                (6, MissingData),
            ),
            case(
                "infinite is missing, not a wild scale-up",
                6,
                Signals {
                    peak_rps: Some(f64::INFINITY),
                    ..Signals::default()
                },
                (6, MissingData),
            ),
            case(
                "a present trigger may still raise",
                4,
                Signals {
                    queue_depth_per_pod: Some(500.0),
                    ..Signals::default()
                },
                (10, QueueDepth),
            ),
            Case {
                spec: spec(", throughputPerReplica: null"),
                ..case(
                    "every signal missing holds",
                    7,
                    Signals::default(),
                    (7, MissingData),
                )
            },
            Case {
                spec: spec(
                    ", throughputPerReplica: null, triggers: {cpuUtilizationPercent: 0, queueDepth: 0}",
                ),
                ..case(
                    "nothing enabled: the floor",
                    7,
                    Signals::default(),
                    (2, MinReplicas),
                )
            },
            case(
                "a missing trigger alone does not hold",
                6,
                Signals {
                    cpu_cores_per_pod: None,
                    ..rps(200.0)
                },
                (3, RequestRate),
            ),
        ];
        assert_cases(&cases);
    }

    #[test]
    fn reasons_carry_the_figures() {
        let got = run(&case("formula", 2, rps(400.0), (6, RequestRate)));
        assert_eq!(
            got.reason,
            "peak 400.0 req/s over 300s x headroom 1.5 / 100 req/s per replica = 6.00 (no data for CPU, queue depth)"
        );
        let missing = run(&case("missing", 6, Signals::default(), (6, MissingData)));
        assert_eq!(
            missing.reason,
            "no data for request rate, CPU, queue depth: holding 6"
        );
    }

    #[test]
    fn history_records_changes_only_and_forgets_what_the_window_no_longer_needs() {
        let window = SignedDuration::from_secs(300);
        let old = history(&[(-900, 9), (-500, 7), (-200, 5)]).recommendations;
        let same = record(Some(&old), 5, t(0), window);
        assert_eq!(
            same.iter().map(|r| r.replicas).collect::<Vec<_>>(),
            [7, 5],
            "9 ended before the window; 7 was in force when it began"
        );
        let changed = record(Some(&old), 4, t(0), window);
        assert_eq!(changed.last().unwrap().replicas, 4);
        assert_eq!(changed.last().unwrap().time, Time(t(0)));
        let many: Vec<_> = (0..200)
            .map(|i| history(&[(i - 200, i as i32)]).recommendations[0].clone())
            .collect();
        assert_eq!(record(Some(&many), 1, t(0), window).len(), MAX_HISTORY);
    }

    /// Runs the decision every 15 s over `load` (requests/s per tick, peak over the
    /// last 20 ticks = 300 s), feeding each decision back as the operator does.
    fn simulate(spec: &AutoscalingSpec, load: &[f64]) -> Vec<i32> {
        let mut previous: Option<AutoscalingStatus> = None;
        let mut replicas = Vec::new();
        for (i, &latest) in load.iter().enumerate() {
            let peak = load[i.saturating_sub(19)..=i]
                .iter()
                .copied()
                .fold(0.0, f64::max);
            let signals = Signals {
                peak_rps: Some(peak),
                latest_rps: Some(latest),
                ..Signals::default()
            };
            let status = decide(&Input {
                spec,
                min_replicas: 2,
                max_replicas: Some(20),
                cpu_request_cores: Some(0.5),
                gpu: false,
                streaming: false,
                current: previous.as_ref().map_or(2, |p| p.desired_replicas),
                previous: previous.as_ref(),
                signals: &signals,
                now: t(15 * i as i64),
            });
            replicas.push(status.desired_replicas);
            previous = Some(status);
        }
        replicas
    }

    fn changes(replicas: &[i32]) -> usize {
        replicas.windows(2).filter(|w| w[0] != w[1]).count()
    }

    #[test]
    fn steady_noisy_load_at_an_integer_boundary_does_not_flap() {
        let spec: AutoscalingSpec = serde_saphyr::from_str("{throughputPerReplica: 100}").unwrap();
        // 200 req/s +-3%: the formula's raw value wanders around 3.0.
        let load: Vec<f64> = (0..40)
            .map(|i| 200.0 * (1.0 + 0.03 * ((i * 7 % 11) as f64 / 5.0 - 1.0)))
            .collect();
        let replicas = simulate(&spec, &load);
        assert_eq!(replicas[0], 3);
        assert_eq!(changes(&replicas), 0, "{replicas:?}");
    }

    #[test]
    fn a_burst_is_followed_at_once_and_left_after_the_window_never_below_the_floor() {
        let spec: AutoscalingSpec = serde_saphyr::from_str("{throughputPerReplica: 100}").unwrap();
        // 2 min at 200 req/s, 2 min at 600 (3x), then nothing for 10 min.
        let load: Vec<f64> = [vec![200.0; 8], vec![600.0; 8], vec![0.0; 40]].concat();
        let replicas = simulate(&spec, &load);
        assert_eq!(replicas[7], 3, "{replicas:?}");
        assert_eq!(
            replicas[8], 9,
            "burst mode reaches 600 x 1.5 / 100 in one step: {replicas:?}"
        );
        // The load stops at tick 16: the 300 s peak window still sees the burst
        // until tick 34, then the 300 s stabilization window holds its
        // recommendation until tick 55, when the count drops to the floor.
        assert!(replicas[8..=54].iter().all(|&r| r == 9), "{replicas:?}");
        assert_eq!(replicas[55], 2, "{replicas:?}");
        assert!(replicas.iter().all(|&r| r >= 2));
        assert_eq!(changes(&replicas), 2, "{replicas:?}");
    }

    #[test]
    fn external_mode_honours_spec_replicas_within_the_bounds() {
        let cases = [
            (None, (2, MinReplicas)),
            (Some(5), (5, External)),
            (Some(1), (2, MinReplicas)),
            (Some(0), (2, MinReplicas)),
            (Some(50), (10, MaxReplicas)),
        ];
        for (replicas, want) in cases {
            let got = external(replicas, 2, Some(10), None, t(0));
            assert_eq!((got.desired_replicas, got.signal), want, "{replicas:?}");
            assert_eq!(got.mode, AutoscalingMode::External);
        }
        let unmeasured = unmeasured(3, Some(10), None, t(0));
        assert_eq!(
            (unmeasured.desired_replicas, unmeasured.signal),
            (3, MinReplicas)
        );
        let first = external(Some(5), 2, None, None, t(0));
        let again = external(Some(5), 2, None, Some(&first), t(60));
        assert_eq!(
            again.last_scale_time,
            Some(Time(t(0))),
            "unchanged count, unchanged time"
        );
    }
    /// A stream: lag / target per worker, at most the partitions, the
    /// records-consumed rate as the request rate.
    #[test]
    fn stream_workers_follow_the_lag_up_to_the_partitions() {
        let stream = |name, current, lag: Option<f64>, partitions: Option<f64>, want| Case {
            streaming: true,
            spec: spec(", throughputPerReplica: null"),
            ..case(
                name,
                current,
                Signals {
                    consumer_lag: lag,
                    partitions,
                    queue_depth_per_pod: Some(0.0),
                    ..Signals::default()
                },
                want,
            )
        };
        let cases = [
            stream(
                "no lag: the floor",
                3,
                Some(0.0),
                Some(8.0),
                (2, MinReplicas),
            ),
            stream(
                "5,500 records behind",
                2,
                Some(5500.0),
                Some(8.0),
                (6, ConsumerLag),
            ),
            stream(
                "within 10% holds",
                5,
                Some(5400.0),
                Some(8.0),
                (5, ConsumerLag),
            ),
            stream(
                "never above the partitions",
                2,
                Some(50_000.0),
                Some(4.0),
                (4, Partitions),
            ),
            stream(
                "maxReplicas below the partitions",
                2,
                Some(50_000.0),
                Some(64.0),
                (20, MaxReplicas),
            ),
            stream(
                "partitions not known yet: maxReplicas",
                2,
                Some(50_000.0),
                None,
                (20, MaxReplicas),
            ),
            stream(
                "one partition caps the floor too",
                2,
                Some(0.0),
                Some(1.0),
                (1, Partitions),
            ),
            stream("no lag data holds", 5, None, Some(8.0), (5, MissingData)),
            Case {
                streaming: false,
                ..stream(
                    "lag and partitions mean nothing without spec.streaming",
                    2,
                    Some(50_000.0),
                    Some(1.0),
                    (2, MinReplicas),
                )
            },
            Case {
                spec: spec(""),
                signals: Signals {
                    peak_rps: Some(200.0),
                    consumer_lag: Some(0.0),
                    partitions: Some(8.0),
                    ..Signals::default()
                },
                ..stream(
                    "the consumed rate scales a stream too",
                    2,
                    Some(0.0),
                    Some(8.0),
                    (3, RequestRate),
                )
            },
        ];
        assert_cases(&cases);
    }
}
