//! Limits on a request's size beyond the body limit (`--max-body-bytes`): header
//! bytes, elements per input tensor, and rows per request.

use crate::error::InferError;
use crate::tensor::NamedTensor;

use super::error::Denial;

/// The configured limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RequestLimits {
    /// Most bytes of header names and values together.
    pub max_header_bytes: Option<usize>,
    /// Most elements in one input tensor.
    pub max_tensor_elements: Option<usize>,
    /// Most rows (first dimension) in one request's inputs.
    pub max_batch_rows: Option<usize>,
}

impl RequestLimits {
    /// Checks the total size of the headers, given as (name, value) lengths.
    pub fn check_headers(&self, sizes: impl Iterator<Item = (usize, usize)>) -> Result<(), Denial> {
        let Some(limit) = self.max_header_bytes else {
            return Ok(());
        };
        let size: usize = sizes.map(|(name, value)| name + value).sum();
        if size > limit {
            return Err(Denial::HeadersTooLarge { size, limit });
        }
        Ok(())
    }

    /// Checks decoded inputs against the element and row limits.
    pub fn check_inputs(&self, inputs: &[NamedTensor]) -> Result<(), InferError> {
        for input in inputs {
            let elements = input.tensor.data.len();
            if let Some(limit) = self.max_tensor_elements
                && elements > limit
            {
                return Err(InferError::InvalidInput(format!(
                    "input '{}' has {elements} elements, over the limit of {limit} (--max-tensor-elements)",
                    input.name
                )));
            }
            let rows = input.tensor.rows();
            if let Some(limit) = self.max_batch_rows
                && rows > limit
            {
                return Err(InferError::InvalidInput(format!(
                    "input '{}' has {rows} rows, over the limit of {limit} rows per request (--max-batch-rows)",
                    input.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{Tensor, TensorData};

    fn input(rows: usize, columns: usize) -> NamedTensor {
        let data = TensorData::Fp32(vec![0.0; rows * columns]);
        NamedTensor {
            name: "x".to_string(),
            tensor: Tensor::new(vec![rows as i64, columns as i64], data).unwrap(),
        }
    }

    #[test]
    fn inputs_over_a_limit_are_refused_naming_it() {
        let limits = RequestLimits {
            max_tensor_elements: Some(64),
            max_batch_rows: Some(4),
            ..Default::default()
        };
        assert!(limits.check_inputs(&[input(4, 16)]).is_ok());
        let error = limits
            .check_inputs(&[input(5, 16)])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("80 elements, over the limit of 64 (--max-tensor-elements)"),
            "{error}"
        );
        let error = limits.check_inputs(&[input(5, 1)]).unwrap_err().to_string();
        assert!(
            error.contains("5 rows, over the limit of 4 rows per request (--max-batch-rows)"),
            "{error}"
        );
        assert!(
            RequestLimits::default()
                .check_inputs(&[input(1000, 16)])
                .is_ok()
        );
    }

    #[test]
    fn headers_over_the_limit_are_refused() {
        let limits = RequestLimits {
            max_header_bytes: Some(10),
            ..Default::default()
        };
        assert!(limits.check_headers([(4, 6)].into_iter()).is_ok());
        assert_eq!(
            limits.check_headers([(4, 6), (1, 0)].into_iter()),
            Err(Denial::HeadersTooLarge {
                size: 11,
                limit: 10
            })
        );
    }
}
