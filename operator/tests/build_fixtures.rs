//! `validate` and `build` from the YAML fixtures in `tests/fixtures/build/`: each
//! fixture's objects must equal its golden file (`SLUICE_BLESS=1` rewrites them after
//! a deliberate change), and every fixture must satisfy the serving invariants.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_operator::build::{self, Desired, Layout};
use sluice_operator::config::BuildConfig;
use sluice_operator::crd::InferenceService;
use sluice_operator::names;
use sluice_operator::reconcile::validate::validate;
use sluice_operator::workload::Workload;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && !p.to_string_lossy().ends_with(".objects.yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "fixtures missing in {}", dir.display());
    files
}

fn load(path: &Path) -> InferenceService {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture(name: &str) -> InferenceService {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/build/{name}.yaml")))
}

fn built(isvc: &InferenceService) -> Desired {
    validate(isvc, &BuildConfig::default()).expect("fixture is valid");
    build::build(isvc, &BuildConfig::default(), &layout(isvc)).unwrap()
}

/// The validation step's verdict on `isvc`: `Ok(())` or the message.
fn invalid(isvc: &InferenceService) -> Result<(), String> {
    validate(isvc, &BuildConfig::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn layout(isvc: &InferenceService) -> Layout {
    Layout::alone(isvc.spec.min_replicas)
}

/// The serving pods' template, in the Deployment or the DaemonSet.
fn template(d: &Desired) -> &PodTemplateSpec {
    match &d.workload {
        Workload::Deployment(w) => &w.spec.as_ref().unwrap().template,
        Workload::DaemonSet(w) => &w.spec.as_ref().unwrap().template,
    }
}

/// The serving pods' spec.
fn pod_spec(d: &Desired) -> &PodSpec {
    template(d).spec.as_ref().unwrap()
}

/// The Deployment of a fixture that runs a replica count.
fn deployment(d: &Desired) -> &k8s_openapi::api::apps::v1::Deployment {
    d.workload.deployment().expect("a Deployment")
}

fn containers(d: &Desired) -> (Container, Container) {
    let pod = pod_spec(d);
    let init = pod.init_containers.as_ref().unwrap()[0].clone();
    (init, pod.containers[0].clone())
}

fn env(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn objects_match_golden_files() {
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    for path in fixtures() {
        let got = serde_saphyr::to_string(&built(&load(&path))).unwrap();
        let golden = path.with_extension("objects.yaml");
        if bless {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|_| panic!("{} missing; run with SLUICE_BLESS=1", golden.display()));
        assert_eq!(
            got,
            want,
            "{} differs from its golden file (SLUICE_BLESS=1 to accept)",
            path.display()
        );
    }
}

#[test]
fn every_fixture_builds_a_secure_observable_deployment() {
    for path in fixtures() {
        let isvc = load(&path);
        let name = isvc.metadata.name.clone().unwrap();
        let d = built(&isvc);
        let ctx = path.display().to_string();
        let template = template(&d);
        let pod = template.spec.as_ref().unwrap();
        let (init, server) = containers(&d);
        let per_node = isvc.spec.placement.per_node();

        match &d.workload {
            Workload::Deployment(dep) => {
                let replicas = dep.spec.as_ref().unwrap().replicas;
                assert_eq!(replicas, Some(isvc.spec.min_replicas), "{ctx}");
            }
            Workload::DaemonSet(_) => assert!(per_node, "{ctx}"),
        }
        let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels.get(names::ISVC_LABEL), Some(&name), "{ctx}");
        assert_eq!(
            labels.get(names::REVISION_LABEL),
            Some(&d.revision),
            "{ctx}"
        );
        let annotations = template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(
            annotations.get("prometheus.io/scrape").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            annotations.get("prometheus.io/port").map(String::as_str),
            Some("8080")
        );
        assert_eq!(
            annotations.get("prometheus.io/path").map(String::as_str),
            Some("/metrics")
        );

        for c in [&init, &server] {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(
                sc.allow_privilege_escalation,
                Some(false),
                "{ctx} {}",
                c.name
            );
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{ctx} {}", c.name);
            assert_eq!(sc.run_as_non_root, Some(true), "{ctx} {}", c.name);
            assert_eq!(sc.privileged, Some(false), "{ctx} {}", c.name);
            assert_eq!(
                sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_string()]),
                "{ctx} {}",
                c.name
            );
            assert!(
                c.command.is_none(),
                "{ctx}: the image's entrypoint runs sluice-server"
            );
        }
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security
                .seccomp_profile
                .as_ref()
                .map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{ctx}"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert!(
            pod.termination_grace_period_seconds.unwrap()
                > build::SHUTDOWN_DELAY_SECONDS + build::DRAIN_TIMEOUT_SECONDS
        );

        // The fetcher CLI, exactly: fetch --uri URI --dest /models/<name>/1 [--sha256 HEX];
        // an optimized model is fetched aside, and the optimizer writes what the
        // server loads.
        let args = init.args.clone().unwrap();
        assert_eq!(args[0], "fetch");
        let served = format!("/models/{name}/1");
        let dest = if isvc.spec.model.optimize.is_some() {
            let inits = pod.init_containers.as_ref().unwrap();
            let optimizer = inits
                .iter()
                .find(|c| c.name == "optimize-model")
                .expect("an optimizer");
            let optimizer_args = optimizer.args.clone().unwrap();
            assert_eq!(
                optimizer_args[..5],
                [
                    "optimize",
                    "--model",
                    "/sluice/original/model.onnx",
                    "--output",
                    &format!("{served}/model.onnx")
                ],
                "{ctx}"
            );
            assert_eq!(
                optimizer.termination_message_path.as_deref(),
                Some("/tmp/optimize-summary.json"),
                "its summary is its termination message"
            );
            "/sluice/original".to_string()
        } else {
            served
        };
        assert_eq!(args[3..5], ["--dest".to_string(), dest]);
        match &isvc.spec.model.sha256 {
            Some(h) => assert_eq!(args[5..], ["--sha256".to_string(), h.clone()]),
            None => assert_eq!(args.len(), 5),
        }
        let server_args = server.args.clone().unwrap();
        let streaming = isvc.spec.streaming.is_some();
        if streaming {
            assert_eq!(
                server_args[..3],
                [
                    "stream".to_string(),
                    "--model".into(),
                    format!("/models/{name}")
                ]
            );
        } else {
            assert_eq!(server_args[..3], ["serve", "--model-repository", "/models"]);
        }
        assert_eq!(env(&server, "SLUICE_ISVC"), Some(name.clone()));
        assert_eq!(env(&server, "SLUICE_REVISION"), Some(d.revision.clone()));
        let ready = server
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        let ready_path = if streaming {
            "/v2/health/ready".to_string()
        } else {
            format!("/v2/models/{name}/ready")
        };
        assert_eq!(ready.path.as_deref(), Some(ready_path.as_str()));
        let live = server
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(live.path.as_deref(), Some("/v2/health/live"));
        assert!(
            server.resources.as_ref().unwrap().requests.is_some(),
            "{ctx}"
        );

        let ports: Vec<_> = d
            .service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .map(|p| p.port)
            .collect();
        let want_ports: &[i32] = if streaming { &[8080] } else { &[8080, 8081] };
        assert_eq!(ports, want_ports, "{ctx}");
        assert_eq!(
            d.pdb.is_some(),
            isvc.spec.min_replicas >= 2 && !per_node,
            "{ctx}"
        );
        assert_eq!(
            d.url,
            format!(
                "http://{name}.{}.svc.cluster.local:8080",
                isvc.metadata.namespace.clone().unwrap()
            )
        );

        let mut owned = vec![
            d.workload.metadata(),
            &d.service.metadata,
            &d.config_map.metadata,
        ];
        owned.extend(d.pdb.as_ref().map(|p| &p.metadata));
        for meta in owned {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("InferenceService", Some(true))
            );
            assert!(
                meta.annotations
                    .as_ref()
                    .unwrap()
                    .contains_key(names::APPLIED_HASH_ANNOTATION)
            );
        }
        assert_eq!(built(&isvc), d, "{ctx}: build is deterministic");
    }
}

