//! JSON Lines: one object per line. A key holds a number (or a boolean),
//! or an array of numbers, which counts as the columns `key_0`, `key_1`, ...
//! The first row's keys, in their order, name the file's columns.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{Columns, Options, RowReader, unreadable};
use crate::batch::BatchError;
use crate::batch::layout::{Reject, Rows, check_value, cut};

/// Reads JSON Lines rows.
pub struct JsonlReader {
    lines: BufReader<Box<dyn Read + Send>>,
    options: OwnedOptions,
    columns: Option<Columns>,
    line: String,
    next_row: u64,
}

/// What [`Options`] holds, kept past the first row (which binds the columns).
struct OwnedOptions {
    layout: crate::batch::layout::Layout,
    id_column: Option<String>,
    ignore_columns: Vec<String>,
    source: String,
}

/// One row's keys and values, in the order the line gives them.
pub struct Ordered(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

impl JsonlReader {
    /// A reader of `stream`; the columns are bound at the first row.
    pub fn new(stream: Box<dyn Read + Send>, options: &Options) -> JsonlReader {
        JsonlReader {
            lines: BufReader::with_capacity(1 << 20, stream),
            options: OwnedOptions {
                layout: options.layout.clone(),
                id_column: options.id_column.map(str::to_string),
                ignore_columns: options.ignore_columns.to_vec(),
                source: options.source.to_string(),
            },
            columns: None,
            line: String::new(),
            next_row: 0,
        }
    }

    fn accept(&mut self, text: &str, into: &mut Rows) -> Result<(), Result<String, BatchError>> {
        let row: Ordered =
            serde_json::from_str(text).map_err(|e| Ok(format!("is not a JSON object: {e}")))?;
        let (flat, id) = flatten(row, self.options.id_column.as_deref());
        if self.columns.is_none() {
            let mut names: Vec<String> = flat.iter().map(|(k, _)| k.clone()).collect();
            if let Some(id_column) = &self.options.id_column {
                if id.is_none() {
                    return Err(Err(BatchError::Input(format!(
                        "{}: no key '{id_column}' in the first row (--id-column)",
                        self.options.source
                    ))));
                }
                names.push(id_column.clone());
            }
            let options = Options {
                layout: &self.options.layout,
                id_column: self.options.id_column.as_deref(),
                ignore_columns: &self.options.ignore_columns,
                source: &self.options.source,
            };
            self.columns = Some(Columns::bind(names, &options).map_err(Err)?);
        }
        let columns = self.columns.as_ref().expect("bound above");
        if columns.id.is_some() && id.is_none() {
            return Err(Ok(format!(
                "has no key '{}'",
                self.options.id_column.as_deref().unwrap_or_default()
            )));
        }
        let values: HashMap<&str, &Value> = flat.iter().map(|(k, v)| (k.as_str(), v)).collect();
        for (position, column) in columns.features.iter().enumerate() {
            let name = &columns.names[*column];
            let value = number(&values, name).map_err(Ok)?;
            into.features
                .push(check_value(value, name, columns.integral[position]).map_err(Ok)?);
        }
        into.numbers.push(self.next_row);
        if let Some(id) = id.filter(|_| columns.id.is_some()) {
            into.ids.push(id);
        }
        Ok(())
    }
}

/// A row's values by key (arrays flattened to `key_0`, `key_1`, ...), in
/// the row's order, and the value of `id_column` (taken out of the values).
pub fn flatten(row: Ordered, id_column: Option<&str>) -> (Vec<(String, Value)>, Option<String>) {
    let mut flat = Vec::with_capacity(row.0.len());
    let mut id = None;
    for (key, value) in row.0 {
        if id_column == Some(key.as_str()) {
            id = Some(match value {
                Value::String(text) => text,
                other => other.to_string(),
            });
            continue;
        }
        match value {
            Value::Array(items) => flat.extend(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| (format!("{key}_{i}"), item)),
            ),
            other => flat.push((key, other)),
        }
    }
    (flat, id)
}

