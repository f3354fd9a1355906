//! CSV with a header row: the header names the columns.

use std::io::Read;

use super::{Columns, Options, RowReader, unreadable};
use crate::batch::BatchError;
use crate::batch::layout::{Reject, Rows, parse_value};

/// Reads CSV rows.
pub struct CsvReader {
    reader: csv::Reader<Box<dyn Read + Send>>,
    columns: Columns,
    record: csv::StringRecord,
    source: String,
    next_row: u64,
}

impl CsvReader {
    /// Reads the header of `stream` and binds its columns.
    pub fn new(stream: Box<dyn Read + Send>, options: &Options) -> Result<CsvReader, BatchError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .buffer_capacity(1 << 20)
            .from_reader(stream);
        let header = reader
            .headers()
            .map_err(|e| BatchError::Input(format!("{}: the header: {e}", options.source)))?;
        let names: Vec<String> = header.iter().map(|n| n.trim().to_string()).collect();
        if names.iter().all(String::is_empty) {
            return Err(BatchError::Input(format!(
                "{}: no header row (an empty file?)",
                options.source
            )));
        }
        Ok(CsvReader {
            columns: Columns::bind(names, options)?,
            reader,
            record: csv::StringRecord::new(),
            source: options.source.to_string(),
            next_row: 0,
        })
    }

    fn accept(&self, into: &mut Rows) -> Result<(), String> {
        let record = &self.record;
        let names = &self.columns.names;
        if record.len() != names.len() {
            return Err(format!(
                "has {} fields, the header has {}",
                record.len(),
                names.len()
            ));
        }
        for (position, column) in self.columns.features.iter().enumerate() {
            let value = parse_value(
                &record[*column],
                &names[*column],
                self.columns.integral[position],
            )?;
            into.features.push(value);
        }
        Ok(())
    }
}

impl RowReader for CsvReader {
    fn read(&mut self, rows: usize, into: &mut Rows) -> Result<bool, BatchError> {
        for _ in 0..rows {
            let row = self.next_row;
            let read = match self.reader.read_record(&mut self.record) {
                Ok(read) => read,
                Err(error) if matches!(error.kind(), csv::ErrorKind::Utf8 { .. }) => {
                    self.next_row += 1;
                    into.consumed += 1;
                    into.rejects.push(Reject {
                        row,
                        reason: "is not valid UTF-8".into(),
                    });
                    continue;
                }
                Err(error) => return Err(unreadable(&self.source, row, error)),
            };
            if !read {
                return Ok(false);
            }
            self.next_row += 1;
            into.consumed += 1;
            let start = into.features.len();
            match self.accept(into) {
                Ok(()) => {
                    into.numbers.push(row);
                    if let Some(id) = self.columns.id {
                        into.ids
                            .push(self.record.get(id).unwrap_or_default().to_string());
                    }
                }
                Err(reason) => {
                    into.features.truncate(start);
                    into.rejects.push(Reject { row, reason });
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use crate::batch::Format;
    use crate::batch::input::{Options, read_all, single_input};
    use crate::batch::layout::Reject;
    use crate::tensor::DataType;

    #[test]
    fn rows_are_read_and_bad_ones_rejected_with_reasons() {
        let layout = single_input(DataType::Fp32, 2);
        let ignore = vec!["label".to_string()];
        let options = Options {
            layout: &layout,
            id_column: Some("id"),
            ignore_columns: &ignore,
            source: "day.csv",
        };
        let text = "id,a,b,label\nr0,1,2,x\nr1,3\nr2,5,six,y\nr3,,8,z\nr4,9,10,w\n";
        let rows = read_all(Format::Csv, text.as_bytes(), &options, 0).unwrap();
        assert_eq!(rows.features, [1.0, 2.0, 9.0, 10.0]);
        assert_eq!(rows.numbers, [0, 4]);
        assert_eq!(rows.ids, ["r0", "r4"]);
        assert_eq!(rows.consumed, 5);
        assert_eq!(
            rows.rejects,
            [
                Reject {
                    row: 1,
                    reason: "has 2 fields, the header has 4".into()
                },
                Reject {
                    row: 2,
                    reason: "column 'b': 'six' is not a number".into()
                },
                Reject {
                    row: 3,
                    reason: "column 'a' is empty".into()
                },
            ]
        );
        let resumed = read_all(Format::Csv, text.as_bytes(), &options, 3).unwrap();
        assert_eq!(resumed.numbers, [4]);
        assert_eq!(resumed.consumed, 2);
        let error = read_all(Format::Csv, text.as_bytes(), &options, 9)
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("fewer rows than the 9"),
            "{error}"
        );
    }

    #[test]
    fn a_file_that_cannot_fit_is_an_error_naming_it() {
        let layout = single_input(DataType::Fp32, 2);
        let options = Options {
            layout: &layout,
            id_column: None,
            ignore_columns: &[],
            source: "day.csv",
        };
        let error = read_all(Format::Csv, b"a,b,c\n1,2,3\n", &options, 0)
            .err()
            .unwrap();
        assert!(
            error.to_string().starts_with("day.csv: 3 feature columns"),
            "{error}"
        );
        let error = read_all(Format::Csv, b"", &options, 0).err().unwrap();
        assert!(error.to_string().contains("no header row"), "{error}");
        let with_id = Options {
            id_column: Some("key"),
            ..options
        };
        let error = read_all(Format::Csv, b"a,b\n1,2\n", &with_id, 0)
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("no column 'key' (--id-column)"),
            "{error}"
        );
    }
}
