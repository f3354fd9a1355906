//! What an optimization bought and cost, measured on the real ONNX Runtime: file
//! size, latency at 1 row and at a batch, and agreement with the original model's
//! answers on evaluation rows (the user's, or seeded random ones).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::OptimizeError;
use crate::config::ModelConfig;
use crate::runtime::OnnxModel;
use crate::tensor::{DataType, Tensor, TensorData};

/// Rows of each agreement run.
const CHUNK: usize = 256;

/// One model's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    /// File size in bytes.
    pub size_bytes: u64,
    /// Median milliseconds of one run at 1 row.
    pub latency_ms_batch_1: f64,
    /// Median milliseconds of one run at `batch` rows.
    pub latency_ms_batch: f64,
}

/// How closely the optimized model answers like the original on one output.
#[derive(Clone, Debug, Serialize)]
pub struct Agreement {
    /// The output.
    pub output: String,
    /// `top-1` (classes: the share of rows whose arg-max, or label, is the
    /// same) or `relative-error` (values: mean |new - old| / mean |old|).
    pub measure: &'static str,
    /// The share of rows that agree (top-1), or the relative error.
    pub value: f64,
}

impl Agreement {
    /// The agreement as a share in [0, 1]: top-1 as it is, 1 - relative error
    /// for values.
    pub fn share(&self) -> f64 {
        match self.measure {
            "top-1" => self.value,
            _ => (1.0 - self.value).max(0.0),
        }
    }
}

/// Both models measured side by side.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// The original model.
    pub before: Figures,
    /// The optimized one.
    pub after: Figures,
    /// The batch of `latency_ms_batch`.
    pub batch: usize,
    /// Evaluation rows the agreement was measured on, and where they came from.
    pub rows: usize,
    /// `--eval FILE`, or `random normal rows (seed 7)`.
    pub rows_from: String,
    /// Per output.
    pub agreement: Vec<Agreement>,
}

/// Evaluation rows for the model's single input: `[rows, columns]` row-major.
#[derive(Clone, Debug)]
pub struct Rows {
    /// The values.
    pub values: Vec<f32>,
    /// Values per row.
    pub width: usize,
    /// Where they came from, for the report.
    pub from: String,
}

impl Rows {
    /// How many rows there are.
    pub fn count(&self) -> usize {
        self.values.len() / self.width.max(1)
    }

    /// `rows` rows from `start` (wrapping around) as a tensor of the input's
    /// `shape`, batch first.
    pub fn batch(&self, start: usize, rows: usize, shape: &[i64]) -> Tensor {
        let count = self.count();
        let mut values = Vec::with_capacity(rows * self.width);
        for r in 0..rows {
            let row = (start + r) % count;
            values.extend_from_slice(&self.values[row * self.width..(row + 1) * self.width]);
        }
        let mut dims = shape.to_vec();
        dims[0] = rows as i64;
        Tensor::new(dims, TensorData::Fp32(values)).expect("rows of the input's width")
    }
}

/// Seeded standard-normal rows (xorshift and Box-Muller), when the user gave none.
fn random_rows(width: usize, rows: usize) -> Rows {
    let mut state: u64 = 7;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let values = (0..width * rows)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    Rows {
        values,
        width,
        from: "random normal rows (seed 7)".into(),
    }
}

/// The shape of the model's one FP32 input, batch first, with every other
/// dimension fixed; the report (and calibration) need it to build batches.
pub fn input_shape(model: &OnnxModel) -> Result<Vec<i64>, OptimizeError> {
    let refuse = |why: String| OptimizeError::Report(why);
    let [input] = model.inputs() else {
        return Err(refuse(format!(
            "the model has {} inputs; the report measures models with one",
            model.inputs().len()
        )));
    };
    if input.datatype != DataType::Fp32 {
        return Err(refuse(format!(
            "input '{}' is {}, not FP32",
            input.name,
            input.datatype.as_str()
        )));
    }
    if input.shape.is_empty() || input.shape[1..].iter().any(|d| *d < 1) {
        return Err(refuse(format!(
            "input '{}' has shape {:?}: the report needs a batch dimension first and fixed ones after it",
            input.name, input.shape
        )));
    }
    Ok(input.shape.clone())
}

