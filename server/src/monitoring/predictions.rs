//! What the model predicted, counted per output as
//! `sluice_predictions_total{output, bin}`, for the rollout's prediction-agreement
//! check: the operator compares a new revision's counts with the stable
//! revision's over the same window (docs/rollouts.md). It needs no profile, so it
//! is always on.
//!
//! Each row of an output falls in one bin, chosen by the output's shape and type
//! (the set of bins is fixed, so the series stay bounded):
//! - **class scores** (2 to [`MAX_CLASSES`] columns per row: logits or
//!   probabilities): the index of the highest score, `"0"`, `"1"`, ...;
//! - **labels** (one integer or boolean per row): the value when it is in
//!   `0..MAX_CLASSES`, else `"other"`;
//! - **values** (one float per row: a regression, a score): a logarithmic bin of
//!   four per decade, named by its edge nearest zero with its sign (`"0.178"` holds
//!   0.178 up to 0.316, `"-0.178"` holds -0.178 down to -0.316); `"0"` holds
//!   magnitudes under 0.001 and `"1e6"`/`"-1e6"` those from a million up;
//! - `"nan"`: a row whose value (or any of whose scores) is NaN.
//!
//! Outputs of other shapes (wider rows, text, a dynamic dimension after the
//! first) are not counted, nor are outputs after the first [`MAX_OUTPUTS`].
//!
//! Counting is a few comparisons and one atomic add per row; each bin's counter is
//! resolved once, on its first row (a class's at load, so that its series starts
//! at 0).

use std::sync::OnceLock;

use prometheus::IntCounter;

use super::profile::for_each_f64;
use crate::metrics::VersionMetrics;
use crate::runtime::TensorSpec;
use crate::tensor::{DataType, Tensor, TensorData};

/// Most columns an output's rows may have to count as class scores.
pub const MAX_CLASSES: usize = 64;

/// Most outputs counted per model.
pub const MAX_OUTPUTS: usize = 8;

/// Value bins per decade.
const BINS_PER_DECADE: i32 = 4;
/// The smallest magnitude with a bin of its own (10^-3); smaller is `"0"`.
const LOWEST_QUARTER_DECADE: i32 = -3 * BINS_PER_DECADE;
/// The magnitude whose bin also holds everything larger (10^6).
const HIGHEST_QUARTER_DECADE: i32 = 6 * BINS_PER_DECADE;
/// Magnitude bins per sign, from 10^-3 up to and including 10^6.
const MAGNITUDE_BINS: usize = (HIGHEST_QUARTER_DECADE - LOWEST_QUARTER_DECADE + 1) as usize;

/// How an output's rows map to bins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binning {
    /// Rows of `classes` scores: the index of the highest.
    ClassScores { classes: usize },
    /// One integer or boolean per row.
    Labels,
    /// One float per row.
    Values,
}

impl Binning {
    /// How `spec`'s rows are counted, or `None` when they are not.
    fn of(spec: &TensorSpec) -> Option<Binning> {
        let width = row_width(spec)?;
        let float = matches!(
            spec.datatype,
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64
        );
        match (float, width) {
            (true, 1) => Some(Binning::Values),
            (true, classes @ 2..=MAX_CLASSES) => Some(Binning::ClassScores { classes }),
            (false, 1) if spec.datatype != DataType::Bytes => Some(Binning::Labels),
            _ => None,
        }
    }

    /// How many bins there are: classes, labels or signed magnitudes, plus
    /// `"other"` or `"0"`, plus `"nan"`.
    fn bins(self) -> usize {
        match self {
            Binning::ClassScores { classes } => classes + 1,
            Binning::Labels => MAX_CLASSES + 1,
            Binning::Values => 2 * MAGNITUDE_BINS + 2,
        }
    }

    /// The `bin` label of bin `index`.
    fn label(self, index: usize) -> String {
        match self {
            Binning::ClassScores { classes } if index == classes => "nan".into(),
            Binning::ClassScores { .. } => index.to_string(),
            Binning::Labels if index == MAX_CLASSES => "other".into(),
            Binning::Labels => index.to_string(),
            Binning::Values => value_bin_label(index),
        }
    }
}

/// Columns per row of an output whose trailing dimensions are all known; `None`
/// for a dynamic one.
fn row_width(spec: &TensorSpec) -> Option<usize> {
    spec.shape
        .iter()
        .skip(1)
        .try_fold(1usize, |width, &d| (d >= 0).then(|| width * d as usize))
}

