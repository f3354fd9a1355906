//! Client connections: how they are accepted and served ([`accept`]), when
//! they are asked to reconnect ([`rotation`]), and how a REST connection ends
//! when the server answers before it has read the whole request body: a
//! refusal (401, 403, 429, 431), an unknown model or route (404, 405), a body
//! over the limit (413), or an error hyper itself answers (a 431 for too many
//! headers, a 400 for a malformed head).
//!
//! Closing a TCP connection while unread request bytes sit in its receive
//! buffer makes the kernel send a reset, and a reset throws away the answer the
//! client has not read yet: the client sees "connection reset" instead of its
//! 401 and cannot tell a bad credential from an outage. Two pieces prevent it:
//!
//! - [`drain::Drained`] sends the answer at once and reads and discards what
//!   is left of the request's body, so the connection stays usable for the
//!   next request (keep-alive). When the rest is more than the
//!   [`DrainBounds`] allow, the connection closes after the answer instead
//!   (with `Connection: close` when that is known before the answer goes out).
//! - [`linger::Lingering`] wraps every connection: when the server closes it,
//!   it first shuts down its sending side (the client gets the answer and the
//!   end of the stream), then keeps reading and discarding for a bounded time
//!   and number of bytes before closing, so that a client still sending gets
//!   no reset before it has read the answer (the "lingering close" of Apache
//!   and nginx).
//!
//! Both are bounded ([`DrainBounds`]), so a refused client cannot hold the
//! server: at most `--max-body-bytes` bytes and [`DRAIN_TIME`] per request
//! drained, then at most `--max-body-bytes` bytes, [`LINGER_TIME`] in all and
//! [`LINGER_IDLE`] between reads while lingering. A client that sends more than
//! that after its answer gets a reset, as before.

pub mod accept;
pub mod drain;
pub mod linger;
pub mod rotation;

use std::time::Duration;

/// The longest the server reads what is left of a request's body after an
/// early answer before giving up on keeping the connection (it then closes
/// after the answer).
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The longest a closing connection keeps reading what the client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(10);

/// The longest a closing connection waits for the client's next bytes (or its
/// end of stream) before closing.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);

/// How much a refused request may still send: the server reads and discards
/// at most `bytes` within `time` (per request while draining, per connection
/// while lingering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainBounds {
    /// Most bytes read and discarded.
    pub bytes: usize,
    /// Most time spent reading them.
    pub time: Duration,
}

impl DrainBounds {
    /// The bounds for a server whose largest accepted body is `max_body_bytes`:
    /// a refused client may send what an admitted one could, and no more.
    pub fn for_body_limit(max_body_bytes: usize) -> DrainBounds {
        DrainBounds {
            bytes: max_body_bytes,
            time: DRAIN_TIME,
        }
    }
}
