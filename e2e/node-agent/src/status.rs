//! The runtime state of a pod's containers and its translation to `PodStatus`
//! (phase, conditions, container statuses), kept pure so it can be tested alone.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What a container is doing now.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    /// Not running: not yet started, or waiting for a restart.
    Waiting {
        /// Machine-readable reason (`ContainerCreating`, `CrashLoopBackOff`, ...).
        reason: String,
        /// Human-readable detail.
        message: Option<String>,
    },
    /// Running since `started`.
    Running {
        /// When the process started.
        started: Timestamp,
    },
    /// Exited.
    Terminated {
        /// Exit code (128 + signal for signalled processes).
        exit_code: i32,
        /// The signal that ended it, if any.
        signal: Option<i32>,
        /// `Completed` or `Error`.
        reason: String,
        /// The termination message ([`crate::termination`]).
        message: Option<String>,
        /// When it started.
        started: Timestamp,
        /// When it exited.
        finished: Timestamp,
    },
}

impl RunState {
    /// A waiting state with `reason`.
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        RunState::Waiting {
            reason: reason.into(),
            message,
        }
    }

    fn to_api(&self) -> ContainerState {
        match self {
            RunState::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            RunState::Running { started } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started)),
                }),
                ..Default::default()
            },
            RunState::Terminated {
                exit_code,
                signal,
                reason,
                message,
                started,
                finished,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(reason.clone()),
                    message: message.clone(),
                    started_at: Some(Time(*started)),
                    finished_at: Some(Time(*finished)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }
}

/// One container as the agent tracks it.
#[derive(Clone, Debug)]
pub struct ContainerRuntime {
    /// Container name.
    pub name: String,
    /// Image as the pod spec names it.
    pub image: String,
    /// Current state.
    pub state: RunState,
    /// The previous run's final state.
    pub last: Option<RunState>,
    /// How often it was restarted.
    pub restart_count: i32,
    /// Whether its readiness probe (or, without one, its start) says ready.
    pub ready: bool,
    /// Whether its startup probe has passed.
    pub started: bool,
    /// Process ID while running.
    pub pid: Option<u32>,
}

impl ContainerRuntime {
    /// A container that has not started yet.
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            state: RunState::waiting("ContainerCreating", None),
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
            pid: None,
        }
    }

    /// Whether it exited with code 0.
    pub fn succeeded(&self) -> bool {
        matches!(self.state, RunState::Terminated { exit_code: 0, .. })
    }

    fn to_api(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("sluice-local://{}", self.image),
            container_id: self.pid.map(|pid| format!("process://{pid}")),
            state: Some(self.state.to_api()),
            last_state: Some(self.last.as_ref().map(RunState::to_api).unwrap_or_default()),
            restart_count: self.restart_count,
            ready: self.ready,
            started: Some(self.started && matches!(self.state, RunState::Running { .. })),
            ..Default::default()
        }
    }
}

/// Everything the agent knows about a pod on this node.
#[derive(Clone, Debug, Default)]
pub struct PodRuntime {
    /// Init containers in order.
    pub init: Vec<ContainerRuntime>,
    /// App containers.
    pub containers: Vec<ContainerRuntime>,
    /// The pod's address once its sandbox exists.
    pub pod_ip: Option<String>,
    /// The node's address.
    pub host_ip: String,
    /// When the agent accepted the pod.
    pub start_time: Option<Timestamp>,
    /// Set when the pod failed for good, with the reason.
    pub failed: Option<(String, String)>,
}

