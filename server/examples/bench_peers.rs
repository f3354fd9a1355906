//! `make bench-peers`: sluice-server beside the servers one would otherwise run,
//! on the fixture MLP, each alone on CPU 0 with one ONNX Runtime thread, with the
//! same client and the same load. Every figure is measured in the run that prints it.
//!
//! Each peer is a command line (`--peer NAME=COMMAND`) that serves the model as
//! `mlp` over the Open Inference Protocol. The command runs under `sh -c`, pinned to
//! CPU 0 with `OMP_NUM_THREADS=1`, its output in `OUT/<name>.log`; these
//! placeholders are filled in first:
//! - `{repository}`: a model repository holding `mlp/1/model.onnx` and its
//!   `config.yaml` (one intra-op thread);
//! - `{model}`: that `model.onnx`;
//! - `{http_port}`, `{grpc_port}`, `{metrics_port}`: ports nothing listens on.
//!
//! For each peer, one after the other: start it, wait until it answers an
//! inference, then closed-loop load of single-row JSON requests over keep-alive
//! connections ([`support::closed_loop`]) at concurrency 1 (p50, p99), 16 and
//! [`SATURATION`] (requests/s, and the server's CPU time per request), then the
//! protocol checks of `server/bench/peers/protocol_checks.py` (tritonclient over
//! HTTP and gRPC), then stop it. A peer that fails to start or to answer is
//! reported with the tail of its log and marked failed; the others still run.
//!
//! Prints a table, and writes `OUT/results.json` (every figure) and `OUT/table.md`
//! (the machine, the date and the table in Markdown), which
//! `server/bench/peers/report/report.py` puts into docs/performance.md with a plot.
//! Run this process on another CPU than the peers, as `make bench-peers` does
//! (`taskset -c 1`).

// Only `mlp_repository` of launch.rs, and not every helper of support, is used here.
#[allow(dead_code)]
#[path = "support/launch.rs"]
mod launch;
#[allow(dead_code)]
mod support;

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use support::{Server, closed_loop, free_ports, pinned, process_cpu, quantile};

/// The name every peer serves the model under.
const MODEL: &str = "mlp";
const INFER_PATH: &str = "/v2/models/mlp/infer";
/// One row of the fixture MLP's 16 features, as JSON.
const BODY: &str = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,16],"data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5,1.6]}]}"#;
/// Load before each measurement that is not measured.
const WARM: Duration = Duration::from_secs(1);
/// Concurrencies beyond 16 tried for the saturation throughput, which is the
/// highest requests/s of 16 and these.
const SATURATION: [usize; 2] = [64, 256];
/// How long a peer may take from its start to its first answered inference.
const START_LIMIT: Duration = Duration::from_secs(120);
/// How long a load step may run beyond its own duration before the peer counts
/// as hung.
const STEP_GRACE: Duration = Duration::from_secs(30);
/// Log lines shown when a peer fails.
const LOG_TAIL_LINES: usize = 20;
/// The name of the thread the load runs on.
const LOAD_THREAD: &str = "load";

/// sluice-server beside its peers; see the module's documentation.
#[derive(Parser)]
struct Args {
    /// A peer, as NAME=COMMAND (the command's placeholders are listed above); in
    /// the order given, which is the table's.
    #[arg(long = "peer", value_parser = parse_peer, required = true)]
    peers: Vec<Peer>,
    /// The Python that runs protocol_checks.py: one with tritonclient and
    /// onnxruntime, such as the project's venv.
    #[arg(long)]
    checks_python: PathBuf,
    /// Where results.json, table.md and each peer's log go.
    #[arg(long)]
    out: PathBuf,
    /// Seconds each measurement loads a peer for, after a second of warm-up.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

/// A server to measure: its name in the table and the command that starts it.
#[derive(Clone)]
struct Peer {
    name: String,
    command: String,
}

fn parse_peer(text: &str) -> Result<Peer, String> {
    match text.split_once('=') {
        Some((name, command)) if !name.is_empty() && !command.is_empty() => Ok(Peer {
            name: name.to_string(),
            command: command.to_string(),
        }),
        _ => Err(format!("expected NAME=COMMAND, got {text:?}")),
    }
}

/// What one closed-loop measurement at one concurrency showed.
#[derive(Serialize)]
struct Step {
    concurrency: usize,
    p50_us: f64,
    p99_us: f64,
    requests_per_second: f64,
    /// The peer process's CPU time (user + system) per answered request.
    cpu_us_per_request: f64,
}

/// One protocol check's outcome, as protocol_checks.py prints it.
#[derive(Serialize, Deserialize)]
struct Check {
    protocol: String,
    name: String,
    passed: bool,
    detail: String,
}

/// Everything measured of one peer; figures it did not get to stay empty.
#[derive(Serialize)]
struct PeerResult {
    name: String,
    /// Why the peer was given up on (its log's tail is printed, not kept).
    error: Option<String>,
    /// From its start to its first answered inference.
    ready_seconds: Option<f64>,
    steps: Vec<Step>,
    checks: Vec<Check>,
}

impl PeerResult {
    fn step(&self, concurrency: usize) -> Option<&Step> {
        self.steps
            .iter()
            .find(|step| step.concurrency == concurrency)
    }

