//! Starting the agent: settings from the command line, Node registration, the pod
//! loop and a clean stop on SIGTERM.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::agent;
use crate::cli::RunArgs;
use crate::context::NodeContext;
use crate::error::{Error, Result};
use crate::image::{ImageMap, ImageStore};
use crate::ipam::{Cidr, Ipam};
use crate::logs;
use crate::node;
use crate::process::Paths;

/// How often the node reports it is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?.git_version;
    let pod_cidr: Cidr = args.pod_cidr.parse()?;
    for dir in [&args.state_dir, &args.log_dir] {
        std::fs::create_dir_all(dir.join("pods"))
            .map_err(Error::io(format!("creating {}", dir.display())))?;
    }
    let ctx = Arc::new(NodeContext {
        client,
        node_name: args.node_name,
        bridge: args.bridge,
        pod_cidr,
        ipam: Mutex::new(Ipam::new(pod_cidr)),
        images: ImageMap::new(args.image_map, Some(ImageStore::open(args.image_store)?)),
        paths: Paths {
            state: args.state_dir,
            logs: args.log_dir,
        },
        cpu: std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1),
        memory: total_memory(),
        backoff_base: Duration::from_millis(args.restart_backoff_ms),
        backoff_max: Duration::from_secs(args.restart_backoff_max_s),
        log_port: if args.tls_cert.is_some() {
            args.log_port
        } else {
            0
        },
    });
    let log_server = match (args.tls_cert, args.tls_key, args.client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => {
            let addr = SocketAddr::from((ctx.host_ip(), args.log_port));
            let tls = logs::TlsFiles {
                cert,
                key,
                client_ca,
            };
            let dir = ctx.paths.logs.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = logs::serve(addr, tls, dir).await {
                    warn!(error = %e, "log endpoint stopped");
                }
            }))
        }
        _ => None,
    };
    let since = jiff::Timestamp::now();
    node::register(&ctx, &version, since).await?;
    info!(node = %ctx.node_name, %version, "node registered");
    let heartbeat = {
        let ctx = ctx.clone();
        tokio::spawn(async move { node::keep_alive(&ctx, &version, since, HEARTBEAT).await })
    };
    let mut term =
        signal(SignalKind::terminate()).map_err(Error::io("installing SIGTERM handler"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(Error::io("installing SIGINT handler"))?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    agent::run(ctx, shutdown).await;
    heartbeat.abort();
    if let Some(server) = log_server {
        server.abort();
    }
    info!("node agent stopped");
    Ok(())
}

/// MemTotal from `/proc/meminfo`, in bytes.
fn total_memory() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
