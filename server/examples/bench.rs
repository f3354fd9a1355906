//! `make bench`: how much sluice-server costs and gains over raw ONNX Runtime and
//! over a naive server, measured in one run on the fixture MLP. Prints figures;
//! asserts nothing.
//!
//! The servers run pinned to CPU 0 (`taskset -c 0`) with one intra-op thread; this
//! process (the load generator and the raw in-process runs) should be pinned to
//! another CPU, as `make bench` does.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::Full;
use hyper::body::Bytes;
use sluice_server::config::ModelConfig;
use sluice_server::runtime::OnnxModel;
use sluice_server::tensor::{Tensor, TensorData};
use support::{Server, closed_loop, cpu_time, pinned, process_cpu, sluice_serve};

const FEATURES: usize = 16;
/// The server's `max_batch_size`, and the raw baseline's largest batch.
const MAX_BATCH: usize = 256;
/// Rows per request in the large-request scenario (binary tensor extension).
const LARGE_REQUEST_ROWS: usize = 32;
/// Closed-loop clients against the compute-bound `wide` model: enough to fill
/// full batches while one runs.
const WIDE_CONCURRENCY: usize = 2 * MAX_BATCH;
const MEASURE: Duration = Duration::from_secs(5);
const WARM: Duration = Duration::from_secs(1);

/// Latency percentiles and throughput of one measurement.
struct Figures {
    p50: Duration,
    p99: Duration,
    per_second: f64,
    /// CPU time the server process spent per request, when measured.
    cpu_per_request: Option<Duration>,
}

impl Figures {
    fn from_latencies(mut latencies: Vec<Duration>, elapsed: Duration, units: f64) -> Figures {
        latencies.sort();
        Figures {
            p50: support::quantile(&latencies, 0.50),
            p99: support::quantile(&latencies, 0.99),
            per_second: units / elapsed.as_secs_f64(),
            cpu_per_request: None,
        }
    }

    fn print(&self, label: &str, unit: &str) {
        let cpu = self
            .cpu_per_request
            .map(|cpu| format!("   CPU {:>8.1} us/request", cpu.as_secs_f64() * 1e6))
            .unwrap_or_default();
        println!(
            "{label:<40} p50 {:>9.1} us   p99 {:>9.1} us   {:>10.0} {unit}/s{cpu}",
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
            self.per_second
        );
    }
}

/// CPU time (user + system) that the calling thread has used so far.
fn thread_cpu() -> Duration {
    cpu_time("/proc/thread-self/stat")
}

fn rows(count: usize) -> Tensor {
    let data = (0..count * FEATURES)
        .map(|i| (i % 7) as f32 * 0.25 - 0.5)
        .collect();
    Tensor::new(vec![count as i64, FEATURES as i64], TensorData::Fp32(data)).expect("valid tensor")
}

fn bench_config() -> ModelConfig {
    ModelConfig {
        max_batch_size: MAX_BATCH,
        intra_op_threads: 1,
        ..ModelConfig::default()
    }
}

/// Raw in-process `session.run` at each of `batch_rows`.
fn raw(model_path: &Path, batch_rows: &[usize]) -> anyhow::Result<Vec<Figures>> {
    let mut model = OnnxModel::load(model_path, &bench_config())?;
    let mut measure = |input: &Tensor, units: f64| -> anyhow::Result<Figures> {
        let warm_until = Instant::now() + WARM;
        while Instant::now() < warm_until {
            model.run(&[input])?;
        }
        let mut latencies = Vec::new();
        let cpu_before = thread_cpu();
        let started = Instant::now();
        while started.elapsed() < MEASURE {
            let t = Instant::now();
            model.run(&[input])?;
            latencies.push(t.elapsed());
        }
        let cpu = thread_cpu() - cpu_before;
        let runs = latencies.len();
        let mut figures =
            Figures::from_latencies(latencies, started.elapsed(), runs as f64 * units);
        // With one intra-op thread ONNX Runtime runs on the calling thread.
        figures.cpu_per_request = Some(cpu / runs.max(1) as u32);
        Ok(figures)
    };
    batch_rows
        .iter()
        .map(|count| measure(&rows(*count), *count as f64))
        .collect()
}

