//! Pure status computation: from the spec, what `apply` did and what the cluster
//! shows (the Deployments or DaemonSets and the serving pods) to `status` and to
//! the condition transitions that become Events.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::crd::rollout::{HistoryEntry, RolloutPhase, RolloutStatus};
use crate::crd::{
    AutoscalingStatus, DriftStatus, InferenceService, InferenceServiceStatus, OptimizationStatus,
    Phase, PlacementSpec,
};
use crate::names::{REVISION_LABEL, selector_string};
use crate::optimization::{self, Optimized};
use crate::workload::Workload;

/// Condition: everything below holds and the current revision is fully rolled out.
pub const READY: &str = "Ready";
/// Condition: the spec was valid and every object was applied.
pub const RECONCILED: &str = "Reconciled";
/// Condition: the current revision's init container fetched and verified the model.
pub const MODEL_FETCHED: &str = "ModelFetched";
/// Condition: at least `minReplicas` serving pods are ready (per node: a ready
/// pod on every matching node).
pub const AVAILABLE: &str = "Available";
/// Condition: the operator reads Prometheus, so rollouts are analysed and the
/// autoscaler measures. `False` says loudly that rollouts hold at their first
/// analysis and the replica count stays at `minReplicas`.
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
/// Condition, present only when `spec.monitoring` is set: the current
/// revision's init container fetched and verified the reference profile.
pub const PROFILE_FETCHED: &str = "ProfileFetched";
/// Condition, present only when `spec.monitoring` is set: the stable revision's
/// inputs drift from the profile. Its `True` is the bad news.
pub const INPUT_DRIFT: &str = "InputDrift";
/// Condition, present only when `spec.model.optimize` is set: the current
/// revision's init container optimized the model and its agreement with the
/// original passed `minAgreement`.
pub const MODEL_OPTIMIZED: &str = "ModelOptimized";
/// Condition, present only with `spec.placement.mode: PerNode`: the current
/// revision's DaemonSet matches at least one node. `False` says that no node
/// does, so nothing serves, instead of waiting silently.
pub const NODES_MATCHED: &str = "NodesMatched";
/// Name of the init container that fetches the model.
pub const FETCH_CONTAINER: &str = "fetch-model";
/// Name of the init container that fetches the reference profile.
pub const PROFILE_FETCH_CONTAINER: &str = "fetch-profile";

/// One fetched file as its condition reports it: which init container, what
/// it fetches, and the reasons of its failures.
struct Fetched {
    container: &'static str,
    what: &'static str,
    failed: &'static str,
    mismatch: &'static str,
}

/// The model's fetch (`ModelFetched`).
const MODEL: Fetched = Fetched {
    container: FETCH_CONTAINER,
    what: "model",
    failed: "FetchFailed",
    mismatch: "DigestMismatch",
};

/// The reference profile's fetch (`ProfileFetched`).
const PROFILE: Fetched = Fetched {
    container: PROFILE_FETCH_CONTAINER,
    what: "reference profile",
    failed: "ProfileFetchFailed",
    mismatch: "ProfileDigestMismatch",
};

/// What the reconcile did before computing status.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The objects could not be applied: `reason` is `InvalidSpec` (from `validate`,
    /// the message names the field) or `ApplyFailed`.
    Refused {
        /// CamelCase reason.
        reason: &'static str,
        /// Human message.
        message: String,
    },
    /// The objects of `revision` are applied.
    Applied {
        /// The revision now desired.
        revision: String,
        /// The in-cluster URL.
        url: String,
        /// Where the rollout stands after this reconcile.
        rollout: Box<RolloutView>,
        /// The autoscaler's decision the objects were built with.
        autoscaling: AutoscalingStatus,
        /// Whether the operator has a Prometheus to read.
        measured: bool,
        /// With `spec.monitoring`: `status.drift` and the `InputDrift` condition,
        /// as drift monitoring decided them.
        drift: Option<Box<(DriftStatus, Verdict)>>,
    },
}

/// The rollout's part of the status, as the state machine decided it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutView {
    /// The revision serving production traffic.
    pub stable: Option<String>,
    /// The rollout in progress or the last one.
    pub rollout: Option<RolloutStatus>,
    /// Percent of traffic on the new revision while a rollout runs.
    pub canary_weight: Option<i32>,
    /// Finished rollouts.
    pub history: Vec<HistoryEntry>,
}

impl RolloutView {
    fn running(&self) -> Option<&RolloutStatus> {
        self.rollout
            .as_ref()
            .filter(|r| !r.phase.finished() && r.stable.is_some())
    }
}

/// One condition as computed, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}

impl Verdict {
    /// A verdict of `status`, `reason` and `message`.
    pub fn new(status: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
    fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// When the operator cannot tell whether kube-proxy routes the Service yet (its
/// probe of the ClusterIP neither connects nor is refused, e.g. it runs outside
/// the cluster), how long after its EndpointSlice lists an endpoint Ready waits
/// instead: kube-proxy's default `--iptables-min-sync-period` (1 s) and the time
/// to write the rules.
pub const ENDPOINTS_SETTLE: SignedDuration = SignedDuration::from_millis(2_000);

/// How soon to look again while kube-proxy still refuses the ClusterIP.
pub const ROUTE_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// The main Service's endpoints, as its EndpointSlices list them, and whether
/// its ClusterIP is routed to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Ready endpoints that are pods of this InferenceService.
    pub ready: usize,
    /// When a slice was last written (kube-proxy learns of a change from then).
    pub changed: Option<Timestamp>,
    /// The operator's TCP probe of the ClusterIP's HTTP port: `Some(true)` it
    /// connected, `Some(false)` it was refused (kube-proxy has no rule for the
    /// endpoints yet), `None` not probed or no answer either way.
    pub routed: Option<bool>,
}

impl Endpoints {
    /// Why requests to the Service `name` may not be routed yet, or `None` when
    /// they are. No ready endpoint; or, unless the service `was_ready` (so that a
    /// scale-up does not flip Ready): a refused probe, or with no probe answer a
    /// slice written less than [`ENDPOINTS_SETTLE`] before `now`.
    pub fn not_routed(&self, name: &str, was_ready: bool, now: Timestamp) -> Option<String> {
        if self.ready == 0 {
            return Some(format!(
                "the Service {name} lists no ready endpoint yet, so requests to it would be refused"
            ));
        }
        if was_ready {
            return None;
        }
        match self.routed {
            Some(true) => None,
            Some(false) => Some(format!(
                "the Service {name} lists {} ready endpoints, but its ClusterIP still refuses connections: kube-proxy has not routed them yet",
                self.ready
            )),
            None => {
                let since = now.duration_since(self.changed?);
                (since < ENDPOINTS_SETTLE).then(|| {
                    format!(
                        "the Service {name} listed {} ready endpoints {} ms ago; kube-proxy may take up to {} ms to route to them",
                        self.ready,
                        since.as_millis().max(0),
                        ENDPOINTS_SETTLE.as_millis()
                    )
                })
            }
        }
    }

