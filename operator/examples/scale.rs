//! `make scale-operator`: the operator binary against a real kube-apiserver and etcd
//! with 200 InferenceServices. Prints its memory, the reconcile p50 (from its own
//! histogram) and the API writes per no-op reconcile. Figures, not assertions.
//!
//! `SLUICE_SCALE_COUNT` changes the number of InferenceServices.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sluice_operator::crd::InferenceService;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::var("SLUICE_SCALE_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let server = support::ApiServer::start();
    let client = server.client().await;
    support::install_crds(&client).await;
    let ns = "scale";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;

    let binary = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("sluice-operator");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut operator = Command::new(&binary)
        .env("KUBECONFIG", &server.kubeconfig)
        .env("RUST_LOG", "error")
        .args([
            "--leader-elect=false",
            &format!("--metrics-addr=127.0.0.1:{port}"),
        ])
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "starting {}: {e} (cargo build --release -p sluice-operator)",
                binary.display()
            )
        })?;
    let pid = operator.id();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let idle_rss = {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_kib(pid, "VmRSS")
    };

    let api: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let isvc: InferenceService = serde_json::from_value(json!({
                    "apiVersion": "serving.sluice.dev/v1alpha1", "kind": "InferenceService",
                    "metadata": {"name": format!("model-{i:03}")},
                    "spec": {"model": {"storageUri": format!("s3://models/m{i}/1/model.onnx")}},
                }))?;
                api.create(&PostParams::default(), &isvc).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    loop {
        let done = api
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|i| i.status.as_ref().is_some_and(|s| s.revision.is_some()))
            .count();
        if done == count {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "only {done}/{count} reconciled"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let converged = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = scrape(&metrics_url).await?;

    // Every InferenceService is poked (an annotation: a reconcile with nothing to do).
    for i in 0..count {
        api.patch(
            &format!("model-{i:03}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sluice.dev/poke": "1"}}})),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = scrape(&metrics_url).await?;
    let rss = rss_kib(pid, "VmRSS");
    let peak = rss_kib(pid, "VmHWM");
    let _ = operator.kill();
    let _ = operator.wait();

    let noop_reconciles = after.reconciles - before.reconciles;
    let noop_writes = after.writes - before.writes;
    println!(
        "sluice-operator with {count} InferenceServices (real kube-apiserver + etcd, no pods):"
    );
    println!(
        "  all {count} reconciled (objects applied, status written) in {:.1}s",
        converged.as_secs_f64()
    );
    println!(
        "  memory: {:.1} MiB RSS idle, {:.1} MiB RSS after, {:.1} MiB peak",
        idle_rss / 1024.0,
        rss / 1024.0,
        peak / 1024.0
    );
    println!(
        "  reconcile duration p50 {:.1} ms, p90 {:.1} ms over {} reconciles",
        after.quantile(0.5) * 1000.0,
        after.quantile(0.9) * 1000.0,
        after.reconciles
    );
    println!(
        "  no-op reconciles: {noop_reconciles}, API writes during them: {noop_writes} ({:.2} per reconcile)",
        noop_writes as f64 / noop_reconciles.max(1) as f64
    );
    Ok(())
}

fn rss_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

/// The operator's counters and reconcile-duration histogram.
struct Scrape {
    reconciles: u64,
    writes: u64,
    buckets: Vec<(f64, f64)>,
}

impl Scrape {
    /// Quantile by linear interpolation inside the histogram bucket.
    fn quantile(&self, q: f64) -> f64 {
        let total = self.buckets.last().map(|b| b.1).unwrap_or(0.0);
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return prev.0;
                }
                let span = (count - prev.1).max(1.0);
                return prev.0 + (le - prev.0) * (rank - prev.1) / span;
            }
            prev = (le, count);
        }
        prev.0
    }
}

async fn scrape(url: &str) -> anyhow::Result<Scrape> {
    let text = reqwest::get(url).await?.text().await?;
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut scrape = Scrape {
        reconciles: 0,
        writes: 0,
        buckets: Vec::new(),
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if line.starts_with("sluice_operator_reconciliations_total") {
            scrape.reconciles = value(line) as u64;
        } else if line.starts_with("sluice_operator_api_writes_total") {
            scrape.writes += value(line) as u64;
        } else if let Some(rest) =
            line.strip_prefix("sluice_operator_reconcile_duration_seconds_bucket{le=\"")
        {
            let le = rest.split('"').next().unwrap_or("+Inf");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            scrape.buckets.push((le, value(line)));
        }
    }
    Ok(scrape)
}
