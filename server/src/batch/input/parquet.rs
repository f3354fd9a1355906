//! Apache Parquet, read through Arrow one record batch at a time. Numeric
//! and boolean columns are features; a list column `x` of fixed length
//! counts as `x_0`, `x_1`, ... is not supported: flatten it first. The id
//! column may be of any type (it is written as text).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::DataType as ArrowType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::{Columns, Options, RowReader, unreadable};
use crate::batch::BatchError;
use crate::batch::layout::{Reject, Rows, check_value};

/// Reads Parquet rows.
pub struct ParquetReader {
    batches: ParquetRecordBatchReader,
    columns: Columns,
    /// The batch being read, as f64 features, the id as text, and the next row in it.
    pending: Option<Pending>,
    next_row: u64,
    source: String,
}

struct Pending {
    features: Vec<Arc<Float64Array>>,
    id: Option<Arc<StringArray>>,
    rows: usize,
    at: usize,
}

impl ParquetReader {
    /// Opens `path`, past its first `skip` rows.
    pub fn new(
        path: &Path,
        options: &Options,
        batch_size: usize,
        skip: u64,
    ) -> Result<ParquetReader, BatchError> {
        let source = options.source;
        let bad = |e: &dyn std::fmt::Display| {
            BatchError::Input(format!("{source}: not a Parquet file batch reads: {e}"))
        };
        let file = File::open(path).map_err(|e| BatchError::Input(format!("{source}: {e}")))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?;
        let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
        if skip > total {
            return Err(BatchError::Input(format!(
                "{source}: has {total} rows, fewer than the {skip} an earlier run published; \
                 it changed since: start again with a new --output"
            )));
        }
        let schema = builder.schema().clone();
        let names = schema.fields().iter().map(|f| f.name().clone()).collect();
        let columns = Columns::bind(names, options)?;
        for column in &columns.features {
            let field = schema.field(*column);
            if !(field.data_type().is_numeric() || field.data_type() == &ArrowType::Boolean) {
                return Err(BatchError::Input(format!(
                    "{source}: column '{}' is {}, not a number",
                    field.name(),
                    field.data_type()
                )));
            }
        }
        let batches = builder
            .with_batch_size(batch_size.max(1))
            .with_offset(skip as usize)
            .build()
            .map_err(|e| bad(&e))?;
        Ok(ParquetReader {
            batches,
            columns,
            pending: None,
            next_row: skip,
            source: source.to_string(),
        })
    }

    fn load(&self, batch: &RecordBatch) -> Result<Pending, BatchError> {
        let cast = |array: &ArrayRef, to: &ArrowType| {
            arrow_cast::cast(array, to).map_err(|e| unreadable(&self.source, self.next_row, e))
        };
        let mut features = Vec::with_capacity(self.columns.features.len());
        for column in &self.columns.features {
            let values = cast(batch.column(*column), &ArrowType::Float64)?;
            let values = values
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("cast to Float64")
                .clone();
            features.push(Arc::new(values));
        }
        let id = match self.columns.id {
            Some(column) => {
                let values = cast(batch.column(column), &ArrowType::Utf8)?;
                Some(Arc::new(
                    values
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("cast to Utf8")
                        .clone(),
                ))
            }
            None => None,
        };
        Ok(Pending {
            features,
            id,
            rows: batch.num_rows(),
            at: 0,
        })
    }
}

impl RowReader for ParquetReader {
    fn read(&mut self, rows: usize, into: &mut Rows) -> Result<bool, BatchError> {
        let mut taken = 0;
        while taken < rows {
            if self.pending.as_ref().is_none_or(|p| p.at == p.rows) {
                match self.batches.next() {
                    None => return Ok(false),
                    Some(batch) => {
                        let batch =
                            batch.map_err(|e| unreadable(&self.source, self.next_row, e))?;
                        self.pending = Some(self.load(&batch)?);
                    }
                }
                continue;
            }
            let pending = self.pending.as_mut().expect("loaded above");
            let (at, row) = (pending.at, self.next_row);
            pending.at += 1;
            self.next_row += 1;
            into.consumed += 1;
            taken += 1;
            let start = into.features.len();
            let mut reason = None;
            for (position, values) in pending.features.iter().enumerate() {
                let name = &self.columns.names[self.columns.features[position]];
                if values.is_null(at) {
                    reason = Some(format!("column '{name}' is null"));
                    break;
                }
                match check_value(values.value(at), name, self.columns.integral[position]) {
                    Ok(value) => into.features.push(value),
                    Err(why) => {
                        reason = Some(why);
                        break;
                    }
                }
            }
            match reason {
                None => {
                    into.numbers.push(row);
                    if let Some(ids) = &pending.id {
                        into.ids.push(if ids.is_null(at) {
                            String::new()
                        } else {
                            ids.value(at).to_string()
                        });
                    }
                }
                Some(reason) => {
                    into.features.truncate(start);
                    into.rejects.push(Reject { row, reason });
                }
            }
        }
        Ok(true)
    }
}