    /// When to look again while only kube-proxy is missing: soon after a refused
    /// probe, or once the settle time has passed.
    pub fn look_again_in(&self, now: Timestamp) -> Option<std::time::Duration> {
        if self.ready == 0 {
            return None;
        }
        match self.routed {
            Some(true) => None,
            Some(false) => Some(ROUTE_RETRY),
            None => {
                let left = ENDPOINTS_SETTLE - now.duration_since(self.changed?);
                left.is_positive().then(|| left.unsigned_abs())
            }
        }
    }
}

/// Computes the new status from the Deployments (or DaemonSets) of every
/// revision, their pods and the ready endpoints that the main Service's
/// EndpointSlices list (`endpoints`: Ready waits for one, since kube-proxy
/// refuses a Service without any). `now` stamps conditions whose status
/// changed; the others keep their transition time, so an unchanged world
/// yields an identical status.
pub fn compute(
    isvc: &InferenceService,
    outcome: &Outcome,
    workloads: &[Workload],
    pods: &[Pod],
    endpoints: &Endpoints,
    now: Time,
) -> InferenceServiceStatus {
    let old = isvc.status.clone().unwrap_or_default();
    let generation = isvc.metadata.generation;
    let placement = &isvc.spec.placement;
    let per_node = placement.per_node();
    let (replicas, ready_replicas) = workloads
        .iter()
        .map(Workload::counts)
        .fold((0, 0), |(r, ready), (a, b)| (r + a, ready + b));
    // Ready pods of a revision, whatever spec they run: they answer requests,
    // which is what availability asks. The rollout counts only pods of the
    // workload's latest spec (`Workload::ready_pods`), which is what promotion
    // needs, so the two may differ while a Deployment updates.
    let ready_of = |revision: &str| of(workloads, revision).map(|w| w.counts().1).sum::<i32>();
    // Per node, every matching node must have a ready pod (its callers reach no
    // other); otherwise `minReplicas` pods.
    let nodes_of = |revision: &str| of(workloads, revision).find_map(Workload::matching_nodes);
    let min = |revision: &str| {
        if per_node {
            nodes_of(revision).unwrap_or(0).max(1)
        } else {
            isvc.spec.min_replicas
        }
    };
    let old_view = RolloutView {
        stable: old.stable_revision.clone(),
        rollout: old.rollout.clone(),
        canary_weight: old.canary_weight,
        history: old.history.clone(),
    };

    let monitored = isvc.spec.monitoring.is_some();
    let optimizing = isvc.spec.model.optimize.is_some();
    let (
        reconciled,
        fetched,
        profile,
        (optimized, optimization),
        nodes_matched,
        available,
        rolled_out,
        revision,
        url,
        view,
        autoscaling,
        metrics,
        drift,
    ) = match outcome {
        Outcome::Refused { reason, message } => {
            let unknown = || Verdict::new("Unknown", reason, "the objects could not be applied");
            (
                Verdict::new("False", reason, message.clone()),
                unknown(),
                unknown(),
                (unknown(), old.optimization.clone()),
                unknown(),
                unknown(),
                false,
                old.revision.clone(),
                old.url.clone(),
                old_view,
                old.autoscaling.clone(),
                unknown(),
                None,
            )
        }
        Outcome::Applied {
            revision,
            url,
            rollout,
            autoscaling,
            measured,
            drift,
        } => {
            let current: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.labels().get(REVISION_LABEL) == Some(revision))
                .collect();
            let serving = rollout.stable.as_deref().unwrap_or(revision);
            let serving_pods: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.labels().get(REVISION_LABEL).map(String::as_str) == Some(serving))
                .collect();
            let mut available = availability(&serving_pods, ready_of(serving), min(serving));
            if serving != revision.as_str()
                && let crash @ Verdict {
                    reason: "CrashLooping",
                    ..
                } = availability(&current, 0, 0)
            {
                available = crash;
            }
            (
                Verdict::new("True", "Applied", format!("revision {revision} is applied")),
                fetched(&MODEL, &current),
                fetched(&PROFILE, &current),
                optimized(&current, revision, &old),
                nodes_matched(placement, revision, nodes_of(revision)),
                available,
                rollout.stable.as_ref() == Some(revision) && rollout.running().is_none(),
                Some(revision.clone()),
                Some(url.clone()),
                (**rollout).clone(),
                Some(autoscaling.clone()),
                metrics_available(*measured),
                drift.as_deref(),
            )
        }
    };
    let was_ready = is_ready(&old);
    let rollout_message = view.rollout.as_ref().map(|r| r.message.clone());
    let rolled_back = view.rollout.as_ref().filter(|r| {
        Some(&r.revision) == revision.as_ref()
            && matches!(r.phase, RolloutPhase::RolledBack | RolloutPhase::Aborted)
    });
    let ready = if !reconciled.is_true() {
        Verdict::new("False", reconciled.reason, reconciled.message.clone())
    } else if fetched.status == "False" {
        Verdict::new("False", fetched.reason, fetched.message.clone())
    } else if monitored && profile.status == "False" {
        Verdict::new("False", profile.reason, profile.message.clone())
    } else if optimizing && optimized.status == "False" {
        Verdict::new("False", optimized.reason, optimized.message.clone())
    } else if per_node && nodes_matched.status == "False" {
        Verdict::new("False", nodes_matched.reason, nodes_matched.message.clone())
    } else if !available.is_true() {
        Verdict::new("False", available.reason, available.message.clone())
    } else if let Some(waiting) = endpoints.not_routed(&isvc.name_any(), was_ready, now.0) {
        Verdict::new("False", "EndpointsNotReady", waiting)
    } else if let Some(r) = rolled_back {
        Verdict::new(
            "False",
            if r.phase == RolloutPhase::RolledBack {
                "RolledBack"
            } else {
                "RolloutAborted"
            },
            format!(
                "revision {} was not promoted ({}); revision {} serves",
                r.revision,
                r.message,
                view.stable.as_deref().unwrap_or("?")
            ),
        )
    } else if !rolled_out {
        Verdict::new(
            "False",
            "RollingOut",
            format!(
                "revision {} is rolling out: {}",
                revision.as_deref().unwrap_or("?"),
                rollout_message.as_deref().unwrap_or("starting")
            ),
        )
    } else {
        let rolled_back_to = match &old.rollback {
            Some(r) => format!(
                " (rolled back by command: the spec's revision {} waits for a change of the spec)",
                r.spec_revision
            ),
            None => String::new(),
        };
        Verdict::new(
            "True",
            "Ready",
            format!(
                "revision {} serves on {ready_replicas} ready pods{rolled_back_to}",
                revision.as_deref().unwrap_or("?")
            ),
        )
    };

    // Drift as decided this reconcile, else (a refused spec) as it was.
    let drift_verdict = drift.filter(|_| monitored).map(|(_, verdict)| verdict);
    let kept_drift = old
        .conditions
        .iter()
        .find(|c| c.type_ == INPUT_DRIFT && monitored && drift.is_none())
        .cloned();
    let drift_status = match drift {
        Some((status, _)) => Some(status.clone()),
        None => old.drift.clone(),
    }
    .filter(|_| monitored);

    let failed = !reconciled.is_true()
        || fetched.status == "False"
        || (monitored && profile.status == "False")
        || (optimizing && optimized.status == "False")
        || (per_node && nodes_matched.status == "False")
        || available.reason == "CrashLooping"
        || rolled_back.is_some();
    let phase = if ready.is_true() {
        Phase::Ready
    } else if failed {
        Phase::Failed
    } else if workloads.is_empty() || replicas == 0 {
        Phase::Pending
    } else {
        Phase::Progressing
    };
    let conditions = [
        (READY, &ready),
        (RECONCILED, &reconciled),
        (MODEL_FETCHED, &fetched),
        (AVAILABLE, &available),
        (METRICS_AVAILABLE, &metrics),
    ]
    .into_iter()
    .chain(monitored.then_some((PROFILE_FETCHED, &profile)))
    .chain(optimizing.then_some((MODEL_OPTIMIZED, &optimized)))
    .chain(per_node.then_some((NODES_MATCHED, &nodes_matched)))
    .chain(drift_verdict.map(|verdict| (INPUT_DRIFT, verdict)))
    .map(|(type_, verdict)| condition(&old.conditions, type_, verdict, generation, &now))
    .chain(kept_drift)
    .collect();

    InferenceServiceStatus {
        observed_generation: generation,
        conditions,
        phase: Some(phase),
        message: Some(ready.message.clone()),
        url,
        stable_revision: view.stable.clone(),
        canary_revision: view.running().map(|r| r.revision.clone()),
        canary_weight: view.running().and(view.canary_weight),
        rollout: view.rollout,
        history: view.history,
        rollback: old.rollback.clone(),
        policy: old.policy.clone(),
        revision,
        replicas,
        ready_replicas,
        selector: Some(selector_string(&isvc.name_any())),
        autoscaling,
        drift: drift_status,
        optimization: optimization.filter(|_| optimizing),
    }
}

