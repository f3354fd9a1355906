//! `make bench-rotation`: what connection rotation (`--max-connection-age-seconds`)
//! costs. Each round pairs a fresh server with rotation off and a fresh server
//! with a maximum age, and loads both at once with closed-loop clients that keep
//! their connections open and reconnect only when the server asks them to
//! (`Connection: close` over HTTP/1.1, GOAWAY over HTTP/2), as keep-alive pools
//! and gRPC channels do. A request that needs a new connection first pays for
//! it: its latency includes the handshake.
//!
//! Printed per protocol and age, as medians over the rounds against the server
//! with rotation off beside it: handshakes per second after the callers' first
//! connections (each side's; rotation's whole extra work), p50 and p99
//! latency, requests per second and the server's CPU per request. A control row
//! (off against off) shows the method's noise; an age of 1 s exaggerates the
//! cost, 10 s is what the operator sets. Prints figures; asserts nothing.
//!
//! The servers run pinned to CPU 0; pin this process to another CPU, as
//! `make bench-rotation` does. `ROUNDS` sets the rounds (default 3, about 80 s
//! each); `SLUICE_SERVER_BIN` another server binary.

#[path = "support/launch.rs"]
mod launch;
// Its HTTP/1.1-only closed loop is not used here: these callers reconnect.
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use launch::{launch, median};
use support::{Server, process_cpu};

const DEFAULT_ROUNDS: usize = 3;
/// Longer than the longest age measured, so that its rotations show.
const MEASURE: Duration = Duration::from_secs(12);
const CONCURRENCY: usize = 16;
const BODY: &str = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,16],"data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5,1.6]}]}"#;

/// The protocol a client speaks.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http1,
    Http2,
}

/// One connection of a client, of either protocol.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// A new connection to `127.0.0.1:port`.
    async fn connect(protocol: Protocol, port: u16) -> Sender {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let io = TokioIo::new(stream);
        match protocol {
            Protocol::Http1 => {
                let (sender, connection) = hyper::client::conn::http1::handshake(io)
                    .await
                    .expect("HTTP/1.1 handshake");
                tokio::spawn(connection);
                Sender::Http1(sender)
            }
            Protocol::Http2 => {
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .expect("HTTP/2 handshake");
                tokio::spawn(connection);
                Sender::Http2(sender)
            }
        }
    }

    /// Whether the connection can take another request: it is open and the
    /// server has not asked the client to leave.
    async fn usable(&mut self) -> bool {
        match self {
            Sender::Http1(sender) => sender.ready().await.is_ok(),
            Sender::Http2(sender) => sender.ready().await.is_ok(),
        }
    }

    /// Sends one request; `None` when the server never processed it: the
    /// connection closed before it was sent, or HTTP/2 refused its stream after
    /// the GOAWAY (REFUSED_STREAM, or a stream above the GOAWAY's last one). The
    /// client then reconnects and sends it again, as gRPC's transparent retry
    /// does.
    async fn send(&mut self) -> Option<hyper::Response<hyper::body::Incoming>> {
        let request = hyper::Request::post("http://127.0.0.1/v2/models/mlp/infer")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .expect("request");
        let sent = match self {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::Http2(sender) => sender.send_request(request).await,
        };
        match sent {
            Ok(response) => Some(response),
            Err(error) if error.is_canceled() || never_processed(&error) => None,
            Err(error) => panic!("request failed: {error:?}"),
        }
    }
}

/// Whether HTTP/2 says the server never processed the request (RFC 9113,
/// section 8.7): its stream was refused, or lay above the last stream of a
/// graceful (NO_ERROR) GOAWAY.
fn never_processed(error: &hyper::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<h2::Error>())
        .is_some_and(|h2| {
            h2.is_remote()
                && match h2.reason() {
                    Some(h2::Reason::REFUSED_STREAM) => true,
                    Some(h2::Reason::NO_ERROR) => h2.is_go_away(),
                    _ => false,
                }
        })
}

/// What one closed-loop client run measured.
#[derive(Default)]
struct Load {
    latencies: Vec<Duration>,
    /// New connections after the first.
    reconnects: usize,
    resent: usize,
}

