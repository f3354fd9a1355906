//! The fuzz target `refused_requests`: whatever a refused client sends (any
//! body, framed in any way, within the drain bound), it gets a complete answer.
//!
//! The server is the real REST connection handling (`axum::serve` over
//! [`LingeringListener`], requests through [`Drained`]) in front of a router
//! that refuses everything with a 401 before reading the body, as the guard
//! does; the client is a real loopback TCP connection, because the failure
//! this guards against (a reset that destroys the answer) only happens in a
//! kernel's TCP stack.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use axum::{Router, ServiceExt as _};
use serde_json::json;

use crate::connection::DrainBounds;
use crate::connection::drain::Drained;
use crate::connection::linger::LingeringListener;

/// The refusing server's body limit, which bounds draining and lingering; the
/// bodies sent are never longer.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The longest a client waits for its answer; an answer later than the drain
/// and linger bounds allow is a hang.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How the body of a refused request is framed, picked by the input's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` matches the body.
    Length,
    /// `Content-Length` promises more than is sent before the client waits.
    ShortBody,
    /// `Content-Length` promises less: the rest reads as a next (garbage) request.
    LongBody,
    /// Chunked, in chunks of the input's second byte plus one.
    Chunked,
    /// Declared chunked, but the body bytes are sent as they are.
    RawChunked,
    /// `Expect: 100-continue`, with the body sent without waiting for it.
    ExpectContinue,
}

impl Framing {
    const ALL: [Framing; 6] = [
        Framing::Length,
        Framing::ShortBody,
        Framing::LongBody,
        Framing::Chunked,
        Framing::RawChunked,
        Framing::ExpectContinue,
    ];

    /// The request bytes: head and body.
    fn request(self, body: &[u8], chunk: usize) -> Vec<u8> {
        let head = |framing: &str| {
            format!(
                "POST /v2/models/m/infer HTTP/1.1\r\nhost: sluice\r\nx-api-key: wrong\r\n\
                 content-type: application/json\r\n{framing}\r\n"
            )
            .into_bytes()
        };
        let length = |length: usize| format!("content-length: {length}\r\n");
        let mut request = match self {
            Framing::Length => head(&length(body.len())),
            Framing::ShortBody => head(&length(body.len() + 1 + chunk)),
            Framing::LongBody => head(&length(body.len() / 2)),
            Framing::Chunked | Framing::RawChunked => head("transfer-encoding: chunked\r\n"),
            Framing::ExpectContinue => {
                head(&format!("expect: 100-continue\r\n{}", length(body.len())))
            }
        };
        match self {
            Framing::Chunked => {
                for piece in body.chunks(chunk) {
                    request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    request.extend_from_slice(piece);
                    request.extend_from_slice(b"\r\n");
                }
                request.extend_from_slice(b"0\r\n\r\n");
            }
            _ => request.extend_from_slice(body),
        }
        request
    }
}

/// Sends a refused request built from `data` and panics unless a complete
/// 401 comes back. The first byte picks the framing, the second how many
/// times the rest repeats (up to [`BODY_LIMIT`]) to make the body.
pub fn refused_request(data: &[u8]) {
    let [framing, repeat, pattern @ ..] = data else {
        return;
    };
    let framing = Framing::ALL[usize::from(*framing) % Framing::ALL.len()];
    let length = (pattern.len() * (usize::from(*repeat) + 1)).min(BODY_LIMIT);
    let body: Vec<u8> = pattern.iter().copied().cycle().take(length).collect();
    // Known limit, not covered: with LongBody the body's second half is read as a
    // pipelined next request, and one that holds the HTTP/2 preface makes hyper end
    // the connection before the first answer is written (found by this target on
    // 2026-11-30; docs/model-server.md, "Refusals always reach the client").
    if framing == Framing::LongBody && body.windows(14).any(|w| w == b"PRI * HTTP/2.0") {
        return;
    }
    let request = framing.request(&body, usize::from(*repeat) + 1);
    let answer = exchange(refusing_server(), &request);
    let complete = first_answer(&answer.bytes, 401);
    if complete.is_err() || answer.error.is_some() {
        panic!(
            "{framing:?} request of {} body bytes got no complete 401: {}; {}; received {:?}",
            body.len(),
            complete
                .err()
                .unwrap_or_else(|| "the answer is complete".into()),
            answer.error.as_deref().unwrap_or("no transport error"),
            String::from_utf8_lossy(&answer.bytes[..answer.bytes.len().min(512)]),
        );
    }
}

