//! The accept loop that REST and gRPC share: each accepted connection is
//! served by hyper in a task of its own, rotates when it is older than its
//! age limit ([`super::rotation`]), and shuts down gracefully when the server
//! stops. It replaces `axum::serve` and tonic's server, neither of which can
//! end one connection on its own schedule.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use prometheus::IntCounter;
use tokio::sync::watch;
use tokio::time::Instant;
use tower_service::Service;

use super::rotation::{ConnectionAge, Rotate, RotationPolicy};

/// Rotation settings and the counters of rotated connections by protocol.
#[derive(Clone)]
pub struct Rotation {
    /// When connections rotate.
    pub policy: RotationPolicy,
    /// Counts connections rotated while speaking HTTP/1.x.
    pub http1: IntCounter,
    /// Counts connections rotated while speaking HTTP/2.
    pub http2: IntCounter,
}

/// Serves every connection `listener` accepts until `stop` turns true, then
/// stops accepting, shuts the open connections down gracefully and returns
/// once they have all closed.
///
/// `per_connection` gives, for each accepted connection, the service that
/// answers its requests and a value (the peer's address, its certificate)
/// put into every request's extensions.
pub async fn serve<L, M, S, X, B>(
    mut listener: L,
    builder: Builder<TokioExecutor>,
    rotation: Rotation,
    mut per_connection: M,
    mut stop: watch::Receiver<bool>,
) where
    L: axum::serve::Listener,
    M: FnMut(&L::Io, L::Addr) -> (S, X),
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    X: Clone + Send + Sync + 'static,
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let rotation = Arc::new(rotation);
    let (closed, open) = watch::channel(());
    loop {
        let (io, address) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (service, extension) = per_connection(&io, address);
        let age = Arc::new(ConnectionAge::start(&rotation.policy));
        let service = PerConnection {
            inner: service,
            extension,
            age: Arc::clone(&age),
            rotation: Arc::clone(&rotation),
        };
        tokio::spawn(serve_connection(
            TokioIo::new(io),
            builder.clone(),
            service,
            age,
            rotation.policy,
            stop.clone(),
            open.clone(),
        ));
    }
    drop(listener);
    drop(open);
    closed.closed().await;
}

/// Serves one connection until it ends: closed by the client, rotated (and
/// closed after the grace period at the latest), or shut down with the server.
async fn serve_connection<I, S, X, B>(
    io: TokioIo<I>,
    builder: Builder<TokioExecutor>,
    service: PerConnection<S, X>,
    age: Arc<ConnectionAge>,
    policy: RotationPolicy,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    X: Clone + Send + Sync + 'static,
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut go_away = pin!(age.go_away_requested());
    let mut stopping = pin!(stop.wait_for(|stop| *stop));
    let mut shutting_down = false;
    let mut grace_ends: Option<Instant> = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%error, "connection ended with an error");
                }
                return;
            }
            _ = &mut stopping, if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut go_away, if grace_ends.is_none() => {
                grace_ends = Some(Instant::now() + policy.grace);
                if !shutting_down {
                    shutting_down = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            () = sleep_until_some(grace_ends) => {
                tracing::debug!(grace = ?policy.grace, "a rotated connection outlived its grace period; closing it");
                return;
            }
        }
    }
}

/// Sleeps until `deadline`, or for ever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A connection's service: the inner one, with the connection's value in each
/// request's extensions, and `Connection: close` or a GOAWAY once the
/// connection is due to rotate.
#[derive(Clone)]
struct PerConnection<S, X> {
    inner: S,
    extension: X,
    age: Arc<ConnectionAge>,
    rotation: Arc<Rotation>,
}

impl<S, X, B> hyper::service::Service<Request<Incoming>> for PerConnection<S, X>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    X: Clone + Send + Sync + 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let http2 = request.version() >= Version::HTTP_2;
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(self.extension.clone());
        let mut inner = self.inner.clone();
        let age = Arc::clone(&self.age);
        let rotation = Arc::clone(&self.rotation);
        Box::pin(async move {
            poll_fn(|context| inner.poll_ready(context)).await?;
            let mut response = inner.call(request).await?;
            match age.on_answer(http2) {
                Some(Rotate::CloseAfterAnswer) => {
                    rotation.http1.inc();
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Some(Rotate::GoAway) => rotation.http2.inc(),
                None => {}
            }
            Ok(response)
        })
    }
}
