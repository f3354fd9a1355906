//! `sluice-server batch` as a job runs it: real ONNX Runtime on the fixture
//! models, real files in every format, a shard killed mid-run and run again,
//! and bad input.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_server::config::ModelConfig;
use sluice_server::runtime::OnnxModel;
use sluice_server::tensor::{Tensor, TensorData};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn batch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .arg("batch")
        .args(args)
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .expect("run sluice-server batch")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn model(name: &str) -> String {
    common::fixtures().join(name).display().to_string()
}

/// `rows` seeded rows of the `mlp` interface (16 features) as CSV, with an
/// `id` column.
fn mlp_csv(rows: usize, seed: u64) -> String {
    let mut random = fastrand::Rng::with_seed(seed);
    let mut text = String::from("id");
    for i in 0..16 {
        text.push_str(&format!(",f{i}"));
    }
    text.push('\n');
    for row in 0..rows {
        text.push_str(&format!("event-{seed}-{row}"));
        for _ in 0..16 {
            text.push_str(&format!(",{:.4}", random.f32() * 4.0 - 2.0));
        }
        text.push('\n');
    }
    text
}

/// The output CSV parts of `dir`, as rows keyed by (source, row).
fn csv_rows(dir: &Path) -> BTreeMap<(String, u64), Vec<String>> {
    let mut rows = BTreeMap::new();
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    parts.sort();
    for part in parts {
        let mut reader = csv::Reader::from_path(&part).unwrap();
        for record in reader.records() {
            let record = record.unwrap();
            let key = (record[0].to_string(), record[1].parse().unwrap());
            let values = record.iter().skip(2).map(str::to_string).collect();
            assert!(
                rows.insert(key.clone(), values).is_none(),
                "{key:?} is twice in the output"
            );
        }
    }
    rows
}

