//! Rollout analysis against a real Prometheus scraping real `sluice-server`
//! processes: a stable revision serving `mlp` and a new revision serving the `faulty`
//! fixture (500 on real rows), both under real traffic. The built-in checks must fail
//! the faulty revision on its error rate, pass the healthy one, find a revision that
//! served nothing while stable served starved (no data of its own kind), and hold
//! (Error) once Prometheus is gone. The prediction-agreement check must pass a
//! retrained model (`mlp` version 2) and fail one that answers fast and without
//! errors but wrongly (`inverted`). The quality check must wait for labels, then
//! pass a canary as accurate as stable and fail one whose labels say it is wrong.
//!
//! Needs `make build` (the release `sluice-server` and the fixture models) and the
//! cached Prometheus binary of `e2e/cluster/build-bins.sh`.

// Only the repository helpers of the shared support module are used here.
#[path = "support/processes.rs"]
mod processes;
#[allow(dead_code)]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use processes::{Killed, sluice_server, wait_ok};
use sluice_operator::crd::rollout::CheckVerdict;
use sluice_operator::crd::rollout::{AnalysisSpec, PredictionAgreementSpec, QualitySpec};
use sluice_operator::rollout::analysis::{self, Target};
use sluice_operator::rollout::prometheus;
use support::repo_root;

/// The analysis target of a canary `revision` of `roll` in `ns` against `stable`.
fn canary(revision: &str) -> Target<'_> {
    Target {
        isvc: "roll",
        namespace: "ns",
        revision,
        stable: "stable",
        stable_offset_seconds: None,
        role: "canary",
        streaming: false,
    }
}

