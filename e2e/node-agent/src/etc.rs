//! The `/etc/hosts` and `/etc/resolv.conf` each container sees, as the kubelet
//! manages them: the pod's own name resolves to its address, and since the local
//! cluster has no cluster DNS, lookups fail at once instead of waiting on a
//! nameserver that the pod network cannot reach.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::{Error, Result};
use crate::volumes::Mount;

/// Writes the pod's `hosts` and `resolv.conf` into `dir` and returns their mounts.
pub fn write_pod_etc(dir: &Path, ip: Ipv4Addr, hostname: &str) -> Result<Vec<Mount>> {
    let files = [
        ("hosts", "/etc/hosts", hosts(ip, hostname)),
        ("resolv.conf", "/etc/resolv.conf", RESOLV_CONF.to_owned()),
    ];
    files
        .into_iter()
        .map(|(name, target, content)| {
            let source = dir.join(name);
            std::fs::write(&source, content)
                .map_err(Error::io(format!("writing {}", source.display())))?;
            Ok(Mount {
                source,
                target: target.into(),
                read_only: true,
            })
        })
        .collect()
}

const RESOLV_CONF: &str = "# Sluice local cluster: no cluster DNS; use Service ClusterIPs.\n\
nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";

fn hosts(ip: Ipv4Addr, hostname: &str) -> String {
    format!(
        "# Kubernetes-managed hosts file (sluice node agent).\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_maps_pod_name_to_pod_ip() {
        let text = hosts(Ipv4Addr::new(10, 213, 0, 9), "web-1");
        assert!(text.contains("10.213.0.9\tweb-1\n"));
        assert!(text.contains("127.0.0.1\tlocalhost"));
    }
}
