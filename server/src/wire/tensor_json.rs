//! A tensor's `data` in the protocol's JSON: arrays of numbers, booleans or
//! strings, flat or nested as deep as the shape, decoded straight into a typed
//! buffer and encoded as one flat array.
//!
//! Floating-point data (FP16, BF16, FP32, FP64) also takes `null` as NaN (a
//! missing value) and the bare literals `NaN`, `Infinity` and `-Infinity`
//! (rewritten by [`super::nonfinite`] before they get here); other datatypes
//! refuse them. Encoding writes NaN and infinities as `null`, as serde_json
//! does, so every JSON client can read the response.

use std::fmt;

use half::{bf16, f16};
use serde::de::{self, DeserializeSeed, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};

use super::nonfinite;
use crate::tensor::{DataType, TensorData, TensorError, check_element_count, element_count};

/// Decodes JSON `data` (flat or nested arrays of numbers, booleans or strings)
/// as elements of `datatype`, and checks their count against `shape`.
pub fn decode(datatype: DataType, shape: &[i64], json: &str) -> Result<TensorData, TensorError> {
    let count = element_count(shape)?;
    // Every element takes at least one character, so the text bounds what a
    // (possibly hostile) shape may make us allocate.
    let mut data = TensorData::with_capacity(datatype, count.min(json.len()));
    let mut deserializer = serde_json::Deserializer::from_str(json);
    FlattenSeed { data: &mut data }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|error| TensorError::Elements {
            datatype,
            message: error.to_string(),
        })?;
    check_element_count(shape, count, data.len())?;
    Ok(data)
}

/// Tensor elements as JSON `data`: a flat array (FP16 and BF16 as numbers, BYTES
/// as strings, replacing invalid UTF-8).
#[derive(Debug, Clone, Copy)]
pub struct DataJson<'a>(pub &'a TensorData);

impl Serialize for DataJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn seq<S: Serializer, T: Serialize>(
            serializer: S,
            values: impl ExactSizeIterator<Item = T>,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(values.len()))?;
            for value in values {
                seq.serialize_element(&value)?;
            }
            seq.end()
        }
        match self.0 {
            TensorData::Fp16(v) => seq(serializer, v.iter().map(|x| x.to_f32())),
            TensorData::Bf16(v) => seq(serializer, v.iter().map(|x| x.to_f32())),
            TensorData::Bytes(v) => seq(serializer, v.iter().map(|x| String::from_utf8_lossy(x))),
            TensorData::Bool(v) => seq(serializer, v.iter()),
            TensorData::Uint8(v) => seq(serializer, v.iter()),
            TensorData::Uint16(v) => seq(serializer, v.iter()),
            TensorData::Uint32(v) => seq(serializer, v.iter()),
            TensorData::Uint64(v) => seq(serializer, v.iter()),
            TensorData::Int8(v) => seq(serializer, v.iter()),
            TensorData::Int16(v) => seq(serializer, v.iter()),
            TensorData::Int32(v) => seq(serializer, v.iter()),
            TensorData::Int64(v) => seq(serializer, v.iter()),
            TensorData::Fp32(v) => seq(serializer, v.iter()),
            TensorData::Fp64(v) => seq(serializer, v.iter()),
        }
    }
}

/// Deserializes arbitrarily nested JSON arrays into one flat, typed buffer,
/// without building an intermediate JSON tree.
struct FlattenSeed<'a> {
    data: &'a mut TensorData,
}

impl<'de> DeserializeSeed<'de> for FlattenSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn out_of_range<E: de::Error>(value: impl fmt::Display, datatype: DataType) -> E {
    E::custom(format_args!("value {value} is out of range for {datatype}"))
}

fn wrong_kind<E: de::Error>(found: &str, datatype: DataType) -> E {
    E::custom(format_args!("expected {datatype} elements, found {found}"))
}

fn not_float<E: de::Error>(found: &str, datatype: DataType) -> E {
    E::custom(format_args!(
        "{found} is only accepted in floating-point data (FP16, BF16, FP32, FP64), not {datatype}"
    ))
}