/// A sluice-server serving `model` (a fixture `name/version`) as `roll`, labelled
/// `revision`.
fn server(dir: &Path, model: &str, revision: &str) -> (Killed, u16) {
    let models = dir.join(revision);
    std::fs::create_dir_all(models.join("roll/1")).unwrap();
    std::fs::copy(
        repo_root().join(format!("server/fixtures/models/{model}/model.onnx")),
        models.join("roll/1/model.onnx"),
    )
    .expect("fixture models missing: run `make build`");
    sluice_server(
        &models,
        "roll",
        revision,
        &dir.join(format!("{revision}.log")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus and the release sluice-server: run by `make test-operator`"]
async fn analysis_against_real_prometheus_and_servers() {
    let dir = std::env::temp_dir().join(format!("sluice-analysis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (_stable, stable_port) = server(&dir, "mlp/1", "stable");
    let (_faulty, faulty_port) = server(&dir, "faulty/1", "faulty");
    let (prom, prom_port) = processes::prometheus(&dir, &[stable_port, faulty_port], "ns").await;
    let http = reqwest::Client::new();
    for port in [stable_port, faulty_port] {
        wait_ok(&format!("http://127.0.0.1:{port}/v2/models/roll/ready")).await;
    }

    // Real rows (not all zeros) to both revisions, 20 per second each, for 8 s.
    let body = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16],
        "data": (0..16).map(|i| (i as f32 - 7.5) / 4.0).collect::<Vec<_>>()}]});
    let started = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    while started.elapsed() < Duration::from_secs(8) {
        for port in [stable_port, faulty_port] {
            let status = http
                .post(format!("http://127.0.0.1:{port}/v2/models/roll/infer"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status();
            if status.is_success() {
                ok += 1
            } else {
                failed += 1
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ok > 50 && failed > 50,
        "stable answers, faulty fails ({ok} ok, {failed} failed)"
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // a last scrape

    // At most 160 rows each, fewer in Prometheus's first scrapes: the agreement
    // check (stable against itself) needs fewer.
    let spec = AnalysisSpec {
        window_seconds: 15,
        prediction_agreement: PredictionAgreementSpec {
            min_rows: 30,
            ..PredictionAgreementSpec::default()
        },
        ..AnalysisSpec::default()
    };
    let client =
        sluice_operator::prometheus::client(&format!("http://127.0.0.1:{prom_port}")).unwrap();
    let analyse = |revision: &'static str| {
        let plan = analysis::plan(&spec, &canary(revision), None);
        let client = client.clone();
        async move { prometheus::run(Some(&client), &plan).await }
    };

    let faulty = analyse("faulty").await;
    assert_eq!(faulty.verdict, CheckVerdict::Fail, "{}", faulty.summary());
    let errors = &faulty.checks[0];
    assert_eq!(
        (errors.name.as_str(), errors.verdict),
        ("error-rate", CheckVerdict::Fail)
    );
    assert_eq!(errors.value, Some(1.0), "every real row failed");

    let healthy = analyse("stable").await;
    assert_eq!(healthy.verdict, CheckVerdict::Pass, "{}", healthy.summary());
    assert_eq!(healthy.checks[0].value, Some(0.0));
    assert!(
        healthy.checks[1]
            .value
            .is_some_and(|p99| p99 > 0.0 && p99 < 1.0)
    );

    let silent = analyse("never-served").await;
    assert_eq!(silent.verdict, CheckVerdict::NoData, "{}", silent.summary());
    assert!(
        silent
            .starvation()
            .is_some_and(|why| why.starts_with("the canary received 0 of ")),
        "a revision that served nothing while stable served is starved: {}",
        silent.summary()
    );

    drop(prom);
    let down = analyse("faulty").await;
    assert_eq!(down.verdict, CheckVerdict::Error, "{}", down.summary());
    assert!(
        down.failing().contains("Prometheus query failed"),
        "{}",
        down.failing()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model repository laid out as the operator's pods see it for the
/// `monitoring` build fixture: the `cancer` fixture as `roll` version 1, its
/// reference profile where `fetch-profile` puts it, and the `config.yaml` that
/// `build` generates for the revision.
fn monitored_repository(dir: &Path, name: &str) -> std::path::PathBuf {
    let fixture = repo_root().join("server/fixtures/models/cancer");
    let isvc: sluice_operator::crd::InferenceService = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_root().join("operator/tests/fixtures/build/monitoring.yaml"))
            .unwrap(),
    )
    .unwrap();
    let desired = sluice_operator::build::build(
        &isvc,
        &sluice_operator::config::BuildConfig::default(),
        &sluice_operator::build::Layout::alone(1),
    )
    .unwrap();
    let models = dir.join(name);
    let model = models.join("roll");
    std::fs::create_dir_all(model.join("1")).unwrap();
    std::fs::create_dir_all(model.join(sluice_operator::build::PROFILE_DIR)).unwrap();
    std::fs::copy(fixture.join("1/model.onnx"), model.join("1/model.onnx")).unwrap();
    std::fs::copy(
        fixture.join("profile.json"),
        model
            .join(sluice_operator::build::PROFILE_DIR)
            .join(sluice_operator::build::PROFILE_FILE),
    )
    .expect("the cancer profile is missing: run `make build`");
    std::fs::write(
        model.join("config.yaml"),
        &desired.config_map.data.unwrap()["config.yaml"],
    )
    .unwrap();
    models
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus and the release sluice-server: run by `make test-operator`"]
async fn the_drift_check_reads_what_an_operator_configured_server_exports() {
    let dir = std::env::temp_dir().join(format!("sluice-drift-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (_server, port) = sluice_server(
        &monitored_repository(&dir, "monitored"),
        "roll",
        "monitored",
        &dir.join("monitored.log"),
    );
    let (_prom, prom_port) = processes::prometheus(&dir, &[port], "ns").await;
    wait_ok(&format!("http://127.0.0.1:{port}/v2/models/roll/ready")).await;

    // The holdout rows of the cancer fixture, 10 per request: more than the
    // fixture's minRows (50).
    let rows: Vec<Vec<f32>> = cancer_holdout().into_iter().map(|(row, _)| row).collect();
    let http = reqwest::Client::new();
    for chunk in rows.chunks(10) {
        let body = serde_json::json!({"inputs": [{"name": "float_input", "datatype": "FP32",
            "shape": [chunk.len(), chunk[0].len()], "data": chunk}]});
        let response = http
            .post(format!("http://127.0.0.1:{port}/v2/models/roll/infer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }

    let spec = AnalysisSpec {
        window_seconds: 15,
        max_drift_score: Some(0.5),
        ..AnalysisSpec::default()
    };
    let client =
        sluice_operator::prometheus::client(&format!("http://127.0.0.1:{prom_port}")).unwrap();
    let plan = analysis::plan(&spec, &canary("monitored"), None);
    let started = Instant::now();
    let drift = loop {
        let result = prometheus::run(Some(&client), &plan).await;
        let drift = result
            .checks
            .into_iter()
            .find(|c| c.name == "drift")
            .unwrap();
        if drift.verdict != CheckVerdict::NoData || started.elapsed() > Duration::from_secs(20) {
            break drift;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        drift.verdict,
        CheckVerdict::Pass,
        "holdout rows of the training distribution pass the drift check: {drift:?}"
    );
    assert!(drift.value.is_some_and(|v| v > 0.0 && v < 0.5), "{drift:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until Prometheus has scraped all `servers`: rows answered before its
/// first scrape of a server are not in that server's `increase()`.
async fn scraped(client: &prometheus_http_query::Client, servers: usize) {
    let started = Instant::now();
    while client
        .query(format!("count(up == 1) == {servers}"))
        .get()
        .await
        .map_or(true, |r| r.data().as_vector().is_none_or(|v| v.is_empty()))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Prometheus scrapes every server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The cancer fixture's holdout rows and their true classes.
fn cancer_holdout() -> Vec<(Vec<f32>, i64)> {
    let holdout =
        std::fs::read_to_string(repo_root().join("server/fixtures/models/cancer/holdout.csv"))
            .unwrap();
    holdout
        .lines()
        .skip(1)
        .map(|line| {
            let mut values: Vec<f32> = line.split(',').map(|v| v.parse().unwrap()).collect();
            let target = values.pop().unwrap() as i64;
            (values, target)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus and the release sluice-server: run by `make test-operator`"]
async fn the_quality_check_waits_for_labels_then_compares_accuracy_with_stable() {
    let dir = std::env::temp_dir().join(format!("sluice-quality-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Three revisions on the operator-generated config (feedback: label,
    // classification): stable, a canary whose labels agree with it, and one whose
    // labels say it is wrong on most rows.
    let revisions = ["stable", "good", "wrong"];
    let mut servers = Vec::new();
    for revision in revisions {
        let repository = monitored_repository(&dir, revision);
        servers.push(sluice_server(
            &repository,
            "roll",
            revision,
            &dir.join(format!("{revision}.log")),
        ));
    }
    let ports: Vec<u16> = servers.iter().map(|(_, port)| *port).collect();
    let (_prom, prom_port) = processes::prometheus(&dir, &ports, "ns").await;
    for port in &ports {
        wait_ok(&format!("http://127.0.0.1:{port}/v2/models/roll/ready")).await;
    }
    let client =
        sluice_operator::prometheus::client(&format!("http://127.0.0.1:{prom_port}")).unwrap();
    let spec = AnalysisSpec {
        window_seconds: 15,
        quality: QualitySpec {
            window_seconds: 60,
            ..QualitySpec::default()
        },
        ..AnalysisSpec::default()
    };
    let quality = |revision: &'static str| {
        let plan = analysis::plan(
            &spec,
            &canary(revision),
            Some(sluice_operator::crd::FeedbackTask::Classification),
        );
        let client = client.clone();
        async move {
            prometheus::run(Some(&client), &plan)
                .await
                .checks
                .into_iter()
                .find(|c| c.name == "accuracy-vs-stable")
                .expect("the check runs with feedback")
        }
    };
    scraped(&client, ports.len()).await;
    // Before any label: Waiting, which holds nothing.
    let waiting = quality("good").await;
    assert_eq!(waiting.verdict, CheckVerdict::Waiting, "{waiting:?}");

    let http = reqwest::Client::new();
    let holdout = cancer_holdout();
    for (i, (row, truth)) in holdout.iter().enumerate() {
        let body = serde_json::json!({"id": format!("r{i}"), "inputs": [{"name": "float_input",
            "datatype": "FP32", "shape": [1, row.len()], "data": row}]});
        for (revision, port) in revisions.iter().zip(&ports) {
            let base = format!("http://127.0.0.1:{port}/v2/models/roll");
            let answer = http
                .post(format!("{base}/infer"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success());
            let label = if *revision == "wrong" {
                1 - truth
            } else {
                *truth
            };
            let feedback = serde_json::json!({"id": format!("r{i}"), "value": label});
            let scored = http
                .post(format!("{base}/feedback"))
                .json(&feedback)
                .send()
                .await
                .unwrap();
            assert!(
                scored.status().is_success(),
                "{}",
                scored.text().await.unwrap()
            );
        }
    }
    // Prometheus scrapes every second; increase() needs two samples after the rows.
    let started = Instant::now();
    let (good, wrong) = loop {
        let (good, wrong) = (quality("good").await, quality("wrong").await);
        let judged =
            |c: &sluice_operator::crd::rollout::CheckResult| c.verdict != CheckVerdict::Waiting;
        if (judged(&good) && judged(&wrong)) || started.elapsed() > Duration::from_secs(20) {
            break (good, wrong);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("good: {:?}\nwrong: {:?}", good.detail, wrong.detail);
    assert_eq!(good.verdict, CheckVerdict::Pass, "{good:?}");
    assert!(good.value.is_some_and(|a| a > 0.9), "{good:?}");
    assert_eq!(wrong.verdict, CheckVerdict::Fail, "{wrong:?}");
    assert!(wrong.value.is_some_and(|a| a < 0.1), "{wrong:?}");
    assert!(
        wrong
            .detail
            .as_deref()
            .unwrap_or_default()
            .starts_with("accuracy 0.0"),
        "{wrong:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rows of 16 values from a seeded normal distribution (xorshift and Box-Muller):
/// the random rows the `mlp` fixtures' class shares are measured on.
fn normal_rows(seed: u64, rows: usize) -> Vec<Vec<f32>> {
    let mut state = seed.max(1);
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..rows)
        .map(|_| {
            (0..16)
                .map(|_| {
                    let (u, v) = (uniform(), uniform());
                    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus and the release sluice-server: run by `make test-operator`"]
async fn prediction_agreement_passes_a_retrain_and_fails_a_silently_wrong_model() {
    let dir = std::env::temp_dir().join(format!("sluice-agreement-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (_stable, stable_port) = server(&dir, "mlp/1", "stable");
    let (_retrained, retrained_port) = server(&dir, "mlp/2", "retrained");
    let (_inverted, inverted_port) = server(&dir, "inverted/1", "inverted");
    let ports = [stable_port, retrained_port, inverted_port];
    let (_prom, prom_port) = processes::prometheus(&dir, &ports, "ns").await;
    for port in ports {
        wait_ok(&format!("http://127.0.0.1:{port}/v2/models/roll/ready")).await;
    }

    let client =
        sluice_operator::prometheus::client(&format!("http://127.0.0.1:{prom_port}")).unwrap();
    scraped(&client, ports.len()).await;

    // The same 1,500 random rows to each revision, 25 per request, over about 3 s.
    let http = reqwest::Client::new();
    for chunk in normal_rows(42, 1500).chunks(25) {
        let body = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32",
            "shape": [chunk.len(), 16], "data": chunk}]});
        for port in ports {
            let response = http
                .post(format!("http://127.0.0.1:{port}/v2/models/roll/infer"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // the last scrapes

    let agreement = |revision: &'static str| {
        let plan = analysis::plan(&AnalysisSpec::default(), &canary(revision), None);
        let client = client.clone();
        async move {
            let analysis = prometheus::run(Some(&client), &plan).await;
            analysis
                .checks
                .into_iter()
                .find(|c| c.name == "prediction-agreement")
                .expect("the check runs by default")
        }
    };

    let retrained = agreement("retrained").await;
    println!("retrained: {:?}", retrained.detail);
    assert_eq!(retrained.verdict, CheckVerdict::Pass, "{retrained:?}");
    assert!(
        retrained.value.is_some_and(|psi| psi < 0.05),
        "{retrained:?}"
    );
    let inverted = agreement("inverted").await;
    println!("inverted: {:?}", inverted.detail);
    assert_eq!(inverted.verdict, CheckVerdict::Fail, "{inverted:?}");
    assert!(inverted.value.is_some_and(|psi| psi > 1.0), "{inverted:?}");
    let detail = inverted.detail.unwrap();
    assert!(
        detail.starts_with("predictions disagree with stable: output logits: PSI"),
        "{detail}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
