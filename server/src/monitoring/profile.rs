//! Reference profiles: what the training data and the model's answers to it look
//! like, per column, written by `sluice-server profile` and read by the live
//! monitor. A profile is JSON:
//!
//! ```json
//! {"format": 1, "input": "float_input", "rows": 569,
//!  "features": [{"name": "radius", "kind": "numeric", "missing_ratio": 0.0,
//!                "sample": [...sorted...], "bin_edges": [...9 deciles...]},
//!               {"name": "grade", "kind": "categorical", "missing_ratio": 0.0,
//!                "proportions": {"1": 0.4, "2": 0.6}}],
//!  "outputs": [...the same, per output column...],
//!  "baseline": {"accuracy": 0.96}}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::runtime::{OnnxModel, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData};

/// The profile format this server writes and reads.
pub const FORMAT: u32 = 1;

/// Deciles: the PSI bins.
const BIN_QUANTILES: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Rows per model run while profiling.
const PROFILE_BATCH: usize = 256;

/// A reference profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The profile format ([`FORMAT`]).
    pub format: u32,
    /// The model input whose columns are the features.
    pub input: String,
    /// Rows of training data summarized.
    pub rows: usize,
    /// One entry per input column.
    pub features: Vec<Column>,
    /// One entry per output column.
    pub outputs: Vec<Column>,
    /// Quality on the training data, when labels were given.
    #[serde(default)]
    pub baseline: Baseline,
}

/// The distribution of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Share of missing (NaN) values.
    pub missing_ratio: f64,
    /// The distribution of the present values.
    #[serde(flatten)]
    pub summary: Summary,
}

/// A numeric or categorical distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Summary {
    /// A sorted random sample and the decile edges that bin it.
    Numeric {
        /// Sorted sample of the present values.
        sample: Vec<f64>,
        /// Inner bin edges (deciles of the column).
        bin_edges: Vec<f64>,
    },
    /// Proportion of each category code.
    Categorical {
        /// Category code (an integer, as text) to share of present values.
        proportions: BTreeMap<String, f64>,
    },
}

/// The model's quality on the training data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Share of correct predictions (classification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Mean absolute error (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_absolute_error: Option<f64>,
}

/// Why a profile could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
    #[error("invalid training data: {0}")]
    Data(String),
    #[error("the model does not fit profiling: {0}")]
    Model(String),
    #[error("invalid profile {path}: {message}")]
    Invalid { path: String, message: String },
}

/// Training data as columns.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingData {
    /// Feature names, in the model input's column order.
    pub names: Vec<String>,
    /// One vector per feature; NaN marks a missing value.
    pub columns: Vec<Vec<f64>>,
    /// True labels or values, when given.
    pub labels: Option<Vec<f64>>,
}

impl TrainingData {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    /// Reads a 2-D `.npy` array, or else a CSV file with a header row whose
    /// `label_column` names the labels.
    pub fn read(path: &Path, label_column: Option<&str>) -> Result<TrainingData, ProfileError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => TrainingData::from_npy(path),
            _ => TrainingData::from_csv(path, label_column),
        }
    }

    /// Reads a CSV file with a header row; `label_column` names the labels.
    pub fn from_csv(path: &Path, label_column: Option<&str>) -> Result<TrainingData, ProfileError> {
        let read_error = |message: String| ProfileError::Read {
            path: path.display().to_string(),
            message,
        };
        let mut reader = csv::Reader::from_path(path).map_err(|e| read_error(e.to_string()))?;
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| read_error(e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect();
        let label_index = match label_column {
            Some(name) => Some(header.iter().position(|h| h == name).ok_or_else(|| {
                ProfileError::Data(format!("no column named '{name}' in the header {header:?}"))
            })?),
            None => None,
        };
        let mut columns = vec![Vec::new(); header.len()];
        for (line, record) in reader.records().enumerate() {
            let record = record.map_err(|e| read_error(e.to_string()))?;
            for (index, field) in record.iter().enumerate() {
                columns[index].push(parse_cell(field).ok_or_else(|| {
                    ProfileError::Data(format!(
                        "row {} column '{}': '{field}' is not a number",
                        line + 2,
                        header[index]
                    ))
                })?);
            }
        }
        let labels = label_index.map(|index| columns.remove(index));
        let mut names = header;
        if let Some(index) = label_index {
            names.remove(index);
        }
        Ok(TrainingData {
            names,
            columns,
            labels,
        })
    }

    /// Reads a 2-D `.npy` array of floats; features are named `f0`, `f1`, ...
    pub fn from_npy(path: &Path) -> Result<TrainingData, ProfileError> {
        let read_error = |message: String| ProfileError::Read {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
        let array: ndarray::Array2<f64> = ndarray_npy::ReadNpyExt::read_npy(&bytes[..])
            .or_else(|_| {
                ndarray_npy::ReadNpyExt::read_npy(&bytes[..])
                    .map(|a: ndarray::Array2<f32>| a.mapv(f64::from))
            })
            .map_err(|e: ndarray_npy::ReadNpyError| {
                read_error(format!("expected a 2-D float32 or float64 array: {e}"))
            })?;
        let columns: Vec<Vec<f64>> = array.columns().into_iter().map(|c| c.to_vec()).collect();
        Ok(TrainingData {
            names: (0..columns.len()).map(|i| format!("f{i}")).collect(),
            columns,
            labels: None,
        })
    }
}

fn parse_cell(field: &str) -> Option<f64> {
    let field = field.trim();
    if field.is_empty() || field.eq_ignore_ascii_case("nan") || field.eq_ignore_ascii_case("na") {
        Some(f64::NAN)
    } else {
        field.parse().ok()
    }
}

/// Linear-interpolation quantile of sorted values (NumPy's default method).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = (sorted.len() - 1) as f64 * q;
    let low = position.floor() as usize;
    let high = (low + 1).min(sorted.len() - 1);
    sorted[low] + (position - low as f64) * (sorted[high] - sorted[low])
}

