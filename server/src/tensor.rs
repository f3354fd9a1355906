//! Tensors as the Open Inference Protocol carries them: a datatype, a shape and a
//! flat, row-major buffer of elements.
//!
//! This module holds typed buffers, converts them to and from their
//! little-endian byte layout (the binary tensor extension's and gRPC's raw
//! contents), and combines and splits tensors along their first (batch)
//! dimension for dynamic batching. The JSON spelling of `data` is the wire
//! format's business (`crate::wire::tensor_json`).

use std::fmt;

use half::{bf16, f16};

/// An Open Inference Protocol datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    /// Every datatype, in the order the protocol lists them.
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's name for this datatype (`"FP32"`, `"BYTES"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol datatype name.
    pub fn parse(name: &str) -> Result<DataType, TensorError> {
        DataType::ALL
            .into_iter()
            .find(|datatype| datatype.as_str() == name)
            .ok_or_else(|| TensorError::UnknownDatatype(name.to_string()))
    }

    /// Size of one element in bytes, or `None` for variable-length `BYTES`.
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a tensor could not be decoded, combined or checked.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("unknown datatype '{0}'")]
    UnknownDatatype(String),
    #[error("invalid shape {0:?}: dimensions must not be negative")]
    NegativeDimension(Vec<i64>),
    #[error(
        "invalid shape {0:?}: a dimension is 0, so the input holds no elements; send at least one row"
    )]
    ZeroDimension(Vec<i64>),
    #[error("shape {shape:?} holds {expected} elements but {actual} were given")]
    ElementCount {
        shape: Vec<i64>,
        expected: usize,
        actual: usize,
    },
    #[error(
        "{datatype} data of {actual} bytes does not fit shape {shape:?} ({expected} bytes expected)"
    )]
    ByteCount {
        datatype: DataType,
        shape: Vec<i64>,
        expected: usize,
        actual: usize,
    },
    #[error("malformed BYTES data: {0}")]
    MalformedBytes(String),
    #[error("invalid {datatype} data: {message}")]
    Elements { datatype: DataType, message: String },
}

/// The typed elements of a tensor, flat and in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Bf16(Vec<bf16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Runs `$body` with `$v` bound to the element vector of whichever variant
/// `$data` holds; `$wrap` names a function-like path that rebuilds the same variant.
macro_rules! with_elements {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Bf16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
    ($data:expr, $v:ident, $variant:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => {
                use TensorData::Bool as $variant;
                $body
            }
            TensorData::Uint8($v) => {
                use TensorData::Uint8 as $variant;
                $body
            }
            TensorData::Uint16($v) => {
                use TensorData::Uint16 as $variant;
                $body
            }
            TensorData::Uint32($v) => {
                use TensorData::Uint32 as $variant;
                $body
            }
            TensorData::Uint64($v) => {
                use TensorData::Uint64 as $variant;
                $body
            }
            TensorData::Int8($v) => {
                use TensorData::Int8 as $variant;
                $body
            }
            TensorData::Int16($v) => {
                use TensorData::Int16 as $variant;
                $body
            }
            TensorData::Int32($v) => {
                use TensorData::Int32 as $variant;
                $body
            }
            TensorData::Int64($v) => {
                use TensorData::Int64 as $variant;
                $body
            }
            TensorData::Fp16($v) => {
                use TensorData::Fp16 as $variant;
                $body
            }
            TensorData::Bf16($v) => {
                use TensorData::Bf16 as $variant;
                $body
            }
            TensorData::Fp32($v) => {
                use TensorData::Fp32 as $variant;
                $body
            }
            TensorData::Fp64($v) => {
                use TensorData::Fp64 as $variant;
                $body
            }
            TensorData::Bytes($v) => {
                use TensorData::Bytes as $variant;
                $body
            }
        }
    };
}

