//! Which input columns feed which model input, and the rows read so far.
//!
//! A model with one input takes the feature columns in their order (every
//! column but the id and the ignored ones), or the columns named after the
//! input (`x`, or `x_0`, `x_1`, ...) when the file has them. A model with
//! several inputs takes each input's columns by those names. Each input must
//! be `[-1]` or `[-1, k, ...]` with fixed sizes after the batch dimension.

use crate::runtime::TensorSpec;
use crate::tensor::{DataType, Tensor, TensorData};

use super::BatchError;

/// One model input's place in a row.
#[derive(Debug, Clone)]
struct Slot {
    spec: TensorSpec,
    offset: usize,
    width: usize,
}

/// The model's inputs laid out side by side as one row of features.
#[derive(Debug, Clone)]
pub struct Layout {
    slots: Vec<Slot>,
    width: usize,
}

/// A row that could not be read as the model's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// Its row number in its file (0-based, header not counted).
    pub row: u64,
    /// Why, naming the column.
    pub reason: String,
}

/// Rows read from one file, ready to run: features row-major, and each
/// row's number and own id.
#[derive(Debug, Default)]
pub struct Rows {
    /// `width` values per accepted row.
    pub features: Vec<f64>,
    /// The row number of each accepted row.
    pub numbers: Vec<u64>,
    /// The id column's value of each accepted row, when one is named.
    pub ids: Vec<String>,
    /// The rows that were refused.
    pub rejects: Vec<Reject>,
    /// Input rows these hold, accepted and refused.
    pub consumed: u64,
}

impl Rows {
    /// Accepted rows.
    pub fn len(&self) -> usize {
        self.numbers.len()
    }

    /// Whether no row was accepted.
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }
}

impl Layout {
    /// The layout of `inputs`, or why `batch` cannot feed them.
    pub fn of(inputs: &[TensorSpec]) -> Result<Layout, BatchError> {
        let mut slots = Vec::new();
        let mut offset = 0;
        for spec in inputs {
            let refuse = |why: &str| {
                BatchError::Input(format!(
                    "the model's input '{}' ({} {:?}) {why}",
                    spec.name, spec.datatype, spec.shape
                ))
            };
            if spec.datatype == DataType::Bytes {
                return Err(refuse("takes strings; batch feeds numbers only"));
            }
            if spec.shape.first() != Some(&-1) {
                return Err(refuse("has no dynamic batch dimension"));
            }
            if spec.shape.iter().skip(1).any(|d| *d < 1) {
                return Err(refuse("has a dynamic dimension past the batch one"));
            }
            let width = spec.shape.iter().skip(1).product::<i64>() as usize;
            slots.push(Slot {
                spec: spec.clone(),
                offset,
                width,
            });
            offset += width;
        }
        Ok(Layout {
            slots,
            width: offset,
        })
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether the value at `position` must be a whole number (an integer or
    /// boolean input).
    pub fn integral(&self, position: usize) -> bool {
        self.slots
            .iter()
            .find(|s| position < s.offset + s.width)
            .is_some_and(|s| {
                !matches!(
                    s.spec.datatype,
                    DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64
                )
            })
    }

    /// For each position of the row, the index in `columns` (a file's
    /// feature columns, in order) that fills it; `source` names the file.
    pub fn bind(&self, columns: &[String], source: &str) -> Result<Vec<usize>, BatchError> {
        let named = |slot: &Slot| -> Option<Vec<usize>> {
            let names: Vec<String> = if slot.width == 1 {
                vec![slot.spec.name.clone()]
            } else {
                (0..slot.width)
                    .map(|i| format!("{}_{i}", slot.spec.name))
                    .collect()
            };
            names
                .iter()
                .map(|n| columns.iter().position(|c| c == n))
                .collect()
        };
        if let [slot] = self.slots.as_slice() {
            if let Some(positions) = named(slot) {
                return Ok(positions);
            }
            if columns.len() != slot.width {
                return Err(BatchError::Input(format!(
                    "{source}: {} feature columns ({}), but the model's input '{}' takes {} \
                     (name the others with --id-column or --ignore-column)",
                    columns.len(),
                    shorten(columns),
                    slot.spec.name,
                    slot.width
                )));
            }
            return Ok((0..columns.len()).collect());
        }
        let mut positions = Vec::with_capacity(self.width);
        for slot in &self.slots {
            positions.extend(named(slot).ok_or_else(|| {
                BatchError::Input(format!(
                    "{source}: the model's input '{}' needs the column{} {} (the file has {})",
                    slot.spec.name,
                    if slot.width == 1 { "" } else { "s" },
                    if slot.width == 1 {
                        slot.spec.name.clone()
                    } else {
                        format!("{0}_0..{0}_{1}", slot.spec.name, slot.width - 1)
                    },
                    shorten(columns)
                ))
            })?);
        }
        Ok(positions)
    }

    /// The model's input tensors for `rows` rows of `features`.
    pub fn tensors(&self, features: &[f64], rows: usize) -> Vec<Tensor> {
        self.slots
            .iter()
            .map(|slot| {
                let values = (0..rows).flat_map(|row| {
                    let start = row * self.width + slot.offset;
                    features[start..start + slot.width].iter().copied()
                });
                let data = convert(slot.spec.datatype, values);
                let mut shape = slot.spec.shape.clone();
                shape[0] = rows as i64;
                Tensor::new(shape, data).expect("the layout sizes each tensor")
            })
            .collect()
    }
}

/// `values` as elements of `datatype` (whole numbers already checked).
fn convert(datatype: DataType, values: impl Iterator<Item = f64>) -> TensorData {
    match datatype {
        DataType::Bool => TensorData::Bool(values.map(|v| v != 0.0).collect()),
        DataType::Uint8 => TensorData::Uint8(values.map(|v| v as u8).collect()),
        DataType::Uint16 => TensorData::Uint16(values.map(|v| v as u16).collect()),
        DataType::Uint32 => TensorData::Uint32(values.map(|v| v as u32).collect()),
        DataType::Uint64 => TensorData::Uint64(values.map(|v| v as u64).collect()),
        DataType::Int8 => TensorData::Int8(values.map(|v| v as i8).collect()),
        DataType::Int16 => TensorData::Int16(values.map(|v| v as i16).collect()),
        DataType::Int32 => TensorData::Int32(values.map(|v| v as i32).collect()),
        DataType::Int64 => TensorData::Int64(values.map(|v| v as i64).collect()),
        DataType::Fp16 => TensorData::Fp16(values.map(half::f16::from_f64).collect()),
        DataType::Bf16 => TensorData::Bf16(values.map(half::bf16::from_f64).collect()),
        DataType::Fp32 => TensorData::Fp32(values.map(|v| v as f32).collect()),
        DataType::Fp64 => TensorData::Fp64(values.collect()),
        DataType::Bytes => unreachable!("Layout::of refuses string inputs"),
    }
}

/// Column names for a message, the first few.
fn shorten(columns: &[String]) -> String {
    match columns.len() {
        0 => "none".to_string(),
        1..=6 => columns.join(", "),
        n => format!("{}, ... {} more", columns[..5].join(", "), n - 5),
    }
}

/// Parses one feature value for `column`, checking it is whole when the
/// input is integral; the error is the row's reject reason.
pub fn parse_value(text: &str, column: &str, integral: bool) -> Result<f64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("column '{column}' is empty"));
    }
    let value: f64 = text
        .parse()
        .map_err(|_| format!("column '{column}': '{}' is not a number", cut(text)))?;
    check_value(value, column, integral)
}