/// The category code of a value.
pub fn category_code(value: f64) -> String {
    (value.round() as i64).to_string()
}

/// Summarizes one column: its missing ratio and its distribution, keeping a
/// seeded random sample of at most `sample_size` numeric values.
pub fn summarize(
    name: &str,
    values: &[f64],
    categorical: bool,
    sample_size: usize,
    rng: &mut fastrand::Rng,
) -> Column {
    let mut present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let missing_ratio = if values.is_empty() {
        0.0
    } else {
        (values.len() - present.len()) as f64 / values.len() as f64
    };
    let summary = if categorical {
        let mut counts = BTreeMap::new();
        for value in &present {
            *counts.entry(category_code(*value)).or_insert(0.0) += 1.0;
        }
        let total = present.len().max(1) as f64;
        Summary::Categorical {
            proportions: counts
                .into_iter()
                .map(|(code, count)| (code, count / total))
                .collect(),
        }
    } else {
        present.sort_by(f64::total_cmp);
        let bin_edges = if present.is_empty() {
            Vec::new()
        } else {
            BIN_QUANTILES
                .iter()
                .map(|q| quantile(&present, *q))
                .collect()
        };
        let mut sample = if present.len() > sample_size {
            rng.shuffle(&mut present);
            present.truncate(sample_size);
            present
        } else {
            present
        };
        sample.sort_by(f64::total_cmp);
        Summary::Numeric { sample, bin_edges }
    };
    Column {
        name: name.to_string(),
        missing_ratio,
        summary,
    }
}

/// Number of columns a tensor spec has past its first dimension.
pub fn width(spec: &TensorSpec) -> usize {
    spec.shape
        .iter()
        .skip(1)
        .map(|d| (*d).max(1) as usize)
        .product()
}

/// Column names of an output: its name, or `name[i]` for each of several columns.
pub fn output_column_names(spec: &TensorSpec) -> Vec<String> {
    match width(spec) {
        1 => vec![spec.name.clone()],
        columns => (0..columns)
            .map(|i| format!("{}[{i}]", spec.name))
            .collect(),
    }
}

/// Whether an output's values are category codes (integers and booleans).
pub fn is_categorical(datatype: DataType) -> bool {
    !matches!(
        datatype,
        DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 | DataType::Bytes
    )
}

/// The elements of a numeric tensor as `f64`; `None` for BYTES.
pub fn to_f64(data: &TensorData) -> Option<Vec<f64>> {
    let mut values = Vec::with_capacity(data.len());
    for_each_f64(data, |value| values.push(value)).then_some(values)
}

/// Calls `f` with every element of a numeric tensor as `f64`, without copying the
/// tensor; returns false (calling nothing) for BYTES.
pub fn for_each_f64(data: &TensorData, mut f: impl FnMut(f64)) -> bool {
    match data {
        TensorData::Bool(v) => v.iter().for_each(|x| f(f64::from(u8::from(*x)))),
        TensorData::Uint8(v) => v.iter().for_each(|x| f(f64::from(*x))),
        TensorData::Uint16(v) => v.iter().for_each(|x| f(f64::from(*x))),
        TensorData::Uint32(v) => v.iter().for_each(|x| f(f64::from(*x))),
        TensorData::Uint64(v) => v.iter().for_each(|x| f(*x as f64)),
        TensorData::Int8(v) => v.iter().for_each(|x| f(f64::from(*x))),
        TensorData::Int16(v) => v.iter().for_each(|x| f(f64::from(*x))),
        TensorData::Int32(v) => v.iter().for_each(|x| f(f64::from(*x))),
        TensorData::Int64(v) => v.iter().for_each(|x| f(*x as f64)),
        TensorData::Fp16(v) => v.iter().for_each(|x| f(x.to_f64())),
        TensorData::Bf16(v) => v.iter().for_each(|x| f(x.to_f64())),
        TensorData::Fp32(v) => v.iter().for_each(|x| f(f64::from(*x))),
        TensorData::Fp64(v) => v.iter().for_each(|x| f(*x)),
        TensorData::Bytes(_) => return false,
    }
    true
}

