//! `sluice-server bundle` end to end, on the real binary and ONNX Runtime: a
//! bundle of fixture models (one optimized to INT8) is unpacked and served
//! from its `./start` inside a fresh network namespace that has only a
//! loopback interface, with no PATH to any program (so no Python) and no
//! `ORT_DYLIB_PATH`; the test prints the bundle's size, cold start, idle
//! memory and latency. Bad input is refused with no output file, and
//! `--model` finds in a repository the files `serve` reads and no others.
//!
//! `SLUICE_SERVER_BIN` bundles another build, e.g. the release one, whose
//! figures are the ones docs/edge.md gives:
//! `SLUICE_SERVER_BIN=target/release/sluice-server cargo test -p sluice-server --test bundle -- --nocapture`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_server::bundle::models::resolve;

/// Where the namespace script and the system tools it needs are looked up.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-bundle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(name: &str) -> PathBuf {
    common::fixtures().join(name)
}

fn bundle(args: &[&str]) -> Output {
    Command::new(common::server_binary())
        .arg("bundle")
        .args(args)
        .output()
        .expect("run sluice-server bundle")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A system program the namespace test needs, or a failure that says so.
fn tool(name: &str) -> PathBuf {
    SYSTEM_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("the offline bundle test needs `{name}` (in {SYSTEM_PATH}); install it")
        })
}

/// Fails, with the reason, where network namespaces cannot be made.
fn require_network_namespaces() {
    for name in ["unshare", "ip", "curl", "tar", "sha256sum"] {
        tool(name);
    }
    let probe = Command::new(tool("unshare"))
        .args(["--net", "true"])
        .output()
        .expect("run unshare");
    assert!(
        probe.status.success(),
        "the offline bundle test serves inside a fresh network namespace, and `unshare --net` \
         cannot make one here (it needs root or CAP_SYS_ADMIN): {}",
        text(&probe.stderr).trim()
    );
}

fn json_file(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}: {}", path.display(), text(&bytes)))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `VmRSS:   53832 kB` in bytes.
fn rss_bytes(line: &str) -> u64 {
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a VmRSS line: {line}"));
    kib * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The local addresses of the listening sockets in a `/proc/net/tcp*` table, sorted.
fn listeners(table: &str) -> Vec<String> {
    let mut addresses: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(3) == Some(&"0A")).then(|| fields[1].to_string())
        })
        .collect();
    addresses.sort();
    addresses
}

