//! `sluice-server serve`: loads the repository, serves REST and gRPC, and shuts
//! down gracefully on SIGTERM or Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::connection::DrainBounds;
use crate::connection::drain::Drained;
use crate::connection::linger::LingeringListener;
use crate::metrics::Metrics;
use crate::protocol::grpc::InferenceService;
use crate::protocol::guard::{Guarded, Peer};
use crate::protocol::{ServerState, rest};
use crate::repository::{Repository, RepositoryError};
use crate::security::tls::{TlsListener, accept_tls};
use crate::security::{Security, SecurityError, SecurityOptions};
use axum::ServiceExt as _;

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
    /// Authentication, rate limits, request limits, audit log and TLS.
    pub security: SecurityOptions,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Security(#[from] SecurityError),
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

/// While the server drains, asks each HTTP/1.1 client to close its connection after
/// the answer (`Connection: close`), so that keep-alive clients reconnect, through
/// the Service, to a pod that stays, during the shutdown delay. Without it their
/// idle connections would be closed when the listeners close, and a request sent on
/// one at that moment would get a reset instead of an answer. (HTTP/2 and gRPC
/// clients get a GOAWAY at that point, which they handle without losing a request.)
async fn close_while_draining(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // HTTP/2 has no Connection header: its clients get a GOAWAY instead.
    let http1 = request.version() < axum::http::Version::HTTP_2;
    let mut response = next.run(request).await;
    if http1 && state.is_draining() {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Serves until a termination signal, then drains and returns.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let security = Arc::new(Security::load(&options.security).await?);
    security.spawn_reloader();
    let metrics = Arc::new(Metrics::new());
    let repository = Repository::load(&options.model_repository, &metrics)?;
    let state = Arc::new(ServerState::new(
        repository,
        metrics,
        options.max_body_bytes,
        Arc::clone(&security),
    ));

    let http = bind(options.host, options.http_port).await?;
    let grpc = bind(options.host, options.grpc_port).await?;
    tracing::info!(
        http = %http.local_addr().map_err(ServeError::Http)?,
        grpc = %grpc.local_addr().map_err(ServeError::Http)?,
        repository = %options.model_repository.display(),
        tls = security.tls.is_some(),
        authentication = security.authentication_required(),
        "listening"
    );

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    // Answers given before a request's body is read still reach the client:
    // the rest of the body is drained, or the connection lingers as it closes
    // (crate::connection), within bounds set by the body limit.
    let bounds = DrainBounds::for_body_limit(options.max_body_bytes);
    let router = rest::router(Arc::clone(&state)).layer(axum::middleware::from_fn_with_state(
        Arc::clone(&state),
        close_while_draining,
    ));
    let guarded = Guarded::new(router, Arc::clone(&state));
    let app = Drained::new(guarded, bounds).into_make_service_with_connect_info::<Peer>();
    let http_server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
        match &security.tls {
            Some(tls) => Box::pin(
                axum::serve(
                    LingeringListener::new(
                        TlsListener::new(http, Arc::clone(&tls.rest)).map_err(ServeError::Http)?,
                        bounds.bytes,
                    ),
                    app,
                )
                .with_graceful_shutdown(until_stopped(stopped.clone()))
                .into_future(),
            ),
            None => Box::pin(
                axum::serve(LingeringListener::new(http, bounds.bytes), app)
                    .with_graceful_shutdown(until_stopped(stopped.clone()))
                    .into_future(),
            ),
        };
    let grpc_builder = tonic::transport::Server::builder()
        .add_service(InferenceService::server(Arc::clone(&state)));
    let grpc_server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match &security.tls {
        Some(tls) => Box::pin(
            grpc_builder.serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(accept_tls(
                    grpc,
                    Arc::clone(&tls.grpc),
                ))
                .map(|(stream, _)| Ok::<_, std::io::Error>(stream)),
                until_stopped(stopped.clone()),
            ),
        ),
        None => Box::pin(grpc_builder.serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            until_stopped(stopped.clone()),
        )),
    };
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
