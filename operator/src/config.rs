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
}

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