/// The number under `name` (a boolean counts as 0 or 1), or why there is none.
pub fn number(values: &HashMap<&str, &Value>, name: &str) -> Result<f64, String> {
    match values.get(name) {
        None => Err(format!("has no key '{name}'")),
        Some(Value::Number(number)) => Ok(number.as_f64().unwrap_or(f64::NAN)),
        Some(Value::Bool(flag)) => Ok(f64::from(u8::from(*flag))),
        Some(other) => Err(format!(
            "key '{name}': {} is not a number",
            cut(&other.to_string())
        )),
    }
}

impl RowReader for JsonlReader {
    fn read(&mut self, rows: usize, into: &mut Rows) -> Result<bool, BatchError> {
        let mut taken = 0;
        while taken < rows {
            self.line.clear();
            let read = self
                .lines
                .read_line(&mut self.line)
                .map_err(|e| unreadable(&self.options.source, self.next_row, e))?;
            if read == 0 {
                return Ok(false);
            }
            let text = std::mem::take(&mut self.line);
            if text.trim().is_empty() {
                self.line = text;
                continue;
            }
            let start = into.features.len();
            match self.accept(text.trim_end(), into) {
                Ok(()) => {}
                Err(Ok(reason)) => {
                    into.features.truncate(start);
                    into.rejects.push(Reject {
                        row: self.next_row,
                        reason,
                    });
                }
                Err(Err(error)) => return Err(error),
            }
            self.line = text;
            self.next_row += 1;
            into.consumed += 1;
            taken += 1;
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
    fn keys_and_arrays_name_the_columns_and_bad_rows_are_rejected() {
        let layout = single_input(DataType::Fp32, 2);
        let options = Options {
            layout: &layout,
            id_column: Some("id"),
            ignore_columns: &[],
            source: "events.jsonl",
        };
        let text = concat!(
            "{\"id\": \"a\", \"b\": 1, \"a\": 2}\n",
            "\n",
            "{\"a\": 3, \"b\": 4, \"id\": 7}\n",
            "{\"id\": \"c\", \"b\": \"five\", \"a\": 6}\n",
            "{\"id\": \"d\", \"b\": 1}\n",
            "not json\n",
            "{\"id\": \"f\", \"a\": 1, \"b\": 2.5}",
        );
        let rows = read_all(Format::Jsonl, text.as_bytes(), &options, 0).unwrap();
        // The first row's order (b, a) is the column order.
        assert_eq!(rows.features, [1.0, 2.0, 4.0, 3.0, 2.5, 1.0]);
        assert_eq!(rows.numbers, [0, 1, 5]);
        assert_eq!(rows.ids, ["a", "7", "f"]);
        assert_eq!(rows.consumed, 6);
        let reasons: Vec<_> = rows
            .rejects
            .iter()
            .map(|r: &Reject| (r.row, r.reason.as_str()))
            .collect();
        assert_eq!(reasons[0], (2, "key 'b': \"five\" is not a number"));
        assert_eq!(reasons[1], (3, "has no key 'a'"));
        assert_eq!(reasons[2].0, 4);
        assert!(
            reasons[2].1.starts_with("is not a JSON object"),
            "{}",
            reasons[2].1
        );

        let arrays = single_input(DataType::Int64, 3);
        let options = Options {
            layout: &arrays,
            id_column: None,
            ignore_columns: &[],
            source: "s",
        };
        let rows = read_all(
            Format::Jsonl,
            b"{\"x\": [1, 2, 3]}\n{\"x\": [4, 5.5, 6]}\n",
            &options,
            0,
        )
        .unwrap();
        assert_eq!(rows.features, [1.0, 2.0, 3.0]);
        assert_eq!(
            rows.rejects[0].reason,
            "column 'x_1': 5.5 is not a whole number"
        );
    }
}
