//! `make bench` (second part): what drift tracking costs per request row, on the
//! fixture breast-cancer classifier (30 features, 3 output columns).
//!
//! Feeds batches to a real [`Monitor`] at a steady rate, as the executor does,
//! and reports (1) the time `observe` takes on the executor thread and (2) the
//! whole process's CPU time per row, the monitor thread's windows, tests and
//! publishing included, minus the same feeding loop without a monitor. Then (3)
//! the time the always-on prediction counts ([`PredictionCounts`], what the
//! rollout's prediction-agreement check reads) take per row on the same outputs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_server::config::ModelConfig;
use sluice_server::config::monitoring::{FeedbackConfig, MonitoringConfig, Task};
use sluice_server::metrics::Metrics;
use sluice_server::monitoring::Monitor;
use sluice_server::monitoring::predictions::PredictionCounts;
use sluice_server::monitoring::profile::{ProfileRequest, TrainingData, build};
use sluice_server::runtime::OnnxModel;
use sluice_server::tensor::{Tensor, TensorData};

const ROWS_PER_SECOND: usize = 20_000;
const SECONDS: u64 = 5;

/// CPU time (user + system) of this process so far.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    let fields: Vec<&str> = stat
        .rsplit(") ")
        .next()
        .expect("stat fields")
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

/// Feeds `batch_rows`-row batches at the target rate; returns the mean time of
/// one `observe` per row and the process CPU per row.
fn feed(
    monitor: Option<&Monitor>,
    inputs: &Tensor,
    outputs: &[Tensor],
    batch_rows: usize,
) -> (f64, f64) {
    let batches_per_tick = (ROWS_PER_SECOND / batch_rows / 100).max(1);
    let ticks = SECONDS * 100;
    let cpu_before = process_cpu();
    let mut observing = Duration::ZERO;
    let mut rows = 0usize;
    let started = Instant::now();
    for tick in 0..ticks {
        for index in 0..batches_per_tick {
            if let Some(monitor) = monitor {
                let requests = vec![(Some(format!("r{tick}-{index}")), batch_rows)];
                let t = Instant::now();
                monitor.observe(&[inputs], outputs, requests);
                observing += t.elapsed();
            }
            rows += batch_rows;
        }
        let next = started + Duration::from_millis(10 * (tick + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    // Let the monitor finish its windows and publish once more.
    std::thread::sleep(Duration::from_millis(1500));
    let cpu = process_cpu() - cpu_before;
    (
        observing.as_secs_f64() * 1e6 / rows as f64,
        cpu.as_secs_f64() * 1e6 / rows as f64,
    )
}

fn main() -> anyhow::Result<()> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/cancer");
    let model_path = fixtures.join("1/model.onnx");
    anyhow::ensure!(
        model_path.exists(),
        "run `make deps` first: {} is missing",
        model_path.display()
    );
    let data = TrainingData::from_csv(&fixtures.join("train.csv"), Some("target"))?;
    let profile = build(
        &model_path,
        &ProfileRequest {
            data: &data,
            categorical: &[],
            sample_size: 10_000,
        },
    )?;
    let dir = std::env::temp_dir().join(format!("sluice-bench-monitoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    profile.save(&dir.join("profile.json"))?;

    let mut model = OnnxModel::load(&model_path, &ModelConfig::default())?;
    let config = MonitoringConfig {
        profile: "profile.json".to_string(),
        window: 1000,
        min_rows: 100,
        interval_ms: 1000,
        feedback: Some(FeedbackConfig {
            output: "label".to_string(),
            task: Task::Classification,
            window: 500,
            retention: 10_000,
        }),
    };
    let metrics = Metrics::new();
    let series = metrics.for_version("cancer", 1);
    let monitor = Monitor::start(&config, &dir, model.inputs(), model.outputs(), &series)
        .map_err(anyhow::Error::msg)
        .context("start the monitor")?;

    println!(
        "sluice monitoring bench: breast-cancer classifier, 30 features, window 1000, {ROWS_PER_SECOND} rows/s"
    );
    for batch_rows in [1, 32] {
        let values: Vec<f32> = (0..batch_rows)
            .flat_map(|row| {
                data.columns
                    .iter()
                    .map(move |column| column[row % column.len()] as f32)
            })
            .collect();
        let inputs = Tensor::new(vec![batch_rows as i64, 30], TensorData::Fp32(values))?;
        let outputs = model.run(&[&inputs])?;
        let (_, baseline_cpu) = feed(None, &inputs, &outputs, batch_rows);
        let (observe, cpu) = feed(Some(&monitor), &inputs, &outputs, batch_rows);
        println!(
            "batches of {batch_rows:>2} rows: observe {observe:.2} us/row on the executor thread; \
             process CPU {:.2} us/row with monitoring ({cpu:.2} - {baseline_cpu:.2} without)",
            cpu - baseline_cpu
        );
    }
    println!(
        "rows dropped because the monitor fell behind: {}",
        series.monitoring_dropped_rows.get()
    );
    let counts = PredictionCounts::new(model.outputs(), &series);
    for batch_rows in [1, 32] {
        let values: Vec<f32> = (0..batch_rows * 30).map(|i| (i % 7) as f32).collect();
        let inputs = Tensor::new(vec![batch_rows as i64, 30], TensorData::Fp32(values))?;
        let outputs = model.run(&[&inputs])?;
        let rows = 2_000_000 / batch_rows * batch_rows;
        let started = Instant::now();
        for _ in 0..rows / batch_rows {
            counts.record(std::hint::black_box(&outputs));
        }
        println!(
            "prediction counts (always on; label and probabilities outputs), batches of {batch_rows:>2} rows: {:.1} ns/row on the executor thread",
            started.elapsed().as_secs_f64() * 1e9 / rows as f64
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
