//! NumPy `.npy`: a 1-D or 2-D array in C order, one row per row of the
//! array, read as a stream (the header, then one row's bytes at a time).

use std::io::{BufReader, Read};

use super::{Columns, Options, RowReader, unreadable};
use crate::batch::BatchError;
use crate::batch::layout::{Reject, Rows, check_value};

/// An element type `.npy` files hold that `batch` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Element {
    F32,
    F64,
    I32,
    I64,
    U8,
    Bool,
}

impl Element {
    fn parse(descr: &str) -> Option<(Element, bool)> {
        let (order, code) = descr.split_at(1);
        let big = match order {
            "<" | "|" | "=" => false,
            ">" => true,
            _ => return None,
        };
        let element = match code {
            "f4" => Element::F32,
            "f8" => Element::F64,
            "i4" => Element::I32,
            "i8" => Element::I64,
            "u1" => Element::U8,
            "b1" => Element::Bool,
            _ => return None,
        };
        Some((element, big))
    }

    fn size(self) -> usize {
        match self {
            Element::F32 | Element::I32 => 4,
            Element::F64 | Element::I64 => 8,
            Element::U8 | Element::Bool => 1,
        }
    }

    fn value(self, bytes: &[u8], big: bool) -> f64 {
        macro_rules! read {
            ($t:ty) => {{
                let array = bytes.try_into().expect("sized by Element::size");
                (if big {
                    <$t>::from_be_bytes(array)
                } else {
                    <$t>::from_le_bytes(array)
                }) as f64
            }};
        }
        match self {
            Element::F32 => read!(f32),
            Element::F64 => read!(f64),
            Element::I32 => read!(i32),
            Element::I64 => read!(i64),
            Element::U8 | Element::Bool => f64::from(bytes[0]),
        }
    }
}

/// Reads `.npy` rows.
pub struct NpyReader {
    stream: BufReader<Box<dyn Read + Send>>,
    element: Element,
    big_endian: bool,
    columns: Columns,
    rows: u64,
    next_row: u64,
    buffer: Vec<u8>,
    source: String,
}

impl NpyReader {
    /// Reads the header of `stream`.
    pub fn new(stream: Box<dyn Read + Send>, options: &Options) -> Result<NpyReader, BatchError> {
        let source = options.source;
        let bad = |why: String| {
            BatchError::Input(format!("{source}: not a .npy file batch reads: {why}"))
        };
        if options.id_column.is_some() {
            return Err(BatchError::Usage(format!(
                "{source}: a .npy file has no columns, so no --id-column"
            )));
        }
        let mut stream = BufReader::with_capacity(1 << 20, stream);
        let mut preamble = [0u8; 8];
        stream
            .read_exact(&mut preamble)
            .map_err(|e| bad(format!("the header: {e}")))?;
        if &preamble[..6] != b"\x93NUMPY" {
            return Err(bad("no \\x93NUMPY magic".into()));
        }
        let length = if preamble[6] == 1 {
            let mut length = [0u8; 2];
            stream
                .read_exact(&mut length)
                .map_err(|e| bad(e.to_string()))?;
            u16::from_le_bytes(length) as usize
        } else {
            let mut length = [0u8; 4];
            stream
                .read_exact(&mut length)
                .map_err(|e| bad(e.to_string()))?;
            u32::from_le_bytes(length) as usize
        };
        if length > 1 << 16 {
            return Err(bad(format!("a header of {length} bytes")));
        }
        let mut header = vec![0u8; length];
        stream
            .read_exact(&mut header)
            .map_err(|e| bad(format!("the header: {e}")))?;
        let header = String::from_utf8_lossy(&header);
        let descr = field(&header, "descr").ok_or_else(|| bad("no 'descr'".into()))?;
        let descr = descr.trim_matches(['\'', '"']);
        let (element, big_endian) = Element::parse(descr).ok_or_else(|| {
            bad(format!(
                "element type '{descr}' (f4, f8, i4, i8, u1, b1 are read)"
            ))
        })?;
        if field(&header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
            return Err(bad("Fortran order (save it in C order)".into()));
        }
        let shape = field(&header, "shape").ok_or_else(|| bad("no 'shape'".into()))?;
        let dims: Vec<u64> = shape
            .trim_start_matches('(')
            .split([',', ')'])
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.parse().map_err(|_| bad(format!("shape {shape}"))))
            .collect::<Result<_, _>>()?;
        let (rows, width) = match dims.as_slice() {
            [rows] => (*rows, 1),
            [rows, width] => (*rows, *width as usize),
            _ => {
                return Err(bad(format!(
                    "a {}-D array (1-D or 2-D are read)",
                    dims.len()
                )));
            }
        };
        let names = (0..width).map(|i| i.to_string()).collect();
        Ok(NpyReader {
            columns: Columns::bind(names, options)?,
            stream,
            element,
            big_endian,
            rows,
            next_row: 0,
            buffer: vec![0; width * element.size()],
            source: source.to_string(),
        })
    }
}

