//! The REST side of security: a service in front of the whole router that
//! checks every request but the health probes, with the checks `Security`
//! makes, and writes the audit line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use futures_util::future::BoxFuture;
use serde_json::json;
use tower_service::Service;

use super::ServerState;
use crate::security::audit::{AuditRecord, REQUEST_ID, millis};
use crate::security::auth::{API_KEY_HEADER, Credentials};
use crate::security::principal::Principal;
use crate::security::{Admission, Denial, Security};
use crate::wire::paths::{is_health, model_in_path};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The API key header, by its pre-parsed name.
static X_API_KEY: HeaderName = HeaderName::from_static(API_KEY_HEADER);

/// The peer of a REST connection, plain or TLS.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Its address.
    pub address: SocketAddr,
    /// Whether it presented a client certificate that verified.
    pub client_certificate: bool,
}

impl Peer {
    /// A plain-text peer at `address`.
    pub fn plain(address: SocketAddr) -> Peer {
        Peer {
            address,
            client_certificate: false,
        }
    }

    /// A TLS peer at `address`, over `stream`.
    pub fn tls(stream: &TlsStream<TcpStream>, address: SocketAddr) -> Peer {
        let (_, session) = stream.get_ref();
        Peer {
            address,
            client_certificate: session.peer_certificates().is_some_and(|c| !c.is_empty()),
        }
    }
}

/// The REST router behind the guard. It is a hand-written service rather than
/// an axum `from_fn` middleware: that one clones and boxes the inner service
/// and its future on every request, which cost about 10% of a small model's
/// throughput. The checks are synchronous, so a request costs the checks and
/// nothing more; only audited requests take a boxed future.
#[derive(Clone)]
pub struct Guarded {
    router: Router,
    state: Arc<ServerState>,
}

impl Guarded {
    /// `router` behind the guard that `state.security` configures.
    pub fn new(router: Router, state: Arc<ServerState>) -> Guarded {
        Guarded { router, state }
    }
}

impl Service<Request> for Guarded {
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.router, context)
    }

    fn call(&mut self, request: Request) -> GuardFuture {
        let security = &self.state.security;
        let path = request.uri().path();
        if !security.guards_requests()
            || is_health(path)
            || (path == "/metrics" && !security.metrics_need_credentials())
        {
            return GuardFuture::Routed(self.router.call(request));
        }
        // The clock is read only for the audit line's latency.
        let started = security.audit().map(|_| Instant::now());
        // The peer is read once, and only when a check or the audit line uses it.
        let peer = (security.needs_peer() || started.is_some())
            .then(|| peer_of(&request))
            .flatten();
        let admitted = check(security, &request, peer);
        let Some(started) = started else {
            return match admitted {
                Ok(admission) => GuardFuture::Admitted(self.router.call(request), admission),
                Err((denial, _)) => GuardFuture::Denied(Some(denial_response(&denial))),
            };
        };
        let audited = Audited::new(&request, peer.map(|p| p.address), started);
        let (state, router) = (Arc::clone(&self.state), self.router.clone());
        GuardFuture::Audited(Box::pin(async move {
            audited.run(&state, router, request, admitted).await
        }))
    }
}

/// The answer to one REST request behind the guard.
pub enum GuardFuture {
    /// Not checked (a probe, or nothing configured): the router's answer.
    Routed(RouteFuture<Infallible>),
    /// Admitted: the router's answer, holding the admission (its concurrency
    /// slot) until it is ready.
    Admitted(RouteFuture<Infallible>, Admission),
    /// Refused, with the response that says why.
    Denied(Option<Response>),
    /// Checked and written to the audit log.
    Audited(BoxFuture<'static, Response>),
}

impl Future for GuardFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            GuardFuture::Routed(routed) | GuardFuture::Admitted(routed, _) => {
                Pin::new(routed).poll(context)
            }
            GuardFuture::Denied(response) => Poll::Ready(Ok(response
                .take()
                .expect("a denied request's future is polled once it is ready"))),
            GuardFuture::Audited(audited) => audited.as_mut().poll(context).map(Ok),
        }
    }
}

/// The checks before a request reaches its route: header sizes, credentials,
/// the model's authorization and the rate and concurrency limits.
fn check(
    security: &Security,
    request: &Request,
    peer: Option<Peer>,
) -> Result<Admission, (Denial, Option<Arc<Principal>>)> {
    let headers = request.headers();
    security
        .limits
        .check_headers(
            headers
                .iter()
                .map(|(name, value)| (name.as_str().len(), value.len())),
        )
        .map_err(|denial| (denial, None))?;
    let (authorization, api_key) = if security.authentication_required() {
        credential_headers(headers)
    } else {
        (None, None)
    };
    let credentials = Credentials {
        client_certificate: peer.is_some_and(|p| p.client_certificate),
        ..Credentials::from_values(authorization, api_key)
    };
    let model = model_in_path(request.uri().path()).map(|(name, _)| name);
    security.admit(&credentials, peer.map(|p| p.address.ip()), model)
}

