//! `sluice-server serve`: loads the repository, serves REST and gRPC, and shuts
//! down gracefully on SIGTERM or Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::transport::server::Connected as _;

use crate::connection::DrainBounds;
use crate::connection::accept::{self, Rotation};
use crate::connection::drain::Drained;
use crate::connection::linger::LingeringListener;
use crate::connection::rotation::RotationPolicy;
use crate::metrics::Metrics;
use crate::protocol::grpc::InferenceService;
use crate::protocol::guard::{Guarded, Peer};
use crate::protocol::{ServerState, rest};
use crate::repository::{Repository, RepositoryError};
use crate::request_log::{FLUSH_TIMEOUT, RequestLog, RequestLogError, RequestLogOptions};
use crate::security::tls::TlsListener;
use crate::security::{Security, SecurityError, SecurityOptions};

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
    /// When client connections are asked to reconnect (REST and gRPC alike).
    pub rotation: RotationPolicy,
    /// Authentication, rate limits, request limits, audit log and TLS.
    pub security: SecurityOptions,
    /// Where sampled requests and their responses are mirrored (none: off).
    pub request_log: Option<RequestLogOptions>,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    RequestLog(#[from] RequestLogError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
}

async fn bind(host: IpAddr, port: u16) -> Result<TcpListener, ServeError> {
    let address = SocketAddr::new(host, port);
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })
}

/// How gRPC connections are served: HTTP/2 only, with hyper's timer on, as
/// tonic's own server sets them.
fn grpc_builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new()).http2_only();
    builder.http2().timer(TokioTimer::new());
    builder
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
    let request_log = options
        .request_log
        .as_ref()
        .map(|log| RequestLog::start(log, metrics.registry()))
        .transpose()?;
    let repository = Repository::load(&options.model_repository, &metrics)?;
    let state = Arc::new(ServerState::new(
        repository,
        metrics,
        options.max_body_bytes,
        Arc::clone(&security),
        request_log,
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
    // Answers given before a request's body is read still reach the client:
    // the rest of the body is drained, or the connection lingers as it closes
    // (crate::connection), within bounds set by the body limit.
    let bounds = DrainBounds::for_body_limit(options.max_body_bytes);
    let router = rest::router(Arc::clone(&state)).layer(axum::middleware::from_fn_with_state(
        Arc::clone(&state),
        close_while_draining,
    ));
    let app = Drained::new(Guarded::new(router, Arc::clone(&state)), bounds);
    let rest_rotation = Rotation {
        policy: options.rotation,
        http1: state.metrics.connections_rotated("http1"),
        http2: state.metrics.connections_rotated("http2"),
    };
    let grpc_rotation = Rotation {
        policy: options.rotation,
        http1: state.metrics.connections_rotated("grpc"),
        http2: state.metrics.connections_rotated("grpc"),
    };
    let rest_builder = Builder::new(TokioExecutor::new());
    let http_server: Pin<Box<dyn Future<Output = ()> + Send>> = match &security.tls {
        Some(tls) => Box::pin(accept::serve(
            LingeringListener::new(
                TlsListener::new(http, Arc::clone(&tls.rest)).map_err(ServeError::Http)?,
                bounds.bytes,
            ),
            rest_builder,
            rest_rotation,
            move |io, address| (app.clone(), ConnectInfo(Peer::tls(io.get_ref(), address))),
            stopped.clone(),
        )),
        None => Box::pin(accept::serve(
            LingeringListener::new(http, bounds.bytes),
            rest_builder,
            rest_rotation,
            move |_, address| (app.clone(), ConnectInfo(Peer::plain(address))),
            stopped.clone(),
        )),
    };
    let grpc_routes = Routes::new(InferenceService::server(Arc::clone(&state)));
    let grpc_server: Pin<Box<dyn Future<Output = ()> + Send>> = match &security.tls {
        Some(tls) => Box::pin(accept::serve(
            TlsListener::new(grpc, Arc::clone(&tls.grpc)).map_err(ServeError::Http)?,
            grpc_builder(),
            grpc_rotation,
            move |io, _| (grpc_routes.clone(), io.connect_info()),
            stopped.clone(),
        )),
        None => Box::pin(accept::serve(
            grpc,
            grpc_builder(),
            grpc_rotation,
            move |io, _| (grpc_routes.clone(), io.connect_info()),
            stopped.clone(),
        )),
    };
    let servers = async {
        tokio::join!(http_server, grpc_server);
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
        () = servers => {
            tracing::info!("drained; exiting");
        }
        () = shutdown => {
            tracing::warn!("in-flight requests did not finish within the drain timeout; exiting anyway");
        }
    }
    if let Some(log) = state.request_log.clone() {
        let _ = tokio::task::spawn_blocking(move || log.flush(FLUSH_TIMEOUT)).await;
    }
    Ok(())
}