/// The logits of `mlp`'s highest version (the one batch runs) for the
/// features of `csv`, run directly on ONNX Runtime.
fn direct_logits(csv: &str) -> Vec<f32> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let features: Vec<f32> = reader
        .records()
        .flat_map(|r| {
            let r = r.unwrap();
            (1..17)
                .map(move |i| r[i].parse::<f32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let rows = features.len() / 16;
    let mut model = OnnxModel::load(
        &common::fixtures().join("mlp/2/model.onnx"),
        &ModelConfig::default(),
    )
    .unwrap();
    let input = Tensor::new(vec![rows as i64, 16], TensorData::Fp32(features)).unwrap();
    let TensorData::Fp32(logits) = model.run(&[&input]).unwrap().remove(0).data else {
        panic!("logits are FP32")
    };
    logits
}

#[test]
fn every_row_is_predicted_once_with_its_ids_and_the_model_s_own_answers() {
    let dir = scratch("csv");
    std::fs::create_dir_all(dir.join("in/day=1")).unwrap();
    let first = mlp_csv(700, 1);
    let second = mlp_csv(300, 2);
    std::fs::write(dir.join("in/a.csv"), &first).unwrap();
    std::fs::write(dir.join("in/day=1/b.csv"), &second).unwrap();
    std::fs::write(dir.join("in/_SUCCESS"), "").unwrap();
    let out = dir.join("out");
    let summary = dir.join("summary.json");
    let run = batch(&[
        "--model",
        &model("mlp"),
        "--input",
        &format!("file://{}", dir.join("in").display()),
        "--output",
        out.to_str().unwrap(),
        "--id-column",
        "id",
        "--rows-per-part",
        "250",
        "--batch-size",
        "64",
        "--summary-file",
        summary.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["rows"], 1000);
    assert_eq!(summary["rejected"], 0);
    assert_eq!(summary["files"], 2);
    // 700 rows in parts of 250: 3 parts; 300 rows: 2.
    assert_eq!(summary["parts"], 5);
    assert!(summary.get("error").is_none());

    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 1000);
    for (source, csv, seed) in [("a.csv", &first, 1), ("day=1/b.csv", &second, 2)] {
        let logits = direct_logits(csv);
        let count = logits.len() / 4;
        for row in 0..count {
            let values = &rows[&(source.to_string(), row as u64)];
            assert_eq!(values[0], format!("event-{seed}-{row}"));
            for k in 0..4 {
                let written: f32 = values[1 + k].parse().unwrap();
                assert_eq!(written, logits[row * 4 + k], "{source} row {row} logit {k}");
            }
        }
    }
    let header = std::fs::read_to_string(out.join("part-00000-00000.csv")).unwrap();
    assert!(header.starts_with("_source,_row,id,logits_0,logits_1,logits_2,logits_3\n"));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("_manifest/shard-00000-of-00001.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["complete"], true);
    assert_eq!(
        manifest["files"]["a.csv"]["parts"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn shards_split_the_files_and_together_cover_every_row_once() {
    let dir = scratch("shards");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    for file in 0..5 {
        std::fs::write(
            dir.join(format!("in/{file}.csv")),
            mlp_csv(40 + file, file as u64),
        )
        .unwrap();
    }
    let out = dir.join("out");
    let mut files = Vec::new();
    for shard in 0..3 {
        let run = batch(&[
            "--model",
            &model("mlp"),
            "--input",
            dir.join("in").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--id-column",
            "id",
            "--shard",
            &shard.to_string(),
            "--shards",
            "3",
        ]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        files.push(summary["files"].as_u64().unwrap());
    }
    assert_eq!(files, [2, 2, 1], "files 0,3 / 1,4 / 2");
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), (0..5).map(|f| 40 + f).sum::<usize>());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_killed_shard_resumes_after_its_last_part_and_matches_an_uninterrupted_run() {
    let dir = scratch("resume");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/big.csv"), mlp_csv(60_000, 7)).unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "batch",
            "--model",
            &model("mlp"),
            "--input",
            dir.join("in").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--id-column",
            "id",
            "--rows-per-part",
            "2000",
            "--batch-size",
            "128",
            "--threads",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let whole = dir.join("whole");
    let run = Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .args(args(&whole))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));

    // Killed (SIGKILL, as the kubelet's last resort) once a few parts are out.
    let killed = dir.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .args(args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let manifest = killed.join("_manifest/shard-00000-of-00001.json");
    let started = Instant::now();
    loop {
        let parts = std::fs::read(&manifest)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map_or(0, |m| {
                m["files"]["big.csv"]["parts"]
                    .as_array()
                    .map_or(0, Vec::len)
            });
        if parts >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no part published"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(before["complete"], false, "killed before the end");

    let run = Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .args(args(&killed))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(summary["resumedParts"].as_u64().unwrap() >= 3, "{summary}");
    assert_eq!(summary["parts"], 30);
    assert_eq!(summary["rows"], 60_000);

    let resumed = csv_rows(&killed);
    assert_eq!(resumed.len(), 60_000, "every row once");
    assert_eq!(
        resumed,
        csv_rows(&whole),
        "the same predictions as an uninterrupted run"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    // The killed run's half-written part is a hidden temporary file, never a part.
    assert!(
        leftovers.iter().all(|n| n.ends_with(".tmp")),
        "{leftovers:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rejected_rows_are_written_with_reasons_and_too_many_fail_the_shard() {
    let dir = scratch("rejects");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let mut csv = mlp_csv(10, 3);
    csv.push_str("bad-1,1,2,3\n");
    csv.push_str(&format!("bad-2,{}x\n", "1,".repeat(15)));
    std::fs::write(dir.join("in/day.csv"), &csv).unwrap();
    let out = dir.join("out");
    let run_with = |ratio: &str, summary: &Path| {
        batch(&[
            "--model",
            &model("mlp"),
            "--input",
            dir.join("in").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--id-column",
            "id",
            "--max-reject-ratio",
            ratio,
            "--summary-file",
            summary.to_str().unwrap(),
        ])
    };
    let strict = run_with("0.1", &dir.join("strict.json"));
    assert!(!strict.status.success());
    let stderr = text(&strict.stderr);
    assert!(
        stderr.contains("2 of 12 rows rejected (0.1667), more than --max-reject-ratio 0.1"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("strict.json")).unwrap()).unwrap();
    assert_eq!(summary["kind"], "rejects");
    assert_eq!(
        (summary["rows"].as_u64(), summary["rejected"].as_u64()),
        (Some(10), Some(2))
    );

    let rejects = std::fs::read_to_string(out.join("_rejects/part-00000-00000.jsonl")).unwrap();
    let rejects: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejects.len(), 2);
    assert_eq!(rejects[0]["source"], "day.csv");
    assert_eq!(rejects[0]["row"], 10);
    assert_eq!(rejects[0]["reason"], "has 4 fields, the header has 17");
    assert_eq!(rejects[1]["row"], 11);
    assert_eq!(rejects[1]["reason"], "column 'f15': 'x' is not a number");
    // The predictions for the good rows are published all the same.
    assert_eq!(csv_rows(&out).len(), 10);

    // A looser ratio accepts the same shard; it resumes from the manifest.
    let loose = run_with("0.2", &dir.join("loose.json"));
    assert!(loose.status.success(), "{}", text(&loose.stderr));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn jsonl_parquet_and_npy_give_the_same_predictions_as_csv() {
    let dir = scratch("formats");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let csv = mlp_csv(300, 5);
    std::fs::write(dir.join("in/x.csv"), &csv).unwrap();
    let common_args = |input: &str, output: &Path, format: &str, extra: &[&str]| {
        let mut args = vec![
            "--model".to_string(),
            model("mlp"),
            "--input".to_string(),
            input.to_string(),
            "--output".to_string(),
            output.display().to_string(),
            "--output-format".to_string(),
            format.to_string(),
            "--batch-size".to_string(),
            "50".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| {
        let output = batch(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
    };
    // CSV in, each format out.
    for format in ["jsonl", "parquet", "npy", "csv"] {
        let extra: &[&str] = if format == "npy" {
            &["--ignore-column", "id"]
        } else {
            &["--id-column", "id"]
        };
        run(common_args(
            dir.join("in").to_str().unwrap(),
            &dir.join(format),
            format,
            extra,
        ));
    }
    let logits = direct_logits(&csv);

    // JSON Lines: one object per row, the logits as an array.
    let jsonl = std::fs::read_to_string(dir.join("jsonl/part-00000-00000.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["_source"], "x.csv");
    assert_eq!(first["_row"], 0);
    assert_eq!(first["id"], "event-5-0");
    assert_eq!(first["logits"][0].as_f64().unwrap() as f32, logits[0]);
    assert_eq!(jsonl.lines().count(), 300);

    // Parquet, read back with the parquet crate.
    let file = std::fs::File::open(dir.join("parquet/part-00000-00000.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut read = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let names: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "_source", "_row", "id", "logits_0", "logits_1", "logits_2", "logits_3"
            ]
        );
        let column = batch
            .column(3)
            .as_any()
            .downcast_ref::<arrow_array::Float32Array>()
            .unwrap();
        read.extend(column.values().iter().copied());
    }
    let expected: Vec<f32> = logits.iter().step_by(4).copied().collect();
    assert_eq!(read, expected);

    // .npy: the logits and the row numbers, as numpy would load them.
    let npy = std::fs::read(dir.join("npy/part-00000-00000.logits.npy")).unwrap();
    assert_eq!(&npy[..6], b"\x93NUMPY");
    let header = String::from_utf8_lossy(&npy[10..128]);
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (300, 4)"),
        "{header}"
    );
    let values: Vec<f32> = npy[128..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, logits);

    // Each of them as input again (the written .npy logits are not features,
    // so .npy input is checked with the features array instead).
    std::fs::create_dir_all(dir.join("npyin")).unwrap();
    let features: Vec<u8> = {
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        reader
            .records()
            .flat_map(|r| {
                let r = r.unwrap();
                (1..17)
                    .flat_map(move |i| r[i].parse::<f32>().unwrap().to_le_bytes())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut file = sluice_server::batch::output::npy::header("<f4", "(300, 16)");
    file.extend(features);
    std::fs::write(dir.join("npyin/x.npy"), file).unwrap();
    run(common_args(
        dir.join("npyin").to_str().unwrap(),
        &dir.join("from-npy"),
        "csv",
        &[],
    ));
    let from_npy = csv_rows(&dir.join("from-npy"));
    assert_eq!(from_npy.len(), 300);
    assert_eq!(
        from_npy[&("x.npy".to_string(), 299)][3]
            .parse::<f32>()
            .unwrap(),
        logits[299 * 4 + 3]
    );

    // JSON Lines input: the features as the input's own array.
    std::fs::create_dir_all(dir.join("jsonlin")).unwrap();
    let mut lines = String::new();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    for record in reader.records() {
        let record = record.unwrap();
        let features: Vec<f32> = (1..17).map(|i| record[i].parse().unwrap()).collect();
        lines.push_str(&serde_json::json!({"id": &record[0], "input": features}).to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("jsonlin/x.jsonl"), lines).unwrap();
    run(common_args(
        dir.join("jsonlin").to_str().unwrap(),
        &dir.join("from-jsonl"),
        "csv",
        &["--id-column", "id"],
    ));
    let from_jsonl = csv_rows(&dir.join("from-jsonl"));
    assert_eq!(
        from_jsonl,
        csv_rows(&dir.join("csv"))
            .into_iter()
            .map(|((_, row), v)| (("x.jsonl".to_string(), row), v))
            .collect()
    );
    // Parquet input: the Parquet written above, with its logits ignored, is
    // not the model's input; so a Parquet of the features is written here.
    let schema = std::sync::Arc::new(arrow_schema::Schema::new(
        (0..16)
            .map(|i| {
                arrow_schema::Field::new(format!("f{i}"), arrow_schema::DataType::Float64, false)
            })
            .collect::<Vec<_>>(),
    ));
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let columns: Vec<arrow_array::ArrayRef> = (1..17)
        .map(|i| {
            std::sync::Arc::new(arrow_array::Float64Array::from_iter_values(
                records.iter().map(|r| r[i].parse::<f32>().unwrap() as f64),
            )) as arrow_array::ArrayRef
        })
        .collect();
    std::fs::create_dir_all(dir.join("pqin")).unwrap();
    let file = std::fs::File::create(dir.join("pqin/x.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
    writer
        .write(&arrow_array::RecordBatch::try_new(schema, columns).unwrap())
        .unwrap();
    writer.close().unwrap();
    run(common_args(
        dir.join("pqin").to_str().unwrap(),
        &dir.join("from-parquet"),
        "csv",
        &["--rows-per-part", "100"],
    ));
    let from_parquet = csv_rows(&dir.join("from-parquet"));
    assert_eq!(from_parquet.len(), 300);
    for row in [0u64, 150, 299] {
        let values = &from_parquet[&("x.parquet".to_string(), row)];
        let written: Vec<f32> = values.iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(written, logits[row as usize * 4..row as usize * 4 + 4]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn input_that_does_not_fit_is_an_error_naming_the_file_and_keeps_what_was_published() {
    let dir = scratch("bad");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/a.csv"), mlp_csv(20, 1)).unwrap();
    std::fs::write(dir.join("in/b.csv"), "id,f0,f1\nx,1,2\n").unwrap();
    let out = dir.join("out");
    let run = batch(&[
        "--model",
        &model("mlp"),
        "--input",
        dir.join("in").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--id-column",
        "id",
    ]);
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(
        stderr
            .contains("b.csv: 2 feature columns (f0, f1), but the model's input 'input' takes 16"),
        "{stderr}"
    );
    // a.csv's part is out, and the manifest says b.csv is not done.
    assert_eq!(csv_rows(&out).len(), 20);

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--input".into(), dir.join("absent").display().to_string()],
            "absent: No such file",
        ),
        (
            vec!["--input".into(), "ftp://host/x".into()],
            "ftp://host/x: unsupported location",
        ),
        (
            vec![
                "--input".into(),
                dir.join("in").display().to_string(),
                "--shard".into(),
                "3".into(),
                "--shards".into(),
                "2".into(),
            ],
            "--shard 3 --shards 2: the shard must be below the number of shards",
        ),
        (
            vec![
                "--input".into(),
                dir.join("in").display().to_string(),
                "--format".into(),
                "parquet".into(),
            ],
            "no .parquet file to read",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec![
            "--model".to_string(),
            model("mlp"),
            "--output".into(),
            dir.join("other").display().to_string(),
        ];
        args.extend(extra);
        let run = batch(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!run.status.success(), "{args:?}");
        assert!(
            text(&run.stderr).contains(message),
            "{args:?}: {message} not in {}",
            text(&run.stderr)
        );
    }

    // Truncated and corrupt files.
    std::fs::create_dir_all(dir.join("broken")).unwrap();
    std::fs::write(dir.join("broken/x.parquet"), b"PAR1 not really").unwrap();
    let run = batch(&[
        "--model",
        &model("mlp"),
        "--input",
        dir.join("broken").to_str().unwrap(),
        "--output",
        dir.join("broken-out").to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(
        text(&run.stderr).contains("x.parquet: not a Parquet file batch reads"),
        "{}",
        text(&run.stderr)
    );
    let model_missing = batch(&[
        "--model",
        dir.join("nothing.onnx").to_str().unwrap(),
        "--input",
        dir.join("in").to_str().unwrap(),
        "--output",
        dir.join("x").to_str().unwrap(),
    ]);
    assert!(
        text(&model_missing.stderr).contains("nothing.onnx"),
        "{}",
        text(&model_missing.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `sluice-server batch` with `env` added to its environment, off the async runtime.
async fn batch_with_env(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sluice-server"))
            .arg("batch")
            .args(&args)
            .env_remove("JOB_COMPLETION_INDEX")
            .envs(env)
            .output()
            .expect("run sluice-server batch")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_input_and_output_go_through_a_server_that_checks_signatures() {
    let s3 = common::s3::S3Server::start();
    s3.create_bucket("data").await;
    s3.create_bucket("predictions").await;
    let (first, second) = (mlp_csv(500, 11), mlp_csv(120, 12));
    s3.put("data", "new/2026-11-30/a.csv", first.clone()).await;
    s3.put("data", "new/2026-11-30/b.csv", second.clone()).await;
    s3.put("data", "new/2026-11-30/_SUCCESS", "").await;
    s3.put("data", "newer/c.csv", mlp_csv(5, 13)).await;
    let args = |output: &str| -> Vec<String> {
        [
            "--model",
            &model("mlp"),
            "--input",
            "s3://data/new",
            "--output",
            output,
            "--id-column",
            "id",
            "--rows-per-part",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = batch_with_env(args("s3://predictions/run-1/"), s3.env()).await;
    assert!(run.status.success(), "{}", text(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        summary["rows"], 620,
        "only the prefix's own files: {summary}"
    );
    assert_eq!(summary["output"], "s3://predictions/run-1");
    let keys = s3.list("predictions", "run-1/").await;
    assert_eq!(
        keys,
        [
            "run-1/_manifest/shard-00000-of-00001.json",
            "run-1/part-00000-00000.csv",
            "run-1/part-00000-00001.csv",
            "run-1/part-00000-00002.csv",
            "run-1/part-00001-00000.csv",
        ]
    );
    let mut predicted = 0;
    for key in keys.iter().filter(|k| k.ends_with(".csv")) {
        let part = s3.get_text("predictions", key).await;
        let mut reader = csv::Reader::from_reader(part.as_bytes());
        for record in reader.records() {
            let record = record.unwrap();
            assert!(record[0].starts_with("2026-11-30/"), "{:?}", &record);
            predicted += 1;
        }
    }
    assert_eq!(predicted, 620);
    let logits = direct_logits(&second);
    let part = s3
        .get_text("predictions", "run-1/part-00001-00000.csv")
        .await;
    let last = part.lines().last().unwrap();
    let written: Vec<f32> = last
        .split(',')
        .skip(3)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(written, logits[119 * 4..]);

    // A run again finds the manifest complete and writes nothing new.
    let again = batch_with_env(args("s3://predictions/run-1"), s3.env()).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (summary["resumedParts"].as_u64(), summary["rows"].as_u64()),
        (Some(4), Some(620))
    );

    // A wrong secret, and a bucket that does not exist.
    let mut wrong = s3.env();
    for (key, value) in &mut wrong {
        if *key == "AWS_SECRET_ACCESS_KEY" {
            *value = "not-the-secret".into();
        }
    }
    let dir = scratch("s3-summary");
    let summary_file = dir.join("summary.json").display().to_string();
    let mut refused_args = args("s3://predictions/run-2");
    refused_args.extend(["--summary-file".to_string(), summary_file.clone()]);
    let refused = batch_with_env(refused_args, wrong).await;
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("s3://data/new: HTTP 403 Forbidden: SignatureDoesNotMatch (the signature is wrong: check AWS_SECRET_ACCESS_KEY)"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_file).unwrap()).unwrap();
    assert_eq!(summary["kind"], "credentials");
    let mut missing_args = args("s3://predictions/run-3");
    missing_args[3] = "s3://no-such-bucket/new".into();
    let missing = batch_with_env(missing_args, s3.env()).await;
    assert!(!missing.status.success());
    let stderr = text(&missing.stderr);
    assert!(stderr.contains("the bucket does not exist"), "{stderr}");
    assert!(
        s3.list("predictions", "run-2").await.is_empty(),
        "nothing written when refused"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn progress_is_in_the_status_file_and_on_metrics_while_it_runs() {
    let dir = scratch("progress");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    // `slow` takes about 30 ms a run: 40 runs of 16 rows last long enough to be watched.
    std::fs::write(dir.join("in/a.csv"), mlp_csv(640, 21)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let status = dir.join("status.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .args(["batch", "--model", &model("slow"), "--id-column", "id"])
        .args(["--batch-size", "16", "--threads", "1"])
        .arg("--input")
        .arg(dir.join("in"))
        .arg("--output")
        .arg(dir.join("out"))
        .arg("--status-file")
        .arg(&status)
        .args(["--metrics-address", &format!("127.0.0.1:{port}")])
        .env_remove("JOB_COMPLETION_INDEX")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let started = Instant::now();
    let mut seen = None;
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(120) {
        if let Ok(text) = reqwest::blocking::get(&metrics).and_then(|r| r.text()) {
            let predicted = text
                .lines()
                .find(|l| l.starts_with("sluice_batch_rows_total{outcome=\"predicted\"}"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(rows) = predicted.filter(|rows| *rows > 0 && *rows < 640) {
                assert!(text.contains("sluice_batch_input_files 1"), "{text}");
                seen = Some(rows);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
    assert!(
        seen.is_some(),
        "/metrics never showed the rows while running"
    );
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
    assert_eq!(status["done"], true);
    assert_eq!(status["rows"], 640);
    assert_eq!(status["filesDone"], 1);
    std::fs::remove_dir_all(dir).unwrap();
}
