//! Predictions as JSON Lines: one object per row.

use std::io::Write;
use std::path::PathBuf;

use super::{Header, PartWriter, Staged, output_error, push_value};
use crate::batch::BatchError;
use crate::batch::layout::Rows;
use crate::batch::store::Store;
use crate::tensor::Tensor;

/// Writes a JSON Lines part.
pub struct JsonlWriter {
    staged: Staged,
    header: Header,
    line: String,
}

impl JsonlWriter {
    /// Creates `BASE.jsonl`.
    pub fn create(store: &Store, base: &str, header: Header) -> Result<JsonlWriter, BatchError> {
        Ok(JsonlWriter {
            staged: Staged::create(store, format!("{base}.jsonl"))?,
            header,
            line: String::new(),
        })
    }
}

impl PartWriter for JsonlWriter {
    fn write(&mut self, source: &str, rows: &Rows, outputs: &[Tensor]) -> Result<(), BatchError> {
        let count = rows.len();
        let source = serde_json::to_string(source).expect("a string serializes");
        for row in 0..count {
            let line = &mut self.line;
            line.clear();
            line.push_str("{\"_source\":");
            line.push_str(&source);
            line.push_str(",\"_row\":");
            line.push_str(&rows.numbers[row].to_string());
            if let (Some(name), Some(id)) = (&self.header.id_column, rows.ids.get(row)) {
                line.push(',');
                line.push_str(&serde_json::to_string(name).expect("a string serializes"));
                line.push(':');
                line.push_str(&serde_json::to_string(id).expect("a string serializes"));
            }
            for (output, columns) in outputs.iter().zip(&self.header.columns) {
                let width = output.data.len() / count;
                line.push(',');
                line.push_str(&serde_json::to_string(&columns.name).expect("a string serializes"));
                line.push(':');
                if width != 1 {
                    line.push('[');
                }
                for column in 0..width {
                    if column > 0 {
                        line.push(',');
                    }
                    push_value(line, &output.data, row * width + column, true);
                }
                if width != 1 {
                    line.push(']');
                }
            }
            line.push_str("}\n");
            self.staged
                .file
                .write_all(line.as_bytes())
                .map_err(|e| output_error(&self.staged.path, e))?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<(PathBuf, String)>, BatchError> {
        Ok(vec![self.staged.finish()?])
    }
}
