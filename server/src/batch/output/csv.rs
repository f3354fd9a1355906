//! Predictions as CSV with a header row.

use std::fs::File;
use std::path::PathBuf;

use super::{Header, PartWriter, output_error, push_value};
use crate::batch::BatchError;
use crate::batch::layout::Rows;
use crate::batch::store::Store;
use crate::tensor::Tensor;

/// Writes a CSV part.
pub struct CsvWriter {
    path: PathBuf,
    name: String,
    writer: csv::Writer<File>,
    field: String,
}

impl CsvWriter {
    /// Creates `BASE.csv` and writes its header.
    pub fn create(store: &Store, base: &str, header: Header) -> Result<CsvWriter, BatchError> {
        let name = format!("{base}.csv");
        let path = store.staging_path(&name)?;
        let file = File::create(&path).map_err(|e| output_error(&path, e))?;
        let mut writer = csv::WriterBuilder::new()
            .buffer_capacity(1 << 20)
            .from_writer(file);
        let mut names = vec!["_source".to_string(), "_row".to_string()];
        names.extend(header.id_column);
        names.extend(header.columns.iter().flat_map(|c| c.names()));
        writer
            .write_record(&names)
            .map_err(|e| output_error(&path, e))?;
        Ok(CsvWriter {
            path,
            name,
            writer,
            field: String::new(),
        })
    }
}

impl PartWriter for CsvWriter {
    fn write(&mut self, source: &str, rows: &Rows, outputs: &[Tensor]) -> Result<(), BatchError> {
        let count = rows.len();
        let path = &self.path;
        let failed = |e: csv::Error| output_error(path, e);
        for row in 0..count {
            let csv = &mut self.writer;
            csv.write_field(source).map_err(failed)?;
            csv.write_field(rows.numbers[row].to_string())
                .map_err(failed)?;
            if let Some(id) = rows.ids.get(row) {
                csv.write_field(id).map_err(failed)?;
            }
            for output in outputs {
                let width = output.data.len() / count;
                for column in 0..width {
                    self.field.clear();
                    push_value(&mut self.field, &output.data, row * width + column, false);
                    csv.write_field(&self.field).map_err(failed)?;
                }
            }
            csv.write_record(None::<&[u8]>).map_err(failed)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<(PathBuf, String)>, BatchError> {
        let CsvWriter {
            path, name, writer, ..
        } = *self;
        let file = writer
            .into_inner()
            .map_err(|e| output_error(&path, e.error()))?;
        file.sync_all().map_err(|e| output_error(&path, e))?;
        Ok(vec![(path, name)])
    }
}
