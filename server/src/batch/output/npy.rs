//! Predictions as NumPy `.npy` files: one per output (`PART.NAME.npy`,
//! `[rows]` or `[rows, width]`), and the row numbers (`PART._row.npy`,
//! int64). The header is written with room to spare and rewritten with the
//! row count when the part is complete.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::{Header, PartWriter, Staged, output_error};
use crate::batch::BatchError;
use crate::batch::layout::Rows;
use crate::batch::store::Store;
use crate::tensor::{Tensor, TensorData};

/// The header's fixed size: the magic, the version, the length and the
/// padded dict, room enough for any shape.
const HEADER: usize = 128;

/// A `.npy` (version 1.0) header of exactly 128 bytes for an array of
/// element type `descr` (`<f4`, ...) and `shape` (Python's tuple text, such as
/// `(300, 16)` or `(5,)`), in C order.
pub fn header(descr: &str, shape: &str) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while dict.len() < HEADER - 11 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((dict.len() as u16).to_le_bytes());
    bytes.extend(dict.as_bytes());
    debug_assert_eq!(bytes.len(), HEADER);
    bytes
}

struct Array {
    staged: Staged,
    descr: &'static str,
    width: usize,
    rows: u64,
}

/// Writes a part as `.npy` files.
pub struct NpyWriter {
    arrays: Vec<Array>,
    row_numbers: Array,
}

impl NpyWriter {
    /// Creates the part's files, with placeholder headers.
    pub fn create(store: &Store, base: &str, header: Header) -> Result<NpyWriter, BatchError> {
        if header.id_column.is_some() {
            return Err(BatchError::Usage(
                "--output-format npy has no column for --id-column: use csv, jsonl or parquet"
                    .into(),
            ));
        }
        let array = |name: String, width: usize| -> Result<Array, BatchError> {
            let mut staged = Staged::create(store, name)?;
            staged
                .file
                .write_all(&[b' '; HEADER])
                .map_err(|e| output_error(&staged.path, e))?;
            Ok(Array {
                staged,
                descr: "",
                width,
                rows: 0,
            })
        };
        let mut arrays = Vec::new();
        for columns in &header.columns {
            arrays.push(array(
                format!("{base}.{}.npy", columns.name),
                columns.width,
            )?);
        }
        let mut row_numbers = array(format!("{base}._row.npy"), 1)?;
        row_numbers.descr = "<i8";
        Ok(NpyWriter {
            arrays,
            row_numbers,
        })
    }
}

/// The `.npy` element type of `data`, or why it has none.
fn descr(data: &TensorData) -> Result<&'static str, BatchError> {
    Ok(match data {
        TensorData::Bool(_) => "|b1",
        TensorData::Uint8(_) => "|u1",
        TensorData::Uint16(_) => "<u2",
        TensorData::Uint32(_) => "<u4",
        TensorData::Uint64(_) => "<u8",
        TensorData::Int8(_) => "|i1",
        TensorData::Int16(_) => "<i2",
        TensorData::Int32(_) => "<i4",
        TensorData::Int64(_) => "<i8",
        TensorData::Fp16(_) => "<f2",
        TensorData::Fp32(_) => "<f4",
        TensorData::Fp64(_) => "<f8",
        TensorData::Bf16(_) | TensorData::Bytes(_) => {
            return Err(BatchError::Usage(format!(
                "--output-format npy cannot hold {} outputs: use csv, jsonl or parquet",
                data.datatype()
            )));
        }
    })
}

impl PartWriter for NpyWriter {
    fn write(&mut self, _source: &str, rows: &Rows, outputs: &[Tensor]) -> Result<(), BatchError> {
        for (array, output) in self.arrays.iter_mut().zip(outputs) {
            array.descr = descr(&output.data)?;
            array.width = output.data.len() / rows.len().max(1);
            array.rows += rows.len() as u64;
            array
                .staged
                .file
                .write_all(&output.data.to_le_bytes())
                .map_err(|e| output_error(&array.staged.path, e))?;
        }
        let numbers: Vec<u8> = rows
            .numbers
            .iter()
            .flat_map(|n| (*n as i64).to_le_bytes())
            .collect();
        self.row_numbers.rows += rows.len() as u64;
        self.row_numbers
            .staged
            .file
            .write_all(&numbers)
            .map_err(|e| output_error(&self.row_numbers.staged.path, e))
    }

    fn finish(self: Box<Self>) -> Result<Vec<(PathBuf, String)>, BatchError> {
        let NpyWriter {
            arrays,
            row_numbers,
        } = *self;
        let mut finished = Vec::new();
        for mut array in arrays.into_iter().chain([row_numbers]) {
            // An output never written (every row rejected): float64, empty.
            let descr = if array.descr.is_empty() {
                "<f8"
            } else {
                array.descr
            };
            let shape = if array.width == 1 {
                format!("({},)", array.rows)
            } else {
                format!("({}, {})", array.rows, array.width)
            };
            let bytes = header(descr, &shape);
            let file = &mut array.staged.file;
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.write_all(&bytes))
                .map_err(|e| output_error(&array.staged.path, e))?;
            finished.push(array.staged.finish()?);
        }
        Ok(finished)
    }
}
