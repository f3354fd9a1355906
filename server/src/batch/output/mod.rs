//! Writing one part's predictions (and its rejects) to staged files.
//!
//! Every row carries `_source` (its input file), `_row` (its row number
//! there), the id column's value when one is named, then the model's
//! outputs: `NAME` for an output of one value per row, `NAME_0`, `NAME_1`,
//! ... for several (JSON Lines writes those as an array). `.npy` has no
//! columns: each output goes to `PART.NAME.npy` and the row numbers to
//! `PART._row.npy`.

mod csv;
mod jsonl;
pub mod npy;
mod parquet;

use std::io::Write;
use std::path::PathBuf;

use super::layout::{Reject, Rows};
use super::store::Store;
use super::{BatchError, Format};
use crate::runtime::TensorSpec;
use crate::tensor::{Tensor, TensorData};

/// Writes one part's rows.
pub trait PartWriter: Send {
    /// Appends the predictions for `rows` of `source`.
    fn write(&mut self, source: &str, rows: &Rows, outputs: &[Tensor]) -> Result<(), BatchError>;
    /// Closes the files; returns each staged file and its output name.
    fn finish(self: Box<Self>) -> Result<Vec<(PathBuf, String)>, BatchError>;
}

/// One output's columns.
#[derive(Debug, Clone)]
pub struct OutputColumns {
    /// The output's name.
    pub name: String,
    /// Its values per row.
    pub width: usize,
}

impl OutputColumns {
    /// The column names: the output's, or one per value.
    pub fn names(&self) -> Vec<String> {
        match self.width {
            1 => vec![self.name.clone()],
            width => (0..width).map(|i| format!("{}_{i}", self.name)).collect(),
        }
    }
}

/// The columns of `specs` whose sizes are fixed past the batch dimension;
/// `None` when one is dynamic (the widths are then read off the first batch).
pub fn static_columns(specs: &[TensorSpec]) -> Option<Vec<OutputColumns>> {
    specs
        .iter()
        .map(|spec| {
            spec.shape
                .iter()
                .skip(1)
                .all(|d| *d > 0)
                .then(|| OutputColumns {
                    name: spec.name.clone(),
                    width: spec.shape.iter().skip(1).product::<i64>() as usize,
                })
        })
        .collect()
}

/// The columns of `outputs` for `rows` rows; with no outputs, one column
/// per spec.
pub fn columns_of(specs: &[TensorSpec], outputs: &[Tensor], rows: usize) -> Vec<OutputColumns> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| OutputColumns {
            name: spec.name.clone(),
            width: match outputs.get(i) {
                Some(tensor) if rows > 0 => tensor.data.len() / rows,
                _ => 1,
            },
        })
        .collect()
}

/// A writer of the part `base` (`part-FFFFF-CCCCC`) in `format`.
pub fn create(
    format: Format,
    store: &Store,
    base: &str,
    columns: Vec<OutputColumns>,
    id_column: Option<&str>,
) -> Result<Box<dyn PartWriter>, BatchError> {
    let header = Header {
        columns,
        id_column: id_column.map(str::to_string),
    };
    Ok(match format {
        Format::Csv => Box::new(csv::CsvWriter::create(store, base, header)?),
        Format::Jsonl => Box::new(jsonl::JsonlWriter::create(store, base, header)?),
        Format::Parquet => Box::new(parquet::ParquetWriter::create(store, base, header)?),
        Format::Npy => Box::new(npy::NpyWriter::create(store, base, header)?),
    })
}

/// What every row holds besides the row id.
#[derive(Debug, Clone)]
pub struct Header {
    /// The model's outputs.
    pub columns: Vec<OutputColumns>,
    /// The id column's name, when one is named.
    pub id_column: Option<String>,
}

/// A staged file: its local path, its output name and a buffered writer.
pub struct Staged {
    /// Where it is written.
    pub path: PathBuf,
    /// Its name in the output.
    pub name: String,
    /// The open file.
    pub file: std::io::BufWriter<std::fs::File>,
}

impl Staged {
    /// Creates the staged file for the output `name`.
    pub fn create(store: &Store, name: String) -> Result<Staged, BatchError> {
        let path = store.staging_path(&name)?;
        let file = std::fs::File::create(&path).map_err(|e| output_error(&path, e))?;
        Ok(Staged {
            path,
            name,
            file: std::io::BufWriter::with_capacity(1 << 20, file),
        })
    }

    /// Flushes the file to disk; returns its path and name.
    pub fn finish(self) -> Result<(PathBuf, String), BatchError> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| output_error(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| output_error(&self.path, e))?;
        Ok((self.path, self.name))
    }
}

/// A write failure on `path`.
pub fn output_error(path: &std::path::Path, error: impl std::fmt::Display) -> BatchError {
    BatchError::Output(format!("{}: {error}", path.display()))
}

/// Writes the part's rejects as JSON Lines to `_rejects/BASE.jsonl`.
pub fn write_rejects(
    store: &Store,
    base: &str,
    source: &str,
    rejects: &[Reject],
) -> Result<(PathBuf, String), BatchError> {
    let mut staged = Staged::create(store, format!("_rejects/{base}.jsonl"))?;
    for reject in rejects {
        let line =
            serde_json::json!({"source": source, "row": reject.row, "reason": reject.reason});
        writeln!(staged.file, "{line}").map_err(|e| output_error(&staged.path, e))?;
    }
    staged.finish()
}

/// Appends element `index` of `data` to `text`: as a CSV field, or with
/// `json`, as a JSON value (a string quoted, a NaN or infinity as `null`).
pub fn push_value(text: &mut String, data: &TensorData, index: usize, json: bool) {
    use std::fmt::Write as _;
    // Whole numbers pass 0.0: only a float's own value can be non-finite.
    let float = |text: &mut String, value: f64, shown: &dyn std::fmt::Display| {
        if json && !value.is_finite() {
            text.push_str("null");
        } else {
            let _ = write!(text, "{shown}");
        }
    };
    match data {
        TensorData::Bool(v) => float(text, 0.0, &v[index]),
        TensorData::Uint8(v) => float(text, 0.0, &v[index]),
        TensorData::Uint16(v) => float(text, 0.0, &v[index]),
        TensorData::Uint32(v) => float(text, 0.0, &v[index]),
        TensorData::Uint64(v) => float(text, 0.0, &v[index]),
        TensorData::Int8(v) => float(text, 0.0, &v[index]),
        TensorData::Int16(v) => float(text, 0.0, &v[index]),
        TensorData::Int32(v) => float(text, 0.0, &v[index]),
        TensorData::Int64(v) => float(text, 0.0, &v[index]),
        TensorData::Fp16(v) => float(text, f64::from(v[index]), &v[index]),
        TensorData::Bf16(v) => float(text, f64::from(v[index]), &v[index]),
        TensorData::Fp32(v) => float(text, f64::from(v[index]), &v[index]),
        TensorData::Fp64(v) => float(text, v[index], &v[index]),
        TensorData::Bytes(v) if json => {
            let string = String::from_utf8_lossy(&v[index]);
            text.push_str(&serde_json::to_string(&string).expect("a string serializes"));
        }
        TensorData::Bytes(v) => text.push_str(&String::from_utf8_lossy(&v[index])),
    }
}