/// `ModelOptimized` and `status.optimization` from the current revision's pods.
/// An earlier revision's figures stay until this one has its own, and a refusal
/// stays while the revision is the same, even once a rollback removed its pods.
fn optimized(
    pods: &[&Pod],
    revision: &str,
    old: &InferenceServiceStatus,
) -> (Verdict, Option<OptimizationStatus>) {
    match optimization::observe(pods, revision) {
        Optimized::Done(figures) => {
            let agreement = figures
                .agreement
                .iter()
                .map(|a| format!("{} {:.4} on '{}'", a.measure, a.value, a.output))
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!(
                "{}: {:.3} of the size, {:.2}x at 1 row and {:.2}x at {} rows, {agreement} over {} rows",
                figures.mode,
                figures.size_ratio,
                figures.speedup_batch1,
                figures.speedup_batch,
                figures.batch,
                figures.rows
            );
            (Verdict::new("True", "Optimized", message), Some(*figures))
        }
        Optimized::Refused {
            pod,
            below_agreement,
            message,
        } => (
            Verdict::new(
                "False",
                if below_agreement {
                    "AgreementBelowMinimum"
                } else {
                    "OptimizeFailed"
                },
                format!("pod {pod}: optimizing the model failed: {message}"),
            ),
            old.optimization.clone(),
        ),
        Optimized::Pending => {
            let refused_before = old
                .conditions
                .iter()
                .filter(|_| old.revision.as_deref() == Some(revision))
                .find(|c| c.type_ == MODEL_OPTIMIZED && c.status == "False");
            let verdict = match refused_before {
                Some(c) => Verdict {
                    status: "False",
                    reason: if c.reason == "AgreementBelowMinimum" {
                        "AgreementBelowMinimum"
                    } else {
                        "OptimizeFailed"
                    },
                    message: c.message.clone(),
                },
                None => Verdict::new(
                    "Unknown",
                    "Pending",
                    "no pod of this revision has optimized the model yet",
                ),
            };
            (verdict, old.optimization.clone())
        }
    }
}

/// Whether `status` says Ready (its `Ready` condition is `True`).
pub fn is_ready(status: &InferenceServiceStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// The condition `type_` as `verdict` says, for an object at `generation`: it
/// keeps the transition time of the same condition in `old` while its status
/// holds, and takes `now` when it changed.
pub fn condition(
    old: &[Condition],
    type_: &str,
    verdict: &Verdict,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let previous = old.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(c) if c.status == verdict.status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: type_.into(),
        status: verdict.status.into(),
        reason: verdict.reason.into(),
        message: verdict.message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

fn init_status<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)
}

/// The exit code and message (its last line) of a container's latest run, if
/// that run failed.
pub fn container_failure(status: &ContainerStatus) -> Option<String> {
    let failed = |t: &k8s_openapi::api::core::v1::ContainerStateTerminated| {
        (t.exit_code != 0).then(|| {
            let detail = t
                .message
                .as_deref()
                .or(t.reason.as_deref())
                .unwrap_or("no message")
                .trim();
            format!("exit code {}: {}", t.exit_code, error_line(detail))
        })
    };
    let current = status.state.as_ref().and_then(|s| s.terminated.as_ref());
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    match current {
        Some(t) if t.exit_code == 0 => None,
        Some(t) => failed(t),
        None => last.and_then(failed),
    }
}

/// The line of a container's termination message that says what went wrong,
/// trimmed: the last one that begins with `error` in any case (anyhow's
/// `Error: ...`, clap's `error: ...`, which a usage hint follows), else the last
/// that is not blank.
pub fn error_line(text: &str) -> &str {
    let lines = || text.lines().rev().map(str::trim);
    lines()
        .find(|l| {
            l.get(..5)
                .is_some_and(|start| start.eq_ignore_ascii_case("error"))
        })
        .or_else(|| lines().find(|l| !l.is_empty()))
        .unwrap_or(text.trim())
}