#[test]
fn a_bundle_serves_offline_in_a_network_namespace_without_python() {
    require_network_namespaces();
    let dir = scratch("offline");
    let output = dir.join("edge.tar.gz");
    let mlp = fixture("mlp");
    let iris = format!("flower={}", fixture("iris/1/model.onnx").display());
    let made = bundle(&[
        "--model",
        mlp.to_str().unwrap(),
        "--model",
        &iris,
        "--optimize",
        "int8-dynamic",
        "--output",
        output.to_str().unwrap(),
    ]);
    let listing = text(&made.stdout);
    assert!(made.status.success(), "{}{listing}", text(&made.stderr));
    println!("{listing}");
    assert_eq!(files_in(&dir), ["edge.tar.gz"], "no temporary file is left");
    for line in [
        "model 'mlp': version 1, 2",
        "model 'flower': version 1",
        "not optimized: flower version 1: the model has no MatMul or Gemm node",
        "edge/bin/sluice-server",
        "edge/lib/libonnxruntime.so",
        "wrote ",
    ] {
        assert!(listing.contains(line), "'{line}' missing from:\n{listing}");
    }
    let bundle_bytes = std::fs::metadata(&output).unwrap().len();

    // Unpacked by the system's tar, the files carry their modes and digests.
    let unpacked = dir.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let untar = Command::new(tool("tar"))
        .arg("-xzf")
        .arg(&output)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(untar.status.success(), "{}", text(&untar.stderr));
    let edge = unpacked.join("edge");
    for (file, mode) in [
        ("start", 0o755),
        ("bin/sluice-server", 0o755),
        ("lib/libonnxruntime.so", 0o755),
        ("models/mlp/config.yaml", 0o644),
        ("models/mlp/1/model.onnx", 0o644),
        ("models/mlp/2/model.onnx", 0o644),
        ("models/flower/1/model.onnx", 0o644),
    ] {
        let metadata = std::fs::metadata(edge.join(file))
            .unwrap_or_else(|e| panic!("{file} is not in the bundle: {e}"));
        assert_eq!(metadata.permissions().mode() & 0o777, mode, "{file}");
    }
    assert_eq!(
        files_in(&edge.join("models/mlp/1")),
        ["model.onnx", "optimize.json"],
        "only what serve reads, and the report (no reference.json)"
    );
    let report = json_file(&edge.join("models/mlp/1/optimize.json"));
    assert_eq!(report["mode"], "int8-dynamic");
    assert_eq!(report["output"], "models/mlp/1/model.onnx");
    assert!(!edge.join("models/flower/1/optimize.json").exists());
    let sums = Command::new(tool("sha256sum"))
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&edge)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{}", text(&sums.stdout));

    // Served inside a fresh network namespace, from ./start, with nothing on PATH.
    let empty_path = dir.join("empty-path");
    std::fs::create_dir(&empty_path).unwrap();
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let row: Vec<f32> = (0..16).map(|i| i as f32 / 8.0 - 1.0).collect();
    std::fs::write(
        out.join("mlp.json"),
        common::fp32_request("input", &[1, 16], &row).to_string(),
    )
    .unwrap();
    std::fs::write(
        out.join("flower.json"),
        common::fp32_request("float_input", &[1, 4], &[5.1, 3.5, 1.4, 0.2]).to_string(),
    )
    .unwrap();
    let (http, grpc) = (common::free_port(), common::free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bundle/offline.sh");
    let mut namespace = Command::new(tool("unshare"))
        .args(["--net", "sh"])
        .arg(&script)
        .arg(&edge)
        .arg(&out)
        .arg(&empty_path)
        .args([http.to_string(), grpc.to_string()])
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run unshare");
    let started = Instant::now();
    while !out.join("ready").exists() {
        if let Some(status) = namespace.try_wait().unwrap() {
            let output = namespace.wait_with_output().unwrap();
            panic!(
                "the namespace script ended ({status}) before the checks:\n{}\nserver log:\n{}",
                text(&output.stderr),
                std::fs::read_to_string(out.join("server.log")).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the namespace script did not finish its checks"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server listens in its namespace only: nothing answers on the host.
    for port in [http, grpc] {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err(),
            "port {port} answers outside the namespace"
        );
    }
    std::fs::write(out.join("host-checked"), "").unwrap();
    let finished = namespace.wait_with_output().unwrap();
    let log = read(&out.join("server.log"));
    assert!(
        finished.status.success(),
        "{}\nserver log:\n{log}",
        text(&finished.stderr)
    );

    let links = read(&out.join("links"));
    assert_eq!(
        links
            .lines()
            .map(|l| l.split(':').nth(1).unwrap_or_default().trim())
            .collect::<Vec<_>>(),
        ["lo"],
        "the namespace has a loopback interface only:\n{links}"
    );
    let mut expected = vec![
        format!("0100007F:{http:04X}"),
        format!("0100007F:{grpc:04X}"),
    ];
    expected.sort();
    assert_eq!(
        listeners(&read(&out.join("tcp"))),
        expected,
        "REST and gRPC listen on 127.0.0.1, and nothing else listens"
    );
    assert_eq!(listeners(&read(&out.join("tcp6"))), Vec::<String>::new());
    let maps = read(&out.join("maps"));
    let library = edge.join("lib/libonnxruntime.so");
    assert!(
        !maps.is_empty() && maps.lines().all(|l| l.ends_with(library.to_str().unwrap())),
        "the server maps the bundle's ONNX Runtime only:\n{maps}"
    );
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");

    assert_eq!(read(&out.join("ready_status")), "200");
    let answer = json_file(&out.join("mlp.answer.json"));
    assert_eq!(answer["model_version"], "2", "{answer}");
    assert_eq!(answer["outputs"][0]["name"], "logits", "{answer}");
    assert_eq!(
        answer["outputs"][0]["shape"],
        serde_json::json!([1, 4]),
        "{answer}"
    );
    assert_eq!(answer["outputs"][0]["data"].as_array().unwrap().len(), 4);
    let answer = json_file(&out.join("flower.answer.json"));
    let shapes: Vec<(String, serde_json::Value)> = answer["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|o| (o["name"].as_str().unwrap().to_string(), o["shape"].clone()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("label".to_string(), serde_json::json!([1])),
            ("probabilities".to_string(), serde_json::json!([1, 3]))
        ]
    );

    let mut latencies: Vec<f64> = Vec::new();
    let mut connects = 0;
    for line in read(&out.join("latencies")).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], "200", "{line}");
        connects += fields[1].parse::<u32>().unwrap();
        latencies.push(fields[2].parse::<f64>().unwrap() * 1e3);
    }
    assert_eq!(latencies.len(), 200);
    assert_eq!(connects, 1, "one keep-alive connection");
    latencies.sort_by(f64::total_cmp);
    let cold_start_ms = read(&out.join("cold_start_us"))
        .trim()
        .parse::<f64>()
        .unwrap()
        / 1e3;
    let idle = rss_bytes(&read(&out.join("rss_idle")));
    let after = rss_bytes(&read(&out.join("rss_after")));
    println!(
        "bundle of {} (mlp versions 1 and 2 as INT8, iris):",
        common::server_binary().display()
    );
    println!(
        "  bundle size             {:>8.1} MiB ({bundle_bytes} bytes)",
        mib(bundle_bytes)
    );
    println!(
        "  cold start              {cold_start_ms:>8.0} ms   (./start to the first ready answer)"
    );
    println!(
        "  idle RSS                {:>8.1} MiB   (ready, warmed up, no request yet)",
        mib(idle)
    );
    println!("  RSS after 200 requests  {:>8.1} MiB", mib(after));
    println!(
        "  latency at 1 row        {:>8.3} ms p50, {:.3} ms p99   (200 requests, one keep-alive connection, curl)",
        latencies[100], latencies[197]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_refused_with_no_output_file() {
    let dir = scratch("refusals");
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let notes = dir.join("notes.onnx");
    std::fs::write(&notes, "these are notes, not a model\n").unwrap();
    let outside = dir.join("outside/fraud");
    std::fs::create_dir_all(outside.join("1")).unwrap();
    std::fs::copy(fixture("mlp/1/model.onnx"), outside.join("1/model.onnx")).unwrap();
    std::fs::write(
        outside.join("config.yaml"),
        "monitoring:\n  profile: ../profile.json\n",
    )
    .unwrap();
    let output = out.join("edge.tar.gz");
    let output = output.to_str().unwrap();
    let mlp = fixture("mlp");
    let mlp = mlp.to_str().unwrap();
    let missing = dir.join("missing.onnx");
    let broken = fixture("broken");
    let unwritable = dir.join("no/such/folder/edge.tar.gz");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--model", notes.to_str().unwrap(), "--output", output],
            format!("{} is not a valid ONNX model", notes.display()),
        ),
        (
            vec!["--model", broken.to_str().unwrap(), "--output", output],
            "broken/1/model.onnx is not a valid ONNX model".into(),
        ),
        (
            vec!["--model", missing.to_str().unwrap(), "--output", output],
            format!(
                "--model {}: {}: No such file or directory",
                missing.display(),
                missing.display()
            ),
        ),
        (
            vec!["--model", "ftp://models/fraud.onnx", "--output", output],
            "--model ftp://models/fraud.onnx: unsupported storage URI".into(),
        ),
        (
            vec!["--model", mlp, "--model", mlp, "--output", output],
            "two models are named 'mlp'".into(),
        ),
        (
            vec!["--model", outside.to_str().unwrap(), "--output", output],
            "monitoring.profile '../profile.json' is not a path inside the model's folder".into(),
        ),
        (
            vec!["--model", mlp, "--output", unwritable.to_str().unwrap()],
            "cannot write the bundle".into(),
        ),
        (
            vec!["--model", mlp, "--output", out.to_str().unwrap()],
            "is a folder".into(),
        ),
    ];
    for (args, message) in cases {
        let refused = bundle(&args);
        let stderr = text(&refused.stderr);
        assert!(!refused.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(&message),
            "{args:?}: '{message}' not in: {stderr}"
        );
        assert_eq!(files_in(&out), Vec::<String>::new(), "{args:?} left a file");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_repository_packs_the_files_serve_reads_and_no_others() {
    let dir = scratch("repository");
    let repository = dir.join("models");
    std::fs::create_dir_all(&repository).unwrap();
    for model in ["cancer", "mlp"] {
        let copied = Command::new("cp")
            .arg("-r")
            .arg(fixture(model))
            .arg(repository.join(model))
            .status()
            .unwrap();
        assert!(copied.success());
    }
    // `serve` ignores a file and a folder without versions: so does the bundle.
    std::fs::write(repository.join("README"), "not a model").unwrap();
    std::fs::create_dir(repository.join("drafts")).unwrap();
    let file = dir.join("fraud/3/model.onnx");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::copy(fixture("iris/1/model.onnx"), &file).unwrap();

    let specs = [
        repository.display().to_string(),
        file.display().to_string(),
        format!("flower=file://{}", fixture("iris/1/model.onnx").display()),
    ];
    let models = resolve(&specs, &dir.join("downloads"), Duration::from_secs(5)).unwrap();
    let found: Vec<(&str, Vec<u64>, Vec<&str>)> = models
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.versions.keys().copied().collect(),
                m.files.keys().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("cancer", vec![1], vec!["config.yaml", "profile.json"]),
            ("mlp", vec![1, 2], vec!["config.yaml"]),
            ("fraud", vec![1], vec![]),
            ("flower", vec![1], vec![]),
        ],
        "training data (train.csv) and references stay behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
