//! Real `sluice-server` and Prometheus processes for the tests that read metrics
//! through Prometheus (rollout analysis, autoscaler signals).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, k8s_bins, repo_root};

/// A child process, killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The release `sluice-server` (`make build`); `SLUICE_SERVER_BIN` overrides it.
fn server_bin() -> PathBuf {
    let bin = std::env::var_os("SLUICE_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/sluice-server"));
    assert!(bin.exists(), "{} missing: run `make build`", bin.display());
    bin
}

/// A `sluice-server` on free ports serving the model repository `repository`,
/// labelled as the operator labels it (`isvc`, `revision`), its log in `log`.
/// Returns the process and its HTTP port.
pub fn sluice_server(repository: &Path, isvc: &str, revision: &str, log: &Path) -> (Killed, u16) {
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(server_bin())
        .args(["serve", "--host", "127.0.0.1", "--model-repository"])
        .arg(repository)
        .args(["--http-port", &http.to_string()])
        .args(["--grpc-port", &grpc.to_string()])
        .env("SLUICE_ISVC", isvc)
        .env("SLUICE_REVISION", revision)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    (Killed(child), http)
}

/// A Prometheus (the cluster harness's cached binary) in `dir` scraping the local
/// `ports` every second and adding the `namespace` label that pod discovery adds
/// in a cluster. Returns once it is ready, with its port.
pub async fn prometheus(dir: &Path, ports: &[u16], namespace: &str) -> (Killed, u16) {
    let targets: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: sluice\n  \
               fallback_scrape_protocol: PrometheusText0.0.4\n  \
               static_configs:\n  \
               - targets: [{}]\n    \
                 labels: {{namespace: {namespace}}}\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(k8s_bins().join("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let prometheus = Killed(child);
    wait_ok(&format!("http://127.0.0.1:{port}/-/ready")).await;
    (prometheus, port)
}

/// Waits up to a minute for `url` to answer 200.
pub async fn wait_ok(url: &str) {
    let client = reqwest::Client::new();
    wait_until(url, Duration::from_secs(60), || async {
        let response = client.get(url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await
}

/// Polls `check` every 250 ms until it gives a value, failing after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
