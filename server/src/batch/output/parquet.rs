//! Predictions as Parquet, one record batch per model run, compressed with
//! snappy (what pandas and Spark write by default).

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
    Int64Array, RecordBatch, StringArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType as ArrowType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::{Header, PartWriter, output_error};
use crate::batch::BatchError;
use crate::batch::layout::Rows;
use crate::batch::store::Store;
use crate::tensor::{Tensor, TensorData};

/// Writes a Parquet part.
pub struct ParquetWriter {
    path: PathBuf,
    name: String,
    header: Header,
    /// Opened at the first write, when the outputs' types are known.
    writer: Option<ArrowWriter<std::fs::File>>,
}

impl ParquetWriter {
    /// Prepares `BASE.parquet`.
    pub fn create(store: &Store, base: &str, header: Header) -> Result<ParquetWriter, BatchError> {
        let name = format!("{base}.parquet");
        Ok(ParquetWriter {
            path: store.staging_path(&name)?,
            name,
            header,
            writer: None,
        })
    }

    fn open(&mut self, schema: SchemaRef) -> Result<&mut ArrowWriter<std::fs::File>, BatchError> {
        if self.writer.is_none() {
            let file =
                std::fs::File::create(&self.path).map_err(|e| output_error(&self.path, e))?;
            let properties = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            let writer = ArrowWriter::try_new(file, schema, Some(properties))
                .map_err(|e| output_error(&self.path, e))?;
            self.writer = Some(writer);
        }
        Ok(self.writer.as_mut().expect("opened above"))
    }

    fn schema(&self, outputs: &[&TensorData]) -> SchemaRef {
        let mut fields = vec![
            Field::new("_source", ArrowType::Utf8, false),
            Field::new("_row", ArrowType::UInt64, false),
        ];
        if let Some(id) = &self.header.id_column {
            fields.push(Field::new(id, ArrowType::Utf8, false));
        }
        for (columns, data) in self.header.columns.iter().zip(outputs) {
            for name in columns.names() {
                fields.push(Field::new(name, arrow_type(data), true));
            }
        }
        Arc::new(Schema::new(fields))
    }
}

fn arrow_type(data: &TensorData) -> ArrowType {
    match data {
        TensorData::Bool(_) => ArrowType::Boolean,
        TensorData::Uint8(_) => ArrowType::UInt8,
        TensorData::Uint16(_) => ArrowType::UInt16,
        TensorData::Uint32(_) => ArrowType::UInt32,
        TensorData::Uint64(_) => ArrowType::UInt64,
        TensorData::Int8(_) => ArrowType::Int8,
        TensorData::Int16(_) => ArrowType::Int16,
        TensorData::Int32(_) => ArrowType::Int32,
        TensorData::Int64(_) => ArrowType::Int64,
        TensorData::Fp16(_) | TensorData::Bf16(_) | TensorData::Fp32(_) => ArrowType::Float32,
        TensorData::Fp64(_) => ArrowType::Float64,
        TensorData::Bytes(_) => ArrowType::Utf8,
    }
}

/// Column `column` of `width` of `data`, for `rows` rows, as an Arrow array.
fn column(data: &TensorData, rows: usize, width: usize, column: usize) -> ArrayRef {
    let picks = (0..rows).map(move |row| row * width + column);
    match data {
        TensorData::Bool(v) => {
            Arc::new(BooleanArray::from(picks.map(|i| v[i]).collect::<Vec<_>>()))
        }
        TensorData::Uint8(v) => Arc::new(UInt8Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Uint16(v) => Arc::new(UInt16Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Uint32(v) => Arc::new(UInt32Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Uint64(v) => Arc::new(UInt64Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Int8(v) => Arc::new(Int8Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Int16(v) => Arc::new(Int16Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Int32(v) => Arc::new(Int32Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Int64(v) => Arc::new(Int64Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Fp16(v) => Arc::new(Float32Array::from_iter_values(
            picks.map(|i| f32::from(v[i])),
        )),
        TensorData::Bf16(v) => Arc::new(Float32Array::from_iter_values(
            picks.map(|i| f32::from(v[i])),
        )),
        TensorData::Fp32(v) => Arc::new(Float32Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Fp64(v) => Arc::new(Float64Array::from_iter_values(picks.map(|i| v[i]))),
        TensorData::Bytes(v) => Arc::new(StringArray::from_iter_values(
            picks.map(|i| String::from_utf8_lossy(&v[i]).into_owned()),
        )),
    }
}

impl PartWriter for ParquetWriter {
    fn write(&mut self, source: &str, rows: &Rows, outputs: &[Tensor]) -> Result<(), BatchError> {
        let count = rows.len();
        if count == 0 {
            return Ok(());
        }
        let data: Vec<&TensorData> = outputs.iter().map(|t| &t.data).collect();
        let schema = self.schema(&data);
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                source, count,
            ))),
            Arc::new(UInt64Array::from_iter_values(rows.numbers.iter().copied())),
        ];
        if self.header.id_column.is_some() {
            arrays.push(Arc::new(StringArray::from_iter_values(rows.ids.iter())));
        }
        for output in outputs {
            let width = output.data.len() / count;
            arrays.extend((0..width).map(|c| column(&output.data, count, width, c)));
        }
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| output_error(&self.path, e))?;
        let path = self.path.clone();
        self.open(schema)?
            .write(&batch)
            .map_err(|e| output_error(&path, e))
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<(PathBuf, String)>, BatchError> {
        if self.writer.is_none() {
            // Every row of the part was rejected: an empty file with the schema.
            let data: Vec<TensorData> = self
                .header
                .columns
                .iter()
                .map(|_| TensorData::Fp64(Vec::new()))
                .collect();
            let schema = self.schema(&data.iter().collect::<Vec<_>>());
            self.open(schema)?;
        }
        let writer = self.writer.take().expect("opened above");
        let file = writer
            .into_inner()
            .map_err(|e| output_error(&self.path, e))?;
        file.sync_all().map_err(|e| output_error(&self.path, e))?;
        Ok(vec![(self.path, self.name)])
    }
}
