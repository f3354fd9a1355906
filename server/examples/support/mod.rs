//! What the benchmarks share: server processes pinned to CPU 0 that stop with the
//! benchmark, the closed-loop HTTP/1.1 load generator and CPU-time readings.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// `N` local ports nothing listens on, held together while they are picked so
/// that they differ.
#[allow(dead_code)] // not every benchmark starts servers of its own
pub fn free_ports<const N: usize>() -> std::io::Result<[u16; N]> {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&held) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// The value at quantile `q` (0.5 for the median, 0.99 for p99) of `sorted`,
/// which is sorted and not empty: the nearest rank at or below.
#[allow(dead_code)] // not every benchmark reports percentiles
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

/// `program` to run on CPU 0 (`taskset -c 0`) with its output discarded; the
/// benchmark itself runs on another CPU.
pub fn pinned(program: &Path) -> Command {
    let mut command = Command::new("taskset");
    command
        .args(["-c", "0"])
        .arg(program)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// `sluice-server serve` of `repository` on 127.0.0.1, pinned like [`pinned`];
/// add flags before spawning.
pub fn sluice_serve(binary: &Path, repository: &Path, http_port: u16, grpc_port: u16) -> Command {
    let mut command = pinned(binary);
    command
        .args(["serve", "--host", "127.0.0.1", "--model-repository"])
        .arg(repository)
        .args(["--http-port", &http_port.to_string()])
        .args(["--grpc-port", &grpc_port.to_string()]);
    command
}

/// A server process that is killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Closed-loop load over `concurrency` keep-alive HTTP/1.1 connections to
/// `127.0.0.1:port`, each sending its next `request()` when the last one answers,
/// for `duration`. Returns every request's latency and the time the run took.
/// The client is hyper without a pool, so that it costs far less CPU than the
/// servers it measures. Panics on any answer but 2xx.
pub async fn closed_loop<F>(
    port: u16,
    concurrency: usize,
    duration: Duration,
    request: F,
) -> (Vec<Duration>, Duration)
where
    F: Fn() -> hyper::Request<Full<Bytes>> + Clone + Send + 'static,
{
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(connection);
                let mut latencies = Vec::new();
                let started = Instant::now();
                while started.elapsed() < duration {
                    let t = Instant::now();
                    let response = sender.send_request(request()).await.expect("response");
                    let status = response.status();
                    response.into_body().collect().await.expect("body");
                    assert!(status.is_success(), "answered {status}");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    (all, started.elapsed())
}

/// CPU time (user + system) that process `pid` has used so far.
pub fn process_cpu(pid: u32) -> Duration {
    cpu_time(&format!("/proc/{pid}/stat"))
}

/// CPU time (user + system) in a `/proc/.../stat` file (fields 14 and 15, in
/// clock ticks of 10 ms).
pub fn cpu_time(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}