/// Checks that `value` is whole when `integral`; the error is a reject reason.
pub fn check_value(value: f64, column: &str, integral: bool) -> Result<f64, String> {
    if integral && value.fract() != 0.0 {
        return Err(format!("column '{column}': {value} is not a whole number"));
    }
    Ok(value)
}

/// At most 40 characters of a value, for a reason.
pub fn cut(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(40).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn one_input_takes_the_columns_in_order_or_by_name() {
        let layout = Layout::of(&[spec("x", DataType::Fp32, &[-1, 3])]).unwrap();
        assert_eq!(
            layout.bind(&names(&["a", "b", "c"]), "f").unwrap(),
            [0, 1, 2]
        );
        assert_eq!(
            layout.bind(&names(&["x_2", "x_0", "x_1"]), "f").unwrap(),
            [1, 2, 0]
        );
        let error = layout.bind(&names(&["a", "b"]), "f.csv").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("f.csv: 2 feature columns (a, b), but the model's input 'x' takes 3"),
            "{error}"
        );
    }

    #[test]
    fn several_inputs_take_their_columns_by_name() {
        let layout = Layout::of(&[
            spec("age", DataType::Int64, &[-1, 1]),
            spec("scores", DataType::Fp32, &[-1, 2]),
        ])
        .unwrap();
        let bound = layout
            .bind(&names(&["scores_1", "age", "scores_0"]), "f")
            .unwrap();
        assert_eq!(bound, [1, 2, 0]);
        assert!(layout.integral(0) && !layout.integral(1));
        let error = layout.bind(&names(&["age"]), "f").unwrap_err();
        assert!(error.to_string().contains("scores_0..scores_1"), "{error}");
        let tensors = layout.tensors(&[30.0, 0.5, 0.25, 40.0, 1.5, 2.5], 2);
        assert_eq!(tensors[0].shape, [2, 1]);
        assert_eq!(tensors[0].data, TensorData::Int64(vec![30, 40]));
        assert_eq!(tensors[1].data, TensorData::Fp32(vec![0.5, 0.25, 1.5, 2.5]));
    }

    #[test]
    fn inputs_batch_cannot_feed_are_refused() {
        for bad in [
            spec("s", DataType::Bytes, &[-1, 1]),
            spec("fixed", DataType::Fp32, &[8, 4]),
            spec("ragged", DataType::Fp32, &[-1, -1]),
        ] {
            assert!(Layout::of(&[bad]).is_err());
        }
    }

    #[test]
    fn values_are_parsed_with_reasons() {
        assert_eq!(parse_value(" 1.5 ", "a", false), Ok(1.5));
        assert_eq!(
            parse_value("", "a", false),
            Err("column 'a' is empty".into())
        );
        assert_eq!(
            parse_value("abc", "a", false),
            Err("column 'a': 'abc' is not a number".into())
        );
        assert_eq!(
            parse_value("2.5", "n", true),
            Err("column 'n': 2.5 is not a whole number".into())
        );
    }
}
