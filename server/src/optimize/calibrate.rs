//! Calibration for INT8 static quantization: the ranges that chosen activations
//! take on the user's rows, observed by running the original model on ONNX
//! Runtime with those activations declared as extra outputs.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::OptimizeError;
use super::onnx::{self, ModelProto};
use super::report::{Rows, input_shape};
use crate::config::ModelConfig;
use crate::runtime::OnnxModel;
use crate::tensor::TensorData;

/// Rows per calibration run.
const CHUNK: usize = 256;
/// Values kept per activation for a percentile (a seeded reservoir sample).
const SAMPLE: usize = 1 << 20;

/// How a range is read from the observed values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The smallest and largest value seen.
    MinMax,
    /// The given percentile of the values and its mirror (e.g. 99.99 and
    /// 0.01): outliers are clipped, and the rest gets finer steps.
    Percentile(f64),
}

/// An activation's range, always including 0 (so that 0 is exact in UINT8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// The low end.
    pub low: f32,
    /// The high end.
    pub high: f32,
}

/// The ranges of `activations` (values of `model`'s main graph) over `rows`,
/// read by `method`. The probe model is written to `scratch` while it runs.
pub fn ranges(
    model: &ModelProto,
    activations: &[String],
    rows: &Rows,
    method: Method,
    scratch: &Path,
) -> Result<HashMap<String, Range>, OptimizeError> {
    let probe = onnx::with_outputs(model, activations);
    std::fs::write(scratch, onnx::encode(&probe)).map_err(|e| OptimizeError::Io {
        path: scratch.display().to_string(),
        message: e.to_string(),
    })?;
    let loaded = OnnxModel::load(scratch, &ModelConfig::default());
    let _ = std::fs::remove_file(scratch);
    let mut session = loaded.map_err(|e| OptimizeError::Load {
        path: "the model (for calibration)".into(),
        message: e.to_string(),
    })?;
    let shape = input_shape(&session)?;
    let width: usize = shape[1..].iter().product::<i64>() as usize;
    if rows.width != width {
        return Err(OptimizeError::Calibration(format!(
            "the calibration rows have {} values each, but the input takes {width} (shape {shape:?})",
            rows.width
        )));
    }
    let positions: HashMap<&str, usize> = session
        .outputs()
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name.as_str(), i))
        .collect();
    let positions: Vec<(String, Option<usize>)> = activations
        .iter()
        .map(|a| (a.clone(), positions.get(a.as_str()).copied()))
        .collect();
    let mut observed: Vec<Observed> = vec![Observed::default(); positions.len()];
    let mut start = 0;
    while start < rows.count() {
        let size = CHUNK.min(rows.count() - start);
        let input = rows.batch(start, size, &shape);
        let outputs = session
            .run(&[&input])
            .map_err(|e| OptimizeError::Run(e.to_string()))?;
        for ((_, position), seen) in positions.iter().zip(&mut observed) {
            let values = match position {
                Some(i) => &outputs[*i].data,
                None => &input.data, // the graph's input itself
            };
            if let TensorData::Fp32(values) = values {
                seen.add(values);
            }
        }
        start += size;
    }
    Ok(positions
        .into_iter()
        .zip(observed)
        .map(|((name, _), seen)| (name, seen.range(method)))
        .collect())
}

/// What one activation showed.
#[derive(Clone, Debug)]
struct Observed {
    low: f32,
    high: f32,
    sample: Vec<f32>,
    seen: u64,
    state: u64,
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            low: 0.0,
            high: 0.0,
            sample: Vec::new(),
            seen: 0,
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

impl Observed {
    fn add(&mut self, values: &[f32]) {
        for &v in values.iter().filter(|v| v.is_finite()) {
            self.low = self.low.min(v);
            self.high = self.high.max(v);
            self.seen += 1;
            if self.sample.len() < SAMPLE {
                self.sample.push(v);
            } else {
                // Reservoir sampling: keep each value with probability SAMPLE / seen.
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                let slot = self.state % self.seen;
                if (slot as usize) < SAMPLE {
                    self.sample[slot as usize] = v;
                }
            }
        }
    }

    fn range(mut self, method: Method) -> Range {
        let (low, high) = match method {
            Method::MinMax => (self.low, self.high),
            Method::Percentile(p) if !self.sample.is_empty() => {
                self.sample.sort_by(f32::total_cmp);
                let at = |q: f64| {
                    let index = (q / 100.0 * (self.sample.len() - 1) as f64).round() as usize;
                    self.sample[index.min(self.sample.len() - 1)]
                };
                (at(100.0 - p), at(p))
            }
            Method::Percentile(_) => (0.0, 0.0),
        };
        Range {
            low: low.min(0.0),
            high: high.max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_include_zero_and_percentiles_clip_outliers() {
        let mut seen = Observed::default();
        let mut values: Vec<f32> = (1..=10_000).map(|i| i as f32 / 10_000.0).collect();
        values.push(1_000.0);
        seen.add(&values);
        assert_eq!(
            seen.clone().range(Method::MinMax),
            Range {
                low: 0.0,
                high: 1_000.0
            }
        );
        let clipped = seen.range(Method::Percentile(99.9));
        assert_eq!(clipped.low, 0.0);
        assert!((0.99..1.0).contains(&clipped.high), "{clipped:?}");
    }
}