/// The first `Authorization` and `X-API-Key` values, found in one pass over
/// the few headers a request has rather than by two hashed lookups.
fn credential_headers(headers: &HeaderMap) -> (Option<&str>, Option<&str>) {
    let (mut authorization, mut api_key) = (None, None);
    for (name, value) in headers {
        let slot = if *name == header::AUTHORIZATION {
            &mut authorization
        } else if *name == X_API_KEY {
            &mut api_key
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = value.to_str().ok();
        }
    }
    (authorization, api_key)
}

/// The connection's peer, which axum puts in every request's extensions.
fn peer_of(request: &Request) -> Option<Peer> {
    request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|info| info.0)
}

/// The router's answer to an admitted request.
async fn route(router: &mut Router, request: Request) -> Response {
    match router.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// What an audit line says about a REST request, taken before the request
/// moves on to its handler.
struct Audited {
    started: Instant,
    request_id: String,
    operation: String,
    model: Option<(String, Option<String>)>,
    remote: Option<SocketAddr>,
    request_bytes: Option<u64>,
}

impl Audited {
    fn new(request: &Request, remote: Option<SocketAddr>, started: Instant) -> Audited {
        let path = request.uri().path();
        let headers = request.headers();
        Audited {
            started,
            request_id: headers
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| format!("{:016x}", fastrand::u64(..)), str::to_string),
            operation: format!("{} {path}", request.method()),
            model: model_in_path(path)
                .map(|(name, version)| (name.to_string(), version.map(str::to_string))),
            remote,
            request_bytes: headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
        }
    }

    /// Answers a checked request and writes its audit line.
    async fn run(
        self,
        state: &ServerState,
        mut router: Router,
        request: Request,
        admitted: Result<Admission, (Denial, Option<Arc<Principal>>)>,
    ) -> Response {
        let admission = match admitted {
            Ok(admission) => admission,
            Err((denial, principal)) => {
                let message = denial.to_string();
                self.record(
                    state,
                    principal.as_deref(),
                    denial.http_status(),
                    Some(&message),
                    None,
                    None,
                );
                return self.with_request_id(denial_response(&denial));
            }
        };
        let sample_payload = state
            .security
            .audit()
            .is_some_and(|log| log.sample_payload());
        let (request, payload) = if sample_payload {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, state.max_body_bytes)
                .await
                .unwrap_or_default();
            let payload = match std::str::from_utf8(&bytes) {
                Ok(text) => text.to_string(),
                Err(_) => format!("hex:{}", hex::encode(&bytes)),
            };
            (Request::from_parts(parts, Body::from(bytes)), Some(payload))
        } else {
            (request, None)
        };
        let response = route(&mut router, request).await;
        let principal = admission.principal;
        drop(admission.permit);
        let response_bytes = response.body().size_hint().exact();
        let status = response.status().as_u16();
        self.record(
            state,
            Some(&principal),
            status,
            None,
            response_bytes,
            payload.as_deref(),
        );
        self.with_request_id(response)
    }

    fn record(
        &self,
        state: &ServerState,
        principal: Option<&Principal>,
        status: u16,
        error: Option<&str>,
        response_bytes: Option<u64>,
        payload: Option<&str>,
    ) {
        let Some(log) = state.security.audit() else {
            return;
        };
        let version = self
            .model
            .as_ref()
            .and_then(|(name, version)| match version {
                Some(version) => Some(version.clone()),
                None => state
                    .repository
                    .resolve(name, None)
                    .ok()
                    .map(|m| m.version.to_string()),
            });
        log.record(&AuditRecord {
            protocol: "rest",
            request_id: &self.request_id,
            client: principal.map(|p| &*p.id),
            auth: principal.map(|p| p.method),
            remote: self.remote.map(|r| r.to_string()),
            operation: &self.operation,
            model: self.model.as_ref().map(|(name, _)| name.as_str()),
            version: version.as_deref(),
            status,
            latency_ms: millis(self.started.elapsed()),
            request_bytes: self.request_bytes,
            response_bytes,
            error,
            payload,
        });
    }

    fn with_request_id(&self, mut response: Response) -> Response {
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        response
    }
}

/// The JSON error response for a denial, with `Retry-After` or `WWW-Authenticate`.
pub fn denial_response(denial: &Denial) -> Response {
    let status = StatusCode::from_u16(denial.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = (status, axum::Json(json!({ "error": denial.to_string() }))).into_response();
    let headers = response.headers_mut();
    if let Some(seconds) = denial.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if matches!(denial, Denial::Unauthenticated(_)) {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_the_first_value_of_each_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(credential_headers(&headers), (None, None));
        headers.append("x-api-key", HeaderValue::from_static("first"));
        headers.append("host", HeaderValue::from_static("h"));
        headers.append("X-Api-Key", HeaderValue::from_static("second"));
        assert_eq!(credential_headers(&headers), (None, Some("first")));
        headers.append("authorization", HeaderValue::from_static("Bearer t"));
        assert_eq!(
            credential_headers(&headers),
            (Some("Bearer t"), Some("first"))
        );
    }
}