/// The predicted class or value of each row of a prediction output: the value
/// itself for one column, the index of the largest column otherwise.
pub fn predictions(values: &[f64], columns: usize) -> Vec<f64> {
    if columns <= 1 {
        return values.to_vec();
    }
    values
        .chunks(columns)
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0.0, |(index, _)| index as f64)
        })
        .collect()
}

/// What to profile and how.
pub struct ProfileRequest<'a> {
    /// The training data.
    pub data: &'a TrainingData,
    /// Features to treat as categories.
    pub categorical: &'a [String],
    /// Most sample values kept per numeric column.
    pub sample_size: usize,
}

/// Runs `model_path` over the training data and summarizes inputs and outputs.
pub fn build(model_path: &Path, request: &ProfileRequest) -> Result<Profile, ProfileError> {
    let data = request.data;
    let config = ModelConfig {
        intra_op_threads: 1,
        ..ModelConfig::default()
    };
    let mut model =
        OnnxModel::load(model_path, &config).map_err(|e| ProfileError::Model(e.to_string()))?;
    let [input] = model.inputs() else {
        return Err(ProfileError::Model(format!(
            "expected one input, found {}",
            model.inputs().len()
        )));
    };
    let input = input.clone();
    let features = width(&input);
    if input.shape.len() != 2 || features != data.columns.len() {
        return Err(ProfileError::Model(format!(
            "input '{}' has shape {:?} but the data has {} feature columns",
            input.name,
            input.shape,
            data.columns.len()
        )));
    }
    if let Some(unknown) = request
        .categorical
        .iter()
        .find(|name| !data.names.contains(name))
    {
        return Err(ProfileError::Data(format!(
            "--categorical names unknown column '{unknown}'"
        )));
    }
    let outputs: Vec<TensorSpec> = model.outputs().to_vec();
    let mut output_columns: Vec<Vec<Vec<f64>>> = outputs
        .iter()
        .map(|spec| vec![Vec::new(); width(spec)])
        .collect();
    let rows = data.rows();
    for start in (0..rows).step_by(PROFILE_BATCH) {
        let end = (start + PROFILE_BATCH).min(rows);
        let values: Vec<f64> = (start..end)
            .flat_map(|row| data.columns.iter().map(move |column| column[row]))
            .collect();
        let shape = vec![(end - start) as i64, features as i64];
        let tensor_data = match input.datatype {
            DataType::Fp32 => TensorData::Fp32(values.iter().map(|v| *v as f32).collect()),
            DataType::Fp64 => TensorData::Fp64(values),
            other => {
                return Err(ProfileError::Model(format!(
                    "input '{}' is {other}; profiling needs FP32 or FP64",
                    input.name
                )));
            }
        };
        let tensor =
            Tensor::new(shape, tensor_data).map_err(|e| ProfileError::Data(e.to_string()))?;
        let results = model
            .run(&[&tensor])
            .map_err(|e| ProfileError::Model(e.to_string()))?;
        for ((result, spec), columns) in results.iter().zip(&outputs).zip(&mut output_columns) {
            let values = to_f64(&result.data).ok_or_else(|| {
                ProfileError::Model(format!("output '{}' is not numeric", spec.name))
            })?;
            let width = columns.len();
            for (index, value) in values.iter().enumerate() {
                columns[index % width].push(*value);
            }
        }
    }

    let mut rng = fastrand::Rng::with_seed(0x5_1u64);
    // Summarize the values as the model sees them: live traffic arrives in the
    // input's own precision, and a decile edge must bin it the same way.
    let as_input = |value: &f64| match input.datatype {
        DataType::Fp32 => f64::from(*value as f32),
        _ => *value,
    };
    let feature_summaries = data
        .names
        .iter()
        .zip(&data.columns)
        .map(|(name, values)| {
            summarize(
                name,
                &values.iter().map(as_input).collect::<Vec<_>>(),
                request.categorical.contains(name),
                request.sample_size,
                &mut rng,
            )
        })
        .collect();
    let mut output_summaries = Vec::new();
    for (spec, columns) in outputs.iter().zip(&output_columns) {
        for (name, values) in output_column_names(spec).iter().zip(columns) {
            output_summaries.push(summarize(
                name,
                values,
                is_categorical(spec.datatype),
                request.sample_size,
                &mut rng,
            ));
        }
    }
    let baseline = match &data.labels {
        Some(labels) => baseline(&outputs, &output_columns, labels),
        None => Baseline::default(),
    };
    Ok(Profile {
        format: FORMAT,
        input: input.name,
        rows,
        features: feature_summaries,
        outputs: output_summaries,
        baseline,
    })
}