/// The bin of a value: `0` for `"0"`, then positive magnitudes upwards, then
/// negative ones, then NaN last.
fn value_bin(value: f64) -> usize {
    if value.is_nan() {
        return 2 * MAGNITUDE_BINS + 1;
    }
    let magnitude = value.abs();
    if magnitude < 10f64.powi(LOWEST_QUARTER_DECADE / BINS_PER_DECADE) {
        return 0;
    }
    let quarter = (magnitude.log10() * f64::from(BINS_PER_DECADE)).floor() as i32;
    let offset = (quarter.clamp(LOWEST_QUARTER_DECADE, HIGHEST_QUARTER_DECADE)
        - LOWEST_QUARTER_DECADE) as usize;
    if value > 0.0 {
        1 + offset
    } else {
        1 + MAGNITUDE_BINS + offset
    }
}

/// The label of value bin `index` (see [`value_bin`]).
fn value_bin_label(index: usize) -> String {
    if index == 0 {
        return "0".into();
    }
    if index == 2 * MAGNITUDE_BINS + 1 {
        return "nan".into();
    }
    let (sign, offset) = if index <= MAGNITUDE_BINS {
        ("", index - 1)
    } else {
        ("-", index - 1 - MAGNITUDE_BINS)
    };
    let quarter = LOWEST_QUARTER_DECADE + offset as i32;
    let edge = 10f64.powf(f64::from(quarter) / f64::from(BINS_PER_DECADE));
    format!("{sign}{}", three_significant_digits(edge))
}

