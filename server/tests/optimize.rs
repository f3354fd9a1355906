//! `sluice-server optimize` on the real ONNX Runtime and the generated fixtures:
//! INT8 dynamic quantization and FP16 of a 4 MB MLP (`wide`) shrink it, keep its
//! answers and load; FP16 keeps the nodes it must in FP32; and every refusal
//! writes no output file and names the problem.

mod common;

use std::path::{Path, PathBuf};

use sluice_server::config::ModelConfig;
use sluice_server::optimize::outcome::Outcome;
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
        calibration: None,
        calibration_method: sluice_server::optimize::calibrate::Method::MinMax,
        keep_fp32: Vec::new(),
        graph_optimization: None,
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
        [("MatMul", Outcome::Quantized); 3],
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
fn onnx_runtime_graph_optimizations_are_saved_into_the_file() {
    use sluice_server::optimize::offline::GraphLevel;
    let dir = scratch("offline");
    let output = dir.join("wide-int8-extended.onnx");
    let report = optimize(&OptimizeRequest {
        graph_optimization: Some(GraphLevel::Extended),
        ..request(&fixture("wide"), &output)
    })
    .expect("optimizes");
    assert_eq!(report.graph_optimization, Some(GraphLevel::Extended));
    assert!(report.measured.agreement[0].value >= 0.95, "{report}");
    // The quantized pattern is saved fused into ONNX Runtime's own operator.
    let saved = sluice_server::optimize::onnx::read(&output).unwrap();
    let ops: Vec<_> = saved
        .graph
        .unwrap()
        .node
        .iter()
        .filter_map(|n| n.op_type.clone())
        .collect();
    assert!(
        ops.iter()
            .filter(|op| *op == "DynamicQuantizeMatMul")
            .count()
            == 3
            && !ops.iter().any(|op| op == "MatMulInteger"),
        "{ops:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        [output.file_name().unwrap()],
        "no scratch file is left"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `rows` seeded pseudo-normal rows of `width` values as a CSV with a header.
fn normal_rows_csv(path: &Path, width: usize, rows: usize) {
    let mut state: u64 = 11;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let header: Vec<String> = (0..width).map(|i| format!("f{i}")).collect();
    let mut text = header.join(",") + "\n";
    for _ in 0..rows {
        let row: Vec<String> = (0..width)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                format!(
                    "{:.5}",
                    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
                )
            })
            .collect();
        text += &(row.join(",") + "\n");
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn int8_static_writes_qdq_from_calibrated_ranges_and_keeps_the_answers() {
    use sluice_server::optimize::calibrate::Method;
    let dir = scratch("static");
    let (calibration, output) = (dir.join("calibration.csv"), dir.join("wide-static.onnx"));
    normal_rows_csv(&calibration, 16, 500);
    for method in [Method::MinMax, Method::Percentile(99.99)] {
        let report = optimize(&OptimizeRequest {
            mode: Mode::Int8Static,
            calibration: Some(calibration.clone()),
            calibration_method: method,
            ..request(&fixture("wide"), &output)
        })
        .expect("quantizes");
        println!("{method:?}\n{report}");
        assert_eq!(
            report.nodes.iter().map(|n| n.outcome).collect::<Vec<_>>(),
            [Outcome::Quantized; 3]
        );
        assert!(report.size_ratio < 0.3, "size ratio {}", report.size_ratio);
        assert_eq!(report.measured.rows_from, calibration.display().to_string());
        let agreement = &report.measured.agreement[0];
        assert!(
            agreement.value >= 0.95,
            "{method:?}: top-1 {}",
            agreement.value
        );
        let saved = sluice_server::optimize::onnx::read(&output).unwrap();
        let ops: Vec<_> = saved
            .graph
            .unwrap()
            .node
            .iter()
            .filter_map(|n| n.op_type.clone())
            .collect();
        // A pair on each MatMul's input and output, and a DequantizeLinear per weight.
        assert_eq!(
            ops.iter().filter(|op| *op == "QuantizeLinear").count(),
            6,
            "{ops:?}"
        );
        assert_eq!(
            ops.iter().filter(|op| *op == "DequantizeLinear").count(),
            9,
            "{ops:?}"
        );
        assert_eq!(
            ops.iter().filter(|op| *op == "MatMul").count(),
            3,
            "{ops:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn int8_static_keeps_a_transposed_gemm_exact_enough() {
    let dir = scratch("static-gemm");
    let (original, output, calibration) = (
        dir.join("gemm.onnx"),
        dir.join("gemm-static.onnx"),
        dir.join("rows.csv"),
    );
    gemm_model(&original);
    normal_rows_csv(&calibration, 8, 200);
    let report = optimize(&OptimizeRequest {
        mode: Mode::Int8Static,
        calibration: Some(calibration),
        ..request(&original, &output)
    })
    .expect("quantizes");
    assert_eq!(
        report.nodes[0].outcome,
        Outcome::Quantized,
        "{:?}",
        report.nodes
    );
    assert_gemm_outputs_close(&original, &output, 8.0, 0.05);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fp16_halves_a_wide_mlp_and_keeps_its_answers_and_signature() {
    let dir = scratch("wide-fp16");
    let output = dir.join("wide-fp16.onnx");
    let report = optimize(&OptimizeRequest {
        mode: Mode::Fp16,
        ..request(&fixture("wide"), &output)
    })
    .expect("converts");
    println!("{report}");
    assert!(
        report.nodes.iter().all(|n| n.outcome == Outcome::Converted),
        "{:?}",
        report.nodes
    );
    assert!(
        (0.45..0.55).contains(&report.size_ratio),
        "size ratio {}",
        report.size_ratio
    );
    let agreement = &report.measured.agreement[0];
    assert!(
        agreement.value >= 0.99,
        "top-1 agreement {}",
        agreement.value
    );
    let original = OnnxModel::load(&fixture("wide"), &ModelConfig::default()).unwrap();
    let optimized = OnnxModel::load(&output, &ModelConfig::default()).unwrap();
    assert_eq!(optimized.inputs(), original.inputs(), "inputs stay FP32");
    assert_eq!(optimized.outputs(), original.outputs(), "outputs stay FP32");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fp16_keeps_listed_operators_in_fp32_between_casts() {
    let dir = scratch("fp16-keep");
    let output = dir.join("slow-fp16.onnx");
    // Tanh is kept in FP32 on request, between a Cast down and a Cast up.
    let report = optimize(&OptimizeRequest {
        mode: Mode::Fp16,
        keep_fp32: vec!["Tanh".into()],
        ..request(&fixture("slow"), &output)
    })
    .expect("converts");
    println!("{report}");
    let kept: Vec<_> = report
        .nodes
        .iter()
        .filter(|n| n.outcome == Outcome::Kept)
        .map(|n| (n.op.as_str(), n.detail.as_str()))
        .collect();
    assert_eq!(kept, [("Tanh", "Tanh is kept in FP32 by --keep-fp32"); 9]);
    assert!(
        report
            .nodes
            .iter()
            .any(|n| n.op == "MatMul" && n.outcome == Outcome::Converted)
    );
    let agreement = &report.measured.agreement[0];
    assert!(agreement.share() >= 0.98, "{agreement:?}");
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

    let error = optimize(&OptimizeRequest {
        mode: Mode::Fp16,
        ..request(&fixture("digits"), &output)
    })
    .expect_err("ai.onnx.ml operators have no FP16 kernels");
    assert!(
        error.to_string().starts_with("nothing to optimize: every node was kept (")
            && error
                .to_string()
                .contains("LinearClassifier 'LinearClassifier': operators of domain 'ai.onnx.ml' are kept in FP32"),
        "{error}"
    );

    let error = optimize(&OptimizeRequest {
        mode: Mode::Int8Static,
        ..request(&fixture("mlp"), &output)
    })
    .expect_err("no calibration rows");
    assert_eq!(
        error.to_string(),
        "cannot calibrate: int8-static needs --calibration FILE: rows to observe the activations on"
    );
    let narrow_rows = dir.join("narrow-calibration.csv");
    std::fs::write(&narrow_rows, "a,b\n1,2\n3,4\n").unwrap();
    let error = optimize(&OptimizeRequest {
        mode: Mode::Int8Static,
        calibration: Some(narrow_rows),
        ..request(&fixture("mlp"), &output)
    })
    .expect_err("calibration rows of the wrong width");
    assert!(
        error.to_string().starts_with(
            "cannot calibrate: the calibration rows have 2 values each, but the input takes 16"
        ),
        "{error}"
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
        .filter(|name| {
            !["garbage.onnx", "narrow.csv", "narrow-calibration.csv"].contains(&name.as_str())
        })
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model that mixes FP32 with INT64: `idx = ArgMax(X @ W)`,
/// `Y = X @ W + Cast<float>(idx)`, plus zeros from `ConstantOfShape(Shape(..))`;
/// outputs `Y` (FP32) and `idx` (INT64).
fn mixed_model(path: &Path) {
    use prost::Message;
    use sluice_server::optimize::onnx::{self, pb};
    let weights: Vec<f32> = (0..32).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
    let mut argmax = onnx::node("ArgMax", "argmax".into(), &["h"], &["idx"]);
    argmax.attribute.push(onnx::int_attribute("axis", 1));
    let mut cast = onnx::node("Cast", "to_float".into(), &["idx"], &["idx_f"]);
    cast.attribute
        .push(onnx::int_attribute("to", onnx::DataType::Float as i64));
    let nodes = vec![
        onnx::node("MatMul", "matmul".into(), &["x", "w"], &["h"]),
        argmax,
        cast,
        onnx::node("Add", "add".into(), &["h", "idx_f"], &["sum"]),
        onnx::node("Shape", "shape".into(), &["sum"], &["shape"]),
        onnx::node("ConstantOfShape", "zeros".into(), &["shape"], &["zeros"]),
        onnx::node("Add", "add_zeros".into(), &["sum", "zeros"], &["y"]),
    ];
    let model = pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(pb::GraphProto {
            name: Some("mixed".into()),
            node: nodes,
            initializer: vec![onnx::float_tensor("w", vec![8, 4], &weights)],
            input: vec![value_info("x", onnx::DataType::Float, &[-1, 8])],
            output: vec![
                value_info("y", onnx::DataType::Float, &[-1, 4]),
                value_info("idx", onnx::DataType::Int64, &[-1, 1]),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

#[test]
fn fp16_retypes_casts_and_constants_and_leaves_integers_alone() {
    let dir = scratch("fp16-mixed");
    let (original, output) = (dir.join("mixed.onnx"), dir.join("mixed-fp16.onnx"));
    mixed_model(&original);
    let report = optimize(&OptimizeRequest {
        mode: Mode::Fp16,
        ..request(&original, &output)
    })
    .expect("converts");
    println!("{report}");
    let ops: Vec<_> = report
        .nodes
        .iter()
        .map(|n| (n.op.as_str(), n.outcome))
        .collect();
    assert_eq!(
        ops,
        [
            ("MatMul", Outcome::Converted),
            ("ArgMax", Outcome::Converted),
            ("Cast", Outcome::Converted),
            ("Add", Outcome::Converted),
            ("Shape", Outcome::Converted),
            ("ConstantOfShape", Outcome::Converted),
            ("Add", Outcome::Converted),
        ]
    );
    let agreement = &report.measured.agreement;
    assert_eq!(agreement.len(), 2, "{agreement:?}");
    assert!(agreement.iter().all(|a| a.share() >= 0.99), "{agreement:?}");
    let original = OnnxModel::load(&original, &ModelConfig::default()).unwrap();
    let optimized = OnnxModel::load(&output, &ModelConfig::default()).unwrap();
    assert_eq!(optimized.outputs(), original.outputs());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tensor's declaration: `dims` of -1 are named `batch`.
fn value_info(
    name: &str,
    elem_type: sluice_server::optimize::onnx::DataType,
    dims: &[i64],
) -> sluice_server::optimize::onnx::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    use sluice_server::optimize::onnx::pb;
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: Some(elem_type as i32),
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(if *d < 0 {
                                Value::DimParam("batch".into())
                            } else {
                                Value::DimValue(*d)
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A one-node model: `Y = 0.5 * X @ W^T + 2 * C` (`Gemm` with `transB`, `alpha`,
/// `beta` and a constant bias), X `[batch, 8]`, W `[4, 8]`, C `[4]`.
fn gemm_model(path: &Path) {
    use prost::Message;
    use sluice_server::optimize::onnx::{self, pb};
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
            input: vec![value_info("x", onnx::DataType::Float, &[-1, 8])],
            output: vec![value_info("y", onnx::DataType::Float, &[-1, 4])],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

/// Runs both Gemm models on 8 fixed rows (values up to 8 / `spread`) and checks
/// that no output differs by more than `tolerance` of the largest one.
fn assert_gemm_outputs_close(original: &Path, optimized: &Path, spread: f32, tolerance: f32) {
    use sluice_server::tensor::{Tensor, TensorData};
    let rows: Vec<f32> = (0..64)
        .map(|i| ((i * 5 % 17) as f32 - 8.0) / spread)
        .collect();
    let input = Tensor::new(vec![8, 8], TensorData::Fp32(rows)).unwrap();
    let run = |path: &Path| {
        let mut model = OnnxModel::load(path, &ModelConfig::default()).unwrap();
        match model.run(&[&input]).unwrap().remove(0).data {
            TensorData::Fp32(values) => values,
            other => panic!("{other:?}"),
        }
    };
    let (want, got) = (run(original), run(optimized));
    let largest = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = want
        .iter()
        .zip(&got)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= tolerance * largest,
        "largest error {worst} against outputs up to {largest}:\n{want:?}\n{got:?}"
    );
}

#[test]
fn gemm_keeps_its_transpose_alpha_beta_and_bias() {
    let dir = scratch("gemm");
    let (original, output) = (dir.join("gemm.onnx"), dir.join("gemm-int8.onnx"));
    gemm_model(&original);
    let report = optimize(&request(&original, &output)).expect("optimizes");
    assert_eq!(
        report.nodes[0].outcome,
        Outcome::Quantized,
        "{:?}",
        report.nodes
    );
    assert_eq!(report.nodes[0].detail, "weight [8, 4] to INT8, per column");

    assert_gemm_outputs_close(&original, &output, 4.0, 0.03);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_summary_line_carries_the_figures_or_the_refusal() {
    let dir = scratch("summary");
    let (output, summary) = (dir.join("out.onnx"), dir.join("summary.json"));
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice-server"))
            .args([
                "optimize",
                "--mode",
                "int8-dynamic",
                "--threads",
                "1",
                "--model",
            ])
            .arg(fixture("wide"))
            .arg("--output")
            .arg(&output)
            .arg("--summary")
            .arg(&summary)
            .args(extra)
            .output()
            .unwrap()
    };
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap()
    };

    assert!(run(&[]).status.success());
    let figures = read();
    assert_eq!(figures["mode"], "int8-dynamic");
    assert!(figures["sizeRatio"].as_f64().unwrap() < 0.3, "{figures}");
    assert_eq!(figures["nodesChanged"], 3);
    assert_eq!(figures["agreement"][0]["output"], "logits");
    assert!(figures["speedupBatch"].as_f64().unwrap() > 0.0);

    std::fs::remove_file(&output).unwrap();
    let refused = run(&["--min-agreement", "1"]);
    assert!(!refused.status.success());
    let error = read();
    assert_eq!(error["kind"], "BelowAgreement", "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("is below --min-agreement 1; nothing was written"),
        "{error}"
    );
    assert!(!output.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
