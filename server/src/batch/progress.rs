//! How far a shard has got: a progress bar on a terminal, a status file
//! rewritten every second, and `/metrics` for Prometheus while it runs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;

use super::{BatchError, BatchRequest};

/// The shard's counters and where they are shown.
pub struct Progress {
    started: Instant,
    status: Status,
    status_file: Option<PathBuf>,
    written: Option<Instant>,
    bar: Option<ProgressBar>,
    rows_metric: IntCounterVec,
    parts_metric: IntCounter,
}

/// What the status file holds.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    shard: usize,
    shards: usize,
    files: usize,
    files_done: usize,
    rows: u64,
    rejected: u64,
    parts: u64,
    seconds: f64,
    rows_per_second: f64,
    current: String,
    done: bool,
}

impl Progress {
    /// Starts reporting a shard of `files` files; serves `/metrics` when the
    /// request gives an address.
    pub fn start(request: &BatchRequest, files: usize) -> Result<Progress, BatchError> {
        let registry = Registry::new();
        let rows_metric = IntCounterVec::new(
            Opts::new(
                "sluice_batch_rows_total",
                "Input rows this shard has finished, by outcome (predicted or rejected).",
            ),
            &["outcome"],
        )
        .expect("a valid metric");
        let parts_metric = IntCounter::new(
            "sluice_batch_parts_total",
            "Output parts this shard has published.",
        )
        .expect("a valid metric");
        let files_metric =
            IntGauge::new("sluice_batch_input_files", "Input files this shard owns.")
                .expect("a valid metric");
        files_metric.set(files as i64);
        for metric in [
            Box::new(rows_metric.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(parts_metric.clone()),
            Box::new(files_metric),
        ] {
            registry.register(metric).expect("distinct metric names");
        }
        for outcome in ["predicted", "rejected"] {
            rows_metric.with_label_values(&[outcome]);
        }
        if let Some(address) = request.metrics_address {
            // Nothing waits on a batch pod's readiness: ready at once.
            crate::metrics::serve(address, registry)
                .map_err(|e| BatchError::Usage(format!("--metrics-address {address}: {e}")))?
                .set_ready();
        }
        let bar = (request.progress_bar && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(files as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} files  {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Ok(Progress {
            started: Instant::now(),
            status: Status {
                shard: request.shard,
                shards: request.shards,
                files,
                ..Status::default()
            },
            status_file: request.status_file.clone(),
            written: None,
            bar,
            rows_metric,
            parts_metric,
        })
    }

    /// Seconds since the start.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The file now being read.
    pub fn reading(&mut self, name: &str) {
        self.status.current = name.to_string();
        self.show(false);
    }

    /// Rows finished by this run.
    pub fn rows(&mut self, predicted: u64, rejected: u64) {
        self.status.rows += predicted;
        self.status.rejected += rejected;
        self.rows_metric
            .with_label_values(&["predicted"])
            .inc_by(predicted);
        self.rows_metric
            .with_label_values(&["rejected"])
            .inc_by(rejected);
        self.show(false);
    }

    /// A part published.
    pub fn part(&mut self) {
        self.status.parts += 1;
        self.parts_metric.inc();
    }

    /// A file read to its end (or found complete from an earlier run).
    pub fn file_done(&mut self) {
        self.status.files_done += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// The rows per second this run has predicted.
    pub fn rate(&self) -> f64 {
        self.status.rows as f64 / self.seconds().max(1e-9)
    }

    /// The last status, written whatever the time since the one before.
    pub fn finish(&mut self) {
        self.status.done = true;
        self.show(true);
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    fn show(&mut self, now: bool) {
        if !now
            && self
                .written
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.written = Some(Instant::now());
        self.status.seconds = self.seconds();
        self.status.rows_per_second = self.rate();
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{} rows, {} rejected, {:.0} rows/s  {}",
                self.status.rows,
                self.status.rejected,
                self.status.rows_per_second,
                self.status.current
            ));
        }
        if let Some(path) = &self.status_file {
            let staged = path.with_extension("tmp");
            let text = serde_json::to_string(&self.status).expect("a status serializes");
            // Progress is advisory: a status file that cannot be written is
            // logged and the shard goes on.
            if let Err(error) =
                std::fs::write(&staged, text).and_then(|()| std::fs::rename(&staged, path))
            {
                tracing::warn!(path = %path.display(), %error, "cannot write the status file");
            }
        }
    }
}
