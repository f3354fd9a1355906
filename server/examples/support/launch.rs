//! Starting sluice-server processes on ports picked at run time, for the
//! benchmarks that start several (the machine is shared: fixed ports may be
//! taken), and the median of their rounds. Included with `#[path]` beside
//! `mod support;` by the benchmarks that use it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::support::{Server, free_ports, sluice_serve};

/// A server on `http_port`, or `None` if it exited before it was ready (a
/// port taken in the meantime).
async fn start(
    binary: &Path,
    repository: &Path,
    (http_port, grpc_port): (u16, u16),
    flags: &[String],
) -> anyhow::Result<Option<Server>> {
    let child = sluice_serve(binary, repository, http_port, grpc_port)
        .args(flags)
        .spawn()
        .context("start sluice-server")?;
    let mut server = Server(child);
    let client = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if server.0.try_wait()?.is_some() {
            return Ok(None);
        }
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{http_port}/v2/health/ready"))
            .send()
            .await
            && response.status().is_success()
        {
            return Ok(Some(server));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the server on port {http_port} never became ready")
}

/// A fresh, ready server with `flags` and its REST port, trying new ports if
/// one was taken; `name` names it in the error.
pub async fn launch(
    binary: &Path,
    repository: &Path,
    flags: &[String],
    name: &str,
) -> anyhow::Result<(Server, u16)> {
    for _ in 0..3 {
        let [http_port, grpc_port] = free_ports()?;
        if let Some(server) = start(binary, repository, (http_port, grpc_port), flags).await? {
            return Ok((server, http_port));
        }
    }
    anyhow::bail!("the '{name}' server exited before it was ready, three times")
}

/// The median of `values` (which it sorts).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A model repository in the temporary folder, named after `bench`, serving the mlp
/// fixture with batches of up to 64 and one intra-op thread; the caller removes it.
pub fn mlp_repository(bench: &str) -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("server/fixtures/models/mlp/1/model.onnx");
    anyhow::ensure!(
        model.exists(),
        "run `make deps` first: {} is missing",
        model.display()
    );
    let repository = std::env::temp_dir().join(format!("sluice-{bench}-{}", std::process::id()));
    std::fs::create_dir_all(repository.join("mlp/1"))?;
    std::fs::copy(&model, repository.join("mlp/1/model.onnx"))?;
    std::fs::write(
        repository.join("mlp/config.yaml"),
        "max_batch_size: 64\nintra_op_threads: 1\n",
    )?;
    Ok(repository)
}