    /// The step with the most requests/s at concurrency 16 or more.
    fn saturation(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|step| step.concurrency >= 16)
            .max_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second))
    }

    /// "passed/total" of the checks over `protocol`, or "-" when none ran.
    fn checks_passed(&self, protocol: &str) -> String {
        let over: Vec<&Check> = self
            .checks
            .iter()
            .filter(|check| check.protocol == protocol)
            .collect();
        if over.is_empty() {
            return "-".to_string();
        }
        let passed = over.iter().filter(|check| check.passed).count();
        format!("{passed}/{}", over.len())
    }
}

/// The ports a peer's command is given.
struct Ports {
    http: u16,
    grpc: u16,
    metrics: u16,
}

impl Ports {
    /// Three ports nothing listens on.
    fn free() -> anyhow::Result<Ports> {
        let [http, grpc, metrics] = free_ports()?;
        Ok(Ports {
            http,
            grpc,
            metrics,
        })
    }
}

/// The single-row request every peer gets.
fn request() -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(INFER_PATH)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("valid request")
}

/// `peer` started on CPU 0 with one OpenMP thread, its output in `log`.
fn start(peer: &Peer, repository: &Path, ports: &Ports, log: &Path) -> anyhow::Result<Server> {
    let model = repository.join("mlp/1/model.onnx");
    let command = peer
        .command
        .replace("{repository}", &repository.display().to_string())
        .replace("{model}", &model.display().to_string())
        .replace("{http_port}", &ports.http.to_string())
        .replace("{grpc_port}", &ports.grpc.to_string())
        .replace("{metrics_port}", &ports.metrics.to_string());
    let output = File::create(log).with_context(|| format!("create {}", log.display()))?;
    // `exec` makes the server the pinned process itself, whose CPU time is read.
    let child = pinned(Path::new("sh"))
        .args(["-c", &format!("exec {command}")])
        .env("OMP_NUM_THREADS", "1")
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .with_context(|| format!("start `{command}`"))?;
    Ok(Server(child))
}