/// One closed-loop caller: sends its next request when the last one answers,
/// reconnecting whenever the server asked it to.
async fn caller(protocol: Protocol, port: u16, duration: Duration) -> Load {
    let mut load = Load::default();
    let mut sender = Sender::connect(protocol, port).await;
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        let response = loop {
            if !sender.usable().await {
                sender = Sender::connect(protocol, port).await;
                load.reconnects += 1;
            }
            match sender.send().await {
                Some(response) => break response,
                None => load.resent += 1,
            }
        };
        let status = response.status();
        response.into_body().collect().await.expect("body");
        assert!(status.is_success(), "answered {status}");
        load.latencies.push(t.elapsed());
    }
    load
}

/// What one server measured in one round.
struct Round {
    handshakes_per_second: f64,
    p50: f64,
    p99: f64,
    requests_per_second: f64,
    cpu_micros_per_request: f64,
    resent: usize,
}

async fn measure(server: &Server, port: u16, protocol: Protocol) -> Round {
    let pid = server.0.id();
    let cpu_before = process_cpu(pid);
    let started = Instant::now();
    let callers: Vec<_> = (0..CONCURRENCY)
        .map(|_| tokio::spawn(caller(protocol, port, MEASURE)))
        .collect();
    let mut all = Load::default();
    for caller in callers {
        let load = caller.await.expect("caller");
        all.latencies.extend(load.latencies);
        all.reconnects += load.reconnects;
        all.resent += load.resent;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu(pid) - cpu_before;
    all.latencies.sort();
    let at = |q: f64| support::quantile(&all.latencies, q).as_secs_f64() * 1e6;
    let requests = all.latencies.len() as f64;
    Round {
        handshakes_per_second: all.reconnects as f64 / elapsed,
        p50: at(0.5),
        p99: at(0.99),
        requests_per_second: requests / elapsed,
        cpu_micros_per_request: cpu.as_secs_f64() * 1e6 / requests,
        resent: all.resent,
    }
}

fn flags(age: f64) -> Vec<String> {
    vec!["--max-connection-age-seconds".into(), age.to_string()]
}

fn main() -> anyhow::Result<()> {
    // The server beside this benchmark, or `SLUICE_SERVER_BIN` (as in the tests).
    let binary = match std::env::var_os("SLUICE_SERVER_BIN") {
        Some(binary) => PathBuf::from(binary),
        None => std::env::current_exe()?
            .parent()
            .context("bench has a folder")?
            .join("../sluice-server"),
    };
    let repository = launch::mlp_repository("bench-rotation")?;
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&binary, &repository, rounds));
    let _ = std::fs::remove_dir_all(&repository);
    result
}

async fn run(binary: &Path, repository: &Path, rounds: usize) -> anyhow::Result<()> {
    println!(
        "connection rotation: {CONCURRENCY} closed-loop callers per server, {} s per round, \
         {rounds} rounds; medians against the server with rotation off loaded beside it",
        MEASURE.as_secs()
    );
    println!(
        "{:<8} {:>7} {:>22} {:>9} {:>9} {:>10} {:>10} {:>8}",
        "protocol",
        "age",
        "handshakes/s (vs off)",
        "p50 x",
        "p99 x",
        "req/s x",
        "CPU/req x",
        "resent"
    );
    for protocol in [Protocol::Http1, Protocol::Http2] {
        for age in [0.0, 10.0, 1.0] {
            let mut figures: [Vec<f64>; 7] = Default::default();
            let mut resent = 0;
            for _ in 0..rounds {
                let (off, off_port) = launch(binary, repository, &flags(0.0), "off").await?;
                let (on, on_port) = launch(binary, repository, &flags(age), "rotating").await?;
                let (base, rotating) = tokio::join!(
                    measure(&off, off_port, protocol),
                    measure(&on, on_port, protocol)
                );
                for (list, value) in figures.iter_mut().zip([
                    rotating.handshakes_per_second,
                    base.handshakes_per_second,
                    rotating.p50 / base.p50,
                    rotating.p99 / base.p99,
                    rotating.requests_per_second / base.requests_per_second,
                    rotating.cpu_micros_per_request / base.cpu_micros_per_request,
                    rotating.p99,
                ]) {
                    list.push(value);
                }
                resent += rotating.resent;
            }
            let [handshakes, base_handshakes, p50, p99, rate, cpu, p99_micros] =
                figures.map(|mut list| median(&mut list));
            println!(
                "{:<8} {:>6}s {:>11.1} ({:>7.1}) {p50:>9.3} {p99:>9.3} {rate:>10.3} {cpu:>10.3} {resent:>8}   (p99 {p99_micros:.0} us)",
                format!("{protocol:?}").to_lowercase(),
                age,
                handshakes,
                base_handshakes,
            );
        }
    }
    Ok(())
}
