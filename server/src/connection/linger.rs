//! Lingering close: when the server closes a connection the client may still
//! be sending on, it shuts down its own sending side first and reads and
//! discards what still arrives (within bounds) before closing, so the kernel
//! does not answer the unread bytes with a reset that would destroy the
//! answer on its way to the client.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::{LINGER_IDLE, LINGER_TIME};

/// A connection that lingers when the server shuts it down (see the module
/// documentation): after its sending side is shut down, it reads and discards
/// until the client ends its stream, `max_bytes` have arrived, nothing has
/// arrived for [`LINGER_IDLE`], or [`LINGER_TIME`] has passed. A client that
/// already ended its stream costs no wait.
pub struct Lingering<Io> {
    io: Io,
    max_bytes: usize,
    peer_finished: bool,
    closing: Closing,
}

enum Closing {
    Open,
    Lingering(Box<Linger>),
    Closed,
}

impl<Io> Lingering<Io> {
    /// `io`, lingering over at most `max_bytes` when shut down.
    pub fn new(io: Io, max_bytes: usize) -> Lingering<Io> {
        Lingering {
            io,
            max_bytes,
            peer_finished: false,
            closing: Closing::Open,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &Io {
        &self.io
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Lingering<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut this.io).poll_read(context, buf));
        if result.is_ok() && buf.filled().len() == before && buf.remaining() > 0 {
            this.peer_finished = true;
        }
        Poll::Ready(result)
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(context, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(context, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.closing {
                Closing::Open => {
                    let result = ready!(Pin::new(&mut this.io).poll_shutdown(context));
                    if result.is_err() || this.peer_finished {
                        this.closing = Closing::Closed;
                        return Poll::Ready(result);
                    }
                    this.closing = Closing::Lingering(Box::new(Linger::new(this.max_bytes)));
                }
                Closing::Lingering(linger) => {
                    ready!(linger.poll_discard(&mut this.io, context));
                    this.closing = Closing::Closed;
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// The state of one lingering close.
struct Linger {
    deadline: Pin<Box<Sleep>>,
    idle: Pin<Box<Sleep>>,
    bytes_left: usize,
}

/// How much is read at a time while lingering.
const SCRATCH_BYTES: usize = 8192;

impl Linger {
    fn new(max_bytes: usize) -> Linger {
        Linger {
            deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
            idle: Box::pin(tokio::time::sleep(LINGER_IDLE)),
            bytes_left: max_bytes,
        }
    }

    /// Reads and discards until the client ends its stream or a bound is hit.
    fn poll_discard<Io: AsyncRead + Unpin>(
        &mut self,
        io: &mut Io,
        context: &mut Context<'_>,
    ) -> Poll<()> {
        let mut scratch = [0u8; SCRATCH_BYTES];
        loop {
            if self.deadline.as_mut().poll(context).is_ready()
                || self.idle.as_mut().poll(context).is_ready()
            {
                tracing::debug!("the client was still sending when lingering ended");
                return Poll::Ready(());
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut *io).poll_read(context, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(()),
                Ok(()) => match self.bytes_left.checked_sub(buf.filled().len()) {
                    Some(left) => {
                        self.bytes_left = left;
                        self.idle.as_mut().reset(Instant::now() + LINGER_IDLE);
                    }
                    None => {
                        tracing::debug!("the client sent more than lingering reads");
                        return Poll::Ready(());
                    }
                },
                Err(_) => return Poll::Ready(()),
            }
        }
    }
}

/// A listener whose connections linger when closed (see [`Lingering`]).
pub struct LingeringListener<L> {
    inner: L,
    max_bytes: usize,
}

impl<L> LingeringListener<L> {
    /// Connections from `inner`, lingering over at most `max_bytes`.
    pub fn new(inner: L, max_bytes: usize) -> LingeringListener<L> {
        LingeringListener { inner, max_bytes }
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for LingeringListener<L> {
    type Io = Lingering<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, address) = self.inner.accept().await;
        (Lingering::new(io, self.max_bytes), address)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    /// A server side that writes `answer` and shuts down, lingering over at
    /// most `max_bytes`; returns how long the shutdown took.
    async fn answer_and_close(
        server: tokio::io::DuplexStream,
        answer: &[u8],
        max_bytes: usize,
    ) -> Duration {
        let mut server = Lingering::new(server, max_bytes);
        server.write_all(answer).await.unwrap();
        let started = Instant::now();
        server.shutdown().await.unwrap();
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_still_sending_can_finish_and_read_the_answer() {
        let (mut client, server) = duplex(1024);
        let sending = tokio::spawn(async move {
            client.write_all(&[7; 64 * 1024]).await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            answer
        });
        answer_and_close(server, b"401", 1 << 20).await;
        assert_eq!(sending.await.unwrap(), b"401");
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_ends_at_its_byte_bound_or_after_silence() {
        let (mut client, server) = duplex(1024);
        let flooding =
            tokio::spawn(async move { while client.write_all(&[7; 1024]).await.is_ok() {} });
        answer_and_close(server, b"401", 16 * 1024).await;
        flooding.await.unwrap();

        let (client, server) = duplex(1024);
        let waited = answer_and_close(server, b"401", 16 * 1024).await;
        assert_eq!(waited, LINGER_IDLE);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_already_finished_costs_no_wait() {
        let (mut client, server) = duplex(1024);
        client.shutdown().await.unwrap();
        let mut server = Lingering::new(server, 1024);
        let mut request = Vec::new();
        server.read_to_end(&mut request).await.unwrap();
        let started = Instant::now();
        server.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        drop(client);
    }
}