#[test]
fn revision_follows_what_defines_the_pods_only() {
    let base = fixture("minimal");
    let rev = |i: &InferenceService| built(i).revision;
    let mut scaled = base.clone();
    scaled.spec.min_replicas = 5;
    assert_eq!(
        rev(&base),
        rev(&scaled),
        "replica counts do not change the pods"
    );
    let mut new_model = base.clone();
    new_model.spec.model.storage_uri = "s3://models/fraud/4/model.onnx".into();
    assert_ne!(rev(&base), rev(&new_model));
    let mut new_env = base.clone();
    new_env.spec.runtime.env.push(EnvVar {
        name: "X".into(),
        value: Some("1".into()),
        ..EnvVar::default()
    });
    assert_ne!(rev(&base), rev(&new_env));
    let other_image = BuildConfig {
        server_image: "example.com/sluice-server:9".into(),
        ..BuildConfig::default()
    };
    assert_ne!(
        rev(&base),
        build::build(&base, &other_image, &layout(&base))
            .unwrap()
            .revision,
        "the default image is part of the revision"
    );
    // Hashes of unchanged objects stay put, so a no-op reconcile writes nothing.
    assert_eq!(
        names::applied_hash(&built(&base).service),
        names::applied_hash(&built(&scaled).service)
    );
}

