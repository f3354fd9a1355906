//! One task per pod: creates its sandbox and volumes, runs init containers in order,
//! then its containers with probes and restarts, reports status, and on deletion
//! stops everything (SIGTERM, then SIGKILL after the grace period).

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodStatus};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::context::NodeContext;
use crate::env::{EnvContext, resolve_env};
use crate::error::{Error, Result};
use crate::etc::write_pod_etc;
use crate::launch::{Enter, LaunchSpec};
use crate::network::Sandbox;
use crate::probe::{ProbeEvent, ProbeKind, ProbeTarget, supervise};
use crate::process::{signal_group, spawn};
use crate::refs::PodRefs;
use crate::status::{ContainerRuntime, PodRuntime, RunState};
use crate::termination::MessageSource;
use crate::volumes::{HostVolume, Mount, VolumeContext, container_mounts, materialize};

/// What the agent tells a pod worker.
#[derive(Debug)]
pub enum Message {
    /// The pod changed.
    Update(Box<Pod>),
    /// The pod is gone from the API: stop everything, nothing left to delete.
    Gone,
    /// The agent is stopping: stop the containers quickly and keep the pod object.
    Shutdown,
}

/// A container process exited.
struct Exit {
    name: String,
    pid: u32,
    status: std::io::Result<ExitStatus>,
}

/// A running process of a container.
struct Process {
    pid: u32,
    probes: Option<JoinHandle<()>>,
    kill_at: Option<Instant>,
    message: MessageSource,
}

/// Starts the worker of `pod`; it reports its UID on `done` when it has finished.
pub fn start(
    ctx: Arc<NodeContext>,
    pod: Pod,
    done: mpsc::UnboundedSender<String>,
) -> mpsc::UnboundedSender<Message> {
    let (tx, rx) = mpsc::unbounded_channel();
    let uid = pod.uid().unwrap_or_default();
    tokio::spawn(async move {
        let worker = Worker::new(ctx, pod);
        worker.run(rx).await;
        let _ = done.send(uid);
    });
    tx
}

struct Worker {
    ctx: Arc<NodeContext>,
    pod: Pod,
    uid: String,
    rt: PodRuntime,
    sandbox: Option<Sandbox>,
    /// The pod's volumes, once all of them could be made.
    volumes: Option<BTreeMap<String, HostVolume>>,
    etc_mounts: Vec<Mount>,
    refs: PodRefs,
    processes: BTreeMap<String, Process>,
    not_before: BTreeMap<String, Instant>,
    retry_setup_at: Instant,
    conditions: Vec<PodCondition>,
    sent: Option<PodStatus>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits_rx: mpsc::UnboundedReceiver<Exit>,
    probes_tx: mpsc::Sender<ProbeEvent>,
    probes_rx: mpsc::Receiver<ProbeEvent>,
}

