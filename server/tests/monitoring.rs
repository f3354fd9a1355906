//! Monitoring's refusals at load on the real ONNX Runtime: a reference profile
//! that does not fit the model (another input, another number of features,
//! another output) or that is missing fails that model's load with the
//! mismatch named, while a fitting profile serves and the other models still
//! do. The profiles are written by `sluice-server profile` from the fixtures'
//! training data, where the operator puts them (`<model>/monitoring/profile.json`).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Repository, Server, fixtures, fp32_request, infer};

const CONFIG: &str = "monitoring: {profile: monitoring/profile.json, window: 100, min_rows: 10}\n";

/// The profile of fixture `fixture`, as `sluice-server profile` writes it.
fn profile(fixture: &str, scratch: &Path) -> serde_json::Value {
    let model = fixtures().join(fixture);
    let output = scratch.join(format!("{fixture}.profile.json"));
    let status = Command::new(env!("CARGO_BIN_EXE_sluice-server"))
        .arg("profile")
        .arg("--model")
        .arg(model.join("1/model.onnx"))
        .arg("--data")
        .arg(model.join("train.csv"))
        .args(["--label-column", "target", "--output"])
        .arg(&output)
        .status()
        .expect("run sluice-server profile");
    assert!(status.success(), "sluice-server profile {fixture} failed");
    serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap()
}

/// Puts `profile` where `config` names it for model `name`.
fn place(repository: &Repository, name: &str, profile: &serde_json::Value) {
    let dir = repository.dir.join(name).join("monitoring");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("profile.json"), profile.to_string()).unwrap();
}

#[tokio::test]
async fn profiles_that_do_not_fit_the_model_fail_its_load_with_the_mismatch_named() {
    let repository = Repository::new("profile-mismatch")
        .with_model("fits", "cancer", CONFIG)
        .with_model("other-input", "mlp", CONFIG)
        .with_model("other-width", "cancer", CONFIG)
        .with_model("other-output", "cancer", CONFIG)
        .with_model("missing", "cancer", CONFIG);
    let cancer = profile("cancer", &repository.dir);
    let digits = profile("digits", &repository.dir);
    let mut renamed = cancer.clone();
    renamed["outputs"][0]["name"] = "score".into();
    place(&repository, "fits", &cancer);
    place(&repository, "other-input", &cancer);
    place(&repository, "other-width", &digits);
    place(&repository, "other-output", &renamed);
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    let row = |columns: usize| vec![0.5_f32; columns];
    for (model, input, columns, message) in [
        (
            "other-input",
            "input",
            16,
            "invalid monitoring configuration: the profile monitoring/profile.json does not fit the model: it describes input 'float_input', but the model's inputs are [\"input\"]",
        ),
        (
            "other-width",
            "float_input",
            30,
            "the profile monitoring/profile.json does not fit the model: it has 64 features, but input 'float_input' has 30 columns (shape [-1, 30])",
        ),
        (
            "other-output",
            "float_input",
            30,
            "the profile monitoring/profile.json does not fit the model: it describes output column 'score', but the model's output columns are",
        ),
        ("missing", "float_input", 30, "cannot read"),
    ] {
        let (status, body) = infer(
            &client,
            &format!("{}/v2/models/{model}/infer", server.http),
            &fp32_request(input, &[1, columns as i64], &row(columns)),
        )
        .await;
        assert_eq!(status, 503, "{model}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(message), "{model}: {error} lacks {message}");
    }
    let (status, body) = infer(
        &client,
        &format!("{}/v2/models/fits/infer", server.http),
        &fp32_request("float_input", &[1, 30], &row(30)),
    )
    .await;
    assert_eq!(status, 200, "a fitting profile serves: {body}");
}