#[test]
fn pvc_models_are_mounted_read_only_and_fetched_as_files() {
    let d = built(&fixture("pvc-single"));
    let (init, _) = containers(&d);
    let args = init.args.unwrap();
    assert_eq!(args[1..3], ["--uri", "file:///mnt/pvc/churn/7/model.onnx"]);
    let pvc = pod_spec(&d)
        .volumes
        .clone()
        .unwrap()
        .into_iter()
        .find_map(|v| v.persistent_volume_claim)
        .unwrap();
    assert_eq!(
        (pvc.claim_name.as_str(), pvc.read_only),
        ("model-store", Some(true))
    );
    let mount = init
        .volume_mounts
        .unwrap()
        .into_iter()
        .find(|m| m.name == "pvc")
        .unwrap();
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/mnt/pvc", Some(true))
    );
    assert!(
        d.pdb.is_none(),
        "one replica cannot afford a disruption budget"
    );
}

#[test]
fn cuda_gets_a_gpu_the_cuda_image_and_its_config() {
    let d = built(&fixture("cuda"));
    let (init, server) = containers(&d);
    assert_eq!(
        server.image.as_deref(),
        Some(sluice_operator::config::DEFAULT_SERVER_CUDA_IMAGE)
    );
    let limits = server.resources.unwrap().limits.unwrap();
    assert_eq!(
        limits.get("nvidia.com/gpu").map(|q| q.0.as_str()),
        Some("1")
    );
    assert!(
        !init
            .resources
            .unwrap()
            .limits
            .unwrap()
            .contains_key("nvidia.com/gpu"),
        "the fetcher needs no GPU"
    );
    let config = &d.config_map.data.as_ref().unwrap()["config.yaml"];
    assert!(
        config.contains("device: cuda") && config.contains("intra_op_threads: 4"),
        "{config}"
    );
}

#[test]
fn thread_budget_follows_the_cpu_limit_and_batching_reaches_the_server() {
    let d = built(&fixture("full"));
    let config = &d.config_map.data.as_ref().unwrap()["config.yaml"];
    for line in [
        "max_batch_size: 32",
        "max_queue_delay_ms: 2",
        "max_queue_size: 512",
        "intra_op_threads: 2",
        "device: cpu",
    ] {
        assert!(config.contains(line), "{line:?} missing from {config}");
    }
    let (init, server) = containers(&d);
    assert_eq!(
        server.image.as_deref(),
        Some("registry.example.com/sluice-server:1.2.3")
    );
    assert_eq!(env(&server, "RUST_LOG").as_deref(), Some("debug"));
    let secret = init.env_from.unwrap()[0].secret_ref.clone().unwrap();
    assert_eq!(secret.name, "model-store");
    assert!(
        server.env_from.is_none(),
        "credentials reach the fetcher only"
    );
}