impl TensorData {
    /// The datatype of these elements.
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Bf16(_) => DataType::Bf16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_elements!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty buffer of `datatype` with room for `capacity` elements.
    pub fn with_capacity(datatype: DataType, capacity: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(Vec::with_capacity(capacity)),
            DataType::Uint8 => TensorData::Uint8(Vec::with_capacity(capacity)),
            DataType::Uint16 => TensorData::Uint16(Vec::with_capacity(capacity)),
            DataType::Uint32 => TensorData::Uint32(Vec::with_capacity(capacity)),
            DataType::Uint64 => TensorData::Uint64(Vec::with_capacity(capacity)),
            DataType::Int8 => TensorData::Int8(Vec::with_capacity(capacity)),
            DataType::Int16 => TensorData::Int16(Vec::with_capacity(capacity)),
            DataType::Int32 => TensorData::Int32(Vec::with_capacity(capacity)),
            DataType::Int64 => TensorData::Int64(Vec::with_capacity(capacity)),
            DataType::Fp16 => TensorData::Fp16(Vec::with_capacity(capacity)),
            DataType::Bf16 => TensorData::Bf16(Vec::with_capacity(capacity)),
            DataType::Fp32 => TensorData::Fp32(Vec::with_capacity(capacity)),
            DataType::Fp64 => TensorData::Fp64(Vec::with_capacity(capacity)),
            DataType::Bytes => TensorData::Bytes(Vec::with_capacity(capacity)),
        }
    }

    /// `count` zero elements (`false`, `0`, empty strings) of `datatype`.
    pub fn zeros(datatype: DataType, count: usize) -> TensorData {
        let mut data = TensorData::with_capacity(datatype, count);
        with_elements!(&mut data, v => v.resize(count, Default::default()));
        data
    }

    /// Appends the elements of `other`, which must hold the same datatype.
    fn extend_from(&mut self, other: &TensorData) {
        macro_rules! extend {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((TensorData::$variant(a), TensorData::$variant(b)) => a.extend_from_slice(b),)*
                    (a, b) => unreachable!("extend_from mixes {} and {}", a.datatype(), b.datatype()),
                }
            };
        }
        extend!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Bf16, Fp32, Fp64,
            Bytes
        );
    }

    /// Elements `range` as a new buffer of the same datatype.
    fn slice(&self, range: std::ops::Range<usize>) -> TensorData {
        with_elements!(self, v, Variant => Variant(v[range].to_vec()))
    }

    /// Decodes the binary tensor extension's encoding: little-endian elements, one
    /// byte per BOOL, and for BYTES a 4-byte little-endian length before each element.
    pub fn from_le_bytes(
        datatype: DataType,
        shape: &[i64],
        bytes: &[u8],
    ) -> Result<TensorData, TensorError> {
        let count = element_count(shape)?;
        let Some(size) = datatype.element_size() else {
            let elements = decode_length_prefixed(bytes)?;
            check_element_count(shape, count, elements.len())?;
            return Ok(TensorData::Bytes(elements));
        };
        let expected = count.saturating_mul(size);
        if bytes.len() != expected {
            return Err(TensorError::ByteCount {
                datatype,
                shape: shape.to_vec(),
                expected,
                actual: bytes.len(),
            });
        }
        fn decode<T, const N: usize>(bytes: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
            bytes
                .chunks_exact(N)
                .map(|chunk| from(chunk.try_into().expect("chunk of N bytes")))
                .collect()
        }
        Ok(match datatype {
            DataType::Bool => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
            DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
            DataType::Int8 => TensorData::Int8(bytes.iter().map(|b| *b as i8).collect()),
            DataType::Uint16 => TensorData::Uint16(decode(bytes, u16::from_le_bytes)),
            DataType::Int16 => TensorData::Int16(decode(bytes, i16::from_le_bytes)),
            DataType::Fp16 => TensorData::Fp16(decode(bytes, f16::from_le_bytes)),
            DataType::Bf16 => TensorData::Bf16(decode(bytes, bf16::from_le_bytes)),
            DataType::Uint32 => TensorData::Uint32(decode(bytes, u32::from_le_bytes)),
            DataType::Int32 => TensorData::Int32(decode(bytes, i32::from_le_bytes)),
            DataType::Fp32 => TensorData::Fp32(decode(bytes, f32::from_le_bytes)),
            DataType::Uint64 => TensorData::Uint64(decode(bytes, u64::from_le_bytes)),
            DataType::Int64 => TensorData::Int64(decode(bytes, i64::from_le_bytes)),
            DataType::Fp64 => TensorData::Fp64(decode(bytes, f64::from_le_bytes)),
            DataType::Bytes => unreachable!("BYTES has no fixed element size"),
        })
    }

    /// Encodes the elements as the binary tensor extension does (see [`TensorData::from_le_bytes`]).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        fn encode<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(values.len() * N);
            for value in values {
                out.extend_from_slice(&to(*value));
            }
            out
        }
        match self {
            TensorData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
            TensorData::Uint8(v) => v.clone(),
            TensorData::Int8(v) => v.iter().map(|b| *b as u8).collect(),
            TensorData::Uint16(v) => encode(v, u16::to_le_bytes),
            TensorData::Int16(v) => encode(v, i16::to_le_bytes),
            TensorData::Fp16(v) => encode(v, f16::to_le_bytes),
            TensorData::Bf16(v) => encode(v, bf16::to_le_bytes),
            TensorData::Uint32(v) => encode(v, u32::to_le_bytes),
            TensorData::Int32(v) => encode(v, i32::to_le_bytes),
            TensorData::Fp32(v) => encode(v, f32::to_le_bytes),
            TensorData::Uint64(v) => encode(v, u64::to_le_bytes),
            TensorData::Int64(v) => encode(v, i64::to_le_bytes),
            TensorData::Fp64(v) => encode(v, f64::to_le_bytes),
            TensorData::Bytes(v) => {
                let total: usize = v.iter().map(|e| e.len() + 4).sum();
                let mut out = Vec::with_capacity(total);
                for element in v {
                    let length = u32::try_from(element.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&length.to_le_bytes());
                    out.extend_from_slice(element);
                }
                out
            }
        }
    }
}

