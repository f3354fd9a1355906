//! Reading what is left of a request body once its answer is known, so that an
//! answer given early (a refusal, a 404, a 413) still reaches the client and
//! the connection stays open for its next request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, Version, header};
use axum::response::Response;
use http_body_util::BodyExt as _;
use tower_service::Service;

use super::DrainBounds;

/// `inner`, with each request's unread body drained after its answer.
///
/// Requests without a body cost nothing more. A request with one gets its
/// body wrapped so that, when a handler drops it unread (or partly read), the
/// rest comes back here. The answer then goes out at once, and a task reads
/// and discards the rest within the [`DrainBounds`], after which the
/// connection serves the client's next request. When the rest is larger than
/// the bounds allow (its `Content-Length` says so), or the client waits for
/// `100 Continue` before sending it, the answer carries `Connection: close`
/// instead; when reading it hits a bound, the task gives up and hyper closes
/// the connection after the answer. Either way
/// [`super::linger::Lingering`] closes it without a reset.
#[derive(Clone)]
pub struct Drained<S> {
    inner: S,
    bounds: DrainBounds,
}

impl<S> Drained<S> {
    /// `inner`, draining within `bounds`.
    pub fn new(inner: S, bounds: DrainBounds) -> Drained<S> {
        Drained { inner, bounds }
    }
}

impl<S> Service<Request> for Drained<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = DrainFuture<S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.body().is_end_stream() {
            return DrainFuture(Phase::Plain(self.inner.call(request)));
        }
        // HTTP/2 ends an unread body by resetting its stream alone (and has no
        // `Connection` header); only HTTP/1 connections need closing.
        let http1 = request.version() < Version::HTTP_2;
        let awaits_continue = request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let leftover = Leftover::default();
        let request = request.map(|body| {
            Body::new(Watched {
                body: Some(body),
                leftover: leftover.clone(),
                finished: false,
            })
        });
        DrainFuture(Phase::Watching {
            answer: self.inner.call(request),
            leftover,
            bounds: self.bounds,
            awaits_continue,
            http1,
        })
    }
}

/// Where a request body that was dropped before its end comes back to.
#[derive(Clone, Default)]
struct Leftover(Arc<Mutex<Option<Body>>>);

impl Leftover {
    fn put(&self, body: Body) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
    }

    fn take(&self) -> Option<Body> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// A request body that hands itself to its [`Leftover`] when dropped unfinished.
struct Watched {
    body: Option<Body>,
    leftover: Leftover,
    /// Whether its last frame was read (a chunked body does not say so in
    /// `is_end_stream`).
    finished: bool,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(body) = &mut this.body else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(context));
        this.finished |= frame.is_none();
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(body) = self.body.take()
            && !self.finished
            && !body.is_end_stream()
        {
            self.leftover.put(body);
        }
    }
}

/// The answer to one request; once it is ready, what is left of the body is
/// drained in a task of its own, so the answer goes out at once while hyper
/// keeps reading the body into that task.
pub struct DrainFuture<F>(Phase<F>);

enum Phase<F> {
    /// A request without a body: the inner answer as it is.
    Plain(F),
    /// Waiting for the inner answer.
    Watching {
        answer: F,
        leftover: Leftover,
        bounds: DrainBounds,
        awaits_continue: bool,
        http1: bool,
    },
}

impl<F> Future for DrainFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Phase::Plain(answer) => Pin::new(answer).poll(context),
            Phase::Watching {
                answer,
                leftover,
                bounds,
                awaits_continue,
                http1,
            } => {
                let Ok(response) = ready!(Pin::new(answer).poll(context));
                let Some(body) = leftover.take() else {
                    return Poll::Ready(Ok(response));
                };
                if *awaits_continue || body.size_hint().lower() > bounds.bytes as u64 {
                    return Poll::Ready(Ok(closing(response, *http1)));
                }
                tokio::spawn(drain(body, *bounds));
                Poll::Ready(Ok(response))
            }
        }
    }
}

/// Reads `body` to its end and discards it, or gives up when it errs or goes
/// past a bound; giving up drops the body, and hyper then closes the
/// connection after the answer (which [`super::linger::Lingering`] makes clean).
async fn drain(mut body: Body, bounds: DrainBounds) {
    let mut left = bounds.bytes;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            if let Some(data) = frame.data_ref() {
                match left.checked_sub(data.len()) {
                    Some(rest) => left = rest,
                    None => return false,
                }
            }
        }
        true
    };
    let drained = tokio::time::timeout(bounds.time, reading)
        .await
        .unwrap_or(false);
    if !drained {
        tracing::debug!(
            max_bytes = bounds.bytes,
            max_time = ?bounds.time,
            "the rest of a request body could not be read within the bounds; closing the connection after the answer"
        );
    }
}

/// `response`, telling an HTTP/1 client the connection closes after it.
fn closing(mut response: Response, http1: bool) -> Response {
    if http1 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::http::StatusCode;
    use futures_util::{StreamExt as _, stream};
    use http_body_util::Full;

    use super::*;

    /// A service that refuses every request without reading its body.
    fn refusing() -> Drained<Router> {
        let refuse = Router::new().fallback(|| async { StatusCode::UNAUTHORIZED });
        Drained::new(
            refuse,
            DrainBounds {
                bytes: 1024,
                time: Duration::from_secs(5),
            },
        )
    }

    async fn answer(service: &mut Drained<Router>, request: Request) -> Response {
        let Ok(response) = service.call(request).await;
        response
    }

    #[tokio::test]
    async fn a_refused_body_is_answered_at_once_and_drained_after() {
        let read = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&read);
        let chunks = stream::iter(0..10).map(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
            Ok::<_, Infallible>(Bytes::from_static(&[0; 100]))
        });
        let request = Request::new(Body::from_stream(chunks));
        let response = answer(&mut refusing(), request).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(!response.headers().contains_key(header::CONNECTION));
        tokio::time::timeout(Duration::from_secs(5), async {
            while read.load(Ordering::Relaxed) < 10 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the whole body is drained");
    }

    #[tokio::test]
    async fn a_body_longer_than_the_bound_or_awaiting_continue_closes_the_connection() {
        let long = Request::new(Body::new(Full::new(Bytes::from(vec![0; 2048]))));
        let response = answer(&mut refusing(), long).await;
        assert_eq!(response.headers()[header::CONNECTION], "close");

        let mut waiting = Request::new(Body::new(Full::new(Bytes::from(vec![0; 10]))));
        waiting
            .headers_mut()
            .insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        let response = answer(&mut refusing(), waiting).await;
        assert_eq!(response.headers()[header::CONNECTION], "close");

        let mut http2 = Request::new(Body::new(Full::new(Bytes::from(vec![0; 2048]))));
        *http2.version_mut() = Version::HTTP_2;
        let response = answer(&mut refusing(), http2).await;
        assert!(!response.headers().contains_key(header::CONNECTION));
    }
}