#[test]
fn validate_names_the_field_at_fault() {
    let base = fixture("minimal");
    type Mutation = Box<dyn Fn(&mut InferenceService)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|i| i.spec.model.storage_uri = "ftp://x/model.onnx".into()),
            "spec.model.storageUri",
        ),
        (
            Box::new(|i| i.spec.model.storage_uri = "pvc://claim-only".into()),
            "pvc://<claim-name>/<path>",
        ),
        (
            Box::new(|i| i.spec.model.sha256 = Some("ABC".into())),
            "spec.model.sha256",
        ),
        (
            Box::new(|i| i.spec.max_replicas = Some(1)),
            "spec.minReplicas (2) must not be above spec.maxReplicas (1)",
        ),
        (
            Box::new(|i| i.metadata.name = Some("9lives".into())),
            "metadata.name",
        ),
        (
            Box::new(|i| {
                i.spec.runtime.env.push(EnvVar {
                    name: "SLUICE_REVISION".into(),
                    ..EnvVar::default()
                })
            }),
            "spec.runtime.env",
        ),
        (
            Box::new(|i| {
                i.spec.monitoring = Some(
                    serde_saphyr::from_str("{profileUri: s3://m/profile.json, profileSha256: abc}")
                        .unwrap(),
                )
            }),
            "spec.monitoring.profileSha256",
        ),
        (
            Box::new(|i| {
                i.spec.monitoring =
                    Some(serde_saphyr::from_str("{profileUri: gs://m/profile.json}").unwrap())
            }),
            "spec.monitoring.profileUri",
        ),
        (
            Box::new(|i| i.spec.rollout.analysis.max_drift_score = Some(0.25)),
            "spec.rollout.analysis.maxDriftScore needs spec.monitoring",
        ),
        (
            Box::new(|i| {
                i.spec.placement = serde_saphyr::from_str("{mode: PerNode}").unwrap();
            }),
            "spec.placement.mode PerNode needs spec.rollout.strategy BlueGreen",
        ),
        (
            Box::new(|i| {
                i.spec.placement =
                    serde_saphyr::from_str("{nodeSelector: {'edge node': 'yes'}}").unwrap();
            }),
            "spec.placement.nodeSelector",
        ),
    ];
    for (mutate, expected) in cases {
        let mut isvc = base.clone();
        mutate(&mut isvc);
        let message = invalid(&isvc).expect_err(expected);
        assert!(
            message.contains(expected),
            "{message:?} should mention {expected:?}"
        );
    }
}

#[test]
fn layout_places_the_revision_and_selects_the_active_one() {
    let isvc = fixture("minimal");
    let revision = names::revision(&isvc.spec, &BuildConfig::default()).unwrap();
    let layout = Layout {
        replicas: 1,
        total: 4,
        active: Some("0123456789".into()),
        route_weights: Vec::new(),
    };
    let d = build::build(&isvc, &BuildConfig::default(), &layout).unwrap();
    let name = format!("fraud-{revision}");
    assert_eq!(deployment(&d).metadata.name.as_deref(), Some(name.as_str()));
    let spec = deployment(&d).spec.as_ref().unwrap();
    assert_eq!(
        spec.replicas,
        Some(1),
        "the layout's share, not minReplicas"
    );
    let by_revision = names::revision_selector("fraud", &revision);
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&by_revision));
    assert_eq!(
        d.revision_service.spec.as_ref().unwrap().selector.as_ref(),
        Some(&by_revision)
    );
    assert_eq!(
        d.revision_service.metadata.name.as_deref(),
        Some(name.as_str())
    );
    assert_eq!(
        d.service.spec.as_ref().unwrap().selector.as_ref(),
        Some(&names::revision_selector("fraud", "0123456789")),
        "blue-green: the main Service selects the active revision only"
    );
    assert!(
        d.pdb.is_some(),
        "the PDB follows the total, not this revision's pods"
    );
    let alone = build::build(&isvc, &BuildConfig::default(), &Layout::alone(1)).unwrap();
    assert_eq!(
        alone.service.spec.as_ref().unwrap().selector.as_ref(),
        Some(&names::selector("fraud")),
        "replica-ratio: every revision's pods"
    );
    assert!(alone.pdb.is_none());
}

