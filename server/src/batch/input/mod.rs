//! Reading rows from input files, in bounded pieces.
//!
//! Every reader numbers its rows from 0 (a CSV header is not a row; a blank
//! JSONL line is skipped and not counted), finds the feature columns once per
//! file (`Columns`), and fills [`Rows`] with what it accepts and a
//! [`Reject`](super::layout::Reject) for what it cannot read. A file that
//! does not fit the model at all (too few columns, say) is an error, not a
//! reject.

mod csv;
pub mod jsonl;
mod npy;
mod parquet;

use std::io::Read;

use super::layout::{Layout, Rows};
use super::{BatchError, Format};

/// Reads rows of one file.
pub trait RowReader: Send {
    /// Reads up to `rows` input rows (accepted or refused) into `into`;
    /// returns `false` once the file has no more.
    fn read(&mut self, rows: usize, into: &mut Rows) -> Result<bool, BatchError>;
}

/// How the columns of one file feed the model.
#[derive(Debug, Clone)]
pub struct Columns {
    /// Every column's name, in the file's order.
    pub names: Vec<String>,
    /// For each position of the model's row, the index of its column.
    pub features: Vec<usize>,
    /// For each position, whether its value must be whole.
    pub integral: Vec<bool>,
    /// The index of the id column, when one is named.
    pub id: Option<usize>,
}

/// What a reader needs besides the bytes.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// The model's inputs.
    pub layout: &'a Layout,
    /// The column copied to the output as the row's own id.
    pub id_column: Option<&'a str>,
    /// Columns that are not features.
    pub ignore_columns: &'a [String],
    /// The file's name, for messages.
    pub source: &'a str,
}

impl Columns {
    /// Binds a file's columns to the model's inputs.
    pub fn bind(names: Vec<String>, options: &Options) -> Result<Columns, BatchError> {
        let id = match options.id_column {
            Some(column) => Some(names.iter().position(|n| n == column).ok_or_else(|| {
                BatchError::Input(format!(
                    "{}: no column '{column}' (--id-column)",
                    options.source
                ))
            })?),
            None => None,
        };
        let candidates: Vec<usize> = (0..names.len())
            .filter(|i| Some(*i) != id && !options.ignore_columns.contains(&names[*i]))
            .collect();
        let candidate_names: Vec<String> = candidates.iter().map(|i| names[*i].clone()).collect();
        let features: Vec<usize> = options
            .layout
            .bind(&candidate_names, options.source)?
            .into_iter()
            .map(|i| candidates[i])
            .collect();
        let integral = (0..features.len())
            .map(|p| options.layout.integral(p))
            .collect();
        Ok(Columns {
            names,
            features,
            integral,
            id,
        })
    }
}

/// A reader of one file in `format`, past its first `skip` rows. Parquet is
/// read from a local file (`local`); the others from the stream `open` gives.
pub fn open(
    format: Format,
    open: impl FnOnce() -> Result<Box<dyn Read + Send>, BatchError>,
    local: impl FnOnce() -> Result<std::path::PathBuf, BatchError>,
    options: &Options,
    batch_size: usize,
    skip: u64,
) -> Result<Box<dyn RowReader>, BatchError> {
    let mut reader: Box<dyn RowReader> = match format {
        Format::Csv => Box::new(csv::CsvReader::new(open()?, options)?),
        Format::Jsonl => Box::new(jsonl::JsonlReader::new(open()?, options)),
        Format::Npy => Box::new(npy::NpyReader::new(open()?, options)?),
        Format::Parquet => {
            return Ok(Box::new(parquet::ParquetReader::new(
                &local()?,
                options,
                batch_size,
                skip,
            )?));
        }
    };
    let mut left = skip;
    while left > 0 {
        let mut skipped = Rows::default();
        let more = reader.read(left.min(65_536) as usize, &mut skipped)?;
        left -= skipped.consumed;
        if !more && left > 0 {
            return Err(BatchError::Input(format!(
                "{}: has fewer rows than the {skip} an earlier run published; \
                 it changed since: start again with a new --output",
                options.source
            )));
        }
    }
    Ok(reader)
}

/// An I/O error while reading `source` at `row`.
fn unreadable(source: &str, row: u64, error: impl std::fmt::Display) -> BatchError {
    BatchError::Input(format!("{source}: row {row}: cannot read: {error}"))
}

/// The layout of one input `x` of `datatype` and `width` values per row,
/// for the tests of the readers.
#[cfg(test)]
pub(crate) fn single_input(datatype: crate::tensor::DataType, width: i64) -> Layout {
    Layout::of(&[crate::runtime::TensorSpec {
        name: "x".into(),
        datatype,
        shape: vec![-1, width],
    }])
    .unwrap()
}

/// Reads one local file's bytes of rows for the tests of the readers.
#[cfg(test)]
pub(crate) fn read_all(
    format: Format,
    bytes: &[u8],
    options: &Options,
    skip: u64,
) -> Result<Rows, BatchError> {
    let dir = std::env::temp_dir().join(format!(
        "sluice-input-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("input.{}", format.extension()));
    std::fs::write(&path, bytes).unwrap();
    let stream_path = path.clone();
    let mut reader = open(
        format,
        move || Ok(Box::new(std::fs::File::open(&stream_path).unwrap())),
        || Ok(path.clone()),
        options,
        2,
        skip,
    )?;
    let mut rows = Rows::default();
    while reader.read(3, &mut rows)? {}
    std::fs::remove_dir_all(&dir).unwrap();
    Ok(rows)
}
