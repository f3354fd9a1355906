//! The Node object: registration with capacity and addresses, and the heartbeat
//! that keeps it Ready.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tracing::warn;

use crate::context::NodeContext;
use crate::error::Result;

/// Pods the node accepts, as the kubelet's default.
const MAX_PODS: &str = "110";

/// Creates the Node if it does not exist and marks it Ready.
pub async fn register(ctx: &NodeContext, kubelet_version: &str, since: Timestamp) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    if nodes.get_opt(&ctx.node_name).await?.is_none() {
        let labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), ctx.node_name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            (
                "kubernetes.io/arch".to_string(),
                std::env::consts::ARCH.replace("x86_64", "amd64"),
            ),
        ]);
        let node = Node {
            metadata: ObjectMeta {
                name: Some(ctx.node_name.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        nodes.create(&PostParams::default(), &node).await?;
    }
    heartbeat(ctx, kubelet_version, since).await
}

/// Reports status every `period` until the task is dropped; `since` is when the
/// agent became ready.
pub async fn keep_alive(
    ctx: &NodeContext,
    kubelet_version: &str,
    since: Timestamp,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = heartbeat(ctx, kubelet_version, since).await {
            warn!(error = %e, "node heartbeat failed");
        }
    }
}

async fn heartbeat(ctx: &NodeContext, kubelet_version: &str, since: Timestamp) -> Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let status = node_status(ctx, kubelet_version, since, Timestamp::now());
    let patch = serde_json::json!({ "status": status });
    nodes
        .patch_status(
            &ctx.node_name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await?;
    Ok(())
}

fn node_status(
    ctx: &NodeContext,
    kubelet_version: &str,
    since: Timestamp,
    now: Timestamp,
) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(ctx.cpu.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", ctx.memory / 1024)),
        ),
        ("pods".to_string(), Quantity(MAX_PODS.into())),
        ("ephemeral-storage".to_string(), Quantity("64Gi".into())),
    ]);
    let condition = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(since)),
    };
    let host = ctx.host_ip().to_string();
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "enough memory",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "enough PIDs",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "sluice node agent is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: host,
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: ctx.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(ctx.log_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.replace("x86_64", "amd64"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: format!("sluice-process://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            kube_proxy_version: kubelet_version.into(),
            kubelet_version: kubelet_version.into(),
            machine_id: read_trimmed("/etc/machine-id"),
            operating_system: "linux".into(),
            os_image: "Sluice local cluster".into(),
            system_uuid: read_trimmed("/proc/sys/kernel/random/boot_id"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
