//! `sluice-server serve`: loads the repository, serves REST and gRPC, and shuts
//! down gracefully on SIGTERM or Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::protocol::grpc::InferenceService;
use crate::protocol::{ServerState, rest};
use crate::repository::{Repository, RepositoryError};

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The model repository folder.
    pub model_repository: PathBuf,
    /// Address to listen on.
    pub host: IpAddr,
    /// REST port (0 picks a free one).
    pub http_port: u16,
    /// gRPC port (0 picks a free one).
    pub grpc_port: u16,
    /// Largest request body or gRPC message, in bytes.
    pub max_body_bytes: usize,
    /// After SIGTERM, how long readiness is false before listeners close, so that
    /// load balancers stop sending traffic first.
    pub shutdown_delay: Duration,
    /// After listeners close, how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Grpc(tonic::transport::Error),
}

async fn bind(host: IpAddr, port: u16) -> Result<TcpListener, ServeError> {
    let address = SocketAddr::new(host, port);
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Serves until a termination signal, then drains and returns.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let repository = Repository::load(&options.model_repository, &metrics)?;
    let state = Arc::new(ServerState::new(
        repository,
        metrics,
        options.max_body_bytes,
    ));

    let http = bind(options.host, options.http_port).await?;
    let grpc = bind(options.host, options.grpc_port).await?;
    tracing::info!(
        http = %http.local_addr().map_err(ServeError::Http)?,
        grpc = %grpc.local_addr().map_err(ServeError::Http)?,
        repository = %options.model_repository.display(),
        "listening"
    );

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let http_server = axum::serve(http, rest::router(Arc::clone(&state)))
        .with_graceful_shutdown(until_stopped(stopped.clone()));
    let grpc_server = tonic::transport::Server::builder()
        .add_service(InferenceService::server(Arc::clone(&state)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            until_stopped(stopped.clone()),
        );
    let servers = async {
        let (http_result, grpc_result) = tokio::join!(http_server, grpc_server);
        http_result.map_err(ServeError::Http)?;
        grpc_result.map_err(ServeError::Grpc)
    };

    let drain_timeout = options.drain_timeout;
    let shutdown = async {
        termination_signal().await;
        tracing::info!(delay = ?options.shutdown_delay, "termination signal: readiness is now false");
        state.start_draining();
        tokio::time::sleep(options.shutdown_delay).await;
        tracing::info!(timeout = ?drain_timeout, "closing listeners and draining in-flight requests");
        let _ = stop.send(true);
        tokio::time::sleep(drain_timeout).await;
    };

    tokio::select! {
        result = servers => {
            result?;
            tracing::info!("drained; exiting");
        }
        () = shutdown => {
            tracing::warn!("in-flight requests did not finish within the drain timeout; exiting anyway");
        }
    }
    Ok(())
}