/// Quality on the training data: accuracy of the first integer output, else
/// the mean absolute error of a single float output, else the accuracy of the
/// arg-max of the first multi-column float output.
fn baseline(outputs: &[TensorSpec], columns: &[Vec<Vec<f64>>], labels: &[f64]) -> Baseline {
    let interleave = |columns: &Vec<Vec<f64>>| -> Vec<f64> {
        (0..labels.len())
            .flat_map(|row| columns.iter().map(move |c| c[row]))
            .collect()
    };
    let accuracy = |predicted: Vec<f64>| {
        let correct = predicted
            .iter()
            .zip(labels)
            .filter(|(p, l)| (*p - *l).abs() < 0.5)
            .count();
        correct as f64 / labels.len().max(1) as f64
    };
    if let Some(index) = outputs
        .iter()
        .position(|s| is_categorical(s.datatype) && width(s) == 1)
    {
        return Baseline {
            accuracy: Some(accuracy(columns[index][0].clone())),
            mean_absolute_error: None,
        };
    }
    if let Some(index) = outputs.iter().position(|s| width(s) == 1) {
        let error: f64 = columns[index][0]
            .iter()
            .zip(labels)
            .map(|(p, l)| (p - l).abs())
            .sum();
        return Baseline {
            accuracy: None,
            mean_absolute_error: Some(error / labels.len().max(1) as f64),
        };
    }
    match outputs.first() {
        Some(spec) => Baseline {
            accuracy: Some(accuracy(predictions(&interleave(&columns[0]), width(spec)))),
            mean_absolute_error: None,
        },
        None => Baseline::default(),
    }
}

impl Profile {
    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let invalid = |message: String| ProfileError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let profile: Profile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if profile.format != FORMAT {
            return Err(invalid(format!(
                "format {} is not {FORMAT}",
                profile.format
            )));
        }
        Ok(profile)
    }

    /// Writes the profile as JSON.
    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        let text = serde_json::to_string(self).expect("profiles serialize");
        std::fs::write(path, text).map_err(|e| ProfileError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&sorted, 0.5), 2.5);
        assert!((quantile(&sorted, 0.1) - 1.3).abs() < 1e-12);
        assert_eq!(quantile(&sorted, 1.0), 4.0);
    }

    #[test]
    fn columns_summarize_missing_values_samples_and_categories() {
        let mut rng = fastrand::Rng::with_seed(1);
        let numeric = summarize("x", &[3.0, f64::NAN, 1.0, 2.0], false, 10, &mut rng);
        assert_eq!(numeric.missing_ratio, 0.25);
        let Summary::Numeric { sample, bin_edges } = &numeric.summary else {
            panic!("numeric")
        };
        assert_eq!(sample, &vec![1.0, 2.0, 3.0]);
        assert_eq!(bin_edges.len(), 9);
        let sampled = summarize(
            "x",
            &(0..100).map(f64::from).collect::<Vec<_>>(),
            false,
            10,
            &mut rng,
        );
        let Summary::Numeric { sample, .. } = &sampled.summary else {
            panic!("numeric")
        };
        assert_eq!(sample.len(), 10);
        assert!(sample.windows(2).all(|w| w[0] <= w[1]));
        let categorical = summarize("c", &[1.0, 1.0, 2.0, 3.0], true, 10, &mut rng);
        let Summary::Categorical { proportions } = &categorical.summary else {
            panic!("categorical")
        };
        assert_eq!(proportions["1"], 0.5);
        assert_eq!(proportions["3"], 0.25);
    }

    #[test]
    fn predictions_take_the_arg_max_of_several_columns() {
        assert_eq!(predictions(&[0.1, 0.9, 0.7, 0.3], 2), vec![1.0, 0.0]);
        assert_eq!(predictions(&[2.0, 5.0], 1), vec![2.0, 5.0]);
    }

    #[test]
    fn csv_cells_accept_missing_markers_and_reject_text() {
        assert!(parse_cell("").unwrap().is_nan());
        assert!(parse_cell("NaN").unwrap().is_nan());
        assert_eq!(parse_cell(" 2.5 "), Some(2.5));
        assert_eq!(parse_cell("abc"), None);
    }
}
