//! `sluice-server fetch` against real sources: local files, an HTTP server, and
//! an S3 server that verifies request signatures (s3s-fs, tests/common/s3.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

fn model_bytes() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/mlp/1/model.onnx"),
    )
    .expect("run `make deps` to generate the fixtures")
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-fetch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fetch(uri: &str, dest: &Path, sha256: Option<&str>, env: &[(&str, String)]) -> Output {
    let mut command = Command::new(common::server_binary());
    command.args(["fetch", "--uri", uri, "--dest"]).arg(dest);
    if let Some(sha256) = sha256 {
        command.args(["--sha256", sha256]);
    }
    command
        .envs(env.iter().map(|(key, value)| (key, value)))
        .output()
        .expect("run sluice-server fetch")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_local_file_is_copied_and_verified() {
    let bytes = model_bytes();
    let dir = scratch("file");
    std::fs::write(dir.join("source.onnx"), &bytes).unwrap();
    let uri = format!("file://{}", dir.join("source.onnx").display());
    let dest = dir.join("models/fraud/1");
    let output = fetch(&uri, &dest, Some(&digest(&bytes)), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read(dest.join("model.onnx")).unwrap(), bytes);
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        1,
        "no partial file is left behind"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn another_file_name_can_be_written_beside_the_model() {
    let dir = scratch("name");
    std::fs::write(dir.join("profile.json"), b"{}").unwrap();
    let uri = format!("file://{}", dir.join("profile.json").display());
    let mut command = Command::new(common::server_binary());
    let output = command
        .args([
            "fetch",
            "--uri",
            &uri,
            "--file-name",
            "reference.json",
            "--dest",
        ])
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(dir.join("out/reference.json")).unwrap(),
        b"{}"
    );
    let output = Command::new(common::server_binary())
        .args(["fetch", "--uri", &uri, "--file-name", "../escape", "--dest"])
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("not a plain file name"),
        "{}",
        stderr(&output)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_digest_mismatch_writes_nothing_and_fails() {
    let bytes = model_bytes();
    let dir = scratch("mismatch");
    std::fs::write(dir.join("source.onnx"), &bytes).unwrap();
    let uri = format!("file://{}", dir.join("source.onnx").display());
    let dest = dir.join("out");
    let output = fetch(&uri, &dest, Some(&"0".repeat(64)), &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("sha256 mismatch"),
        "{}",
        stderr(&output)
    );
    assert!(!dest.join("model.onnx").exists());
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "the partial file is removed"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_uris_and_digests_are_refused_with_a_reason() {
    let dir = scratch("refuse");
    for (uri, sha, message) in [
        ("ftp://host/model.onnx", None, "unsupported storage URI"),
        ("pvc://claim/model.onnx", None, "unsupported storage URI"),
        ("model.onnx", None, "unsupported storage URI"),
        (
            "file:///nonexistent/model.onnx",
            None,
            "cannot read /nonexistent/model.onnx",
        ),
        ("file:///dev/null", Some("xyz"), "invalid sha256"),
        ("s3://bucket-only", None, "expected s3://bucket/key"),
    ] {
        let output = fetch(uri, &dir, sha, &[]);
        assert!(!output.status.success(), "{uri} was accepted");
        assert!(
            stderr(&output).contains(message),
            "{uri}: {}",
            stderr(&output)
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A failure is reported as its chain of causes on one line and status 1,
/// never with a backtrace, even when the environment asks for one.
#[test]
fn failures_print_their_causes_and_no_backtrace() {
    let dir = scratch("backtrace");
    let output = fetch(
        "file:///nonexistent/model.onnx",
        &dir,
        None,
        &[
            ("RUST_BACKTRACE", "full".to_string()),
            ("RUST_LIB_BACKTRACE", "1".to_string()),
        ],
    );
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "Error: cannot read /nonexistent/model.onnx: No such file or directory (os error 2)\n"
        ),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Checks that `ok` wrote `bytes` into `dir` and that `missing` failed with an
/// HTTP 404, then removes `dir`.
fn assert_fetched_and_missing(ok: &Output, missing: &Output, dir: &Path, bytes: &[u8]) {
    assert!(ok.status.success(), "{}", stderr(ok));
    assert_eq!(std::fs::read(dir.join("model.onnx")).unwrap(), bytes);
    assert!(!missing.status.success());
    assert!(stderr(missing).contains("HTTP 404"), "{}", stderr(missing));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Serves `bytes` at `/model.onnx` and 404 elsewhere, on a free loopback port.
async fn http_server(bytes: Vec<u8>) -> String {
    let app = axum::Router::new().route(
        "/model.onnx",
        axum::routing::get(move || async move { bytes.clone() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_download_is_verified_and_http_errors_are_reported() {
    let bytes = model_bytes();
    let base = http_server(bytes.clone()).await;
    let dir = scratch("http");
    let sha = digest(&bytes);
    let (ok, missing) = {
        let (dir, base, sha) = (dir.clone(), base.clone(), sha.clone());
        tokio::task::spawn_blocking(move || {
            (
                fetch(&format!("{base}/model.onnx"), &dir, Some(&sha), &[]),
                fetch(
                    &format!("{base}/absent.onnx"),
                    &dir.join("absent"),
                    None,
                    &[],
                ),
            )
        })
        .await
        .unwrap()
    };
    assert_fetched_and_missing(&ok, &missing, &dir, &bytes);
}

/// A bucket `models` holding the fixture model as `fraud/3/model.onnx`.
async fn s3_with_model(bytes: &[u8]) -> common::s3::S3Server {
    let s3 = common::s3::S3Server::start();
    s3.create_bucket("models").await;
    s3.put("models", "fraud/3/model.onnx", bytes).await;
    s3
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_object_is_fetched_with_signed_requests() {
    let bytes = model_bytes();
    let s3 = s3_with_model(&bytes).await;
    let dir = scratch("s3");
    let sha = digest(&bytes);
    let env = s3.env();
    let (ok, missing) = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            (
                fetch("s3://models/fraud/3/model.onnx", &dir, Some(&sha), &env),
                fetch(
                    "s3://models/fraud/9/model.onnx",
                    &dir.join("absent"),
                    None,
                    &env,
                ),
            )
        })
        .await
        .unwrap()
    };
    assert_fetched_and_missing(&ok, &missing, &dir, &bytes);
}

/// The S3 server checks signatures: a wrong secret or no credentials fail the
/// fetch with the server's reason and a hint, and write nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_s3_secret_fails_with_a_clear_error() {
    let bytes = model_bytes();
    let s3 = s3_with_model(&bytes).await;
    let dir = scratch("s3-secret");
    let wrong: Vec<_> = s3
        .env()
        .into_iter()
        .map(|(name, value)| match name {
            "AWS_SECRET_ACCESS_KEY" => (name, format!("{value}x")),
            _ => (name, value),
        })
        .collect();
    let anonymous: Vec<_> = s3
        .env()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("AWS_ACCESS") && !name.starts_with("AWS_SECRET"))
        .collect();
    let (wrong, anonymous) = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let uri = "s3://models/fraud/3/model.onnx";
            (
                fetch(uri, &dir.join("wrong"), None, &wrong),
                fetch(uri, &dir.join("anonymous"), None, &anonymous),
            )
        })
        .await
        .unwrap()
    };
    for (output, expected) in [
        (
            &wrong,
            "HTTP 403 Forbidden: SignatureDoesNotMatch (the signature is wrong: check AWS_SECRET_ACCESS_KEY)",
        ),
        (
            &anonymous,
            "HTTP 403 Forbidden: AccessDenied (Signature is required; the request was not signed: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        ),
    ] {
        assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
        assert!(stderr(output).contains(expected), "{}", stderr(output));
    }
    for name in ["wrong", "anonymous"] {
        assert_eq!(std::fs::read_dir(dir.join(name)).unwrap().count(), 0);
    }
    std::fs::remove_dir_all(dir).unwrap();
}