#[test]
fn names_must_leave_room_for_the_revision() {
    let mut isvc = fixture("minimal");
    isvc.metadata.name = Some("a".repeat(53));
    let err = invalid(&isvc).unwrap_err();
    assert!(err.contains("at most 52"), "{err}");
    isvc.metadata.name = Some("a".repeat(52));
    assert_eq!(invalid(&isvc), Ok(()));
}

#[test]
fn security_settings_become_flags_mounts_https_probes_and_a_network_policy() {
    let d = built(&fixture("secure"));
    let (init, server) = containers(&d);
    let args = server.args.clone().unwrap().join(" ");
    for expected in [
        "--api-keys-file /etc/sluice/api-keys/keys.yaml",
        "--jwt-issuer https://idp.example.com --jwt-audience fraud --jwks-file /etc/sluice/jwks/jwks.json",
        "--rate-limit 50 --rate-limit-burst 100 --model-rate-limit 500 --max-concurrent-per-client 8",
        "--max-body-bytes 1048576 --max-tensor-elements 65536 --max-batch-rows 64 --max-header-bytes 16384",
        "--tls-cert /etc/sluice/tls/tls.crt --tls-key /etc/sluice/tls/tls.key --tls-client-ca /etc/sluice/tls/ca.crt",
        "--audit-log - --audit-payload-sample-rate 0.01",
        "--open-metrics",
    ] {
        assert!(args.contains(expected), "{args:?} lacks {expected:?}");
    }
    // Secrets are mounted as whole directories (no subPath) so that rotations reach
    // the running server; the fetcher sees none of them.
    let mounts = server.volume_mounts.clone().unwrap();
    for dir in [
        "/etc/sluice/api-keys",
        "/etc/sluice/jwks",
        "/etc/sluice/tls",
    ] {
        let mount = mounts.iter().find(|m| m.mount_path == dir).unwrap();
        assert_eq!(
            (mount.read_only, mount.sub_path.as_ref()),
            (Some(true), None),
            "{dir}"
        );
    }
    assert!(
        init.volume_mounts
            .unwrap()
            .iter()
            .all(|m| !m.mount_path.starts_with("/etc/sluice"))
    );
    let pod = pod_spec(&d);
    let secrets: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
        .collect();
    assert_eq!(secrets, ["fraud-api-keys", "fraud-tls"]);
    for probe in [&server.readiness_probe, &server.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }

    let policy = d
        .network_policy
        .expect("allowedSources makes a NetworkPolicy");
    let spec = policy.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels,
        Some(names::selector("fraud"))
    );
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let rules = spec.ingress.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].from.as_ref().unwrap().len(), 2);
    let ports: Vec<_> = rules[0]
        .ports
        .iter()
        .flatten()
        .map(|p| p.port.clone().unwrap())
        .collect();
    assert_eq!(ports, [IntOrString::Int(8080), IntOrString::Int(8081)]);

    assert!(built(&fixture("minimal")).network_policy.is_none());
}

#[test]
fn a_fallback_model_is_fetched_beside_the_primary_and_configured() {
    let d = built(&fixture("fallback"));
    let pod = pod_spec(&d);
    let inits = pod.init_containers.as_ref().unwrap();
    let names: Vec<&str> = inits.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["fetch-model", "fetch-fallback"]);
    let fallback = &inits[1];
    assert_eq!(
        fallback.args.as_ref().unwrap()[1..],
        [
            "--uri",
            "file:///mnt/fallback-pvc/fraud/v8/model.onnx",
            "--dest",
            "/models/fraud/fallback",
            "--sha256",
            "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c",
        ]
    );
    assert!(
        fallback.env_from.is_none(),
        "the primary's credentials are not handed to the fallback's fetcher"
    );
    let claim = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "fallback-pvc")
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .unwrap();
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("fallback-store", Some(true))
    );
    let server_mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "fallback")
        .unwrap();
    assert_eq!(
        (server_mount.mount_path.as_str(), server_mount.read_only),
        ("/models/fraud/fallback", Some(true))
    );
    let config = &d.config_map.data.as_ref().unwrap()["config.yaml"];
    for line in [
        "model: fallback/model.onnx",
        "timeout_ms: 150",
        "failure_threshold: 10",
        "open_ms: 20000",
    ] {
        assert!(config.contains(line), "{line} missing from\n{config}");
    }

    let mut without = fixture("fallback");
    without.spec.fallback = None;
    without.spec.circuit_breaker = None;
    assert_ne!(
        built(&without).revision,
        d.revision,
        "a fallback is part of the revision"
    );
}

