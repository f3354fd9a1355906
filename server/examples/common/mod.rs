//! What more than one benchmark measures (each example includes this with
//! `mod common;`).

use std::path::Path;
use std::time::Instant;

use sluice_server::config::ModelConfig;
use sluice_server::runtime::OnnxModel;
use sluice_server::tensor::{Tensor, TensorData};

/// Rows per second of raw `session.run`, on one ONNX Runtime thread, over
/// already-parsed rows of `width` FP32 features in batches of `batch`: the
/// baseline a command that reads rows from somewhere is compared with.
pub fn raw_rows_per_second(
    model_path: &Path,
    features: &[f32],
    width: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let config = ModelConfig {
        intra_op_threads: 1,
        ..ModelConfig::default()
    };
    let mut model = OnnxModel::load(model_path, &config)?;
    let rows = features.len() / width;
    let batches: Vec<Tensor> = features
        .chunks(batch * width)
        .map(|chunk| {
            Tensor::new(
                vec![(chunk.len() / width) as i64, width as i64],
                TensorData::Fp32(chunk.to_vec()),
            )
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for batch in &batches {
        model.run(&[batch])?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}
