//! Container probes (startup, readiness, liveness) over httpGet, tcpSocket and exec,
//! with the kubelet's timing and thresholds.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::launch::{Enter, LaunchSpec};

/// Which probe reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// `readinessProbe`: drives the container's `ready`.
    Readiness,
    /// `livenessProbe` or a failed `startupProbe`: the container must restart.
    Liveness,
    /// `startupProbe` succeeded: the container counts as started.
    Started,
}

/// A probe's verdict for one run of a container.
#[derive(Clone, Debug)]
pub struct ProbeEvent {
    /// Container name.
    pub container: String,
    /// Which run of the container (its restart count) the verdict is about.
    pub run: i32,
    /// Which probe.
    pub kind: ProbeKind,
    /// Healthy or not.
    pub ok: bool,
}

/// Where a container's probes go.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The container's process, for exec probes.
    pub pid: u32,
    /// The container's environment, for exec probes.
    pub env: Vec<(String, String)>,
    /// Where exec probe specs are written.
    pub spec_dir: PathBuf,
}

/// Runs `container`'s probes until aborted, sending each change of verdict to `tx`.
/// Readiness and liveness start once the startup probe (if any) has passed.
pub async fn supervise(
    container: Container,
    run: i32,
    target: ProbeTarget,
    tx: mpsc::Sender<ProbeEvent>,
) {
    let event = |kind, ok| ProbeEvent {
        container: container.name.clone(),
        run,
        kind,
        ok,
    };
    if let Some(startup) = &container.startup_probe {
        let started = until_threshold(&container, startup, &target, true).await;
        let kind = if started {
            ProbeKind::Started
        } else {
            ProbeKind::Liveness
        };
        let _ = tx.send(event(kind, started)).await;
        if !started {
            return;
        }
    } else {
        let _ = tx.send(event(ProbeKind::Started, true)).await;
    }
    let readiness = async {
        let Some(probe) = &container.readiness_probe else {
            let _ = tx.send(event(ProbeKind::Readiness, true)).await;
            return;
        };
        let (success_needed, failure_needed) = thresholds(probe);
        let mut state: Option<bool> = None;
        let (mut successes, mut failures) = (0, 0);
        sleep_secs(probe.initial_delay_seconds).await;
        loop {
            if run_probe(&container, probe, &target).await {
                successes += 1;
                failures = 0;
            } else {
                failures += 1;
                successes = 0;
            }
            let verdict = if successes >= success_needed {
                Some(true)
            } else if failures >= failure_needed || state.is_none() {
                Some(false)
            } else {
                state
            };
            if verdict != state {
                state = verdict;
                let _ = tx
                    .send(event(ProbeKind::Readiness, verdict == Some(true)))
                    .await;
            }
            sleep_secs(probe.period_seconds.or(Some(10))).await;
        }
    };
    let liveness = async {
        if let Some(probe) = &container.liveness_probe {
            sleep_secs(probe.initial_delay_seconds).await;
            if !until_threshold(&container, probe, &target, false).await {
                let _ = tx.send(event(ProbeKind::Liveness, false)).await;
            }
        }
    };
    tokio::join!(readiness, liveness);
}

/// With `want_success`, probes until `successThreshold` passes in a row (true) or
/// `failureThreshold` fail in a row (false); otherwise probes until failure.
async fn until_threshold(
    container: &Container,
    probe: &Probe,
    target: &ProbeTarget,
    want_success: bool,
) -> bool {
    let (success_needed, failure_needed) = thresholds(probe);
    if want_success {
        sleep_secs(probe.initial_delay_seconds).await;
    }
    let (mut successes, mut failures) = (0, 0);
    loop {
        if run_probe(container, probe, target).await {
            successes += 1;
            failures = 0;
            if want_success && successes >= success_needed {
                return true;
            }
        } else {
            failures += 1;
            successes = 0;
            if failures >= failure_needed {
                return false;
            }
        }
        sleep_secs(probe.period_seconds.or(Some(10))).await;
    }
}

fn thresholds(probe: &Probe) -> (i32, i32) {
    (
        probe.success_threshold.unwrap_or(1).max(1),
        probe.failure_threshold.unwrap_or(3).max(1),
    )
}

async fn sleep_secs(seconds: Option<i32>) {
    let s = seconds.unwrap_or(0).max(0) as u64;
    if s > 0 {
        tokio::time::sleep(Duration::from_secs(s)).await;
    }
}

/// One probe attempt within the probe's timeout.
async fn run_probe(container: &Container, probe: &Probe, target: &ProbeTarget) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let attempt = async {
        if let Some(http) = &probe.http_get {
            let port = resolve_port(container, &http.port)?;
            let host = http
                .host
                .clone()
                .unwrap_or_else(|| target.pod_ip.to_string());
            let scheme = http
                .scheme
                .as_deref()
                .unwrap_or("HTTP")
                .to_ascii_lowercase();
            let path = http.path.as_deref().unwrap_or("/");
            let url = format!("{scheme}://{host}:{port}{path}");
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .danger_accept_invalid_certs(true)
                .build()
                .ok()?;
            let mut request = client.get(url).header("User-Agent", "kube-probe/1.35");
            for h in http.http_headers.iter().flatten() {
                request = request.header(&h.name, &h.value);
            }
            let status = request.send().await.ok()?.status();
            Some(status.is_success() || status.is_redirection())
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = resolve_port(container, &tcp.port)?;
            let host = tcp
                .host
                .clone()
                .unwrap_or_else(|| target.pod_ip.to_string());
            Some(TcpStream::connect((host.as_str(), port)).await.is_ok())
        } else if let Some(grpc) = &probe.grpc {
            // gRPC health checking is approximated by a TCP connect to its port.
            let port = u16::try_from(grpc.port).ok()?;
            Some(TcpStream::connect((target.pod_ip, port)).await.is_ok())
        } else if let Some(exec) = &probe.exec {
            exec_probe(exec.command.clone().unwrap_or_default(), container, target).await
        } else {
            Some(false)
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

async fn exec_probe(
    argv: Vec<String>,
    container: &Container,
    target: &ProbeTarget,
) -> Option<bool> {
    let spec = LaunchSpec {
        enter: Enter::Join {
            pid: target.pid as i32,
        },
        argv,
        env: target.env.clone(),
        working_dir: container
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into())
            .into(),
    };
    let file = target
        .spec_dir
        .join(format!("probe-{}.json", container.name));
    std::fs::write(&file, serde_json::to_vec(&spec).ok()?).ok()?;
    let exe = std::env::current_exe().ok()?;
    let status = tokio::process::Command::new(exe)
        .arg("launch")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .ok()?;
    Some(status.success())
}

/// A probe port: a number, or the name of one of the container's ports.
pub fn resolve_port(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn resolves_named_ports() {
        let c = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            resolve_port(&c, &IntOrString::String("http".into())),
            Some(8080)
        );
        assert_eq!(resolve_port(&c, &IntOrString::Int(9000)), Some(9000));
        assert_eq!(resolve_port(&c, &IntOrString::String("grpc".into())), None);
    }
}
