//! Pod network sandboxes: one network namespace per pod, joined to the cluster's
//! bridge by a veth pair, with the pod's address on `eth0` and a default route
//! through the bridge.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use tokio::process::Command;

use crate::error::{Error, Result};
use crate::ipam::Cidr;

/// Prefix of every network namespace the agent creates; `make cluster-down` removes
/// exactly these.
pub const NETNS_PREFIX: &str = "sluice-";

/// The network of one pod.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// Name of the network namespace (under `/var/run/netns`).
    pub netns: String,
    /// Host end of the veth pair.
    pub host_veth: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
}

impl Sandbox {
    /// Names the sandbox of the pod with `uid`.
    pub fn for_pod(uid: &str, ip: Ipv4Addr) -> Self {
        let compact: String = uid.chars().filter(|c| *c != '-').take(11).collect();
        Self {
            netns: format!("{NETNS_PREFIX}{uid}"),
            host_veth: format!("slv{compact}"),
            ip,
        }
    }

    /// Path of the namespace file that `setns` opens.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.netns)
    }

    /// Creates the namespace, veth pair, address and routes; a half-made sandbox
    /// from an earlier attempt is replaced.
    pub async fn create(&self, bridge: &str, cidr: Cidr) -> Result<()> {
        self.destroy().await?;
        let ns = self.netns.as_str();
        let veth = self.host_veth.as_str();
        let addr = format!("{}/{}", self.ip, cidr.prefix);
        let gateway = cidr.gateway().to_string();
        ip(&["netns", "add", ns]).await?;
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])
        .await?;
        ip(&["link", "set", veth, "master", bridge]).await?;
        // Hairpin lets a pod reach itself through its own Service address.
        ip(&["link", "set", veth, "type", "bridge_slave", "hairpin", "on"]).await?;
        ip(&["link", "set", veth, "up"]).await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]).await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", ns, "route", "add", "default", "via", &gateway]).await?;
        Ok(())
    }

    /// Removes the namespace (and with it the veth pair); absent is fine.
    pub async fn destroy(&self) -> Result<()> {
        if self.netns_path().exists() {
            ip(&["netns", "del", &self.netns]).await?;
        }
        Ok(())
    }
}

/// Runs `ip` with `args`, failing with its stderr.
async fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(Error::io("running ip"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: format!("ip {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits() {
        let s = Sandbox::for_pod("0f8c2a9e-1234-4abc-9def-001122334455", Ipv4Addr::LOCALHOST);
        assert!(s.host_veth.len() <= 15, "{}", s.host_veth);
        assert_eq!(s.netns, "sluice-0f8c2a9e-1234-4abc-9def-001122334455");
    }
}