/// Number of elements a shape holds, rejecting negative dimensions.
pub fn element_count(shape: &[i64]) -> Result<usize, TensorError> {
    shape.iter().try_fold(1usize, |count, dim| {
        let dim =
            usize::try_from(*dim).map_err(|_| TensorError::NegativeDimension(shape.to_vec()))?;
        Ok(count.saturating_mul(dim))
    })
}

/// A declared shape made concrete: `rows` in a dynamic first dimension and 1 in
/// every other dynamic (-1) dimension.
pub fn concrete_shape(declared: &[i64], rows: usize) -> Vec<i64> {
    declared
        .iter()
        .enumerate()
        .map(|(axis, dim)| match (axis, *dim) {
            (0, -1) => rows as i64,
            (_, -1) => 1,
            (_, dim) => dim,
        })
        .collect()
}

/// Checks that `actual` elements are the `expected` number `shape` holds.
pub fn check_element_count(
    shape: &[i64],
    expected: usize,
    actual: usize,
) -> Result<(), TensorError> {
    if expected == actual {
        Ok(())
    } else {
        Err(TensorError::ElementCount {
            shape: shape.to_vec(),
            expected,
            actual,
        })
    }
}

fn decode_length_prefixed(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, TensorError> {
    let mut elements = Vec::new();
    while !bytes.is_empty() {
        let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(TensorError::MalformedBytes(format!(
                "{} trailing bytes are too short for a 4-byte length prefix",
                bytes.len()
            )));
        };
        let length = u32::from_le_bytes(*prefix) as usize;
        if rest.len() < length {
            return Err(TensorError::MalformedBytes(format!(
                "element {} claims {length} bytes but only {} remain",
                elements.len(),
                rest.len()
            )));
        }
        elements.push(rest[..length].to_vec());
        bytes = &rest[length..];
    }
    Ok(elements)
}

/// A tensor with the name of the model input or output it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The input or output name.
    pub name: String,
    /// Its value.
    pub tensor: Tensor,
}

/// A tensor: datatype (implied by its data) and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first; never negative.
    pub shape: Vec<i64>,
    /// The elements, row-major.
    pub data: TensorData,
}

impl Tensor {
    /// A tensor whose element count has been checked against its shape.
    pub fn new(shape: Vec<i64>, data: TensorData) -> Result<Tensor, TensorError> {
        check_element_count(&shape, element_count(&shape)?, data.len())?;
        Ok(Tensor { shape, data })
    }