/// The address of the process's refusing server, started on first use.
fn refusing_server() -> SocketAddr {
    static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();
    *ADDRESS.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let address = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("non-blocking");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let refuse: Router = Router::new().fallback(|| async {
                    let error = json!({ "error": "invalid API key" });
                    (StatusCode::UNAUTHORIZED, axum::Json(error))
                });
                let app = Drained::new(refuse, DrainBounds::for_body_limit(BODY_LIMIT))
                    .into_make_service();
                axum::serve(LingeringListener::new(listener, BODY_LIMIT), app)
                    .await
                    .expect("the refusing server runs");
            });
        });
        address
    })
}

/// What a client received, and the error that ended its sending or reading.
struct Answer {
    bytes: Vec<u8>,
    error: Option<String>,
}

/// How much the client writes at a time, pausing [`WRITE_PAUSE`] in between,
/// so that a server that closes early does so while the client is still
/// sending (as over a real network), not after its bytes all sat in buffers.
const WRITE_PIECE: usize = 64 * 1024;
const WRITE_PAUSE: Duration = Duration::from_micros(200);

/// Sends all of `request` before reading (as `requests` and curl do: a client
/// whose sending fails gives up without reading the answer), then reads until
/// a complete 401 has arrived or the server closes. The client does not shut
/// down its sending side: hyper takes that as the client going away.
fn exchange(address: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(address).expect("connect to the refusing server");
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .expect("timeout");
    stream
        .set_write_timeout(Some(ANSWER_TIMEOUT))
        .expect("timeout");
    let mut answer = Answer {
        bytes: Vec::new(),
        error: None,
    };
    for piece in request.chunks(WRITE_PIECE) {
        if let Err(error) = stream.write_all(piece) {
            answer.error = Some(format!("sending failed: {error}"));
            return answer;
        }
        std::thread::sleep(WRITE_PAUSE);
    }
    let mut chunk = [0u8; 8192];
    while first_answer(&answer.bytes, 401).is_err() {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => answer.bytes.extend_from_slice(&chunk[..read]),
            // libFuzzer's timeout alarm (SIGALRM) interrupts a blocking read.
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                answer.error = Some(format!("reading failed: {error}"));
                break;
            }
        }
    }
    answer
}

/// Checks that `bytes` start with a complete HTTP/1.1 response of `status`:
/// a head, then exactly its `Content-Length` of body.
pub fn first_answer(bytes: &[u8], status: u16) -> Result<(), String> {
    let end = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or("no complete response head")?;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let mut lines = head.lines();
    let expected = format!("http/1.1 {status} ");
    let status_line = lines.next().unwrap_or_default();
    if !status_line.starts_with(&expected) {
        return Err(format!("status line {status_line:?}, not {expected:?}"));
    }
    let length: usize = lines
        .find_map(|line| line.strip_prefix("content-length: ")?.parse().ok())
        .ok_or("no content-length")?;
    let received = bytes.len() - end - 4;
    if received < length {
        return Err(format!("body cut at {received} of {length} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_requests_get_their_401_however_their_body_is_framed() {
        // 8 KiB repeated up to 256 times: bodies up to the limit, large
        // enough that a server closing on them unread resets the connection.
        let pattern: Vec<u8> = (0..8192).map(|i| (i % 251) as u8).collect();
        for framing in 0..Framing::ALL.len() as u8 {
            for repeat in [0, 7, 255] {
                let mut data = vec![framing, repeat];
                data.extend_from_slice(&pattern);
                refused_request(&data);
            }
        }
    }

    #[test]
    fn an_answer_is_complete_only_with_its_whole_body() {
        let answer = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nabcde";
        assert_eq!(first_answer(answer, 401), Ok(()));
        assert!(first_answer(&answer[..answer.len() - 1], 401).is_err());
        assert!(first_answer(answer, 200).is_err());
        assert!(first_answer(b"HTTP/1.1 401 Unauthorized\r\n", 401).is_err());
    }
}