async fn wait_until_ok(client: &reqwest::Client, url: &str, method_post: Option<&str>) -> Duration {
    let started = Instant::now();
    loop {
        let request = match method_post {
            Some(body) => client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string()),
            None => client.get(url),
        };
        if let Ok(response) = request.send().await
            && response.status().is_success()
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} never answered"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn start_sluice(binary: &Path, repository: &Path, port: u16) -> anyhow::Result<Server> {
    let child = sluice_serve(binary, repository, port, port + 1)
        .spawn()
        .context("start sluice-server")?;
    Ok(Server(child))
}

/// One prepared request body, JSON or binary-extension.
#[derive(Clone)]
struct Payload {
    body: Vec<u8>,
    /// `Inference-Header-Content-Length` for binary payloads.
    header_length: Option<usize>,
    rows: usize,
}

impl Payload {
    /// A JSON request of `count` rows.
    fn json(count: usize) -> Payload {
        let values: Vec<String> = match rows(count).data {
            TensorData::Fp32(values) => values.iter().map(f32::to_string).collect(),
            _ => unreachable!("rows are FP32"),
        };
        let body = format!(
            r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[{count},{FEATURES}],"data":[{}]}}]}}"#,
            values.join(",")
        );
        Payload {
            body: body.into_bytes(),
            header_length: None,
            rows: count,
        }
    }

    /// A binary-extension request of `count` rows asking for binary outputs.
    fn binary(count: usize) -> Payload {
        let tensor = rows(count).data.to_le_bytes();
        let header = format!(
            r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[{count},{FEATURES}],"parameters":{{"binary_data_size":{}}}}}],"parameters":{{"binary_data_output":true}}}}"#,
            tensor.len()
        );
        let header_length = header.len();
        let mut body = header.into_bytes();
        body.extend_from_slice(&tensor);
        Payload {
            body,
            header_length: Some(header_length),
            rows: count,
        }
    }

    fn request(&self, path: &str) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json");
        if let Some(length) = self.header_length {
            request = request.header("inference-header-content-length", length);
        }
        request
            .body(Full::new(Bytes::from(self.body.clone())))
            .expect("valid request")
    }
}