/// Whether the current revision's pods fetched and verified `file`.
fn fetched(file: &Fetched, pods: &[&Pod]) -> Verdict {
    if let Some((pod, message)) = pods
        .iter()
        .find_map(|p| container_failure(init_status(p, file.container)?).map(|m| (p, m)))
    {
        let lower = message.to_ascii_lowercase();
        let reason = if lower.contains("mismatch")
            && (lower.contains("sha256") || lower.contains("digest"))
        {
            file.mismatch
        } else {
            file.failed
        };
        return Verdict::new(
            "False",
            reason,
            format!(
                "pod {}: fetching the {} failed: {message}",
                pod.name_any(),
                file.what
            ),
        );
    }
    let done = pods.iter().any(|p| {
        init_status(p, file.container)
            .and_then(|s| s.state.as_ref()?.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    });
    if done {
        Verdict::new(
            "True",
            "Fetched",
            format!("the {} was fetched and verified", file.what),
        )
    } else {
        Verdict::new(
            "Unknown",
            "Pending",
            format!("no pod of this revision has fetched the {} yet", file.what),
        )
    }
}

/// `ModelFetched`: whether `pods` fetched and verified the model.
pub fn model_fetched(pods: &[&Pod]) -> Verdict {
    fetched(&MODEL, pods)
}

/// The workloads of `revision`.
fn of<'a>(workloads: &'a [Workload], revision: &'a str) -> impl Iterator<Item = &'a Workload> {
    workloads
        .iter()
        .filter(move |w| w.revision() == Some(revision))
}

/// `NodesMatched`, per node: whether the current revision's DaemonSet, which
/// counted `nodes` matching nodes (`None` before it counted), runs anywhere.
fn nodes_matched(placement: &PlacementSpec, revision: &str, nodes: Option<i32>) -> Verdict {
    match nodes {
        None => Verdict::new(
            "Unknown",
            "Pending",
            format!("the DaemonSet of revision {revision} has not counted the matching nodes yet"),
        ),
        Some(0) => Verdict::new(
            "False",
            "NoMatchingNodes",
            format!(
                "no node matches spec.placement ({}), so the DaemonSet of revision {revision} runs no pod: label a node to match, or change spec.placement",
                placement.describe()
            ),
        ),
        Some(n) => Verdict::new(
            "True",
            "NodesMatched",
            format!(
                "revision {revision} runs one pod on each of {n} matching node{}",
                if n == 1 { "" } else { "s" }
            ),
        ),
    }
}

fn metrics_available(measured: bool) -> Verdict {
    if measured {
        Verdict::new(
            "True",
            "PrometheusConfigured",
            "rollout analysis and the autoscaler read Prometheus",
        )
    } else {
        Verdict::new(
            "False",
            "NoPrometheus",
            "the operator has no Prometheus URL (--prometheus-url or PROMETHEUS_URL): rollouts hold at their first analysis until promoted by hand, and the autoscaler keeps minReplicas",
        )
    }
}

fn availability(pods: &[&Pod], ready: i32, min: i32) -> Verdict {
    let crash = pods.iter().find_map(|p| {
        let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|s| {
            let waiting = s.state.as_ref()?.waiting.as_ref()?;
            (waiting.reason.as_deref() == Some("CrashLoopBackOff")).then(|| {
                let last = s
                    .last_state
                    .as_ref()
                    .and_then(|l| l.terminated.as_ref())
                    .map(|t| {
                        let detail = t.message.as_deref().or(t.reason.as_deref()).unwrap_or("");
                        format!(" (last exit code {}: {})", t.exit_code, error_line(detail))
                    })
                    .unwrap_or_default();
                format!(
                    "pod {} container {} is crash-looping after {} restarts{last}",
                    p.name_any(),
                    s.name,
                    s.restart_count
                )
            })
        })
    });
    if let Some(message) = crash {
        return Verdict::new("False", "CrashLooping", message);
    }
    if ready < min
        && let Some(message) = pods.iter().find_map(|p| unschedulable(p))
    {
        return Verdict::new(
            "False",
            "Unschedulable",
            format!("{ready} of {min} pods are ready; {message}"),
        );
    }
    if ready >= min {
        Verdict::new(
            "True",
            "MinimumReplicasAvailable",
            format!("{ready} of {min} pods are ready"),
        )
    } else {
        Verdict::new(
            "False",
            "ReplicasUnavailable",
            format!("{ready} of {min} pods are ready"),
        )
    }
}

/// Why the scheduler placed `pod` nowhere (its `PodScheduled` condition), for
/// example a node selector that no node matches.
pub fn unschedulable(pod: &Pod) -> Option<String> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some(format!(
        "pod {} cannot be scheduled: {}",
        pod.name_any(),
        condition
            .message
            .as_deref()
            .or(condition.reason.as_deref())
            .unwrap_or("no reason given")
    ))
}

/// Whether `condition` in its state is bad news.
fn is_warning(condition: &Condition) -> bool {
    if condition.type_ == INPUT_DRIFT {
        condition.status == "True"
    } else {
        condition.status == "False"
    }
}

/// A condition change worth an Event: `(warning, reason, message)`.
pub type Transition = (bool, String, String);

/// The conditions of `new`, other than `Unknown` ones, whose status or reason
/// differs from the same condition in `old` (or that `old` lacks).
pub fn changed<'a>(
    old: &'a [Condition],
    new: &'a [Condition],
) -> impl Iterator<Item = &'a Condition> + 'a {
    new.iter().filter(|c| c.status != "Unknown").filter(|c| {
        !old.iter()
            .any(|o| o.type_ == c.type_ && o.status == c.status && o.reason == c.reason)
    })
}