#[test]
fn monitoring_fetches_the_profile_beside_the_model_and_turns_drift_on() {
    let d = built(&fixture("monitoring"));
    let pod = pod_spec(&d);
    let inits = pod.init_containers.as_ref().unwrap();
    let names: Vec<&str> = inits.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["fetch-model", "fetch-profile"]);
    let profile = &inits[1];
    assert_eq!(
        profile.args.as_ref().unwrap()[1..],
        [
            "--uri",
            "s3://models/fraud/v9/profile.json",
            "--dest",
            "/models/fraud/monitoring",
            "--file-name",
            "profile.json",
            "--sha256",
            "5e0c4a3b2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c",
        ]
    );
    assert_eq!(
        profile.env_from, inits[0].env_from,
        "the profile is fetched with the model's credentials"
    );
    let server_mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "profile")
        .unwrap();
    assert_eq!(
        (server_mount.mount_path.as_str(), server_mount.read_only),
        ("/models/fraud/monitoring", Some(true))
    );
    let config = &d.config_map.data.as_ref().unwrap()["config.yaml"];
    let server: serde_json::Value = serde_saphyr::from_str(config).unwrap();
    assert_eq!(
        server["monitoring"],
        serde_json::json!({
            "profile": "monitoring/profile.json", "window": 500, "min_rows": 50,
            "interval_ms": 2000,
            "feedback": {"output": "label", "task": "classification", "window": 500, "retention": 20000},
        })
    );

    let on_claim = built(&fixture("monitoring-pvc"));
    let pod = pod_spec(&on_claim);
    let fetcher = &pod.init_containers.as_ref().unwrap()[1];
    assert_eq!(
        fetcher.args.as_ref().unwrap()[1..3],
        ["--uri", "file:///mnt/profile-pvc/churn/7/profile.json"]
    );
    let claim = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "profile-pvc")
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .unwrap();
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("profile-store", Some(true))
    );
    let config = &on_claim.config_map.data.as_ref().unwrap()["config.yaml"];
    let server: serde_json::Value = serde_saphyr::from_str(config).unwrap();
    assert_eq!(
        server["monitoring"],
        serde_json::json!({"profile": "monitoring/profile.json", "window": 1000, "min_rows": 100, "interval_ms": 1000}),
        "the documented defaults"
    );
}

#[test]
fn monitoring_is_part_of_the_revision_only_when_set() {
    let base = fixture("monitoring");
    let mut without = base.clone();
    without.spec.monitoring = None;
    assert_ne!(built(&without).revision, built(&base).revision);
    let mut other_profile = base.clone();
    other_profile.spec.monitoring.as_mut().unwrap().profile_uri =
        "s3://models/fraud/v10/profile.json".into();
    assert_ne!(
        built(&other_profile).revision,
        built(&base).revision,
        "a new profile is a new revision"
    );
    let mut other_window = base.clone();
    other_window.spec.monitoring.as_mut().unwrap().window_rows = 2000;
    assert_ne!(built(&other_window).revision, built(&base).revision);
    // Without monitoring the revision is hashed as before the field existed:
    // the other fixtures' golden files pin their revisions.
}

