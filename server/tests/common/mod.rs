//! Starting real `sluice-server` processes on temporary model repositories built
//! from the generated fixtures (`make deps` generates them).

#![allow(dead_code)] // each test file uses its own part of this module

pub mod kafka;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The generated fixture repository.
pub fn fixtures() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models");
    assert!(
        dir.join("mlp/1/model.onnx").exists(),
        "run `make deps` to generate {}",
        dir.display()
    );
    dir
}

/// A fresh, empty folder `sluice-<prefix>-<pid>-<n>` under the temporary
/// directory, its own for each call: the tests of one binary run in parallel in
/// one process, so the process id alone would give them the same folder.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let n = MADE.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("sluice-{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A temporary model repository.
pub struct Repository {
    pub dir: PathBuf,
}

impl Repository {
    /// An empty repository in a fresh temporary folder.
    pub fn new(name: &str) -> Repository {
        Repository {
            dir: scratch_dir(&format!("test-{name}")),
        }
    }

    /// Adds fixture model `fixture` version 1 as `name` with `config` as its config.yaml.
    pub fn with_model(self, name: &str, fixture: &str, config: &str) -> Repository {
        let target = self.dir.join(name).join("1");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::copy(
            fixtures().join(fixture).join("1/model.onnx"),
            target.join("model.onnx"),
        )
        .unwrap();
        std::fs::write(self.dir.join(name).join("config.yaml"), config).unwrap();
        self
    }

    /// Adds fixture model `fixture` as the fallback of model `name`, where the
    /// operator puts it: `<name>/fallback/model.onnx`.
    pub fn with_fallback(self, name: &str, fixture: &str) -> Repository {
        let target = self.dir.join(name).join("fallback");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::copy(
            fixtures().join(fixture).join("1/model.onnx"),
            target.join("model.onnx"),
        )
        .unwrap();
        self
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port no process on this machine listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server under test: `SLUICE_SERVER_BIN` when set (to run these tests
/// against another build, as the Python tests allow), else this package's binary.
pub fn server_binary() -> PathBuf {
    std::env::var_os("SLUICE_SERVER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_sluice-server")),
        PathBuf::from,
    )
}

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    pub http: String,
    pub grpc: String,
    log: PathBuf,
}

impl Server {
    /// Starts the server on `repository` and waits until it is ready.
    pub async fn start(repository: &Path, extra: &[&str]) -> Server {
        Server::start_with(
            repository,
            extra,
            "http://127.0.0.1",
            &reqwest::Client::new(),
        )
        .await
    }

    /// Starts the server, reaching it at `base` (e.g. `https://localhost`) with
    /// `client` (which may carry a CA and client certificate) to wait until it is ready.
    pub async fn start_with(
        repository: &Path,
        extra: &[&str],
        base: &str,
        client: &reqwest::Client,
    ) -> Server {
        let (http_port, grpc_port) = (free_port(), free_port());
        let log = repository.with_extension(format!("{http_port}.log"));
        let child = Command::new(server_binary())
            .args(["serve", "--host", "127.0.0.1", "--model-repository"])
            .arg(repository)
            .args([
                "--http-port",
                &http_port.to_string(),
                "--grpc-port",
                &grpc_port.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sluice-server");
        let server = Server {
            child,
            http: format!("{base}:{http_port}"),
            grpc: format!("{base}:{grpc_port}"),
            log,
        };
        server.wait_ready(client).await;
        server
    }

    async fn wait_ready(&self, client: &reqwest::Client) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(response) = client
                .get(format!("{}/v2/health/ready", self.http))
                .send()
                .await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server never became ready:\n{}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "server did not exit within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A JSON inference request for one FP32 input.
pub fn fp32_request(input: &str, shape: &[i64], data: &[f32]) -> serde_json::Value {
    serde_json::json!({"inputs": [{"name": input, "datatype": "FP32", "shape": shape, "data": data}]})
}

/// Posts an inference request and returns the status and JSON body.
pub async fn infer(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The server's `/metrics` text.
pub async fn metrics_text(client: &reqwest::Client, server: &Server) -> String {
    client
        .get(format!("{}/metrics", server.http))
        .send()
        .await
        .expect("metrics request sent")
        .text()
        .await
        .expect("metrics text")
}

/// Posts all `bodies` to `url` at once; answers in the same order.
pub async fn infer_concurrently(
    client: &reqwest::Client,
    url: &str,
    bodies: Vec<serde_json::Value>,
) -> Vec<(u16, serde_json::Value)> {
    let requests = bodies.into_iter().map(|body| {
        let client = client.clone();
        let url = url.to_string();
        async move { infer(&client, &url, &body).await }
    });
    futures::future::join_all(requests).await
}

/// Writes `text` to the file `name` in `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A CA and certificates it signs, written as PEM files.
pub struct Pki {
    /// The CA certificate.
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA called `name`.
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `name` and its key, as PEM.
    pub fn issue(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A client that trusts only `ca`, presenting `identity` (certificate, key) if given.
pub fn https_client(ca: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// A gRPC inference request of one FP32 row of `input` (shape `[1, len]`),
/// sent as raw little-endian contents.
pub fn grpc_fp32_row(model: &str, row: &[f32]) -> sluice_server::wire::grpc::pb::ModelInferRequest {
    use sluice_server::wire::grpc::pb;
    pb::ModelInferRequest {
        model_name: model.to_string(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".to_string(),
            datatype: "FP32".to_string(),
            shape: vec![1, row.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![row.iter().flat_map(|v| v.to_le_bytes()).collect()],
        ..Default::default()
    }
}
