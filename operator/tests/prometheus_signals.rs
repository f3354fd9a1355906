//! The autoscaler's signals against a real Prometheus scraping a real `sluice-server`
//! (the fixture MLP): idle pods read 0 requests/s rather than missing, a steady load
//! reads back as its rate, the CPU and queue-depth signals come from the server's own
//! series, and a service Prometheus does not know (or a Prometheus that does not
//! answer) gives missing data, which the decision turns into a hold.
//!
//! Needs `target/release/sluice-server` (`make build`; `SLUICE_SERVER_BIN`
//! overrides), the fixture models (`make deps`) and the cached Prometheus that
//! `e2e/cluster/build-bins.sh` builds.

#[path = "support/processes.rs"]
mod processes;
#[allow(dead_code)]
mod support;

use std::time::Duration;

use jiff::Timestamp;
use processes::{sluice_server, wait_until};
use sluice_operator::autoscale::decision::{self, Input, Signals};
use sluice_operator::autoscale::signals::{self, PodKind};
use sluice_operator::crd::autoscaling::Signal;
use sluice_operator::crd::{AutoscalingMode, AutoscalingSpec, AutoscalingStatus};
use support::free_port;

/// A spec with 1 s scrapes in mind: 3 s rates, a 60 s peak window, a 10 s CPU window.
fn spec() -> AutoscalingSpec {
    serde_saphyr::from_str(
        "{throughputPerReplica: 10, rateWindowSeconds: 3, peakWindowSeconds: 60, \
          burst: {threshold: 0}, scaleUp: {maxReplicas: 100}, \
          triggers: {cpuWindowSeconds: 10}}",
    )
    .unwrap()
}

fn decide(signals: &Signals, current: i32) -> AutoscalingStatus {
    let spec = spec();
    decision::decide(&Input {
        spec: &spec,
        min_replicas: 2,
        max_replicas: Some(50),
        cpu_request_cores: Some(0.5),
        gpu: false,
        streaming: false,
        current,
        previous: None,
        signals,
        now: Timestamp::now(),
    })
}

#[tokio::test]
#[ignore = "needs Prometheus and the release sluice-server: run by `make test-operator`"]
async fn signals_from_a_real_prometheus_scraping_a_real_server() {
    let repo = support::repo_root();
    let models = repo.join("server/fixtures/models");
    assert!(
        models.join("mlp/1/model.onnx").exists(),
        "fixture models missing: run `make deps`"
    );
    let dir = std::env::temp_dir().join(format!("sluice-signals-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // One model server, labelled as the operator labels it.
    let repository = dir.join("models");
    std::fs::create_dir_all(&repository).unwrap();
    std::os::unix::fs::symlink(models.join("mlp"), repository.join("mlp")).unwrap();
    let (_server, http) = sluice_server(&repository, "fraud", "abc12", &dir.join("server.log"));
    // Prometheus scraping it every second, adding the `namespace` label that pod
    // discovery adds in a cluster.
    let (_prometheus, prom_port) = processes::prometheus(&dir, &[http], "ml").await;

    let http_client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http}");
    wait_until(
        "the server to be ready",
        Duration::from_secs(30),
        || async {
            let r = http_client
                .get(format!("{base}/v2/models/mlp/ready"))
                .send()
                .await;
            r.ok()?.status().is_success().then_some(())
        },
    )
    .await;
    let client =
        sluice_operator::prometheus::client(&format!("http://127.0.0.1:{prom_port}")).unwrap();
    let spec = spec();
    let queries = signals::queries("ml", "fraud", &spec, &[], PodKind::default());

    // Idle: scraped pods that served nothing read 0 requests/s, not missing.
    let idle = wait_until(
        "Prometheus to scrape the server",
        Duration::from_secs(60),
        || async {
            let s = signals::read(&client, &queries).await;
            (s.peak_rps.is_some() && s.queue_depth_per_pod.is_some()).then_some(s)
        },
    )
    .await;
    assert_eq!(idle.peak_rps, Some(0.0), "{idle:?}");
    assert_eq!(idle.latest_rps, Some(0.0), "{idle:?}");
    assert_eq!(idle.queue_depth_per_pod, Some(0.0), "{idle:?}");
    let at_floor = decide(&idle, 2);
    assert_eq!(at_floor.desired_replicas, 2, "{}", at_floor.reason);

    // A steady 40 requests/s for 8 s.
    let body = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [1, 16], "data": vec![0.5f32; 16]}]});
    let url = format!("{base}/v2/models/mlp/infer");
    let mut ticker = tokio::time::interval(Duration::from_millis(25));
    let mut sent = Vec::new();
    for _ in 0..320 {
        ticker.tick().await;
        let (c, url, body) = (http_client.clone(), url.clone(), body.clone());
        sent.push(tokio::spawn(async move {
            c.post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().is_success())
        }));
    }
    for r in sent {
        assert!(r.await.unwrap().unwrap(), "an inference failed");
    }
    // Two more scrapes, so the last rate window is inside the load's tail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let loaded = signals::read(&client, &queries).await;
    eprintln!("signals after 8 s at 40 req/s: {loaded:?}");
    let peak = loaded.peak_rps.expect("peak request rate");
    assert!(
        (28.0..=56.0).contains(&peak),
        "peak {peak} req/s, offered 40"
    );
    // The CPU signal is the lowest over its 10 s window, which reaches back before
    // the load (and this load costs the MLP next to nothing), so only its presence
    // is certain; the series behind it must carry the server's CPU time.
    let cpu = loaded
        .cpu_cores_per_pod
        .expect("CPU from process_cpu_seconds_total");
    assert!((0.0..16.0).contains(&cpu), "CPU {cpu} cores");
    let cpu_seconds = client
        .query(r#"sum(process_cpu_seconds_total{namespace="ml",isvc="fraud",revision="abc12"})"#)
        .get()
        .await
        .unwrap();
    let cpu_seconds = cpu_seconds.data().as_vector().unwrap()[0].sample().value();
    assert!(cpu_seconds > 0.0, "the server used no CPU time?");
    assert!(loaded.queue_depth_per_pod.is_some());

    // The decision on what Prometheus said: ceil(peak x 1.5 / 10).
    let decided = decide(&loaded, 2);
    let want = ((peak * 1.5 / 10.0) - 1e-9).ceil() as i32;
    assert_eq!(decided.desired_replicas, want.max(2), "{}", decided.reason);
    assert_eq!(decided.mode, AutoscalingMode::Sluice);

    // A service Prometheus has no series for: every signal is missing, so hold.
    let unknown = signals::read(
        &client,
        &signals::queries("ml", "other", &spec, &[], PodKind::default()),
    )
    .await;
    assert_eq!(unknown, Signals::default());
    let held = decide(&unknown, 7);
    assert_eq!(
        (held.desired_replicas, held.signal),
        (7, Signal::MissingData)
    );

    // A Prometheus that does not answer: missing too.
    let down =
        sluice_operator::prometheus::client(&format!("http://127.0.0.1:{}", free_port())).unwrap();
    assert_eq!(signals::read(&down, &queries).await, Signals::default());
    let _ = std::fs::remove_dir_all(&dir);
}