#[test]
fn placement_reaches_the_serving_pods_only() {
    let isvc = fixture("placement");
    let d = built(&isvc);
    let placement = &isvc.spec.placement;
    let pod = pod_spec(&d);
    assert_eq!(pod.node_selector.as_ref(), Some(&placement.node_selector));
    assert_eq!(pod.tolerations.as_ref(), Some(&placement.tolerations));
    assert_eq!(pod.affinity, placement.affinity);
    assert!(d.workload.deployment().is_some(), "a replica count");
    assert_eq!(
        d.service.spec.as_ref().unwrap().internal_traffic_policy,
        None,
        "the cluster's default traffic policy"
    );
    assert!(d.pdb.is_some());
    let plain = pod_spec(&built(&fixture("minimal"))).clone();
    assert_eq!(
        (plain.node_selector, plain.tolerations, plain.affinity),
        (None, None, None),
        "no placement, no constraint"
    );
}

#[test]
fn per_node_runs_a_daemon_set_and_keeps_callers_on_their_node() {
    let isvc = fixture("per-node");
    let d = built(&isvc);
    let Workload::DaemonSet(ds) = &d.workload else {
        panic!("PerNode builds a DaemonSet");
    };
    let name = format!("detector-{}", d.revision);
    assert_eq!(ds.metadata.name.as_deref(), Some(name.as_str()));
    let spec = ds.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector.match_labels.as_ref(),
        Some(&names::revision_selector("detector", &d.revision)),
        "one DaemonSet per revision, like one Deployment per revision"
    );
    let update = spec.update_strategy.as_ref().unwrap();
    let rolling = update.rolling_update.as_ref().unwrap();
    assert_eq!(
        (
            update.type_.as_deref(),
            rolling.max_surge.clone(),
            rolling.max_unavailable.clone()
        ),
        (
            Some("RollingUpdate"),
            Some(IntOrString::Int(1)),
            Some(IntOrString::Int(0))
        ),
        "an in-place update starts a node's new pod before its old one stops"
    );
    let pod = pod_spec(&d);
    assert_eq!(
        pod.node_selector.as_ref(),
        Some(&isvc.spec.placement.node_selector)
    );
    assert_eq!(
        d.service
            .spec
            .as_ref()
            .unwrap()
            .internal_traffic_policy
            .as_deref(),
        Some("Local"),
        "each node's callers reach their own node's pod"
    );
    assert_eq!(
        d.revision_service
            .spec
            .as_ref()
            .unwrap()
            .internal_traffic_policy,
        None,
        "a revision's own Service reaches its pods from anywhere"
    );
    assert!(
        d.pdb.is_none(),
        "no disruption budget for a DaemonSet, even at minReplicas 2"
    );
}

#[test]
fn placement_is_part_of_the_revision_only_when_set() {
    let base = fixture("minimal");
    let rev = |i: &InferenceService| built(i).revision;
    let mut empty = base.clone();
    empty.spec.placement = serde_saphyr::from_str("{mode: Replicas}").unwrap();
    assert_eq!(
        rev(&base),
        rev(&empty),
        "the default placement keeps the revision (no rollout on upgrade)"
    );
    let per_node = fixture("per-node");
    let mut moved = per_node.clone();
    moved
        .spec
        .placement
        .node_selector
        .insert("zone".into(), "store-12".into());
    assert_ne!(rev(&per_node), rev(&moved), "new nodes are a new revision");
    let mut replicas = per_node.clone();
    replicas.spec.placement.mode = sluice_operator::crd::PlacementMode::Replicas;
    assert_ne!(
        rev(&per_node),
        rev(&replicas),
        "a new kind of workload is a new revision"
    );
}

#[test]
fn a_static_answer_reaches_the_server_typed_and_must_fill_its_shape() {
    let mut isvc = fixture("minimal");
    isvc.spec.fallback = Some(
        serde_saphyr::from_str(
            "static:\n  - {name: label, datatype: INT64, shape: [1], data: [3]}\n  - {name: probabilities, datatype: FP32, shape: [1, 2], data: [0.5, 0.5]}\n",
        )
        .unwrap(),
    );
    let config = built(&isvc).config_map.data.unwrap()["config.yaml"].clone();
    let server: serde_json::Value = serde_saphyr::from_str(&config).unwrap();
    assert_eq!(
        server["fallback"]["static"],
        serde_json::json!([
            {"name": "label", "datatype": "INT64", "shape": [1], "data": [3]},
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]},
        ])
    );
    isvc.spec
        .fallback
        .as_mut()
        .unwrap()
        .static_outputs
        .as_mut()
        .unwrap()[1]
        .data = vec![0.5];
    let error = invalid(&isvc).unwrap_err();
    assert!(
        error.contains("spec.fallback.static[1].data has 1 values, but shape [1, 2] holds 2"),
        "{error}"
    );
}