/// Waits until `server` answers the single-row inference with a 2xx; returns how
/// long that took from now.
fn wait_until_serving(server: &mut Server, port: u16) -> anyhow::Result<Duration> {
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}{INFER_PATH}");
    let started = Instant::now();
    loop {
        if let Some(status) = server.0.try_wait()? {
            anyhow::bail!("it exited ({status}) before it answered an inference");
        }
        let answer = client
            .post(&url)
            .header("content-type", "application/json")
            .body(BODY)
            .timeout(Duration::from_secs(5))
            .send();
        if let Ok(response) = answer
            && response.status().is_success()
        {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < START_LIMIT,
            "it answered no inference within {} s",
            START_LIMIT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Closed-loop load for `duration`; an error, not a panic, when the peer fails
/// a request or hangs.
async fn run_load(
    port: u16,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let load = tokio::spawn(closed_loop(port, concurrency, duration, request));
    let abort = load.abort_handle();
    match tokio::time::timeout(duration + STEP_GRACE, load).await {
        Ok(Ok(figures)) => Ok(figures),
        Ok(Err(failed)) => {
            let reason = failed
                .try_into_panic()
                .ok()
                .and_then(|panic| {
                    let text = panic.downcast_ref::<String>().cloned();
                    text.or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                })
                .unwrap_or_else(|| "the load task was cancelled".to_string());
            anyhow::bail!("the load at concurrency {concurrency} failed: {reason}")
        }
        Err(_) => {
            abort.abort();
            anyhow::bail!(
                "the load at concurrency {concurrency} did not finish within {} s of its end",
                STEP_GRACE.as_secs()
            )
        }
    }
}

/// One measurement at `concurrency` after [`WARM`]: latencies, throughput and the
/// peer's CPU time per request.
async fn measure(
    server: &Server,
    port: u16,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Step> {
    run_load(port, concurrency, WARM).await?;
    let cpu_before = process_cpu(server.0.id());
    let (mut latencies, elapsed) = run_load(port, concurrency, duration).await?;
    let cpu = process_cpu(server.0.id()) - cpu_before;
    anyhow::ensure!(!latencies.is_empty(), "no request was answered");
    latencies.sort();
    let micros = |q: f64| quantile(&latencies, q).as_secs_f64() * 1e6;
    let requests = latencies.len() as f64;
    Ok(Step {
        concurrency,
        p50_us: micros(0.50),
        p99_us: micros(0.99),
        requests_per_second: requests / elapsed.as_secs_f64(),
        cpu_us_per_request: cpu.as_secs_f64() * 1e6 / requests,
    })
}

/// The protocol checks of protocol_checks.py against a running peer.
fn protocol_checks(python: &Path, ports: &Ports, model: &Path) -> anyhow::Result<Vec<Check>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/peers/protocol_checks.py");
    let output = Command::new(python)
        .arg(&script)
        .args(["--http", &format!("127.0.0.1:{}", ports.http)])
        .args(["--grpc", &format!("127.0.0.1:{}", ports.grpc)])
        .args(["--name", MODEL, "--model"])
        .arg(model)
        .output()
        .with_context(|| format!("run {} {}", python.display(), script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "protocol_checks.py failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("a check's line: {line}")))
        .collect()
}

/// The last [`LOG_TAIL_LINES`] lines of `log`.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "(empty)".to_string();
    }
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Starts, measures, checks and stops one peer, filling `result` as it goes.
fn bench_peer(
    peer: &Peer,
    args: &Args,
    repository: &Path,
    log: &Path,
    runtime: &tokio::runtime::Runtime,
    result: &mut PeerResult,
) -> anyhow::Result<()> {
    let ports = Ports::free()?;
    let mut server = start(peer, repository, &ports, log)?;
    let ready = wait_until_serving(&mut server, ports.http)?;
    result.ready_seconds = Some(ready.as_secs_f64());
    println!(
        "{}: answering after {:.1} s",
        peer.name,
        ready.as_secs_f64()
    );
    let duration = Duration::from_secs_f64(args.seconds);
    for concurrency in [1, 16].into_iter().chain(SATURATION) {
        let step = runtime.block_on(measure(&server, ports.http, concurrency, duration))?;
        println!(
            "{}: concurrency {concurrency:>3}: p50 {:>9.1} us  p99 {:>9.1} us  {:>8.0} requests/s  CPU {:>7.1} us/request",
            peer.name, step.p50_us, step.p99_us, step.requests_per_second, step.cpu_us_per_request
        );
        result.steps.push(step);
    }
    let model = repository.join("mlp/1/model.onnx");
    result.checks = protocol_checks(&args.checks_python, &ports, &model)?;
    if let Some(status) = server.0.try_wait()? {
        anyhow::bail!("it exited ({status}) during the protocol checks");
    }
    Ok(())
}

/// The table's header and one row per peer; a missing figure reads "failed".
fn table(results: &[PeerResult]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "Server",
        "p50 at 1 (us)",
        "p99 at 1 (us)",
        "req/s at 16",
        "CPU/req at 16 (us)",
        "req/s at saturation",
        "HTTP checks",
        "gRPC checks",
    ];
    let figure = |value: Option<f64>, decimals: usize| match value {
        Some(value) => format!("{value:.decimals$}"),
        None => "failed".to_string(),
    };
    let rows = results
        .iter()
        .map(|result| {
            let one = result.step(1);
            let sixteen = result.step(16);
            let saturation = result
                .saturation()
                .map(|step| format!("{:.0} (at {})", step.requests_per_second, step.concurrency));
            vec![
                result.name.clone(),
                figure(one.map(|step| step.p50_us), 1),
                figure(one.map(|step| step.p99_us), 1),
                figure(sixteen.map(|step| step.requests_per_second), 0),
                figure(sixteen.map(|step| step.cpu_us_per_request), 1),
                saturation.unwrap_or_else(|| "failed".to_string()),
                result.checks_passed("HTTP"),
                result.checks_passed("gRPC"),
            ]
        })
        .collect();
    (header, rows)
}

/// The failed checks and the peers given up on, one Markdown list item each; a
/// protocol whose checks all failed (a peer that does not speak it) takes one.
fn findings(results: &[PeerResult]) -> Vec<String> {
    let mut lines = Vec::new();
    for result in results {
        if let Some(error) = &result.error {
            let first = error.lines().next().unwrap_or_default();
            lines.push(format!("- {}: failed: {first}", result.name));
        }
        for protocol in ["HTTP", "gRPC"] {
            let checks: Vec<&Check> = result
                .checks
                .iter()
                .filter(|check| check.protocol == protocol)
                .collect();
            let failed: Vec<&&Check> = checks.iter().filter(|check| !check.passed).collect();
            match failed.first() {
                Some(first) if failed.len() == checks.len() => lines.push(format!(
                    "- {}: every {protocol} check failed; the first, \"{}\": {}",
                    result.name, first.name, first.detail
                )),
                _ => lines.extend(failed.iter().map(|check| {
                    format!(
                        "- {}: {protocol} check \"{}\" failed: {}",
                        result.name, check.name, check.detail
                    )
                })),
            }
        }
    }
    lines
}

/// The first CPU's model name and the number of CPUs, from /proc/cpuinfo.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |line: &str, name: &str| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_string())
    };
    let model = cpuinfo
        .lines()
        .find_map(|line| field(line, "model name"))
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cpus = cpuinfo
        .lines()
        .filter(|line| field(line, "processor").is_some())
        .count();
    format!("{model}, {cpus} CPUs")
}

