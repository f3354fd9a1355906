//! `sluice-server optimize` on the real ONNX Runtime and the generated fixtures:
//! INT8 dynamic quantization of a 4 MB MLP (`wide`) shrinks it, keeps its
//! answers and loads; and every refusal writes no output file and names the
//! problem.

mod common;

use std::path::{Path, PathBuf};

use sluice_server::config::ModelConfig;
use sluice_server::optimize::{Mode, OptimizeError, OptimizeRequest, optimize};
use sluice_server::runtime::OnnxModel;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-optimize-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn request(model: &Path, output: &Path) -> OptimizeRequest {
    OptimizeRequest {
        model: model.to_path_buf(),
        output: output.to_path_buf(),
        mode: Mode::Int8Dynamic,
        full_range: false,
        eval: None,
        eval_label_column: None,
        min_agreement: None,
        batch: 32,
        threads: 1,
    }
}

fn fixture(name: &str) -> PathBuf {
    common::fixtures().join(name).join("1/model.onnx")
}

#[test]
fn int8_dynamic_shrinks_a_wide_mlp_and_keeps_its_answers() {
    let dir = scratch("wide");
    let output = dir.join("wide-int8.onnx");
    let report = optimize(&request(&fixture("wide"), &output)).expect("optimizes");
    println!("{report}");

    assert_eq!(
        report
            .nodes
            .iter()
            .map(|n| (n.op.as_str(), n.outcome))
            .collect::<Vec<_>>(),
        [("MatMul", "quantized"); 3],
        "{:?}",
        report.nodes
    );
    // 1.06M FP32 weights become INT8 plus a scale per column.
    assert!(report.size_ratio < 0.3, "size ratio {}", report.size_ratio);
    let agreement = &report.measured.agreement;
    assert_eq!(agreement.len(), 1);
    assert_eq!(
        (agreement[0].output.as_str(), agreement[0].measure),
        ("logits", "top-1")
    );
    assert!(
        agreement[0].value >= 0.95,
        "top-1 agreement {} on {} rows",
        agreement[0].value,
        report.measured.rows
    );
    assert_eq!(report.measured.rows, 1000);
    // The written model is a model ONNX Runtime serves, with the same signature.
    let original = OnnxModel::load(&fixture("wide"), &ModelConfig::default()).unwrap();
    let optimized = OnnxModel::load(&output, &ModelConfig::default()).unwrap();
    assert_eq!(optimized.inputs(), original.inputs());
    assert_eq!(optimized.outputs(), original.outputs());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refusals_name_the_problem_and_write_nothing() {
    let dir = scratch("refusals");
    let output = dir.join("out.onnx");

    let strict = OptimizeRequest {
        min_agreement: Some(1.01),
        ..request(&fixture("mlp"), &output)
    };
    let error = optimize(&strict).expect_err("no model agrees more than fully");
    assert!(
        matches!(error, OptimizeError::BelowAgreement { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("is below --min-agreement 1.01; nothing was written")
            && message.contains("latency 32 rows (ms)"),
        "the message carries the figures: {message}"
    );

    let error = optimize(&request(&fixture("digits"), &output)).expect_err("nothing to quantize");
    assert_eq!(
        error.to_string(),
        "nothing to optimize: the model has no MatMul or Gemm node"
    );

    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"\x0a\xffnot a model").unwrap();
    let error = optimize(&request(&garbage, &output)).expect_err("not ONNX");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{} is not a valid ONNX model", garbage.display())),
        "{error}"
    );

    let eval = dir.join("narrow.csv");
    std::fs::write(&eval, "a,b\n1,2\n3,4\n").unwrap();
    let narrow = OptimizeRequest {
        eval: Some(eval),
        ..request(&fixture("mlp"), &output)
    };
    let error = optimize(&narrow).expect_err("rows of the wrong width");
    assert!(
        error
            .to_string()
            .contains("the evaluation rows have 2 values each, but the input takes 16"),
        "{error}"
    );

    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "garbage.onnx" && name != "narrow.csv")
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A one-node model: `Y = 0.5 * X @ W^T + 2 * C` (`Gemm` with `transB`, `alpha`,
/// `beta` and a constant bias), X `[batch, 8]`, W `[4, 8]`, C `[4]`.
fn gemm_model(path: &Path) {
    use prost::Message;
    use sluice_server::optimize::onnx::{self, pb};
    let value = |name: &str, width: i64| pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(onnx::DataType::Float as i32),
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(
                                "batch".into(),
                            )),
                            ..Default::default()
                        },
                        pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(width)),
                            ..Default::default()
                        },
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let weights: Vec<f32> = (0..32).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
    let bias = [0.1, -0.2, 0.3, -0.4];
    let mut gemm = onnx::node("Gemm", "gemm".into(), &["x", "w", "c"], &["y"]);
    gemm.attribute.push(onnx::int_attribute("transB", 1));
    gemm.attribute.push(pb::AttributeProto {
        name: Some("alpha".into()),
        f: Some(0.5),
        r#type: Some(pb::attribute_proto::AttributeType::Float as i32),
        ..Default::default()
    });
    gemm.attribute.push(pb::AttributeProto {
        name: Some("beta".into()),
        f: Some(2.0),
        r#type: Some(pb::attribute_proto::AttributeType::Float as i32),
        ..Default::default()
    });
    let model = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(pb::GraphProto {
            name: Some("gemm".into()),
            node: vec![gemm],
            initializer: vec![
                onnx::float_tensor("w", vec![4, 8], &weights),
                onnx::float_tensor("c", vec![4], &bias),
            ],
            input: vec![value("x", 8)],
            output: vec![value("y", 4)],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

#[test]
fn gemm_keeps_its_transpose_alpha_beta_and_bias() {
    use sluice_server::tensor::{Tensor, TensorData};
    let dir = scratch("gemm");
    let (original, output) = (dir.join("gemm.onnx"), dir.join("gemm-int8.onnx"));
    gemm_model(&original);
    let report = optimize(&request(&original, &output)).expect("optimizes");
    assert_eq!(report.nodes[0].outcome, "quantized", "{:?}", report.nodes);
    assert_eq!(report.nodes[0].detail, "weight [8, 4] to INT8, per column");

    let rows: Vec<f32> = (0..64).map(|i| ((i * 5 % 17) as f32 - 8.0) / 4.0).collect();
    let input = Tensor::new(vec![8, 8], TensorData::Fp32(rows)).unwrap();
    let run = |path: &Path| {
        let mut model = OnnxModel::load(path, &ModelConfig::default()).unwrap();
        match model.run(&[&input]).unwrap().remove(0).data {
            TensorData::Fp32(values) => values,
            other => panic!("{other:?}"),
        }
    };
    let (want, got) = (run(&original), run(&output));
    let largest = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = want
        .iter()
        .zip(&got)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 0.03 * largest,
        "largest error {worst} against outputs up to {largest}:\n{want:?}\n{got:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