    /// A request's input: as [`Tensor::new`], but a shape with a zero-sized
    /// dimension (`[0, 64]`, `[8, 0]`) is refused (a 400 naming the shape)
    /// rather than answered with an empty result. The protocol does not say
    /// what an empty batch returns; ONNX Runtime fails on one in some models
    /// and not others, so an answer would depend on the model; and a request
    /// with nothing in it is almost always the client's mistake, best named at
    /// once. Outputs, which ONNX Runtime may legitimately return empty, are
    /// built with [`Tensor::new`].
    pub fn input(shape: Vec<i64>, data: TensorData) -> Result<Tensor, TensorError> {
        let tensor = Tensor::new(shape, data)?;
        if tensor.shape.contains(&0) {
            return Err(TensorError::ZeroDimension(tensor.shape));
        }
        Ok(tensor)
    }

    /// The datatype of its elements.
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Size of the first dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().map_or(1, |rows| *rows as usize)
    }

    /// Stacks tensors along the first dimension. All must share the datatype and
    /// every dimension but the first (the batcher checks this before).
    pub fn concat_rows(parts: &[&Tensor]) -> Tensor {
        let first = parts[0];
        let rows: i64 = parts.iter().map(|t| t.shape[0]).sum();
        let total = parts.iter().map(|t| t.data.len()).sum();
        let mut data = TensorData::with_capacity(first.datatype(), total);
        for part in parts {
            data.extend_from(&part.data);
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Tensor { shape, data }
    }

    /// Splits the first dimension into consecutive parts of `rows` each; the
    /// counts must add up to the first dimension.
    pub fn split_rows(&self, rows: &[usize]) -> Vec<Tensor> {
        let total_rows = self.rows().max(1);
        let row_len = self.data.len() / total_rows;
        let mut start = 0;
        rows.iter()
            .map(|count| {
                let end = start + count * row_len;
                let mut shape = self.shape.clone();
                shape[0] = *count as i64;
                let part = Tensor {
                    shape,
                    data: self.data.slice(start..end),
                };
                start = end;
                part
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_round_trip_for_every_datatype() {
        for datatype in DataType::ALL {
            let data = TensorData::zeros(datatype, 3);
            let bytes = data.to_le_bytes();
            assert_eq!(
                TensorData::from_le_bytes(datatype, &[3], &bytes).unwrap(),
                data,
                "{datatype}"
            );
        }
        let strings = TensorData::Bytes(vec![b"".to_vec(), "h\u{e9}llo".as_bytes().to_vec()]);
        let bytes = strings.to_le_bytes();
        assert_eq!(&bytes[..4], &[0, 0, 0, 0]);
        assert_eq!(
            TensorData::from_le_bytes(DataType::Bytes, &[2], &bytes).unwrap(),
            strings
        );
    }

    #[test]
    fn binary_rejects_wrong_sizes_and_truncated_strings() {
        let error = TensorData::from_le_bytes(DataType::Fp32, &[2], &[0; 7]).unwrap_err();
        assert!(error.to_string().contains("8 bytes expected"), "{error}");
        assert!(TensorData::from_le_bytes(DataType::Bytes, &[1], &[5, 0, 0, 0, 1]).is_err());
        assert!(TensorData::from_le_bytes(DataType::Bytes, &[1], &[5, 0]).is_err());
    }

    #[test]
    fn inputs_with_a_zero_sized_dimension_are_refused_naming_the_shape() {
        for shape in [vec![0, 64], vec![8, 0], vec![0]] {
            let error = Tensor::input(shape.clone(), TensorData::Fp32(vec![])).unwrap_err();
            assert_eq!(error, TensorError::ZeroDimension(shape.clone()));
            assert!(error.to_string().contains(&format!("{shape:?}")), "{error}");
            assert!(Tensor::new(shape, TensorData::Fp32(vec![])).is_ok());
        }
        assert!(Tensor::input(vec![], TensorData::Fp32(vec![1.0])).is_ok());
    }

    #[test]
    fn rows_concatenate_and_split_back() {
        let a = Tensor::new(vec![1, 2], TensorData::Int32(vec![1, 2])).unwrap();
        let b = Tensor::new(vec![2, 2], TensorData::Int32(vec![3, 4, 5, 6])).unwrap();
        let joined = Tensor::concat_rows(&[&a, &b]);
        assert_eq!(joined.shape, vec![3, 2]);
        assert_eq!(joined.split_rows(&[1, 2]), vec![a, b]);
    }
}
