//! `make bench` (third part): `sluice-server batch` against raw batched
//! `session.run` on the same model and threads, and against the seed's
//! pattern (a Python script with pandas and onnxruntime); then the peak RSS
//! of `batch` on an input ten times larger, which should not grow.
//!
//! The model is the compute-bound `wide` fixture (16 features in, 4 logits
//! out). Every contender runs with one ONNX Runtime thread and batches of
//! 256 rows; `make bench` pins this process, and so its children, to one
//! core. Rounds alternate the contenders so that a noisy machine slows all
//! of them alike; the figures are each one's median.
//!
//! Usage: `bench_batch SLUICE_SERVER PYTHON` (the release binary and a Python
//! with pandas and onnxruntime: `make bench` passes both).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

mod common;

const ROWS: usize = 200_000;
const BATCH: usize = 256;
const ROUNDS: usize = 3;

/// Writes `rows` seeded rows of 16 features as CSV with an `id` column;
/// returns the features.
fn write_csv(path: &Path, rows: usize) -> anyhow::Result<Vec<f32>> {
    use std::io::Write;
    let mut random = fastrand::Rng::with_seed(42);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut features = Vec::with_capacity(rows * 16);
    write!(file, "id")?;
    for i in 0..16 {
        write!(file, ",f{i}")?;
    }
    writeln!(file)?;
    for row in 0..rows {
        write!(file, "{row}")?;
        for _ in 0..16 {
            let value = ((random.f32() * 4.0 - 2.0) * 1e4).round() / 1e4;
            write!(file, ",{value}")?;
            features.push(value);
        }
        writeln!(file)?;
    }
    Ok(features)
}

/// Runs `command`, returning its wall seconds and peak RSS in MiB.
#[allow(
    unsafe_code,
    reason = "wait4(2), the one call that reaps a child with its peak RSS, has no safe wrapper"
)]
fn measure(command: &mut Command) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let child = command
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("{command:?}"))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers to locals.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    if waited < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{command:?} failed (status {status})");
    }
    Ok((seconds, usage.ru_maxrss as f64 / 1024.0))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn sluice(binary: &Path, model: &Path, input: &Path, output: &Path) -> Command {
    let _ = std::fs::remove_dir_all(output);
    let mut command = Command::new(binary);
    command.args([
        "batch",
        "--threads",
        "1",
        "--batch-size",
        &BATCH.to_string(),
    ]);
    command.args([
        "--rows-per-part",
        "1000000",
        "--id-column",
        "id",
        "--output-format",
        "csv",
    ]);
    command
        .arg("--model")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output);
    command
}

fn python(python: &Path, model: &Path, input: &Path, output: &Path) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/batch_predict.py");
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg("--model")
        .arg(model.join("1/model.onnx"));
    command
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output);
    command.args(["--batch-size", &BATCH.to_string()]);
    command
}

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [binary, python_bin] = args.as_slice() else {
        bail!("usage: bench_batch SLUICE_SERVER PYTHON");
    };
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/wide");
    let dir = std::env::temp_dir().join(format!("sluice-bench-batch-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("small"))?;
    std::fs::create_dir_all(dir.join("large"))?;
    let features = write_csv(&dir.join("small/rows.csv"), ROWS)?;
    write_csv(&dir.join("large/rows.csv"), ROWS * 10)?;
    let small_bytes = std::fs::metadata(dir.join("small/rows.csv"))?.len() as f64 / 1048576.0;

    let (mut raws, mut sluices, mut pythons) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sluice_rss, mut python_rss) = (0.0f64, 0.0f64);
    for _ in 0..ROUNDS {
        raws.push(common::raw_rows_per_second(
            &model.join("1/model.onnx"),
            &features,
            16,
            BATCH,
        )?);
        let (seconds, rss) = measure(&mut sluice(
            binary,
            &model,
            &dir.join("small"),
            &dir.join("out"),
        ))?;
        sluices.push(ROWS as f64 / seconds);
        sluice_rss = sluice_rss.max(rss);
        let (seconds, rss) = measure(&mut python(
            python_bin,
            &model,
            &dir.join("small/rows.csv"),
            &dir.join("out.csv"),
        ))?;
        pythons.push(ROWS as f64 / seconds);
        python_rss = python_rss.max(rss);
    }
    let (raw, sluice_rate, python_rate) = (median(raws), median(sluices), median(pythons));
    println!(
        "batch over {ROWS} rows of CSV ({small_bytes:.1} MiB), model wide, 1 ONNX Runtime thread, batches of {BATCH}, one core, median of {ROUNDS} rounds"
    );
    println!("  raw session.run (parsed rows in memory): {raw:>10.0} rows/s");
    println!(
        "  sluice-server batch (whole process):     {sluice_rate:>10.0} rows/s  = {:.1}% of raw (goal: 90%)",
        100.0 * sluice_rate / raw
    );
    println!(
        "  pandas + onnxruntime (the seed's way):   {python_rate:>10.0} rows/s  sluice is {:.2}x",
        sluice_rate / python_rate
    );

    let (_, sluice_large_rss) = measure(&mut sluice(
        binary,
        &model,
        &dir.join("large"),
        &dir.join("out"),
    ))?;
    let (_, python_large_rss) = measure(&mut python(
        python_bin,
        &model,
        &dir.join("large/rows.csv"),
        &dir.join("out.csv"),
    ))?;
    println!(
        "peak RSS, {ROWS} rows and ten times as many ({:.0} MiB of CSV):",
        small_bytes * 10.0
    );
    println!(
        "  sluice-server batch: {sluice_rss:>7.1} MiB -> {sluice_large_rss:>7.1} MiB  ({:.2}x; goal: flat)",
        sluice_large_rss / sluice_rss
    );
    println!(
        "  pandas + onnxruntime: {python_rss:>6.1} MiB -> {python_large_rss:>7.1} MiB  ({:.2}x)",
        python_large_rss / python_rss
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