impl Worker {
    fn new(ctx: Arc<NodeContext>, pod: Pod) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let runtime =
            |c: &Container| ContainerRuntime::new(&c.name, c.image.as_deref().unwrap_or_default());
        let rt = PodRuntime {
            init: spec.init_containers.iter().flatten().map(runtime).collect(),
            containers: spec.containers.iter().map(runtime).collect(),
            host_ip: ctx.host_ip().to_string(),
            start_time: Some(Timestamp::now()),
            ..Default::default()
        };
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (probes_tx, probes_rx) = mpsc::channel(64);
        Self {
            uid: pod.uid().unwrap_or_default(),
            conditions: pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default(),
            ctx,
            pod,
            rt,
            sandbox: None,
            volumes: None,
            etc_mounts: Vec::new(),
            refs: PodRefs::default(),
            processes: BTreeMap::new(),
            not_before: BTreeMap::new(),
            retry_setup_at: Instant::now(),
            sent: None,
            exits_tx,
            exits_rx,
            probes_tx,
            probes_rx,
        }
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.namespace().unwrap_or_default(),
            self.pod.name_any()
        )
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Message>) {
        info!(pod = %self.key(), "accepted pod");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let end = loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some(Message::Update(pod)) => self.pod = *pod,
                    Some(Message::Gone) | None => break Message::Gone,
                    Some(Message::Shutdown) => break Message::Shutdown,
                },
                Some(exit) = self.exits_rx.recv() => self.on_exit(exit),
                Some(event) = self.probes_rx.recv() => self.on_probe(event),
                _ = tick.tick() => {}
            }
            if self.pod.metadata.deletion_timestamp.is_some() {
                break Message::Update(Box::new(self.pod.clone()));
            }
            self.progress().await;
            self.publish().await;
        };
        let grace = match end {
            Message::Shutdown => Duration::from_secs(3),
            _ => self.grace_period(),
        };
        self.stop_all(grace).await;
        if let Message::Update(_) = end {
            self.record_deleted().await;
        }
        self.teardown().await;
        if let Message::Update(_) = end {
            self.delete_from_api().await;
        }
        info!(pod = %self.key(), "pod stopped");
    }

    /// Drives the pod forward: sandbox, init containers, containers, restarts, kills.
    async fn progress(&mut self) {
        let now = Instant::now();
        for (name, process) in &self.processes {
            if process.kill_at.is_some_and(|at| at <= now) {
                warn!(pod = %self.key(), container = %name, "grace period over, sending SIGKILL");
                signal_group(process.pid, Signal::SIGKILL);
            }
        }
        if matches!(self.rt.phase(), "Succeeded" | "Failed") {
            if self.sandbox.is_some() && self.processes.is_empty() {
                self.teardown().await;
            }
            return;
        }
        if self.sandbox.is_none() || self.volumes.is_none() {
            if now < self.retry_setup_at {
                return;
            }
            if let Err(e) = self.setup().await {
                warn!(pod = %self.key(), error = %e, "pod sandbox setup failed; retrying");
                for c in self.rt.init.iter_mut().chain(self.rt.containers.iter_mut()) {
                    c.state = RunState::waiting("ContainerCreating", Some(e.to_string()));
                }
                self.retry_setup_at = now + Duration::from_secs(5);
                return;
            }
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        if let Some(next) = self.rt.init.iter().position(|c| !c.succeeded()) {
            let waiting = matches!(self.rt.init[next].state, RunState::Waiting { .. });
            if waiting && !self.processes.contains_key(&self.rt.init[next].name) {
                let container = spec.init_containers.unwrap_or_default()[next].clone();
                self.start_container(&container, true);
            }
            return;
        }
        for container in &spec.containers {
            let idle =
                self.rt.containers.iter().any(|c| {
                    c.name == container.name && matches!(c.state, RunState::Waiting { .. })
                });
            if idle && !self.processes.contains_key(&container.name) {
                self.start_container(container, false);
            }
        }
    }

    /// Leases an address and builds the network namespace (once), then fetches the
    /// referenced objects and builds the volumes. Until the volumes are made, every
    /// retry fetches again, as the kubelet keeps retrying a mount: a ConfigMap or
    /// Secret may be created and a claim bound later.
    async fn setup(&mut self) -> Result<()> {
        let dir = self.ctx.paths.pod_dir(&self.uid);
        if self.sandbox.is_none() {
            let ip = self
                .ctx
                .ipam
                .lock()
                .expect("ipam lock")
                .allocate(&self.uid)?;
            let sandbox = Sandbox::for_pod(&self.uid, ip);
            sandbox.create(&self.ctx.bridge, self.ctx.pod_cidr).await?;
            self.rt.pod_ip = Some(ip.to_string());
            self.sandbox = Some(sandbox);
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
            self.etc_mounts = write_pod_etc(&dir, ip, &self.pod.name_any())?;
        }
        self.refs = PodRefs::fetch(&self.ctx.client, &self.pod).await?;
        let pod = self.pod_with_status();
        let volume_ctx = VolumeContext {
            client: &self.ctx.client,
            refs: &self.refs,
            node_cpu: self.ctx.cpu,
            node_memory: self.ctx.memory,
        };
        self.volumes = Some(materialize(&pod, &dir.join("volumes"), &volume_ctx).await?);
        Ok(())
    }

    /// The pod object with the status fields the downward API reads filled in.
    fn pod_with_status(&self) -> Pod {
        let mut pod = self.pod.clone();
        pod.status = Some(self.rt.to_status(&self.conditions, Timestamp::now()));
        pod
    }

    fn start_container(&mut self, container: &Container, init: bool) {
        let name = container.name.clone();
        if self
            .not_before
            .get(&name)
            .is_some_and(|at| *at > Instant::now())
        {
            return;
        }
        let result = self.spawn_container(container, init);
        let ctx = self.ctx.clone();
        let Some(rt) = self.runtime_mut(&name) else {
            return;
        };
        match result {
            Ok(pid) => {
                info!(container = %name, pid, "container started");
                rt.state = RunState::Running {
                    started: Timestamp::now(),
                };
                rt.pid = Some(pid);
                rt.ready = false;
                rt.started = init;
            }
            Err(e) => {
                warn!(container = %name, error = %e, "container could not start");
                rt.state = RunState::waiting("CreateContainerConfigError", Some(e.to_string()));
                let delay = ctx.backoff(rt.restart_count);
                self.not_before.insert(name, Instant::now() + delay);
            }
        }
    }

    /// Starts the container's process and its exit watcher and probes; returns its PID.
    fn spawn_container(&mut self, container: &Container, init: bool) -> Result<u32> {
        let sandbox = self
            .sandbox
            .as_ref()
            .ok_or_else(|| Error::Config("no sandbox".into()))?;
        let pod = self.pod_with_status();
        let env_ctx = EnvContext {
            pod: &pod,
            refs: &self.refs,
            node_cpu: self.ctx.cpu,
            node_memory: self.ctx.memory,
        };
        let mut env = base_env(&pod);
        env.extend(resolve_env(container, &env_ctx)?);
        let vars: BTreeMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let argv: Vec<String> = self
            .ctx
            .images
            .argv(container)?
            .iter()
            .map(|a| crate::env::expand(a, &vars))
            .collect();
        let mounts: Vec<Mount> = self
            .etc_mounts
            .iter()
            .cloned()
            .chain(container_mounts(
                container,
                self.volumes
                    .as_ref()
                    .ok_or_else(|| Error::Config("no volumes".into()))?,
            )?)
            .collect();
        let spec = LaunchSpec {
            enter: Enter::Container {
                netns: sandbox.netns_path(),
                hostname: pod.name_any(),
                mounts: mounts.clone(),
            },
            argv,
            env: env.clone(),
            working_dir: container
                .working_dir
                .clone()
                .unwrap_or_else(|| "/".into())
                .into(),
        };
        let restart = self
            .runtime(&container.name)
            .map(|c| c.restart_count)
            .unwrap_or_default();
        let dir = self.ctx.paths.pod_dir(&self.uid);
        let log_key = format!(
            "{}_{}_{}",
            pod.namespace().unwrap_or_default(),
            pod.name_any(),
            self.uid
        );
        let log = self.ctx.paths.log_file(&log_key, &container.name, restart);
        let message = MessageSource::new(container, &mounts, &log);
        message.clear();
        let mut child = spawn(
            &self.ctx.paths,
            &spec,
            &dir.join(format!("{}.spec.json", container.name)),
            &log,
            &dir.join(format!("{}.pid", container.name)),
        )?;
        let pid = child
            .id()
            .ok_or_else(|| Error::Config("container exited at once".into()))?;
        let exits = self.exits_tx.clone();
        let name = container.name.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = exits.send(Exit { name, pid, status });
        });
        let probes = (!init).then(|| {
            let target = ProbeTarget {
                pod_ip: sandbox.ip,
                pid,
                env,
                spec_dir: dir.clone(),
            };
            tokio::spawn(supervise(
                container.clone(),
                restart,
                target,
                self.probes_tx.clone(),
            ))
        });
        self.processes.insert(
            container.name.clone(),
            Process {
                pid,
                probes,
                kill_at: None,
                message,
            },
        );
        Ok(pid)
    }

    fn on_exit(&mut self, exit: Exit) {
        let (exit_code, signal) = exit_code(&exit);
        let current = self
            .processes
            .get(&exit.name)
            .is_some_and(|p| p.pid == exit.pid);
        let mut message = None;
        if current && let Some(process) = self.processes.remove(&exit.name) {
            message = process.message.read(exit_code);
            if let Some(probes) = process.probes {
                probes.abort();
            }
        }
        let policy = self.restart_policy();
        let init = self.rt.init.iter().any(|c| c.name == exit.name);
        let ctx = self.ctx.clone();
        let key = self.key();
        let Some(rt) = self.runtime_mut(&exit.name) else {
            return;
        };
        if rt.pid != Some(exit.pid) {
            return;
        }
        let started = match rt.state {
            RunState::Running { started } => started,
            _ => Timestamp::now(),
        };
        let terminated = RunState::Terminated {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message,
            started,
            finished: Timestamp::now(),
        };
        info!(pod = %key, container = %exit.name, exit_code, "container exited");
        rt.pid = None;
        rt.ready = false;
        rt.started = false;
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => exit_code != 0,
            _ => !(init && exit_code == 0),
        };
        if !restart {
            rt.state = terminated;
            if init && exit_code != 0 {
                let message = format!("init container {} exited with {exit_code}", exit.name);
                self.rt.failed = Some(("InitContainerFailed".into(), message));
            }
            return;
        }
        let delay = ctx.backoff(rt.restart_count);
        rt.last = Some(terminated);
        rt.restart_count += 1;
        let reason = if delay > ctx.backoff_base {
            "CrashLoopBackOff"
        } else {
            "ContainerCreating"
        };
        rt.state = RunState::waiting(reason, Some(format!("restarting in {}s", delay.as_secs())));
        self.not_before.insert(exit.name, Instant::now() + delay);
    }

    fn on_probe(&mut self, event: ProbeEvent) {
        let grace = self.grace_period();
        let pid = self.processes.get(&event.container).map(|p| p.pid);
        let Some(rt) = self.runtime_mut(&event.container) else {
            return;
        };
        if rt.restart_count != event.run || rt.pid.is_none() {
            return;
        }
        match event.kind {
            ProbeKind::Readiness => rt.ready = event.ok && rt.started,
            ProbeKind::Started => rt.started = event.ok,
            ProbeKind::Liveness => {
                warn!(container = %event.container, "liveness probe failed; restarting container");
                if let Some(pid) = pid {
                    signal_group(pid, Signal::SIGTERM);
                    if let Some(p) = self.processes.get_mut(&event.container) {
                        p.kill_at = Some(Instant::now() + grace);
                    }
                }
            }
        }
    }

    /// Patches the pod's status when it differs from what was last sent.
    async fn publish(&mut self) {
        let status = self.rt.to_status(&self.conditions, Timestamp::now());
        if self.sent.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({ "status": status });
        match api
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                self.conditions = status.conditions.clone().unwrap_or_default();
                self.sent = Some(status);
            }
            Err(e) => warn!(pod = %self.key(), error = %e, "status update failed"),
        }
    }

    /// SIGTERM to every container, SIGKILL to what is left after `grace`.
    async fn stop_all(&mut self, grace: Duration) {
        for p in self.processes.values() {
            signal_group(p.pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let mut killed = false;
        while !self.processes.is_empty() {
            let wait_until = if killed {
                Instant::now() + Duration::from_secs(5)
            } else {
                deadline
            };
            match tokio::time::timeout_at(wait_until, self.exits_rx.recv()).await {
                Ok(Some(exit)) => {
                    let Some(process) = self.processes.remove(&exit.name) else {
                        continue;
                    };
                    if let Some(probes) = process.probes {
                        probes.abort();
                    }
                    let (exit_code, signal) = self::exit_code(&exit);
                    let message = process.message.read(exit_code);
                    if let Some(rt) = self.runtime_mut(&exit.name)
                        && rt.pid == Some(exit.pid)
                        && let RunState::Running { started } = rt.state
                    {
                        rt.state = RunState::Terminated {
                            exit_code,
                            signal,
                            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                            message,
                            started,
                            finished: Timestamp::now(),
                        };
                        rt.pid = None;
                        rt.ready = false;
                    }
                }
                Ok(None) => break,
                Err(_) if !killed => {
                    for p in self.processes.values() {
                        signal_group(p.pid, Signal::SIGKILL);
                    }
                    killed = true;
                }
                Err(_) => break,
            }
        }
    }

    /// Publishes a deleted pod's last status, as the kubelet does before the
    /// object goes: its stopped containers terminated (set by `stop_all`), and
    /// a terminal phase, `Failed` when it had not finished. A controller that
    /// waits for a terminal phase before replacing a pod (a Job's
    /// `podReplacementPolicy: Failed`) can then go on.
    async fn record_deleted(&mut self) {
        if !matches!(self.rt.phase(), "Succeeded" | "Failed") {
            let message = "the pod was deleted before it ended".to_string();
            self.rt.failed = Some(("Terminated".into(), message));
        }
        self.publish().await;
    }

    /// Removes the network namespace, the address lease and the pod's files (logs stay).
    async fn teardown(&mut self) {
        if let Some(sandbox) = self.sandbox.take()
            && let Err(e) = sandbox.destroy().await
        {
            warn!(pod = %self.key(), error = %e, "removing network namespace failed");
        }
        self.ctx.ipam.lock().expect("ipam lock").release(&self.uid);
        let _ = std::fs::remove_dir_all(self.ctx.paths.pod_dir(&self.uid));
    }

    /// Finishes a graceful deletion, as the kubelet does once containers stopped.
    async fn delete_from_api(&self) {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &self.pod.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.pod.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => warn!(pod = %self.key(), error = %e, "final pod deletion failed"),
        }
    }

    fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or(self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        Duration::from_secs(seconds.max(0) as u64)
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn runtime(&self, name: &str) -> Option<&ContainerRuntime> {
        self.rt
            .init
            .iter()
            .chain(&self.rt.containers)
            .find(|c| c.name == name)
    }

    fn runtime_mut(&mut self, name: &str) -> Option<&mut ContainerRuntime> {
        self.rt
            .init
            .iter_mut()
            .chain(self.rt.containers.iter_mut())
            .find(|c| c.name == name)
    }
}

/// Variables every container gets before its own: a usable `PATH`, `HOME` and the
/// pod's `HOSTNAME`, as a container runtime provides them.
fn base_env(pod: &Pod) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    vec![
        ("PATH".into(), path),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), pod.name_any()),
    ]
}

/// A process's exit code (128 + the signal for a signalled one) and signal.
fn exit_code(exit: &Exit) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match &exit.status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            _ => (-1, None),
        },
        Err(_) => (-1, None),
    }
}