/// The date, the machine, the table and the findings, in Markdown.
fn markdown(results: &[PeerResult], args: &Args) -> String {
    let (header, rows) = table(results);
    let mut text = String::new();
    let date = jiff::Timestamp::now().strftime("%Y-%m-%d");
    let _ = writeln!(
        text,
        "Measured {date} on {} (peers on CPU 0, the load generator on CPU 1), {} s per measurement after {} s of warm-up.\n",
        machine(),
        args.seconds,
        WARM.as_secs()
    );
    let _ = writeln!(text, "| {} |", header.join(" | "));
    let _ = writeln!(text, "|{}", "---|".repeat(header.len()));
    for row in &rows {
        let _ = writeln!(text, "| {} |", row.join(" | "));
    }
    let findings = findings(results);
    if !findings.is_empty() {
        let _ = writeln!(text, "\nFailures:\n\n{}", findings.join("\n"));
    }
    text
}

/// The table as aligned text for the terminal.
fn print_table(results: &[PeerResult]) {
    let (header, rows) = table(results);
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].len())
            .chain([header[column].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    println!();
    line(header.clone());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    let findings = findings(results);
    if !findings.is_empty() {
        println!("\n{}", findings.join("\n"));
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let repository = launch::mlp_repository("bench-peers")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(LOAD_THREAD)
        .enable_all()
        .build()?;
    // A peer's failed request panics in its connection's load task
    // (support::closed_loop), and run_load turns that into an error naming the
    // peer; printing the panics of up to 256 connections as well would bury it.
    let print_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        if std::thread::current().name() != Some(LOAD_THREAD) {
            print_panic(panic);
        }
    }));
    let mut results = Vec::new();
    for peer in &args.peers {
        let slug: String = peer
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let log = args.out.join(format!("{slug}.log"));
        let mut result = PeerResult {
            name: peer.name.clone(),
            error: None,
            ready_seconds: None,
            steps: Vec::new(),
            checks: Vec::new(),
        };
        println!("{}: starting `{}`", peer.name, peer.command);
        if let Err(error) = bench_peer(peer, &args, &repository, &log, &runtime, &mut result) {
            eprintln!(
                "{} FAILED: {error:#}\n--- the last lines of {} ---\n{}\n---",
                peer.name,
                log.display(),
                log_tail(&log)
            );
            result.error = Some(format!("{error:#}"));
        }
        results.push(result);
    }
    std::fs::remove_dir_all(&repository)?;

    print_table(&results);
    let json = serde_json::json!({
        "machine": machine(),
        "measure_seconds": args.seconds,
        "warm_seconds": WARM.as_secs_f64(),
        "peers": results,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(args.out.join("table.md"), markdown(&results, &args))?;
    println!(
        "\nwrote {} and {}",
        args.out.join("results.json").display(),
        args.out.join("table.md").display()
    );
    Ok(())
}