/// The text of `key`'s value in a `.npy` header's Python dict.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(&rest[..end])
}

impl RowReader for NpyReader {
    fn read(&mut self, rows: usize, into: &mut Rows) -> Result<bool, BatchError> {
        for _ in 0..rows {
            if self.next_row == self.rows {
                return Ok(false);
            }
            let row = self.next_row;
            self.stream.read_exact(&mut self.buffer).map_err(|e| {
                unreadable(
                    &self.source,
                    row,
                    format!("{e} (the file is shorter than its shape)"),
                )
            })?;
            self.next_row += 1;
            into.consumed += 1;
            let start = into.features.len();
            let size = self.element.size();
            let mut reason = None;
            for (position, column) in self.columns.features.iter().enumerate() {
                let bytes = &self.buffer[column * size..(column + 1) * size];
                let value = self.element.value(bytes, self.big_endian);
                match check_value(value, &column.to_string(), self.columns.integral[position]) {
                    Ok(value) => into.features.push(value),
                    Err(why) => {
                        reason = Some(why);
                        break;
                    }
                }
            }
            match reason {
                None => into.numbers.push(row),
                Some(reason) => {
                    into.features.truncate(start);
                    into.rejects.push(Reject { row, reason });
                }
            }
        }
        Ok(self.next_row < self.rows)
    }
}

#[cfg(test)]
mod tests {
    use crate::batch::Format;
    use crate::batch::input::{Options, read_all, single_input};
    use crate::tensor::DataType;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = crate::batch::output::npy::header(descr, shape);
        bytes.extend(data);
        bytes
    }

    #[test]
    fn rows_stream_and_a_short_file_is_an_error() {
        let layout = single_input(DataType::Fp32, 2);
        let options = Options {
            layout: &layout,
            id_column: None,
            ignore_columns: &[],
            source: "a.npy",
        };
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let rows = read_all(Format::Npy, &npy("<f4", "(3, 2)", &data), &options, 1).unwrap();
        assert_eq!(rows.features, [3.0, 4.0, 5.0, 6.0]);
        assert_eq!(rows.numbers, [1, 2]);
        let error = read_all(Format::Npy, &npy("<f4", "(4, 2)", &data), &options, 0)
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("a.npy: row 3: cannot read"),
            "{error}"
        );
        let error = read_all(Format::Npy, &npy("<f4", "(3, 3)", &data), &options, 0)
            .err()
            .unwrap();
        assert!(error.to_string().contains("3 feature columns"), "{error}");
        let error = read_all(Format::Npy, &npy("<c8", "(3, 2)", &data), &options, 0)
            .err()
            .unwrap();
        assert!(error.to_string().contains("element type '<c8'"), "{error}");
        let error = read_all(Format::Npy, b"PK\x03\x04 a zip", &options, 0)
            .err()
            .unwrap();
        assert!(error.to_string().contains("not a .npy file"), "{error}");
    }
}
