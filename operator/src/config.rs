//! Operator configuration, from flags or environment variables.

use std::net::SocketAddr;

/// Defaults the operator applies to every InferenceService it builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildConfig {
    /// Server image for `device: cpu` when the spec names none.
    pub server_image: String,
    /// Server image for `device: cuda` when the spec names none.
    pub server_cuda_image: String,
    /// DNS suffix of Services, for `status.url`.
    pub cluster_domain: String,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            server_image: DEFAULT_SERVER_IMAGE.into(),
            server_cuda_image: DEFAULT_SERVER_CUDA_IMAGE.into(),
            cluster_domain: "cluster.local".into(),
        }
    }
}

/// Default CPU server image (the local cluster maps any image named `sluice-server`
/// to the locally built binary).
pub const DEFAULT_SERVER_IMAGE: &str = "ghcr.io/sluice-dev/sluice-server:0.1.0";
/// Default CUDA server image.
pub const DEFAULT_SERVER_CUDA_IMAGE: &str = "ghcr.io/sluice-dev/sluice-server:0.1.0-cuda";

/// Command-line flags of `sluice-operator`; each also reads an environment variable.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "sluice-operator",
    version,
    about = "Reconciles InferenceServices into served ONNX models"
)]
pub struct Cli {
    /// Default model server image for `device: cpu`.
    #[arg(long, env = "SLUICE_SERVER_IMAGE", default_value = DEFAULT_SERVER_IMAGE)]
    pub server_image: String,
    /// Default model server image for `device: cuda`.
    #[arg(long, env = "SLUICE_SERVER_CUDA_IMAGE", default_value = DEFAULT_SERVER_CUDA_IMAGE)]
    pub server_cuda_image: String,
    /// Prometheus HTTP API base URL (read by metric-driven rollouts and autoscaling).
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Cluster DNS domain used in `status.url`.
    #[arg(long, env = "SLUICE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoints.
    #[arg(long, env = "SLUICE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Run only while holding the leader Lease (turn off for a single local replica).
    #[arg(long, env = "SLUICE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the leader election Lease.
    #[arg(long, env = "SLUICE_LEASE_NAME", default_value = "sluice-operator")]
    pub lease_name: String,
    /// Namespace of the leader election Lease; the pod's namespace (`POD_NAMESPACE`)
    /// or the kubeconfig's default namespace when absent.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Identity in the Lease; the pod name (`POD_NAME`) or the host name when absent.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log format on stderr: `text` or `json`; `RUST_LOG` filters.
    #[arg(long, env = "SLUICE_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Namespaces to reconcile, comma-separated. Unset, the operator reconciles
    /// every namespace under a ClusterRole; listed, it needs a Role in each of
    /// them and reads nothing cluster-scoped (so no ServingPolicy applies).
    #[arg(long, env = "SLUICE_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
}

impl Cli {
    /// The part of the configuration that shapes built objects.
    pub fn build_config(&self) -> BuildConfig {
        BuildConfig {
            server_image: self.server_image.clone(),
            server_cuda_image: self.server_cuda_image.clone(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }

    /// The namespaces `--watch-namespaces` lists, checked: each a DNS label,
    /// none twice; empty entries (a trailing comma) are skipped.
    pub fn watch_scope(&self) -> Result<WatchScope, InvalidNamespace> {
        let mut listed: Vec<String> = Vec::new();
        for name in self.watch_namespaces.iter().map(|n| n.trim()) {
            if name.is_empty() || listed.iter().any(|n| n == name) {
                continue;
            }
            if !is_dns_label(name) {
                return Err(InvalidNamespace(name.to_string()));
            }
            listed.push(name.to_string());
        }
        Ok(if listed.is_empty() {
            WatchScope::Cluster
        } else {
            WatchScope::Namespaces(listed)
        })
    }
}

/// A `--watch-namespaces` entry that cannot name a namespace.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--watch-namespaces: {0:?} is not a namespace name (lower-case letters, digits and '-', at most 63, starting and ending alphanumeric)"
)]
pub struct InvalidNamespace(pub String);

/// RFC 1123 label, what Kubernetes requires of a namespace name.
fn is_dns_label(name: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.len() <= 63
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
        && name.chars().all(|c| alphanumeric(c) || c == '-')
}

/// Which namespaces the operator reconciles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace, under a ClusterRole. A namespace's label selects the
    /// ServingPolicy whose defaults apply (the operator reads Namespaces and
    /// ServingPolicies, both cluster-scoped).
    Cluster,
    /// Only these namespaces, each under a Role. The operator reads nothing
    /// cluster-scoped, so ServingPolicy defaults do not apply; its admission
    /// guardrails still do, as the API server enforces them.
    Namespaces(Vec<String>),
}

impl WatchScope {
    /// The namespaces to watch one by one; `None` stands for all of them.
    pub fn namespaces(&self) -> Vec<Option<&str>> {
        match self {
            WatchScope::Cluster => vec![None],
            WatchScope::Namespaces(listed) => listed.iter().map(|n| Some(n.as_str())).collect(),
        }
    }

    /// Whether ServingPolicies (cluster-scoped) are read and applied.
    pub fn applies_serving_policies(&self) -> bool {
        *self == WatchScope::Cluster
    }
}

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn scope(args: &[&str]) -> Result<WatchScope, InvalidNamespace> {
        let mut argv = vec!["sluice-operator"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().watch_scope()
    }

    #[test]
    fn without_the_flag_every_namespace_is_watched() {
        assert_eq!(scope(&[]), Ok(WatchScope::Cluster));
        assert!(WatchScope::Cluster.applies_serving_policies());
        assert_eq!(WatchScope::Cluster.namespaces(), vec![None]);
    }

    #[test]
    fn listed_namespaces_are_watched_one_by_one_without_policies() {
        let listed = scope(&["--watch-namespaces", "team-a, team-b,,team-a"]).unwrap();
        assert_eq!(
            listed,
            WatchScope::Namespaces(vec!["team-a".into(), "team-b".into()])
        );
        assert_eq!(listed.namespaces(), vec![Some("team-a"), Some("team-b")]);
        assert!(!listed.applies_serving_policies());
        assert_eq!(scope(&["--watch-namespaces", ","]), Ok(WatchScope::Cluster));
    }

    #[test]
    fn a_name_that_is_no_namespace_is_refused_by_name() {
        for bad in ["Team-A", "-a", "a-", "a_b", &"a".repeat(64)] {
            let error = scope(&["--watch-namespaces", &format!("ok,{bad}")]).unwrap_err();
            assert_eq!(error, InvalidNamespace(bad.to_string()));
            assert!(error.to_string().contains(bad));
        }
    }
}