fn is_float(data: &TensorData) -> bool {
    matches!(
        data,
        TensorData::Fp16(_) | TensorData::Bf16(_) | TensorData::Fp32(_) | TensorData::Fp64(_)
    )
}

impl<'de> Visitor<'de> for FlattenSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} elements", self.data.datatype())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(FlattenSeed {
                data: &mut *self.data,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        match self.data {
            TensorData::Bool(v) => {
                v.push(value);
                Ok(())
            }
            other => Err(wrong_kind("a boolean", other.datatype())),
        }
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        let datatype = self.data.datatype();
        macro_rules! int {
            ($v:expr) => {
                $v.push(
                    value
                        .try_into()
                        .map_err(|_| out_of_range(value, datatype))?,
                )
            };
        }
        match self.data {
            TensorData::Uint8(v) => int!(v),
            TensorData::Uint16(v) => int!(v),
            TensorData::Uint32(v) => int!(v),
            TensorData::Uint64(v) => int!(v),
            TensorData::Int8(v) => int!(v),
            TensorData::Int16(v) => int!(v),
            TensorData::Int32(v) => int!(v),
            TensorData::Int64(v) => v.push(value),
            _ => return self.visit_f64(value as f64),
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        match self.data {
            TensorData::Uint64(v) => {
                v.push(value);
                Ok(())
            }
            _ => match i64::try_from(value) {
                Ok(signed) => self.visit_i64(signed),
                Err(_) => Err(out_of_range(value, self.data.datatype())),
            },
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        match self.data {
            TensorData::Fp16(v) => v.push(f16::from_f64(value)),
            TensorData::Bf16(v) => v.push(bf16::from_f64(value)),
            TensorData::Fp32(v) => v.push(value as f32),
            TensorData::Fp64(v) => v.push(value),
            other => return Err(wrong_kind(&format!("the number {value}"), other.datatype())),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        if let Some((literal, number)) = nonfinite::marker(value) {
            return if is_float(self.data) {
                self.visit_f64(number)
            } else {
                Err(not_float(literal, self.data.datatype()))
            };
        }
        match self.data {
            TensorData::Bytes(v) => {
                v.push(value.as_bytes().to_vec());
                Ok(())
            }
            other => Err(wrong_kind("a string", other.datatype())),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if is_float(self.data) {
            self.visit_f64(f64::NAN)
        } else {
            Err(not_float("null", self.data.datatype()))
        }
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(wrong_kind("an object", self.data.datatype()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_nested_and_flat_decode_to_the_same_elements() {
        let nested = decode(DataType::Fp32, &[2, 2], "[[1, 2.5], [3, -4]]").unwrap();
        let flat = decode(DataType::Fp32, &[2, 2], "[1, 2.5, 3, -4]").unwrap();
        assert_eq!(nested, TensorData::Fp32(vec![1.0, 2.5, 3.0, -4.0]));
        assert_eq!(nested, flat);
    }

    #[test]
    fn json_rejects_out_of_range_integers_with_the_value_and_type() {
        let error = decode(DataType::Uint8, &[1], "[300]").unwrap_err();
        assert!(
            error.to_string().contains("300 is out of range for UINT8"),
            "{error}"
        );
        let error = decode(DataType::Int64, &[1], "[1.5]").unwrap_err();
        assert!(error.to_string().contains("expected INT64"), "{error}");
    }

    #[test]
    fn json_rejects_wrong_kinds_and_counts() {
        assert!(decode(DataType::Bool, &[1], "[1]").is_err());
        assert!(decode(DataType::Fp32, &[1], "[\"a\"]").is_err());
        assert!(decode(DataType::Fp32, &[1], "[{}]").is_err());
        let error = decode(DataType::Fp32, &[2, 2], "[1, 2, 3]").unwrap_err();
        assert_eq!(
            error,
            TensorError::ElementCount {
                shape: vec![2, 2],
                expected: 4,
                actual: 3
            }
        );
        assert!(decode(DataType::Fp32, &[-1], "[]").is_err());
        let error = decode(DataType::Fp32, &[1 << 40, 1 << 20], "[1]").unwrap_err();
        assert!(
            matches!(error, TensorError::ElementCount { actual: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn json_accepts_every_integer_extreme() {
        let data = decode(DataType::Uint64, &[2], "[0, 18446744073709551615]").unwrap();
        assert_eq!(data, TensorData::Uint64(vec![0, u64::MAX]));
        let data = decode(
            DataType::Int64,
            &[2],
            "[-9223372036854775808, 9223372036854775807]",
        )
        .unwrap();
        assert_eq!(data, TensorData::Int64(vec![i64::MIN, i64::MAX]));
        assert!(decode(DataType::Int64, &[1], "[9223372036854775808]").is_err());
    }

    #[test]
    fn json_null_and_literal_markers_are_nan_and_infinities_in_every_float_type() {
        let markers = r#"[null, "\u0000NaN", "\u0000Infinity", "\u0000-Infinity", 1]"#;
        let data = decode(DataType::Fp64, &[5], markers).unwrap();
        let TensorData::Fp64(v) = data else {
            panic!("{data:?}")
        };
        assert!(v[0].is_nan() && v[1].is_nan());
        assert_eq!(v[2..], [f64::INFINITY, f64::NEG_INFINITY, 1.0]);
        for datatype in [DataType::Fp16, DataType::Bf16, DataType::Fp32] {
            let data = decode(datatype, &[5], markers).unwrap();
            let v: Vec<f64> = match data {
                TensorData::Fp16(v) => v.iter().map(|x| x.to_f64()).collect(),
                TensorData::Bf16(v) => v.iter().map(|x| x.to_f64()).collect(),
                TensorData::Fp32(v) => v.iter().map(|&x| x.into()).collect(),
                other => panic!("{other:?}"),
            };
            assert!(v[0].is_nan() && v[1].is_nan(), "{datatype}");
            assert_eq!(
                v[2..],
                [f64::INFINITY, f64::NEG_INFINITY, 1.0],
                "{datatype}"
            );
        }
    }

    #[test]
    fn json_null_and_literals_are_refused_outside_float_data_naming_the_datatype() {
        for datatype in [
            DataType::Int64,
            DataType::Uint8,
            DataType::Bool,
            DataType::Bytes,
        ] {
            let error = decode(datatype, &[1], "[null]").unwrap_err().to_string();
            assert!(
                error.contains(&format!(
                    "null is only accepted in floating-point data (FP16, BF16, FP32, FP64), not {datatype}"
                )),
                "{error}"
            );
            let error = decode(datatype, &[1], r#"["\u0000-Infinity"]"#)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("-Infinity is only accepted in floating-point data (FP16, BF16, FP32, FP64), not {datatype}")),
                "{error}"
            );
        }
        let data = decode(DataType::Bytes, &[1], r#"["NaN"]"#).unwrap();
        assert_eq!(data, TensorData::Bytes(vec![b"NaN".to_vec()]));
        assert!(decode(DataType::Fp32, &[1], r#"["NaN"]"#).is_err());
    }

    #[test]
    fn non_finite_floats_serialize_as_null() {
        let data = TensorData::Fp32(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5]);
        let json = serde_json::to_string(&DataJson(&data)).unwrap();
        assert_eq!(json, "[null,null,null,0.5]");
        let data = TensorData::Fp16(vec![f16::NAN]);
        assert_eq!(serde_json::to_string(&DataJson(&data)).unwrap(), "[null]");
    }

    #[test]
    fn serializes_half_floats_and_strings_readably() {
        let json =
            serde_json::to_string(&DataJson(&TensorData::Fp16(vec![f16::from_f32(1.5)]))).unwrap();
        assert_eq!(json, "[1.5]");
        let json =
            serde_json::to_string(&DataJson(&TensorData::Bytes(vec![b"ab".to_vec()]))).unwrap();
        assert_eq!(json, "[\"ab\"]");
    }
}