impl PodRuntime {
    /// The pod phase, as the kubelet derives it.
    pub fn phase(&self) -> &'static str {
        if self.failed.is_some() {
            return "Failed";
        }
        if !self.initialized() || self.containers.is_empty() {
            return "Pending";
        }
        let all_done = self
            .containers
            .iter()
            .all(|c| matches!(c.state, RunState::Terminated { .. }));
        if all_done {
            let all_ok = self.containers.iter().all(ContainerRuntime::succeeded);
            return if all_ok { "Succeeded" } else { "Failed" };
        }
        let any_ran = self
            .containers
            .iter()
            .any(|c| c.restart_count > 0 || !matches!(c.state, RunState::Waiting { .. }));
        if any_ran { "Running" } else { "Pending" }
    }

    /// Whether every init container completed.
    pub fn initialized(&self) -> bool {
        self.init.iter().all(ContainerRuntime::succeeded)
    }

    /// The full status; `previous` conditions keep their transition times when their
    /// status did not change.
    pub fn to_status(&self, previous: &[PodCondition], now: Timestamp) -> PodStatus {
        let all_ready = !self.containers.is_empty() && self.containers.iter().all(|c| c.ready);
        let phase = self.phase();
        let ready = all_ready && phase == "Running";
        let wanted = [
            ("PodReadyToStartContainers", self.pod_ip.is_some()),
            ("Initialized", self.initialized()),
            ("ContainersReady", ready),
            ("Ready", ready),
            ("PodScheduled", true),
        ];
        let old: BTreeMap<&str, &PodCondition> =
            previous.iter().map(|c| (c.type_.as_str(), c)).collect();
        let conditions = wanted
            .iter()
            .map(|(kind, ok)| {
                let status = if *ok { "True" } else { "False" };
                let since = match old.get(kind) {
                    Some(c) if c.status == status => c.last_transition_time.clone(),
                    _ => Some(Time(now)),
                };
                PodCondition {
                    type_: (*kind).into(),
                    status: status.into(),
                    last_transition_time: since,
                    ..Default::default()
                }
            })
            .collect();
        let (reason, message) = match &self.failed {
            Some((r, m)) => (Some(r.clone()), Some(m.clone())),
            None => (None, None),
        };
        PodStatus {
            phase: Some(phase.into()),
            reason,
            message,
            conditions: Some(conditions),
            host_ip: Some(self.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.host_ip.clone(),
            }]),
            pod_ip: self.pod_ip.clone(),
            pod_ips: self.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
            start_time: self.start_time.map(Time),
            init_container_statuses: Some(self.init.iter().map(ContainerRuntime::to_api).collect()),
            container_statuses: Some(
                self.containers
                    .iter()
                    .map(ContainerRuntime::to_api)
                    .collect(),
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str, ready: bool) -> ContainerRuntime {
        let mut c = ContainerRuntime::new(name, "img");
        c.state = RunState::Running {
            started: Timestamp::UNIX_EPOCH,
        };
        c.ready = ready;
        c.started = true;
        c
    }

    fn terminated(code: i32) -> RunState {
        RunState::Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started: Timestamp::UNIX_EPOCH,
            finished: Timestamp::UNIX_EPOCH,
        }
    }

    fn condition<'a>(status: &'a PodStatus, kind: &str) -> &'a PodCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
    }

    #[test]
    fn pending_until_init_completes_then_running() {
        let mut pod = PodRuntime {
            init: vec![ContainerRuntime::new("init", "img")],
            containers: vec![ContainerRuntime::new("app", "img")],
            ..Default::default()
        };
        assert_eq!(pod.phase(), "Pending");
        pod.init[0].state = terminated(0);
        assert_eq!(pod.phase(), "Pending");
        pod.containers[0] = running("app", false);
        assert_eq!(pod.phase(), "Running");
    }

    #[test]
    fn ready_only_when_every_container_is_ready() {
        let mut pod = PodRuntime {
            containers: vec![running("a", true), running("b", false)],
            pod_ip: Some("10.0.0.2".into()),
            ..Default::default()
        };
        let status = pod.to_status(&[], Timestamp::UNIX_EPOCH);
        assert_eq!(condition(&status, "Ready").status, "False");
        pod.containers[1].ready = true;
        let status = pod.to_status(&[], Timestamp::UNIX_EPOCH);
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let pod = PodRuntime {
            containers: vec![running("a", true)],
            ..Default::default()
        };
        let first = pod.to_status(&[], Timestamp::UNIX_EPOCH);
        let later = Timestamp::from_second(100).unwrap();
        let second = pod.to_status(first.conditions.as_ref().unwrap(), later);
        assert_eq!(
            condition(&second, "Ready").last_transition_time,
            Some(Time(Timestamp::UNIX_EPOCH))
        );
    }

    #[test]
    fn terminal_phases() {
        let mut a = ContainerRuntime::new("a", "img");
        a.state = terminated(0);
        let mut pod = PodRuntime {
            containers: vec![a],
            ..Default::default()
        };
        assert_eq!(pod.phase(), "Succeeded");
        pod.containers[0].state = terminated(2);
        assert_eq!(pod.phase(), "Failed");
    }
}