/// `edge` written with three significant digits: `0.00178`, `0.316`, `56.2`,
/// `1e6`.
fn three_significant_digits(edge: f64) -> String {
    if edge >= 1e4 {
        let exponent = edge.log10().floor() as i32;
        let mantissa = edge / 10f64.powi(exponent);
        let mantissa = format!("{mantissa:.2}");
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exponent}");
    }
    let decimals = (2 - edge.log10().floor() as i32).max(0) as usize;
    let text = format!("{edge:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Calls `bin` with the bin of each row of `data`, binned by `binning`.
fn row_bins(binning: Binning, data: &TensorData, mut bin: impl FnMut(usize)) {
    match binning {
        Binning::Values => {
            for_each_f64(data, |value| bin(value_bin(value)));
        }
        Binning::Labels => {
            for_each_f64(data, |value| {
                bin(if value >= 0.0 && value < MAX_CLASSES as f64 {
                    value as usize
                } else {
                    MAX_CLASSES
                })
            });
        }
        Binning::ClassScores { classes } => {
            let mut column = 0;
            let mut best = (0, f64::NEG_INFINITY);
            let mut nan = false;
            for_each_f64(data, |score| {
                nan |= score.is_nan();
                if score > best.1 {
                    best = (column, score);
                }
                column += 1;
                if column == classes {
                    bin(if nan { classes } else { best.0 });
                    column = 0;
                    best = (0, f64::NEG_INFINITY);
                    nan = false;
                }
            });
        }
    }
}

/// The counters of one counted output.
struct OutputCounts {
    /// Position among the model's outputs.
    position: usize,
    name: String,
    binning: Binning,
    /// One counter per bin, resolved on the bin's first row.
    counters: Vec<OnceLock<IntCounter>>,
}

impl OutputCounts {
    /// The counter of bin `bin`, registered on first use.
    fn counter(&self, bin: usize, metrics: &VersionMetrics) -> &IntCounter {
        self.counters[bin]
            .get_or_init(|| metrics.prediction_counter(&self.name, &self.binning.label(bin)))
    }
}

/// Counts a model version's predictions by output and bin.
pub struct PredictionCounts {
    outputs: Vec<OutputCounts>,
    metrics: VersionMetrics,
}

impl PredictionCounts {
    /// Counters for every countable output among `outputs` (see the module docs).
    pub fn new(outputs: &[TensorSpec], metrics: &VersionMetrics) -> PredictionCounts {
        let outputs = outputs
            .iter()
            .enumerate()
            .filter_map(|(position, spec)| {
                let binning = Binning::of(spec)?;
                let counted = OutputCounts {
                    position,
                    name: spec.name.clone(),
                    binning,
                    counters: (0..binning.bins()).map(|_| OnceLock::new()).collect(),
                };
                // Every class's series exists from the start, at 0, so that
                // Prometheus's increase() counts a class's first rows too.
                if let Binning::ClassScores { classes } = binning {
                    for class in 0..classes {
                        counted.counter(class, metrics);
                    }
                }
                Some(counted)
            })
            .take(MAX_OUTPUTS)
            .collect();
        PredictionCounts {
            outputs,
            metrics: metrics.clone(),
        }
    }

    /// Counts every row of a finished batch's outputs (in the model's output order).
    pub fn record(&self, outputs: &[Tensor]) {
        for counted in &self.outputs {
            let Some(tensor) = outputs.get(counted.position) else {
                continue;
            };
            row_bins(counted.binning, &tensor.data, |bin| {
                counted.counter(bin, &self.metrics).inc();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn spec(datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: "out".into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn outputs_are_binned_by_shape_and_type() {
        assert_eq!(
            Binning::of(&spec(DataType::Fp32, &[-1, 4])),
            Some(Binning::ClassScores { classes: 4 })
        );
        assert_eq!(
            Binning::of(&spec(DataType::Fp32, &[-1, 1])),
            Some(Binning::Values)
        );
        assert_eq!(
            Binning::of(&spec(DataType::Fp64, &[-1])),
            Some(Binning::Values)
        );
        assert_eq!(
            Binning::of(&spec(DataType::Int64, &[-1])),
            Some(Binning::Labels)
        );
        assert_eq!(
            Binning::of(&spec(DataType::Bool, &[-1, 1])),
            Some(Binning::Labels)
        );
        // Too wide, dynamic, text, or integers in many columns: not counted.
        assert_eq!(Binning::of(&spec(DataType::Fp32, &[-1, 65])), None);
        assert_eq!(Binning::of(&spec(DataType::Fp32, &[-1, -1])), None);
        assert_eq!(Binning::of(&spec(DataType::Bytes, &[-1])), None);
        assert_eq!(Binning::of(&spec(DataType::Int64, &[-1, 3])), None);
    }

    #[test]
    fn values_fall_in_quarter_decade_bins_named_by_their_inner_edge() {
        let label = |value: f64| value_bin_label(value_bin(value));
        assert_eq!(label(0.0), "0");
        assert_eq!(label(0.0009), "0");
        assert_eq!(label(-0.0009), "0");
        assert_eq!(label(0.001), "0.001");
        assert_eq!(label(0.2), "0.178");
        assert_eq!(label(0.3), "0.178");
        assert_eq!(label(0.32), "0.316");
        assert_eq!(label(-0.2), "-0.178");
        assert_eq!(label(1.0), "1");
        assert_eq!(label(60.0), "56.2");
        assert_eq!(label(150.0), "100");
        assert_eq!(label(2e5), "1.78e5");
        assert_eq!(label(3e9), "1e6");
        assert_eq!(label(-3e9), "-1e6");
        assert_eq!(label(f64::NAN), "nan");
        assert_eq!(label(f64::INFINITY), "1e6");
        // Every bin has a label of its own.
        let labels: std::collections::BTreeSet<String> =
            (0..Binning::Values.bins()).map(value_bin_label).collect();
        assert_eq!(labels.len(), Binning::Values.bins());
    }

    #[test]
    fn rows_are_counted_by_class_label_and_value() {
        let metrics = Metrics::new();
        let version = metrics.for_version("m", 1);
        let specs = [
            TensorSpec {
                name: "scores".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 3],
            },
            TensorSpec {
                name: "label".into(),
                datatype: DataType::Int64,
                shape: vec![-1],
            },
            TensorSpec {
                name: "value".into(),
                datatype: DataType::Fp64,
                shape: vec![-1, 1],
            },
            TensorSpec {
                name: "text".into(),
                datatype: DataType::Bytes,
                shape: vec![-1],
            },
        ];
        let counts = PredictionCounts::new(&specs, &version);
        let outputs = [
            Tensor::new(
                vec![3, 3],
                TensorData::Fp32(vec![0.1, 0.7, 0.2, 0.9, 0.0, 0.1, 0.2, f32::NAN, 0.3]),
            )
            .unwrap(),
            Tensor::new(vec![3], TensorData::Int64(vec![1, 1, 99])).unwrap(),
            Tensor::new(vec![3, 1], TensorData::Fp64(vec![0.5, 0.5, -20.0])).unwrap(),
            Tensor::new(vec![3], TensorData::Bytes(vec![b"a".to_vec(); 3])).unwrap(),
        ];
        counts.record(&outputs);
        counts.record(&outputs);
        let text = metrics.render();
        let count = |output: &str, bin: &str| -> u64 {
            let series = format!(
                r#"sluice_predictions_total{{bin="{bin}",model="m",output="{output}",version="1"}} "#
            );
            text.lines()
                .find_map(|line| line.strip_prefix(&series))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .parse()
                .unwrap()
        };
        assert_eq!(count("scores", "2"), 0);
        assert_eq!(count("scores", "1"), 2);
        assert_eq!(count("scores", "0"), 2);
        assert_eq!(count("scores", "nan"), 2);
        assert_eq!(count("label", "1"), 4);
        assert_eq!(count("label", "other"), 2);
        assert_eq!(count("value", "0.316"), 4);
        assert_eq!(count("value", "-17.8"), 2);
        assert!(!text.contains(r#"output="text""#), "{text}");
    }
}
