//! Command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Sluice's node agent: a kubelet for the local cluster that runs each container as
/// a host process.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register the node and run the pods bound to it (uses KUBECONFIG).
    Run(Box<RunArgs>),
    /// Internal: enter a pod's namespaces and exec a container (used by `run`).
    #[command(hide = true)]
    Launch {
        /// The launch spec written by the agent.
        spec: PathBuf,
    },
}

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Name of the Node object.
    #[arg(long, default_value = "sluice-node")]
    pub node_name: String,
    /// Directory for per-pod state (volumes, launch specs, PID files).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Directory for container logs.
    #[arg(long)]
    pub log_dir: PathBuf,
    /// Bridge that pod veths join; it must already carry the pod range's gateway.
    #[arg(long, default_value = "sluice0")]
    pub bridge: String,
    /// Pod address range (IPv4 CIDR); its first address is the bridge's.
    #[arg(long, default_value = "10.213.0.0/24")]
    pub pod_cidr: String,
    /// `IMAGE_FRAGMENT=BINARY`: images whose name contains the fragment run the binary
    /// as their entrypoint. Repeatable.
    #[arg(long = "image-map", value_parser = parse_mapping)]
    pub image_map: Vec<(String, PathBuf)>,
    /// The image store: mapped binaries, with the shared libraries beside them, are
    /// installed here (one folder per SHA-256 of their files) and containers run
    /// them from here, never from the build folder, which a pod's volumes may hide.
    /// Keep it outside any path a pod may mount over.
    #[arg(long, default_value = "/var/lib/sluice/images")]
    pub image_store: PathBuf,
    /// First restart delay of a crashing container in milliseconds (doubles per restart).
    #[arg(long, default_value_t = 1000)]
    pub restart_backoff_ms: u64,
    /// Port of the log endpoint (`kubectl logs`) on the node address; it is served
    /// only when `--tls-cert`, `--tls-key` and `--client-ca` are given.
    #[arg(long, default_value_t = 10250)]
    pub log_port: u16,
    /// Serving certificate of the log endpoint (PEM).
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Key of the serving certificate (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// CA of the client certificates the log endpoint accepts (the API server's).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Longest restart delay in seconds.
    #[arg(long, default_value_t = 60)]
    pub restart_backoff_max_s: u64,
}

fn parse_mapping(text: &str) -> Result<(String, PathBuf), String> {
    let (image, binary) = text
        .split_once('=')
        .ok_or("expected IMAGE_FRAGMENT=BINARY")?;
    Ok((image.to_owned(), PathBuf::from(binary)))
}