/// Closed-loop load ([`support::closed_loop`]) over `concurrency` connections for
/// `MEASURE` after `WARM`. Throughput counts rows.
///
/// The server's CPU time per request is measured too: unlike throughput it does
/// not depend on how fast the load generator is, nor on other work on the machine.
async fn load(
    server: &Server,
    port: u16,
    path: &str,
    payload: &Payload,
    concurrency: usize,
) -> Figures {
    let request = {
        let (path, payload) = (path.to_string(), payload.clone());
        move || payload.request(&path)
    };
    let run = |duration| closed_loop(port, concurrency, duration, request.clone());
    run(WARM).await;
    let cpu_before = process_cpu(server.0.id());
    let (latencies, elapsed) = run(MEASURE).await;
    let cpu = process_cpu(server.0.id()) - cpu_before;
    let requests = latencies.len();
    let mut figures = Figures::from_latencies(latencies, elapsed, (requests * payload.rows) as f64);
    figures.cpu_per_request = Some(cpu / requests.max(1) as u32);
    figures
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = std::env::current_exe()?;
    let examples = exe.parent().context("bench has a folder")?;
    let server_binary = examples.join("../sluice-server");
    let naive_binary = examples.join("naive_server");
    let model_source = root.join("server/fixtures/models/mlp/1/model.onnx");
    anyhow::ensure!(
        model_source.exists(),
        "run `make deps` first: {} is missing",
        model_source.display()
    );

    let repository = std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir_all(repository.join("mlp/1"))?;
    std::fs::copy(&model_source, repository.join("mlp/1/model.onnx"))?;
    std::fs::write(
        repository.join("mlp/config.yaml"),
        format!("max_batch_size: {MAX_BATCH}\nintra_op_threads: 1\n"),
    )?;
    // The compute-bound model gets a repository (and a server) of its own, so
    // that the cold start above measures the fixture MLP alone.
    let wide_repository = repository.join("wide-only");
    let wide_source = root.join("server/fixtures/models/wide/1/model.onnx");
    std::fs::create_dir_all(wide_repository.join("wide/1"))?;
    std::fs::copy(&wide_source, wide_repository.join("wide/1/model.onnx"))?;
    std::fs::write(
        wide_repository.join("wide/config.yaml"),
        format!("max_batch_size: {MAX_BATCH}\nintra_op_threads: 1\n"),
    )?;

    println!("sluice bench: fixture MLP (16 -> 32 -> 4), one intra-op thread, servers on CPU 0");
    println!("throughput is in rows/s (one row per request unless stated)");
    println!();
    let raw_figures = raw(
        &repository.join("mlp/1/model.onnx"),
        &[1, LARGE_REQUEST_ROWS, MAX_BATCH],
    )?;
    let (raw_one, raw_large, raw_max) = (&raw_figures[0], &raw_figures[1], &raw_figures[2]);
    raw_one.print("raw session.run, 1 row", "rows");
    raw_large.print(
        &format!("raw session.run, {LARGE_REQUEST_ROWS}-row batches"),
        "rows",
    );
    raw_max.print(&format!("raw session.run, {MAX_BATCH}-row batches"), "rows");
    let raw_wide = raw(&wide_repository.join("wide/1/model.onnx"), &[1, MAX_BATCH])?;
    raw_wide[0].print("raw session.run, wide model, 1 row", "rows");
    raw_wide[1].print(
        &format!("raw session.run, wide model, {MAX_BATCH}-row"),
        "rows",
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        let single = Payload::json(1);

        let mut cold_starts = Vec::new();
        for attempt in 0..5u16 {
            let port = 19100 + attempt * 2;
            let started = Instant::now();
            let _server = start_sluice(&server_binary, &repository, port)?;
            wait_until_ok(&client, &format!("http://127.0.0.1:{port}/v2/health/ready"), None).await;
            cold_starts.push(started.elapsed());
        }
        cold_starts.sort();

        let sluice_server = start_sluice(&server_binary, &repository, 19000)?;
        let naive_server = Server(
            pinned(&naive_binary)
                .arg(repository.join("mlp/1/model.onnx"))
                .arg("19010")
                .spawn()
                .context("start naive_server")?,
        );
        let path = "/v2/models/mlp/infer";
        let (sluice_port, naive_port) = (19000, 19010);
        let probe = String::from_utf8(single.body.clone())?;
        for port in [sluice_port, naive_port] {
            wait_until_ok(&client, &format!("http://127.0.0.1:{port}{path}"), Some(&probe)).await;
        }

        println!();
        let mut results = Vec::new();
        for concurrency in [1, 16, 64] {
            let naive = load(&naive_server, naive_port, path, &single, concurrency).await;
            naive.print(&format!("naive server, concurrency {concurrency}"), "rows");
            let sluice = load(&sluice_server, sluice_port, path, &single, concurrency).await;
            sluice.print(&format!("sluice-server, concurrency {concurrency}"), "rows");
            results.push((naive, sluice));
        }
        let noop_1 = load(&naive_server, naive_port, "/noop", &single, 1).await;
        noop_1.print("no-op handler (floor), concurrency 1", "rows");
        let noop = load(&naive_server, naive_port, "/noop", &single, 16).await;
        noop.print("no-op handler (ceiling), concurrency 16", "rows");
        let large = load(
            &sluice_server,
            sluice_port,
            path,
            &Payload::binary(LARGE_REQUEST_ROWS),
            16,
        )
        .await;
        large.print(
            &format!("sluice-server, {LARGE_REQUEST_ROWS}-row binary, conc. 16"),
            "rows",
        );

        drop(sluice_server);
        drop(naive_server);
        let wide_port = 19020;
        let wide_server = start_sluice(&server_binary, &wide_repository, wide_port)?;
        wait_until_ok(&client, &format!("http://127.0.0.1:{wide_port}/v2/health/ready"), None).await;
        let wide = load(
            &wide_server,
            wide_port,
            "/v2/models/wide/infer",
            &single,
            WIDE_CONCURRENCY,
        )
        .await;
        wide.print(
            &format!("sluice-server, wide model, conc. {WIDE_CONCURRENCY}"),
            "rows",
        );
        // Large requests: the HTTP and JSON cost per row is spread over 32 rows,
        // so what is left is the batching path's own cost.
        let wide_large_concurrency = WIDE_CONCURRENCY / LARGE_REQUEST_ROWS;
        let wide_large = load(
            &wide_server,
            wide_port,
            "/v2/models/wide/infer",
            &Payload::binary(LARGE_REQUEST_ROWS),
            wide_large_concurrency,
        )
        .await;
        wide_large.print(
            &format!("sluice-server, wide, {LARGE_REQUEST_ROWS}-row binary, conc. {wide_large_concurrency}"),
            "rows",
        );

        let (naive_1, sluice_1) = &results[0];
        let (naive_16, sluice_16) = &results[1];
        let (_, sluice_64) = &results[2];
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        println!();
        println!(
            "cold start (spawn to ready), median of 5: {:.1} ms",
            cold_starts[2].as_secs_f64() * 1e3
        );
        println!(
            "p50 overhead beyond raw session.run at concurrency 1: {:.1} us (naive server: {:.1} us)",
            micros(sluice_1.p50) - micros(raw_one.p50),
            micros(naive_1.p50) - micros(raw_one.p50)
        );
        // The no-op handler's round trip is what this machine's loopback, kernel
        // and HTTP stack cost before any server does anything.
        println!(
            "p50 at concurrency 1 beyond raw session.run and the no-op round trip ({:.1} us): {:.1} us (naive server: {:.1} us)",
            micros(noop_1.p50),
            micros(sluice_1.p50) - micros(raw_one.p50) - micros(noop_1.p50),
            micros(naive_1.p50) - micros(raw_one.p50) - micros(noop_1.p50)
        );
        println!(
            "p50 at concurrency 1, sluice / naive: {:.2}",
            sluice_1.p50.as_secs_f64() / naive_1.p50.as_secs_f64()
        );
        println!(
            "throughput at concurrency 16, sluice / naive: {:.2}x",
            sluice_16.per_second / naive_16.per_second
        );
        println!(
            "throughput at concurrency 16, sluice / no-op handler: {:.2}",
            sluice_16.per_second / noop.per_second
        );
        if let (Some(naive_cpu), Some(sluice_cpu)) =
            (naive_16.cpu_per_request, sluice_16.cpu_per_request)
        {
            println!(
                "server CPU per request at concurrency 16, naive / sluice: {:.2}x (the throughput ratio of CPU-bound servers, whatever the load generator)",
                naive_cpu.as_secs_f64() / sluice_cpu.as_secs_f64()
            );
        }
        println!(
            "saturation, single-row JSON (concurrency 64): {:.1}% of raw {MAX_BATCH}-row session.run",
            100.0 * sluice_64.per_second / raw_max.per_second
        );
        println!(
            "saturation, {LARGE_REQUEST_ROWS}-row binary requests: {:.1}% of raw {MAX_BATCH}-row session.run",
            100.0 * large.per_second / raw_max.per_second
        );
        println!(
            "saturation, compute-bound wide model, single-row JSON (concurrency {WIDE_CONCURRENCY}): {:.1}% of raw {MAX_BATCH}-row session.run",
            100.0 * wide.per_second / raw_wide[1].per_second
        );
        println!(
            "saturation, compute-bound wide model, {LARGE_REQUEST_ROWS}-row binary requests: {:.1}% of raw {MAX_BATCH}-row session.run",
            100.0 * wide_large.per_second / raw_wide[1].per_second
        );
        // The same fractions from CPU time, which other work on the machine does
        // not distort: raw CPU per row over the server's CPU per row.
        let cpu_fraction = |raw: &Figures, raw_rows: usize, server: &Figures, rows: usize| {
            let per_row = |figures: &Figures, rows: usize| {
                figures.cpu_per_request.unwrap_or_default().as_secs_f64() / rows as f64
            };
            100.0 * per_row(raw, raw_rows) / per_row(server, rows)
        };
        println!(
            "by CPU time: single-row JSON {:.1}%, {LARGE_REQUEST_ROWS}-row binary {:.1}%, wide model {:.1}% (single-row) and {:.1}% ({LARGE_REQUEST_ROWS}-row) of raw {MAX_BATCH}-row session.run",
            cpu_fraction(raw_max, MAX_BATCH, sluice_64, 1),
            cpu_fraction(raw_max, MAX_BATCH, &large, LARGE_REQUEST_ROWS),
            cpu_fraction(&raw_wide[1], MAX_BATCH, &wide, 1),
            cpu_fraction(&raw_wide[1], MAX_BATCH, &wide_large, LARGE_REQUEST_ROWS)
        );
        anyhow::Ok(())
    })?;
    std::fs::remove_dir_all(&repository)?;
    Ok(())
}
