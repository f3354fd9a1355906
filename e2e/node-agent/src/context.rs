//! What every pod worker on this node shares.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use kube::Client;

use crate::image::ImageMap;
use crate::ipam::{Cidr, Ipam};
use crate::process::Paths;

/// Node-wide settings and shared state.
pub struct NodeContext {
    /// API client.
    pub client: Client,
    /// This node's name.
    pub node_name: String,
    /// The bridge pods attach to.
    pub bridge: String,
    /// The pod range; its gateway address is the node's address.
    pub pod_cidr: Cidr,
    /// Pod address leases.
    pub ipam: Mutex<Ipam>,
    /// Image to local binary mapping.
    pub images: ImageMap,
    /// State and log directories.
    pub paths: Paths,
    /// CPUs of the node.
    pub cpu: u64,
    /// Memory of the node in bytes.
    pub memory: u64,
    /// First restart delay of a crashing container; doubles per restart.
    pub backoff_base: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
    /// Port of the log endpoint advertised in the Node's status (0: none).
    pub log_port: u16,
}

impl NodeContext {
    /// The node's address: the bridge's, the pods' gateway.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.pod_cidr.gateway()
    }

    /// The delay before restart number `restarts + 1`.
    pub fn backoff(&self, restarts: i32) -> Duration {
        let factor = 2u32.saturating_pow(restarts.clamp(0, 20) as u32);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}