#[test]
fn a_stream_runs_workers_of_one_group_each_with_its_own_transactional_id() {
    let isvc = fixture("streaming");
    let d = built(&isvc);
    let (_, server) = containers(&d);
    let args = server.args.clone().unwrap();
    let flag = |name: &str| {
        let at = args.iter().position(|a| a == name)?;
        args.get(at + 1).cloned()
    };
    assert_eq!(
        flag("--brokers").as_deref(),
        Some("kafka-0.kafka.data:9093,kafka-1.kafka.data:9093")
    );
    assert_eq!(flag("--input-topic").as_deref(), Some("transactions"));
    assert_eq!(flag("--output-topic").as_deref(), Some("fraud-scores"));
    assert_eq!(flag("--dlq-topic").as_deref(), Some("fraud-scores-dlq"));
    assert_eq!(
        flag("--group").as_deref(),
        Some("sluice-risk-fraud-stream"),
        "one group for every revision: a canary's workers join the stable's"
    );
    assert_eq!(flag("--delivery").as_deref(), Some("exactly-once"));
    assert_eq!(flag("--metrics-address").as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(flag("--max-batch-records").as_deref(), Some("256"));
    assert_eq!(flag("--linger-ms").as_deref(), Some("10"));
    assert_eq!(
        flag("--features").as_deref(),
        Some("amount,merchant_risk,hour")
    );
    assert_eq!(
        flag("--properties-file").as_deref(),
        Some("/var/run/sluice/kafka/client.properties")
    );
    assert_eq!(flag("--max-attempts"), None, "the worker's default");
    // Each pod its own transactional id, from its name.
    assert_eq!(
        env(&server, "SLUICE_TRANSACTIONAL_ID").as_deref(),
        Some("sluice-risk-fraud-stream-$(POD_NAME)")
    );
    let pod_name = server
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAME")
        .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(pod_name.as_deref(), Some("metadata.name"));
    // The Kafka Secret mounted read-only where the properties file points.
    let mount = server
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/var/run/sluice/kafka")
        .expect("the credentials mount");
    assert_eq!(mount.read_only, Some(true));
    let volume = pod_spec(&d)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("kafka-client")
    );
    let ports: Vec<_> = server
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [8080], "metrics and probes only");

    // At-least-once, a named group, no Secret.
    let mut plain = isvc.clone();
    let streaming = plain.spec.streaming.as_mut().unwrap();
    streaming.delivery = sluice_operator::crd::StreamDelivery::AtLeastOnce;
    streaming.group = Some("fraud-workers".into());
    streaming.credentials_secret = None;
    let d = built(&plain);
    let args = containers(&d).1.args.unwrap();
    let at = args.iter().position(|a| a == "--delivery").unwrap();
    assert_eq!(args[at + 1], "at-least-once");
    let at = args.iter().position(|a| a == "--group").unwrap();
    assert_eq!(args[at + 1], "fraud-workers");
    assert!(!args.iter().any(|a| a == "--properties-file"));
    assert_ne!(
        built(&isvc).revision,
        d.revision,
        "the stream's settings are part of the revision"
    );
}

#[test]
fn the_stream_sample_builds_stream_workers() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/samples/serving_v1alpha1_inferenceservice_iris_stream.yaml");
    let mut isvc = load(&sample);
    isvc.metadata.uid = Some("6b1f7c2e-0000-4000-8000-000000000012".into());
    let args = containers(&built(&isvc)).1.args.unwrap();
    assert_eq!(args[..3], ["stream", "--model", "/models/iris-stream"]);
    assert!(
        args.windows(2)
            .any(|w| w == ["--brokers", "10.213.0.1:9092"])
    );
}