/// Measures both models: sizes, latencies at 1 and `batch` rows on `threads`
/// intra-op threads (0: ONNX Runtime's default), and agreement over `rows`, or
/// over 1,000 seeded random rows of the input's width when there are none.
pub fn measure(
    original: &Path,
    optimized: &Path,
    rows: Option<Rows>,
    batch: usize,
    threads: usize,
) -> Result<Measured, OptimizeError> {
    let config = ModelConfig {
        intra_op_threads: threads,
        ..ModelConfig::default()
    };
    let load = |path: &Path| {
        OnnxModel::load(path, &config).map_err(|e| OptimizeError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    let mut old = load(original)?;
    let mut new = load(optimized)?;
    let shape = input_shape(&old)?;
    let expected: usize = shape[1..].iter().product::<i64>() as usize;
    let rows = rows.unwrap_or_else(|| random_rows(expected, 1000));
    let rows = &rows;
    if rows.width != expected {
        return Err(OptimizeError::Report(format!(
            "the evaluation rows have {} values each, but the input takes {expected} (shape {shape:?})",
            rows.width
        )));
    }
    let before = figures(&mut old, original, rows, &shape, batch)?;
    let after = figures(&mut new, optimized, rows, &shape, batch)?;
    let agreement = agreement(&mut old, &mut new, rows, &shape)?;
    Ok(Measured {
        before,
        after,
        batch,
        rows: rows.count(),
        rows_from: rows.from.clone(),
        agreement,
    })
}

fn figures(
    model: &mut OnnxModel,
    path: &Path,
    rows: &Rows,
    shape: &[i64],
    batch: usize,
) -> Result<Figures, OptimizeError> {
    let size_bytes = std::fs::metadata(path)
        .map_err(|e| OptimizeError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?
        .len();
    Ok(Figures {
        size_bytes,
        latency_ms_batch_1: median_ms(model, &rows.batch(0, 1, shape))?,
        latency_ms_batch: median_ms(model, &rows.batch(0, batch, shape))?,
    })
}

/// The median of timed runs (after warm-up): at least 20 and about 0.3 s.
fn median_ms(model: &mut OnnxModel, input: &Tensor) -> Result<f64, OptimizeError> {
    let run = |model: &mut OnnxModel| {
        model
            .run(&[input])
            .map_err(|e| OptimizeError::Run(e.to_string()))
    };
    for _ in 0..5 {
        run(model)?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 20 || (started.elapsed().as_secs_f64() < 0.3 && times.len() < 5000) {
        let t = Instant::now();
        run(model)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn agreement(
    old: &mut OnnxModel,
    new: &mut OnnxModel,
    rows: &Rows,
    shape: &[i64],
) -> Result<Vec<Agreement>, OptimizeError> {
    let names: Vec<String> = old.outputs().iter().map(|o| o.name.clone()).collect();
    let mut tallies: Vec<Tally> = vec![Tally::default(); names.len()];
    let count = rows.count();
    let mut start = 0;
    while start < count {
        let size = CHUNK.min(count - start);
        let input = rows.batch(start, size, shape);
        let run = |model: &mut OnnxModel| {
            model
                .run(&[&input])
                .map_err(|e| OptimizeError::Run(e.to_string()))
        };
        let (a, b) = (run(old)?, run(new)?);
        for ((tally, a), b) in tallies.iter_mut().zip(&a).zip(&b) {
            tally.add(a, b, size);
        }
        start += size;
    }
    Ok(names
        .into_iter()
        .zip(tallies)
        .filter_map(|(output, tally)| tally.agreement(output))
        .collect())
}

/// Running sums for one output.
#[derive(Clone, Debug, Default)]
struct Tally {
    rows: usize,
    same: usize,
    difference: f64,
    magnitude: f64,
    classes: bool,
}

impl Tally {
    fn add(&mut self, old: &Tensor, new: &Tensor, rows: usize) {
        let width = old.data.len() / rows.max(1);
        match (&old.data, &new.data) {
            (TensorData::Fp32(a), TensorData::Fp32(b)) if width >= 2 && a.len() == b.len() => {
                self.classes = true;
                for (ra, rb) in a.chunks_exact(width).zip(b.chunks_exact(width)) {
                    self.same += usize::from(arg_max(ra) == arg_max(rb));
                }
                self.rows += rows;
            }
            (TensorData::Fp32(a), TensorData::Fp32(b)) if a.len() == b.len() => {
                for (x, y) in a.iter().zip(b) {
                    self.difference += f64::from((y - x).abs());
                    self.magnitude += f64::from(x.abs());
                }
                self.rows += rows;
            }
            (TensorData::Int64(a), TensorData::Int64(b)) if a.len() == b.len() => {
                self.classes = true;
                for (ra, rb) in a
                    .chunks_exact(width.max(1))
                    .zip(b.chunks_exact(width.max(1)))
                {
                    self.same += usize::from(ra == rb);
                }
                self.rows += rows;
            }
            _ => {}
        }
    }

    fn agreement(self, output: String) -> Option<Agreement> {
        if self.rows == 0 {
            return None;
        }
        Some(if self.classes {
            Agreement {
                output,
                measure: "top-1",
                value: self.same as f64 / self.rows as f64,
            }
        } else {
            Agreement {
                output,
                measure: "relative-error",
                value: self.difference / self.magnitude.max(f64::MIN_POSITIVE),
            }
        })
    }
}

fn arg_max(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}