/// Conditions (other than `Ready`'s mirror of them) whose status or reason changed
/// between `old` and `new`. `False` transitions are warnings, except for
/// `InputDrift`, where `True` is the bad news.
pub fn transitions(
    old: Option<&InferenceServiceStatus>,
    new: &InferenceServiceStatus,
) -> Vec<Transition> {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    changed(old_conditions, &new.conditions)
        // A False Ready repeats the failing condition's reason; report it once.
        .filter(|c| c.type_ != READY || c.status == "True")
        .map(|c| (is_warning(c), c.reason.clone(), c.message.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::rollout::{ModelRecord, Strategy};
    use serde_json::{Value, json};

    const REVISION: &str = "new0000001";
    const STABLE: &str = "old0000001";

    #[test]
    fn the_error_line_of_a_termination_message_is_the_one_that_says_what_failed() {
        // clap's refusal of a bad environment value: its usage hint comes last.
        let clap = "error: invalid value 'lots' for '--max-body-bytes <MAX_BODY_BYTES>': invalid digit found in string\n\nFor more information, try '--help'.\n";
        assert_eq!(
            error_line(clap),
            "error: invalid value 'lots' for '--max-body-bytes <MAX_BODY_BYTES>': invalid digit found in string"
        );
        // anyhow at the edge, after log lines.
        let anyhow = "{\"level\":\"INFO\"}\nError: ONNX Runtime failed: Protobuf parsing failed.\n";
        assert_eq!(
            error_line(anyhow),
            "Error: ONNX Runtime failed: Protobuf parsing failed."
        );
        // No error line: the last line that is not blank; nothing: nothing.
        assert_eq!(
            error_line("starting\n  killed by the OOM killer  \n\n"),
            "killed by the OOM killer"
        );
        assert_eq!(error_line(" \n"), "");
    }

    fn isvc(status: Option<InferenceServiceStatus>) -> InferenceService {
        let mut isvc: InferenceService = serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "fraud", "namespace": "ml", "generation": 3},
            "spec": {"model": {"storageUri": "s3://m/model.onnx"}, "minReplicas": 2},
        }))
        .unwrap();
        isvc.status = status;
        isvc
    }

    fn deployment(revision: &str, replicas: i32, ready: i32) -> Workload {
        Workload::Deployment(
            serde_json::from_value(json!({
                "metadata": {"name": format!("fraud-{revision}"), "generation": 1,
                             "labels": {REVISION_LABEL: revision}},
                "status": {"observedGeneration": 1, "replicas": replicas,
                           "readyReplicas": ready, "updatedReplicas": replicas},
            }))
            .unwrap(),
        )
    }

    /// A revision's DaemonSet over `nodes` matching nodes (`None`: not counted
    /// yet), `ready` of them with a ready pod.
    fn daemon_set(revision: &str, nodes: Option<i32>, ready: i32) -> Workload {
        Workload::DaemonSet(
            serde_json::from_value(json!({
                "metadata": {"name": format!("fraud-{revision}"), "generation": 1,
                             "labels": {REVISION_LABEL: revision}},
                "status": {"observedGeneration": if nodes.is_some() { 1 } else { 0 },
                           "desiredNumberScheduled": nodes.unwrap_or(0),
                           "currentNumberScheduled": nodes.unwrap_or(0),
                           "numberReady": ready, "numberMisscheduled": 0,
                           "updatedNumberScheduled": nodes.unwrap_or(0)},
            }))
            .unwrap(),
        )
    }

    fn pod(revision: &str, status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("fraud-{revision}-x"),
                         "labels": {REVISION_LABEL: revision}},
            "status": status,
        }))
        .unwrap()
    }

    fn fetched(revision: &str) -> Pod {
        pod(
            revision,
            json!({"initContainerStatuses": [{"name": FETCH_CONTAINER, "image": "s",
                "imageID": "", "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0}}}]}),
        )
    }

    fn fetch_failed(message: &str) -> Pod {
        pod(
            REVISION,
            json!({"initContainerStatuses": [{"name": FETCH_CONTAINER, "image": "s",
                "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": message}}}]}),
        )
    }

    fn crash_looping() -> Pod {
        let mut pod = fetched(REVISION);
        pod.status.as_mut().unwrap().container_statuses = Some(
            serde_json::from_value(json!([{"name": "server", "image": "s", "imageID": "",
                "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 2, "message": "bad model"}}}]))
            .unwrap(),
        );
        pod
    }

    fn rollout(phase: RolloutPhase) -> RolloutStatus {
        RolloutStatus {
            revision: REVISION.into(),
            stable: Some(STABLE.into()),
            strategy: Strategy::Canary,
            phase,
            step: 0,
            step_started: None,
            step_entered: Time(Timestamp::UNIX_EPOCH),
            last_analysis: None,
            failures: 0,
            no_data: 0,
            checks: Vec::new(),
            message: "step 1 of 2 at 25%".into(),
            model: ModelRecord {
                storage_uri: "s3://m/model.onnx".into(),
                version: None,
                sha256: None,
                credentials_secret: None,
            },
            runtime: None,
        }
    }

    fn applied(stable: &str, rollout: Option<RolloutStatus>, measured: bool) -> Outcome {
        Outcome::Applied {
            revision: REVISION.into(),
            url: "http://fraud.ml.svc".into(),
            rollout: Box::new(RolloutView {
                stable: Some(stable.into()),
                canary_weight: rollout.as_ref().map(|_| 25),
                rollout,
                history: Vec::new(),
            }),
            autoscaling: crate::autoscale::decision::unmeasured(
                2,
                None,
                None,
                Timestamp::UNIX_EPOCH,
            ),
            measured,
            drift: None,
        }
    }

    fn condition<'a>(status: &'a InferenceServiceStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    /// One case of [`status_follows_outcome_and_pods`]: what happened and what the
    /// cluster shows, then the phase, Ready's reason and one more condition.
    struct Row {
        case: &'static str,
        outcome: Outcome,
        workloads: Vec<Workload>,
        pods: Vec<Pod>,
        phase: Phase,
        ready_reason: &'static str,
        /// `(type, status, reason)`.
        condition: (&'static str, &'static str, &'static str),
    }

    /// The endpoints of a Service that has served for long.
    const SERVED: Endpoints = Endpoints {
        ready: 1,
        changed: None,
        routed: None,
    };

    #[test]
    fn ready_waits_until_the_service_routes_to_a_ready_endpoint() {
        let now = Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_secs(100);
        let at = |old: Option<InferenceServiceStatus>, endpoints: Endpoints| {
            let mut isvc = isvc(None);
            isvc.status = old;
            compute(
                &isvc,
                &applied(REVISION, None, true),
                &[deployment(REVISION, 2, 2)],
                &[fetched(REVISION), fetched(REVISION)],
                &endpoints,
                Time(now),
            )
        };
        let listed = |ready, millis_ago, routed| Endpoints {
            ready,
            changed: Some(now - jiff::SignedDuration::from_millis(millis_ago)),
            routed,
        };
        let reason = |status: &InferenceServiceStatus| {
            let ready = condition(status, READY);
            (
                ready.status.clone(),
                ready.reason.clone(),
                ready.message.clone(),
            )
        };

        // No ready endpoint: kube-proxy would refuse the Service.
        let none = at(None, listed(0, 5_000, None));
        assert_eq!(none.phase, Some(Phase::Progressing));
        let (status, why, message) = reason(&none);
        assert_eq!(
            (status.as_str(), why.as_str()),
            ("False", "EndpointsNotReady")
        );
        assert!(message.contains("lists no ready endpoint"), "{message}");
        assert_eq!(condition(&none, AVAILABLE).status, "True");

        // Listed, but the ClusterIP still refuses: not yet, however long ago.
        let refused = at(None, listed(2, 60_000, Some(false)));
        let (_, why, message) = reason(&refused);
        assert_eq!(why, "EndpointsNotReady");
        assert!(message.contains("still refuses connections"), "{message}");
        assert_eq!(
            listed(2, 60_000, Some(false)).look_again_in(now),
            Some(ROUTE_RETRY)
        );
        // The probe connected: Ready at once.
        assert_eq!(
            at(None, listed(2, 10, Some(true))).phase,
            Some(Phase::Ready)
        );

        // No probe answer: the settle time decides.
        let fresh = at(None, listed(2, 300, None));
        let (_, why, message) = reason(&fresh);
        assert_eq!(why, "EndpointsNotReady");
        assert!(message.contains("kube-proxy may take"), "{message}");
        assert!(listed(2, 300, None).look_again_in(now).is_some());
        let settled = at(None, listed(2, 2_500, None));
        assert_eq!(settled.phase, Some(Phase::Ready));

        // Once Ready, a slice that changes (a scale-up) keeps it.
        assert_eq!(
            at(Some(settled), listed(3, 100, Some(false))).phase,
            Some(Phase::Ready)
        );
    }

    #[test]
    fn status_follows_outcome_and_pods() {
        let refused = Outcome::Refused {
            reason: "InvalidSpec",
            message: "spec.minReplicas must be at least 1".into(),
        };
        let serving = [deployment(REVISION, 2, 2)];
        let rows = vec![
            Row {
                case: "an invalid spec fails and says why",
                outcome: refused,
                workloads: vec![],
                pods: vec![],
                phase: Phase::Failed,
                ready_reason: "InvalidSpec",
                condition: (RECONCILED, "False", "InvalidSpec"),
            },
            Row {
                case: "nothing runs yet",
                outcome: applied(REVISION, None, true),
                workloads: vec![],
                pods: vec![],
                phase: Phase::Pending,
                ready_reason: "ReplicasUnavailable",
                condition: (MODEL_FETCHED, "Unknown", "Pending"),
            },
            Row {
                case: "enough ready pods of the stable revision",
                outcome: applied(REVISION, None, true),
                workloads: serving.to_vec(),
                pods: vec![fetched(REVISION), fetched(REVISION)],
                phase: Phase::Ready,
                ready_reason: "Ready",
                condition: (AVAILABLE, "True", "MinimumReplicasAvailable"),
            },
            Row {
                case: "too few ready pods",
                outcome: applied(REVISION, None, true),
                workloads: vec![deployment(REVISION, 2, 1)],
                pods: vec![fetched(REVISION)],
                phase: Phase::Progressing,
                ready_reason: "ReplicasUnavailable",
                condition: (AVAILABLE, "False", "ReplicasUnavailable"),
            },
            Row {
                case: "a digest mismatch fails the fetch",
                outcome: applied(REVISION, None, true),
                workloads: vec![deployment(REVISION, 2, 0)],
                pods: vec![fetch_failed("sha256 mismatch: want 83, got 29")],
                phase: Phase::Failed,
                ready_reason: "DigestMismatch",
                condition: (MODEL_FETCHED, "False", "DigestMismatch"),
            },
            Row {
                case: "an unreachable model fails the fetch",
                outcome: applied(REVISION, None, true),
                workloads: vec![deployment(REVISION, 2, 0)],
                pods: vec![fetch_failed("GET s3://m/model.onnx: 403 Forbidden")],
                phase: Phase::Failed,
                ready_reason: "FetchFailed",
                condition: (MODEL_FETCHED, "False", "FetchFailed"),
            },
            Row {
                case: "a crash loop fails availability",
                outcome: applied(REVISION, None, true),
                workloads: vec![deployment(REVISION, 2, 0)],
                pods: vec![crash_looping()],
                phase: Phase::Failed,
                ready_reason: "CrashLooping",
                condition: (AVAILABLE, "False", "CrashLooping"),
            },
            Row {
                case: "a canary in progress is rolling out on the stable pods",
                outcome: applied(STABLE, Some(rollout(RolloutPhase::Progressing)), true),
                workloads: vec![deployment(STABLE, 2, 2), deployment(REVISION, 1, 1)],
                pods: vec![fetched(REVISION)],
                phase: Phase::Progressing,
                ready_reason: "RollingOut",
                condition: (AVAILABLE, "True", "MinimumReplicasAvailable"),
            },
            Row {
                case: "a rolled-back revision fails, the stable one serves",
                outcome: applied(STABLE, Some(rollout(RolloutPhase::RolledBack)), true),
                workloads: vec![deployment(STABLE, 2, 2)],
                pods: vec![],
                phase: Phase::Failed,
                ready_reason: "RolledBack",
                condition: (AVAILABLE, "True", "MinimumReplicasAvailable"),
            },
            Row {
                case: "without Prometheus it serves and says what it cannot do",
                outcome: applied(REVISION, None, false),
                workloads: serving.to_vec(),
                pods: vec![fetched(REVISION)],
                phase: Phase::Ready,
                ready_reason: "Ready",
                condition: (METRICS_AVAILABLE, "False", "NoPrometheus"),
            },
        ];
        let now = Time(Timestamp::UNIX_EPOCH);
        for Row {
            case,
            outcome,
            workloads,
            pods,
            phase,
            ready_reason,
            condition: (type_, status_, reason),
        } in rows
        {
            let status = compute(
                &isvc(None),
                &outcome,
                &workloads,
                &pods,
                &SERVED,
                now.clone(),
            );
            assert_eq!(status.phase, Some(phase), "{case}");
            assert_eq!(status.observed_generation, Some(3), "{case}");
            assert_eq!(condition(&status, READY).reason, ready_reason, "{case}");
            assert_eq!(
                status.message.as_deref(),
                Some(condition(&status, READY).message.as_str()),
                "{case}: the message is Ready's"
            );
            let other = condition(&status, type_);
            assert_eq!(
                (other.status.as_str(), other.reason.as_str()),
                (status_, reason),
                "{case}"
            );
        }
    }

    /// A pod of the current revision whose model was fetched and whose profile
    /// fetch ended as `profile` (a container state) says.
    fn profile_fetch(profile: Value) -> Pod {
        let mut pod = fetched(REVISION);
        let statuses = pod
            .status
            .as_mut()
            .unwrap()
            .init_container_statuses
            .as_mut()
            .unwrap();
        let mut status = json!({"name": PROFILE_FETCH_CONTAINER, "image": "s", "imageID": "",
            "ready": false, "restartCount": 1});
        status
            .as_object_mut()
            .unwrap()
            .extend(profile.as_object().unwrap().clone());
        statuses.push(serde_json::from_value(status).unwrap());
        pod
    }

    #[test]
    fn input_drift_is_a_condition_whose_true_is_the_warning_and_survives_a_refusal() {
        let mut monitored = isvc(None);
        monitored.spec.monitoring =
            Some(serde_json::from_value(json!({"profileUri": "s3://m/profile.json"})).unwrap());
        let serving = [deployment(REVISION, 2, 2)];
        let pods = [fetched(REVISION)];
        let drift = |status: &'static str, reason: &'static str| {
            let mut outcome = applied(REVISION, None, true);
            if let Outcome::Applied { drift, .. } = &mut outcome {
                *drift = Some(Box::new((
                    DriftStatus {
                        revision: Some(REVISION.into()),
                        ..Default::default()
                    },
                    Verdict::new(status, reason, format!("{reason} message")),
                )));
            }
            outcome
        };
        let now = Time(Timestamp::UNIX_EPOCH);
        let quiet = compute(
            &monitored,
            &drift("False", "NoDrift"),
            &serving,
            &pods,
            &SERVED,
            now.clone(),
        );
        assert_eq!(condition(&quiet, INPUT_DRIFT).reason, "NoDrift");
        assert_eq!(
            quiet.drift.as_ref().unwrap().revision.as_deref(),
            Some(REVISION)
        );
        monitored.status = Some(quiet.clone());
        let drifting = compute(
            &monitored,
            &drift("True", "Drifting"),
            &serving,
            &pods,
            &SERVED,
            now.clone(),
        );
        let events = transitions(Some(&quiet), &drifting);
        assert_eq!(
            events,
            [(true, "Drifting".to_string(), "Drifting message".to_string())],
            "drift starting is the warning"
        );
        assert_eq!(
            drifting.phase,
            Some(Phase::Ready),
            "drift does not stop serving"
        );
        let cleared = compute(
            &monitored,
            &drift("False", "NoDrift"),
            &serving,
            &pods,
            &SERVED,
            now.clone(),
        );
        monitored.status = Some(drifting.clone());
        assert_eq!(
            transitions(Some(&drifting), &cleared),
            [(false, "NoDrift".to_string(), "NoDrift message".to_string())]
        );
        let refused = Outcome::Refused {
            reason: "InvalidSpec",
            message: "spec.x is wrong".into(),
        };
        let kept = compute(&monitored, &refused, &serving, &pods, &SERVED, now);
        assert_eq!(
            condition(&kept, INPUT_DRIFT),
            condition(&drifting, INPUT_DRIFT)
        );
        assert_eq!(kept.drift, drifting.drift);
        assert!(condition_absent(&compute(
            &isvc(None),
            &applied(REVISION, None, true),
            &serving,
            &pods,
            &SERVED,
            Time(Timestamp::UNIX_EPOCH)
        )));
    }

    fn condition_absent(status: &InferenceServiceStatus) -> bool {
        status.conditions.iter().all(|c| c.type_ != INPUT_DRIFT) && status.drift.is_none()
    }

    #[test]
    fn a_profile_that_cannot_be_fetched_keeps_the_revision_from_ready() {
        let mut monitored = isvc(None);
        monitored.spec.monitoring =
            Some(serde_json::from_value(json!({"profileUri": "s3://m/profile.json"})).unwrap());
        let serving = [deployment(REVISION, 2, 2)];
        let failed = |message: &str| {
            profile_fetch(json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": message}}}))
        };
        let now = Time(Timestamp::UNIX_EPOCH);
        for (case, pod, reason) in [
            (
                "unreachable",
                failed("GET s3://m/profile.json: 404 Not Found"),
                "ProfileFetchFailed",
            ),
            (
                "wrong digest",
                failed("sha256 mismatch: expected 5e0c, got 29ab"),
                "ProfileDigestMismatch",
            ),
        ] {
            let status = compute(
                &monitored,
                &applied(REVISION, None, true),
                &serving,
                &[pod],
                &SERVED,
                now.clone(),
            );
            let profile = condition(&status, PROFILE_FETCHED);
            assert_eq!(
                (profile.status.as_str(), profile.reason.as_str()),
                ("False", reason),
                "{case}"
            );
            assert!(
                profile
                    .message
                    .contains("fetching the reference profile failed"),
                "{case}: {}",
                profile.message
            );
            assert_eq!(condition(&status, READY).reason, reason, "{case}");
            assert_eq!(status.phase, Some(Phase::Failed), "{case}");
            assert_eq!(condition(&status, MODEL_FETCHED).status, "True", "{case}");
        }
        let done = profile_fetch(json!({"state": {"terminated": {"exitCode": 0}}}));
        let status = compute(
            &monitored,
            &applied(REVISION, None, true),
            &serving,
            &[done],
            &SERVED,
            now.clone(),
        );
        assert_eq!(condition(&status, PROFILE_FETCHED).reason, "Fetched");
        assert_eq!(status.phase, Some(Phase::Ready));
        let unmonitored = compute(
            &isvc(None),
            &applied(REVISION, None, true),
            &serving,
            &[fetched(REVISION)],
            &SERVED,
            now,
        );
        assert!(
            unmonitored
                .conditions
                .iter()
                .all(|c| c.type_ != PROFILE_FETCHED),
            "no ProfileFetched condition without spec.monitoring"
        );
    }

    fn optimizer(state: Value) -> Pod {
        let mut pod = fetched(REVISION);
        let mut statuses = pod
            .status
            .as_ref()
            .unwrap()
            .init_container_statuses
            .clone()
            .unwrap();
        let mut status = json!({"name": crate::optimization::OPTIMIZE_CONTAINER,
            "image": "s", "imageID": "", "ready": false, "restartCount": 0});
        status
            .as_object_mut()
            .unwrap()
            .extend(state.as_object().unwrap().clone());
        statuses.push(serde_json::from_value(status).unwrap());
        pod.status.as_mut().unwrap().init_container_statuses = Some(statuses);
        pod
    }

    #[test]
    fn the_optimizer_s_figures_land_in_status_and_its_refusal_keeps_the_revision_from_ready() {
        let mut optimized = isvc(None);
        optimized.spec.model.optimize =
            Some(serde_json::from_value(json!({"mode": "int8-dynamic"})).unwrap());
        let serving = [deployment(REVISION, 2, 2)];
        let now = Time(Timestamp::UNIX_EPOCH);
        let summary = r#"{"mode":"int8-dynamic","sizeBytesBefore":4000,"sizeBytesAfter":1000,"sizeRatio":0.25,"latencyMsBatch1Before":0.1,"latencyMsBatch1After":0.05,"speedupBatch1":2.0,"batch":32,"speedupBatch":1.5,"agreement":[{"output":"logits","measure":"top-1","value":0.995}],"rows":1000,"nodesChanged":3,"nodesKept":0}"#;
        let done = optimizer(json!({"state": {"terminated": {"exitCode": 0, "message": summary}}}));
        let status = compute(
            &optimized,
            &applied(REVISION, None, true),
            &serving,
            &[done],
            &SERVED,
            now.clone(),
        );
        let verdict = condition(&status, MODEL_OPTIMIZED);
        assert_eq!(
            (
                verdict.status.as_str(),
                verdict.reason.as_str(),
                verdict.message.as_str()
            ),
            (
                "True",
                "Optimized",
                "int8-dynamic: 0.250 of the size, 2.00x at 1 row and 1.50x at 32 rows, top-1 0.9950 on 'logits' over 1000 rows"
            )
        );
        let figures = status.optimization.as_ref().unwrap();
        assert_eq!(
            (figures.revision.as_str(), figures.size_ratio),
            (REVISION, 0.25)
        );
        assert_eq!(status.phase, Some(Phase::Ready));

        let refusal = r#"{"error":"the optimized model's agreement 0.9800 on output 'logits' is below --min-agreement 0.99; nothing was written\n...","kind":"BelowAgreement"}"#;
        let refused = optimizer(json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "message": refusal}}}));
        optimized.status = Some(status.clone());
        let status = compute(
            &optimized,
            &applied(REVISION, None, true),
            &[deployment(REVISION, 2, 0)],
            &[refused],
            &SERVED,
            now.clone(),
        );
        let verdict = condition(&status, MODEL_OPTIMIZED);
        assert_eq!(
            (verdict.status.as_str(), verdict.reason.as_str()),
            ("False", "AgreementBelowMinimum")
        );
        assert!(
            verdict
                .message
                .ends_with("is below --min-agreement 0.99; nothing was written"),
            "{}",
            verdict.message
        );
        assert_eq!(condition(&status, READY).reason, "AgreementBelowMinimum");
        assert_eq!(status.phase, Some(Phase::Failed));
        // Once a rollback removed the revision's pods, the refusal stays.
        optimized.status = Some(status.clone());
        let later = compute(
            &optimized,
            &applied(REVISION, None, true),
            &serving,
            &[],
            &SERVED,
            now.clone(),
        );
        assert_eq!(
            condition(&later, MODEL_OPTIMIZED).reason,
            "AgreementBelowMinimum"
        );

        let plain = compute(
            &isvc(None),
            &applied(REVISION, None, true),
            &serving,
            &[fetched(REVISION)],
            &SERVED,
            now,
        );
        assert!(
            plain.conditions.iter().all(|c| c.type_ != MODEL_OPTIMIZED)
                && plain.optimization.is_none(),
            "no ModelOptimized condition without spec.model.optimize"
        );
    }

    #[test]
    fn a_canary_shows_its_revision_and_weight_only_while_it_runs() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let deployments = [deployment(STABLE, 2, 2), deployment(REVISION, 1, 1)];
        let running = applied(STABLE, Some(rollout(RolloutPhase::Progressing)), true);
        let status = compute(
            &isvc(None),
            &running,
            &deployments,
            &[],
            &SERVED,
            now.clone(),
        );
        assert_eq!(status.canary_revision.as_deref(), Some(REVISION));
        assert_eq!(status.canary_weight, Some(25));
        assert_eq!(status.stable_revision.as_deref(), Some(STABLE));
        assert_eq!((status.replicas, status.ready_replicas), (3, 3));
        assert_eq!(
            status.selector.as_deref(),
            Some("serving.sluice.dev/inferenceservice=fraud")
        );
        let done = applied(REVISION, Some(rollout(RolloutPhase::Promoted)), true);
        let status = compute(&isvc(None), &done, &deployments, &[], &SERVED, now);
        assert_eq!((status.canary_revision, status.canary_weight), (None, None));
    }

    #[test]
    fn an_unchanged_world_gives_the_same_status_and_no_transition() {
        let deployments = [deployment(REVISION, 2, 2)];
        let pods = [fetched(REVISION)];
        let outcome = applied(REVISION, None, true);
        let first = compute(
            &isvc(None),
            &outcome,
            &deployments,
            &pods,
            &SERVED,
            Time(Timestamp::UNIX_EPOCH),
        );
        let later = Time(Timestamp::from_second(60).unwrap());
        let again = compute(
            &isvc(Some(first.clone())),
            &outcome,
            &deployments,
            &pods,
            &SERVED,
            later.clone(),
        );
        assert_eq!(
            again, first,
            "transition times are kept when nothing changed"
        );
        assert!(transitions(Some(&first), &again).is_empty());

        let fewer = [deployment(REVISION, 2, 1)];
        let changed = compute(
            &isvc(Some(first.clone())),
            &outcome,
            &fewer,
            &pods,
            &SERVED,
            later.clone(),
        );
        let available = condition(&changed, AVAILABLE);
        assert_eq!(available.last_transition_time, later);
        assert_eq!(
            transitions(Some(&first), &changed),
            vec![(
                true,
                "ReplicasUnavailable".into(),
                "1 of 2 pods are ready".into()
            )],
            "one warning for the condition that changed; Ready's mirror is not repeated"
        );
    }

    /// The fraud InferenceService with one pod per node on `sluice.dev/edge` nodes.
    fn per_node(status: Option<InferenceServiceStatus>) -> InferenceService {
        let mut isvc = isvc(status);
        isvc.spec.placement = serde_json::from_value(
            json!({"mode": "PerNode", "nodeSelector": {"sluice.dev/edge": "true"}}),
        )
        .unwrap();
        isvc
    }

    #[test]
    fn per_node_every_matching_node_needs_a_ready_pod_and_no_match_is_said() {
        let now = Time(Timestamp::UNIX_EPOCH);
        let at = |workloads: &[Workload]| {
            compute(
                &per_node(None),
                &applied(REVISION, None, true),
                workloads,
                &[fetched(REVISION)],
                &SERVED,
                now.clone(),
            )
        };
        // One edge node: minReplicas (2) is no floor, the matching nodes are.
        let one = at(&[daemon_set(REVISION, Some(1), 1)]);
        assert_eq!(one.phase, Some(Phase::Ready));
        assert_eq!((one.replicas, one.ready_replicas), (1, 1));
        let matched = condition(&one, NODES_MATCHED);
        assert_eq!(
            (matched.status.as_str(), matched.message.as_str()),
            (
                "True",
                "revision new0000001 runs one pod on each of 1 matching node"
            )
        );
        assert_eq!(condition(&one, AVAILABLE).message, "1 of 1 pods are ready");

        let short = at(&[daemon_set(REVISION, Some(3), 2)]);
        assert_eq!(short.phase, Some(Phase::Progressing));
        let available = condition(&short, AVAILABLE);
        assert_eq!(
            (available.reason.as_str(), available.message.as_str()),
            ("ReplicasUnavailable", "2 of 3 pods are ready"),
            "a node without a ready pod leaves its callers without one"
        );

        let nowhere = at(&[daemon_set(REVISION, Some(0), 0)]);
        assert_eq!(nowhere.phase, Some(Phase::Failed));
        assert_eq!(condition(&nowhere, READY).reason, "NoMatchingNodes");
        assert_eq!(
            nowhere.message.as_deref(),
            Some(
                "no node matches spec.placement (nodeSelector sluice.dev/edge=true), so the DaemonSet of revision new0000001 runs no pod: label a node to match, or change spec.placement"
            )
        );
        assert_eq!(
            transitions(Some(&one), &nowhere),
            [
                (
                    true,
                    "ReplicasUnavailable".to_string(),
                    "0 of 1 pods are ready".to_string()
                ),
                (
                    true,
                    "NoMatchingNodes".to_string(),
                    nowhere.message.clone().unwrap()
                )
            ],
            "a Warning Event says it"
        );

        let uncounted = at(&[daemon_set(REVISION, None, 0)]);
        assert_eq!(uncounted.phase, Some(Phase::Pending));
        assert_eq!(condition(&uncounted, NODES_MATCHED).status, "Unknown");

        let replicas = compute(
            &isvc(None),
            &applied(REVISION, None, true),
            &[deployment(REVISION, 2, 2)],
            &[fetched(REVISION)],
            &SERVED,
            now,
        );
        assert!(
            replicas.conditions.iter().all(|c| c.type_ != NODES_MATCHED),
            "no NodesMatched condition for a replica count"
        );
    }

    #[test]
    fn a_pod_that_no_node_takes_says_why() {
        let mut pending = fetched(REVISION);
        pending.status.as_mut().unwrap().conditions = Some(
            serde_json::from_value(json!([{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."}]))
            .unwrap(),
        );
        let status = compute(
            &isvc(None),
            &applied(REVISION, None, true),
            &[deployment(REVISION, 2, 0)],
            &[pending],
            &SERVED,
            Time(Timestamp::UNIX_EPOCH),
        );
        let available = condition(&status, AVAILABLE);
        assert_eq!(
            (available.reason.as_str(), available.message.as_str()),
            (
                "Unschedulable",
                "0 of 2 pods are ready; pod fraud-new0000001-x cannot be scheduled: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
            )
        );
        assert_eq!(condition(&status, READY).reason, "Unschedulable");
        assert_eq!(
            status.phase,
            Some(Phase::Progressing),
            "a node may yet come to match"
        );
    }
}
